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
import { createHash } from 'node:crypto';

type Tagged = { _bsontype?: unknown };

function numberForm(n: number): string {
  if (Number.isFinite(n)) return Object.is(n, -0) ? '0' : JSON.stringify(n);
  return `{"$num":"${String(n)}"}`;
}

function stringForm(s: string): string {
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

function write(v: unknown, out: string[]): void {
  switch (typeof v) {
    case 'string':
      out.push(stringForm(v));
      return;
    case 'number':
      out.push(numberForm(v));
      return;
    case 'boolean':
      out.push(v ? 'true' : 'false');
      return;
    case 'bigint':
      out.push(v.toString());
      return;
    case 'undefined':
      out.push('null');
      return;
    case 'object':
      break;
    default:
      out.push(stringForm(String(v)));
      return;
  }
  if (v === null) {
    out.push('null');
    return;
  }
  if (v instanceof Date) {
    out.push(`{"$date":"${Number.isNaN(v.getTime()) ? 'Invalid Date' : v.toISOString()}"}`);
    return;
  }
  if (Array.isArray(v)) {
    out.push('[');
    for (let i = 0; i < v.length; i++) {
      if (i > 0) out.push(',');
      write(v[i], out);
    }
    out.push(']');
    return;
  }
  if ((v as Tagged)._bsontype !== undefined) {
    const tagged = bsonForm(v as Tagged & Record<string, unknown>);
    if (tagged !== undefined) {
      out.push(tagged);
      return;
    }
  }
  const obj = v as Record<string, unknown>;
  const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
  out.push('{');
  for (let i = 0; i < keys.length; i++) {
    if (i > 0) out.push(',');
    out.push(stringForm(keys[i]), ':');
    write(obj[keys[i]], out);
  }
  out.push('}');
}

/** The canonical form of any stored value (see the table above). */
export function canonical(value: unknown): string {
  const out: string[] = [];
  write(value, out);
  return out.join('');
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
  const chain = doc.chain as Record<string, unknown> | undefined;
  if (chain === null || typeof chain !== 'object') return canonical(doc);
  const { hash: _omitted, ...rest } = chain;
  return canonical({ ...doc, chain: rest });
}

/** SHA-256 (lowercase hex) of the canonical event without `chain.hash`. */
export function eventHash(doc: Record<string, unknown>): string {
  return createHash('sha256').update(hashInput(doc), 'utf8').digest('hex');
}
