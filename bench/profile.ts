/**
 * CPU profile of one HTTP bench variant's server (`node --cpu-prof`), at a fixed offered load or at saturation:
 *
 *   npx tsx bench/profile.ts [variant=audited] [rate=4000|0 for saturation] [seconds=6]
 *
 * The server is bench/http-server.ts, run as the HTTP bench runs it (a child process, autocannon here), with
 * `--cpu-prof` into test/output/profiles/. Prints the server's CPU µs per response and the top frames by self
 * time (function, file:line) within the measured window (warm-up and close left out), and keeps the .cpuprofile file
 * (Chrome DevTools opens it). Diagnostic only: not part of `npm run bench`.
 */
import autocannon from 'autocannon';
import { fork } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { databaseUri, startDatabase, stopDatabase } from '../test/support/database.js';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

const root = join(__dirname, '..');

/**
 * Self time by function (name, file, line), as shares of the profile's busy time within [from, to] (µs of the
 * monotonic clock, which V8's profile timestamps and process.hrtime share on Linux).
 */
export function topFrames(p: CpuProfile, n: number, from = 0, to = Number.POSITIVE_INFINITY): { rows: string[]; groups: string[]; busyMs: number } {
  const byNode = new Map<number, ProfileNode>(p.nodes.map((x) => [x.id, x]));
  const self = new Map<number, number>();
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (t < from || t > to) continue;
    self.set(p.samples[i], (self.get(p.samples[i]) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const byFrame = new Map<string, number>();
  const byGroup = new Map<string, number>();
  let busy = 0;
  for (const [id, us] of self) {
    const f = byNode.get(id)?.callFrame;
    if (f === undefined || f.functionName === '(idle)' || f.functionName === '(program)') continue;
    busy += us;
    const file = f.url === '' ? '' : ` ${relative(root, f.url.replace(/^file:\/\//, ''))}:${f.lineNumber + 1}`;
    const key = `${f.functionName || '(anonymous)'}${file}`;
    byFrame.set(key, (byFrame.get(key) ?? 0) + us);
    const group = groupOf(f.url, f.functionName);
    byGroup.set(group, (byGroup.get(group) ?? 0) + us);
  }
  const rows = [...byFrame.entries()].sort((a, b) => b[1] - a[1]).slice(0, n)
    .map(([k, us]) => `${((100 * us) / busy).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`);
  const groups = [...byGroup.entries()].sort((a, b) => b[1] - a[1])
    .map(([k, us]) => `${((100 * us) / busy).toFixed(1).padStart(5)} %  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`);
  return { rows, groups, busyMs: busy / 1000 };
}

/** Where a frame's code lives: a lib/ folder, a package, Node's internals, native code, or the GC. */
function groupOf(url: string, fn: string): string {
  if (fn === '(garbage collector)') return 'garbage collector';
  if (url === '') return 'native (syscalls, builtins)';
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[url.startsWith('node:internal/') ? 1 : 0]}`;
  const path = url.replace(/^file:\/\//, '');
  const nm = path.lastIndexOf('node_modules/');
  if (nm >= 0) return `pkg ${path.slice(nm + 13).split('/')[0]}`;
  const rel = relative(root, path).split('/');
  return rel[0] === 'lib' && rel.length > 2 ? `lib/${rel[1]}` : rel.join('/');
}

async function main(): Promise<void> {
  const [variant = 'audited', rateArg = '4000', secondsArg = '6'] = process.argv.slice(2);
  const rate = Number(rateArg);
  const seconds = Number(secondsArg);
  const dir = join(root, 'test', 'output', 'profiles');
  mkdirSync(dir, { recursive: true });
  const db = await startDatabase();
  try {
    const uri = databaseUri(db.uri, 'koa_audit_bench_profile');
    const collection = `profile_${variant}_${Date.now()}`;
    const before = new Set(readdirSync(dir));
    const child = fork(join(__dirname, 'http-server.ts'), [variant, uri, collection, 'http://127.0.0.1:9/hook'], {
      execArgv: ['--import', 'tsx', '--cpu-prof', `--cpu-prof-dir=${dir}`],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const next = (): Promise<Record<string, unknown>> => new Promise((resolve) => child.once('message', resolve));
    const { port } = (await next()) as { port: number };
    const url = `http://127.0.0.1:${port}/items/1`;
    const opts = { url, connections: 32, ...(rate > 0 ? { overallRate: rate } : {}) };
    await autocannon({ ...opts, duration: 1 });
    child.send('mark');
    const from = Number(process.hrtime.bigint() / 1000n);
    const res = await autocannon({ ...opts, duration: seconds });
    const to = Number(process.hrtime.bigint() / 1000n);
    child.send('stats');
    const stats = (await next()) as { cpuMicros: number; stats: { spooled: number } | null };
    child.send('close');
    await next();
    await new Promise((r) => child.once('exit', r));
    const file = readdirSync(dir).filter((f) => !before.has(f) && f.endsWith('.cpuprofile'))
      .map((f) => join(dir, f)).sort((a, b) => statSync(b).size - statSync(a).size)[0]; // the main thread's (tsx's loader thread writes one too)
    process.stdout.write(`${variant} at ${rate > 0 ? `${rate} req/s` : 'saturation'}: ${Math.round(res.requests.average)} req/s, server CPU ` +
      `${(stats.cpuMicros / Math.max(1, res.requests.total)).toFixed(1)} µs/req, spooled ${stats.stats?.spooled ?? 0}\nprofile: ${file}\n`);
    const { rows, groups, busyMs } = topFrames(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile, Number(process.env.PROFILE_TOP ?? 30), from, to);
    process.stdout.write(`busy ${busyMs.toFixed(0)} ms in the measured window; by where the code lives:\n${groups.join('\n')}\ntop frames by self time:\n${rows.join('\n')}\n`);
  } finally {
    await stopDatabase();
  }
}

if (require.main === module) void main();
