/**
 * HTTP benchmark: bare Koa, Koa + koa-audit (default async mode, real store), Koa + a naive audit that awaits
 * one insertOne per request, Koa + koa-audit in sync mode, and with a webhook sink (live, and dead). Requests/s and p50/p99 latency at a fixed
 * concurrency, with autocannon.
 *
 * The server runs in a child process, one process per variant and round, and autocannon in this process:
 * a load generator sharing the server's event loop would steal the very time being measured, and a fresh
 * process gives every variant the same cold start (no JIT or heap left over from the previous variant).
 * Variants are interleaved and their order rotated every round, so that drifting machine load (other work
 * on this machine, FerretDB's growing files) spreads over all of them instead of landing on one.
 */
import autocannon from 'autocannon';
import { execFileSync, execSync, fork } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { AuditStats } from '../lib/index.js';
import { dbCpuMeter, fmt, median, table } from './common.js';

type Baseline = `at ${string}`;
export type Variant = 'bare' | 'floor' | 'audited' | 'durable' | 'discard' | 'naive' | 'sync' | 'webhook' | 'deadsink' | Baseline;
/**
 * `BENCH_BASELINE=<git ref>[,<git ref>…]`: koa-audit as it was at those commits, default options, measured in the same
 * run as today's (each one's lib/ is extracted under node_modules/.cache, where it finds this checkout's
 * dependencies). A before/after taken in two runs on a shared machine compares the machine's moods as much as the code.
 */
const BASELINES: Baseline[] = (process.env.BENCH_BASELINE ?? '').split(',').filter((r) => r !== '').map((r): Baseline => `at ${r}`);
const isBaseline = (v: Variant): v is Baseline => v.startsWith('at ');
const VARIANTS: Variant[] = ['bare', 'floor', 'audited', 'durable', 'discard', 'naive', 'sync', 'webhook', 'deadsink', ...BASELINES];
const LABEL: Record<Variant, string> = {
  ...Object.fromEntries(BASELINES.map((b) => [b, `Koa + koa-audit ${b} (default)`])),
  bare: 'bare Koa',
  floor: 'floor: Koa + AsyncLocalStorage keeping one event',
  audited: 'Koa + koa-audit (async, default)',
  durable: "Koa + koa-audit (durability: 'disk')",
  discard: 'koa-audit, store accepts and discards',
  naive: 'Koa + naive audit (await insertOne)',
  sync: "Koa + koa-audit (mode: 'sync')",
  webhook: 'Koa + koa-audit + webhook sink',
  deadsink: 'Koa + koa-audit + a dead webhook sink',
};
/**
 * The webhook sink's destination, in this process (not the server's): answers every POST and counts the events
 * (NDJSON lines); `deadUrl` is a closed port, the dead sink.
 */
async function webhookTarget(): Promise<{ url: string; deadUrl: string; events: () => number; close: () => Promise<void> }> {
  const { createServer } = await import('node:http');
  let events = 0;
  const server = createServer((req, res) => {
    req.on('data', (c: Buffer) => {
      // indexOf, not a loop over bytes: this process also generates the load, and the count must not slow it.
      for (let i = c.indexOf(0x0a); i !== -1; i = c.indexOf(0x0a, i + 1)) events++;
    });
    req.on('end', () => res.end());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const dead = createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
  const deadPort = (dead.address() as { port: number }).port;
  await new Promise<void>((r) => dead.close(() => r()));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`,
    deadUrl: `http://127.0.0.1:${deadPort}/hook`,
    events: () => events,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

/** Variants that store nothing: no stored-vs-answered check. */
const NO_STORE: ReadonlySet<Variant> = new Set(['bare', 'floor', 'discard']);

export interface HttpOptions {
  rounds: number;
  durationSec: number;
  warmupSec: number;
  connections: number;
  /** Offered load in requests/s for the whole run (autocannon's overallRate); absent: as fast as it goes. */
  rate?: number;
}

interface Sample {
  rps: number;
  p50: number;
  p99: number;
  responses: number;
  errors: number;
  stored: number;
  drainMs: number;
  spooled: number;
  /** Server process CPU time per response in the measured window: what the variant costs, whatever the load. */
  cpuPerReq: number;
  /** The database server's CPU time per response in the same window (null when it cannot be read). */
  dbCpuPerReq: number | null;
}

interface ChildReply {
  port?: number;
  stored?: number;
  drainMs?: number;
  stats?: AuditStats | null;
  cpuMicros?: number;
}

/** The baseline commit's lib/, extracted once per run; its index module's path. */
function baselineLib(ref: string): string {
  const root = join(__dirname, '..');
  const sha = execFileSync('git', ['rev-parse', '--verify', `${ref}^{commit}`], { cwd: root, encoding: 'utf8' }).trim();
  const dir = join(root, 'node_modules/.cache/koa-audit-baseline', sha);
  if (!existsSync(join(dir, 'lib/index.ts'))) {
    mkdirSync(dir, { recursive: true });
    execSync(`git archive ${sha} lib | tar -x -C ${JSON.stringify(dir)}`, { cwd: root });
  }
  return join(dir, 'lib/index.ts');
}

async function runOne(variant: Variant, uri: string, collection: string, o: HttpOptions, dbCpu: () => number | null, hook: string): Promise<Sample> {
  const lib = isBaseline(variant) ? baselineLib(variant.slice(3)) : '';
  const child = fork(join(__dirname, 'http-server.ts'), [isBaseline(variant) ? 'baseline' : variant, uri, collection, hook, lib], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const replies: ChildReply[] = [];
  let waiting: ((r: ChildReply) => void) | null = null;
  child.on('message', (m: ChildReply) => {
    if (waiting !== null) {
      const w = waiting;
      waiting = null;
      w(m);
    } else replies.push(m);
  });
  const next = (): Promise<ChildReply> => {
    const r = replies.shift();
    if (r !== undefined) return Promise.resolve(r);
    return new Promise((resolve, reject) => {
      waiting = resolve;
      child.once('exit', (code) => reject(new Error(`bench server (${variant}) exited with ${code}`)));
    });
  };
  const { port } = await next();
  const url = `http://127.0.0.1:${port}/items/1`;
  let warm = 0;
  const rate = o.rate === undefined ? {} : { overallRate: o.rate };
  if (o.warmupSec > 0) warm = (await autocannon({ url, connections: o.connections, duration: o.warmupSec, ...rate })).requests.total;
  child.send('mark');
  const db0 = dbCpu();
  const res = await autocannon({ url, connections: o.connections, duration: o.durationSec, ...rate });
  const db1 = dbCpu();
  child.send('stats');
  const during = await next();
  child.send('close');
  const closed = await next();
  const responses = warm + res.requests.total;
  return {
    rps: res.requests.average,
    p50: res.latency.p50,
    p99: res.latency.p99,
    responses,
    errors: res.errors + res.timeouts + res.non2xx,
    stored: closed.stored ?? 0,
    drainMs: closed.drainMs ?? 0,
    spooled: during.stats?.spooled ?? 0,
    cpuPerReq: (during.cpuMicros ?? 0) / Math.max(1, res.requests.total),
    dbCpuPerReq: db0 === null || db1 === null ? null : (db1 - db0) / Math.max(1, res.requests.total),
  };
}

export interface Medians {
  rps: number;
  p50: number;
  p99: number;
  cpu: number;
  dbCpu: number | null;
}

export interface HttpResult {
  medians: Record<Variant, Medians>;
  text: string;
  notes: string[];
}

export async function runHttpBench(uri: string, o: HttpOptions, log: (s: string) => void): Promise<HttpResult> {
  const dbCpu = dbCpuMeter(uri);
  const samples = Object.fromEntries(VARIANTS.map((v) => [v, [] as Sample[]])) as Record<Variant, Sample[]>;
  const notes: string[] = [];
  const target = await webhookTarget();
  let delivered = 0;
  for (let round = 0; round < o.rounds; round++) {
    const order = VARIANTS.map((_, i) => VARIANTS[(i + round) % VARIANTS.length]);
    for (const v of order) {
      const before = target.events();
      const s = await runOne(v, uri, `http_${v.replace(/\W/g, '_')}_${round}${o.rate === undefined ? '' : `_r${o.rate}`}`, o, dbCpu, v === 'deadsink' ? target.deadUrl : target.url);
      if (v === 'webhook') delivered += target.events() - before;
      samples[v].push(s);
      log(`  round ${round + 1}/${o.rounds} ${v.padEnd(7)} ${fmt(s.rps)} req/s  p50 ${s.p50} ms  p99 ${s.p99} ms  server CPU ${fmt(s.cpuPerReq)} µs/req  db CPU ${s.dbCpuPerReq === null ? '?' : fmt(s.dbCpuPerReq)} µs/req` +
        (NO_STORE.has(v) ? '' : `  stored ${fmt(s.stored)}/${fmt(s.responses)}`) +
        (v === 'audited' || v === 'durable' || isBaseline(v) ? `  spooled ${fmt(s.spooled)}  backlog written in ${fmt(s.drainMs)} ms after the load` : ''));
      // autocannon counts responses that completed within the window; requests in flight at its end are served too.
      if (!NO_STORE.has(v) && (s.stored < s.responses || s.stored > s.responses + 2 * o.connections)) notes.push(`${v} round ${round + 1}: ${s.stored} events stored for ${s.responses} responses`);
      if (s.errors > 0) notes.push(`${v} round ${round + 1}: ${s.errors} errors/timeouts/non-2xx`);
    }
  }
  const med = (v: Variant): Medians => ({
    rps: median(samples[v].map((s) => s.rps)),
    cpu: median(samples[v].map((s) => s.cpuPerReq)),
    dbCpu: samples[v].some((s) => s.dbCpuPerReq === null) ? null : median(samples[v].map((s) => s.dbCpuPerReq as number)),
    p50: median(samples[v].map((s) => s.p50)),
    p99: median(samples[v].map((s) => s.p99)),
  });
  await target.close();
  const medians = Object.fromEntries(VARIANTS.map((v) => [v, med(v)])) as Record<Variant, Medians>;
  const webhookStored = samples.webhook.reduce((t, s) => t + s.stored, 0);
  notes.push(`webhook sink: ${fmt(delivered)} events delivered to the receiver for ${fmt(webhookStored)} stored (close() gives the sink what is left of its timeout; the rest waits in its spool).`);
  const base = medians.bare.rps;
  // Server CPU per request is the steady measure on a shared machine; req/s moves with whatever else runs.
  const text = table(
    ['variant', 'server CPU µs/req', 'CPU vs floor', 'req/s (median)', 'req/s vs bare', 'p50 ms', 'p99 ms', 'database CPU µs/req'],
    VARIANTS.map((v) => [
      LABEL[v],
      fmt(medians[v].cpu, 1),
      fmt(medians[v].cpu / medians.floor.cpu, 2),
      fmt(medians[v].rps),
      fmt(medians[v].rps / base, 2),
      fmt(medians[v].p50, 1),
      fmt(medians[v].p99, 1),
      medians[v].dbCpu === null ? 'n/a' : fmt(medians[v].dbCpu as number),
    ]),
  );
  const drains = samples.audited.map((s) => s.drainMs);
  const spooled = samples.audited.map((s) => s.spooled);
  notes.push(`koa-audit (async): events spooled during a round: ${spooled.map((n) => fmt(n)).join(', ')}; backlog still to write when the load stopped took ${drains.map((n) => fmt(n)).join(', ')} ms (close()).`);
  return { medians, text, notes };
}
