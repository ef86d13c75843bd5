/**
 * The JSON form of an event, shared by the HTTP API and `koa-audit export`:
 *   - `_id`: the 24-character lowercase hex string of the ObjectId;
 *   - `ts`: ISO 8601 in UTC with milliseconds (`Date#toISOString`, e.g. `2026-01-31T12:00:00.000Z`);
 *   - every other field exactly as stored (stored values are already JSON: lib/safe.ts), in stored order.
 * Keys stored escaped (`a%2Eb`, see `escapeKey`) stay escaped, so the output is the collection's content.
 */
import { objectIdHex } from './bson.js';
import type { AuditEvent } from './types.js';

export type JsonEvent = Omit<AuditEvent, '_id' | 'ts'> & { _id: string; ts: string };

function hexOf(id: unknown): string {
  return objectIdHex(id) ?? String(id);
}

function isoOf(ts: unknown): string {
  return ts instanceof Date && !Number.isNaN(ts.getTime()) ? ts.toISOString() : String(ts);
}

export function eventToJson(doc: AuditEvent | Record<string, unknown>): JsonEvent {
  const { _id, ts, ...rest } = doc as Record<string, unknown>;
  return { _id: hexOf(_id), ts: isoOf(ts), ...rest } as JsonEvent;
}
