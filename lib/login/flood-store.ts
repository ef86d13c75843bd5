/**
 * Flood control shared by every process of an app (`loginFailures: { store: 'mongo' }`): the windows live in a
 * small collection, so N processes allow `max` detailed failures per key and window in all, not N × `max`.
 *
 * - Windows are aligned to the epoch (`floor(now / windowMs)`), so every process agrees on them without talking.
 * - A failure is detailed only if it claims one of the window's `max` slots: a document `_id: "<window>#<i>"`,
 *   inserted. A unique `_id` is the one guarantee every MongoDB-compatible server keeps under concurrency
 *   (FerretDB v1 loses concurrent `$inc`s and applies compare-and-set updates twice), so no more than `max`
 *   failures are ever detailed, whatever the server. The window's counter (`$inc`) says which slot to try first
 *   and, on MongoDB, the window's true total; a counter already above `max` means the failure is held back
 *   without a slot attempt.
 * - Summaries: each process counts exactly what it held back and, at the window's end (or at `flush`/`close`,
 *   as `complete: false`), records one summary of it: at most one per process, key and window, whose
 *   `suppressed` add up to every failure held back; `total` is the window's counter at that moment.
 * - Old windows are deleted by a sweep (at most once per window length) on `expiresAt`, and by a TTL index where
 *   the server has them.
 * - When the collection cannot be reached in time, a failure is recorded in detail (and the fault reported):
 *   flood control must never lose the evidence it exists to condense.
 */
import type { Collection } from 'mongoose';
import type { FloodKeyKind, FloodSummary } from './flood.js';

export interface SharedFloodOptions {
  collection: () => Collection;
  max: number;
  windowMs: number;
  onSummary: (summary: FloodSummary) => void;
  report: (err: unknown) => void;
  /** Longest wait for the collection per failure. Default 2,000 ms. */
  timeoutMs?: number;
  now?: () => number;
}

interface WindowDoc {
  _id: string;
  count: number;
}

/** What this process held back in one window and has not summarized yet. */
interface Pending {
  kind: FloodKeyKind;
  value: string;
  start: number;
  suppressed: number;
  provider: string;
  reason: string;
}

const DUPLICATE_KEY = 11000;

export class SharedFloodControl {
  private readonly o: SharedFloodOptions;
  private readonly now: () => number;
  private readonly pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | null = null;
  private timerAt = 0;
  private prepared: Promise<void> | null = null;
  private lastSweep = 0;
  private closed = false;

  constructor(o: SharedFloodOptions) {
    this.o = o;
    this.now = o.now ?? Date.now;
  }

  /** Counts one failure in the shared windows; resolves true when it is to be recorded in detail. */
  async admit(identifier: string | null, ip: string | null, provider: string, reason: string): Promise<boolean> {
    const now = this.now();
    const start = now - (now % this.o.windowMs);
    const keys: [FloodKeyKind, string][] = [];
    if (identifier !== null) keys.push(['identifier', identifier]);
    if (ip !== null) keys.push(['ip', ip]);
    if (keys.length === 0) return true;
    let slots: boolean[];
    try {
      slots = await this.withTimeout(Promise.all(keys.map(([kind, value]) => this.claimSlot(windowId(kind, value, start), start))));
    } catch (err) {
      this.o.report(err);
      return true;
    }
    // As in memory: held back when any key is over the limit, and counted only by the keys over it.
    const detailed = slots.every(Boolean);
    if (detailed) return true;
    keys.forEach(([kind, value], i) => {
      if (slots[i]) return;
      const id = windowId(kind, value, start);
      const p = this.pending.get(id);
      if (p === undefined) this.pending.set(id, { kind, value, start, suppressed: 1, provider, reason });
      else {
        p.suppressed++;
        if (p.provider !== provider) p.provider = 'multiple';
        if (p.reason !== reason) p.reason = 'multiple';
      }
    });
    this.arm();
    return false;
  }

  /** Summarizes what this process held back so far; windows still open stay open (and keep holding back). */
  async flush(): Promise<void> {
    await this.claimAll(false);
  }

  async close(): Promise<void> {
    await this.claimAll(false);
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Counts the failure in its window; true when it claimed one of the window's `max` detail slots. */
  private async claimSlot(id: string, start: number): Promise<boolean> {
    await this.prepare();
    const coll = this.o.collection();
    const expiresAt = new Date(start + 2 * this.o.windowMs);
    const count = await this.increment(coll, id, start, expiresAt);
    if (count > this.o.max) return false;
    for (let slot = Math.max(1, count); slot <= this.o.max; slot++) {
      try {
        await coll.insertOne({ _id: `${id}#${slot}`, expiresAt } as never);
        return true;
      } catch (err) {
        if ((err as { code?: unknown }).code !== DUPLICATE_KEY) throw err;
      }
    }
    return false;
  }

  private async increment(coll: Collection, id: string, start: number, expiresAt: Date): Promise<number> {
    const update = { $inc: { count: 1 }, $setOnInsert: { start: new Date(start), end: new Date(start + this.o.windowMs), expiresAt } };
    for (let attempt = 0; ; attempt++) {
      try {
        // No projection: FerretDB's findAndModify has none, and the document is small anyway.
        const doc = (await coll.findOneAndUpdate({ _id: id } as never, update, { upsert: true, returnDocument: 'after' })) as unknown as WindowDoc | { value?: WindowDoc } | null;
        const w = doc !== null && 'count' in doc ? doc : (doc as { value?: WindowDoc } | null)?.value;
        if (w === undefined || typeof w.count !== 'number') throw new Error('koa-audit: flood window upsert returned no document');
        return w.count;
      } catch (err) {
        // Two processes inserting the same window at once: one insert loses, and the update then finds the document.
        if ((err as { code?: unknown }).code === DUPLICATE_KEY && attempt < 5) continue;
        throw err;
      }
    }
  }

  /** The TTL index, once (a server without TTL indexes relies on the sweep). */
  private prepare(): Promise<void> {
    this.prepared ??= this.o.collection().createIndex({ expiresAt: 1 }, { name: 'koa_audit_flood_ttl', expireAfterSeconds: 0 })
      .then(() => undefined, () => undefined);
    return this.prepared;
  }

  private async claimAll(onlyEnded: boolean): Promise<void> {
    const now = this.now();
    for (const [id, p] of [...this.pending]) {
      const ended = p.start + this.o.windowMs <= now;
      if (onlyEnded && !ended) continue;
      try {
        await this.withTimeout(this.claim(id, p, ended));
        if (ended) this.pending.delete(id);
      } catch (err) {
        this.o.report(err);
      }
    }
    if (onlyEnded) await this.sweep(now);
  }

  /** Records this process's summary of a window: what it held back since its last summary of it. */
  private async claim(id: string, p: Pending, complete: boolean): Promise<void> {
    if (p.suppressed === 0) return;
    const doc = (await this.o.collection().findOne({ _id: id } as never)) as WindowDoc | null;
    const suppressed = p.suppressed;
    p.suppressed = 0;
    this.o.onSummary({
      key: p.kind,
      value: p.value,
      suppressed,
      total: Math.max(doc?.count ?? 0, this.o.max + suppressed),
      windowStart: new Date(p.start),
      windowEnd: new Date(p.start + this.o.windowMs),
      complete,
      provider: p.provider,
      reason: p.reason,
    });
  }

  private async sweep(now: number): Promise<void> {
    if (now - this.lastSweep < this.o.windowMs) return;
    this.lastSweep = now;
    try {
      await this.withTimeout(this.o.collection().deleteMany({ expiresAt: { $lt: new Date(now) } }));
    } catch (err) {
      this.o.report(err);
    }
  }

  /** One unref'd timer, at the end of the earliest window this process holds failures of. */
  private arm(): void {
    if (this.closed) return;
    let due = Infinity;
    for (const p of this.pending.values()) due = Math.min(due, p.start + this.o.windowMs);
    if (due === Infinity) return;
    if (this.timer !== null) {
      if (this.timerAt <= due) return;
      clearTimeout(this.timer);
    }
    this.timerAt = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.claimAll(true).then(() => this.arm());
    }, Math.max(0, due - this.now()) + 50); // a little after the end, for the stragglers of other processes
    this.timer.unref();
  }

  private withTimeout<T>(p: Promise<T>): Promise<T> {
    const ms = this.o.timeoutMs ?? 2_000;
    let t: NodeJS.Timeout | undefined;
    return Promise.race([
      p,
      new Promise<never>((_, reject) => {
        t = setTimeout(() => reject(new Error(`koa-audit: the flood-control collection did not answer within ${ms} ms`)), ms);
      }),
    ]).finally(() => clearTimeout(t));
  }
}

function windowId(kind: FloodKeyKind, value: string, start: number): string {
  return `${kind}:${start}:${value}`;
}
