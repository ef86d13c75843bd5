/**
 * Document history and `versionAt` (like paper_trail's `version_at`): the change events of one document,
 * oldest first, and the document rebuilt from them as it was at a given time.
 *
 * Values come back in their stored form (dates as ISO strings, ObjectIds as hex, Decimal128 as strings),
 * redacted fields stay `'[REDACTED]'`, and a field whose last change set it to null is left out: the stored
 * form cannot tell an `$unset` from a null.
 */
import type { Model } from 'mongoose';
import type { AuditCore } from '../core/core.js';
import { documentIdString } from './recorder.js';
import { isPlainObject } from './diff.js';
import type { AuditEvent, Change } from '../core/types.js';

function modelName(model: string | Model<never>): string {
  if (typeof model === 'string' && model !== '') return model;
  const name = (model as { modelName?: unknown } | null)?.modelName;
  if (typeof name === 'string') return name;
  throw new TypeError('koa-audit: history needs a model name or a mongoose Model');
}

function checkId(id: unknown): string {
  if (id === undefined || id === null || id === '') throw new TypeError('koa-audit: history needs a document id');
  return documentIdString(id);
}

/** The change events of one document, oldest first (ts, then _id: the order they were accepted in). */
export async function history(core: AuditCore, model: string | Model<never>, id: unknown): Promise<AuditEvent[]> {
  const filter = { model: modelName(model), documentId: checkId(id) };
  // The index { model, documentId, ts: -1, _id: -1 } serves this sort walked backwards.
  return (await core.model.find(filter).sort({ ts: 1, _id: 1 }).lean().exec()) as unknown as AuditEvent[];
}

/** The document as it was at `date`, rebuilt from its events; null when it did not exist then. */
export async function versionAt(core: AuditCore, model: string | Model<never>, id: unknown, date: Date): Promise<Record<string, unknown> | null> {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) throw new TypeError('koa-audit: versionAt needs a valid Date');
  const documentId = checkId(id);
  const events = (await core.model
    .find({ model: modelName(model), documentId, ts: { $lte: date } }, { kind: 1, changes: 1 })
    .sort({ ts: 1, _id: 1 })
    .lean()
    .exec()) as unknown as Pick<AuditEvent, 'kind' | 'changes'>[];
  let doc: Record<string, unknown> | null = null;
  for (const e of events) {
    if (e.kind === 'delete') {
      doc = null;
      continue;
    }
    // An update with no create before it: the document predates auditing; what is known of it is rebuilt.
    if (e.kind === 'create' || doc === null) doc = { _id: documentId };
    apply(doc, e.changes ?? []);
  }
  return doc;
}

function apply(doc: Record<string, unknown>, changes: readonly Change[]): void {
  for (const c of changes) {
    const segs = c.path.split('.');
    let cur: Record<string, unknown> | null = doc;
    for (let i = 0; cur !== null && i < segs.length - 1; i++) {
      if (!isPlainObject(cur[segs[i]])) {
        if (c.to === null) cur = null;
        else cur[segs[i]] = {};
      }
      if (cur !== null) cur = cur[segs[i]] as Record<string, unknown>;
    }
    if (cur === null) continue;
    const last = segs[segs.length - 1];
    if (c.to === null) delete cur[last];
    else cur[last] = c.to;
  }
}
