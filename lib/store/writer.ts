/**
 * The writer: takes accepted events and gets every one of them into the collection.
 *
 * - Batches: a full batch is written at once, a partial one after `flushIntervalMs`, on an unref'd timer.
 * - One insert in flight at a time, unordered within the batch; `_id`s are set at acceptance, so a retried
 *   batch whose first attempt did reach the server stores nothing twice (duplicate keys count as stored).
 * - Failures are retried with capped exponential backoff; the queue is bounded by count and by bytes, and
 *   what does not fit goes to the spool, waits (`block`), or is dropped and counted (`drop`).
 * - A batch the server refuses for a reason that is not an outage (refusal.ts) is written again one event at a
 *   time; an event refused on its own is stored in a reduced form, and if even that is refused, counted as a
 *   loss: never retried forever, never holding up the events behind it. The spool replay does the same.
 * - With a write-ahead log (`durability: 'disk'`), every event is on disk before `accept()` returns, and its
 *   line is let go once the event is stored or spooled.
 * - Errors never reach the caller that recorded the event: they are emitted as `'error'` on the auditor.
 */
import { EventEmitter } from 'node:events';
import type { Collection, WriteConcern } from 'mongoose';
import { mongo } from 'mongoose';
import { bsonType } from '../core/bson.js';
import { AuditUnavailableError, reportError } from '../core/errors.js';
import type { AuditStats, OnFull, StoredDoc } from '../core/types.js';
import { isRefusal, reducedForm } from './refusal.js';
import type { Spool } from './spool.js';
import type { Segment, WriteAheadLog } from './wal.js';
import { isChainRecord, type ChainLink } from '../integrity/chain.js';

export interface WriterOptions {
  batchSize: number;
  flushIntervalMs: number;
  maxQueue: number;
  maxQueueBytes: number;
  onFull: OnFull;
  spool: Spool | null;
  /** `durability: 'disk'`: the write-ahead log every accepted event is appended to first. */
  wal: WriteAheadLog | null;
  blockTimeoutMs: number;
  writeConcern: WriteConcern | undefined;
  degradedAfterMs: number;
  retryMinMs: number;
  retryMaxMs: number;
  /** Builds the `loss` event (the core's builder: one shape for every event). */
  lossEvent: (fields: { lost: number; from: Date; to: Date; policy: OnFull }) => StoredDoc;
  /** Receives every batch the store has taken (duplicates of an earlier attempt included); must not throw. */
  onStored?: (docs: readonly StoredDoc[]) => void;
  /**
   * The auditor's hash chain: every event the writer keeps is linked when it is taken in (queue, spool, sync
   * write, loss record), and sealed (hashed) before it leaves memory (insert, spool append, write-ahead line),
   * so whatever path it takes it is stored with its chain fields. Absent or null: no chain.
   */
  chain?: ChainLink | null;
  /**
   * Runs after each write the server answered, before the next: `stored` were inserted by it, `duplicates`
   * refused as stored before (a retry, a replay). The rollups are kept this way; it must not throw.
   */
  afterStore?: (stored: StoredDoc[], duplicates: StoredDoc[]) => Promise<void>;
}

interface Queued {
  doc: StoredDoc;
  bytes: number;
  /** Set when the server refused this document itself (not the batch): its second form is a stub. */
  stubbed?: boolean;
  /** Its line in the write-ahead log, let go once it is stored. */
  wal: Segment | null;
  /** The chain's own record (audit_start, audit_stop, checkpoint): no room, slot or count of the application's. */
  own?: boolean;
}

const DUPLICATE_KEY = 11000;

const NAMED_INDEX = / index: (\S+)/;

/**
 * A duplicate of the event's own `_id`: an earlier attempt stored it. MongoDB names the index in the message;
 * FerretDB names none, and then a duplicate counts as the `_id` (the audit collection has no other unique index).
 */
function storedBefore(code: unknown, message: string): boolean {
  if (code !== DUPLICATE_KEY) return false;
  const m = NAMED_INDEX.exec(message);
  return m === null || m[1] === '_id_';
}

/** Per-document write errors of a bulk insert, or null when the whole command failed. */
function documentErrors(err: unknown): { index: number; code: number; message: string }[] | null {
  if (!(err instanceof mongo.MongoBulkWriteError)) return null;
  const list = err.writeErrors;
  const arr = Array.isArray(list) ? list : list === undefined || list === null ? [] : [list];
  if (arr.length === 0) return null;
  return arr.map((e) => ({ index: e.index, code: e.code as number, message: e.errmsg ?? 'write error' }));
}

export class Writer {
  private readonly o: WriterOptions;
  private readonly coll: () => Collection;
  private readonly events: EventEmitter;
  private readonly insertOptions: { ordered: false; writeConcern?: WriteConcern };
  private queue: Queued[] = [];
  private bytes = 0;
  /** Queued events that do not count against maxQueue (see Queued.own). */
  private own = 0;
  /** The chain's own records this writer put in the spool and not yet replayed: not in close()'s `unwritten`. */
  private ownSpooled = 0;
  private timer: NodeJS.Timeout | null = null;
  private draining = false;
  /** Write partial batches too (the interval passed, or someone is waiting in flush()). */
  private force = false;
  private idle: (() => void)[] = [];
  private space: (() => void)[] = [];
  /** Cuts a retry backoff short: flush() and close() want an attempt now, not in five seconds. */
  private wake: (() => void) | null = null;
  /** When the first of the current run of failed attempts started. */
  private failingSince: number | null = null;
  /** When the last write succeeded: an attempt that started before it says nothing about the store now. */
  private lastSuccess = 0;
  /** After a refused batch: this many events at the head of the queue are written one at a time. */
  private singles = 0;
  private spoolPending = false;
  /**
   * Overflow on its way to the spool: appended together once the current turn of the event loop is over (one
   * write for a burst, not one per event). Only without a write-ahead log: with one, the spool append is the
   * event's record on disk and happens before accept() returns.
   */
  private spoolBuffer: Queued[] = [];
  private spoolFlush: NodeJS.Immediate | null = null;
  private closed = false;
  private closing: Promise<{ unwritten: number }> | null = null;
  private lost: { count: number; from: Date; to: Date } | null = null;
  private readonly s: AuditStats = { accepted: 0, stored: 0, retried: 0, dropped: 0, spooled: 0, queued: 0, degraded: false };

  constructor(collection: () => Collection, options: WriterOptions, events: EventEmitter) {
    this.coll = collection;
    this.o = options;
    this.events = events;
    this.insertOptions = options.writeConcern === undefined ? { ordered: false } : { ordered: false, writeConcern: options.writeConcern };
  }

  /**
   * Looks for what an earlier process (or auditor) left in the spool directory, and replays it as soon as
   * the store answers. Called once the connection is open: the spool's destination is known then.
   */
  checkSpool(): void {
    if (this.o.spool === null || this.closed) return;
    this.spoolPending = this.o.spool.files().length > 0;
    if (this.spoolPending) this.schedule(0);
  }

  get onFull(): OnFull {
    return this.o.onFull;
  }

  stats(): AuditStats {
    return { ...this.s, queued: this.queue.length - this.own };
  }

  isFull(): boolean {
    return this.queue.length - this.own >= this.o.maxQueue || this.bytes >= this.o.maxQueueBytes;
  }

  /**
   * Accepts one event. Returns nothing, except under `block` with a full queue: then a promise that resolves
   * once the event is queued, or rejects with AuditUnavailableError after `blockTimeoutMs` (the event is
   * then counted as dropped, and the loss recorded).
   */
  accept(doc: StoredDoc): void | Promise<void> {
    if (!isChainRecord(doc)) this.s.accepted++;
    if (this.closed) return this.afterClose(doc);
    // The write-ahead line is written where the event is queued (enqueue): linked and hashed first.
    if (!this.isFull()) return this.enqueue(doc);
    switch (this.o.onFull) {
      case 'spool':
        return this.toSpool([doc]);
      case 'drop':
        return this.drop(1, doc.ts); // never linked: no gap in the chain
      case 'block':
        return this.acceptBlocking(doc);
    }
  }

  private release(seg: Segment | null): void {
    if (seg !== null) this.o.wal?.done(seg);
  }

  /** Resolves when there is room in the queue; rejects with AuditUnavailableError after `timeoutMs`. */
  waitForRoom(timeoutMs: number = this.o.blockTimeoutMs): Promise<void> {
    if (!this.isFull()) return Promise.resolve();
    if (timeoutMs <= 0) return Promise.reject(new AuditUnavailableError('Audit log full: the store is not keeping up'));
    return new Promise<void>((resolve, reject) => {
      const onSpace = (): void => {
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        const i = this.space.indexOf(onSpace);
        if (i >= 0) this.space.splice(i, 1);
        reject(new AuditUnavailableError('Audit log full: the store is not keeping up'));
      }, timeoutMs);
      this.space.push(onSpace);
    });
  }

  /**
   * Writes one document now, bypassing the queue (sync mode). Throws AuditUnavailableError when the store
   * refuses it or does not answer within `blockTimeoutMs` (a driver would otherwise wait for its own
   * server-selection timeout, 30 s by default, with the request hanging). On failure, `instead(doc)` (what
   * the caller will answer, under the same `_id`) goes through the queue, so the log still learns of it.
   */
  async writeNow(doc: StoredDoc, instead?: (doc: StoredDoc) => StoredDoc): Promise<void> {
    this.s.accepted++;
    // A chain's opening event goes through the queue; this one is written now.
    for (const d of this.link(doc)) {
      if (d === doc) continue;
      this.push(d);
      this.schedule(this.o.flushIntervalMs);
    }
    this.o.chain?.seal();
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.coll().insertOne(doc, this.insertOptions),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new AuditUnavailableError('Audit log write timed out')), this.o.blockTimeoutMs);
        }),
      ]);
      this.s.stored++;
      this.succeeded();
      this.o.onStored?.([doc]);
      await this.afterStore([doc], []);
    } catch (err) {
      if (storedBefore((err as { code?: unknown }).code, String((err as { message?: unknown }).message))) {
        this.s.stored++;
        this.succeeded();
        this.o.onStored?.([doc]);
        await this.afterStore([], [doc]);
        return;
      }
      if (isRefusal(err)) {
        // Not the store's fault: the reduced form goes through the queue, the request is not failed for it.
        this.report(new Error(`audit event ${String(doc._id)} refused by the server (${errorText(err)}); stored in a reduced form`));
        this.s.accepted--;
        const reduced = reducedForm(doc, errorText(err)); // same chain position: verify reports it as modified
        const queued = this.o.chain == null ? this.accept(reduced) : this.acceptLinked([reduced]);
        if (queued instanceof Promise) queued.catch((e: unknown) => this.report(e));
        return;
      }
      this.failed(err, started);
      if (instead !== undefined) {
        this.s.accepted--; // the same event, accepted once
        const replacement = instead(doc);
        const queued = this.o.chain == null ? this.accept(replacement) : this.acceptLinked(this.o.chain.relink(replacement));
        if (queued instanceof Promise) queued.catch((e: unknown) => this.report(e));
      }
      throw new AuditUnavailableError();
    } finally {
      clearTimeout(timer);
    }
  }

  /** Resolves when every accepted event (and every spooled one, once the store answers) is stored. */
  flush(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.queue.length === 0 && !this.draining && !this.spoolPending && this.lost === null) return Promise.resolve();
    const p = new Promise<void>((resolve) => this.idle.push(resolve));
    this.force = true;
    this.wake?.();
    this.schedule(0);
    return p;
  }

  /**
   * Flushes, then stops. After `timeoutMs`, events still in memory are moved to the spool when there is one
   * (a later process on the same directory replays them); resolves with how many are not stored: what the
   * spool now holds, or without a spool what was left in memory (those are lost, and counted as dropped).
   * Events accepted after close() go straight to the spool (or are dropped without one).
   */
  close(timeoutMs: number): Promise<{ unwritten: number }> {
    this.closing ??= this.shutDown(timeoutMs);
    return this.closing;
  }

  private async shutDown(timeoutMs: number): Promise<{ unwritten: number }> {
    let timedOut = false;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.flush(),
      new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          timedOut = true;
          resolve();
        }, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    this.flushSpoolBuffer();
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.wake?.(); // a drain loop asleep in a backoff ends now
    for (const w of this.idle.splice(0)) w();
    if (!timedOut) {
      this.o.wal?.close();
      return { unwritten: 0 };
    }
    const left = this.queue.splice(0);
    this.bytes = 0;
    this.own = 0;
    if (this.o.spool === null) {
      this.s.dropped += left.length;
      for (const q of left) this.release(q.wal);
      this.o.wal?.close();
      return { unwritten: left.length };
    }
    try {
      this.o.chain?.seal();
      this.o.spool.append(left.map((q) => q.doc));
      this.s.spooled += left.filter((q) => q.own !== true).length;
      this.ownSpooled += left.length - left.filter((q) => q.own !== true).length;
      for (const q of left) this.release(q.wal);
    } catch (err) {
      // Still in the write-ahead log, if there is one: the next process replays them from there.
      this.s.dropped += left.length;
      this.report(err);
    }
    this.o.wal?.close();
    const unwritten = Math.max(0, this.o.spool.count() - this.ownSpooled);
    if (unwritten === 0) this.o.spool.release();
    return { unwritten };
  }

  private afterClose(doc: StoredDoc): void {
    if (this.o.spool !== null) {
      this.toSpool([doc]);
      this.flushSpoolBuffer(); // nothing runs after close() to append it later
    } else this.s.dropped++;
  }

  private async acceptBlocking(doc: StoredDoc): Promise<void> {
    const deadline = Date.now() + this.o.blockTimeoutMs;
    try {
      // Woken waiters race for the room a write freed: whoever finds the queue full again waits again.
      while (this.isFull()) await this.waitForRoom(deadline - Date.now());
    } catch (err) {
      this.drop(1, doc.ts);
      throw err;
    }
    if (this.closed) this.afterClose(doc);
    else this.enqueue(doc);
  }

  private enqueue(doc: StoredDoc): void {
    for (const d of this.link(doc)) this.push(d);
    this.schedule(this.queue.length - this.own >= this.o.batchSize ? 0 : this.o.flushIntervalMs);
  }

  /** Queues a linked event; with a write-ahead log, its line (chain fields included) is on disk first. */
  private push(doc: StoredDoc): void {
    let wal: Segment | null = null;
    if (this.o.wal !== null) {
      this.o.chain?.seal();
      wal = this.o.wal.append(doc);
    }
    const own = isChainRecord(doc);
    const bytes = approximateSize(doc);
    this.queue.push(own ? { doc, bytes, wal, own } : { doc, bytes, wal });
    this.bytes += bytes;
    if (own) this.own++;
  }

  /** Links an event into the chain (with the chain's opening event before the first one). */
  private link(doc: StoredDoc): StoredDoc[] {
    return this.o.chain == null ? [doc] : this.o.chain.link(doc);
  }

  /** Accepts events the chain has already linked (a failed sync write's replacement). */
  private acceptLinked(docs: StoredDoc[]): void {
    this.s.accepted++;
    if (!this.closed && !this.isFull()) {
      for (const d of docs) this.push(d);
      this.schedule(0);
    } else if (this.o.spool !== null) this.appendToSpool(docs.map((doc) => ({ doc, bytes: 0, wal: null })));
    else this.drop(docs.length, docs[0].ts);
  }

  private toSpool(docs: StoredDoc[]): void {
    const items: Queued[] = [];
    for (const d of docs) for (const doc of this.link(d)) items.push({ doc, bytes: 0, wal: null });
    if (this.o.wal !== null) {
      this.appendToSpool(items);
      return;
    }
    // Counted as spooled now (stats are read right after a burst); a failed append takes them back as dropped.
    for (const q of items) {
      if (isChainRecord(q.doc)) this.ownSpooled++;
      else this.s.spooled++;
      this.spoolBuffer.push(q);
    }
    this.spoolPending = true;
    this.spoolFlush ??= setImmediate(() => this.flushSpoolBuffer());
  }

  /** Appends the buffered overflow (see spoolBuffer); everything that reads the spool calls this first. */
  private flushSpoolBuffer(): void {
    if (this.spoolFlush !== null) clearImmediate(this.spoolFlush);
    this.spoolFlush = null;
    const items = this.spoolBuffer;
    if (items.length === 0) return;
    this.spoolBuffer = [];
    const own = items.filter((q) => isChainRecord(q.doc)).length;
    this.s.spooled -= items.length - own;
    this.ownSpooled -= own;
    this.appendToSpool(items);
  }

  private appendToSpool(items: Queued[]): void {
    try {
      this.o.chain?.seal();
      (this.o.spool as Spool).append(items.map((q) => q.doc));
      const own = items.filter((q) => isChainRecord(q.doc)).length;
      this.s.spooled += items.length - own;
      this.ownSpooled += own;
      this.spoolPending = true;
      for (const q of items) this.release(q.wal);
    } catch (err) {
      this.report(err);
      this.drop(items.length, items[0].doc.ts);
    }
  }

  private drop(count: number, when: unknown): void {
    const ts = when instanceof Date ? when : new Date(); // the loss event must not fail on a malformed event
    this.s.dropped += count;
    if (this.lost === null) this.lost = { count, from: ts, to: ts };
    else {
      this.lost.count += count;
      if (ts < this.lost.from) this.lost.from = ts;
      if (ts > this.lost.to) this.lost.to = ts;
    }
  }

  /** `delay` 0: a full batch is waiting; otherwise arm the interval timer, after which everything is written. */
  private schedule(delay: number): void {
    if (this.closed) return;
    if (delay === 0) {
      if (this.draining) return;
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = setTimeout(() => this.drain(), 0);
    } else if (this.timer === null && !this.draining) {
      this.timer = setTimeout(() => {
        this.force = true;
        this.drain();
      }, delay);
    } else return;
    this.timer.unref();
  }

  private backoff(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.wake = null;
        resolve();
      };
      const t = setTimeout(done, ms);
      t.unref();
      this.wake = done;
    });
  }

  private async drain(): Promise<void> {
    this.timer = null;
    if (this.draining || this.closed) return;
    this.draining = true;
    let delay = this.o.retryMinMs;
    try {
      for (;;) {
        if (this.closed) break;
        // A loss is recorded with the next write; when nothing else is left to write, on its own.
        if (this.lost !== null && this.force && this.queue.length === 0 && !this.spoolPending) this.recordLoss();
        let ok: boolean;
        if (this.queue.length - this.own >= this.o.batchSize || ((this.force || this.singles > 0) && this.queue.length > 0)) ok = await this.writeHead();
        else if (this.spoolPending && (this.force || this.queue.length === 0)) ok = await this.replaySpool();
        else break;
        if (ok) {
          delay = this.o.retryMinMs;
          this.recordLoss();
        } else {
          this.s.retried++;
          await this.backoff(delay + Math.floor(Math.random() * delay * 0.2));
          delay = Math.min(delay * 2, this.o.retryMaxMs);
        }
      }
    } finally {
      this.draining = false;
    }
    if (this.queue.length > 0 && !this.closed) {
      this.schedule(this.o.flushIntervalMs); // a partial batch left: it waits for the interval
      return;
    }
    this.force = false;
    const waiters = this.idle.splice(0);
    for (const w of waiters) w();
  }

  /** Writes the head of the queue; true when the store answered (even if some documents were refused). */
  private async writeHead(): Promise<boolean> {
    this.o.chain?.seal();
    const batch = this.queue.slice(0, this.singles > 0 ? 1 : this.o.batchSize + this.own);
    const started = Date.now();
    try {
      await this.coll().insertMany(batch.map((q) => q.doc), this.insertOptions);
      await this.afterStore(batch.map((q) => q.doc), []);
      this.countWritten(batch.length, batch.length - ownIn(batch));
      this.o.onStored?.(batch.map((q) => q.doc));
      return true;
    } catch (err) {
      const errors = documentErrors(err);
      if (errors === null && isRefusal(err)) {
        if (batch.length > 1) {
          this.singles = batch.length; // which one is it? each on its own
          return true;
        }
        const q = batch[0];
        this.refused(q, errorText(err));
        this.countWritten(1, 0);
        return true;
      }
      if (errors === null) {
        this.failed(err, started);
        return false;
      }
      // The server answered: every document not named in writeErrors is stored, duplicates were stored before.
      let stored = batch.length;
      const keep: Queued[] = [];
      const refused = new Set<number>();
      const notNew = new Set<number>();
      const duplicates: StoredDoc[] = [];
      for (const e of errors) {
        notNew.add(e.index);
        if (storedBefore(e.code, e.message)) {
          duplicates.push(batch[e.index].doc);
          continue;
        }
        stored--;
        refused.add(e.index);
        this.refused(batch[e.index], e.message, keep);
      }
      await this.afterStore(batch.filter((_, i) => !notNew.has(i)).map((q) => q.doc), duplicates);
      this.countWritten(batch.length, Math.max(0, stored - ownIn(batch)));
      this.o.onStored?.(batch.filter((_, i) => !refused.has(i)).map((q) => q.doc));
      this.queue.unshift(...keep);
      for (const k of keep) this.bytes += k.bytes;
      return true;
    }
  }

  /**
   * An event the server will not take: its reduced form goes to the head of the queue (`keep`, or at once),
   * holding its write-ahead line; a reduced form refused too is a loss.
   */
  private refused(q: Queued, reason: string, keep?: Queued[]): void {
    if (q.stubbed) {
      this.drop(1, q.doc.ts);
      this.report(new Error(`audit event ${String(q.doc._id)} refused by the server even in its reduced form: ${reason}; recorded as a loss`));
      return;
    }
    this.report(new Error(`audit event ${String(q.doc._id)} refused by the server (${reason}); storing it in a reduced form`));
    // The write-ahead line moves to the reduced form: the original is let go only once that one is stored.
    const reduced: Queued = { doc: reducedForm(q.doc, reason), bytes: 512, stubbed: true, wal: q.wal };
    q.wal = null;
    if (keep !== undefined) keep.push(reduced);
    else {
      // countWritten(1) will take the head (q) off: the reduced form goes right behind it.
      this.queue.splice(1, 0, reduced);
      this.bytes += reduced.bytes;
      this.singles++;
    }
  }

  private countWritten(removed: number, stored: number): void {
    const out = this.queue.splice(0, removed);
    this.singles = Math.max(0, this.singles - removed);
    for (const q of out) {
      this.bytes -= q.bytes;
      if (q.own === true) this.own--;
      this.release(q.wal);
    }
    this.s.stored += stored;
    this.succeeded();
    // Wake only as many waiters as there is room for: the queue's bound holds under `block` too.
    let room = this.bytes >= this.o.maxQueueBytes ? 0 : this.o.maxQueue - (this.queue.length - this.own);
    while (room-- > 0 && this.space.length > 0) (this.space.shift() as () => void)();
  }

  private async replaySpool(): Promise<boolean> {
    this.flushSpoolBuffer();
    const spool = this.o.spool as Spool;
    const started = Date.now();
    try {
      await spool.replay(this.o.batchSize, async (docs) => {
        try {
          await this.coll().insertMany(docs, this.insertOptions);
          this.s.stored += docs.length - ownOf(docs);
          this.o.onStored?.(docs);
          await this.afterStore(docs, []);
        } catch (err) {
          const errors = documentErrors(err);
          if (errors === null && isRefusal(err)) {
            for (const d of docs) await this.replayOne(d);
            this.succeeded();
            return;
          }
          if (errors === null) throw err;
          // Duplicates were stored (and counted) by an earlier replay of this file, or by another process.
          this.s.stored += docs.length - errors.length; // duplicates included: counted when first stored
          const refused = new Set<number>();
          for (const e of errors) if (!storedBefore(e.code, e.message)) refused.add(e.index);
          this.o.onStored?.(docs.filter((_, i) => !refused.has(i)));
          const notNew = new Set(errors.map((e) => e.index));
          const duplicates: StoredDoc[] = [];
          for (const e of errors) if (storedBefore(e.code, e.message)) duplicates.push(docs[e.index]);
          await this.afterStore(docs.filter((_, i) => !notNew.has(i)), duplicates);
          for (const e of errors) {
            if (storedBefore(e.code, e.message)) continue;
            this.s.stored--; // counted above; stored now only if its reduced form is
            await this.replayReduced(docs[e.index], e.message);
          }
        }
        this.succeeded();
      });
      this.spoolPending = spool.files().length > 0;
      if (!this.spoolPending) this.ownSpooled = 0;
      this.succeeded();
      return true;
    } catch (err) {
      this.failed(err, started);
      return false;
    }
  }

  /** One spooled event on its own (its batch was refused): stored, or stored reduced, or a loss. Throws on an outage. */
  private async replayOne(doc: StoredDoc): Promise<void> {
    try {
      await this.coll().insertOne(doc, this.insertOptions);
      this.s.stored++;
      this.o.onStored?.([doc]);
      await this.afterStore([doc], []);
    } catch (err) {
      if (storedBefore((err as { code?: unknown }).code, String((err as { message?: unknown }).message))) {
        this.o.onStored?.([doc]);
        await this.afterStore([], [doc]);
        return;
      }
      if (!isRefusal(err)) throw err;
      await this.replayReduced(doc, errorText(err));
    }
  }

  private async replayReduced(doc: StoredDoc, reason: string): Promise<void> {
    this.report(new Error(`spooled audit event ${String(doc._id)} refused by the server (${reason}); storing it in a reduced form`));
    try {
      const reduced = reducedForm(doc, reason);
      await this.coll().insertOne(reduced, this.insertOptions);
      this.s.stored++;
      this.o.onStored?.([reduced]);
      await this.afterStore([reduced], []);
    } catch (err) {
      if (storedBefore((err as { code?: unknown }).code, String((err as { message?: unknown }).message))) {
        await this.afterStore([], [doc]);
        return;
      }
      if (!isRefusal(err)) throw err;
      this.drop(1, doc.ts);
      this.report(new Error(`spooled audit event ${String(doc._id)} refused even in its reduced form (${errorText(err)}); recorded as a loss`));
    }
  }

  private async afterStore(stored: StoredDoc[], duplicates: StoredDoc[]): Promise<void> {
    if (this.o.afterStore === undefined) return;
    try {
      await this.o.afterStore(stored, duplicates);
    } catch (err) {
      this.report(err);
    }
  }

  /** After a loss, the gap itself becomes an event as soon as the store takes writes again. */
  private recordLoss(): void {
    if (this.lost === null || this.closed) return;
    const { count, from, to } = this.lost;
    this.lost = null;
    const doc = this.o.lossEvent({ lost: count, from, to, policy: this.o.onFull });
    for (const d of this.link(doc)) this.push(d);
  }

  private succeeded(): void {
    this.failingSince = null;
    this.lastSuccess = Date.now();
    if (this.s.degraded) {
      this.s.degraded = false;
      this.events.emit('recovered');
    }
  }

  private failed(err: unknown, started: number): void {
    // An attempt that began before the last success (a sync write that waited through the outage and timed
    // out after it) is stale: counting it would start a new outage, and a storm of degraded/recovered pairs.
    if (started < this.lastSuccess) {
      this.report(err);
      return;
    }
    if (this.failingSince === null) this.failingSince = started;
    if (!this.s.degraded && Date.now() - this.failingSince >= this.o.degradedAfterMs) {
      this.s.degraded = true;
      this.events.emit('degraded', err);
    }
    this.report(err);
  }

  private report(err: unknown): void {
    reportError(this.events, err);
  }
}

/** The chain's own records in a batch: they are not the application's, and not counted as stored. */
function ownIn(batch: Queued[]): number {
  let n = 0;
  for (const q of batch) if (q.own === true) n++;
  return n;
}

function ownOf(docs: StoredDoc[]): number {
  let n = 0;
  for (const d of docs) if (isChainRecord(d)) n++;
  return n;
}

function errorText(err: unknown): string {
  const m = (err as { message?: unknown } | null)?.message;
  return (typeof m === 'string' ? m : String(err)).slice(0, 1024);
}

/** A cheap upper-bound estimate of an event's size, for the queue's byte bound. */
function approximateSize(v: unknown): number {
  switch (typeof v) {
    case 'string':
      return v.length * 2 + 8;
    case 'object': {
      if (v === null) return 4;
      if (v instanceof Date) return 12;
      if (Array.isArray(v)) {
        let n = 8;
        for (const x of v) n += approximateSize(x);
        return n;
      }
      if (bsonType(v) !== undefined) return 16;
      let n = 8;
      for (const k in v as object) n += k.length + 4 + approximateSize((v as Record<string, unknown>)[k]);
      return n;
    }
    default:
      return 8;
  }
}
