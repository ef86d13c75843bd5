/**
 * What the library knows about BSON and mongoose values, in one place: the stored-value walker (safe.ts), the
 * diff (changes/diff.ts) and the recorder ask here instead of each carrying its own knowledge.
 */

/** A mongoose document or subdocument, as far as the library needs one. */
export interface MongooseDocumentLike {
  toObject(options: object): unknown;
  $__: unknown;
}

/** The BSON type name of a driver value (`ObjectId`, `Decimal128`, `Binary`, ...), or undefined for anything else. */
export function bsonType(v: object): string | undefined {
  const t = (v as { _bsontype?: unknown })._bsontype;
  return typeof t === 'string' ? t : undefined;
}

/** True for a hydrated mongoose document or subdocument (not for the plain result of a lean read). */
export function isMongooseDocument(v: object): v is MongooseDocumentLike {
  return typeof (v as { toObject?: unknown }).toObject === 'function' && '$__' in v;
}

/**
 * A mongoose document's stored data: what the database holds, not what the app sees through getters, virtuals
 * or a schema's `toObject` transform. Populated paths are back to their ids; Maps are plain objects.
 */
export function documentData(doc: MongooseDocumentLike): Record<string, unknown> {
  return doc.toObject({ depopulate: true, flattenMaps: true, virtuals: false, getters: false, transform: false, versionKey: true }) as Record<string, unknown>;
}

/** The bytes a BSON Binary holds (its buffer may be larger than what was written into it). */
export function binaryBytes(v: object): Uint8Array {
  const b = v as { buffer: Uint8Array; position?: number };
  return b.buffer.subarray(0, b.position ?? b.buffer.length);
}

/** The 24-character hex string of an ObjectId-like value (anything with `toHexString`), or null. */
export function objectIdHex(v: unknown): string | null {
  const hex = (v as { toHexString?: unknown } | null | undefined)?.toHexString;
  return typeof hex === 'function' ? String(hex.call(v)) : null;
}

/**
 * The exact meaning of a BSON scalar as text or number: ObjectId → hex, Int32/Double → number, Decimal128,
 * Long, Timestamp, UUID... → their string form (which is exact). Binary is not a scalar: see binaryBytes.
 */
export function bsonScalar(v: object, type: string): string | number {
  switch (type) {
    case 'ObjectId':
    case 'ObjectID':
      return objectIdHex(v) ?? String(v);
    case 'Int32':
    case 'Double':
      return (v as { valueOf(): number }).valueOf();
    default:
      return String(v);
  }
}
