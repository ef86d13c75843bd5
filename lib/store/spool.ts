/**
 * The spool: events that did not fit in memory, kept as BSON records in local files (spool-records.ts) until
 * the store takes them; the Extended JSON lines of earlier versions' files (and of write-ahead files) are read too. Files are named by time, so replay keeps their order; a new process on the same directory
 * replays what a crashed one left (its write-ahead files too, see wal.ts), never a file that a live auditor
 * still writes. Every event keeps the `_id` it got when accepted and every other field (a hash chain's
 * included), so replaying a file twice (two processes, or a crash mid-replay) stores nothing twice.
 *
 * The directory and its files are guarded as data (spool-files.ts): a file of another destination, or one
 * that another user could have written, is left alone and reported once.
 */
import { closeSync, createReadStream, fstatSync, readdirSync, readSync, openSync, renameSync, unlinkSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { mongo } from 'mongoose';
import type { StoredDoc } from '../core/types.js';
import { encodeRecords, RecordReader } from './spool-records.js';
import {
  BSON_SUFFIX, CLAIMED, createOwnFile, distrustFile, instanceToken, isHeader, newFileName, parseName, readDestination, registerInstance,
  replayable, sameDestination, trustedDir, unregisterInstance, writeAll, type Destination, type FileName,
} from './spool-files.js';

const { EJSON } = mongo.BSON;
// Written canonical (every BSON type kept), read relaxed (plain numbers again, as the events were built).

/** Checks that a directory can be used as a spool (created 0700 if missing); throws a SpoolTrustError if not. */
export function ensureWritableDir(dir: string): void {
  trustedDir(dir);
}

export class Spool {
  /** This auditor's files carry this token (see spool-files.ts). */
  readonly instance: string;
  private readonly dirOf: () => string;
  private resolved: string | null = null;
  private readonly destinationOf: () => Destination;
  private file: string | null = null;
  /** Kept open between appends: one write(2) per append instead of open, write and close. */
  private fd: number | null = null;
  /** Files already reported as not ours to replay: each is reported once. */
  private readonly reported = new Set<string>();
  /** Where a file that is left alone is reported. */
  onRefused: (message: string) => void = () => {};

  /**
   * `dir` may be given lazily: the default directory depends on the database name, which a connection knows
   * only once it has been given a URI. `destination` is where this spool's events belong.
   */
  constructor(dir: string | (() => string), destination: () => Destination = () => ({ db: null, collection: '' })) {
    this.dirOf = typeof dir === 'string' ? () => dir : dir;
    this.destinationOf = destination;
    this.instance = instanceToken();
    registerInstance(this.instance);
  }

  get dir(): string {
    this.resolved ??= this.dirOf();
    return this.resolved;
  }

  get destination(): Destination {
    return this.destinationOf();
  }

  /**
   * Appends synchronously: an event handed to the spool is in the kernel's hands when this returns, so it
   * survives a crash of the process one instruction later.
   */
  append(docs: readonly StoredDoc[]): void {
    if (docs.length === 0) return;
    const records = encodeRecords(docs);
    if (this.fd === null) {
      trustedDir(this.dir);
      this.file = join(this.dir, newFileName('spool', this.instance, BSON_SUFFIX));
      this.fd = createOwnFile(this.file, 'spool', this.destination, 2);
    }
    writeAll(this.fd, records);
  }

  /** Closes the current file: the next append starts a new one. */
  release(): void {
    if (this.fd !== null) {
      try {
        closeSync(this.fd);
      } catch {
        // already closed
      }
    }
    this.fd = null;
    this.file = null;
  }

  /** This spool is done: its files become anyone's to replay (a later auditor on the directory). */
  close(): void {
    this.release();
    unregisterInstance(this.instance);
  }

  private refuse(name: string, why: string): void {
    if (this.reported.has(name)) return;
    this.reported.add(name);
    this.onRefused(`koa-audit: spool file ${join(this.dir, name)} left alone, not replayed: ${why}`);
  }

  /**
   * Files this auditor may replay, oldest first: its own spool files, and the spool and write-ahead files of
   * auditors that are gone (a crashed replay's claimed files included), for its destination, written by
   * this user and nobody else. Anything else found is reported once and left alone.
   */
  files(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    const mine = this.destination;
    const ok: { name: string; f: FileName }[] = [];
    for (const name of names) {
      const f = parseName(name);
      if (f === null) {
        if (name.endsWith('.ndjson') || name.endsWith(BSON_SUFFIX) || name.endsWith(CLAIMED)) this.refuse(name, 'not a file this version of koa-audit wrote (no destination recorded)');
        continue;
      }
      if (!replayable(f, this.instance)) continue;
      const path = join(this.dir, name);
      const why = distrustFile(path);
      if (why !== null) {
        this.refuse(name, why.replace(`spool file ${path} `, 'it '));
        continue;
      }
      const d = readDestination(path);
      if (d === null) {
        // An own file whose header is being written, or a file torn before its header: only a foreign one is reported.
        if (f.instance !== this.instance) this.refuse(name, 'it records no destination');
        continue;
      }
      if (!sameDestination(d, mine)) {
        this.refuse(name, `it belongs to database ${JSON.stringify(d.db)}, collection ${JSON.stringify(d.collection)}, not to ${JSON.stringify(mine.db)}, ${JSON.stringify(mine.collection)}`);
        continue;
      }
      ok.push({ name, f });
    }
    return ok.sort((a, b) => (a.f.order < b.f.order ? -1 : a.f.order > b.f.order ? 1 : 0)).map((x) => join(this.dir, x.name));
  }

  /** Events waiting in the spool (lines or records of its files). Reads the files: for close() and tests, not the hot path. */
  count(): number {
    let n = 0;
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (const file of this.files()) {
      if (isBinary(file)) {
        n += countRecords(file);
        continue;
      }
      let fd: number;
      try {
        fd = openSync(file, 'r');
      } catch {
        continue;
      }
      try {
        for (let got = readSync(fd, buf); got > 0; got = readSync(fd, buf)) {
          for (let i = 0; i < got; i++) if (buf[i] === 0x0a) n++;
        }
      } finally {
        closeSync(fd);
      }
      n--; // the header line
    }
    return n;
  }

  /**
   * Feeds every spooled event to `write` in batches, oldest first; a file is removed once all of it is written.
   * New appends go to a new file from here on, so the file being replayed is never written to. If `write`
   * throws, the file stays (claimed) and the next replay starts it again; `_id`s make that harmless.
   * Resolves with how many events it read and handed to `write`.
   */
  async replay(batchSize: number, write: (batch: StoredDoc[]) => Promise<void>): Promise<number> {
    this.release();
    let total = 0;
    for (const found of this.files()) {
      let file = found;
      if (!file.endsWith(CLAIMED)) {
        try {
          renameSync(found, found + CLAIMED);
          file = found + CLAIMED;
        } catch {
          continue; // another process claimed it first
        }
      }
      if (isBinary(file)) {
        total += await replayRecords(file, batchSize, write);
        try {
          unlinkSync(file);
        } catch {
          // already removed by another process replaying the same directory
        }
        continue;
      }
      let batch: StoredDoc[] = [];
      const input = createReadStream(file, 'utf8');
      const lines = createInterface({ input, crlfDelay: Infinity });
      try {
        for await (const line of lines) {
          if (line.trim() === '' || isHeader(line)) continue;
          try {
            batch.push(EJSON.parse(line, { relaxed: true }) as StoredDoc);
          } catch {
            continue; // a torn last line from a crash mid-append: the rest of the file is still good
          }
          if (batch.length >= batchSize) {
            await write(batch);
            total += batch.length;
            batch = [];
          }
        }
        if (batch.length > 0) {
          await write(batch);
          total += batch.length;
        }
      } finally {
        lines.close();
        input.destroy();
      }
      try {
        unlinkSync(file);
      } catch {
        // already removed by another process replaying the same directory
      }
    }
    return total;
  }
}

function isBinary(file: string): boolean {
  return file.endsWith(BSON_SUFFIX) || file.endsWith(BSON_SUFFIX + CLAIMED);
}

/** The records of a binary spool file, past its header, a chunk at a time (a record longer than a chunk: a longer read). */
async function replayRecords(file: string, batchSize: number, write: (batch: StoredDoc[]) => Promise<void>): Promise<number> {
  const fh = await open(file, 'r');
  let total = 0;
  try {
    const size = (await fh.stat()).size; // a file being replayed is no longer appended to
    const reader = new RecordReader(true);
    let batch: StoredDoc[] = [];
    for (let offset = 0; ;) {
      const chunk = reader.chunk();
      const { bytesRead } = await fh.read(chunk, 0, Math.min(chunk.length, Math.max(0, size - offset)), offset);
      offset += bytesRead;
      const final = bytesRead === 0 || offset >= size;
      for (const d of reader.feed(chunk.subarray(0, bytesRead), final ? 0 : size - offset)) {
        batch.push(d);
        if (batch.length >= batchSize) {
          await write(batch);
          total += batch.length;
          batch = [];
        }
      }
      if (final) break;
    }
    if (batch.length > 0) {
      await write(batch);
      total += batch.length;
    }
  } finally {
    await fh.close();
  }
  return total;
}

/** Records in a binary spool file (their frames checked, not parsed), a chunk at a time. */
function countRecords(file: string): number {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return 0;
  }
  let n = 0;
  try {
    const size = fstatSync(fd).size;
    const reader = new RecordReader(false);
    for (let offset = 0; ;) {
      const chunk = reader.chunk();
      const got = readSync(fd, chunk, 0, Math.min(chunk.length, Math.max(0, size - offset)), offset);
      offset += got;
      const final = got === 0 || offset >= size;
      n += reader.feed(chunk.subarray(0, got), final ? 0 : size - offset).length;
      if (final) break;
    }
  } finally {
    closeSync(fd);
  }
  return n;
}

/** The events of one spool file of either format, read at once: for tests and tools, not the store. */
export async function spooledEvents(file: string): Promise<StoredDoc[]> {
  const out: StoredDoc[] = [];
  if (isBinary(file)) {
    await replayRecords(file, 1000, async (batch) => void out.push(...batch));
    return out;
  }
  const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.trim() === '' || isHeader(line)) continue;
    try {
      out.push(EJSON.parse(line, { relaxed: true }) as StoredDoc);
    } catch {
      // torn
    }
  }
  return out;
}
