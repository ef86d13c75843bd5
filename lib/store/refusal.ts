/**
 * Telling a refusal from an outage. An outage (no server, a network error, a timeout, a failover) passes: the
 * same batch is retried. A refusal is about the documents themselves (the driver cannot serialize them, the
 * server will not take them): retrying the same batch would fail forever and hold up every event behind it.
 * A refused batch is split into single events; a refused single event is stored in a reduced form, and if
 * even that is refused, recorded as a loss.
 */
import { mongo } from 'mongoose';
import { bsonDocumentSize, identifying } from '../core/bound.js';
import type { StoredDoc } from '../core/types.js';

/**
 * Server error codes that are about a document's content: BadValue, TypeMismatch, BSONObjectTooLarge,
 * KeyTooLong, DollarPrefixedFieldName, InvalidDBRef, EmptyFieldName, DottedFieldName, InvalidBSON,
 * Location/legacy codes for "object to insert too large" and "document is larger than the maximum size".
 */
const CONTENT_CODES: ReadonlySet<number> = new Set([2, 14, 10334, 17280, 52, 55, 56, 57, 22, 15, 10065, 13066, 17419, 16724]);

const CONTENT_MESSAGE = /too large|larger than the maximum|exceeds? .*(size|limit)|offset .*out of range|invalid bson|bson/i;

/** True when `err` is about the documents written, not about reaching the server. */
export function isRefusal(err: unknown): boolean {
  if (err instanceof RangeError || err instanceof TypeError) return true;
  if (err === null || typeof err !== 'object') return false;
  const e = err as { name?: unknown; code?: unknown; message?: unknown };
  const name = typeof e.name === 'string' ? e.name : '';
  if (name === 'BSONError' || name === 'BSONVersionError' || name === 'BSONOffsetError' || name === 'MongoInvalidArgumentError') return true;
  if (err instanceof mongo.MongoNetworkError || err instanceof mongo.MongoServerSelectionError) return false;
  if (err instanceof mongo.MongoServerError) {
    if (typeof e.code === 'number' && CONTENT_CODES.has(e.code)) return true;
    return typeof e.message === 'string' && CONTENT_MESSAGE.test(e.message) && !/timed? ?out/i.test(e.message);
  }
  return false;
}

/**
 * A refused event's replacement under its own `_id`: what identifies it, why the rest is not stored
 * (`meta.storeError`), and its original size (`truncated.bytes`).
 */
export function reducedForm(doc: StoredDoc, reason: string): StoredDoc {
  const why = reason.slice(0, 1024);
  const reduced: StoredDoc = { ...identifying(doc, { bytes: bsonDocumentSize(doc), reason: why }), meta: { storeError: why } };
  // Its chain position stays taken (`verify` reports it as modified: what was hashed is not what is stored).
  if (doc.chain !== undefined) reduced.chain = doc.chain;
  return reduced;
}
