/**
 * Degraded periods in the trail itself: when the store's writes have failed for `degradedAfterMs` the auditor
 * records a `security` event `sys_monitor_disabled`, and `sys_monitor_enabled` when they succeed again (the OWASP
 * Logging Vocabulary's names for a monitor that stops and starts: here the audit trail). Both are the system's
 * (`actor: { id: 'system', via: 'system' }`) with `meta.monitor: 'koa-audit store'`, which tells them from an
 * application's own events of those names. They wait in the queue (or the spool) like any event and are stored
 * once the store takes writes again, so a past outage shows on the dashboard and in the list long after the
 * process that lived through it is gone.
 */
import type { EventEmitter } from 'node:events';
import type { AuditCore } from '../core/core.js';
import { capString } from '../core/safe.js';
import type { StoredDoc } from '../core/types.js';

/** `meta.monitor` of the auditor's own degraded/recovered events. */
export const STORE_MONITOR = 'koa-audit store';
export const DEGRADED_NAME = 'sys_monitor_disabled';
export const RECOVERED_NAME = 'sys_monitor_enabled';

/** Records each degraded/recovered transition of the writer (`events` is the auditor's emitter). */
export function recordStoreHealth(core: AuditCore, events: EventEmitter): void {
  let since: Date | null = null;
  /** Builds and accepts the event; `then` sees it built (its `ts` is the instant the period starts or ends). */
  const record = (fields: Parameters<AuditCore['buildSystem']>[0], then?: (doc: StoredDoc) => void): void => {
    try {
      const doc = core.buildSystem(fields);
      then?.(doc);
      core.accept(doc).catch((err: unknown) => core.report(err));
    } catch (err) {
      core.report(err);
    }
  };
  events.on('degraded', (err: unknown) => {
    const o = core.options;
    record({
      kind: 'security', name: DEGRADED_NAME, outcome: 'failure', reason: 'audit store writes failing',
      meta: {
        monitor: STORE_MONITOR, collection: o.collection, degradedAfterMs: o.degradedAfterMs,
        error: capString(err instanceof Error ? err.message : String(err), 512),
      },
    }, (doc) => {
      since = doc.ts as Date;
    });
  });
  events.on('recovered', () => {
    const from = since;
    since = null;
    record({
      kind: 'security', name: RECOVERED_NAME, outcome: 'success', reason: 'audit store writes succeed again',
      meta: { monitor: STORE_MONITOR, collection: core.options.collection, degradedAt: from === null ? null : from.toISOString(), durationMs: null },
    }, (doc) => {
      // The period's length between the two events' own times (set once the event is built).
      if (from !== null && doc.meta !== null && typeof doc.meta === 'object') (doc.meta as Record<string, unknown>).durationMs = (doc.ts as Date).getTime() - from.getTime();
    });
  });
}
