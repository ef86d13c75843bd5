/**
 * One sink's relay: what the store has taken reaches the sink through this relay's own bounded queue, its own
 * spool on disk and its own retry loop, so a slow or dead sink holds up nothing but itself.
 *
 * - `offer()` only pushes references (or appends the overflow to the spool): the store's drain loop never waits.
 * - One `send` in flight at a time. A failed batch is retried with capped exponential backoff (a destination's
 *   `Retry-After` wins when longer) until it is delivered, refused for good (`SinkError.permanent`), or the
 *   auditor closes.
 * - What does not fit in memory goes to the spool; a closing auditor moves the queue there too, and a later
 *   auditor on the same directory delivers it. Nothing is delivered twice except a batch whose outcome was unknown
 *   (a timeout, a crash mid-replay): events keep their `_id` for that.
 * - A loss (refused for good, or neither the queue nor the spool could hold it) is counted and recorded in the
 *   trail as a `loss` event naming the sink.
 */
import type { AuditSink } from '../core/sink.js';
import { SinkError } from '../core/sink.js';
import { eventToJson } from '../core/json.js';
import type { SinkStats, StoredDoc } from '../core/types.js';
import type { Spool } from '../store/spool.js';

export type LossReason = 'rejected' | 'queue_full' | 'spool_failed';

export interface SinkLoss {
  sink: string;
  lost: number;
  from: Date;
  to: Date;
  reason: LossReason;
}

export interface RelayOptions {
  maxQueue: number;
  /** Null when the spool directory cannot be written: the overflow is then lost (and recorded). */
  spool: Spool | null;
  retryMinMs: number;
  onLoss: (loss: SinkLoss) => void;
  report: (err: unknown) => void;
}

/** A Retry-After longer than this is taken as this: an audit copy must not go quiet for hours on one header. */
const MAX_RETRY_AFTER_MS = 10 * 60_000;
const DEFAULT_RETRY_MAX_MS = 30_000;

/** Thrown inside the retry loop once the relay closes: a spool file being replayed stays for the next process. */
class Closed extends Error {}

export class SinkRelay {
  readonly sink: AuditSink;
  private readonly o: RelayOptions;
  private readonly retryMaxMs: number;
  private queue: StoredDoc[] = [];
  private draining = false;
  private scheduled = false;
  private spoolPending = false;
  private closed = false;
  private wake: (() => void) | null = null;
  private idle: (() => void)[] = [];
  private lost: Omit<SinkLoss, 'sink'> | null = null;
  private readonly s: SinkStats = { accepted: 0, delivered: 0, retried: 0, dropped: 0, spooled: 0, queued: 0, failing: false };

  constructor(sink: AuditSink, options: RelayOptions) {
    this.sink = sink;
    this.o = options;
    this.retryMaxMs = Math.max(sink.retryMaxMs ?? DEFAULT_RETRY_MAX_MS, options.retryMinMs);
  }

  /**
   * Looks for what an earlier process (or auditor) left for this sink, and delivers it as soon as the sink
   * answers. Called once the connection is open: the default spool directory depends on the database's name.
   */
  checkSpool(): void {
    if (this.o.spool === null || this.closed) return;
    this.spoolPending = this.spoolPending || this.o.spool.files().length > 0;
    if (this.spoolPending) this.schedule();
  }

  stats(): SinkStats {
    return { ...this.s, queued: this.queue.length };
  }

  /** Takes a batch the store has just stored. Never waits, never throws. */
  offer(docs: readonly StoredDoc[]): void {
    if (docs.length === 0) return;
    this.s.accepted += docs.length;
    if (this.closed) {
      this.toSpool(docs);
      return;
    }
    const room = Math.max(0, this.o.maxQueue - this.queue.length);
    if (room >= docs.length) this.queue.push(...docs);
    else {
      this.queue.push(...docs.slice(0, room));
      this.toSpool(docs.slice(room));
    }
    this.schedule();
  }

  /** Resolves when nothing is left in memory or in the spool (for tests and `close`). */
  drained(): Promise<void> {
    if (!this.draining && this.queue.length === 0 && !this.spoolPending) return Promise.resolve();
    return new Promise((resolve) => {
      this.idle.push(resolve);
      this.wake?.();
      this.schedule();
    });
  }

  /**
   * Delivers what it can within `timeoutMs` (a failing sink gets no grace: its queue goes to the spool at once),
   * then stops. Resolves with how many events wait in the spool for a later process.
   */
  async close(timeoutMs: number): Promise<number> {
    if (!this.closed && !this.s.failing && (this.queue.length > 0 || this.spoolPending)) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.drained(), new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
    }
    this.closed = true;
    this.wake?.();
    this.recordLoss();
    const left = this.queue.splice(0);
    this.toSpool(left);
    for (const w of this.idle.splice(0)) w();
    const waiting = this.o.spool?.count() ?? 0;
    this.o.spool?.close(); // its files are a later auditor's to deliver
    try {
      await this.sink.close();
    } catch (err) {
      this.o.report(err);
    }
    return waiting;
  }

  private toSpool(docs: readonly StoredDoc[]): void {
    if (docs.length === 0) return;
    if (this.o.spool === null) {
      this.lose(docs, 'queue_full');
      return;
    }
    try {
      this.o.spool.append(docs);
      this.s.spooled += docs.length;
      this.spoolPending = true;
    } catch (err) {
      this.o.report(err);
      this.lose(docs, 'spool_failed');
    }
  }

  private lose(docs: readonly StoredDoc[], reason: LossReason): void {
    this.s.dropped += docs.length;
    for (const d of docs) {
      // The record of this sink's own loss, lost by it again, is not recorded again: that would never end.
      if (d.kind === 'loss' && (d.meta as { sink?: unknown } | undefined)?.sink === this.sink.name) continue;
      const ts = d.ts instanceof Date ? d.ts : new Date();
      if (this.lost === null) this.lost = { lost: 0, from: ts, to: ts, reason };
      this.lost.lost++;
      if (ts < this.lost.from) this.lost.from = ts;
      if (ts > this.lost.to) this.lost.to = ts;
      if (this.lost.reason !== reason) this.lost.reason = reason; // the latest cause; the count covers them all
    }
    if (!this.closed) setImmediate(() => this.recordLoss());
  }

  private recordLoss(): void {
    if (this.lost === null) return;
    const loss = { sink: this.sink.name, ...this.lost };
    this.lost = null;
    this.o.onLoss(loss);
  }

  private schedule(): void {
    if (this.draining || this.scheduled || this.closed) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      void this.drain();
    });
  }

  private async drain(): Promise<void> {
    if (this.draining || this.closed) return;
    this.draining = true;
    try {
      while (!this.closed) {
        if (this.spoolPending && this.o.spool !== null) {
          const spool = this.o.spool;
          try {
            await spool.replay(this.sink.batchSize, (docs) => this.deliver(docs));
          } catch (err) {
            if (err instanceof Closed) break;
            this.o.report(err); // the spool could not be read: try again after a pause
            await this.backoff(this.retryMaxMs);
            continue;
          }
          this.spoolPending = spool.files().length > 0;
          continue;
        }
        if (this.queue.length === 0) break;
        // The batch stays at the head of the queue until delivered: a close meanwhile spools it.
        const batch = this.queue.slice(0, this.sink.batchSize);
        try {
          await this.deliver(batch);
        } catch (err) {
          if (err instanceof Closed) break;
          throw err;
        }
        if (this.queue[0] === batch[0]) this.queue.splice(0, batch.length);
      }
    } catch (err) {
      this.o.report(err);
    } finally {
      this.draining = false;
    }
    if (this.closed) return;
    if (this.queue.length > 0 || this.spoolPending) this.schedule();
    else for (const w of this.idle.splice(0)) w();
  }

  /** Sends one batch until it is delivered or refused for good; throws Closed when the relay closes meanwhile. */
  private async deliver(docs: StoredDoc[]): Promise<void> {
    const events = docs.map((d) => eventToJson(d));
    let delay = this.o.retryMinMs;
    for (;;) {
      if (this.closed) throw new Closed();
      try {
        await this.sink.send(events);
        this.s.delivered += docs.length;
        this.s.failing = false;
        return;
      } catch (err) {
        if (this.closed) throw new Closed();
        if (err instanceof SinkError && err.permanent) {
          this.o.report(err);
          this.lose(docs, 'rejected');
          return;
        }
        this.s.retried++;
        this.s.failing = true;
        this.o.report(err);
        const jittered = delay + Math.floor(Math.random() * delay * 0.2);
        const after = err instanceof SinkError && err.retryAfterMs !== undefined ? Math.min(err.retryAfterMs, MAX_RETRY_AFTER_MS) : 0;
        await this.backoff(Math.max(jittered, after), after > 0);
        delay = Math.min(delay * 2, this.retryMaxMs);
      }
    }
  }

  /** A backoff that `drained()` may cut short, except one a destination asked for (`Retry-After`). */
  private backoff(ms: number, binding = false): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        if (this.wake === done) this.wake = null;
        resolve();
      };
      const t = setTimeout(done, ms);
      t.unref();
      this.wake = binding ? (): void => {
        if (this.closed) done();
      } : done;
    });
  }
}
