/**
 * Faults of the auditor itself (a write that failed and will be retried, a change that could not be recorded)
 * never reach the application's code. They are emitted as `'error'` where someone listens; where nobody does,
 * emitting would throw from a timer and crash the app, so the process gets one warning per auditor instead.
 */
import type { EventEmitter } from 'node:events';

const warned = new WeakSet<EventEmitter>();

/** Listeners of `'error'` always get an Error: a thrown string or object is wrapped, its text kept as the message. */
export function asError(err: unknown): Error {
  try {
    if (err instanceof Error) return err;
  } catch {
    // a Proxy whose prototype cannot be read: described below
  }
  return new Error(describeError(err));
}

/**
 * The text of anything thrown, never throwing itself: an Error's `name: message`, any other value's string form,
 * `'unreadable error'` when even that fails (a null-prototype object, a throwing getter or Proxy trap).
 */
export function describeError(err: unknown): string {
  try {
    if (err instanceof Error) return `${String(err.name)}: ${String(err.message)}`;
    return String(err);
  } catch {
    return 'unreadable error';
  }
}

export function reportError(events: EventEmitter, err: unknown): void {
  if (events.listenerCount('error') > 0) {
    events.emit('error', asError(err));
    return;
  }
  if (warned.has(events)) return;
  warned.add(events);
  process.emitWarning(`koa-audit: an audit event could not be recorded or stored (listen to 'error' for each one): ${describeError(err)}`, {
    type: 'KoaAuditWarning',
    code: 'KOA_AUDIT_ERROR',
  });
}

/** Raised to the caller only under `onFull: 'block'` (and by the sync mode): the request must fail closed. */
export class AuditUnavailableError extends Error {
  readonly status = 503;
  readonly expose = true;
  constructor(message = 'Audit log unavailable') {
    super(message);
    this.name = 'AuditUnavailableError';
  }
}

/**
 * `revert` refused because the document changed since the event (`paths` are those that no longer hold the
 * event's values; `['_id']` when the document is gone, or back already); `force: true` reverts anyway.
 */
export class RevertConflictError extends Error {
  readonly status = 409;
  readonly expose = true;
  constructor(readonly eventId: string, readonly paths: string[], detail = 'changed since the event') {
    super(`koa-audit: cannot revert event ${eventId}: ${paths.join(', ')} ${detail}`);
    this.name = 'RevertConflictError';
  }
}

/** `revert`/`restore` refused: redacted paths (their values were never stored), or an event that is no change. */
export class RevertRefusedError extends Error {
  readonly status = 422;
  readonly expose = true;
  constructor(readonly eventId: string, readonly paths: string[], reason: string) {
    super(`koa-audit: cannot revert event ${eventId}: ${reason}${paths.length > 0 ? `: ${paths.join(', ')}` : ''}`);
    this.name = 'RevertRefusedError';
  }
}
