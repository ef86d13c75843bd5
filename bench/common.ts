/** What the benchmark files share: medians, table printing, the database. */
import { readdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A Markdown table (the same text goes to the console and into RESULTS.md). */
export function table(head: string[], rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map(String));
  const line = (r: string[]): string => `| ${r.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...cells.map(line)].join('\n');
}

export function machine(): string {
  const c = cpus();
  return `${c.length} cores (${c[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}, ${process.platform}/${process.arch}`;
}

/**
 * CPU time (µs) used so far by the database server process listening on `uri`'s port, read from /proc; a
 * function returning null where that cannot be found (not Linux, or a server on another machine).
 */
export function dbCpuMeter(uri: string): () => number | null {
  const port = new URL(uri).port;
  let pid: string | null = null;
  try {
    for (const p of readdirSync('/proc')) {
      if (!/^\d+$/.test(p)) continue;
      let cmd: string;
      try {
        cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      const args = cmd.split('\0');
      const isDb = /ferretdb|mongod/.test(args[0] ?? '');
      if (isDb && args.some((a) => a.endsWith(`:${port}`) || a === port)) {
        pid = p;
        break;
      }
    }
  } catch {
    pid = null;
  }
  const hz = 100; // USER_HZ on Linux
  return () => {
    if (pid === null) return null;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return ((Number(fields[11]) + Number(fields[12])) / hz) * 1e6; // utime + stime
    } catch {
      return null;
    }
  };
}
