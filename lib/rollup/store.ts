/**
 * The rollups: in `{collection}_rollups`, one document per hour and one per day for all tenants together, and
 * one per hour and day for each tenant that has events then. Each holds the Tally of its time, kept up to date
 * after each stored batch (`afterStore`), so that the dashboard reads one small document per bucket (thirty
 * for a month by days, whatever the number of events) instead of the events.
 *
 * Shape, for the servers this runs on: a document is `{ _id, g, ts, tenant, v, n, t }` with the Tally as one
 * JSON string `t`, and it is only ever read by `_id`. A document of a thousand numeric fields (what `$inc` on
 * dotted paths needs) costs FerretDB tens of milliseconds to read and to update, and a filter on `ts` is not
 * pushed down to its storage (every rollup document is read to answer it); one string read by `_id` is a few
 * milliseconds on both servers. It also needs no encoding of keys that come from data (IPs, routes).
 *
 * Buckets that ended a few minutes ago are closed, and folded into block documents (hours by day, days by 32
 * days) by the first answer that reads them bucket by bucket: later answers read the blocks, and only the open
 * buckets one by one. A write to a closed bucket (a late event, a recount) takes it out of its block.
 *
 * Writes are off the writer's path: `afterStore` adds the batch to deltas held in memory and returns, and one
 * worker writes them, one document per bucket however many batches arrived meanwhile (so a slow rollup write
 * never slows the store, it only merges more batches into its next write). `flush()` waits for it.
 * Each write is a compare-and-set on `v` (a fresh token per write), so that several processes updating one
 * bucket never lose each other's counts: a process keeps the documents it wrote last, and reads one again only
 * when another process wrote it meanwhile. (FerretDB applies an update as a read and a write that another update can
 * come between, so there two processes writing the same bucket at once can lose counts, as `$inc` does there too:
 * keep one writing process per trail on FerretDB, or rebuild. Within one process writes never overlap.)
 *
 * Exactly once, without transactions: an event the server refused as a duplicate of its `_id` may or may not
 * have been counted (a retried batch whose first attempt did reach the server, a spool file replayed after a
 * crash), so its hour is recounted from the events instead, which is right whatever happened before; its day
 * is then summed from its hours. The same recount repairs a bucket whose write failed. Events of an hour that
 * is waiting to be recounted are left to that recount (and one more is scheduled, since they may be stored
 * after it read), never added twice.
 */
import { randomBytes } from 'node:crypto';
import type { Collection, Connection } from 'mongoose';
import type { StoredDoc } from '../core/types.js';
import { addEvent, emptyTally, merge, TOP_DIMENSIONS, type Tally } from './tally.js';

export const HOUR_MS = 3_600_000;
export const DAY_MS = 86_400_000;
const META_ID = 'meta';
/** The shape of the rollup documents; a collection kept in another shape is started afresh (see prepare). */
const FORMAT = 2;
/** Fields of an event the tally reads: the rest is never loaded when counting from the events. */
export const TALLY_PROJECTION = {
  ts: 1, kind: 1, outcome: 1, tenant: 1, ip: 1, identifier: 1, model: 1, documentId: 1, 'actor.id': 1,
  'http.method': 1, 'http.route': 1, 'http.path': 1, 'http.status': 1, 'http.durationMs': 1,
  'meta.summary': 1, 'meta.suppressed': 1, 'meta.lost': 1, name: 1, 'meta.monitor': 1,
} as const;

export interface RollupSettings {
  /** Rollups older than this are deleted (TTL where the server has it, else by prune()). */
  days: number;
  /** Keys per bucket and table before the rest is counted as overflow. */
  topK: number;
}

/** The two sizes of rollup: `g` of the stored document. */
export type Grain = 'h' | 'd';
const GRAIN_MS: Record<Grain, number> = { h: HOUR_MS, d: DAY_MS };

export interface RollupDoc {
  _id: string;
  g: Grain;
  ts: Date;
  /** null: the document of all tenants together. */
  tenant: string | null;
  /** Changes at every write: what a compare-and-set compares. */
  v: string;
  /** Events counted (readable without parsing `t`). */
  n: number;
  /** The Tally, as JSON. */
  t: string;
}

/**
 * Buckets that ended this long ago are closed: their tallies are also kept folded together, hours by day and
 * days by 32 days, in one block document each, so that an answer over closed time reads a handful of documents.
 * A write to a closed bucket (a late event, a recount) takes it out of its block again.
 */
const SETTLE_MS = 5 * 60_000;
const BLOCK_MS: Record<Grain, number> = { h: DAY_MS, d: 32 * DAY_MS };
const blockId = (g: Grain, start: number, tenant: string | null): string => {
  const b = Math.floor(start / BLOCK_MS[g]) * BLOCK_MS[g];
  return tenant === null ? `b${g}:${b}` : `b${g}:${b}:${tenant}`;
};
const closed = (g: Grain, start: number, now = Date.now()): boolean => start + GRAIN_MS[g] + SETTLE_MS <= now;

export const floorHour = (ms: number): number => Math.floor(ms / HOUR_MS) * HOUR_MS;
export const floorDay = (ms: number): number => Math.floor(ms / DAY_MS) * DAY_MS;
/** `h:<start>` for all tenants, `h:<start>:<tenant>` for one. */
export const rollupId = (g: Grain, start: number, tenant: string | null): string => (tenant === null ? `${g}:${start}` : `${g}:${start}:${tenant}`);
const token = (): string => randomBytes(9).toString('base64url');
const tenantOf = (e: StoredDoc): string | null => (typeof e.tenant === 'string' && e.tenant !== '' ? e.tenant : null);
/** The documents an event counts in: all tenants', and its tenant's. */
const keysOfEvent = (e: StoredDoc): (string | null)[] => {
  const t = tenantOf(e);
  return t === null ? [null] : [null, t];
};

export function parseTally(json: string): Tally {
  const t = { ...emptyTally(), ...(JSON.parse(json) as Partial<Tally>) };
  t.t = { ...emptyTally().t, ...t.t };
  return t;
}

/**
 * Adds `delta` into `into`, a bucket's table taking a key it does not have only while it holds fewer than
 * `topK` (the rest is counted as that table's overflow): a bucket's size is bounded whatever arrives.
 */
export function mergeBounded(into: Tally, delta: Tally, topK: number): Tally {
  const routes = delta.r;
  const tables = delta.t;
  merge(into, { ...delta, r: {}, t: emptyTally().t });
  const over = (dim: string, by: number): void => {
    into.o[dim] = (into.o[dim] ?? 0) + by;
  };
  let routeKeys = Object.keys(into.r).length;
  for (const [key, r] of Object.entries(routes)) {
    if (!Object.hasOwn(into.r, key)) {
      if (routeKeys >= topK) {
        over('route', r.n);
        continue;
      }
      routeKeys++;
    }
    merge(into, { ...emptyTally(), r: { [key]: r } });
  }
  for (const dim of TOP_DIMENSIONS) {
    const table = into.t[dim];
    let size = Object.keys(table).length;
    for (const [key, e] of Object.entries(tables[dim])) {
      if (!Object.hasOwn(table, key)) {
        if (size >= topK) {
          over(dim, e.n);
          continue;
        }
        size++;
        table[key] = { n: 0, x: 0 };
      }
      table[key].n += e.n;
      table[key].x += e.x;
    }
  }
  return into;
}

/** Keeps the `topK` biggest keys of each table (the rest counted as overflow): a day summed from its hours. */
function cap(t: Tally, topK: number): Tally {
  const bump = (dim: string, by: number): void => {
    t.o[dim] = (t.o[dim] ?? 0) + by;
  };
  for (const dim of TOP_DIMENSIONS) {
    const entries = Object.entries(t.t[dim]);
    if (entries.length <= topK) continue;
    entries.sort(([ka, a], [kb, b]) => b.n - a.n || (ka < kb ? -1 : 1));
    t.t[dim] = Object.fromEntries(entries.slice(0, topK));
    for (const [, e] of entries.slice(topK)) bump(dim, e.n);
  }
  const routes = Object.entries(t.r);
  if (routes.length > topK) {
    routes.sort(([ka, a], [kb, b]) => b.n - a.n || (ka < kb ? -1 : 1));
    t.r = Object.fromEntries(routes.slice(0, topK));
    for (const [, r] of routes.slice(topK)) bump('route', r.n);
  }
  return t;
}

interface Bucket {
  g: Grain;
  start: number;
  tenant: string | null;
  t: Tally;
}

/** Tallies events into buckets of one grain (all tenants', and each tenant's), unbounded: `mergeBounded` bounds. */
function tallyByBucket(docs: Iterable<StoredDoc>, g: Grain, into = new Map<string, Bucket>()): Map<string, Bucket> {
  for (const e of docs) {
    if (!(e.ts instanceof Date)) continue;
    const start = Math.floor(e.ts.getTime() / GRAIN_MS[g]) * GRAIN_MS[g];
    for (const tenant of keysOfEvent(e)) {
      const id = rollupId(g, start, tenant);
      let b = into.get(id);
      if (b === undefined) into.set(id, (b = { g, start, tenant, t: emptyTally() }));
      addEvent(b.t, e);
    }
  }
  return into;
}

/** Runs `f` over `items`, at most `n` at a time. */
async function pool<T, R>(items: T[], n: number, f: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array<R>(items.length);
  let next = 0;
  const run = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, run));
  return out;
}

/** Documents this process wrote last (their `v` and Tally): bounded, the newest kept. */
const CACHED = 256;
/** Reads (of one answer) or writes (of one round of deltas) under way at once. */
const READS_AT_ONCE = 8;
const CAS_ATTEMPTS = 5;

export class RollupStore {
  private readonly known = new Map<string, { v: string; t: Tally }>();
  /** Deltas not yet written, by document id. */
  private pending = new Map<string, Bucket>();
  /** Hours to recount from the events (and their days from the hours), in order of arrival. */
  private readonly recounts = new Set<number>();
  /** Days to sum again from their hours, with the tenants (null: all) whose documents to redo. */
  private readonly redoDays = new Map<number, Set<string | null>>();
  /** Hours whose recount failed: tried again with the next batch or flush (not in a loop against a dead server). */
  private readonly failedHours = new Set<number>();
  private recounting: number | null = null;
  private running: Promise<void> | null = null;
  /** Batches given to `afterStore` that added deltas, and how many of those the worker has written (flush). */
  private handed = 0;
  private written = 0;
  /** flush() calls waiting for the worker's next step. */
  private stepWaiters: (() => void)[] = [];
  /** Held by exclusive(): the worker stops at its next step and does not start again. */
  private holding = 0;
  private reportTo: (err: unknown) => void = () => undefined;
  private covered: Date | null = null;
  /** Closed buckets written since their blocks were last told, by block id. */
  private readonly unfolds = new Map<string, Set<string>>();

  constructor(
    private readonly events: () => Collection,
    private readonly rollups: () => Collection,
    readonly settings: RollupSettings,
  ) {}

  static collectionName(events: string): string {
    return `${events}_rollups`;
  }

  /** Indexes, retention, and the instant from which the rollups are complete (see `coveredFrom`). */
  async prepare(createdAt: Date): Promise<void> {
    const coll = this.rollups();
    this.covered = null;
    try {
      await coll.createIndex({ ts: 1 }, { name: 'koa_audit_rollup_retention', expireAfterSeconds: Math.round(this.settings.days * 86_400) });
    } catch {
      // No TTL index on this server (FerretDB): prune() deletes old rollups (documented with `rollups`).
    }
    const meta = await coll.findOne({ _id: META_ID as never });
    if (meta !== null && meta.format === FORMAT) return;
    // Events stored before this auditor existed were never counted: the rollups start at the next hour. Rollups
    // of an earlier shape are dropped the same way (`koa-audit rollup --rebuild` counts the older events).
    const older = await this.events().findOne({ ts: { $lt: createdAt } }, { projection: { _id: 1 } });
    const from = older === null ? new Date(0) : new Date(floorHour(createdAt.getTime()) + HOUR_MS);
    if (meta !== null) {
      await coll.deleteMany({ _id: { $ne: META_ID as never } });
      await coll.updateOne({ _id: META_ID as never }, { $set: { coveredFrom: from, format: FORMAT } });
      return;
    }
    try {
      await coll.updateOne({ _id: META_ID as never }, { $setOnInsert: { coveredFrom: from, format: FORMAT } }, { upsert: true });
    } catch (err) {
      // Another process set it up at the same moment (FerretDB reports the lost insert race): theirs stands.
      if ((err as { code?: unknown }).code !== 11000) throw err;
    }
  }

  /** The instant from which every stored event is counted; null when `prepare` has not run. */
  async coveredFrom(): Promise<Date | null> {
    // Kept once read: it only moves back (a rebuild), and a later instant only means counting events more often.
    if (this.covered !== null) return this.covered;
    const meta = await this.rollups().findOne({ _id: META_ID as never });
    this.covered = meta === null || meta.format !== FORMAT ? null : (meta.coveredFrom as Date);
    return this.covered;
  }

  /**
   * The writer's hook, after a batch: `stored` were inserted by this write, `duplicates` were refused as
   * already stored (by an earlier attempt, or another process). Returns at once (the worker writes); never
   * throws: a failure leaves the hours to be recounted, and is reported.
   */
  afterStore(stored: StoredDoc[], duplicates: StoredDoc[], report: (err: unknown) => void): Promise<void> {
    this.reportTo = report;
    for (const h of this.failedHours) this.recounts.add(h);
    this.failedHours.clear();
    for (const d of duplicates) if (d.ts instanceof Date) this.recounts.add(floorHour(d.ts.getTime()));
    const add: StoredDoc[] = [];
    for (const d of stored) {
      if (!(d.ts instanceof Date)) continue;
      const hour = floorHour(d.ts.getTime());
      // Left to the recount of its hour; and one more recount, in case this one already read the hour.
      if (this.recounts.has(hour)) continue;
      if (this.recounting === hour) {
        this.recounts.add(hour);
        continue;
      }
      add.push(d);
    }
    this.addDeltas(add);
    this.kick();
    return Promise.resolve();
  }

  /**
   * Resolves when every batch handed to `afterStore` so far is in the rollups (or left to a recount), and the
   * recounts asked for by then are done. It does not wait for the worker to go idle: under steady load, batches
   * handed after the call keep it busy, and would keep a flush (and every dashboard answer) waiting for ever.
   */
  async flush(): Promise<void> {
    for (const h of this.failedHours) this.recounts.add(h);
    this.failedHours.clear();
    const deltas = this.handed;
    this.kick();
    await this.until(() => this.written >= deltas);
    // Then the recounts asked for by now: those deltas' own, when a write of theirs failed, included.
    const hours = [...this.recounts];
    if (this.recounting !== null) hours.push(this.recounting);
    const days = [...this.redoDays.keys()];
    await this.until(() => !hours.some((h) => this.recounts.has(h) || this.recounting === h) && !days.some((d) => this.redoDays.has(d)));
  }

  /** Waits, step by step of the worker, until `done()` or the worker stops. */
  private async until(done: () => boolean): Promise<void> {
    while (this.running !== null && !done()) {
      await Promise.race([this.running, new Promise<void>((resolve) => this.stepWaiters.push(resolve))]);
    }
  }

  /** The worker finished a step: flush() calls look again. */
  private stepped(): void {
    for (const w of this.stepWaiters.splice(0)) w();
  }

  /** Runs `f` with the worker stopped (a prune, a rebuild): no two writes of one document at once in this process. */
  private async exclusive<T>(f: () => Promise<T>): Promise<T> {
    await this.flush();
    // Then the worker stops after its current step (see work()), and nothing starts it until f is done.
    this.holding++;
    try {
      while (this.running !== null) await this.running;
    } finally {
      this.holding--;
    }
    const p = f();
    this.running = p.then(() => undefined, () => undefined).finally(() => {
      this.running = null;
      this.kick();
    });
    return p;
  }

  private kick(): void {
    if (this.holding > 0 || this.running !== null || (this.pending.size === 0 && this.recounts.size === 0 && this.redoDays.size === 0)) return;
    this.running = this.work().finally(() => {
      this.running = null;
      this.kick();
    });
  }

  /** Deltas first (a recount must come after the deltas of the same hour written before it), then recounts. */
  private async work(): Promise<void> {
    try {
      await this.steps();
    } finally {
      this.stepped();
    }
  }

  private async steps(): Promise<void> {
    for (;; this.stepped()) {
      if (this.holding > 0) return;
      if (this.pending.size > 0) {
        const upTo = this.handed;
        const batch = [...this.pending.values()];
        this.pending = new Map();
        await pool(batch, READS_AT_ONCE, async (b) => {
          try {
            await this.add(b);
          } catch (err) {
            this.report(err);
            if (b.g === 'h') this.recounts.add(b.start);
            else this.redoDay(b.start, b.tenant);
          }
        });
        try {
          await this.applyUnfolds();
        } catch (err) {
          this.report(err);
        }
        this.written = upTo;
        continue;
      }
      const hour = this.recounts.values().next();
      if (!hour.done) {
        this.recounts.delete(hour.value);
        this.recounting = hour.value;
        try {
          await this.recount(hour.value);
        } catch (err) {
          this.report(err);
          this.failedHours.add(hour.value);
        } finally {
          this.recounting = null;
        }
        continue;
      }
      const day = this.redoDays.entries().next();
      if (!day.done) {
        const [start, tenants] = day.value;
        this.redoDays.delete(start);
        try {
          await this.sumDay(start, tenants);
        } catch (err) {
          this.report(err);
          // Its hours are right: the next recount of any of them sums the day again.
        }
        continue;
      }
      return;
    }
  }

  /** Reports a fault to the auditor; never throws (the worker must go on). */
  private report(err: unknown): void {
    try {
      this.reportTo(err);
    } catch {
      // A reporter that throws has been told.
    }
  }

  private redoDay(day: number, tenant: string | null): void {
    let s = this.redoDays.get(day);
    if (s === undefined) this.redoDays.set(day, (s = new Set()));
    s.add(tenant);
  }

  /** Adds a delta to its document: compare-and-set on `v`, read again when another process wrote it meanwhile. */
  private async add(b: Bucket): Promise<void> {
    const id = rollupId(b.g, b.start, b.tenant);
    const coll = this.rollups();
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      let cur = this.known.get(id) ?? null;
      if (cur === null) {
        const doc = (await coll.findOne({ _id: id as never }, { projection: { v: 1, t: 1 } })) as Pick<RollupDoc, 'v' | 't'> | null;
        cur = doc === null ? null : { v: doc.v, t: parseTally(doc.t) };
      }
      const next = mergeBounded(cur === null ? emptyTally() : structuredClone(cur.t), b.t, this.settings.topK);
      const row: RollupDoc = { _id: id, g: b.g, ts: new Date(b.start), tenant: b.tenant, v: token(), n: next.n, t: JSON.stringify(next) };
      this.known.delete(id);
      if (cur === null) {
        try {
          await coll.insertOne(row as never);
        } catch (err) {
          if ((err as { code?: unknown }).code === 11000) continue; // another process made it first
          throw err;
        }
      } else {
        const res = await coll.replaceOne({ _id: id as never, v: cur.v }, row);
        if (res.matchedCount === 0) continue; // another process (or a recount) wrote it meanwhile
      }
      this.remember(id, row.v, next);
      this.unfold(b.g, b.start, b.tenant);
      return;
    }
    throw new Error(`koa-audit: rollup ${id} changed under ${CAS_ATTEMPTS} writes in a row; it will be recounted`);
  }

  private remember(id: string, v: string, t: Tally): void {
    this.known.delete(id);
    this.known.set(id, { v, t });
    if (this.known.size > CACHED) this.known.delete(this.known.keys().next().value as string);
  }

  /** Writes whole documents (a recount: right whatever was there). */
  private async put(rows: RollupDoc[]): Promise<void> {
    await pool(rows, READS_AT_ONCE, async (row) => {
      this.known.delete(row._id);
      await this.rollups().replaceOne({ _id: row._id as never }, row, { upsert: true }).catch(async (err: unknown) => {
        // Two upserts of a new document at once: FerretDB reports the lost insert race; the second try replaces.
        if ((err as { code?: unknown }).code !== 11000) throw err;
        await this.rollups().replaceOne({ _id: row._id as never }, row, { upsert: true });
      });
      this.remember(row._id, row.v, parseTally(row.t));
      this.unfold(row.g, row.ts.getTime(), row.tenant);
    });
    await this.applyUnfolds();
  }

  /** A closed bucket was written (or deleted): its block must not answer for it any more (see applyUnfolds). */
  private unfold(g: Grain, start: number, tenant: string | null): void {
    if (!closed(g, start)) return;
    const id = blockId(g, start, tenant);
    let set = this.unfolds.get(id);
    if (set === undefined) this.unfolds.set(id, (set = new Set()));
    set.add(String(start));
  }

  /**
   * Takes the written buckets out of their blocks: one update per block, one block at a time (FerretDB loses one
   * of two updates of one document at once). What fails is kept for the next time.
   */
  private async applyUnfolds(): Promise<void> {
    for (const [id, starts] of [...this.unfolds]) {
      const unset: Record<string, ''> = {};
      for (const s of starts) unset[`e.${s}`] = '';
      await this.rollups().updateOne({ _id: id as never }, { $unset: unset, $set: { v: token() } });
      if (this.unfolds.get(id) === starts) this.unfolds.delete(id);
    }
  }

  /** Adds closed buckets' tallies to their block: a compare-and-set on the block's `v`, best effort. */
  private async fold(g: Grain, id: string, start: number, tenant: string | null, v: string | null, entries: Record<string, string>): Promise<void> {
    const coll = this.rollups();
    if (v === null) {
      await coll.insertOne({ _id: id, g: 'b', ts: new Date(Math.floor(start / BLOCK_MS[g]) * BLOCK_MS[g]), tenant, v: token(), e: entries } as never).catch((err: unknown) => {
        if ((err as { code?: unknown }).code !== 11000) throw err; // another reader folded it first
      });
      return;
    }
    const set: Record<string, string> = { v: token() };
    for (const [k, json] of Object.entries(entries)) set[`e.${k}`] = json;
    await coll.updateOne({ _id: id as never, v }, { $set: set });
  }

  private row(g: Grain, start: number, tenant: string | null, t: Tally): RollupDoc {
    return { _id: rollupId(g, start, tenant), g, ts: new Date(start), tenant, v: token(), n: t.n, t: JSON.stringify(t) };
  }

  /**
   * The Tallies of the buckets of one grain in [from, to), of one tenant or all (null), by bucket start; a
   * bucket without events has no document. One read by `_id` per bucket.
   */
  async read(from: number, to: number, tenant: string | null, g: Grain = 'h'): Promise<Map<number, Tally>> {
    const now = Date.now();
    const starts: number[] = [];
    for (let s = Math.floor(from / GRAIN_MS[g]) * GRAIN_MS[g]; s < to; s += GRAIN_MS[g]) starts.push(s);
    // The blocks of the closed buckets first (a month by days: two), then whatever they do not hold.
    const blocks = new Map<string, { start: number; v: string | null; add: Record<string, string> }>();
    for (const s of starts) if (closed(g, s, now)) blocks.set(blockId(g, s, tenant), { start: s, v: null, add: {} });
    const have = new Map<number, string>();
    await pool([...blocks], READS_AT_ONCE, async ([id, b]) => {
      const d = (await this.rollups().findOne({ _id: id as never }, { projection: { v: 1, e: 1 } })) as { v?: string; e?: Record<string, string> } | null;
      b.v = d?.v ?? null;
      for (const [k, json] of Object.entries(d?.e ?? {})) if (typeof json === 'string') have.set(Number(k), json);
    });
    const missing = starts.filter((s) => !have.has(s) || !closed(g, s, now));
    const docs = await pool(missing, READS_AT_ONCE, (s) => this.rollups().findOne({ _id: rollupId(g, s, tenant) as never }, { projection: { t: 1 } }));
    missing.forEach((s, i) => {
      const t = docs[i]?.t;
      const json = typeof t === 'string' ? t : ''; // '': no events then
      have.set(s, json);
      if (closed(g, s, now)) (blocks.get(blockId(g, s, tenant)) as { add: Record<string, string> }).add[String(s)] = json;
    });
    // What was read bucket by bucket is folded into its block for the next answer (a lost race only costs reads).
    await pool([...blocks].filter(([, b]) => Object.keys(b.add).length > 0), READS_AT_ONCE, async ([id, b]) => {
      try {
        await this.fold(g, id, b.start, tenant, b.v, b.add);
      } catch (err) {
        this.report(err);
      }
    });
    const out = new Map<number, Tally>();
    for (const s of starts) {
      const json = have.get(s);
      if (json !== undefined && json !== '') out.set(s, parseTally(json));
    }
    return out;
  }

  /** Recounts one hour from the events (right whatever was counted before), then sums its day again. */
  private async recount(hour: number): Promise<void> {
    const docs = (await this.events().find({ ts: { $gte: new Date(hour), $lt: new Date(hour + HOUR_MS) } }, { projection: TALLY_PROJECTION }).toArray()) as StoredDoc[];
    const coll = this.rollups();
    const buckets = tallyByBucket(docs, 'h');
    const rows = [...buckets.values()].map((b) => this.row('h', hour, b.tenant, cap(b.t, this.settings.topK)));
    // Tenants whose events of this hour are gone (a prune) lose their document.
    const before = await coll.find({ g: 'h', ts: new Date(hour) }, { projection: { _id: 1, tenant: 1 } }).toArray();
    const tenants = new Set<string | null>([null, ...rows.map((r) => r.tenant), ...before.map((d) => (d.tenant ?? null) as string | null)]);
    await this.put(rows);
    const gone = before.map((d) => String(d._id)).filter((id) => !buckets.has(id));
    if (gone.length > 0) {
      for (const id of gone) this.known.delete(id);
      await coll.deleteMany({ _id: { $in: gone as never[] } });
      for (const d of before) if (gone.includes(String(d._id))) this.unfold('h', hour, (d.tenant ?? null) as string | null);
      await this.applyUnfolds();
    }
    await this.sumDay(floorDay(hour), tenants);
  }

  /** Sums a day's documents from its hours (twenty-four small reads per tenant, not the events). */
  private async sumDay(day: number, tenants: Set<string | null>): Promise<void> {
    const rows: RollupDoc[] = [];
    const empty: (string | null)[] = [];
    for (const tenant of tenants) {
      const t = emptyTally();
      for (const h of (await this.read(day, day + DAY_MS, tenant, 'h')).values()) merge(t, h);
      if (t.n === 0) empty.push(tenant);
      else rows.push(this.row('d', day, tenant, cap(t, this.settings.topK)));
    }
    await this.put(rows);
    if (empty.length > 0) {
      const ids = empty.map((tenant) => rollupId('d', day, tenant));
      for (const id of ids) this.known.delete(id);
      await this.rollups().deleteMany({ _id: { $in: ids as never[] } });
      for (const tenant of empty) this.unfold('d', day, tenant);
      await this.applyUnfolds();
    }
  }

  /** After `prune({ before })`: rollups follow the events (the hour cut in two is recounted). */
  afterPrune(before: Date): Promise<void> {
    return this.exclusive(() => this.pruned(before));
  }

  private async pruned(before: Date): Promise<void> {
    const cut = floorHour(before.getTime());
    const cutDay = floorDay(before.getTime());
    const coll = this.rollups();
    await coll.deleteMany({ g: 'h', ts: { $lt: new Date(cut) } });
    await coll.deleteMany({ g: 'd', ts: { $lt: new Date(cutDay) } });
    await coll.deleteMany({ g: 'b' }); // folded again from the buckets at the next answers
    this.known.clear();
    if (cut !== before.getTime()) await this.recount(cut); // its day too
    else if (cutDay !== before.getTime()) {
      const days = await coll.find({ g: 'd', ts: new Date(cutDay) }, { projection: { tenant: 1 } }).toArray();
      await this.sumDay(cutDay, new Set<string | null>([null, ...days.map((d) => (d.tenant ?? null) as string | null)]));
    }
  }

  /** Deletes rollups older than their retention (where the server has no TTL index). */
  async pruneOld(now = Date.now()): Promise<number> {
    const res = await this.rollups().deleteMany({ ts: { $lt: new Date(floorHour(now - this.settings.days * 86_400_000)) } });
    return res.deletedCount;
  }

  /**
   * Recounts every hour from the events, in time order, a few hundred documents in memory at a time. Resolves
   * with the event count. Meant for a quiet moment (an upgrade, a repair): events stored meanwhile may be missed
   * until their hour is next recounted.
   */
  rebuild(onProgress?: (events: number) => void): Promise<number> {
    return this.exclusive(() => this.rebuilt(onProgress));
  }

  private async rebuilt(onProgress?: (events: number) => void): Promise<number> {
    const coll = this.rollups();
    await coll.deleteMany({ _id: { $ne: META_ID as never } });
    this.known.clear();
    this.failedHours.clear();
    const cursor = this.events().find({}, { projection: TALLY_PROJECTION, sort: { ts: 1 }, batchSize: 5000 });
    let hour: number | null = null;
    let pending: StoredDoc[] = [];
    let rows: RollupDoc[] = [];
    let count = 0;
    const days = new Map<string, Bucket>();
    const endHour = (): void => {
      for (const b of tallyByBucket(pending, 'h').values()) {
        rows.push(this.row('h', b.start, b.tenant, cap(b.t, this.settings.topK)));
        const id = rollupId('d', floorDay(b.start), b.tenant);
        let d = days.get(id);
        if (d === undefined) days.set(id, (d = { g: 'd', start: floorDay(b.start), tenant: b.tenant, t: emptyTally() }));
        merge(d.t, b.t);
      }
      pending = [];
    };
    const write = async (): Promise<void> => {
      if (rows.length > 0) await coll.insertMany(rows as never[], { ordered: false });
      rows = [];
    };
    try {
      for await (const d of cursor) {
        const ts = (d as StoredDoc).ts;
        if (!(ts instanceof Date)) continue;
        const h = floorHour(ts.getTime());
        if (h !== hour) {
          endHour();
          if (rows.length >= 200) await write();
          hour = h;
        }
        pending.push(d as StoredDoc);
        if (++count % 10_000 === 0) onProgress?.(count);
      }
      endHour();
      for (const d of days.values()) rows.push(this.row('d', d.start, d.tenant, cap(d.t, this.settings.topK)));
      await write();
    } finally {
      await cursor.close();
    }
    await coll.updateOne({ _id: META_ID as never }, { $set: { coveredFrom: new Date(0), format: FORMAT } }, { upsert: true });
    this.covered = new Date(0);
    onProgress?.(count);
    return count;
  }

  /**
   * Writes the rollups of `docs` (events already stored) as `afterStore` would, many at a time: what a benchmark
   * uses to count a large trail quickly through the same code as the store path.
   */
  async addStored(docs: StoredDoc[]): Promise<void> {
    this.addDeltas(docs);
    this.kick();
    await this.flush();
  }

  /** Adds the events' deltas to those the worker writes next; flush() waits for them. */
  private addDeltas(docs: StoredDoc[]): void {
    if (docs.length === 0) return;
    tallyByBucket(docs, 'h', this.pending);
    tallyByBucket(docs, 'd', this.pending);
    this.handed++;
  }
}

/** A rollup store over a connection's collections, for the CLI's rebuild (no auditor needed). */
export function rollupStoreFor(connection: Connection, collection: string, settings: RollupSettings = { days: 400, topK: 100 }): RollupStore {
  return new RollupStore(() => connection.collection(collection), () => connection.collection(RollupStore.collectionName(collection)), settings);
}
