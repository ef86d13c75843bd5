/**
 * The hash chain of one auditor in one process run. The store calls it:
 *
 * - `link(doc)` when it takes an event into its keeping (queue, spool, a sync write, a loss record): the event
 *   gets `chain: { id, seq }` there, in acceptance order. Cheap: no hashing on the caller's path. The first
 *   event of the chain is preceded by its `audit_start`, which `link` returns with it.
 * - `seal()` before anything leaves memory (a batch insert, a spool append, a sync insert): every linked event
 *   not yet hashed gets `prev` and `hash`, in `seq` order. So hashing runs on the store's timer in async mode,
 *   and an event that is spooled, retried or replayed carries the same fields to wherever it is stored.
 *
 * Checkpoints follow `checkpointEvery` sealed events and the `checkpointMs` timer; each is signed, handed to
 * `onCheckpoint`, and recorded as a `checkpoint` event of the chain itself (which a later checkpoint covers).
 */
import { randomUUID } from 'node:crypto';
import type { ResolvedIntegrity } from '../core/integrity-options.js';
import type { Checkpoint, ChainFields, StoredDoc } from '../core/types.js';
import { eventHash } from './canonical.js';
import { signCheckpoint } from './signature.js';

/** The events a chain writes about itself: not the application's, so not in its counts or its queue bound. */
const OWN_KINDS: ReadonlySet<unknown> = new Set(['audit_start', 'audit_stop', 'checkpoint']);

export function isChainRecord(doc: StoredDoc): boolean {
  return OWN_KINDS.has(doc.kind);
}

/** What the store needs of a chain (lib/store/writer.ts calls it; null when there is none). */
export interface ChainLink {
  /** Gives `doc` the next position; returns what the store must keep, in order (`audit_start` first, once). */
  link(doc: StoredDoc): StoredDoc[];
  /** Hashes every linked event that is not hashed yet. */
  seal(): void;
  /**
   * A sync write failed and the caller answers otherwise (`instead`, under the same `_id`): the replacement takes
   * the original's position when nothing was hashed after it, else the next free one (the original's position
   * then stays a gap that `verify` reports: the request's outcome was never stored as first written).
   */
  relink(replacement: StoredDoc): StoredDoc[];
}

export interface ChainParts {
  integrity: ResolvedIntegrity;
  /** Builds the `audit_start` event. */
  startEvent(chainId: string): StoredDoc;
  /** Records a `checkpoint` event (through the core, so it is linked like any other event). */
  recordCheckpoint(checkpoint: Checkpoint): void;
  report(err: unknown): void;
}

type Pending = StoredDoc & { chain: { id: string; seq: number; prev: string | null; hash: string | null } };

export class Chain implements ChainLink {
  readonly id = randomUUID();
  private next = 0;
  private pending: Pending[] = [];
  private lastSeq = -1;
  private lastHash: string | null = null;
  /** Events sealed since the last checkpoint (checkpoints themselves not counted: they would call for more). */
  private sinceCheckpoint = 0;
  /** Heads reached since the last recordDue(), each to be signed and recorded. */
  private due: { seq: number; hash: string }[] = [];
  private dueQueued = false;
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(private readonly parts: ChainParts) {}

  get position(): { seq: number; hash: string | null } {
    return { seq: this.lastSeq, hash: this.lastHash };
  }

  link(doc: StoredDoc): StoredDoc[] {
    if (this.next === 0) {
      const start = this.parts.startEvent(this.id);
      this.assign(start);
      this.assign(doc);
      this.startTimer();
      return [start, doc];
    }
    this.assign(doc);
    return [doc];
  }

  relink(replacement: StoredDoc): StoredDoc[] {
    const old = replacement.chain as ChainFields | undefined;
    const { chain: _old, ...rest } = replacement;
    if (old !== undefined && old.seq === this.lastSeq) {
      const doc = { ...rest, chain: { id: this.id, seq: old.seq, prev: old.prev, hash: '' } } as StoredDoc;
      (doc.chain as ChainFields).hash = eventHash(doc);
      this.lastHash = (doc.chain as ChainFields).hash;
      return [doc];
    }
    const doc = rest as StoredDoc;
    this.assign(doc);
    return [doc];
  }

  seal(): void {
    if (this.pending.length === 0) return;
    const docs = this.pending;
    this.pending = [];
    const every = this.parts.integrity.checkpointEvery;
    for (const doc of docs) {
      doc.chain.prev = this.lastHash;
      doc.chain.hash = eventHash(doc);
      this.lastHash = doc.chain.hash;
      this.lastSeq = doc.chain.seq;
      if (doc.kind === 'checkpoint') continue;
      if (++this.sinceCheckpoint >= every) {
        this.sinceCheckpoint = 0;
        this.due.push({ seq: this.lastSeq, hash: this.lastHash });
      }
    }
    if (this.due.length > 0 && !this.dueQueued) {
      // Signed and recorded after this seal returns: the store may be in the middle of an append.
      this.dueQueued = true;
      queueMicrotask(() => {
        this.dueQueued = false;
        this.recordDue();
      });
    }
  }

  /** Seals, then checkpoints the head (unless nothing was sealed since the last checkpoint). Timer and close(). */
  checkpoint(): void {
    this.seal();
    if (this.sinceCheckpoint > 0 && this.lastHash !== null) {
      this.sinceCheckpoint = 0;
      this.due.push({ seq: this.lastSeq, hash: this.lastHash });
    }
    this.recordDue();
  }

  private recordDue(): void {
    for (const head of this.due.splice(0)) {
      try {
        const cp = signCheckpoint(this.parts.integrity.signer, { chainId: this.id, seq: head.seq, hash: head.hash, ts: new Date().toISOString() });
        this.parts.recordCheckpoint(cp);
        const handler = this.parts.integrity.onCheckpoint;
        if (handler === undefined) continue;
        try {
          const r = handler({ ...cp });
          if (r instanceof Promise) r.catch((err: unknown) => this.parts.report(err));
        } catch (err) {
          this.parts.report(err);
        }
      } catch (err) {
        this.parts.report(err);
      }
    }
  }

  /** Stops the timer (the closing checkpoint is the caller's). */
  stop(): void {
    this.stopped = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
  }

  get started(): boolean {
    return this.next > 0;
  }

  private assign(doc: StoredDoc): void {
    const linked = doc as Pending;
    linked.chain = { id: this.id, seq: this.next++, prev: null, hash: null };
    this.pending.push(linked);
  }

  private startTimer(): void {
    if (this.stopped) return;
    this.timer = setInterval(() => this.checkpoint(), this.parts.integrity.checkpointMs);
    this.timer.unref();
  }
}
