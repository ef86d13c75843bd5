/**
 * Retention: a TTL index on `ts` where the server has them, else `prune()`, which deletes old events in
 * bounded batches. These are the only deletes the library ever issues.
 */
import { mongo, trusted } from 'mongoose';
import type { AuditCore } from '../core/core.js';
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
 * never holds one long delete). This is the only delete the library ever issues. Resolves with the count.
 */
export async function prune(core: AuditCore, options: { before: Date }): Promise<number> {
  if (options === null || typeof options !== 'object') throw new TypeError('koa-audit: prune needs { before: Date }');
  const before = options.before;
  if (!(before instanceof Date) || Number.isNaN(before.getTime())) {
    throw new TypeError(`koa-audit: prune option "before" must be a valid Date, got ${String(before)}`);
  }
  let total = 0;
  for (;;) {
    const ids = await core.model.find({ ts: trusted({ $lt: before }) }).setOptions(OWN_FILTER).select({ _id: 1 }).limit(PRUNE_BATCH).lean<{ _id: mongo.ObjectId }[]>();
    if (ids.length === 0) break;
    const res = await core.model.deleteMany({ _id: trusted({ $in: ids.map((d) => d._id) }), ts: trusted({ $lt: before }) }).setOptions(OWN_FILTER);
    total += res.deletedCount;
    // Nothing deleted although events matched: something else holds them (a concurrent prune); stop, don't spin.
    if (ids.length < PRUNE_BATCH || res.deletedCount === 0) break;
  }
  return total;
}
