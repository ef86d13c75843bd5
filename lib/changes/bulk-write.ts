/**
 * `Model.bulkWrite`, every operation type, recorded operation by operation: one event per operation that changed
 * a document, in operation order, with that operation's own before and after states.
 *
 * The server reports no per-operation images, so the states around each operation are read by the auditor. Within
 * one call to the server, each document may be touched by one operation only, and no operation that looks
 * documents up by a filter may follow one that can make other documents match it; otherwise the states read
 * before and after the call would show the net effect of several operations. A call whose operations depend on
 * each other (`[insertOne X, updateOne X, deleteOne X]`) is therefore sent as consecutive calls of independent
 * operations, their results merged into one result (or one error) as a single call would have given. Calls whose
 * operations are independent, the common case, are sent exactly as the application made them.
 *
 * Multi-document operations above `maxDocuments` are recorded as summaries, and sent on their own.
 */
import type { ClientSession } from 'mongoose';
import { callNote, inNote, withoutNote } from './call-note.js';
import {
  documentIdString, emit, emitTransition, guard, plainIdFilter, readByIds, sameFields,
  type AuditedModel, type Doc, type SchemaAudit, type Target,
} from './recorder.js';
import { touchedPaths } from './update-paths.js';

type BulkWrite = (this: unknown, ops: unknown, options?: unknown) => Promise<unknown>;

/**
 * What an operation can do to documents other than those it was planned against, as far as the operation itself
 * says: which top-level fields it may write, with the literal values it sets, and the document it may create.
 */
interface Effects {
  /** Top-level fields it may write on documents that exist; null: any field (a pipeline update). */
  writes: Set<string> | null;
  /** Literal values it `$set`s, by top-level field. */
  sets: Map<string, unknown>;
  /** The known fields of a document it may create (insertOne, an upsert) or replace; null: none. */
  creates: Doc | null;
}

/** What a filter tests: its top-level fields (null: unknown, e.g. `$or`), and its plain equalities. */
interface FilterShape {
  fields: Set<string> | null;
  equals: Map<string, unknown>;
}

/** One operation of the call, as planned before its part of the call is sent. */
interface PlannedOp {
  /** Index in the caller's list. */
  index: number;
  op: unknown;
  type: string;
  /** Documents read before the write (filter lookups), by id string. */
  before: Map<string, Doc>;
  /** Ids named by a plain `{ _id }` filter or an insertOne document: read just before their part is sent. */
  byId: unknown[];
  /** Looks documents up by a filter (not a plain `_id`): what earlier operations do can change what it matches. */
  byFilter: boolean;
  /** Can create or change documents, so that a later filter may match them. */
  mutates: boolean;
  effects: Effects;
  /** What its filter tests (filter lookups only). */
  shape: FilterShape | null;
  /** Above `maxDocuments`: recorded as one summary, and sent on its own. */
  summary: { kind: 'update' | 'delete'; filter: unknown; update: unknown; matched: number } | null;
}

/** What one part of the call (one call to mongoose's own bulkWrite) gave. */
interface Part {
  offset: number;
  size: number;
  res: unknown;
  error: unknown;
}

/**
 * `Model.bulkWrite` audited. A static wrapper rather than bulkWrite middleware: the pre-images read before
 * the call must reach the code after it, and model middleware gets no per-call object to carry them.
 */
export async function auditedBulkWrite(s: SchemaAudit, model: AuditedModel, base: BulkWrite, ops: unknown, options: unknown): Promise<unknown> {
  const note = callNote(options);
  return inNote(note, () => bulkWrite(s, model, base, ops, withoutNote(options)));
}

async function bulkWrite(s: SchemaAudit, model: AuditedModel, base: BulkWrite, ops: unknown, options: unknown): Promise<unknown> {
  // `Model.bulkSave` runs save middleware for its documents, then calls bulkWrite with this internal flag:
  // its changes are recorded by the save hooks, once.
  const internal = (options as { _skipCastBulkWrite?: unknown } | null | undefined)?._skipCastBulkWrite === true;
  if (internal || !s.auditsModel(model.modelName) || !Array.isArray(ops) || ops.length === 0) return base.call(model, ops, options);
  if (s.core.blocking) await s.core.waitForRoom();
  const session = ((options ?? {}) as { session?: ClientSession | null }).session ?? null;
  const ordered = (options as { ordered?: unknown } | null | undefined)?.ordered;
  const isOrdered = ordered == null || Boolean(ordered);
  const parts: Part[] = [];

  let i = 0;
  while (i < ops.length) {
    // The longest run of independent operations from i, each planned against the state all earlier parts left.
    const segment: PlannedOp[] = [await plan(s, model, ops[i], i, session)];
    const taken = new Set<string>(targets(segment[0]));
    if (segment[0].summary === null) {
      for (let j = i + 1; j < ops.length; j++) {
        const p = await plan(s, model, ops[j], j, session);
        if (p.summary !== null || targets(p).some((id) => taken.has(id))) break;
        // A lookup by filter after an operation that could make other documents match it sees a state that the
        // server, running them in order, would not: it waits for the next part.
        if (p.byFilter && segment.some((q) => q.mutates && mayMatch(q.effects, p.shape))) break;
        segment.push(p);
        for (const id of targets(p)) taken.add(id);
      }
    }
    const part = await runSegment(s, model, base, ops, segment, options, session);
    parts.push(part);
    i += segment.length;
    if (part.error !== null && (isOrdered || !isBulkError(part.error))) break;
  }

  if (parts.length === 1) {
    if (parts[0].error !== null) throw parts[0].error;
    return parts[0].res;
  }
  const merged = mergeParts(parts, ops.length);
  if (merged.error !== null) throw merged.error;
  return merged.res;
}

/** Ids an operation is known to touch, for the independence test. */
function targets(p: PlannedOp): string[] {
  return [...p.before.keys(), ...p.byId.map(documentIdString)];
}

async function plan(s: SchemaAudit, model: AuditedModel, op: unknown, index: number, session: ClientSession | null): Promise<PlannedOp> {
  const p: PlannedOp = { index, op, type: '', before: new Map(), byId: [], byFilter: false, mutates: false, effects: { writes: new Set(), sets: new Map(), creates: null }, shape: null, summary: null };
  if (op === null || typeof op !== 'object') return p;
  p.type = Object.keys(op)[0];
  const body = (op as Record<string, Doc>)[p.type];
  if (body === null || typeof body !== 'object') return p;
  const filter = (body.filter ?? {}) as Doc;
  const keep = (docs: Doc[]): void => {
    for (const d of docs) p.before.set(documentIdString(d._id), d);
  };
  p.mutates = p.type !== 'deleteOne' && p.type !== 'deleteMany';
  p.effects = effectsOf(p.type, body, filter);
  switch (p.type) {
    case 'insertOne': {
      const id = (body.document as Doc | undefined)?._id;
      if (id !== undefined) p.byId.push(id);
      break;
    }
    case 'updateOne':
    case 'replaceOne':
    case 'deleteOne':
      if (plainIdFilter(filter)) p.byId.push(filter._id);
      else {
        p.byFilter = true;
        p.shape = shapeOf(filter);
        keep(sameFields(await model.find(filter, s.findProjection(), { lean: true, session, limit: 1 }), s.projection));
      }
      break;
    case 'updateMany':
    case 'deleteMany': {
      p.byFilter = true;
      p.shape = shapeOf(filter);
      const docs = sameFields(await model.find(filter, s.findProjection(), { lean: true, session, limit: s.maxDocuments + 1 }), s.projection);
      if (docs.length <= s.maxDocuments) keep(docs);
      else p.summary = { kind: p.type === 'deleteMany' ? 'delete' : 'update', filter, update: body.update ?? null, matched: await model.countDocuments(filter) };
      break;
    }
  }
  return p;
}

/** A value a filter or an update gives a field literally (not an operator object, not an embedded document). */
function isLiteral(v: unknown): boolean {
  if (v === null || typeof v !== 'object') return typeof v !== 'function' && typeof v !== 'symbol' && v !== undefined;
  return v instanceof Date || typeof (v as { _bsontype?: unknown })._bsontype === 'string';
}

function shapeOf(filter: Doc): FilterShape {
  const shape: FilterShape = { fields: new Set(), equals: new Map() };
  for (const key of Object.keys(filter)) {
    if (key.charCodeAt(0) === 36 /* $ */) return { fields: null, equals: new Map() }; // $or, $expr, $where...
    const dot = key.indexOf('.');
    shape.fields?.add(dot === -1 ? key : key.slice(0, dot));
    if (dot === -1 && isLiteral(filter[key])) shape.equals.set(key, filter[key]);
  }
  return shape;
}

/** The literal top-level fields of a document-like object. */
function literalFields(doc: unknown, into: Doc = {}): Doc {
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return into;
  for (const [k, v] of Object.entries(doc)) if (k.charCodeAt(0) !== 36 && !k.includes('.') && isLiteral(v)) into[k] = v;
  return into;
}

function effectsOf(type: string, body: Doc, filter: Doc): Effects {
  const e: Effects = { writes: new Set(), sets: new Map(), creates: null };
  if (type === 'insertOne') e.creates = literalFields(body.document);
  else if (type === 'replaceOne') e.creates = literalFields(body.replacement);
  else if (type === 'updateOne' || type === 'updateMany') {
    const update = body.update;
    const paths = touchedPaths(update, false);
    e.writes = paths === null ? null : new Set(paths.map((p) => (p.includes('.') ? p.slice(0, p.indexOf('.')) : p)));
    const u = (update ?? {}) as Doc;
    for (const [k, v] of Object.entries(literalFields(u.$set, literalFields(u)))) e.sets.set(k, v);
    // An upsert inserts the filter's equalities with what the update sets.
    if (body.upsert === true) e.creates = literalFields(u.$setOnInsert, literalFields(u.$set, literalFields(filter)));
  }
  return e;
}

/**
 * False when two literals can be told apart whatever mongoose casts them to: same type, different value (strings
 * compared trimmed and in one case, since schema setters may trim or change case). Anything else may be equal.
 */
function differ(a: unknown, b: unknown): boolean {
  if (typeof a === 'string' && typeof b === 'string') return a.trim().toLowerCase() !== b.trim().toLowerCase();
  if ((typeof a === 'number' && typeof b === 'number') || (typeof a === 'boolean' && typeof b === 'boolean')) return a !== b;
  if (a instanceof Date && b instanceof Date) return a.getTime() !== b.getTime();
  const ta = (a as { _bsontype?: unknown } | null)?._bsontype;
  if (ta === 'ObjectId' && (b as { _bsontype?: unknown } | null)?._bsontype === 'ObjectId') return documentIdString(a) !== documentIdString(b);
  return false;
}

/**
 * Whether an operation with these effects could make a document match `shape` that did not before (a document
 * that stops matching is one both operations target, which the caller checks by id).
 */
function mayMatch(e: Effects, shape: FilterShape | null): boolean {
  if (shape === null || shape.fields === null) return true;
  if (e.creates !== null) {
    const created = e.creates;
    const excluded = [...shape.equals].some(([f, v]) => Object.hasOwn(created, f) && differ(created[f], v));
    if (!excluded) return true;
  }
  if (e.writes === null) return true;
  for (const f of e.writes) {
    if (!shape.fields.has(f)) continue;
    if (e.sets.has(f) && shape.equals.has(f) && differ(e.sets.get(f), shape.equals.get(f))) continue;
    return true;
  }
  return false;
}

interface BulkResult {
  upsertedIds?: Record<string, unknown>;
  result?: { upsertedIds?: Record<string, unknown> };
}

/** Sends one run of independent operations as one call, and records what each of them did, in operation order. */
async function runSegment(s: SchemaAudit, model: AuditedModel, base: BulkWrite, ops: unknown[], segment: PlannedOp[], options: unknown, session: ClientSession | null): Promise<Part> {
  const offset = segment[0].index;
  const byId = segment.flatMap((p) => p.byId);
  if (byId.length > 0) {
    const found = sameFields(await model.find({ _id: { $in: byId } }, s.findProjection(), { lean: true, session }), s.projection);
    const byKey = new Map(found.map((d) => [documentIdString(d._id), d]));
    for (const p of segment) {
      for (const id of p.byId) {
        const d = byKey.get(documentIdString(id));
        if (d !== undefined) p.before.set(documentIdString(d._id), d);
      }
    }
  }

  // The caller's own array when the whole call is one part: mongoose casts insertOne documents in it (their `_id`).
  const sent = segment.length === ops.length ? ops : segment.map((p) => p.op);
  let res: unknown = null;
  let error: unknown = null;
  try {
    res = await base.call(model, sent, options);
  } catch (err) {
    error = err;
  }

  // What each operation inserted: cast insertOne documents carry their _id now; upserts are in the result.
  const created = new Map<number, unknown>();
  segment.forEach((p, k) => {
    const doc = (p.op as { insertOne?: { document?: { _id?: unknown } } } | null)?.insertOne?.document;
    if (doc?._id !== undefined) created.set(k, doc._id);
  });
  const r = (error ?? res ?? {}) as BulkResult;
  const upserted = r.upsertedIds ?? r.result?.upsertedIds ?? {};
  const sentIndex = sentIndexes(error ?? res, segment.length);
  for (const k of Object.keys(upserted)) created.set(sentIndex[Number(k)] ?? Number(k), upserted[k]);

  const t: Target = { modelName: model.modelName, collectionName: model.collection.collectionName, operation: 'bulkWrite' };
  const ran = ranOperations(options, error, res);
  await guard(s, (async () => {
    const ids: unknown[] = [];
    for (const p of segment) for (const d of p.before.values()) ids.push(d._id);
    for (const [k, id] of created) if (!segment[k].before.has(documentIdString(id))) ids.push(id);
    const after = await readByIds(model, ids, s.projection, session);
    for (let k = 0; k < segment.length; k++) {
      const p = segment[k];
      if (p.summary !== null) {
        if (ran(k)) await emit(s, t, p.summary.kind, undefined, [], { filter: p.summary.filter, update: p.summary.update, matched: p.summary.matched });
        continue;
      }
      const seen = new Set<string>();
      for (const [id, doc] of p.before) {
        seen.add(id);
        await emitTransition(s, t, id, doc, after.get(id) ?? null);
      }
      const id = created.get(k);
      if (id !== undefined && !seen.has(documentIdString(id))) await emitTransition(s, t, documentIdString(id), null, after.get(documentIdString(id)) ?? null);
    }
  })());
  return { offset, size: segment.length, res, error };
}

interface BulkOutcome {
  writeErrors?: unknown;
  mongoose?: { results?: unknown[] };
}

/**
 * Which operations of a bulkWrite ran, by index in the list sent. Mongoose reports per-operation results
 * when it left out operations that failed to cast (unordered: `null` is a success); otherwise the server's
 * write errors tell: an ordered write stops at the first, an unordered one skips only those. A failure
 * without write errors (a cast error, a lost connection) ran nothing that can be vouched for.
 */
function ranOperations(options: unknown, error: unknown, res: unknown): (index: number) => boolean {
  const outcome = ((error ?? res ?? {}) as BulkOutcome);
  const results = outcome.mongoose?.results;
  if (Array.isArray(results)) return (i) => results[i] === null;
  if (error === null) return () => true;
  const failed = writeErrorsOf(error).map((w) => w.index).filter((i): i is number => typeof i === 'number');
  if (failed.length === 0) return () => false;
  const o = (options ?? {}) as { ordered?: unknown };
  if (o.ordered == null || Boolean(o.ordered)) {
    const first = Math.min(...failed);
    return (i) => i < first;
  }
  const set = new Set(failed);
  return (i) => !set.has(i);
}

/**
 * Indexes, in the list given to mongoose, of the operations it sent to the server (in the server's order). Without
 * a cast failure (unordered calls report them in `mongoose.results`), all of them.
 */
function sentIndexes(outcome: unknown, size: number): number[] {
  const results = (outcome as BulkOutcome | null)?.mongoose?.results;
  const out: number[] = [];
  for (let k = 0; k < size; k++) {
    const v = Array.isArray(results) ? results[k] : null;
    // null: sent and succeeded; a driver WriteError (it has `err`): sent and failed; any other Error: never sent.
    if (v === null || v === undefined || (v as { err?: unknown }).err !== undefined) out.push(k);
  }
  return out;
}

/** A driver WriteError: `err` holds the server's document, `index` reads `err.index`. */
interface WriteErrorLike {
  index?: unknown;
  err?: { index?: unknown };
  constructor: new (err: object) => WriteErrorLike;
}

function writeErrorsOf(x: unknown): WriteErrorLike[] {
  const raw = (x as { writeErrors?: unknown } | null)?.writeErrors;
  return Array.isArray(raw) ? raw : raw !== null && raw !== undefined ? [raw as WriteErrorLike] : [];
}

/** The driver's BulkWriteResult: counts and id maps by operation index, over the raw result it was made from. */
interface BulkWriteResultLike {
  result: RawBulkResult;
  insertedIds: Record<string, unknown>;
  upsertedIds: Record<string, unknown>;
  mongoose?: { validationErrors?: unknown[]; results?: unknown[] };
  constructor: new (raw: RawBulkResult, isOrdered: boolean) => BulkWriteResultLike;
}

interface RawBulkResult {
  ok: number;
  nInserted: number;
  nUpserted: number;
  nMatched: number;
  nModified: number;
  nRemoved: number;
  upserted: { index: number; _id: unknown }[];
  insertedIds: { index: number; _id: unknown }[];
  writeErrors: WriteErrorLike[];
  writeConcernErrors: unknown[];
}

/** A bulk write error of the driver (or mongoose's): it carries the result of what did run. */
function isBulkError(err: unknown): boolean {
  const r = (err as { result?: { result?: unknown } } | null)?.result;
  return r !== null && typeof r === 'object' && typeof r.result === 'object' && r.result !== null;
}

function resultOf(part: Part): BulkWriteResultLike | null {
  if (part.error === null) return part.res as BulkWriteResultLike;
  return isBulkError(part.error) ? (part.error as { result: BulkWriteResultLike }).result : null;
}

/**
 * One result from the parts' results, indexes in the caller's list: what a single call would have returned
 * (or thrown: the first part's error, carrying the merged result and every write error).
 */
function mergeParts(parts: Part[], total: number): { res: unknown; error: unknown } {
  const raw: RawBulkResult = { ok: 1, nInserted: 0, nUpserted: 0, nMatched: 0, nModified: 0, nRemoved: 0, upserted: [], insertedIds: [], writeErrors: [], writeConcernErrors: [] };
  const validationErrors: unknown[] = [];
  const results: unknown[] = new Array<unknown>(total).fill(null);
  let decorated = false;
  let make: BulkWriteResultLike['constructor'] | null = null;
  for (const part of parts) {
    const r = resultOf(part);
    if (r === null || r.result === undefined) continue;
    make ??= r.constructor;
    const m = ((part.error ?? part.res) as { mongoose?: BulkWriteResultLike['mongoose'] } | null)?.mongoose ?? r.mongoose;
    const sentIndex = sentIndexes(part.error ?? part.res, part.size);
    if (Array.isArray(m?.results)) for (let k = 0; k < part.size; k++) if (!sentIndex.includes(k)) results[part.offset + k] = m.results[k];
    const at = (serverIndex: number): number => part.offset + (sentIndex[serverIndex] ?? serverIndex);
    raw.nInserted += r.result.nInserted ?? 0;
    raw.nUpserted += r.result.nUpserted ?? 0;
    raw.nMatched += r.result.nMatched ?? 0;
    raw.nModified += r.result.nModified ?? 0;
    raw.nRemoved += r.result.nRemoved ?? 0;
    for (const k of Object.keys(r.insertedIds ?? {})) raw.insertedIds.push({ index: at(Number(k)), _id: r.insertedIds[k] });
    for (const k of Object.keys(r.upsertedIds ?? {})) raw.upserted.push({ index: at(Number(k)), _id: r.upsertedIds[k] });
    for (const w of writeErrorsOf(part.error ?? r.result)) {
      const index = at(Number(w.err?.index ?? w.index));
      raw.writeErrors.push(new w.constructor({ ...(w.err ?? {}), index }));
      results[index] = raw.writeErrors[raw.writeErrors.length - 1];
    }
    raw.writeConcernErrors.push(...(r.result.writeConcernErrors ?? []));
    if (Array.isArray(m?.validationErrors) && m.validationErrors.length > 0) {
      decorated = true;
      validationErrors.push(...m.validationErrors);
    }
  }
  if (make === null) return { res: parts[0].res, error: parts.find((p) => p.error !== null)?.error ?? null };
  // Inserted ids are those of operations that succeeded already: nothing for the result to filter out.
  const merged = new make(raw, false);
  if (decorated) merged.mongoose = { validationErrors, results };
  const failed = parts.find((p) => p.error !== null);
  if (failed === undefined) return { res: merged, error: null };
  const err = failed.error as { result?: unknown; writeErrors?: unknown; mongoose?: unknown };
  if (isBulkError(err)) {
    try {
      err.result = merged;
      err.writeErrors = raw.writeErrors;
      if (decorated) err.mongoose = merged.mongoose;
    } catch {
      // a frozen error stays as it is
    }
  }
  return { res: null, error: err };
}
