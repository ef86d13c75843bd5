/**
 * Retention: a TTL index on `ts` where the server has them, else `prune()`, which deletes old events in
 * bounded batches. These are the only deletes the library ever issues.
 */
import { mongo, trusted } from 'mongoose';
import type { AuditCore } from '../core/core.js';
import { RETENTION_KINDS } from '../core/options.js';
import type { ChainFields, PruneRecord } from '../core/types.js';
import { OWN_FILTER } from './model.js';
import { isNetworkError } from './indexes.js';

/** Events deleted per round trip by `prune`: bounded work per command, whatever the backlog. */
export const PRUNE_BATCH = 1000;

/** How often the scheduled prune runs where TTL indexes cannot do the work. */
export const PRUNE_EVERY_MS = 60 * 60 * 1000;

/**
 * Retention: TTL indexes where the server has them (with `byKind`, one partial TTL index per kind); otherwise a
 * warning, and a scheduled prune does the work. Resolves `'prune'` when the caller must schedule it.
 */
export async function setUpRetention(core: AuditCore): Promise<'ttl' | 'prune' | 'none'> {
  const r = core.options.retention;
  if (r === undefined) return 'none';
  if (Object.keys(r.byKind).length > 0) return setUpKindRetention(core, r.days, r.byKind);
  const days = r.days as number;
  const seconds = Math.round(days * 86_400);
  try {
    await core.model.collection.createIndex({ ts: 1 }, { name: 'koa_audit_retention', expireAfterSeconds: seconds });
  } catch (err) {
    const e = err as { code?: unknown };
    // A network fault says nothing about TTL support: fail ready() so that it is tried again.
    if (isNetworkError(err)) throw err;
    // IndexOptionsConflict: the index exists with another period (retention was changed); change it in place.
    if (e.code === 85) {
      try {
        await core.options.connection.db?.command({ collMod: core.model.collection.collectionName, index: { name: 'koa_audit_retention', expireAfterSeconds: seconds } });
        return 'ttl';
      } catch {
        // fall through to the warning
      }
    }
    core.warnOnce('KOA_AUDIT_NO_TTL', `this server cannot create a TTL index (${(err as Error).message}); call audit.prune({ before }) to apply retention`);
    return 'prune';
  }
  return 'ttl';
}

/** The kinds a kind-specific retention covers, with their days (kinds without a number: `days`, or forever). */
function kindDays(days: number | undefined, byKind: Readonly<Record<string, number>>): [string, number][] {
  return RETENTION_KINDS.flatMap((k): [string, number][] => {
    const d = byKind[k] ?? days;
    return d === undefined ? [] : [[k, d]];
  });
}

/**
 * One partial TTL index per kind (`{ ts: 1 }` where `kind` is that kind: MongoDB 5.0+ allows several indexes of
 * one key pattern with distinct filters). A whole-collection TTL index of an earlier configuration would
 * expire every kind at its period: it is dropped. A server without partial TTL indexes (FerretDB) gets the
 * scheduled prune instead.
 */
async function setUpKindRetention(core: AuditCore, days: number | undefined, byKind: Readonly<Record<string, number>>): Promise<'ttl' | 'prune'> {
  const collection = core.model.collection;
  try {
    for (const [kind, d] of kindDays(days, byKind)) {
      const name = `koa_audit_retention_${kind}`;
      const seconds = Math.round(d * 86_400);
      try {
        await collection.createIndex({ ts: 1 }, { name, expireAfterSeconds: seconds, partialFilterExpression: { kind } });
      } catch (err) {
        if ((err as { code?: unknown }).code !== 85) throw err;
        await core.options.connection.db?.command({ collMod: collection.collectionName, index: { name, expireAfterSeconds: seconds } });
      }
    }
    await collection.dropIndex('koa_audit_retention').catch(() => {});
    return 'ttl';
  } catch (err) {
    if (isNetworkError(err)) throw err;
    core.warnOnce('KOA_AUDIT_NO_TTL', `this server cannot create partial TTL indexes (${(err as Error).message}); retention by kind runs as a scheduled prune (every ${PRUNE_EVERY_MS / 60_000} minutes, or call prune())`);
    return 'prune';
  }
}

/** Deletes the events `filter` matches, PRUNE_BATCH at a time. */
async function deleteInBatches(core: AuditCore, filter: Record<string, unknown>): Promise<number> {
  let total = 0;
  for (;;) {
    const ids = await core.model.find(filter).setOptions(OWN_FILTER).select({ _id: 1 }).limit(PRUNE_BATCH).lean<{ _id: mongo.ObjectId }[]>();
    if (ids.length === 0) break;
    const res = await core.model.deleteMany({ ...filter, _id: trusted({ $in: ids.map((d) => d._id) }) }).setOptions(OWN_FILTER);
    total += res.deletedCount;
    if (ids.length < PRUNE_BATCH || res.deletedCount === 0) break;
  }
  return total;
}

/**
 * Applies the configured retention now: per kind, the events older than that kind's period are deleted. The
 * work is recorded as a `prune` event (what was deleted, per kind), so a gap in the trail has its reason in it.
 * Resolves with the count.
 */
export async function pruneExpired(core: AuditCore, now = Date.now()): Promise<number> {
  const r = core.options.retention;
  if (r === undefined) throw new TypeError('koa-audit: prune() without { before } applies the retention option, and none is set');
  const counts: Record<string, number> = {};
  let total = 0;
  const named = Object.keys(r.byKind);
  for (const [kind, days] of Object.entries(r.byKind)) {
    const n = await deleteInBatches(core, { kind, ts: trusted({ $lt: new Date(now - days * 86_400_000) }) });
    if (n > 0) counts[kind] = n;
    total += n;
  }
  if (r.days !== undefined) {
    const filter: Record<string, unknown> = { ts: trusted({ $lt: new Date(now - r.days * 86_400_000) }) };
    if (named.length > 0) filter.kind = trusted({ $nin: named });
    const n = await deleteInBatches(core, filter);
    if (n > 0) counts['*'] = n;
    total += n;
  }
  if (total > 0) await core.accept(core.buildSystem({ kind: 'prune', outcome: 'success', meta: { deleted: total, byKind: counts, retention: { days: r.days ?? null, byKind: r.byKind } } }));
  return total;
}

/**
 * Deletes the events older than `before`, PRUNE_BATCH at a time (each batch a short command, so a large backlog
 * never holds one long delete). This is the only delete the library ever issues, and it is recorded: a `prune`
 * event says who pruned what, and for each chain it cut the last deleted position and hash, from which `verify`
 * checks the rest. With `retention: { days }` set, a `before` later than now − days is refused unless
 * `force: true` (and a forced prune says so). Resolves with the count.
 */
export async function prune(core: AuditCore, options: { before: Date; force?: boolean }): Promise<number> {
  if (options === null || typeof options !== 'object') throw new TypeError('koa-audit: prune needs { before: Date }');
  const before = options.before;
  if (!(before instanceof Date) || Number.isNaN(before.getTime())) {
    throw new TypeError(`koa-audit: prune option "before" must be a valid Date, got ${String(before)}`);
  }
  if (options.force !== undefined && typeof options.force !== 'boolean') throw new TypeError('koa-audit: prune option "force" must be a boolean');
  const force = options.force === true;
  const days = core.options.retention?.days;
  const horizon = days === undefined ? null : new Date(Date.now() - days * 86_400_000);
  const early = horizon !== null && before > horizon;
  if (early && !force) {
    throw new RangeError(`koa-audit: prune "before" (${before.toISOString()}) is later than the retention period allows (${horizon.toISOString()}, ${days} days); pass force: true to prune anyway (it is recorded)`);
  }
  const cut = new Map<string, { seq: number; hash: string }>();
  let total = 0;
  for (;;) {
    const found = await core.model.find({ ts: trusted({ $lt: before }) }).setOptions(OWN_FILTER).select({ _id: 1, chain: 1 }).limit(PRUNE_BATCH).lean<{ _id: mongo.ObjectId; chain?: ChainFields }[]>();
    if (found.length === 0) break;
    const res = await core.model.deleteMany({ _id: trusted({ $in: found.map((d) => d._id) }), ts: trusted({ $lt: before }) }).setOptions(OWN_FILTER);
    total += res.deletedCount;
    for (const d of found) {
      const c = d.chain;
      if (c === undefined || typeof c.id !== 'string' || typeof c.seq !== 'number') continue;
      const known = cut.get(c.id);
      if (known === undefined || known.seq < c.seq) cut.set(c.id, { seq: c.seq, hash: c.hash });
    }
    // Nothing deleted although events matched: something else holds them (a concurrent prune); stop, don't spin.
    if (found.length < PRUNE_BATCH || res.deletedCount === 0) break;
  }
  const doc = await core.build({ kind: 'prune', outcome: 'success' });
  const record: PruneRecord = { before: before.toISOString(), deleted: total, force: early, chains: [...cut].map(([id, c]) => ({ id, seq: c.seq, hash: c.hash })) };
  doc.prune = record;
  await core.accept(doc);
  return total;
}
