/**
 * The spool: events that did not fit in memory, kept as Extended JSON lines in local files until the store
 * takes them. Files are named by time (and the writing process's pid), so replay keeps their order; a new
 * process on the same directory replays what a crashed one left, never a file that a live process still
 * writes. Every event keeps the `_id` it got when accepted, so replaying a file twice (two processes, or a
 * crash mid-replay) stores nothing twice.
 */
import {
  accessSync, closeSync, constants, createReadStream, mkdirSync, openSync, readdirSync, readSync, renameSync,
  unlinkSync, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { mongo } from 'mongoose';
import type { StoredDoc } from '../core/types.js';

const { EJSON } = mongo.BSON;
// Written canonical (every BSON type kept), read relaxed (plain numbers again, as the events were built).
const PREFIX = 'spool-';
const SUFFIX = '.ndjson';
/** A file being replayed is renamed first, so that a process still appending to its old name starts a new file. */
const CLAIMED = '.replaying';

/** Creates the directory if needed; throws when it cannot be written. */
export function ensureWritableDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
  accessSync(dir, constants.W_OK);
}

const OWNER = /-(\d+)\.ndjson(?:\.replaying)?$/;

/** True when the file's writer (the pid in its name) is another process, still running. */
function ownedByAnother(name: string): boolean {
  const m = OWNER.exec(name);
  if (m === null) return false;
  const pid = Number(m[1]);
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM'; // exists, but is not ours to signal
  }
}

/** Sort key: the name without the claim suffix, so a claimed file keeps its place in time. */
function baseName(name: string): string {
  return name.endsWith(CLAIMED) ? name.slice(0, -CLAIMED.length) : name;
}

export class Spool {
  readonly dir: string;
  private file: string | null = null;
  /** Kept open between appends: one write(2) per append instead of open, write and close. */
  private fd: number | null = null;
  private seq = 0;

  constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * Appends synchronously: an event handed to the spool is in the kernel's hands when this returns, so it
   * survives a crash of the process one instruction later.
   */
  append(docs: readonly StoredDoc[]): void {
    if (docs.length === 0) return;
    let text = '';
    for (const d of docs) text += `${EJSON.stringify(d, { relaxed: false })}\n`;
    if (this.fd === null) {
      ensureWritableDir(this.dir);
      const stamp = Date.now().toString().padStart(15, '0');
      const seq = (this.seq++).toString().padStart(6, '0');
      this.file = join(this.dir, `${PREFIX}${stamp}-${seq}-${process.pid}${SUFFIX}`);
      this.fd = openSync(this.file, 'a');
    }
    writeSync(this.fd, text);
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

  /**
   * Spool files this process may replay, oldest first: its own, and those of processes that are gone (a
   * crashed replay's claimed files included). A live process's files are its own business: it may still be
   * appending to them.
   */
  files(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    return names
      .filter((n) => n.startsWith(PREFIX) && (n.endsWith(SUFFIX) || n.endsWith(SUFFIX + CLAIMED)) && !ownedByAnother(n))
      .sort((a, b) => (baseName(a) < baseName(b) ? -1 : baseName(a) > baseName(b) ? 1 : 0))
      .map((n) => join(this.dir, n));
  }

  /** Events waiting in the spool (lines of its files). Reads the files: for close() and tests, not the hot path. */
  count(): number {
    let n = 0;
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (const file of this.files()) {
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
      let batch: StoredDoc[] = [];
      const input = createReadStream(file, 'utf8');
      const lines = createInterface({ input, crlfDelay: Infinity });
      try {
        for await (const line of lines) {
          if (line.trim() === '') continue;
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
