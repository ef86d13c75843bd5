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
import { isPlainObject, storedKey } from './diff.js';
import type { AuditEvent, Change } from '../core/types.js';

export function modelName(model: string | Model<never>): string {
  if (typeof model === 'string' && model !== '') return model;
  const name = (model as { modelName?: unknown } | null)?.modelName;
  if (typeof name === 'string') return name;
  throw new TypeError('koa-audit: history needs a model name or a mongoose Model');
}

export function checkId(id: unknown): string {
  if (id === undefined || id === null || id === '') throw new TypeError('koa-audit: history needs a document id');
  return documentIdString(id);
}

export interface HistoryScope {
  /** Only the events of this tenant (a tenant-scoped reader). */
  tenant?: string;
}

/** The change events of one document, oldest first (ts, then _id: the order they were accepted in). */
export async function history(core: AuditCore, model: string | Model<never>, id: unknown, scope: HistoryScope = {}): Promise<AuditEvent[]> {
  const filter: Record<string, unknown> = { model: modelName(model), documentId: checkId(id) };
  if (scope.tenant !== undefined) filter.tenant = scope.tenant;
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

export function apply(doc: Record<string, unknown>, changes: readonly Change[]): void {
  for (const c of changes) applyChange(doc, c);
}

type Node = Record<string, unknown>;

/** The element of a subdocument array whose `_id` (stored form) is `id`. */
function elementIndex(arr: unknown[], id: string): number {
  return arr.findIndex((el) => isPlainObject(el) && String(el._id) === id);
}

function applyChange(doc: Node, c: Change): void {
  const segs = c.path.split('.');
  const removing = c.to === null || c.to === undefined;
  let cur: Node = doc;
  for (let i = 0; i < segs.length - 1; i++) {
    const seg = segs[i];
    const next = cur[seg];
    if (Array.isArray(next)) {
      // `items.<id>...`: an element of a subdocument array, by its _id.
      const id = segs[i + 1];
      const at = elementIndex(next, id);
      if (i + 1 === segs.length - 1) {
        if (removing) {
          if (at !== -1) next.splice(at, 1);
        } else if (at !== -1) next[at] = c.to;
        else next.push(c.to);
        return;
      }
      if (at === -1) {
        if (removing) return;
        next.push({ _id: id });
      }
      cur = next[at === -1 ? next.length - 1 : at] as Node;
      i++;
      continue;
    }
    if (!isPlainObject(next)) {
      if (removing) return;
      cur[seg] = {};
    }
    cur = cur[seg] as Node;
  }
  const last = segs[segs.length - 1];
  if (c.added !== undefined && c.to === undefined) {
    // A long array of scalars: what was not removed stays, in order, and what was added is appended.
    const removed = new Set(c.removed.map(storedKey));
    const base = Array.isArray(cur[last]) ? (cur[last] as unknown[]) : [];
    cur[last] = [...base.filter((v) => !removed.has(storedKey(v))), ...c.added];
    return;
  }
  if (removing) delete cur[last];
  else cur[last] = c.to;
}
