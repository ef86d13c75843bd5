/**
 * Store benchmark: events per second that the writer sustains into the real server. The writer is driven
 * directly (no HTTP) with request events shaped as the middleware builds them, so this measures the batching
 * writer and the server, nothing else: N events accepted as fast as possible, then timed until flush() says
 * every one is stored.
 *
 * Each batch size runs with integrity off (no chain), with the hash chain alone, and with signed checkpoints
 * (HMAC-SHA256 and Ed25519, a checkpoint every 1,000 events): the ratio column is events/s against "off". The
 * variant's chain is then read back by `verify` (events/s, checkpoints checked with the key), once, over a trail
 * of BENCH_VERIFY_EVENTS (100,000) events written for it in a collection of its own.
 *
 * Each round's documents, as the writer stored them (chain fields included), are then inserted again by the raw
 * driver into a collection with the library's indexes: "raw vs off" is what storing the chain's fields costs the
 * server by itself, with no hashing and no writer, the floor under the store's own "vs off".
 *
 * Beside the "off" rounds, the same documents go through the raw driver (`insertMany` in batches of the same
 * size, one at a time, into a collection with only `_id`): what the library's indexes and writer cost.
 */
import { generateKeyPairSync } from 'node:crypto';
import { EventEmitter } from 'node:events';
import mongoose, { mongo } from 'mongoose';
import type { CheckpointSigner } from '../lib/core/integrity-options.js';
import { Chain } from '../lib/integrity/chain.js';
import { verifyTrail, type VerifyRun } from '../lib/integrity/verify.js';
import { RollupStore } from '../lib/rollup/store.js';
import { eventModel } from '../lib/store/model.js';
import { Writer } from '../lib/store/writer.js';
import { fmt, median, table } from './common.js';

export type IntegrityVariant = 'off' | 'chain' | 'hmac' | 'ed25519';

export interface StoreRow {
  batchSize: number;
  integrity: IntegrityVariant;
  events: number;
  eventsPerSec: number;
  /** events/s against the same batch size with integrity off. */
  ratio: number;
  /** verify over the stored chain, events/s (null with integrity off). */
  verifyPerSec: number | null;
  /** The raw driver's insertMany of the same documents as stored (chain fields included) into the library's indexes. */
  rawStoredPerSec: number;
  /** rawStoredPerSec against the same with integrity off: what storing the chain's fields costs the server alone. */
  rawStoredRatio: number;
}

/** The store (integrity off, the library's indexes) beside a raw driver insertMany into an `_id`-only collection. */
export interface RawRow {
  batchSize: number;
  storePerSec: number;
  rawPerSec: number;
  /** store / raw. */
  ratio: number;
}

export const VERIFY_EVENTS = Number.parseInt(process.env.BENCH_VERIFY_EVENTS ?? '', 10) > 0 ? Number.parseInt(process.env.BENCH_VERIFY_EVENTS as string, 10) : 100_000;

/**
 * The writer as the store runs it, with room for every event, and a hash chain with a checkpoint every 1,000 events
 * (none when `signer` is null). Its checkpoints go through the writer like any other event.
 */
function benchWriter(coll: mongoose.Collection, signer: CheckpointSigner | null, batchSize: number, maxQueue: number): { w: Writer; chain: Chain | null } {
  let w: Writer | null = null;
  const chain = signer === null ? null : new Chain({
    integrity: { signer, checkpointEvery: 1000, checkpointMs: 60_000, onCheckpoint: undefined },
    startEvent: () => trailEvent('audit_start', -1),
    recordCheckpoint: (checkpoint) => void (w as Writer).accept({ ...trailEvent('checkpoint', -1), checkpoint }),
    report: (err) => { throw err; },
  });
  w = new Writer(() => coll, {
    batchSize, flushIntervalMs: 250, maxQueue, maxQueueBytes: 1 << 30, onFull: 'drop', spool: null, wal: null,
    blockTimeoutMs: 5000, writeConcern: undefined, degradedAfterMs: 5000, retryMinMs: 50, retryMaxMs: 5000,
    lossEvent: () => { throw new Error('store bench: nothing is dropped under drop with room for every event'); },
    chain,
  }, new EventEmitter());
  return { w, chain };
}

/** verify's events/s over a chained trail of `n` request events written for it (not timed) in its own collection. */
async function verifyRate(conn: mongoose.Connection, variant: IntegrityVariant, n: number, batchSize: number): Promise<number> {
  const model = eventModel(conn, `store_bench_verify_${variant}`);
  await model.createIndexes();
  const coll = model.collection;
  const { signer, keys } = signerFor(variant);
  const { w, chain } = benchWriter(coll, signer, batchSize, n * 2);
  for (let i = 0; i < n; i++) w.accept(requestEvent(i));
  await w.flush();
  chain?.checkpoint();
  await w.close(5000);
  chain?.stop();
  const t = performance.now();
  const result = await verifyTrail(coll, { ...keys, openChains: new Set([(chain as Chain).id]) });
  const secs = (performance.now() - t) / 1000;
  if (!result.ok) throw new Error(`store bench: verify found ${JSON.stringify(result.problems.slice(0, 3))}`);
  await coll.drop();
  return result.events / secs;
}

/**
 * Events/s of the raw driver: `insertMany` of `docs` in batches, one at a time, into a new collection: `_id` only,
 * or with the library's indexes.
 */
async function rawInsertRate(conn: mongoose.Connection, name: string, docs: Record<string, unknown>[], batchSize: number, indexes: '_id' | 'library' = '_id'): Promise<number> {
  const db = conn.db as mongo.Db;
  const coll = await db.createCollection(name);
  if (indexes === 'library') await eventModel(conn, name).createIndexes();
  const t = performance.now();
  for (let i = 0; i < docs.length; i += batchSize) await coll.insertMany(docs.slice(i, i + batchSize), { ordered: false });
  const secs = (performance.now() - t) / 1000;
  if ((await coll.estimatedDocumentCount()) !== docs.length) throw new Error('store bench: the raw insertMany lost documents');
  await coll.drop();
  return docs.length / secs;
}

function signerFor(v: IntegrityVariant): { signer: CheckpointSigner; keys: Pick<VerifyRun, 'key' | 'publicKey'> } {
  if (v === 'hmac') {
    const key = Buffer.from('a benchmark integrity key, 32 b.');
    return { signer: { alg: 'hmac-sha256', key }, keys: { key } };
  }
  if (v === 'ed25519') {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    return { signer: { alg: 'ed25519', privateKey, publicKey }, keys: { publicKey } };
  }
  return { signer: { alg: 'none' }, keys: {} };
}

function trailEvent(kind: string, i: number): Record<string, unknown> {
  return { _id: new mongo.ObjectId(), ts: new Date(), kind, outcome: 'success', actor: { id: 'system', via: 'system' }, requestId: null, ip: null, userAgent: null, meta: { i } };
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

export async function runStoreBench(
  uri: string, events: number, rounds: number, batchSizes: number[],
  variants: IntegrityVariant[] = ['off', 'chain', 'hmac', 'ed25519'],
): Promise<{ rows: StoreRow[]; text: string; raw: RawRow[] }> {
  const conn = await mongoose.createConnection(uri).asPromise();
  await conn.dropDatabase();
  const rows: StoreRow[] = [];
  const raw: RawRow[] = [];
  try {
    for (const batchSize of batchSizes) {
      let off: number | null = null;
      let rawOff: number | null = null;
      for (const variant of variants) {
        const rates: number[] = [];
        const verifyRates: number[] = [];
        const rawRates: number[] = [];
        const rawStoredRates: number[] = [];
        for (let r = 0; r < rounds; r++) {
          // The audit collection as the library sets it up: every index the queries need.
          const model = eventModel(conn, `store_bench_${batchSize}_${variant}_${r}`);
          await model.createIndexes();
          const coll = model.collection;
          const { w, chain } = benchWriter(coll, variant === 'off' ? null : signerFor(variant).signer, batchSize, events * 2);
          const docs = Array.from({ length: events }, (_, i) => requestEvent(i));
          // The same documents, copied before the writer touches them; raw and store alternate which goes first.
          const rawDocs = variant === 'off' ? docs.map((d) => ({ ...d })) : null;
          if (rawDocs !== null && r % 2 === 1) rawRates.push(await rawInsertRate(conn, `store_bench_raw_${batchSize}_${r}`, rawDocs, batchSize));
          const t = performance.now();
          for (const d of docs) w.accept(d);
          await w.flush();
          const secs = (performance.now() - t) / 1000;
          const stats = w.stats();
          // Checkpoints are counted as stored events too; the application's all have to be there.
          if (stats.stored < events) throw new Error(`store bench: ${stats.stored} of ${events} stored`);
          rates.push(events / secs);
          if (rawDocs !== null && r % 2 === 0) rawRates.push(await rawInsertRate(conn, `store_bench_raw_${batchSize}_${r}`, rawDocs, batchSize));
          chain?.checkpoint();
          await w.close(5000);
          chain?.stop();
          await coll.drop();
          // The documents as the writer stored them (it gave them their chain fields), by the raw driver.
          rawStoredRates.push(await rawInsertRate(conn, `store_bench_rawstored_${batchSize}_${variant}_${r}`, docs, batchSize, 'library'));
        }
        if (variant !== 'off') verifyRates.push(await verifyRate(conn, variant, VERIFY_EVENTS, batchSize));
        const eventsPerSec = median(rates);
        const rawStoredPerSec = median(rawStoredRates);
        if (variant === 'off') {
          off = eventsPerSec;
          rawOff = rawStoredPerSec;
        }
        if (rawRates.length > 0) raw.push({ batchSize, storePerSec: eventsPerSec, rawPerSec: median(rawRates), ratio: eventsPerSec / median(rawRates) });
        rows.push({
          batchSize, integrity: variant, events, eventsPerSec, ratio: off === null ? 1 : eventsPerSec / off,
          verifyPerSec: verifyRates.length === 0 ? null : median(verifyRates),
          rawStoredPerSec, rawStoredRatio: rawOff === null ? 1 : rawStoredPerSec / rawOff,
        });
      }
    }
  } finally {
    await conn.close();
  }
  const text = table(
    ['batchSize', 'integrity', 'events per round', 'rounds', 'events/s (median)', 'vs off', 'raw insertMany of the stored documents, events/s', 'raw vs off', `verify events/s (trail of ${fmt(VERIFY_EVENTS)})`],
    rows.map((r) => [
      r.batchSize, r.integrity, fmt(r.events), rounds, fmt(r.eventsPerSec), `${r.ratio.toFixed(2)}x`,
      fmt(r.rawStoredPerSec), `${r.rawStoredRatio.toFixed(2)}x`, r.verifyPerSec === null ? '-' : fmt(r.verifyPerSec),
    ]),
  );
  const rawText = table(
    ['batchSize', 'store events/s (integrity off, its indexes)', 'raw insertMany events/s (_id only)', 'store / raw'],
    raw.map((r) => [r.batchSize, fmt(r.storePerSec), fmt(r.rawPerSec), `${r.ratio.toFixed(2)}x`]),
  );
  return { rows, text: raw.length === 0 ? text : `${text}\n\n${rawText}`, raw };
}

export interface RollupsRow {
  batchSize: number;
  /** events/s with the dashboard's rollups kept after each batch (as createAudit does by default), and without. */
  withRollups: number;
  without: number;
  ratio: number;
}

/**
 * Store throughput with the dashboard's rollups on against off (integrity off): the same writer and events,
 * the rollups' `afterStore` hook added, and the time taken until the rollups too are written. Alternated
 * within each round, so that a drift of the machine does not favour one side.
 */
export async function runStoreRollupsBench(uri: string, events: number, rounds: number, batchSize: number): Promise<{ row: RollupsRow; text: string }> {
  const conn = await mongoose.createConnection(uri).asPromise();
  const rates = { off: [] as number[], on: [] as number[] };
  try {
    for (let r = 0; r < rounds; r++) for (const side of ['off', 'on'] as const) {
      const name = `store_bench_rollups_${batchSize}_${r}_${side}`;
      const model = eventModel(conn, name);
      await model.createIndexes();
      const coll = model.collection;
      const store = side === 'on' ? new RollupStore(() => coll, () => conn.collection(RollupStore.collectionName(name)), { days: 400, topK: 100 }) : null;
      await store?.prepare(new Date());
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
      await store?.flush();
      const secs = (performance.now() - t) / 1000;
      if (w.stats().stored !== events) throw new Error(`store bench: ${w.stats().stored} of ${events} stored`);
      rates[side].push(events / secs);
      await w.close(1000);
      await coll.drop();
      if (store !== null) await conn.collection(RollupStore.collectionName(name)).drop();
    }
  } finally {
    await conn.close();
  }
  const row: RollupsRow = { batchSize, withRollups: median(rates.on), without: median(rates.off), ratio: median(rates.on) / median(rates.off) };
  const text = table(
    ['batchSize', 'rollups', 'events per round', 'rounds', 'events/s (median)', 'on / off'],
    [[batchSize, 'off', fmt(events), rounds, fmt(row.without), '-'], [batchSize, 'on', fmt(events), rounds, fmt(row.withRollups), `${row.ratio.toFixed(2)}x`]],
  );
  return { row, text };
}
