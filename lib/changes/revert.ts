/**
 * Undo: `revert(eventId)` undoes one change event, `restore(model, id, at)` writes back the version `versionAt`
 * rebuilds. Both write through the application's own mongoose model, so schema casting, validation and
 * middleware apply, and the undo is itself audited (its events carry `meta.revertOf` / `meta.restoredTo`).
 *
 * Values come from the stored events (JSON form: dates as ISO strings, ObjectIds as hex); writing them through
 * the model casts them back by the schema. A redacted value was never stored: a revert that would need one
 * is refused, naming the paths. Before writing, the document is compared with the event's result: paths that
 * changed since are a conflict (RevertConflictError) unless `force`.
 */
import mongoose, { type Model } from 'mongoose';
import type { AuditCore } from '../core/core.js';
import { RevertConflictError, RevertRefusedError } from '../core/errors.js';
import { REDACTED } from '../core/redact.js';
import { toStored } from '../core/safe.js';
import { checkReason } from '../core/scope.js';
import type { AuditEvent, Change, StoredValue } from '../core/types.js';
import { flatten, isPlainObject, storedKey } from './diff.js';
import { checkId, history, modelName, versionAt } from './history.js';
import { NO_PRE_IMAGE_OPTION } from './recorder.js';

export interface RevertOptions {
  /** Why: stored as the reverting change's `reason`. */
  reason?: string;
  /** Revert even when the document changed since the event. */
  force?: boolean;
}

export interface RevertResult {
  /** The event reverted. */
  eventId: string;
  /** What the revert did: `update` (values put back), `create` (the deleted document re-inserted), `delete`. */
  action: 'update' | 'create' | 'delete' | 'none';
  model: string;
  documentId: string;
}

type Doc = Record<string, unknown>;
type AppModel = Model<Doc>;

/** The application's model named `name`: on the audit connection first, then on any mongoose connection. */
function appModel(core: AuditCore, name: string, eventId: string): AppModel {
  const candidates = [core.options.connection, ...mongoose.connections];
  for (const c of candidates) {
    const m = c.models[name] as AppModel | undefined;
    if (m !== undefined) return m;
  }
  throw new RevertRefusedError(eventId, [], `no mongoose model named ${JSON.stringify(name)} is registered`);
}

function castId(model: AppModel, documentId: string): unknown {
  try {
    return (model.castObject({ _id: documentId }) as { _id: unknown })._id;
  } catch {
    return documentId;
  }
}

function same(current: unknown, expected: StoredValue | undefined): boolean {
  return storedKey(current === undefined ? null : toStored(current)) === storedKey(expected ?? null);
}

function isRedacted(core: AuditCore, c: Change): boolean {
  return c.from === REDACTED || c.to === REDACTED || core.redactor.isSecret(c.path) || containsRedacted(c.from) || containsRedacted(c.to);
}

function containsRedacted(v: unknown): boolean {
  if (v === REDACTED) return true;
  if (Array.isArray(v)) return v.some(containsRedacted);
  if (isPlainObject(v)) return Object.values(v).some(containsRedacted);
  return false;
}

/** Where a change's path lands in a document: a plain path, or a field of an element of a subdocument array. */
interface Located {
  /** Dot-joined path of the array holding the element (null: a plain path). */
  arrayPath: string | null;
  elementId: string;
  /** Path inside the element ('' for the element itself). */
  rest: string;
}

function locate(doc: Doc, path: string): Located {
  const segs = path.split('.');
  let cur: unknown = doc;
  for (let i = 0; i < segs.length - 1; i++) {
    const next = isPlainObject(cur) ? cur[segs[i]] : undefined;
    if (Array.isArray(next)) return { arrayPath: segs.slice(0, i + 1).join('.'), elementId: segs[i + 1], rest: segs.slice(i + 2).join('.') };
    cur = next;
  }
  return { arrayPath: null, elementId: '', rest: '' };
}

function getAt(doc: unknown, path: string): unknown {
  if (path === '') return doc;
  let cur: unknown = doc;
  for (const seg of path.split('.')) {
    if (!isPlainObject(cur)) return undefined;
    cur = cur[seg];
  }
  return cur;
}

function setAt(doc: Doc, path: string, value: unknown): void {
  const segs = path.split('.');
  let cur = doc;
  for (let i = 0; i < segs.length - 1; i++) {
    if (!isPlainObject(cur[segs[i]])) cur[segs[i]] = {};
    cur = cur[segs[i]] as Doc;
  }
  if (value === null || value === undefined) delete cur[segs[segs.length - 1]];
  else cur[segs[segs.length - 1]] = value;
}

function elementAt(arr: unknown[], id: string): number {
  return arr.findIndex((el) => isPlainObject(el) && el._id !== undefined && el._id !== null && String(toStored(el._id)) === id);
}

/** The update that puts back the `from` values of an update event, and the paths that changed since. */
function inverseUpdate(current: Doc, changes: readonly Change[]): { set: Doc; unset: Doc; conflicts: string[] } {
  const set: Doc = {};
  const unset: Doc = {};
  const conflicts: string[] = [];
  const arrays = new Map<string, unknown[]>(); // arrays rewritten element by element, copied once
  for (const c of changes) {
    const at = locate(current, c.path);
    if (at.arrayPath !== null) {
      let arr = arrays.get(at.arrayPath);
      if (arr === undefined) {
        arr = [...(getAt(current, at.arrayPath) as unknown[])].map((el) => (isPlainObject(el) ? { ...el } : el));
        arrays.set(at.arrayPath, arr);
      }
      const i = elementAt(arr, at.elementId);
      if (at.rest === '') {
        // The element itself was added (from null) or removed (to null).
        if (c.from === null) {
          if (i === -1 || !same(arr[i], c.to)) conflicts.push(c.path);
          if (i !== -1) arr.splice(i, 1);
        } else {
          if (i !== -1) conflicts.push(c.path);
          else arr.push(c.from);
        }
        continue;
      }
      if (i === -1) {
        conflicts.push(c.path);
        continue;
      }
      if (!same(getAt(arr[i], at.rest), c.to)) conflicts.push(c.path);
      setAt(arr[i] as Doc, at.rest, c.from);
      continue;
    }
    const now = getAt(current, c.path);
    if (c.added !== undefined && c.to === undefined) {
      // A long array stored as added/removed: take the added elements out, put the removed back.
      const list = Array.isArray(now) ? now : [];
      const keys = new Set(list.map((v) => storedKey(toStored(v))));
      if (c.added.some((v) => !keys.has(storedKey(v))) || c.removed.some((v) => keys.has(storedKey(v)))) conflicts.push(c.path);
      const added = new Set(c.added.map(storedKey));
      set[c.path] = [...list.filter((v) => !added.has(storedKey(toStored(v)))), ...c.removed];
      continue;
    }
    if (!same(now, c.to)) conflicts.push(c.path);
    if (c.from === null || c.from === undefined) unset[c.path] = 1;
    else set[c.path] = c.from;
  }
  for (const [path, arr] of arrays) set[path] = arr;
  return { set, unset, conflicts };
}

/** A document from the `from` values of a delete event's changes. */
function removedDocument(documentId: string, changes: readonly Change[]): Doc {
  const doc: Doc = {};
  for (const c of changes) if (c.from !== null && c.from !== undefined) setAt(doc, c.path, c.from);
  doc._id = documentId;
  return doc;
}

/** `model.updateOne`, typed loosely: the filter and update are built from stored values, cast by the model. */
function updateOne(model: AppModel, filter: Doc, update: Doc, options: Doc): Promise<unknown> {
  return (model.updateOne as unknown as (f: Doc, u: Doc, o: Doc) => PromiseLike<unknown>).call(model, filter, update, options) as Promise<unknown>;
}

function updateOf(set: Doc, unset: Doc): Doc | null {
  const u: Doc = {};
  if (Object.keys(set).length > 0) u.$set = set;
  if (Object.keys(unset).length > 0) u.$unset = unset;
  return Object.keys(u).length === 0 ? null : u;
}

export async function revert(core: AuditCore, eventId: unknown, options: RevertOptions = {}): Promise<RevertResult> {
  if (typeof eventId !== 'string' && !(eventId instanceof mongoose.Types.ObjectId)) throw new TypeError('koa-audit: revert needs an event id');
  const idText = String(eventId);
  if (!/^[0-9a-fA-F]{24}$/.test(idText)) throw new TypeError(`koa-audit: revert needs a 24-character hex event id, got ${JSON.stringify(idText.slice(0, 80))}`);
  if (options === null || typeof options !== 'object') throw new TypeError('koa-audit: revert options must be an object { reason?, force? }');
  const reason = checkReason('revert option', options.reason);
  const event = await core.model.findById(idText).lean<AuditEvent>();
  if (event === null) throw new RevertRefusedError(idText, [], 'no such event');
  return revertEvent(core, event, { reason, force: options.force === true });
}

/** Reverts a loaded event (the HTTP API checks the event's tenant before). */
export async function revertEvent(core: AuditCore, event: AuditEvent, options: { reason?: string; force: boolean }): Promise<RevertResult> {
  const idText = String(event._id);
  const { kind, model: name, documentId } = event;
  if ((kind !== 'create' && kind !== 'update' && kind !== 'delete') || name === undefined || documentId === undefined) {
    throw new RevertRefusedError(idText, [], event.summary !== undefined ? 'a summary of a multi-document write names no document' : `a ${kind} event is not a document change`);
  }
  const changes = event.changes ?? [];
  const model = appModel(core, name, idText);
  const _id = castId(model, documentId);
  const audit = { reason: options.reason, meta: { revertOf: idText } };
  const current = (await model.collection.findOne({ _id } as never)) as Doc | null;
  const result: RevertResult = { eventId: idText, action: 'none', model: name, documentId };

  if (kind === 'create') {
    if (current === null) throw new RevertConflictError(idText, ['_id'], 'the document no longer exists');
    const changed = changes.filter((c) => !isRedacted(core, c) && locate(current, c.path).arrayPath === null && !same(getAt(current, c.path), c.to)).map((c) => c.path);
    if (changed.length > 0 && !options.force) throw new RevertConflictError(idText, changed);
    await model.deleteOne({ _id } as Doc, { audit });
    result.action = 'delete';
    return result;
  }

  const redacted = changes.filter((c) => isRedacted(core, c)).map((c) => c.path);
  if (redacted.length > 0) throw new RevertRefusedError(idText, redacted, 'redacted values were never stored');
  // An event cut to maxEventBytes lost values (or whole changes): what it would put back is not known.
  const cut = changes.filter((c) => (c as { truncated?: unknown }).truncated === true).map((c) => c.path);
  const omitted = (event as { truncated?: { omittedChanges?: unknown } }).truncated?.omittedChanges;
  if (cut.length > 0 || (typeof omitted === 'number' && omitted > 0)) {
    throw new RevertRefusedError(idText, cut, 'the event was cut to maxEventBytes, so some earlier values were not stored');
  }

  if (kind === 'delete') {
    if (current !== null) throw new RevertConflictError(idText, ['_id'], 'a document with this id exists again');
    if (changes.length === 0) throw new RevertRefusedError(idText, [], 'the delete event holds no fields (fetchBefore: false)');
    await new model(removedDocument(documentId, changes)).save({ audit });
    result.action = 'create';
    return result;
  }

  if ((model.schema.get(NO_PRE_IMAGE_OPTION as never) as unknown) === true) {
    throw new RevertRefusedError(idText, [], 'the model is audited with fetchBefore: false, so its update events hold no earlier values');
  }
  if (current === null) throw new RevertConflictError(idText, ['_id'], 'the document no longer exists');
  const { set, unset, conflicts } = inverseUpdate(current, changes);
  if (conflicts.length > 0 && !options.force) throw new RevertConflictError(idText, conflicts);
  const update = updateOf(set, unset);
  if (update === null) return result;
  await updateOne(model, { _id }, update, { audit });
  result.action = 'update';
  return result;
}

export interface RestoreOptions {
  reason?: string;
}

/**
 * Writes back the version `versionAt(model, id, at)` rebuilds: the fields it knows are set, the fields the
 * document's events ever named but that version lacks are unset, fields never audited are left alone. A
 * redacted value is kept as the document has it now (it was never stored); when the document must be inserted
 * again, a redacted field refuses the restore.
 */
export async function restore(core: AuditCore, model: string | Model<never>, id: unknown, at: Date, options: RestoreOptions = {}): Promise<RevertResult> {
  const name = modelName(model);
  const documentId = checkId(id);
  if (options === null || typeof options !== 'object') throw new TypeError('koa-audit: restore options must be an object { reason? }');
  const reason = checkReason('restore option', options.reason);
  const version = await versionAt(core, name, documentId, at);
  const m = appModel(core, name, `${name}/${documentId}`);
  const _id = castId(m, documentId);
  const audit = { reason, meta: { restoredTo: at.toISOString() } };
  const current = (await m.collection.findOne({ _id } as never)) as Doc | null;
  const result: RevertResult = { eventId: '', action: 'none', model: name, documentId };
  if (version === null) {
    if (current === null) return result;
    await m.deleteOne({ _id } as Doc, { audit });
    result.action = 'delete';
    return result;
  }
  const leaves = flatten(version, (p) => p !== '_id');
  if (current === null) {
    const redacted = [...leaves].filter(([, v]) => containsRedacted(v)).map(([p]) => p);
    if (redacted.length > 0) throw new RevertRefusedError(`${name}/${documentId}`, redacted, 'redacted values were never stored');
    await new m({ ...version, _id: documentId }).save({ audit });
    result.action = 'create';
    return result;
  }
  const set: Doc = {};
  const unset: Doc = {};
  for (const [path, v] of leaves) if (!containsRedacted(v) && !same(getAt(current, path), v as StoredValue)) set[path] = v;
  // Paths the events named (element paths cut at their array), absent from the version but present now.
  const named = new Set<string>();
  for (const e of await history(core, name, documentId)) {
    for (const c of e.changes ?? []) {
      const loc = locate(current, c.path);
      named.add(loc.arrayPath ?? c.path);
    }
  }
  for (const path of named) {
    if (leaves.has(path) || [...leaves.keys()].some((p) => p.startsWith(`${path}.`) || path.startsWith(`${p}.`))) continue;
    if (getAt(current, path) !== undefined) unset[path] = 1;
  }
  const update = updateOf(set, unset);
  if (update === null) return result;
  await updateOne(m, { _id }, update, { audit });
  result.action = 'update';
  return result;
}
