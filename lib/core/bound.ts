/**
 * The size bound of one event: every event is cut to `maxEventBytes` (BSON) before it is accepted, so that no
 * single event can exceed what a server takes (16 MiB) and stop delivery. What is cut is said in the event:
 * `truncated: { bytes, fields }` keeps the original size of the event and of each part that was reduced.
 *
 * Parts are reduced in this order, until the event fits: `changes` (changes that fit are kept whole, the
 * values of the others become `'[Truncated: N bytes]'` with `truncated: true` on the change, and what does
 * not fit even so is left out, counted in `truncated.omittedChanges`), `summary` (filter and update),
 * `meta`, `http.requestBody`, `error`. An event that still does not fit keeps only its identifying fields.
 */
import { mongo } from 'mongoose';
import { capString } from './safe.js';
import type { StoredDoc } from './types.js';

export const DEFAULT_MAX_EVENT_BYTES = 2 * 1024 * 1024;
/** Room kept for the `truncated` field and the markers. */
const SLACK = 4 * 1024;
/** A value this small is kept as it is: its marker would be about as big. */
const SMALL = 64;

export interface Truncation {
  /** The BSON size of the event as it was built. */
  bytes: number;
  /** The BSON size of each reduced part, by name (`changes`, `summary`, `meta`, `http.requestBody`, `error`). */
  fields: Record<string, number>;
  omittedChanges?: number;
}

const PARTS = ['changes', 'summary', 'meta', 'http.requestBody', 'error'] as const;
type Part = (typeof PARTS)[number];

/** The BSON size of a value, as a field of a document; Infinity when it cannot be serialized at all. */
export function bsonSize(value: unknown): number {
  try {
    return mongo.BSON.calculateObjectSize({ v: value } as mongo.Document) - 5;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

export function bsonDocumentSize(doc: StoredDoc): number {
  try {
    return mongo.BSON.calculateObjectSize(doc as mongo.Document);
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

export const truncatedMarker = (bytes: number): string => `[Truncated: ${Number.isFinite(bytes) ? bytes : 'unknown'} bytes]`;

/**
 * The event within `maxBytes`, and its change paths within `maxString`. Returns `doc` itself when it fits
 * (the common case costs one walk that only adds up lengths), else a reduced copy.
 */
export function boundEvent(doc: StoredDoc, maxBytes: number, maxString: number): StoredDoc {
  capPaths(doc, maxString);
  if (upperBound(doc, 0) <= maxBytes) return doc;
  const size = bsonDocumentSize(doc);
  if (size <= maxBytes) return doc;
  return reduce(doc, size, maxBytes);
}

function capPaths(doc: StoredDoc, maxString: number): void {
  const changes = doc.changes;
  if (!Array.isArray(changes)) return;
  for (const c of changes) {
    if (c !== null && typeof c === 'object' && typeof (c as { path?: unknown }).path === 'string') {
      const path = (c as { path: string }).path;
      if (path.length > maxString) (c as { path: string }).path = capString(path, maxString);
    }
  }
}

function getPart(doc: StoredDoc, part: Part): unknown {
  if (part !== 'http.requestBody') return doc[part];
  const http = doc.http;
  return http !== null && typeof http === 'object' ? (http as Record<string, unknown>).requestBody : undefined;
}

function setPart(doc: StoredDoc, part: Part, value: unknown): void {
  if (part !== 'http.requestBody') doc[part] = value;
  else doc.http = { ...(doc.http as Record<string, unknown>), requestBody: value };
}

function reduce(original: StoredDoc, size: number, maxBytes: number): StoredDoc {
  const doc: StoredDoc = { ...original };
  const room = Math.max(0, maxBytes - SLACK);
  const t: Truncation = { bytes: size, fields: {} };
  let total = size;
  for (const part of PARTS) {
    if (total <= room) break;
    const value = getPart(doc, part);
    if (value === undefined) continue;
    const partSize = bsonSize(value);
    const budget = Math.max(0, room - (total - partSize));
    let reduced: unknown;
    if (part === 'changes' && Array.isArray(value)) {
      const r = reduceChanges(value, budget);
      reduced = r.kept;
      if (r.omitted > 0) t.omittedChanges = r.omitted;
    } else if (part === 'summary' && value !== null && typeof value === 'object') {
      const s = value as Record<string, unknown>;
      reduced = { filter: truncatedMarker(bsonSize(s.filter)), update: truncatedMarker(bsonSize(s.update)), matched: s.matched ?? null };
    } else if (part === 'error' && value !== null && typeof value === 'object') {
      const e = value as Record<string, unknown>;
      reduced = { name: capString(String(e.name), 256), message: capString(String(e.message), 1024), status: e.status ?? null, stack: null };
    } else {
      reduced = { truncated: true, bytes: partSize };
    }
    setPart(doc, part, reduced);
    t.fields[part] = partSize;
    total = total - partSize + bsonSize(reduced);
  }
  if (!Number.isFinite(total) || total > room) return identifying(original, t);
  doc.truncated = t;
  return doc;
}

/** Changes that fit the budget, in order: whole, else with their values replaced by markers, else left out. */
function reduceChanges(changes: unknown[], budget: number): { kept: unknown[]; omitted: number } {
  const kept: unknown[] = [];
  let used = 5;
  for (let i = 0; i < changes.length; i++) {
    const c = changes[i];
    const whole = bsonSize(c) + 8;
    if (used + whole <= budget) {
      kept.push(c);
      used += whole;
      continue;
    }
    const o = (c !== null && typeof c === 'object' ? c : {}) as Record<string, unknown>;
    const shrink = (v: unknown): unknown => {
      const n = bsonSize(v);
      return n <= SMALL ? v : truncatedMarker(n);
    };
    const marked = { ...o, from: shrink(o.from), to: shrink(o.to), truncated: true };
    const cost = bsonSize(marked) + 8;
    if (used + cost > budget) return { kept, omitted: changes.length - i };
    kept.push(marked);
    used += cost;
  }
  return { kept, omitted: 0 };
}

/** The last resort: what identifies the event, and the fact that the rest was too big. */
export function identifying(doc: StoredDoc, truncated: Truncation | { bytes: number; reason: string }): StoredDoc {
  const out: StoredDoc = {};
  for (const key of ['_id', 'ts', 'kind', 'outcome', 'actor', 'requestId', 'ip', 'userAgent', 'chain']) {
    if (doc[key] !== undefined) out[key] = doc[key];
  }
  for (const key of ['model', 'collectionName', 'documentId', 'operation', 'provider', 'identifier', 'reason', 'tenant']) {
    const v = doc[key];
    if (typeof v === 'string') out[key] = capString(v, 1024);
  }
  out.truncated = truncated;
  return out;
}

/**
 * An upper bound of the BSON size, cheaply: strings count 3 bytes per UTF-16 unit (UTF-8's worst case), every
 * value and key its largest overhead. Only when this exceeds the bound is the exact size computed.
 */
export function upperBound(v: unknown, depth: number): number {
  switch (typeof v) {
    case 'string':
      return v.length * 3 + 8;
    case 'object': {
      if (v === null) return 4;
      if (depth > 100) return Number.POSITIVE_INFINITY;
      if (v instanceof Date) return 12;
      if ((v as { _bsontype?: unknown })._bsontype !== undefined) return 32;
      let n = 8;
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) n += 8 + upperBound(v[i], depth + 1);
        return n;
      }
      for (const k in v as object) n += k.length * 3 + 4 + upperBound((v as Record<string, unknown>)[k], depth + 1);
      return n;
    }
    default:
      return 16;
  }
}
