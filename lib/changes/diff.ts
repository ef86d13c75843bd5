/**
 * Field-level diffs between two states of a document, for change events.
 *
 * Embedded documents are walked into dot-joined paths; arrays and every non-plain value (Date, ObjectId,
 * Decimal128, Buffer, ...) are leaves compared as a whole and by value: two Dates of the same instant, two
 * ObjectIds of the same hex, `1.0` and `1.00` as Decimal128, and embedded documents with the same fields in
 * another key order are the same value. A missing field and a null one are the same too: the stored form
 * cannot tell them apart.
 */
import { binaryBytes, bsonScalar, bsonType, documentData, isMongooseDocument } from '../core/bson.js';
import { REDACTED, type Redactor } from '../core/redact.js';
import { toStored, type SafeLimits } from '../core/safe.js';
import type { ArrayChange, Change, StoredValue } from '../core/types.js';

/**
 * Arrays of scalars up to this many elements (before and after) keep `from`/`to` besides `added`/`removed`;
 * longer ones store only the elements that changed.
 */
export const ARRAY_FULL_CAP = 20;

/** Which dot-joined paths a schema audits. */
export type PathFilter = (path: string) => boolean;

/** What turning raw values into change entries needs. */
export interface ChangeContext {
  audited: PathFilter;
  redactor: Redactor;
  limits: SafeLimits;
}

/** A plain object (lean read, `toObject()` output): walked into; anything else is a leaf. */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * A filter from `include` / `exclude` lists: a path is audited when it is not at or under an excluded path,
 * and (with `include`) when it is at or under an included path, or above one (an array holding it, say).
 */
export function pathFilter(include: readonly string[] | null, exclude: readonly string[]): PathFilter {
  const under = (path: string, p: string): boolean => path === p || (path.length > p.length && path.startsWith(p) && path.charCodeAt(p.length) === 46);
  return (path) => {
    if (path === '_id') return false;
    for (let i = 0; i < exclude.length; i++) if (under(path, exclude[i])) return false;
    if (include === null) return true;
    for (let i = 0; i < include.length; i++) if (under(path, include[i]) || under(include[i], path)) return true;
    return false;
  };
}

/** Leaves of `doc` by dot-joined path, in document order; excluded subtrees are skipped. */
export function flatten(doc: Record<string, unknown> | null, audited: PathFilter, prefix = '', out = new Map<string, unknown>()): Map<string, unknown> {
  if (doc === null) return out;
  for (const key of Object.keys(doc)) {
    const value = doc[key];
    if (value === undefined) continue;
    const path = prefix === '' ? key : `${prefix}.${key}`;
    if (!audited(path)) continue;
    if (isPlainObject(value) && Object.keys(value).length > 0) flatten(value, audited, path, out);
    else out.set(path, value);
  }
  return out;
}

/** True when two leaves hold the same value (see the module comment). */
export function sameValue(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === null || a === undefined || b === null || b === undefined) return (a === null || a === undefined) && (b === null || b === undefined);
  if (typeof a !== 'object' || typeof b !== 'object') return typeof a === 'number' && typeof b === 'number' && Number.isNaN(a) && Number.isNaN(b);
  return canonical(a, 0) === canonical(b, 0);
}

const MAX_CANONICAL_DEPTH = 64;

/** A string equal for equal values and different for different ones, type included (a Date is not its ISO string). */
function canonical(v: unknown, depth: number): string {
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'number':
      return Number.isNaN(v) ? 'n:NaN' : `n:${v === 0 ? 0 : v}`;
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      return `n:${v}`;
    case 'undefined':
      return 'null';
    case 'object':
      break;
    default:
      return `?:${String(v)}`;
  }
  if (v === null) return 'null';
  if (depth > MAX_CANONICAL_DEPTH) return '[deep]';
  if (v instanceof Date) return `D:${v.getTime()}`;
  const bsontype = bsonType(v);
  if (bsontype !== undefined) return bsonCanonical(v, bsontype);
  if (ArrayBuffer.isView(v)) return `B:${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')}`;
  if (Array.isArray(v)) return `[${v.map((x) => canonical(x, depth + 1)).join(',')}]`;
  if (v instanceof Map) return objectCanonical([...v.entries()].map(([k, x]) => [String(k), x]), depth);
  if (isMongooseDocument(v)) return canonical(documentData(v), depth);
  return objectCanonical(Object.entries(v), depth);
}

function objectCanonical(entries: [string, unknown][], depth: number): string {
  const kept = entries.filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${kept.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x, depth + 1)}`).join(',')}}`;
}

function bsonCanonical(v: object, type: string): string {
  switch (type) {
    case 'ObjectId':
    case 'ObjectID':
      return `O:${bsonScalar(v, type)}`;
    case 'Decimal128':
      return `n:${normalizeDecimal(String(v))}`;
    case 'Int32':
    case 'Double':
    case 'Long':
      return `n:${bsonScalar(v, type)}`;
    case 'Binary':
      return `B:${Buffer.from(binaryBytes(v)).toString('base64')}`;
    default:
      return `${type}:${bsonScalar(v, type)}`;
  }
}

/** `1.50` and `1.5`, `-0` and `0`: the same decimal value. Exponent forms are kept as they are. */
const PLAIN_DECIMAL = /^-?\d+(\.\d+)?$/;
const TRAILING_ZEROS = /\.?0+$/;
const LEADING_ZEROS = /^(-?)0+(?=\d)/;

function normalizeDecimal(s: string): string {
  if (!PLAIN_DECIMAL.test(s)) return s;
  let out = s;
  if (out.includes('.')) out = out.replace(TRAILING_ZEROS, '');
  out = out.replace(LEADING_ZEROS, '$1');
  return out === '-0' ? '0' : out;
}

function entry(rawPath: string, from: unknown, to: unknown, c: ChangeContext): Change {
  // A path is text too: a Mixed field keyed by tokens would otherwise store them in the path.
  const path = c.redactor.text(rawPath);
  // A dotted path is secret when one of its segments is (the redactor judges segments): only what happened to it is
  // kept (set, removed, or changed), never a value.
  if (c.redactor.isSecret(rawPath)) return redactedEntry(path, from, to);
  return { path, from: stored(from, c), to: stored(to, c) };
}

function redactedEntry(path: string, from: unknown, to: unknown): Change {
  const had = from !== undefined && from !== null;
  const has = to !== undefined && to !== null;
  if (had && has) return { path, from: REDACTED, to: REDACTED, changed: true };
  return { path, from: had ? REDACTED : null, to: has ? REDACTED : null };
}

function stored(v: unknown, c: ChangeContext): StoredValue {
  return v === undefined ? null : toStored(v, c.redactor, c.limits);
}

/**
 * The changes from `before` to `after` (either may be null: a create lists every field with `from: null`,
 * a delete every field with `to: null`). Paths of `before` come first, in document order, then new ones.
 */
export function diffDocuments(before: Record<string, unknown> | null, after: Record<string, unknown> | null, c: ChangeContext): Change[] {
  const a = flatten(before, c.audited);
  const b = flatten(after, c.audited);
  const out: Change[] = [];
  for (const [path, from] of a) {
    const to = b.get(path);
    if (sameValue(from, to)) continue;
    const elementwise = Array.isArray(from) && Array.isArray(to) ? arrayChanges(path, from, to, c) : null;
    if (elementwise !== null) out.push(...elementwise);
    else out.push(entry(path, from, to, c));
  }
  for (const [path, to] of b) {
    if (!a.has(path) && !sameValue(undefined, to)) out.push(entry(path, undefined, to, c));
  }
  return out;
}

/**
 * Without a pre-image (`fetchBefore: false`): the fields under `paths` as they are in `after`, each with
 * `from: null`. A path absent from `after` (an `$unset`) is listed with `to: null`.
 */
export function listFields(after: Record<string, unknown> | null, paths: readonly string[] | null, c: ChangeContext): Change[] {
  if (paths === null) return diffDocuments(null, after, c);
  const out: Change[] = [];
  const seen = new Set<string>();
  for (const p of paths) {
    if (!c.audited(p)) continue;
    const value = getPath(after, p);
    const leaves = isPlainObject(value) && Object.keys(value).length > 0 ? flatten(value, c.audited, p) : new Map([[p, value]]);
    for (const [path, v] of leaves) {
      if (seen.has(path) || !c.audited(path)) continue;
      seen.add(path);
      out.push(entry(path, null, v, c));
    }
  }
  return out;
}

/** The value at a dot-joined path of a plain document, or undefined. */
export function getPath(doc: Record<string, unknown> | null, path: string): unknown {
  let cur: unknown = doc;
  for (const seg of path.split('.')) {
    if (!isPlainObject(cur)) return undefined;
    cur = cur[seg];
  }
  return cur;
}

/** A stable text of a stored value: equal values, equal texts (keys sorted). */
export function storedKey(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null';
  if (Array.isArray(v)) return `[${v.map(storedKey).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o).sort().map((k) => `${JSON.stringify(k)}:${storedKey(o[k])}`).join(',')}}`;
}

/** The key of an array element by its `_id` (as documentId strings are made), or null when it has none. */
function elementId(v: unknown): string | null {
  if (!isPlainObject(v) || v._id === undefined || v._id === null) return null;
  const s = toStored(v._id);
  const id = typeof s === 'string' ? s : typeof s === 'number' || typeof s === 'boolean' ? String(s) : JSON.stringify(s);
  // A dotted or empty id cannot be one segment of a path.
  return id === '' || id.includes('.') ? null : id;
}

function isScalar(v: unknown): boolean {
  return v === null || typeof v !== 'object' || (!Array.isArray(v) && !isPlainObject(v));
}

/**
 * An array change element by element, or null when the array is best recorded whole (a secret path, mixed
 * elements, subdocuments without distinct `_id`s, or a reorder the elements alone cannot tell).
 *   - scalars and ObjectIds: one change with `added`/`removed` (set semantics), see ArrayChange;
 *   - subdocuments with `_id`: a change per changed field (`items.<id>.qty`), per added element
 *     (`items.<id>`, from null) and per removed one (`items.<id>`, to null); rebuilt in order as long as
 *     the elements kept their order and new ones were appended, which is checked.
 */
function arrayChanges(path: string, from: unknown[], to: unknown[], c: ChangeContext): Change[] | null {
  if (c.redactor.isSecret(path)) return null;
  if (from.every(isScalar) && to.every(isScalar)) return [scalarArrayChange(path, from, to, c)];
  const fromIds = from.map(elementId);
  const toIds = to.map(elementId);
  if (fromIds.includes(null) || toIds.includes(null)) return null;
  const before = new Map<string, Record<string, unknown>>();
  const after = new Map<string, Record<string, unknown>>();
  from.forEach((el, i) => before.set(fromIds[i] as string, el as Record<string, unknown>));
  to.forEach((el, i) => after.set(toIds[i] as string, el as Record<string, unknown>));
  if (before.size !== from.length || after.size !== to.length) return null;
  const kept = (fromIds as string[]).filter((id) => after.has(id));
  const appended = (toIds as string[]).filter((id) => !before.has(id));
  if ([...kept, ...appended].join('\n') !== (toIds as string[]).join('\n')) return null;
  const out: Change[] = [];
  const inner: ChangeContext = { audited: (p) => p !== '_id' && c.audited(`${path}.${p}`), redactor: c.redactor, limits: c.limits };
  for (const id of fromIds as string[]) {
    const b = before.get(id) as Record<string, unknown>;
    const a = after.get(id);
    if (a === undefined) out.push(entry(`${path}.${id}`, b, null, c));
    else for (const ch of diffDocuments(b, a, inner)) out.push({ ...ch, path: `${path}.${id}.${ch.path}` });
  }
  for (const id of appended) out.push(entry(`${path}.${id}`, null, after.get(id), c));
  return out;
}

function scalarArrayChange(path: string, from: unknown[], to: unknown[], c: ChangeContext): ArrayChange {
  const sa = from.map((v) => stored(v, c));
  const sb = to.map((v) => stored(v, c));
  const ka = sa.map(storedKey);
  const kb = sb.map(storedKey);
  const inA = new Set(ka);
  const inB = new Set(kb);
  const removed: StoredValue[] = [];
  const added: StoredValue[] = [];
  const seen = new Set<string>();
  ka.forEach((k, i) => {
    if (!inB.has(k) && !seen.has(k)) (seen.add(k), removed.push(sa[i]));
  });
  kb.forEach((k, i) => {
    if (!inA.has(k) && !seen.has(k)) (seen.add(k), added.push(sb[i]));
  });
  // What a rebuild does (keep what was not removed, append what was added) must give the new array exactly.
  const addedKeys = new Set(added.map(storedKey));
  const rebuilt = [...ka.filter((k) => inB.has(k)), ...kb.filter((k) => addedKeys.has(k))];
  const exact = rebuilt.length === kb.length && rebuilt.every((k, i) => k === kb[i]);
  const change: ArrayChange = { path, added, removed };
  if (!exact || (sa.length <= ARRAY_FULL_CAP && sb.length <= ARRAY_FULL_CAP)) {
    change.from = sa;
    change.to = sb;
  }
  return change;
}
