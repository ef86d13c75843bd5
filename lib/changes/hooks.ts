/**
 * The write paths of mongoose and how each one is audited. Every path follows the same rule: read the real
 * state of the documents the write can touch before it (projection limited to what the write can change),
 * let the write run, read their state after it, and record the difference. Nothing is recorded when the
 * write throws: post hooks only run after a write succeeded.
 */
import { mongo, type ClientSession } from 'mongoose';
import { diffDocuments, listFields } from './diff.js';
import {
  documentIdString, emit, emitTransition, narrowProjection, plainOf, readByIds, settle,
  type AuditedModel, type Doc, type Settings, type Target,
} from './recorder.js';
import { cutAtArray, touchedPaths, topLevelProjection } from './update-paths.js';

// ---------------------------------------------------------------------------------------------- save

/** A document as the save hooks see it. */
export interface AuditedDocument {
  _id: unknown;
  isNew: boolean;
  $isSubdocument?: boolean;
  constructor: unknown;
  directModifiedPaths(): string[];
  $session(): ClientSession | null;
}

interface SaveState {
  isNew: boolean;
  paths: string[];
  projection: object | null;
  before: Doc | null;
}

const saveStates = new WeakMap<object, SaveState>();

function modelOfDoc(doc: AuditedDocument): AuditedModel {
  return doc.constructor as AuditedModel;
}

export async function preSave(s: Settings, doc: AuditedDocument): Promise<void> {
  if (doc.$isSubdocument === true) return;
  const model = modelOfDoc(doc);
  if (!s.auditsModel(model.modelName)) return;
  if (s.core.blocking) await s.core.waitForRoom();
  if (doc.isNew) {
    saveStates.set(doc, { isNew: true, paths: [], projection: null, before: null });
    return;
  }
  const paths = [...new Set(doc.directModifiedPaths().map(cutAtArray))];
  const projection = narrowProjection(s, topLevelProjection(paths));
  let before: Doc | null = null;
  if (s.fetchBefore && paths.length > 0) {
    before = (await readByIds(model, [doc._id], projection, doc.$session())).get(documentIdString(doc._id)) ?? null;
  }
  saveStates.set(doc, { isNew: false, paths, projection, before });
}

export async function postSave(s: Settings, doc: AuditedDocument): Promise<void> {
  const st = saveStates.get(doc);
  if (st === undefined) return;
  saveStates.delete(doc);
  const model = modelOfDoc(doc);
  const t: Target = { modelName: model.modelName, collectionName: model.collection.collectionName, operation: 'save' };
  const id = documentIdString(doc._id);
  if (st.isNew) return emit(s, t, 'create', id, diffDocuments(null, plainOf(doc), s.change));
  if (st.paths.length === 0) {
    if (s.recordNoop) await emit(s, t, 'update', id, []);
    return;
  }
  if (!s.fetchBefore) {
    const changes = listFields(plainOf(doc), st.paths, s.change);
    if (changes.length > 0 || s.recordNoop) await emit(s, t, 'update', id, changes);
    return;
  }
  const after = (await readByIds(model, [doc._id], st.projection, doc.$session())).get(id) ?? null;
  await emitTransition(s, t, id, st.before ?? {}, after);
}

// ----------------------------------------------------------------------------------------- queries

/** A mongoose Query as the query hooks see it. */
export interface AuditedQuery {
  op?: string;
  model: AuditedModel;
  getFilter(): Doc;
  getUpdate(): unknown;
  setUpdate(update: object): unknown;
  getOptions(): QueryOptions;
}

interface QueryOptions {
  session?: ClientSession | null;
  upsert?: boolean;
  sort?: unknown;
  collation?: unknown;
}

const SINGLE = new Set(['updateOne', 'findOneAndUpdate', 'replaceOne', 'findOneAndReplace', 'deleteOne', 'findOneAndDelete']);
const DELETES = new Set(['deleteOne', 'deleteMany', 'findOneAndDelete']);
const REPLACES = new Set(['replaceOne', 'findOneAndReplace']);
export const UPDATE_QUERIES = ['updateOne', 'updateMany', 'findOneAndUpdate', 'replaceOne', 'findOneAndReplace'] as const;
export const DELETE_QUERIES = ['deleteOne', 'deleteMany', 'findOneAndDelete'] as const;

interface QueryState {
  op: string;
  /** Pre-images (or just `_id`s with `fetchBefore: false`) by id string. */
  before: Map<string, Doc>;
  ids: unknown[];
  /** Fields the update names (null: any field); what is read, and listed without a pre-image. */
  paths: string[] | null;
  projection: object | null;
  session: ClientSession | null;
  /** More documents matched than `maxDocuments`: one summary event instead. */
  over: boolean;
  upsert: boolean;
  /** `_id` given to a findOneAndUpdate upsert so that the inserted document can be found. */
  upsertId: unknown;
}

const queryStates = new WeakMap<object, QueryState>();

/**
 * Pre-images are read through mongoose (it casts the filter and scopes it as the write will), post-images
 * through the driver. Mongoose adds fields to an inclusive projection (a discriminator key): they are
 * dropped again, or they would look removed by the write.
 */
function sameFields(docs: Doc[], projection: Record<string, 0 | 1> | null): Doc[] {
  if (projection === null) return docs;
  const keys = Object.keys(projection);
  if (keys.length === 0 || projection[keys[0]] === 0) return docs;
  const top = new Set(keys.map((k) => (k.includes('.') ? k.slice(0, k.indexOf('.')) : k)));
  top.add('_id');
  for (const d of docs) for (const k of Object.keys(d)) if (!top.has(k)) delete d[k];
  return docs;
}

/** A filter that names one document by a plain `_id` value (no operator): the id is known without a read. */
function plainIdFilter(filter: Doc): boolean {
  const keys = Object.keys(filter);
  if (keys.length !== 1 || keys[0] !== '_id') return false;
  const v = filter._id;
  if (v === null || v === undefined) return false;
  if (typeof v !== 'object') return true;
  return typeof (v as { _bsontype?: unknown })._bsontype === 'string';
}

export async function preQuery(s: Settings, q: AuditedQuery): Promise<void> {
  const op = q.op ?? '';
  const model = q.model;
  if (!s.auditsModel(model.modelName)) return;
  if (s.core.blocking) await s.core.waitForRoom();
  const opts = q.getOptions();
  const session = opts.session ?? null;
  const single = SINGLE.has(op);
  const isDelete = DELETES.has(op);
  const update = isDelete ? null : q.getUpdate();
  const paths = isDelete ? null : touchedPaths(update, REPLACES.has(op));
  const projection = isDelete ? s.projection : narrowProjection(s, topLevelProjection(paths));
  const filter = q.getFilter();
  const st: QueryState = { op, before: new Map(), ids: [], paths, projection, session, over: false, upsert: opts.upsert === true, upsertId: undefined };

  if (!s.fetchBefore && single && plainIdFilter(filter)) {
    // The hot path reads nothing before the write: the filter names the document.
    const id = model.castObject({ _id: filter._id })._id;
    st.ids.push(id);
    st.before.set(documentIdString(id), { _id: id });
  } else {
    const readOpts: Record<string, unknown> = { lean: true, session, limit: single ? 1 : s.maxDocuments + 1 };
    if (single && opts.sort !== undefined) readOpts.sort = opts.sort;
    if (opts.collation !== undefined) readOpts.collation = opts.collation;
    const readProjection = s.fetchBefore ? projection : { _id: 1 as const };
    const found = sameFields(await model.find(filter, readProjection === s.projection ? s.findProjection() : readProjection ?? {}, readOpts), readProjection);
    if (found.length > s.maxDocuments) st.over = true;
    else {
      for (const d of found) {
        st.ids.push(d._id);
        st.before.set(documentIdString(d._id), d);
      }
    }
  }

  // A findOneAnd* upsert does not report the id it inserted unless asked to: give it one, as the server would.
  if (!isDelete && opts.upsert === true && st.ids.length === 0 && op.startsWith('findOneAnd') && update !== null && typeof update === 'object' && !Array.isArray(update)) {
    const u = update as Doc;
    const soi = (u.$setOnInsert ?? {}) as Doc;
    const replacement = REPLACES.has(op);
    const hasId = filter._id !== undefined || u._id !== undefined || soi._id !== undefined || (u.$set as Doc | undefined)?._id !== undefined;
    if (!hasId && !replacement) {
      st.upsertId = new mongo.ObjectId();
      q.setUpdate({ ...u, $setOnInsert: { ...soi, _id: st.upsertId } }); // a new object: the caller's is untouched
    }
  }
  queryStates.set(q, st);
}

interface WriteResult {
  matchedCount?: number;
  modifiedCount?: number;
  deletedCount?: number;
  upsertedId?: unknown;
  _id?: unknown;
  value?: { _id?: unknown } | null;
  lastErrorObject?: { upserted?: unknown };
}

export async function postQuery(s: Settings, q: AuditedQuery, res: unknown): Promise<void> {
  const st = queryStates.get(q);
  if (st === undefined) return;
  queryStates.delete(q);
  const model = q.model;
  const t: Target = { modelName: model.modelName, collectionName: model.collection.collectionName, operation: st.op };
  const r = (res ?? {}) as WriteResult;
  const isDelete = DELETES.has(st.op);

  if (st.over) {
    const matched = isDelete ? r.deletedCount ?? 0 : r.matchedCount ?? 0;
    const summary = { filter: q.getFilter(), update: isDelete ? null : q.getUpdate(), matched };
    await emit(s, t, isDelete ? 'delete' : 'update', undefined, [], summary);
    return;
  }

  if (isDelete) {
    if (st.ids.length === 0 || res === null || r.deletedCount === 0) return;
    // Which of the documents read are gone now (the filter may have matched another one meanwhile). A
    // single delete by a plain `{ _id }` that deleted one document deleted that one: nothing to ask.
    const known = r.deletedCount === 1 && st.ids.length === 1 && SINGLE.has(st.op) && plainIdFilter(q.getFilter());
    const left = known ? new Map<string, Doc>() : await readByIds(model, st.ids, { _id: 1 }, st.session);
    for (const [id, before] of st.before) {
      if (left.has(id)) continue;
      await emit(s, t, 'delete', id, s.fetchBefore ? diffDocuments(before, null, s.change) : []);
    }
    return;
  }

  // The server says nothing changed: no post-image to read (findOneAnd* results carry no such count).
  if (r.modifiedCount === 0 && (r.upsertedId === undefined || r.upsertedId === null) && !s.recordNoop) return;
  const created = upsertedIds(st, r, res);
  if (created.length === 0 && st.ids.length === 0 && st.upsertId === undefined && st.upsert && st.op.startsWith('findOneAnd')) {
    // A replacement upsert that returned no document: the one inserted matches the filter.
    for (const d of await model.find(q.getFilter(), { _id: 1 }, { lean: true, session: st.session, limit: 1 })) created.push(d._id);
  }
  const createdIds = new Set(created.map(documentIdString));
  // A created document is read once, whole; the others with the update's narrower projection.
  const separate = created.length > 0 && st.projection !== s.projection;
  const after = await readByIds(model, separate ? st.ids : [...st.ids, ...created], st.projection, st.session);
  const full = separate ? await readByIds(model, created, s.projection, st.session) : after;

  for (const id of createdIds) {
    // Inserted by this write, so it did not exist before (with `fetchBefore: false` the id may be a guess).
    st.before.delete(id);
    const doc = full.get(id);
    if (doc !== undefined) await emitTransition(s, t, id, null, doc);
  }
  for (const [id, before] of st.before) {
    const doc = after.get(id) ?? null;
    if (doc === null) continue; // gone meanwhile: its delete is someone else's event
    if (s.fetchBefore) {
      await emitTransition(s, t, id, before, doc);
    } else if (r.modifiedCount !== 0 || s.recordNoop) {
      // Not always true here: an upsert reports modifiedCount 0 with its upsertedId, and a document read
      // before it (that stopped matching meanwhile) was then not changed by this write.
      const changes = listFields(doc, st.paths, s.change);
      if (changes.length > 0 || s.recordNoop) await emit(s, t, 'update', id, changes);
    }
  }
}

function upsertedIds(st: QueryState, r: WriteResult, res: unknown): unknown[] {
  if (r.upsertedId !== undefined && r.upsertedId !== null) return [r.upsertedId];
  if (!st.upsert || !st.op.startsWith('findOneAnd') || st.ids.length > 0) return [];
  if (st.upsertId !== undefined) return [st.upsertId];
  const upserted = r.lastErrorObject?.upserted;
  if (upserted !== undefined && upserted !== null) return [upserted];
  const returned = res !== null && typeof res === 'object' && 'value' in (res as object) ? r.value?._id : r._id;
  return returned !== undefined && returned !== null ? [returned] : [];
}

// ------------------------------------------------------------------------------------- insertMany

export async function postInsertMany(s: Settings, model: AuditedModel, docs: unknown): Promise<void> {
  if (!s.auditsModel(model.modelName) || !Array.isArray(docs)) return;
  const t: Target = { modelName: model.modelName, collectionName: model.collection.collectionName, operation: 'insertMany' };
  for (const d of docs) {
    const plain = plainOf(d);
    if (plain === null || plain._id === undefined) continue;
    await emit(s, t, 'create', documentIdString(plain._id), diffDocuments(null, plain, s.change));
  }
}

/** insertMany with `rawResult: true`: the result names the inserted ids; their documents are read back. */
export async function postInsertedIds(s: Settings, model: AuditedModel, res: unknown, session: ClientSession | null): Promise<void> {
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

type BulkWrite = (this: unknown, ops: unknown, options?: unknown) => Promise<unknown>;

interface BulkResult {
  upsertedIds?: Record<string, unknown>;
  result?: { upsertedIds?: Record<string, unknown> };
}

/**
 * `Model.bulkWrite` audited. A static wrapper rather than bulkWrite middleware: the pre-images read before
 * the call must reach the code after it, and model middleware gets no per-call object to carry them.
 */
export async function auditedBulkWrite(s: Settings, model: AuditedModel, base: BulkWrite, ops: unknown, options: unknown): Promise<unknown> {
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
  await settle(s, (async () => {
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
      if (ran(sm.index)) await settle(s, emit(s, t, sm.kind, undefined, [], { filter: sm.filter, update: sm.update, matched: sm.matched }));
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
