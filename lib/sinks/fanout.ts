/**
 * The auditor's sinks: one relay per sink, each with its spool in `<spool directory>/sinks/<name>`. The store
 * hands every stored batch to `offer`, which hands it to each relay; nothing here waits for a sink.
 */
import { join } from 'node:path';
import type { AuditSink } from '../core/sink.js';
import type { SinkStats, StoredDoc } from '../core/types.js';
import { trustedDir, type Destination } from '../store/spool-files.js';
import { Spool } from '../store/spool.js';
import { SinkRelay, type SinkLoss } from './relay.js';

export interface SinkSetOptions {
  /** The directory checked now (the spool directory, or the base of the default ones). */
  trustedBase: string;
  /** The auditor's spool directory, resolved lazily (the default one depends on the database's name). */
  spoolDir: () => string;
  destination: () => Destination;
  maxQueue: number;
  retryMinMs?: number;
  onLoss: (loss: SinkLoss) => void;
  report: (err: unknown) => void;
  warnOnce: (code: string, message: string) => void;
}

export class SinkSet {
  private readonly relays: SinkRelay[];

  constructor(sinks: readonly AuditSink[], o: SinkSetOptions) {
    let trusted: Error | null = null;
    try {
      trustedDir(o.trustedBase);
    } catch (err) {
      trusted = err as Error;
    }
    this.relays = sinks.map((sink) => {
      let spool: Spool | null = null;
      if (trusted === null) {
        spool = new Spool(() => join(o.spoolDir(), 'sinks', sink.name), o.destination);
        spool.onRefused = (message) => o.warnOnce(`KOA_AUDIT_SINK_SPOOL_REFUSED_${sink.name}`, message.replace(/^koa-audit: /, ''));
      } else {
        o.warnOnce(`KOA_AUDIT_SINK_SPOOL_${sink.name}`, `sink "${sink.name}" has no spool (${trusted.message.replace(/^koa-audit: /, '')}); what does not fit in its queue is lost and recorded`);
      }
      return new SinkRelay(sink, { maxQueue: o.maxQueue, spool, retryMinMs: o.retryMinMs ?? 100, onLoss: o.onLoss, report: o.report });
    });
  }

  /** See SinkRelay.checkSpool. */
  checkSpool(): void {
    for (const r of this.relays) r.checkSpool();
  }

  offer(docs: readonly StoredDoc[]): void {
    for (const r of this.relays) r.offer(docs);
  }

  stats(): Record<string, SinkStats> {
    const out: Record<string, SinkStats> = {};
    for (const r of this.relays) out[r.sink.name] = r.stats();
    return out;
  }

  /** Closes every relay at once; resolves with the events left in their spools. */
  async close(timeoutMs: number): Promise<number> {
    const left = await Promise.all(this.relays.map((r) => r.close(timeoutMs)));
    return left.reduce((a, b) => a + b, 0);
  }
}
