/**
 * `doc.save()` (and so `Model.create`): a new document is a create with every field; an existing one reads
 * its modified paths before the write and after it, and records the difference.
 */
import type { ClientSession } from 'mongoose';
import { diffDocuments, listFields } from './diff.js';
import {
  documentIdString, emit, emitTransition, narrowProjection, plainOf, readByIds,
  type AuditedModel, type Doc, type SchemaAudit, type Target,
} from './recorder.js';
import { cutAtArray, topLevelProjection } from './update-paths.js';
import { callNote, inNote } from './call-note.js';
import type { AuditNote } from '../core/types.js';

/** A document as the save hooks see it. */
export interface AuditedDocument {
  _id: unknown;
  isNew: boolean;
  $isSubdocument?: boolean;
  constructor: unknown;
  directModifiedPaths(): string[];
  $session(): ClientSession | null;
  /** Mongoose keeps the options of the save under way here. */
  $__?: { saveOptions?: unknown };
}

interface SaveState {
  isNew: boolean;
  paths: string[];
  projection: object | null;
  before: Doc | null;
  note: AuditNote | undefined;
}

const saveStates = new WeakMap<object, SaveState>();

function modelOfDoc(doc: AuditedDocument): AuditedModel {
  return doc.constructor as AuditedModel;
}

export async function preSave(s: SchemaAudit, doc: AuditedDocument): Promise<void> {
  if (doc.$isSubdocument === true) return;
  const model = modelOfDoc(doc);
  if (!s.auditsModel(model.modelName)) return;
  const note = callNote(doc.$__?.saveOptions);
  if (s.core.blocking) await s.core.waitForRoom();
  if (doc.isNew) {
    saveStates.set(doc, { isNew: true, paths: [], projection: null, before: null, note });
    return;
  }
  const paths = [...new Set(doc.directModifiedPaths().map(cutAtArray))];
  const projection = narrowProjection(s, topLevelProjection(paths));
  let before: Doc | null = null;
  if (s.fetchBefore && paths.length > 0) {
    before = (await readByIds(model, [doc._id], projection, doc.$session())).get(documentIdString(doc._id)) ?? null;
  }
  saveStates.set(doc, { isNew: false, paths, projection, before, note });
}

export function postSave(s: SchemaAudit, doc: AuditedDocument): Promise<void> {
  const st = saveStates.get(doc);
  if (st === undefined) return Promise.resolve();
  saveStates.delete(doc);
  return inNote(st.note, () => recordSave(s, doc, st));
}

async function recordSave(s: SchemaAudit, doc: AuditedDocument, st: SaveState): Promise<void> {  const model = modelOfDoc(doc);
  const t: Target = { modelName: model.modelName, collectionName: model.collection.collectionName, operation: 'save' };
  const id = documentIdString(doc._id);
  if (st.isNew) return emit(s, t, 'create', id, diffDocuments(null, plainOf(doc), s.change), undefined, plainOf(doc));
  if (st.paths.length === 0) {
    if (s.recordNoop) await emit(s, t, 'update', id, [], undefined, plainOf(doc));
    return;
  }
  if (!s.fetchBefore) {
    const changes = listFields(plainOf(doc), st.paths, s.change);
    if (changes.length > 0 || s.recordNoop) await emit(s, t, 'update', id, changes, undefined, plainOf(doc));
    return;
  }
  const after = (await readByIds(model, [doc._id], st.projection, doc.$session())).get(id) ?? null;
  await emitTransition(s, t, id, st.before ?? {}, after, plainOf(doc));
}
