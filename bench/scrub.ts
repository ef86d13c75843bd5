/**
 * The redactor's cost on the request path: `npx tsx bench/scrub.ts` (no database needed).
 *
 * Every stored string goes through value scrubbing (lib/core/scrub.ts) and every key through the word matcher
 * (lib/core/secret-names.ts). This measures, per call, the strings a request event stores (path, query, user
 * agent), the text an error adds (message and stack), and the whole `toStored` of a request event's fields with
 * scrubbing on (the default), off (`scrub: { disable: true }`), and without any redactor, so that the difference
 * is the redactor's own cost. CPU time, medians of 5 rounds, in this process (no HTTP: the HTTP bench's variance
 * on a shared machine is far larger than what is measured here; `BENCH_SCRUB=off npm run bench` runs the HTTP
 * bench with scrubbing off, for the end-to-end comparison).
 */
import { createRedactor, type Redactor } from '../lib/core/redact.js';
import { DEFAULT_LIMITS, toStored } from '../lib/core/safe.js';
import { median } from './common.js';

const UA = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36';
const STACK = `Error: upstream answered 502\n${'    at handler (/srv/app/routes/items.js:42:13)\n'.repeat(10)}`;

const strings: [string, string][] = [
  ['path /items/1', '/items/1'],
  ['query page=2&sort=name', 'page=2&sort=name'],
  ['user agent (Chrome)', UA],
  ['error stack (10 frames)', STACK],
  ['text with a secret pair', 'retry with password=hunter2&user=bob'],
];

const requestFields = {
  http: { method: 'GET', path: '/items/1', route: '/items/:id', query: 'page=2&sort=name', status: 200, durationMs: 1.234 },
};
const failedFields = {
  http: { ...requestFields.http, status: 502 },
  error: { name: 'Error', message: 'upstream answered 502', status: 502, stack: STACK },
};

/** CPU time (this process's, not wall time: the machine is shared) per call, in ns; median of 5 rounds. */
function nsPerCall(fn: () => unknown, iterations: number): number {
  for (let i = 0; i < 1000; i++) fn(); // warm-up
  const rounds: number[] = [];
  for (let r = 0; r < 5; r++) {
    const t = process.cpuUsage();
    for (let i = 0; i < iterations; i++) fn();
    const used = process.cpuUsage(t);
    rounds.push(((used.user + used.system) * 1000) / iterations);
  }
  return median(rounds);
}

function main(): void {
  const on: Redactor = createRedactor();
  const off: Redactor = createRedactor([], { disable: true });
  const N = 200_000;
  const rows: string[] = ['| input | scrubbing on, ns/call | scrubbing off, ns/call |', '|---|---|---|'];
  for (const [label, s] of strings) {
    rows.push(`| \`text\`: ${label} | ${nsPerCall(() => on.text(s), N).toFixed(0)} | ${nsPerCall(() => off.text(s), N).toFixed(0)} |`);
  }
  for (const [label, fields] of [['request event fields', requestFields], ['failed request event fields (error + stack)', failedFields]] as const) {
    const withOn = nsPerCall(() => toStored(fields, on, DEFAULT_LIMITS), N / 4);
    const withOff = nsPerCall(() => toStored(fields, off, DEFAULT_LIMITS), N / 4);
    const none = nsPerCall(() => toStored(fields, null, DEFAULT_LIMITS), N / 4);
    rows.push(`| \`toStored\`: ${label} | ${withOn.toFixed(0)} | ${withOff.toFixed(0)} (no redactor: ${none.toFixed(0)}) |`);
  }
  process.stdout.write(`${rows.join('\n')}\n`);
}

main();
