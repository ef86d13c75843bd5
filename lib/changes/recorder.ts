/**
 * What the change hooks share: the resolved settings of one audited schema, the reads of pre- and
 * post-images, and turning states into accepted events.
 *
 * Events are built with `core.build` (common fields: _id, ts, actor and request fields of the async context
 * at this moment) and their `changes` / `summary` are attached already in stored form, computed with the
 * schema's redactor (its extra `redact` keys apply to this schema's changes only, which the core's own
 * redactor would not know).
 */
import type { ClientSession } from 'mongoose';
import { bsonType, documentData, isMongooseDocument } from '../core/bson.js';
import type { AuditCore } from '../core/core.js';
import { AuditUnavailableError } from '../core/errors.js';
import { diffDocuments, type ChangeContext, type PathFilter } from './diff.js';
import type { Redactor } from '../core/redact.js';
import { toStored } from '../core/safe.js';
import type { Change, StoredValue } from '../core/types.js';

export type Doc = Record<string, unknown>;

/**
 * Marks a schema audited with `fetchBefore: false`: its update events hold no `from` values (each is null), so
 * `revert` must refuse them rather than unset the fields. A schema option: it survives mongoose's clones.
 */
export const NO_PRE_IMAGE_OPTION = 'koaAuditNoPreImage';

/** The parts of a mongoose Model the hooks use (typed structurally: the app's models have any shape). */
export interface AuditedModel {
  modelName: string;
  collection: {
    collectionName: string;
    find(filter: object, options?: object): { toArray(): Promise<Doc[]> };
  };
  find(filter: object, projection?: object | null, options?: object): PromiseLike<Doc[]>;
  countDocuments(filter: object): PromiseLike<number>;
  castObject(obj: object): Doc;
}

/** What one audited schema decided at plugin time, shared by all its hooks. */
export interface SchemaAudit {
  readonly core: AuditCore;
  readonly change: ChangeContext;
  readonly audited: PathFilter;
  readonly redactor: Redactor;
  /** Projection of a whole audited document: from include / exclude. Null: every field. */
  readonly projection: Record<string, 0 | 1> | null;
  /**
   * `projection` as given to a mongoose read (`model.find`): audited fields with `select: false` forced back
   * in (`+path`), since the driver reads of post-images include them and they would look changed.
   */
  findProjection(): object;
  readonly fetchBefore: boolean;
  readonly recordNoop: boolean;
  readonly maxDocuments: number;
  /** True when the model is audited (global `models` option), memoized per name. */
  auditsModel(name: string): boolean;
  /** The readable name of a document (plugin option `label`), stored as `documentLabel`; null: none. */
  readonly label: ((doc: Doc) => unknown) | null;
}

export type ChangeKind = 'create' | 'update' | 'delete';

export interface Summary {
  filter: unknown;
  update: unknown;
  matched: number;
}

/** The `documentId` of an event: an ObjectId's hex, a string as it is, anything else in its stored JSON form. */
export function documentIdString(id: unknown): string {
  const s = toStored(id);
  if (typeof s === 'string') return s;
  if (typeof s === 'number' || typeof s === 'boolean') return String(s);
  return JSON.stringify(s);
}

/** The projection reading `top`-level fields that are audited; `{ _id: 1 }` when none is. */
export function narrowProjection(s: SchemaAudit, fields: Record<string, 1> | null): Record<string, 0 | 1> | null {
  if (fields === null) return s.projection;
  const proj: Record<string, 1> = {};
  let any = false;
  for (const f of Object.keys(fields)) {
    if (f === '_id' || !s.audited(f)) continue;
    proj[f] = 1;
    any = true;
  }
  return any ? proj : { _id: 1 };
}

/** Reads documents by `_id` through the driver: no casting, no user find middleware can hide a changed document. */
export async function readByIds(model: AuditedModel, ids: readonly unknown[], projection: object | null, session: ClientSession | null | undefined): Promise<Map<string, Doc>> {
  const out = new Map<string, Doc>();
  if (ids.length === 0) return out;
  const opts: { projection?: object; session?: ClientSession } = {};
  if (projection !== null) opts.projection = projection;
  if (session != null) opts.session = session;
  // One id is an equality (some servers, FerretDB among them, use the _id index for it but not for `$in`);
  // many are chunked so that one `$in` list stays far below the BSON size limit.
  for (let i = 0; i < ids.length; i += 1000) {
    const filter = ids.length === 1 ? { _id: ids[0] } : { _id: { $in: ids.slice(i, i + 1000) } };
    const docs = await model.collection.find(filter, opts).toArray();
    for (const d of docs) out.set(documentIdString(d._id), d);
  }
  return out;
}

/** Plain data of a document: a hydrated mongoose document's stored fields, or the object itself. */
export function plainOf(doc: unknown): Doc | null {
  if (doc === null || doc === undefined || typeof doc !== 'object') return null;
  return isMongooseDocument(doc) ? documentData(doc) : (doc as Doc);
}

export interface Target {
  modelName: string;
  collectionName: string;
  operation: string;
}

/** Accepts one change event. Rejects only when the store cannot take it under `onFull: 'block'`. */
export async function emit(s: SchemaAudit, t: Target, kind: ChangeKind, documentId: string | undefined, changes: Change[], summary?: Summary, source?: Doc | null | (Doc | null)[]): Promise<void> {
  const doc = await s.core.build({
    kind,
    outcome: 'success',
    model: t.modelName,
    collectionName: t.collectionName,
    documentId,
    operation: t.operation,
  });
  doc.changes = changes;
  // The first of the documents at hand that yields a label (a narrow read may lack the label's field).
  let label: string | null = null;
  for (const src of Array.isArray(source) ? source : [source]) if (label === null) label = labelOf(s, src);
  if (label !== null) doc.documentLabel = label;
  if (summary !== undefined) {
    const stored: { filter: StoredValue; update: StoredValue; matched: number } = {
      filter: toStored(summary.filter ?? null, s.redactor, s.core.limits),
      update: toStored(summary.update ?? null, s.redactor, s.core.limits),
      matched: summary.matched,
    };
    doc.summary = stored;
  }
  await s.core.accept(doc);
}

/** The `label` of a document as a string of at most maxStringLength, or null (none, or the label function failed). */
function labelOf(s: SchemaAudit, source: Doc | null | undefined): string | null {
  if (s.label === null || source === null || source === undefined) return null;
  try {
    const v = s.label(source);
    if (v === null || v === undefined || v === '') return null;
    const text = typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : (v as { toString(): string }).toString();
    return text.slice(0, s.core.limits.maxString);
  } catch (err) {
    s.core.report(err);
    return null;
  }
}

/** The event of one document given its states before and after the write (either may be absent). */
export async function emitTransition(s: SchemaAudit, t: Target, id: string, before: Doc | null, after: Doc | null, labelFrom: Doc | null = null): Promise<void> {
  if (before === null && after === null) return;
  if (before === null) return emit(s, t, 'create', id, diffDocuments(null, after, s.change), undefined, after);
  if (after === null) return emit(s, t, 'delete', id, diffDocuments(before, null, s.change), undefined, before);
  const changes = diffDocuments(before, after, s.change);
  if (changes.length > 0 || s.recordNoop) await emit(s, t, 'update', id, changes, undefined, [labelFrom, after, before]);
}

/**
 * Runs the recording part that follows a successful write. A fault of the auditor there (a failed image
 * read) must not make the app believe its write failed: it is reported. Only a full store under
 * `onFull: 'block'` fails the call, closed.
 */
export async function guard(s: SchemaAudit, work: Promise<void>): Promise<void> {
  try {
    await work;
  } catch (err) {
    if (err instanceof AuditUnavailableError) throw err;
    s.core.report(err);
  }
}

/**
 * Pre-images are read through mongoose (it casts the filter and scopes it as the write will), post-images
 * through the driver. Mongoose adds fields to an inclusive projection (a discriminator key): they are
 * dropped again, or they would look removed by the write.
 */
export function sameFields(docs: Doc[], projection: Record<string, 0 | 1> | null): Doc[] {
  if (projection === null) return docs;
  const keys = Object.keys(projection);
  if (keys.length === 0 || projection[keys[0]] === 0) return docs;
  const top = new Set(keys.map((k) => (k.includes('.') ? k.slice(0, k.indexOf('.')) : k)));
  top.add('_id');
  for (const d of docs) for (const k of Object.keys(d)) if (!top.has(k)) delete d[k];
  return docs;
}

/** A filter that names one document by a plain `_id` value (no operator): the id is known without a read. */
export function plainIdFilter(filter: Doc): boolean {
  const keys = Object.keys(filter);
  if (keys.length !== 1 || keys[0] !== '_id') return false;
  const v = filter._id;
  if (v === null || v === undefined) return false;
  if (typeof v !== 'object') return true;
  return bsonType(v) !== undefined;
}
