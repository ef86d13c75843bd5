/**
 * Dashboard benchmark: the answer time of `dashboard()` over a trail of N events (default 200,000) spread over
 * 30 days, read from the rollups, beside the fallback that counts the events of the range. The events are
 * inserted straight into the collection 10,000 at a time, and each lot is added to the rollups through the
 * store path's own code (`addStored`: the tally, merged per bucket, compare-and-set writes), as the writer's
 * `afterStore` would after each batch; both answers are checked equal before anything is timed.
 */
import mongoose, { mongo } from 'mongoose';
import { dashboard, type DashboardQuery } from '../lib/rollup/dashboard.js';
import { RollupStore } from '../lib/rollup/store.js';
import { eventModel } from '../lib/store/model.js';
import type { StoredDoc } from '../lib/core/types.js';
import { fmt, median, table } from './common.js';

export interface DashboardBenchResult {
  events: number;
  rollupsMs: number;
  fallbackMs: number;
  text: string;
}

const DAY = 86_400_000;
const KINDS = ['request', 'request', 'request', 'request', 'update', 'create', 'login', 'login_failed'] as const;

function event(i: number, now: number, days: number): Record<string, unknown> {
  const kind = KINDS[i % KINDS.length];
  const e: Record<string, unknown> = {
    _id: new mongo.ObjectId(), ts: new Date(now - Math.floor(((i * 0.6180339887) % 1) * days * DAY)), kind, outcome: i % 13 === 0 || kind === 'login_failed' ? 'failure' : 'success',
    actor: { id: `user-${i % 40}`, via: 'state' }, requestId: `b-${i}`, ip: `10.0.${i % 7}.${i % 50}`, userAgent: 'bench',
  };
  if (kind === 'request') e.http = { method: i % 3 ? 'GET' : 'POST', path: `/items/${i % 500}`, route: `/r${i % 25}/:id`, query: '', status: i % 13 === 0 ? 500 : 200, durationMs: (i % 400) + 1 };
  else if (kind === 'login_failed' || kind === 'login') Object.assign(e, { provider: 'local', identifier: `name-${i % 60}` });
  else Object.assign(e, { model: `M${i % 6}`, documentId: `d${i % 300}`, operation: 'updateOne', changes: [] });
  return e;
}

export async function runDashboardBench(uri: string, events: number, rounds: number, log: (line: string) => void = () => undefined): Promise<DashboardBenchResult> {
  const conn = await mongoose.createConnection(uri).asPromise();
  await conn.dropDatabase();
  try {
    const model = eventModel(conn, 'dashboard_bench');
    await model.createIndexes();
    const coll = model.collection;
    const now = Date.now();
    // Reads of the rollup collection, counted: what an answer costs in documents.
    let reads = 0;
    const rollupColl = conn.collection(RollupStore.collectionName('dashboard_bench'));
    const counted = new Proxy(rollupColl, {
      get(target, prop, receiver) {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if ((prop === 'find' || prop === 'findOne') && typeof v === 'function') {
          return (...args: unknown[]) => {
            reads++;
            return (v as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        return v;
      },
    });
    const store = new RollupStore(() => coll, () => counted, { days: 400, topK: 100 });
    await store.prepare(new Date(0));
    let rollupSecs = 0;
    // In time order, as a store receives them: each lot then falls in a day or two of buckets.
    const all = Array.from({ length: events }, (_, i) => event(i, now, 30)).sort((x, y) => (x.ts as Date).getTime() - (y.ts as Date).getTime());
    for (let i = 0; i < events; i += 10_000) {
      const lot = all.slice(i, i + 10_000);
      await coll.insertMany(lot, { ordered: false });
      const t = performance.now();
      await store.addStored(lot as StoredDoc[]);
      rollupSecs += (performance.now() - t) / 1000;
    }
    log(`  inserted ${fmt(events)} events; their rollups written in ${fmt(rollupSecs, 1)} s`);
    const q: DashboardQuery = { from: new Date(now - 30 * DAY), to: new Date(now), bucket: 'day' };
    const fromRollups = () => dashboard({ events: () => coll, rollups: store, degraded: () => false }, q);
    const fromEvents = () => dashboard({ events: () => coll, rollups: null, degraded: () => false }, q);
    // The first answer reads the days one by one and folds the closed ones into their blocks; the later ones read
    // the blocks (what the target is about: a dashboard is opened again and again).
    reads = 0;
    let t0 = performance.now();
    const a = await fromRollups();
    const firstMs = performance.now() - t0;
    const firstReads = reads;
    const b = await fromEvents();
    // Key order aside (a merge and a count add kinds in different orders), the two answers are the same: the
    // series and routes exactly; the top tables' leaders too (a rollup table keeps its first topK keys).
    const canonical = (v: unknown): string => JSON.stringify(v, (_k, x: unknown) => (x !== null && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([p], [q]) => (p < q ? -1 : 1))) : x));
    if (a.source !== 'rollups' || a.totals.events !== events || canonical(a.series) !== canonical(b.series) || canonical(a.routes) !== canonical(b.routes)
      || canonical(a.topActors) !== canonical(b.topActors) || canonical(a.topModels) !== canonical(b.topModels)) {
      throw new Error(`dashboard bench: the rollups (${a.source}, ${a.totals.events}) disagree with the events (${b.totals.events})`);
    }
    const time = async (f: () => Promise<unknown>, n: number): Promise<number> => {
      const xs: number[] = [];
      for (let i = 0; i < n; i++) {
        const s = performance.now();
        await f();
        xs.push(performance.now() - s);
      }
      return median(xs);
    };
    const rollupsMs = await time(fromRollups, Math.max(5, rounds));
    reads = 0;
    await fromRollups();
    const laterReads = reads;
    const fallbackMs = await time(fromEvents, Math.max(1, Math.min(rounds, 3)));
    // The last 24 hours by hours: the other default range (hour documents).
    const day: DashboardQuery = { from: new Date(now - DAY), to: new Date(now), bucket: 'hour' };
    reads = 0;
    t0 = performance.now();
    const dayRolled = await dashboard({ events: () => coll, rollups: store, degraded: () => false }, day);
    const dayFirstMs = performance.now() - t0;
    const dayFirstReads = reads;
    const dayEvents = dayRolled.totals.events;
    const dayRollupsMs = await time(() => dashboard({ events: () => coll, rollups: store, degraded: () => false }, day), Math.max(5, rounds));
    reads = 0;
    await dashboard({ events: () => coll, rollups: store, degraded: () => false }, day);
    const dayLaterReads = reads;
    const dayFallbackMs = await time(() => dashboard({ events: () => coll, rollups: null, degraded: () => false }, day), Math.max(1, Math.min(rounds, 3)));
    // Rollup documents read per answer (all by _id).
    const text = table(
      ['answer of dashboard()', 'events in range', 'rollup documents read', 'ms (median)'],
      [
        ['30 days by days, from the rollups: the first answer (folds the closed days into blocks)', fmt(events), fmt(firstReads), fmt(firstMs, 1)],
        ['30 days by days, from the rollups: every later answer', fmt(events), fmt(laterReads), fmt(rollupsMs, 1)],
        ['30 days by days, fallback: counting the events of the range', fmt(events), '-', fmt(fallbackMs, 1)],
        ['24 hours by hours, from the rollups: the first answer', fmt(dayEvents), fmt(dayFirstReads), fmt(dayFirstMs, 1)],
        ['24 hours by hours, from the rollups: every later answer', fmt(dayEvents), fmt(dayLaterReads), fmt(dayRollupsMs, 1)],
        ['24 hours by hours, fallback', fmt(dayEvents), '-', fmt(dayFallbackMs, 1)],
      ],
    );
    return { events, rollupsMs, fallbackMs, text };
  } finally {
    await conn.close();
  }
}
