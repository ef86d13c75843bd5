/**
 * `npm run bench` (= `tsx bench/run.ts`): the benchmark suite, not part of `npm test`.
 *
 *   1. HTTP (http.ts): bare Koa, the async-context floor, koa-audit (default; durability 'disk'; and with a discarding store), a naive
 *      awaited insertOne, koa-audit sync; at saturation and at a fixed offered load (BENCH_RATE, 4,000 req/s);
 *   2. Mongoose: plain vs audited writes (mongoose.ts);
 *   3. Store: events/s the writer sustains into the real server (store.ts), by integrity variant, and with the dashboard's
 *      rollups off and on.
 *   4. Dashboard: dashboard() over BENCH_DASHBOARD_EVENTS events (200,000) from the rollups, beside the fallback (dashboard.ts).
 * BENCH_ONLY=store,dashboard (any of http, mongoose, store, store-rollups, dashboard) runs only those sections and their
 * targets (store-rollups: the rollups row of the store section alone).
 * BENCH_BASELINE=<git ref>[,…] adds koa-audit as it was at those commits to the HTTP tables, in the same run.
 *
 * Every table is measured side by side in this one run, with medians and ratios. The tables, the machine and
 * the target checks are printed and written into bench/RESULTS.md between its `results` markers (the prose
 * around them is kept). Knobs: BENCH_ROUNDS (3), BENCH_SECONDS (4 per HTTP sample), BENCH_CONNECTIONS (32),
 * BENCH_STORE_EVENTS (20000), BENCH_VERIFY_EVENTS (100000). The database comes from test/support/database.ts (MONGODB_URI, mongod, or FerretDB).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { databaseUri, startDatabase, stopDatabase } from '../test/support/database.js';
import { fmt, machine, table } from './common.js';
import { runHttpBench, type HttpResult } from './http.js';
import { runStoreBench, runStoreRollupsBench, VERIFY_EVENTS, type RawRow, type RollupsRow, type StoreRow } from './store.js';
import { runDashboardBench, type DashboardBenchResult } from './dashboard.js';

interface MongooseRow {
  name: string;
  plainMs: number;
  auditedMs: number;
  ratio: number;
}

const START = '<!-- results:start -->';
const END = '<!-- results:end -->';

function envInt(name: string, dflt: number): number {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v > 0 ? v : dflt;
}

function log(s: string): void {
  process.stdout.write(`${s}\n`);
}

async function mongooseBench(uri: string): Promise<{ rows: MongooseRow[] | null; text: string }> {
  if (!existsSync(join(__dirname, 'mongoose.ts')) && !existsSync(join(__dirname, 'mongoose.js'))) {
    return { rows: null, text: '_bench/mongoose.ts is absent: the mongoose benchmark was not run._' };
  }
  const mod = (await import('./mongoose.js')) as { runMongooseBench?: (uri: string) => Promise<MongooseRow[]> };
  if (typeof mod.runMongooseBench !== 'function') return { rows: null, text: '_bench/mongoose.ts exports no runMongooseBench: not run._' };
  const rows = await mod.runMongooseBench(uri);
  const text = table(
    ['operation', 'plain ms (median)', 'audited ms (median)', 'audited / plain'],
    rows.map((r) => [r.name, fmt(r.plainMs, 1), fmt(r.auditedMs, 1), fmt(r.ratio, 2)]),
  );
  return { rows, text };
}

function targets(http: HttpResult | null, fixed: HttpResult | null, mongooseRows: MongooseRow[] | null, storeRows: StoreRow[], dash: DashboardBenchResult | null, rawRows: RawRow[] = [], rollups: RollupsRow | null = null): string {
  const update = mongooseRows?.find((r) => /^updateOne\b/i.test(r.name)) ?? null;
  const save = mongooseRows?.find((r) => /^save\b/i.test(r.name)) ?? null;
  const line = (what: string, value: string, target: string, met: boolean, miss: string): string[] => [what, value, target, met ? 'met' : `missed ${miss}`];
  const rows: string[][] = [];
  if (http !== null && fixed !== null) {
    const m = http.medians;
    const vsNaive = m.audited.rps / m.naive.rps;
    const durable = m.durable.rps / m.audited.rps;
    const vsFloor = fixed.medians.audited.cpu / fixed.medians.floor.cpu;
    rows.push(
      line('koa-audit server CPU/req / floor, at the fixed rate', fmt(vsFloor, 2), '<= 1.3', vsFloor <= 1.3, `by ${fmt(vsFloor - 1.3, 2)}`),
      line('koa-audit req/s / naive audit req/s', fmt(vsNaive, 2), '>= 5', vsNaive >= 5, `by ${fmt(5 - vsNaive, 2)}`),
      line("durability 'disk' req/s / default req/s", fmt(durable, 2), '>= 0.90', durable >= 0.9, `by ${fmt(0.9 - durable, 2)}`),
      line('with a webhook sink req/s / without', fmt(m.webhook.rps / m.audited.rps, 2), '>= 0.9', m.webhook.rps / m.audited.rps >= 0.9, `by ${fmt(0.9 - m.webhook.rps / m.audited.rps, 2)}`),
      line('with a dead webhook sink req/s / without', fmt(m.deadsink.rps / m.audited.rps, 2), '>= 0.9', m.deadsink.rps / m.audited.rps >= 0.9, `by ${fmt(0.9 - m.deadsink.rps / m.audited.rps, 2)}`),
    );
  }
  rows.push(
    save === null
      ? ['audited save / plain save', 'not measured', '<= 1.5', 'n/a']
      : line('audited save / plain save', fmt(save.ratio, 2), '<= 1.5', save.ratio <= 1.5, `by ${fmt(save.ratio - 1.5, 2)}`),
    update === null
      ? ['audited updateOne / plain updateOne', 'not measured', '<= 1.5', 'n/a']
      : line('audited updateOne / plain updateOne', fmt(update.ratio, 2), '<= 1.5', update.ratio <= 1.5, `by ${fmt(update.ratio - 1.5, 2)}`),
  );
  for (const r of storeRows) {
    if (r.integrity === 'off') continue;
    // Beside it, the same documents by the raw driver: what the chain's fields cost the server with no library code.
    const measured = `${fmt(r.ratio, 2)} (raw insertMany of the same documents: ${fmt(r.rawStoredRatio, 2)})`;
    rows.push(line(`store events/s with integrity (${r.integrity}) / off`, measured, '>= 0.9', r.ratio >= 0.9, `by ${fmt(0.9 - r.ratio, 2)}`));
    if (r.verifyPerSec !== null) rows.push([`verify events/s (${r.integrity}), trail of ${fmt(VERIFY_EVENTS)}`, fmt(r.verifyPerSec), 'measured over 100,000', VERIFY_EVENTS >= 100_000 ? 'met' : 'n/a (BENCH_VERIFY_EVENTS)']);
  }
  for (const r of rawRows) {
    rows.push(line(`store events/s (integrity off) / raw insertMany, _id only (batch ${r.batchSize})`, fmt(r.ratio, 2), '>= 0.8', r.ratio >= 0.8, `by ${fmt(0.8 - r.ratio, 2)}`));
  }
  if (rollups !== null) {
    rows.push(line('store events/s with rollups / without', fmt(rollups.ratio, 2), '>= 0.9', rollups.ratio >= 0.9, `by ${fmt(0.9 - rollups.ratio, 2)}`));
  }
  if (dash !== null) {
    rows.push(line(`dashboard() from rollups over ${fmt(dash.events)} events, ms`, fmt(dash.rollupsMs, 1), '<= 300', dash.rollupsMs <= 300, `by ${fmt(dash.rollupsMs - 300)} ms`));
  }
  return table(['target', 'measured', 'wanted', 'verdict'], rows);
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const rounds = envInt('BENCH_ROUNDS', 3);
  const seconds = envInt('BENCH_SECONDS', 4);
  const connections = envInt('BENCH_CONNECTIONS', 32);
  const storeEvents = envInt('BENCH_STORE_EVENTS', 20_000);
  const rate = envInt('BENCH_RATE', 4_000);
  const dashboardEvents = envInt('BENCH_DASHBOARD_EVENTS', 200_000);
  const only = process.env.BENCH_ONLY === undefined ? null : new Set(process.env.BENCH_ONLY.split(','));
  const runs = (name: string): boolean => only === null || only.has(name);
  const db = await startDatabase();
  const loadBefore = loadavg();
  log(`koa-audit benchmarks: ${machine()}; database: ${db.kind}; load average ${loadBefore.map((l) => l.toFixed(2)).join(' ')}`);

  const skipped = { text: 'not run (BENCH_ONLY)', notes: [] as string[] };
  let http: HttpResult | null = null;
  let fixed: HttpResult | null = null;
  if (runs('http')) {
    log(`\n## HTTP (${rounds} rounds x ${seconds} s per variant, ${connections} connections)`);
    http = await runHttpBench(databaseUri(db.uri, 'koa_audit_bench_http'), { rounds, durationSec: seconds, warmupSec: 1, connections }, log);
    log(`\n${http.text}\n`);
    for (const n of http.notes) log(`- ${n}`);

    log(`\n## HTTP at a fixed ${fmt(rate)} req/s (the store keeps up: nothing spools)`);
    fixed = await runHttpBench(databaseUri(db.uri, 'koa_audit_bench_http'), { rounds, durationSec: seconds, warmupSec: 1, connections, rate }, log);
    log(`\n${fixed.text}\n`);
    for (const n of fixed.notes) log(`- ${n}`);
  }

  let mongoose: { rows: MongooseRow[] | null; text: string } = { rows: null, text: skipped.text };
  if (runs('mongoose')) {
    log('\n## Mongoose (bench/mongoose.ts)');
    mongoose = await mongooseBench(db.uri);
    log(`\n${mongoose.text}`);
  }

  let store: { rows: StoreRow[]; text: string; raw?: RawRow[] } = { rows: [], text: skipped.text };
  let rollupsRow: RollupsRow | null = null;
  if (runs('store')) {
    log(`\n## Store (${rounds} rounds x ${fmt(storeEvents)} events, by integrity)`);
    store = await runStoreBench(databaseUri(db.uri, 'koa_audit_bench_store'), storeEvents, rounds, [500]);
    log(`\n${store.text}`);
  }
  if (runs('store') || runs('store-rollups')) {
    log(`\n## Store with the dashboard's rollups on and off (${rounds} rounds x ${fmt(storeEvents)} events)`);
    const r = await runStoreRollupsBench(databaseUri(db.uri, 'koa_audit_bench_store'), storeEvents, rounds, 500);
    rollupsRow = r.row;
    store = { ...store, text: `${runs('store') ? store.text : skipped.text}\n\nWith the dashboard's rollups on and off (integrity off):\n\n${r.text}` };
    log(`\n${r.text}`);
  }

  let dash: DashboardBenchResult | null = null;
  if (runs('dashboard')) {
    log(`\n## Dashboard (${fmt(dashboardEvents)} events over 30 days)`);
    dash = await runDashboardBench(databaseUri(db.uri, 'koa_audit_bench_dashboard'), dashboardEvents, rounds, log);
    log(`\n${dash.text}`);
  }

  const target = targets(http, fixed, mongoose.rows, store.rows, dash, store.raw, rollupsRow);
  log(`\n## Targets\n\n${target}`);
  const loadAfter = loadavg();
  const took = Math.round((Date.now() - t0) / 1000);

  const section = [
    START,
    `Run of ${new Date().toISOString()}: \`npm run bench\` (${rounds} rounds, ${seconds} s per HTTP sample, ${connections} connections), ${took} s in all.`,
    `Machine: ${machine()}. Database: ${db.kind}, on the same machine. Load average at start ${loadBefore.map((l) => l.toFixed(2)).join(' ')}, at end ${loadAfter.map((l) => l.toFixed(2)).join(' ')}.`,
    '',
    '### HTTP, at saturation',
    '',
    (http ?? skipped).text,
    '',
    ...(http ?? skipped).notes.map((n) => `- ${n}`),
    '',
    `### HTTP, at a fixed ${fmt(rate)} req/s`,
    '',
    (fixed ?? skipped).text,
    '',
    ...(fixed ?? skipped).notes.map((n) => `- ${n}`),
    '',
    '### Mongoose',
    '',
    mongoose.text,
    '',
    '### Store',
    '',
    store.text,
    '',
    '### Dashboard',
    '',
    dash === null ? skipped.text : dash.text,
    '',
    '### Targets',
    '',
    target,
    END,
  ].join('\n');
  const file = join(__dirname, 'RESULTS.md');
  const old = existsSync(file) ? readFileSync(file, 'utf8') : `# Benchmark results\n\n${START}\n${END}\n`;
  const a = old.indexOf(START);
  const b = old.indexOf(END);
  const next = a >= 0 && b > a ? old.slice(0, a) + section + old.slice(b + END.length) : `${old.trimEnd()}\n\n${section}\n`;
  writeFileSync(file, next);
  log(`\nwritten to bench/RESULTS.md (${took} s)`);
}

main()
  .then(
    () => stopDatabase(),
    async (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
      await stopDatabase();
    },
  )
  .finally(() => process.exit());
