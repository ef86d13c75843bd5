/**
 * A write's own reason and meta: the mongoose-native `{ audit: { reason, meta } }` option of save, insertMany,
 * bulkWrite and every query write. Checked before the write (a bad value fails the call before anything is
 * written); the change events of the call are then built inside a scope carrying it (lib/core/scope.ts), the
 * same scope `withContext` opens, so one builder reads it.
 */
import { storage } from '../core/context.js';
import { checkNote, scopedFrame } from '../core/scope.js';
import type { AuditNote } from '../core/types.js';

/** The option every audited write accepts. */
export interface AuditCallOptions {
  /** Why this write is made: stored as the change events' `reason`. */
  reason?: string;
  /** Extra data stored (redacted) as the change events' `meta`. */
  meta?: Record<string, unknown>;
}

declare module 'mongoose' {
  interface SaveOptions {
    audit?: AuditCallOptions;
  }
  interface InsertManyOptions {
    audit?: AuditCallOptions;
  }
  interface MongooseBulkWriteOptions {
    audit?: AuditCallOptions;
  }
  interface QueryOptions {
    audit?: AuditCallOptions;
  }
}

const WHERE = '{ audit } option';

/** The checked note of an options object's `audit` key, or undefined when it has none. */
export function callNote(options: unknown): AuditNote | undefined {
  const v = (options as { audit?: unknown } | null | undefined)?.audit;
  return v === undefined ? undefined : checkNote(WHERE, v);
}

/** `options` without its `audit` key (the driver is never handed an option it does not know). */
export function withoutNote<T>(options: T): T {
  if (options === null || typeof options !== 'object' || !('audit' in options)) return options;
  const { audit: _audit, ...rest } = options as Record<string, unknown>;
  return rest as T;
}

/** Runs `fn` in a scope carrying the write's note (as is when it has none). */
export function inNote<T>(note: AuditNote | undefined, fn: () => T): T {
  if (note === undefined || (note.reason === undefined && note.meta === undefined)) return fn();
  return storage.run(scopedFrame(note, WHERE), fn);
}
