/**
 * The contract between the auditor and a sink (a copy of the trail on another system: a webhook, an
 * OpenTelemetry Collector, Kafka, or your own). It lives in core because the options name it; the machinery that
 * feeds sinks (queues, retries, spools, loss accounting) is lib/sinks/.
 */
import type { JsonEvent } from './json.js';

export interface AuditSink {
  /** Unique among an auditor's sinks; names its spool directory and its entry in `stats().sinks`. */
  readonly name: string;
  /** Most events per `send`. */
  readonly batchSize: number;
  /** Longest wait between two attempts of a failing batch, in ms (the first waits about 100 ms, then doubling). */
  readonly retryMaxMs?: number;
  /**
   * Delivers a batch: resolves once the destination has it. Anything thrown is retried with backoff, except a
   * `SinkError` with `permanent: true` (the destination refuses these events: they are counted as lost).
   * Every event keeps its `_id`, so a destination can drop a redelivery.
   */
  send(events: readonly JsonEvent[]): Promise<void>;
  /** Releases connections; called once, by the auditor's `close()`. */
  close(): Promise<void>;
}

/** What a sink throws to steer the retry: `retryAfterMs` (a server's Retry-After), or `permanent`. */
export class SinkError extends Error {
  readonly retryAfterMs: number | undefined;
  readonly permanent: boolean;
  constructor(message: string, options: { retryAfterMs?: number; permanent?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'SinkError';
    this.retryAfterMs = options.retryAfterMs;
    this.permanent = options.permanent ?? false;
  }
}
