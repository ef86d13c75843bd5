/**
 * `Model.bulkWrite`, every operation type: the documents each operation can touch are read before the call,
 * read again after it, and each difference recorded; multi-document operations above `maxDocuments` are
 * recorded as summaries.
 */
import type { ClientSession } from 'mongoose';
import {
  documentIdString, emit, emitTransition, guard, plainIdFilter, readByIds, sameFields,
  type AuditedModel, type Doc, type SchemaAudit, type Target,
} from './recorder.js';

type BulkWrite = (this: unknown, ops: unknown, options?: unknown) => Promise<unknown>;

interface BulkResult {
  upsertedIds?: Record<string, unknown>;
  result?: { upsertedIds?: Record<string, unknown> };
}

/**
 * `Model.bulkWrite` audited. A static wrapper rather than bulkWrite middleware: the pre-images read before
 * the call must reach the code after it, and model middleware gets no per-call object to carry them.
 */
export async function auditedBulkWrite(s: SchemaAudit, model: AuditedModel, base: BulkWrite, ops: unknown, options: unknown): Promise<unknown> {
  // `Model.bulkSave` runs save middleware for its documents, then calls bulkWrite with this internal flag:
  // its changes are recorded by the save hooks, once.
  const internal = (options as { _skipCastBulkWrite?: unknown } | null | undefined)?._skipCastBulkWrite === true;
  if (internal || !s.auditsModel(model.modelName) || !Array.isArray(ops) || ops.length === 0) return base.call(model, ops, options);
  if (s.core.blocking) await s.core.waitForRoom();
  const session = ((options ?? {}) as { session?: ClientSession | null }).session ?? null;
  const before = new Map<string, Doc>();
  const ids: unknown[] = [];
  const byId: unknown[] = [];
  const summaries: { index: number; kind: 'update' | 'delete'; filter: unknown; update: unknown; matched: number }[] = [];
  const keep = (docs: Doc[]): void => {
    for (const d of docs) {
      const key = documentIdString(d._id);
      if (before.has(key)) continue;
      before.set(key, d);
      ids.push(d._id);
    }
  };

  for (let index = 0; index < ops.length; index++) {
    const op: unknown = ops[index];
    if (op === null || typeof op !== 'object') continue;
    const type = Object.keys(op)[0];
    const body = (op as Record<string, Doc>)[type];
    if (body === null || typeof body !== 'object') continue;
    const filter = (body.filter ?? {}) as Doc;
    switch (type) {
      case 'insertOne': {
        const id = (body.document as Doc | undefined)?._id;
        if (id !== undefined) byId.push(id);
        break;
      }
      case 'updateOne':
      case 'replaceOne':
      case 'deleteOne':
        if (plainIdFilter(filter)) byId.push(filter._id);
        else keep(sameFields(await model.find(filter, s.findProjection(), { lean: true, session, limit: 1 }), s.projection));
        break;
      case 'updateMany':
      case 'deleteMany': {
        const docs = sameFields(await model.find(filter, s.findProjection(), { lean: true, session, limit: s.maxDocuments + 1 }), s.projection);
        if (docs.length <= s.maxDocuments) keep(docs);
        else summaries.push({ index, kind: type === 'deleteMany' ? 'delete' : 'update', filter, update: body.update ?? null, matched: await model.countDocuments(filter) });
        break;
      }
    }
  }
  if (byId.length > 0) keep(sameFields(await model.find({ _id: { $in: byId } }, s.findProjection(), { lean: true, session }), s.projection));

  let res: unknown;
  let error: unknown = null;
  try {
    res = await base.call(model, ops, options);
  } catch (err) {
    error = err;
  }

  // What the call inserted: cast insertOne documents carry their _id now; upserts are in the result.
  const created: unknown[] = [];
  for (const op of ops) {
    const doc = (op as { insertOne?: { document?: { _id?: unknown } } } | null)?.insertOne?.document;
    if (doc?._id !== undefined) created.push(doc._id);
  }
  const r = (error ?? res ?? {}) as BulkResult;
  const upserted = r.upsertedIds ?? r.result?.upsertedIds ?? {};
  for (const k of Object.keys(upserted)) created.push(upserted[k]);

  const t: Target = { modelName: model.modelName, collectionName: model.collection.collectionName, operation: 'bulkWrite' };
  await guard(s, (async () => {
    const after = await readByIds(model, [...ids, ...created.filter((id) => !before.has(documentIdString(id)))], s.projection, session);
    const seen = new Set<string>();
    for (const [id, doc] of before) {
      seen.add(id);
      await emitTransition(s, t, id, doc, after.get(id) ?? null);
    }
    for (const id of created) {
      const key = documentIdString(id);
      if (seen.has(key)) continue;
      seen.add(key);
      await emitTransition(s, t, key, null, after.get(key) ?? null);
    }
  })());
  if (summaries.length > 0) {
    const ran = ranOperations(options, error, res);
    for (const sm of summaries) {
      if (ran(sm.index)) await guard(s, emit(s, t, sm.kind, undefined, [], { filter: sm.filter, update: sm.update, matched: sm.matched }));
    }
  }
  if (error !== null) throw error;
  return res;
}

interface BulkOutcome {
  writeErrors?: unknown;
  mongoose?: { results?: unknown[] };
}

/**
 * Which operations of a bulkWrite ran, by index in the caller's list. Mongoose reports per-operation results
 * when it left out operations that failed to cast (unordered: `null` is a success); otherwise the server's
 * write errors tell: an ordered write stops at the first, an unordered one skips only those. A failure
 * without write errors (a cast error, a lost connection) ran nothing that can be vouched for.
 */
function ranOperations(options: unknown, error: unknown, res: unknown): (index: number) => boolean {
  const outcome = ((error ?? res ?? {}) as BulkOutcome);
  const results = outcome.mongoose?.results;
  if (Array.isArray(results)) return (i) => results[i] === null;
  if (error === null) return () => true;
  const raw = outcome.writeErrors;
  const writeErrors = Array.isArray(raw) ? raw : raw !== null && raw !== undefined ? [raw] : [];
  const failed = writeErrors
    .map((w) => (w as { index?: unknown; err?: { index?: unknown } }).index ?? (w as { err?: { index?: unknown } }).err?.index)
    .filter((i): i is number => typeof i === 'number');
  if (failed.length === 0) return () => false;
  const o = (options ?? {}) as { ordered?: unknown };
  if (o.ordered == null || Boolean(o.ordered)) {
    const first = Math.min(...failed);
    return (i) => i < first;
  }
  const set = new Set(failed);
  return (i) => !set.has(i);
}
