/**
 * Retention: a TTL index on `ts` where the server has them, else `prune()`, which deletes old events in
 * bounded batches. These are the only deletes the library ever issues.
 */
import { mongo, trusted } from 'mongoose';
import type { AuditCore } from '../core/core.js';
import type { ChainFields, PruneRecord } from '../core/types.js';
import { OWN_FILTER } from './model.js';

/** Events deleted per round trip by `prune`: bounded work per command, whatever the backlog. */
export const PRUNE_BATCH = 1000;

/** Retention: a TTL index where the server has them; otherwise a warning, and `prune()` is the way. */
export async function setUpRetention(core: AuditCore): Promise<void> {
  const days = core.options.retention?.days;
  if (days === undefined) return;
  const seconds = Math.round(days * 86_400);
  try {
    await core.model.collection.createIndex({ ts: 1 }, { name: 'koa_audit_retention', expireAfterSeconds: seconds });
  } catch (err) {
    const e = err as { code?: unknown; name?: unknown };
    // A network fault says nothing about TTL support: fail ready() so that it is tried again.
    if (typeof e.name === 'string' && /^Mongo(Network|NetworkTimeout|ServerSelection)Error$/.test(e.name)) throw err;
    // IndexOptionsConflict: the index exists with another period (retention was changed); change it in place.
    if (e.code === 85) {
      try {
        await core.options.connection.db?.command({ collMod: core.model.collection.collectionName, index: { name: 'koa_audit_retention', expireAfterSeconds: seconds } });
        return;
      } catch {
        // fall through to the warning
      }
    }
    core.warnOnce('KOA_AUDIT_NO_TTL', `this server cannot create a TTL index (${(err as Error).message}); call audit.prune({ before }) to apply retention`);
  }
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
