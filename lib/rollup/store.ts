/**
 * The rollups: one document per hour and one per day (and tenant) in `{collection}_rollups`, each holding the
 * Tally of its time, kept up to date by the writer after each stored batch (`afterStore`), so that the
 * dashboard reads a few dozen documents (daily buckets) or a few hundred (hourly) instead of the events.
 *
 * Exactly once, without transactions: a batch's newly stored events are added with `$inc`; an event the
 * server refused as a duplicate of its `_id` may or may not have been counted (a retried batch whose first
 * attempt did reach the server, a spool file replayed after a crash), so its hour is recounted from the events
 * instead, which is right whatever happened before. The same recount repairs an hour whose `$inc` failed.
 * One writer per auditor writes one batch at a time, so a recount never races this process's own `$inc`.
 *
 * Field names: keys that come from data (IPs, identifiers, routes) are stored base64url-encoded behind a `k`,
 * since stored keys must not contain `.` or start with `$`.
 */
import type { Collection, Connection } from 'mongoose';
import type { StoredDoc } from '../core/types.js';
import { addEvent, emptyTally, merge, TOP_DIMENSIONS, type Bounded, type Counts, type Tally } from './tally.js';

export const HOUR_MS = 3_600_000;
const META_ID = 'meta';
/** Fields of an event the tally reads: the rest is never loaded when counting from the events. */
export const TALLY_PROJECTION = {
  ts: 1, kind: 1, outcome: 1, tenant: 1, ip: 1, identifier: 1, model: 1, documentId: 1, 'actor.id': 1,
  'http.method': 1, 'http.route': 1, 'http.path': 1, 'http.status': 1, 'http.durationMs': 1,
  'meta.summary': 1, 'meta.suppressed': 1, 'meta.lost': 1,
} as const;

export interface RollupSettings {
  /** Rollups older than this are deleted (TTL where the server has it, else by prune()). */
  days: number;
  /** Keys per hour and table before the rest is counted as overflow. */
  topK: number;
}

export interface RollupDoc extends Tally {
  _id: string;
  ts: Date;
  tenant: string;
  g?: Grain;
}

export const DAY_MS = 86_400_000;
export const floorHour = (ms: number): number => Math.floor(ms / HOUR_MS) * HOUR_MS;
export const floorDay = (ms: number): number => Math.floor(ms / DAY_MS) * DAY_MS;
/** The two sizes of rollup: `g` of the stored document. */
export type Grain = 'h' | 'd';
const GRAIN_MS: Record<Grain, number> = { h: HOUR_MS, d: DAY_MS };
/** Hour documents (older ones have no `g`), or day documents. */
const grainFilter = (g: Grain): Record<string, unknown> => (g === 'd' ? { g: 'd' } : { g: { $ne: 'd' } });
const tenantOf = (e: StoredDoc): string => (typeof e.tenant === 'string' ? e.tenant : '');
const docId = (start: number, tenant: string, g: Grain = 'h'): string => `${g === 'd' ? 'd' : ''}${start}:${tenant}`;
const SAFE_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const enc = (key: string): string => `k${Buffer.from(key, 'utf8').toString('base64url')}`;
const dec = (field: string): string => Buffer.from(field.slice(1), 'base64url').toString('utf8');
/** Kinds and classes are ours, but a name that is not a plain word never becomes a field name. */
const plain = (key: string): string => (SAFE_NAME.test(key) || /^[1-5]xx$/.test(key) ? key : 'other');

function mapKeys<V>(m: Record<string, V> | undefined, f: (k: string) => string): Record<string, V> {
  const out: Record<string, V> = {};
  for (const [k, v] of Object.entries(m ?? {})) out[f(k)] = v;
  return out;
}

/** A Tally as stored (encoded keys). */
function toStored(t: Tally): Omit<Tally, never> {
  const tables = {} as Tally['t'];
  for (const dim of TOP_DIMENSIONS) tables[dim] = mapKeys(t.t[dim], enc);
  return { n: t.n, k: mapKeys(t.k, plain), f: mapKeys(t.f, plain), s: t.s, la: t.la, lost: t.lost, r: mapKeys(t.r, enc), t: tables, o: t.o };
}

/** A stored rollup as a Tally (keys decoded; fields a partial document lacks are empty). */
export function fromStored(d: Partial<RollupDoc>): Tally {
  const t = emptyTally();
  t.n = d.n ?? 0;
  t.la = d.la ?? 0;
  t.lost = d.lost ?? 0;
  t.k = { ...d.k };
  t.f = { ...d.f };
  t.s = { ...d.s };
  t.o = { ...d.o };
  // `$inc` leaves out zeros: a field never incremented is absent.
  for (const [k, r] of Object.entries(d.r ?? {})) t.r[dec(k)] = { n: r.n ?? 0, e: r.e ?? 0, d: { ...r.d } };
  for (const dim of TOP_DIMENSIONS) {
    for (const [k, e] of Object.entries(d.t?.[dim] ?? {})) t.t[dim][dec(k)] = { n: e.n ?? 0, x: e.x ?? 0 };
  }
  return t;
}

/** The `$inc` of a Tally: dotted paths, zeros left out. */
function incOf(t: Tally): Counts {
  const inc: Counts = {};
  const put = (path: string, v: number): void => {
    if (v !== 0) inc[path] = (inc[path] ?? 0) + v;
  };
  put('n', t.n);
  put('la', t.la);
  put('lost', t.lost);
  for (const [k, v] of Object.entries(t.k)) put(`k.${plain(k)}`, v);
  for (const [k, v] of Object.entries(t.f)) put(`f.${plain(k)}`, v);
  for (const [k, v] of Object.entries(t.s)) put(`s.${plain(k)}`, v);
  for (const [k, v] of Object.entries(t.o)) put(`o.${plain(k)}`, v);
  for (const [key, r] of Object.entries(t.r)) {
    const p = `r.${enc(key)}`;
    put(`${p}.n`, r.n);
    put(`${p}.e`, r.e);
    for (const [b, v] of Object.entries(r.d)) put(`${p}.d.${b}`, v);
  }
  for (const dim of TOP_DIMENSIONS) {
    for (const [key, e] of Object.entries(t.t[dim])) {
      put(`t.${dim}.${enc(key)}.n`, e.n);
      put(`t.${dim}.${enc(key)}.x`, e.x);
    }
  }
  return inc;
}

/** Which keys a bucket document already has, per bounded table: what `topK` is checked against. */
type KeySets = Record<Bounded, Set<string>>;
const emptyKeys = (): KeySets => ({ actor: new Set(), identifier: new Set(), ip: new Set(), model: new Set(), document: new Set(), route: new Set() });
function keysOf(t: Tally): KeySets {
  const k = emptyKeys();
  for (const dim of TOP_DIMENSIONS) for (const key of Object.keys(t.t[dim])) k[dim].add(key);
  for (const key of Object.keys(t.r)) k.route.add(key);
  return k;
}
/** A `room` function over key sets: a known key always has room, a new one while the table is below `topK`. */
function roomIn(keys: KeySets, topK: number): (dim: Bounded, key: string) => boolean {
  return (dim, key) => {
    const set = keys[dim];
    if (set.has(key)) return true;
    if (set.size >= topK) return false;
    set.add(key);
    return true;
  };
}

/** Keeps the `topK` biggest keys of each table (the rest counted as overflow): a day merged from its hours. */
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

/** Tallies events into per-(hour, tenant) buckets, each table bounded by `topK` from the keys it already has. */
function tallyByBucket(docs: Iterable<StoredDoc>, keysFor: (id: string) => KeySets, topK: number, g: Grain = 'h'): Map<string, { hour: number; tenant: string; t: Tally }> {
  const out = new Map<string, { hour: number; tenant: string; t: Tally }>();
  for (const e of docs) {
    if (!(e.ts instanceof Date)) continue;
    const hour = Math.floor(e.ts.getTime() / GRAIN_MS[g]) * GRAIN_MS[g];
    const tenant = tenantOf(e);
    const id = docId(hour, tenant, g);
    let b = out.get(id);
    if (b === undefined) out.set(id, (b = { hour, tenant, t: emptyTally() }));
    addEvent(b.t, e, roomIn(keysFor(id), topK));
  }
  return out;
}

/** Bucket documents whose key sets this process knows: bounded, the newest kept (events arrive in time order). */
const CACHED_BUCKETS = 64;

export class RollupStore {
  private readonly keys = new Map<string, KeySets>();
  /** Hours to recount before the next batch is added (a failed `$inc`). */
  private readonly dirty = new Set<number>();

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
    await coll.createIndex({ ts: 1, tenant: 1 });
    try {
      await coll.createIndex({ ts: 1 }, { name: 'koa_audit_rollup_retention', expireAfterSeconds: Math.round(this.settings.days * 86_400) });
    } catch {
      // No TTL index on this server (FerretDB): prune() deletes old rollups (documented with `rollups`).
    }
    const meta = await coll.findOne({ _id: META_ID as never });
    if (meta !== null) return;
    // Events stored before this auditor existed were never counted: the rollups start at the next hour.
    const older = await this.events().findOne({ ts: { $lt: createdAt } }, { projection: { _id: 1 } });
    const from = older === null ? new Date(0) : new Date(floorHour(createdAt.getTime()) + HOUR_MS);
    try {
      await coll.updateOne({ _id: META_ID as never }, { $setOnInsert: { coveredFrom: from } }, { upsert: true });
    } catch (err) {
      // Another process set it up at the same moment (FerretDB reports the lost insert race): theirs stands.
      if ((err as { code?: unknown }).code !== 11000) throw err;
    }
  }

  /** The instant from which every stored event is counted; null when `prepare` has not run. */
  async coveredFrom(): Promise<Date | null> {
    const meta = await this.rollups().findOne({ _id: META_ID as never });
    return meta === null ? null : (meta.coveredFrom as Date);
  }

  /**
   * The writer's hook, after a batch: `stored` were inserted by this write, `duplicates` were refused as
   * already stored (by an earlier attempt, or another process). Never throws: a failure leaves the hours
   * to be recounted.
   */
  async afterStore(stored: StoredDoc[], duplicates: StoredDoc[], report: (err: unknown) => void): Promise<void> {
    const recount = new Set<number>(this.dirty);
    this.dirty.clear();
    for (const d of duplicates) if (d.ts instanceof Date) recount.add(floorHour(d.ts.getTime()));
    const add = stored.filter((d) => !(d.ts instanceof Date) || !recount.has(floorHour(d.ts.getTime())));
    try {
      if (add.length > 0) await this.increment(add);
    } catch (err) {
      for (const d of add) if (d.ts instanceof Date) recount.add(floorHour(d.ts.getTime()));
      report(err);
    }
    for (const hour of recount) {
      try {
        await this.recount(hour);
      } catch (err) {
        this.dirty.add(hour);
        report(err);
      }
    }
  }

  private async increment(docs: StoredDoc[]): Promise<void> {
    const ids = new Set<string>();
    for (const d of docs) {
      if (!(d.ts instanceof Date)) continue;
      ids.add(docId(floorHour(d.ts.getTime()), tenantOf(d)));
      ids.add(docId(floorDay(d.ts.getTime()), tenantOf(d), 'd'));
    }
    const unknown = [...ids].filter((id) => !this.keys.has(id));
    if (unknown.length > 0) {
      const found = await this.rollups().find({ _id: { $in: unknown as never[] } }, { projection: { r: 1, t: 1 } }).toArray();
      for (const id of unknown) this.remember(id, emptyKeys());
      for (const f of found) this.remember(String(f._id), keysOf(fromStored(f as unknown as Partial<RollupDoc>)));
    }
    const ops = (['h', 'd'] as const).flatMap((g) => [...tallyByBucket(docs, (id) => this.keysFor(id), this.settings.topK, g)].map(([id, b]) => ({
      updateOne: { filter: { _id: id as never }, update: { $inc: incOf(b.t), $setOnInsert: { ts: new Date(b.hour), tenant: b.tenant, g } }, upsert: true },
    })));
    await this.write(ops);
  }

  private keysFor(id: string): KeySets {
    let k = this.keys.get(id);
    if (k === undefined) this.remember(id, (k = emptyKeys()));
    return k;
  }

  private remember(id: string, k: KeySets): void {
    this.keys.delete(id);
    this.keys.set(id, k);
    if (this.keys.size > CACHED_BUCKETS) this.keys.delete(this.keys.keys().next().value as string);
  }

  /**
   * Runs upserts, again for those that lost an insert race (another process upserted the same bucket first:
   * a duplicate key, which MongoDB retries by itself and FerretDB reports); the second attempt updates.
   */
  private async write(ops: { updateOne?: object; replaceOne?: object }[]): Promise<void> {
    let todo = ops;
    for (let attempt = 0; todo.length > 0; attempt++) {
      try {
        await this.rollups().bulkWrite(todo as never[], { ordered: false });
        return;
      } catch (err) {
        const list = (err as { writeErrors?: unknown }).writeErrors;
        const errors = (Array.isArray(list) ? list : list === undefined || list === null ? [] : [list]) as { index: number; code: number }[];
        if (attempt >= 3 || errors.length === 0 || errors.some((e) => e.code !== 11000)) throw err;
        todo = errors.map((e) => todo[e.index]);
      }
    }
  }

  /** Replaces the documents `filter` selects by `rows`: each row upserted whole, the others deleted. */
  private async replace(filter: Record<string, unknown>, rows: Record<string, unknown>[]): Promise<void> {
    await this.write(rows.map((row) => ({ replaceOne: { filter: { _id: row._id }, replacement: row, upsert: true } })));
    await this.rollups().deleteMany({ ...filter, _id: { $nin: rows.map((r) => r._id) as never[] } });
  }

  /** The rollup documents of [from, to) of one size (hours, or days), of one tenant or all. */
  async read(from: number, to: number, tenant: string | null, g: Grain = 'h'): Promise<RollupDoc[]> {
    const filter: Record<string, unknown> = { ts: { $gte: new Date(from), $lt: new Date(to) }, ...grainFilter(g) };
    if (tenant !== null) filter.tenant = tenant;
    return (await this.rollups().find(filter).toArray()) as unknown as RollupDoc[];
  }

  /** Recounts one hour from the events: right whatever was counted before. */
  async recount(hour: number): Promise<void> {
    const docs = await this.events().find({ ts: { $gte: new Date(hour), $lt: new Date(hour + HOUR_MS) } }, { projection: TALLY_PROJECTION }).toArray();
    await this.replaceHours([hour], docs as StoredDoc[]);
  }

  /** Replaces the rollups of `hours` with the tally of `docs` (the events of exactly those hours). */
  private async replaceHours(hours: number[], docs: StoredDoc[]): Promise<void> {
    const fresh = new Map<string, KeySets>();
    const buckets = tallyByBucket(docs, (id) => {
      let k = fresh.get(id);
      if (k === undefined) fresh.set(id, (k = emptyKeys()));
      return k;
    }, this.settings.topK);
    const rows = [...buckets].map(([id, b]) => ({ _id: id, ts: new Date(b.hour), tenant: b.tenant, g: 'h', ...toStored(b.t) }));
    await this.replace({ ts: { $in: hours.map((h) => new Date(h)) }, ...grainFilter('h') }, rows);
    for (const id of [...this.keys.keys()]) if (hours.includes(Number(id.split(':')[0]))) this.keys.delete(id);
    for (const [id, k] of fresh) this.remember(id, k);
    for (const day of new Set(hours.map(floorDay))) await this.recountDay(day);
  }

  /** Rebuilds one day's documents from its hours (a few dozen small reads, not the events). */
  private async recountDay(day: number): Promise<void> {
    const hours = await this.read(day, day + DAY_MS, null, 'h');
    const byTenant = new Map<string, Tally>();
    for (const h of hours) {
      const tenant = h.tenant ?? '';
      let t = byTenant.get(tenant);
      if (t === undefined) byTenant.set(tenant, (t = emptyTally()));
      merge(t, fromStored(h));
    }
    const rows = [...byTenant].map(([tenant, t]) => ({ _id: docId(day, tenant, 'd'), ts: new Date(day), tenant, g: 'd', ...toStored(cap(t, this.settings.topK)) }));
    await this.replace({ ts: new Date(day), g: 'd' }, rows);
    for (const id of [...this.keys.keys()]) if (id.startsWith(`d${day}:`)) this.keys.delete(id);
  }

  /** After `prune({ before })`: rollups follow the events (the hour cut in two is recounted). */
  async afterPrune(before: Date): Promise<void> {
    const cut = floorHour(before.getTime());
    const cutDay = floorDay(before.getTime());
    await this.rollups().deleteMany({ ts: { $lt: new Date(cut) }, ...grainFilter('h') });
    await this.rollups().deleteMany({ ts: { $lt: new Date(cutDay) }, g: 'd' });
    if (cut !== before.getTime()) await this.recount(cut); // its day too
    else if (cutDay !== before.getTime()) await this.recountDay(cutDay);
  }

  /** Deletes rollups older than their retention (where the server has no TTL index). */
  async pruneOld(now = Date.now()): Promise<number> {
    const res = await this.rollups().deleteMany({ ts: { $lt: new Date(floorHour(now - this.settings.days * 86_400_000)) } });
    return res.deletedCount;
  }

  /**
   * Recounts every hour from the events, in time order, a few hundred hours in memory at a time. Resolves with
   * the event count. Meant for a quiet moment (an upgrade, a repair): events stored meanwhile may be missed
   * until their hour is next written.
   */
  async rebuild(onProgress?: (events: number) => void): Promise<number> {
    const coll = this.rollups();
    await coll.deleteMany({ _id: { $ne: META_ID as never } });
    this.keys.clear();
    this.dirty.clear();
    const cursor = this.events().find({}, { projection: TALLY_PROJECTION, sort: { ts: 1 }, batchSize: 5000 });
    const fresh = new Map<string, KeySets>();
    const keysFor = (id: string): KeySets => {
      let k = fresh.get(id);
      if (k === undefined) fresh.set(id, (k = emptyKeys()));
      return k;
    };
    let hour: number | null = null;
    let pending: StoredDoc[] = [];
    let rows: Record<string, unknown>[] = [];
    let count = 0;
    const days = new Map<string, { day: number; tenant: string; t: Tally }>();
    const endHour = (): void => {
      for (const [id, b] of tallyByBucket(pending, keysFor, this.settings.topK)) {
        rows.push({ _id: id, ts: new Date(b.hour), tenant: b.tenant, g: 'h', ...toStored(b.t) });
        const day = floorDay(b.hour);
        const dayId = docId(day, b.tenant, 'd');
        let d = days.get(dayId);
        if (d === undefined) days.set(dayId, (d = { day, tenant: b.tenant, t: emptyTally() }));
        merge(d.t, b.t);
      }
      pending = [];
      fresh.clear();
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
          if (rows.length >= 500) await write();
          hour = h;
        }
        pending.push(d as StoredDoc);
        if (++count % 10_000 === 0) onProgress?.(count);
      }
      endHour();
      for (const [id, d] of days) rows.push({ _id: id, ts: new Date(d.day), tenant: d.tenant, g: 'd', ...toStored(cap(d.t, this.settings.topK)) });
      await write();
    } finally {
      await cursor.close();
    }
    await coll.updateOne({ _id: META_ID as never }, { $set: { coveredFrom: new Date(0) } }, { upsert: true });
    onProgress?.(count);
    return count;
  }
}

/** A rollup store over a connection's collections, for the CLI's rebuild (no auditor needed). */
export function rollupStoreFor(connection: Connection, collection: string, settings: RollupSettings = { days: 400, topK: 100 }): RollupStore {
  return new RollupStore(() => connection.collection(collection), () => connection.collection(RollupStore.collectionName(collection)), settings);
}
