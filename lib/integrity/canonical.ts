/**
 * The canonical form of a stored event: the bytes its chain hash is computed over. It has to come out the same
 * for the document the writer inserts and for the document a reader gets back from MongoDB (or from the spool,
 * or from an export), so it depends only on what BSON keeps:
 *
 * | value                     | canonical form                                                        |
 * |---------------------------|-----------------------------------------------------------------------|
 * | object                    | `{` keys sorted by UTF-16 code units, `"key":value`, comma-separated `}` |
 * | `undefined` in an object  | the key is left out                                                   |
 * | array                     | `[` items `]`; `undefined` items as `null`                             |
 * | string                    | JSON string of its well-formed form (BSON stores UTF-8: a lone surrogate comes back as U+FFFD) |
 * | finite number             | JSON number (`-0` as `0`; BSON int32, int64 and double all read back as this number) |
 * | NaN, ±Infinity            | `{"$num":"NaN"}`, `{"$num":"Infinity"}`, `{"$num":"-Infinity"}`         |
 * | Date                      | `{"$date":"<ISO 8601 UTC with milliseconds>"}` (invalid: `"Invalid Date"`) |
 * | ObjectId                  | `{"$oid":"<24 lowercase hex>"}`                                        |
 * | Long, Int32, Double       | as the number (a reader with promoteValues off gets these)             |
 * | Decimal128                | `{"$decimal":"<string>"}`; Binary: `{"$binary":"<base64>"}`           |
 * | boolean, null             | `true`, `false`, `null`                                               |
 *
 * A key whose value is `undefined` and a key whose value is `null` differ (the driver stores `undefined` as null);
 * the library never stores `undefined` (lib/core/safe.ts), so the difference never arises for its own events.
 *
 * The hash of an event is SHA-256 (lowercase hex) of the canonical form of the event with `chain.hash` left out
 * (`chain.id`, `chain.seq` and `chain.prev` included, so position and link are covered).
 */
import * as crypto from 'node:crypto';
import { createHash } from 'node:crypto';

type Tagged = { _bsontype?: unknown };

function numberForm(n: number): string {
  // String(n) is JSON's form of a finite number (both are Number::toString), without a stringify call.
  if (Number.isFinite(n)) return Object.is(n, -0) ? '0' : String(n);
  return `{"$num":"${String(n)}"}`;
}

function stringForm(s: string): string {
  // Most values are short printable ASCII, which JSON quotes as they are: a scan is cheaper than a stringify call.
  if (s.length <= 256) {
    let plain = true;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) {
        plain = false;
        break;
      }
    }
    if (plain) return `"${s}"`;
  }
  return JSON.stringify(s.isWellFormed() ? s : s.toWellFormed());
}

function bsonForm(v: Tagged & Record<string, unknown>): string | undefined {
  switch (v._bsontype) {
    case 'ObjectId':
    case 'ObjectID':
      return `{"$oid":"${String((v as unknown as { toHexString(): string }).toHexString())}"}`;
    case 'Long':
      return numberForm((v as unknown as { toNumber(): number }).toNumber());
    case 'Int32':
    case 'Double':
      return numberForm(Number((v as unknown as { valueOf(): unknown }).valueOf()));
    case 'Decimal128':
      return `{"$decimal":${JSON.stringify(String(v))}}`;
    case 'Binary':
      return `{"$binary":"${(v as unknown as { toString(enc: string): string }).toString('base64')}"}`;
    default:
      return undefined;
  }
}

/**
 * The form of a key: most keys are short plain names, looked up in a bounded cache instead of being quoted again
 * for every event (the keys of events repeat; their values do not).
 */
const keyForms = new Map<string, string>();
const MAX_KEY_FORMS = 4096;
function keyForm(k: string): string {
  let f = keyForms.get(k);
  if (f === undefined) {
    f = stringForm(k);
    if (keyForms.size < MAX_KEY_FORMS) keyForms.set(k, f);
  }
  return f;
}

// One string built by concatenation (no list of parts to join): this runs for every event the chain seals.
function write(v: unknown): string {
  switch (typeof v) {
    case 'string':
      return stringForm(v);
    case 'number':
      return numberForm(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      return v.toString();
    case 'undefined':
      return 'null';
    case 'object':
      break;
    default:
      return stringForm(String(v));
  }
  if (v === null) return 'null';
  if (v instanceof Date) return `{"$date":"${Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString()}"}`;
  if (Array.isArray(v)) {
    let out = '[';
    for (let i = 0; i < v.length; i++) out += i > 0 ? `,${write(v[i])}` : write(v[i]);
    return `${out}]`;
  }
  if ((v as Tagged)._bsontype !== undefined) {
    const tagged = bsonForm(v as Tagged & Record<string, unknown>);
    if (tagged !== undefined) return tagged;
  }
  return writeObject(v as Record<string, unknown>, null);
}

/**
 * The keys of the last object seen with each number of keys, and their sorted order: events of one kind have
 * the same keys in the same order, so most objects are sorted by comparing their keys to the last ones'.
 */
const lastKeys: { keys: string[]; sorted: string[] }[] = [];

function sortedKeys(obj: object): string[] {
  const keys = Object.keys(obj);
  const n = keys.length;
  if (n > 32) return keys.sort();
  const last = lastKeys[n];
  if (last !== undefined) {
    let same = true;
    for (let i = 0; i < n; i++) {
      if (keys[i] !== last.keys[i]) {
        same = false;
        break;
      }
    }
    if (same) return last.sorted;
  }
  const sorted = [...keys].sort();
  lastKeys[n] = { keys, sorted };
  return sorted;
}

/** An object, its keys sorted, `undefined` values left out; `skip`: one more key left out (`chain.hash`). */
function writeObject(obj: Record<string, unknown>, skip: string | null): string {
  const keys = sortedKeys(obj);
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    if (k === skip) continue;
    const x = obj[k];
    if (x === undefined) continue;
    out += out.length > 1 ? `,${keyForm(k)}:${write(x)}` : `${keyForm(k)}:${write(x)}`;
  }
  return `${out}}`;
}

/** The canonical form of any stored value (see the table above). */
export function canonical(value: unknown): string {
  return write(value);
}

/** The chain fields of a stored event. */
export interface ChainFields {
  id: string;
  seq: number;
  prev: string | null;
  hash: string;
}

/** The canonical form an event's hash is computed over: the event without `chain.hash`. */
export function hashInput(doc: Record<string, unknown>): string {
  const chain = doc.chain;
  if (chain === null || typeof chain !== 'object') return canonical(doc);
  // As canonical({ ...doc, chain: { ...chain without hash } }) (a plain copy of whatever `chain` is), without the copies.
  const keys = sortedKeys(doc);
  let out = '{';
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    const x = doc[k];
    if (x === undefined) continue;
    const form = k === 'chain' ? writeObject(chain as Record<string, unknown>, 'hash') : write(x);
    out += out.length > 1 ? `,${keyForm(k)}:${form}` : `${keyForm(k)}:${form}`;
  }
  return `${out}}`;
}

// One call instead of a Hash object per event, where this Node has it (20.12+).
const oneShot = (crypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash;

/** SHA-256 (lowercase hex) of the canonical event without `chain.hash`. */
export function eventHash(doc: Record<string, unknown>): string {
  const input = hashInput(doc);
  return oneShot !== undefined ? oneShot('sha256', input, 'hex') : createHash('sha256').update(input, 'utf8').digest('hex');
}
