/**
 * Store benchmark: events per second that the writer sustains into the real server. The writer is driven
 * directly (no HTTP) with request events shaped as the middleware builds them, so this measures the batching
 * writer and the server, nothing else: N events accepted as fast as possible, then timed until flush() says
 * every one is stored.
 */
import { EventEmitter } from 'node:events';
import mongoose, { mongo } from 'mongoose';
import { RollupStore } from '../lib/rollup/store.js';
import { eventModel } from '../lib/store/model.js';
import { Writer } from '../lib/store/writer.js';
import { fmt, median, table } from './common.js';

export interface StoreRow {
  batchSize: number;
  /** Whether the dashboard's rollups were kept after each batch (as createAudit does by default). */
  rollups: boolean;
  events: number;
  eventsPerSec: number;
}

function requestEvent(i: number): Record<string, unknown> {
  return {
    _id: new mongo.ObjectId(),
    ts: new Date(),
    kind: 'request',
    outcome: 'success',
    actor: { id: `user-${i % 50}`, name: 'Bench User', via: 'state' },
    requestId: `bench-${i}`,
    ip: '127.0.0.1',
    userAgent: 'autocannon',
    http: { method: 'GET', path: `/items/${i}`, route: '/items/:id', query: '', status: 200, durationMs: 0.412 },
  };
}

export async function runStoreBench(uri: string, events: number, rounds: number, batchSizes: number[]): Promise<{ rows: StoreRow[]; text: string }> {
  const conn = await mongoose.createConnection(uri).asPromise();
  await conn.dropDatabase();
  const rows: StoreRow[] = [];
  try {
    for (const batchSize of batchSizes) {
      const rates = { false: [] as number[], true: [] as number[] };
      // Alternated within each round, so that a drift of the machine does not favour one side.
      for (let r = 0; r < rounds; r++) for (const rollups of [false, true]) {
        // The audit collection as the library sets it up: every index the queries need.
        const name = `store_bench_${batchSize}_${r}_${rollups ? 'r' : 'n'}`;
        const model = eventModel(conn, name);
        await model.createIndexes();
        const coll = model.collection;
        const store = rollups ? new RollupStore(() => coll, () => conn.collection(RollupStore.collectionName(name)), { days: 400, topK: 100 }) : null;
        if (store !== null) await store.prepare(new Date());
        const w = new Writer(() => coll, {
          batchSize, flushIntervalMs: 250, maxQueue: events, maxQueueBytes: 1 << 30, onFull: 'drop', spool: null, wal: null,
          blockTimeoutMs: 5000, writeConcern: undefined, degradedAfterMs: 5000, retryMinMs: 50, retryMaxMs: 5000,
          lossEvent: () => { throw new Error('store bench: nothing is dropped under drop with room for every event'); },
          afterStore: store === null ? undefined : (stored, dup) => store.afterStore(stored, dup, (err) => { throw err; }),
        }, new EventEmitter());
        const docs = Array.from({ length: events }, (_, i) => requestEvent(i));
        const t = performance.now();
        for (const d of docs) w.accept(d);
        await w.flush();
        const secs = (performance.now() - t) / 1000;
        const stats = w.stats();
        if (stats.stored !== events) throw new Error(`store bench: ${stats.stored} of ${events} stored`);
        rates[String(rollups) as 'true' | 'false'].push(events / secs);
        await w.close(1000);
        await coll.drop();
        if (rollups) await conn.collection(RollupStore.collectionName(name)).drop();
      }
      rows.push({ batchSize, rollups: false, events, eventsPerSec: median(rates.false) });
      rows.push({ batchSize, rollups: true, events, eventsPerSec: median(rates.true) });
    }
  } finally {
    await conn.close();
  }
  const text = table(
    ['batchSize', 'rollups', 'events per round', 'rounds', 'events/s (median)'],
    rows.map((r) => [r.batchSize, r.rollups ? 'on' : 'off', fmt(r.events), rounds, fmt(r.eventsPerSec)]),
  );
  return { rows, text };
}
