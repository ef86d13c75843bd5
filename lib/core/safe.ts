/**
 * The safe stored form: turns any JavaScript value into a JSON-like value that every MongoDB-compatible server
 * accepts and that keeps its meaning when read back. It never throws, and it is idempotent: the stored form of
 * a stored value is itself (so a module may store a value that the core stores again).
 *
 * | input                      | stored as                                         |
 * |----------------------------|---------------------------------------------------|
 * | Date                       | ISO string (`'Invalid Date'` when invalid)        |
 * | ObjectId                   | 24-char hex string                                |
 * | Decimal128, BigInt         | decimal string                                    |
 * | Buffer, typed array, Binary| base64 string (capped)                            |
 * | Map                        | object; Set: array                                |
 * | undefined                  | null                                              |
 * | NaN, Infinity, -Infinity   | the strings `'NaN'`, `'Infinity'`, `'-Infinity'`  |
 * | cyclic reference           | `'[Circular]'`                                    |
 * | deeper than `maxDepth`     | `'[Truncated]'`                                   |
 * | key with `.`, `$…`, NUL     | escaped key: `%2E`, `%24`, `%00` (see `unescapeKey`) |
 * | string over `maxString`    | cut, then `'…[truncated N chars]'`, within the cap |
 * | lone UTF-16 surrogate      | U+FFFD                                            |
 * | function, symbol           | `'[Function name]'`, `'Symbol(desc)'`             |
 * | Error                      | `{ name, message }`                               |
 * | object that throws on read | `'[Unreadable: message]'`                         |
 * | secret key (lib/core/redact.ts) | `'[REDACTED]'`                               |
 *
 * With a redactor, every string (keys included) is also scrubbed of the secrets its text holds (tokens,
 * credentials, card numbers: lib/core/scrub.ts) before it is capped, and an Error's message is the one of its
 * structure (lib/core/error-shape.ts), rebuilt without the values of secret paths.
 */
import { binaryBytes, bsonScalar, bsonType, documentData, isMongooseDocument } from './bson.js';
import { shapeError } from './error-shape.js';
import { REDACTED, type Redactor } from './redact.js';
import type { StoredValue } from './types.js';

export interface SafeLimits {
  /** Longest stored string, in UTF-16 code units. */
  maxString: number;
  /** Deepest nesting kept; deeper values become `'[Truncated]'`. */
  maxDepth: number;
  /** Most array items or object keys kept per level. */
  maxItems: number;
}

export const DEFAULT_LIMITS: SafeLimits = { maxString: 4096, maxDepth: 12, maxItems: 1000 };

export const CIRCULAR = '[Circular]';
export const TRUNCATED = '[Truncated]';

/**
 * Cuts a string to at most `max` code units (marker included) without splitting a surrogate pair, and makes it
 * well-formed. Idempotent: a capped string is left as it is, so stored values can safely be stored again.
 */
export function capString(s: string, max: number): string {
  let out = s;
  if (out.length > max) {
    let cut = Math.max(0, max - MARKER_ROOM);
    const c = out.charCodeAt(cut - 1);
    if (c >= 0xd800 && c <= 0xdbff) cut--;
    out = `${out.slice(0, cut)}…[truncated ${s.length - cut} chars]`;
  }
  return out.isWellFormed() ? out : out.toWellFormed();
}

/** Room kept for the `…[truncated N chars]` marker. */
const MARKER_ROOM = 32;

/**
 * Escapes a key so that it has no `.`, no leading `$` and no NUL (`%2E`, `%24`, `%00`). Idempotent, so an
 * escaped key stays as it is when stored again; `unescapeKey` reverses it (a key that literally contained
 * `%2E`, `%24` or `%00` before escaping reads back unescaped too).
 */
export function escapeKey(key: string): string {
  let needs = key.charCodeAt(0) === 36; // '$'
  for (let i = 0; !needs && i < key.length; i++) {
    const c = key.charCodeAt(i);
    needs = c === 46 || c === 0;
  }
  if (!needs) return key;
  let out = '';
  for (let i = 0; i < key.length; i++) {
    const ch = key[i];
    if (ch === '.') out += '%2E';
    else if (ch === '\0') out += '%00';
    else if (ch === '$' && i === 0) out += '%24';
    else out += ch;
  }
  return out;
}

/** The inverse of `escapeKey`. */
export function unescapeKey(key: string): string {
  if (!key.includes('%')) return key;
  return key.replace(/%(2E|00|24)/g, (_m, code: string) => (code === '2E' ? '.' : code === '00' ? '\0' : '$'));
}

interface Walk {
  limits: SafeLimits;
  redactor: Redactor | null;
  /** Objects on the current path, to tell a cycle from a shared reference. */
  path: object[];
}

/** Converts `value` to its safe stored form, redacting values under secret keys when a redactor is given. */
export function toStored(value: unknown, redactor: Redactor | null = null, limits: SafeLimits = DEFAULT_LIMITS): StoredValue {
  return convert(value, { limits, redactor, path: [] }, 0);
}

/** Room scrubbing may need before capping: a secret cut in half would no longer be recognized. */
const SCRUB_ROOM = 512;

/** A string scrubbed (with a redactor) and capped. */
function text(s: string, w: Walk, max: number): string {
  if (w.redactor === null) return capString(s, max);
  return capString(w.redactor.text(s.length > max + SCRUB_ROOM ? s.slice(0, max + SCRUB_ROOM) : s), max);
}

function convert(value: unknown, w: Walk, depth: number): StoredValue {
  switch (typeof value) {
    case 'string':
      return text(value, w, w.limits.maxString);
    case 'number':
      return Number.isFinite(value) ? value : String(value);
    case 'boolean':
      return value;
    case 'undefined':
      return null;
    case 'bigint':
      return value.toString();
    case 'symbol':
      return capString(value.toString(), w.limits.maxString);
    case 'function':
      return capString(`[Function ${value.name || 'anonymous'}]`, w.limits.maxString);
  }
  if (value === null) return null;
  try {
    return convertObject(value as object, w, depth);
  } catch (err) {
    // A throwing getter, a hostile Proxy: recording an event must never throw, so the value says what happened.
    return unreadable(err);
  }
}

/** What is stored for a value that threw when read: the message of what it threw, when that can be read. */
export function unreadable(err: unknown): string {
  let why = 'error';
  try {
    if (err instanceof Error && typeof err.message === 'string') why = err.message;
  } catch {
    // the message itself throws: 'error' it is
  }
  return capString(`[Unreadable: ${why}]`, 256);
}

/** Marks an entry whose read threw (see convertObjectEntries). */
class UnreadableValue {
  constructor(readonly err: unknown) {}
}

function convertObject(obj: object, w: Walk, depth: number): StoredValue {
  if (obj instanceof UnreadableValue) return unreadable(obj.err);
  if (obj instanceof Date) return Number.isNaN(obj.getTime()) ? 'Invalid Date' : obj.toISOString();
  const bsontype = bsonType(obj);
  if (bsontype !== undefined) return fromBson(obj, bsontype, w);
  if (ArrayBuffer.isView(obj)) return bytesToBase64(obj, w.limits.maxString);
  if (obj instanceof ArrayBuffer) return bytesToBase64(new Uint8Array(obj), w.limits.maxString);
  if (obj instanceof RegExp) return capString(obj.toString(), w.limits.maxString);
  if (obj instanceof Error) {
    if (w.redactor === null) return { name: capString(obj.name, 256), message: capString(String(obj.message), w.limits.maxString) };
    const shaped = shapeError(obj, w.redactor);
    return { name: capString(shaped.name, 256), message: text(shaped.message, w, w.limits.maxString) };
  }

  if (w.path.includes(obj)) return CIRCULAR;
  if (depth >= w.limits.maxDepth) return TRUNCATED;

  // A mongoose document or subdocument: store its data, not its internals.
  const plain = isMongooseDocument(obj) ? documentData(obj) : obj;

  w.path.push(obj);
  try {
    if (Array.isArray(plain) || plain instanceof Set) return convertList(plain, w, depth);
    if (plain instanceof Map) return convertEntries([...plain.entries()], w, depth);
    return convertObjectEntries(plain, w, depth);
  } finally {
    w.path.pop();
  }
}

/**
 * The own enumerable entries of an object, each value read on its own: a getter that throws spoils its own entry
 * (stored as `'[Unreadable: …]'`), not its siblings. No [key, value] pair per entry: this runs for every object
 * of every event (its `http`, `actor`, `meta`...).
 */
function convertObjectEntries(obj: object, w: Walk, depth: number): { [key: string]: StoredValue } {
  const keys = Object.keys(obj);
  const keep = keys.length > w.limits.maxItems ? w.limits.maxItems - 1 : keys.length;
  const out: { [key: string]: StoredValue } = {};
  for (let i = 0; i < keep; i++) {
    let item: unknown;
    try {
      item = (obj as Record<string, unknown>)[keys[i]];
    } catch (err) {
      item = new UnreadableValue(err);
    }
    storeEntry(out, keys[i], item, w, depth);
  }
  if (keep < keys.length) out['…'] = TRUNCATED;
  return out;
}

function storeEntry(out: { [key: string]: StoredValue }, rawKey: unknown, item: unknown, w: Walk, depth: number): void {
  const key = capString(typeof rawKey === 'string' ? rawKey : String(rawKey), 256);
  const secret = w.redactor !== null && w.redactor.isSecret(key);
  out[escapeKey(w.redactor === null ? key : text(key, w, 256))] = secret ? REDACTED : convert(item, w, depth + 1);
}

/**
 * Over `maxItems`, keeps `maxItems - 1` entries and a `'[Truncated]'` marker: the result is within the limit,
 * so storing it again changes nothing.
 */
function convertList(list: unknown[] | Set<unknown>, w: Walk, depth: number): StoredValue[] {
  const size = Array.isArray(list) ? list.length : list.size;
  const keep = size > w.limits.maxItems ? w.limits.maxItems - 1 : size;
  const out: StoredValue[] = [];
  for (const item of list) {
    if (out.length === keep) break;
    out.push(convert(item, w, depth + 1));
  }
  if (keep < size) out.push(TRUNCATED);
  return out;
}

function convertEntries(entries: [unknown, unknown][], w: Walk, depth: number): { [key: string]: StoredValue } {
  const keep = entries.length > w.limits.maxItems ? w.limits.maxItems - 1 : entries.length;
  const out: { [key: string]: StoredValue } = {};
  for (let i = 0; i < keep; i++) storeEntry(out, entries[i][0], entries[i][1], w, depth);
  if (keep < entries.length) out['…'] = TRUNCATED;
  return out;
}

function fromBson(obj: object, type: string, w: Walk): StoredValue {
  if (type === 'Binary') return bytesToBase64(binaryBytes(obj), w.limits.maxString);
  const v = bsonScalar(obj, type);
  return typeof v === 'number' ? convert(v, w, 0) : capString(v, w.limits.maxString);
}

function bytesToBase64(view: ArrayBufferView, maxString: number): string {
  const bytes = Buffer.from(view.buffer, view.byteOffset, view.byteLength);
  // Cut before encoding: base64 of a huge buffer would be built only to be thrown away.
  const maxBytes = Math.max(0, Math.floor((maxString - MARKER_ROOM) / 4) * 3);
  if (bytes.length <= maxBytes) return bytes.toString('base64');
  return `${bytes.subarray(0, maxBytes).toString('base64')}…[truncated ${bytes.length - maxBytes} bytes]`;
}
