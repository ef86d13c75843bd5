/**
 * The trail's record of its own life (OWASP "start and stop of logging", PCI DSS 10.2.1.6): an `audit_start`
 * opens each chain, an `audit_stop` and a closing checkpoint end it at `close()`.
 */
import { hostname } from 'node:os';
import type { AuditCore } from '../core/core.js';
import type { ResolvedIntegrity } from '../core/integrity-options.js';
import type { AuditStats, StoredDoc } from '../core/types.js';
import { Chain } from './chain.js';

/** Kept equal to package.json's version (test/integrity.test.ts checks it). */
export const LIBRARY_VERSION = '0.1.0';

/** The kinds the trail writes about itself. */
export const TRAIL_KINDS = ['audit_start', 'audit_stop', 'checkpoint', 'prune'] as const;

export function createChain(core: AuditCore, integrity: ResolvedIntegrity): Chain {
  const o = core.options;
  return new Chain({
    integrity,
    startEvent: (chainId) => core.buildSystem({
      kind: 'audit_start',
      outcome: 'success',
      meta: {
        chainId,
        host: hostname(),
        pid: process.pid,
        version: LIBRARY_VERSION,
        node: process.version,
        collection: o.collection,
        mode: o.mode,
        onFull: o.onFull,
        retentionDays: o.retention?.days ?? null,
        integrity: { alg: integrity.signer.alg, checkpointEvery: integrity.checkpointEvery, checkpointMs: integrity.checkpointMs },
      },
    }),
    recordCheckpoint: (checkpoint) => {
      const doc = core.buildSystem({ kind: 'checkpoint', outcome: 'success' });
      // Set after building: these are the library's own values, not data to redact or cap.
      doc.checkpoint = checkpoint;
      core.accept(doc).catch(core.report);
    },
    report: core.report,
  });
}

/**
 * Ends the chain: `audit_stop` with the writer's counts, then a checkpoint that covers it. Nothing when the
 * chain never started (an auditor that recorded nothing leaves nothing).
 */
export function stopChain(core: AuditCore, chain: Chain, stats: AuditStats): void {
  if (!chain.started) {
    chain.stop();
    return;
  }
  const doc: StoredDoc = core.buildSystem({
    kind: 'audit_stop',
    outcome: 'success',
    meta: { chainId: chain.id, accepted: stats.accepted, stored: stats.stored, dropped: stats.dropped, spooled: stats.spooled },
  });
  core.accept(doc).catch(core.report);
  chain.stop();
  chain.checkpoint();
}
