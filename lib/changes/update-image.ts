/**
 * The post-image of an operator update computed from its pre-image, for the operators whose result is certain,
 * so that an audited `updateOne` needs no read after its write (see update-one.ts).
 *
 * Both images, and the update's values, are in the form a read of the collection gives (numbers promoted to
 * JavaScript numbers), so that the computed image is the one a read-back would return.
 *
 * Certain: `$set`, `$unset`, `$inc` (Int32, Double, Long; non-zero), `$push` (a value, or `$each` alone),
 * `$addToSet` and `$pull` of plain scalars, and `$setOnInsert` (ignored: never an upsert here). Anything else
 * is refused before the write (`certainUpdate`), or, when only the document's values make it unsure (a
 * Decimal128 to increment, a path through a non-object, two new fields at one level whose order servers
 * choose), `postImage` returns null and the caller reads the document back instead.
 */
import { mongo } from 'mongoose';
import { bsonType as bsonTypeOf } from '../core/bson.js';
import { isPlainObject } from './diff.js';

type Doc = Record<string, unknown>;

const OPERATORS = new Set(['$set', '$unset', '$inc', '$push', '$addToSet', '$pull', '$setOnInsert']);
const DIGITS = /^\d+$/;

/** Is the path one plain field path (no array position, no positional operator, not `_id`)? */
function plainPath(path: string): boolean {
  if (path === '' || path === '_id' || path.startsWith('_id.')) return false;
  for (const seg of path.split('.')) {
    if (seg === '' || seg.charCodeAt(0) === 36 /* $ */ || DIGITS.test(seg)) return false;
  }
  return true;
}

function isNumber(v: unknown): boolean {
  if (typeof v === 'number') return true;
  const t = bsonType(v);
  return t === 'Int32' || t === 'Double' || t === 'Long';
}

function isZero(v: unknown): boolean {
  if (typeof v === 'number') return v === 0;
  const t = bsonType(v);
  if (t === 'Int32' || t === 'Double') return (v as { value: number }).value === 0;
  if (t === 'Long') return (v as mongo.BSON.Long).isZero();
  return false;
}

/** A scalar whose equality to an array element is certain without a collation: numbers, booleans, null, dates, ObjectIds; strings when no collation applies. */
function simpleScalar(v: unknown, strings: boolean): boolean {
  if (v === null || typeof v === 'boolean') return true;
  if (typeof v === 'string') return strings;
  if (typeof v === 'number') return !Number.isNaN(v);
  if (v instanceof Date) return true;
  const t = bsonType(v);
  if (t === 'Int32' || t === 'Double') return !Number.isNaN((v as { value: number }).value);
  return t === 'Long' || t === 'ObjectId' || t === 'ObjectID';
}

function hasDollarKey(v: unknown): boolean {
  return isPlainObject(v) && Object.keys(v).some((k) => k.charCodeAt(0) === 36);
}

/**
 * True when the update's result can be computed from the pre-image (values permitting). `strings`: string
 * equality is plain (no collation on the write nor on the collection), for `$addToSet` and `$pull`.
 * Bare fields (mongoose's implicit `$set`, before casting) count as `$set`.
 */
export function certainUpdate(update: unknown, strings: boolean): boolean {
  if (!isPlainObject(update)) return false;
  const paths: string[] = [];
  for (const op of Object.keys(update)) {
    const arg = update[op];
    if (op.charCodeAt(0) !== 36) {
      if (!plainPath(op)) return false;
      paths.push(op);
      continue;
    }
    if (!OPERATORS.has(op) || !isPlainObject(arg)) return false;
    for (const path of Object.keys(arg)) {
      if (!plainPath(path)) return false;
      paths.push(path);
      const v = arg[path];
      switch (op) {
        case '$inc':
          // FerretDB counts an increment by zero as a modification, MongoDB does not: the server answers.
          if (!isNumber(v) || isZero(v)) return false;
          break;
        case '$push':
          if (hasDollarKey(v) && !(Object.keys(v as Doc).length === 1 && Array.isArray((v as Doc).$each))) return false;
          break;
        case '$addToSet': {
          const each = isPlainObject(v) && Object.keys(v).length === 1 && Array.isArray(v.$each) ? (v.$each as unknown[]) : [v];
          if (!each.every((x) => simpleScalar(x, strings))) return false;
          break;
        }
        case '$pull':
          if (!simpleScalar(v, strings)) return false;
          break;
        default:
      }
    }
  }
  if (paths.length === 0) return false;
  // Two operators on one path, or on a path and one under it, is a server error: let the server say it.
  const sorted = [...paths].sort();
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1];
    const b = sorted[i];
    if (a === b || (b.startsWith(a) && b.charCodeAt(a.length) === 46)) return false;
  }
  return true;
}

/** The top-level fields an update names (its pre-image projection), `_id` and `$setOnInsert`'s (unchanged, read as the usual path reads them) included. */
export function topFields(update: Doc): Record<string, 1> {
  const out: Record<string, 1> = { _id: 1 };
  for (const op of Object.keys(update)) {
    const arg = update[op];
    if (op.charCodeAt(0) !== 36) out[op.split('.')[0]] = 1;
    else if (isPlainObject(arg)) for (const p of Object.keys(arg)) out[p.split('.')[0]] = 1;
  }
  return out;
}

/** Deep copy of plain objects and arrays of a typed document (BSON values are immutable and shared). */
function copy(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(copy);
  if (isPlainObject(v)) {
    const out: Doc = {};
    for (const k of Object.keys(v)) out[k] = copy(v[k]);
    return out;
  }
  return v;
}

class Unsure extends Error {}

function bsonType(v: unknown): string | undefined {
  return v !== null && typeof v === 'object' ? bsonTypeOf(v) : undefined;
}

interface Walk {
  /** The parent object of the path's last segment (created as needed when `create`). */
  parent: Doc | null;
  key: string;
}

function walk(doc: Doc, path: string, create: boolean, fresh: Map<Doc, number>): Walk {
  const segs = path.split('.');
  let cur: Doc = doc;
  for (let i = 0; i < segs.length - 1; i++) {
    const next = cur[segs[i]];
    if (next === undefined) {
      if (!create) return { parent: null, key: segs[segs.length - 1] };
      const made: Doc = {};
      added(cur, segs[i], fresh);
      cur[segs[i]] = made;
      cur = made;
    } else if (isPlainObject(next)) cur = next;
    else throw new Unsure(); // through an array, a scalar or null: an error or array semantics
  }
  return { parent: cur, key: segs[segs.length - 1] };
}

/** Notes a field new in `parent`: servers order several new fields of one object themselves. */
function added(parent: Doc, key: string, fresh: Map<Doc, number>): void {
  void key;
  const n = (fresh.get(parent) ?? 0) + 1;
  if (n > 1) throw new Unsure();
  fresh.set(parent, n);
}

function isUnsafeNumber(v: unknown): boolean {
  return typeof v === 'number' && Number.isInteger(v) && !Number.isSafeInteger(v);
}

/**
 * `a + b` as the server computes it, on promoted numbers: exact while integers stay within 2^53 (beyond it,
 * whether a Long or a double results is the server's), IEEE addition as soon as a double is involved.
 */
function sum(a: unknown, b: unknown): unknown {
  if (typeof a !== 'number' || typeof b !== 'number' || Number.isNaN(a) || Number.isNaN(b)) throw new Unsure();
  const r = a + b;
  if ((Number.isInteger(a) && Number.isInteger(b) && !Number.isSafeInteger(r)) || isUnsafeNumber(a) || isUnsafeNumber(b)) throw new Unsure();
  // No change of value: whether the server calls it a modification depends on types a read does not show.
  if (r === a) throw new Unsure();
  return r;
}

/** Equality of an array element to a simple scalar as the server compares them (numbers across types). */
function sameElement(el: unknown, v: unknown): boolean {
  // An element that is an array: whether `$pull` looks into it is the server's business.
  if (Array.isArray(el)) throw new Unsure();
  const t = bsonType(el);
  if (el === undefined || t === 'Decimal128' || t === 'Long' || t === 'Int32' || t === 'Double' || t === 'BSONSymbol' || t === 'Symbol') throw new Unsure();
  if (typeof v === 'number') {
    if (isUnsafeNumber(v) || isUnsafeNumber(el) || Number.isNaN(el)) throw new Unsure();
    return el === v;
  }
  if (v === null) return el === null;
  if (typeof v === 'string' || typeof v === 'boolean') return el === v;
  if (v instanceof Date) return el instanceof Date && el.getTime() === v.getTime();
  const tv = bsonType(v);
  if (tv === 'ObjectId' || tv === 'ObjectID') return (t === 'ObjectId' || t === 'ObjectID') && (el as mongo.BSON.ObjectId).equals(v as mongo.BSON.ObjectId);
  throw new Unsure();
}

function eachOf(v: unknown): unknown[] {
  return isPlainObject(v) && Object.keys(v).length === 1 && Array.isArray(v.$each) ? v.$each : [v];
}

/**
 * The document after `update` (its values as a read would return them) given the one before it (at least the
 * update's top-level fields), or null when the result is not certain. `pre` is not modified.
 */
export function postImage(pre: Doc, update: Doc): Doc | null {
  const doc = copy(pre) as Doc;
  const fresh = new Map<Doc, number>();
  try {
    for (const op of Object.keys(update)) {
      const arg = update[op] as Doc;
      if (op === '$setOnInsert') continue;
      for (const path of Object.keys(arg)) {
        const v = arg[path];
        switch (op) {
          case '$set': {
            const w = walk(doc, path, true, fresh);
            const parent = w.parent as Doc;
            if (parent[w.key] === undefined) added(parent, w.key, fresh);
            parent[w.key] = copy(v);
            break;
          }
          case '$unset': {
            const w = walk(doc, path, false, fresh);
            if (w.parent !== null) delete w.parent[w.key];
            break;
          }
          case '$inc': {
            const w = walk(doc, path, true, fresh);
            const parent = w.parent as Doc;
            const cur = parent[w.key];
            if (cur === undefined) {
              added(parent, w.key, fresh);
              parent[w.key] = v;
            } else parent[w.key] = sum(cur, v);
            break;
          }
          case '$push':
          case '$addToSet': {
            const w = walk(doc, path, true, fresh);
            const parent = w.parent as Doc;
            const cur = parent[w.key];
            if (cur !== undefined && !Array.isArray(cur)) throw new Unsure();
            const arr = (cur as unknown[] | undefined) ?? [];
            if (cur === undefined) {
              added(parent, w.key, fresh);
              parent[w.key] = arr;
            }
            for (const x of eachOf(v)) {
              if (op === '$addToSet' && arr.some((el) => sameElement(el, x))) continue;
              arr.push(copy(x));
            }
            break;
          }
          case '$pull': {
            const w = walk(doc, path, false, fresh);
            if (w.parent === null) break;
            const cur = w.parent[w.key];
            if (cur === undefined) break;
            if (!Array.isArray(cur)) throw new Unsure();
            w.parent[w.key] = cur.filter((el) => !sameElement(el, v));
            break;
          }
          default:
            throw new Unsure();
        }
      }
    }
  } catch (err) {
    if (err instanceof Unsure) return null;
    throw err;
  }
  return doc;
}
