/**
 * `Model.insertMany`: every inserted document is a create. With `rawResult: true` mongoose reports only ids,
 * so the documents are read back.
 */
import type { ClientSession } from 'mongoose';
import { diffDocuments } from './diff.js';
import { callNote, inNote, withoutNote } from './call-note.js';
import { documentIdString, emit, emitTransition, guard, plainOf, readByIds, type AuditedModel, type SchemaAudit, type Target } from './recorder.js';

export async function postInsertMany(s: SchemaAudit, model: AuditedModel, docs: unknown): Promise<void> {
  if (!s.auditsModel(model.modelName) || !Array.isArray(docs)) return;
  const t: Target = { modelName: model.modelName, collectionName: model.collection.collectionName, operation: 'insertMany' };
  for (const d of docs) {
    const plain = plainOf(d);
    if (plain === null || plain._id === undefined) continue;
    await emit(s, t, 'create', documentIdString(plain._id), diffDocuments(null, plain, s.change), undefined, plain);
  }
}

/** insertMany with `rawResult: true`: the result names the inserted ids; their documents are read back. */
export async function postInsertedIds(s: SchemaAudit, model: AuditedModel, res: unknown, session: ClientSession | null): Promise<void> {
  if (!s.auditsModel(model.modelName)) return;
  const map = (res as { insertedIds?: Record<string, unknown> } | null)?.insertedIds ?? {};
  const ids = Object.keys(map).map((k) => map[k]);
  // In the writer's session: inside a transaction the documents are not visible to any other.
  const docs = await readByIds(model, ids, s.projection, session);
  const t: Target = { modelName: model.modelName, collectionName: model.collection.collectionName, operation: 'insertMany' };
  for (const id of ids) {
    const key = documentIdString(id);
    await emitTransition(s, t, key, null, docs.get(key) ?? null);
  }
}

// -------------------------------------------------------------------------------------- bulkWrite

type InsertMany = (this: unknown, docs: unknown, options?: unknown) => Promise<unknown>;

/**
 * The `Model.insertMany` static, audited. Mongoose returns before running insertMany post middleware with
 * `rawResult: true` (the ids it reports are read back) and with `populate` (the documents it returns are
 * recorded): both are recorded here. `handled` holds the errors the post error hook has already recorded.
 */
export async function auditedInsertMany(s: SchemaAudit, model: AuditedModel, base: InsertMany, docs: unknown, options: unknown, handled: WeakSet<object>): Promise<unknown> {
  // Mongoose runs the insertMany post hooks inside this call: the note's scope covers them.
  const note = callNote(options);
  const opts = withoutNote(options);
  return inNote(note, () => insertMany(s, model, base, docs, opts, handled));
}

async function insertMany(s: SchemaAudit, model: AuditedModel, base: InsertMany, docs: unknown, opts: unknown, handled: WeakSet<object>): Promise<unknown> {
  const audited = s.auditsModel(model.modelName);
  if (audited && s.core.blocking) await s.core.waitForRoom();
  const o = (opts ?? {}) as { rawResult?: unknown; populate?: unknown; session?: ClientSession | null };
  let res: unknown;
  try {
    res = await base.call(model, docs, opts);
  } catch (err) {
    // A populate that failed after the insert: mongoose ran no middleware, the documents are in the error.
    const inserted = (err as { insertedDocs?: unknown } | null)?.insertedDocs;
    if (audited && o.populate != null && err !== null && typeof err === 'object' && !handled.has(err) && Array.isArray(inserted)) {
      await guard(s, postInsertMany(s, model, inserted));
    }
    throw err;
  }
  if (!audited) return res;
  if (o.rawResult === true) await guard(s, postInsertedIds(s, model, res, o.session ?? null));
  else if (o.populate != null) await guard(s, postInsertMany(s, model, res));
  return res;
}
