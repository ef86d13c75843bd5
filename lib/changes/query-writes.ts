/**
 * Query writes: updateOne, updateMany, findOneAndUpdate, replaceOne, findOneAndReplace, deleteOne, deleteMany,
 * findOneAndDelete. Before the write, the documents it can touch are read (projection limited to what the
 * update names); after it, their state is read again and the difference recorded. Above `maxDocuments`,
 * one summary event stands for the call.
 */
import { mongo, type ClientSession } from 'mongoose';
import { diffDocuments, listFields } from './diff.js';
import {
  documentIdString, emit, emitTransition, narrowProjection, plainIdFilter, readByIds, sameFields,
  type AuditedModel, type Doc, type SchemaAudit, type Target,
} from './recorder.js';
import { touchedPaths, topLevelProjection } from './update-paths.js';
import { callNote, inNote } from './call-note.js';
import { cheapCandidate, cheapCollection, type CheapWrite, type MongooseCollection } from './update-one.js';
import type { AuditNote } from '../core/types.js';

/** A mongoose Query as the query hooks see it. */
export interface AuditedQuery {
  op?: string;
  model: AuditedModel;
  getFilter(): Doc;
  getUpdate(): unknown;
  setUpdate(update: object): unknown;
  getOptions(): QueryOptions;
  /** Mongoose's collection of this query, swapped for the cheap updateOne (update-one.ts). */
  mongooseCollection?: MongooseCollection;
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
  projection: Record<string, 0 | 1> | null;
  session: ClientSession | null;
  /** More documents matched than `maxDocuments`: one summary event instead. */
  over: boolean;
  upsert: boolean;
  /** `_id` given to a findOneAndUpdate upsert so that the inserted document can be found. */
  upsertId: unknown;
  note: AuditNote | undefined;
  /** An updateOne sent the cheap way (update-one.ts), and the collection it replaced. */
  cheap: { write: CheapWrite; coll: MongooseCollection } | null;
}

const queryStates = new WeakMap<object, QueryState>();

export async function preQuery(s: SchemaAudit, q: AuditedQuery): Promise<void> {
  const op = q.op ?? '';
  const model = q.model;
  const opts = q.getOptions();
  // Checked and taken off before the write, audited model or not: the driver never sees it.
  const note = callNote(opts);
  if (note !== undefined) delete (opts as { audit?: unknown }).audit;
  if (!s.auditsModel(model.modelName)) return;
  if (s.core.blocking) await s.core.waitForRoom();
  const session = opts.session ?? null;
  const single = SINGLE.has(op);
  const isDelete = DELETES.has(op);
  const update = isDelete ? null : q.getUpdate();
  const paths = isDelete ? null : touchedPaths(update, REPLACES.has(op));
  const projection = isDelete ? s.projection : narrowProjection(s, topLevelProjection(paths));
  const filter = q.getFilter();
  const st: QueryState = { op, before: new Map(), ids: [], paths, projection, session, over: false, upsert: opts.upsert === true, upsertId: undefined, note, cheap: null };

  if (op === 'updateOne' && s.fetchBefore && q.mongooseCollection !== undefined && cheapCandidate(update, opts as Record<string, unknown>)) {
    // No read before the write: the write itself returns the pre-image (update-one.ts).
    const coll = q.mongooseCollection;
    const write: CheapWrite = { images: null, projection: null, done: false, fallback: null };
    st.cheap = { write, coll };
    const db = (model as { db?: { db?: unknown } }).db?.db as Parameters<typeof cheapCollection>[1];
    q.mongooseCollection = cheapCollection(coll, db, write, {
      // Hooks after ours may have changed the update: the usual path reads what the final one names.
      projectionOf: (final) => narrowProjection(s, topLevelProjection(touchedPaths(final, false))),
      report: (err) => s.core.report(err),
    });
    queryStates.set(q, st);
    return;
  }

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

export function postQuery(s: SchemaAudit, q: AuditedQuery, res: unknown): Promise<void> {
  const st = queryStates.get(q);
  if (st === undefined) return Promise.resolve();
  queryStates.delete(q);
  if (st.cheap !== null) {
    q.mongooseCollection = st.cheap.coll;
    const fallback = st.cheap.write.fallback;
    if (fallback === null) return inNote(st.note, () => recordCheap(s, q, res, st));
    // Judged uncertain at the write: the pre-image was read there, the usual path records.
    st.projection = fallback.projection;
    st.paths = touchedPaths(q.getUpdate(), false);
    for (const d of sameFields(fallback.before, st.projection)) {
      st.ids.push(d._id);
      st.before.set(documentIdString(d._id), d);
    }
  }
  return inNote(st.note, () => recordQuery(s, q, res, st));
}

async function recordQuery(s: SchemaAudit, q: AuditedQuery, res: unknown, st: QueryState): Promise<void> {  const model = q.model;
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
      await emit(s, t, 'delete', id, s.fetchBefore ? diffDocuments(before, null, s.change) : [], undefined, before);
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
      if (changes.length > 0 || s.recordNoop) await emit(s, t, 'update', id, changes, undefined, doc);
    }
  }
}

/** The event of a cheap updateOne: its images came with the write (update-one.ts). */
async function recordCheap(s: SchemaAudit, q: AuditedQuery, res: unknown, st: QueryState): Promise<void> {
  const t: Target = { modelName: q.model.modelName, collectionName: q.model.collection.collectionName, operation: st.op };
  const w = (st.cheap as { write: CheapWrite }).write;
  if (!w.done) {
    // Mongoose sent nothing (the cast update was empty). The document is as it was: only recordNoop has an event.
    if (!s.recordNoop) return;
    const opts = q.getOptions();
    const readOpts: Record<string, unknown> = { lean: true, session: st.session, limit: 1 };
    if (opts.sort !== undefined) readOpts.sort = opts.sort;
    if (opts.collation !== undefined) readOpts.collation = opts.collation;
    const [doc] = sameFields(await q.model.find(q.getFilter(), st.projection ?? {}, readOpts), st.projection);
    if (doc !== undefined) await emitTransition(s, t, documentIdString(doc._id), doc, { ...doc });
    return;
  }
  const images = w.images;
  if (images === null) return; // nothing matched (or the document is gone since)
  if ((res as WriteResult | null)?.modifiedCount === 0 && !s.recordNoop) return;
  const before = project(images.before, w.projection);
  const after = project(images.after, w.projection);
  await emitTransition(s, t, documentIdString(before._id), before, after);
}

/** A whole image cut to an inclusive projection of top-level fields, as a read with it would return. */
function project(doc: Doc, projection: Record<string, 0 | 1> | null): Doc {
  if (projection === null) return doc;
  const keys = Object.keys(projection);
  if (keys.length === 0 || projection[keys[0]] === 0) return doc;
  const out: Doc = { _id: doc._id };
  for (const k of Object.keys(doc)) if (k !== '_id' && projection[k] === 1) out[k] = doc[k];
  return out;
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
