/**
 * The spool: events that did not fit in memory, kept as Extended JSON lines in local files until the store
 * takes them. Files are named by time, so replay keeps their order; a new process on the same directory
 * replays what a crashed one left. Every event keeps the `_id` it got when accepted, so replaying a file twice
 * (two processes, or a crash mid-replay) stores nothing twice.
 */
import { accessSync, appendFileSync, constants, createReadStream, mkdirSync, readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { mongo } from 'mongoose';

const { EJSON } = mongo.BSON;
const PREFIX = 'spool-';
const SUFFIX = '.ndjson';

export type StoredDoc = Record<string, unknown>;

/** Creates the directory if needed; throws when it cannot be written. */
export function ensureWritableDir(dir: string): void {
  mkdirSync(dir, { recursive: true });
  accessSync(dir, constants.W_OK);
}

export class Spool {
  readonly dir: string;
  private file: string | null = null;
  private seq = 0;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Appends synchronously: an event handed to the spool survives a crash one instruction later. */
  append(docs: readonly StoredDoc[]): void {
    if (docs.length === 0) return;
    if (this.file === null) {
      ensureWritableDir(this.dir);
      const stamp = Date.now().toString().padStart(15, '0');
      this.file = join(this.dir, `${PREFIX}${stamp}-${process.pid}-${this.seq++}${SUFFIX}`);
    }
    let text = '';
    for (const d of docs) text += `${EJSON.stringify(d, { relaxed: false })}\n`;
    appendFileSync(this.file, text);
  }

  /** Spool files waiting for replay, oldest first. */
  files(): string[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    return names.filter((n) => n.startsWith(PREFIX) && n.endsWith(SUFFIX)).sort().map((n) => join(this.dir, n));
  }

  /**
   * Feeds every spooled event to `write` in batches, oldest first; a file is removed once all of it is written.
   * New appends go to a new file from here on, so the file being replayed is never written to.
   */
  async replay(batchSize: number, write: (batch: StoredDoc[]) => Promise<void>): Promise<number> {
    this.file = null;
    let total = 0;
    for (const file of this.files()) {
      let batch: StoredDoc[] = [];
      const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
      for await (const line of lines) {
        if (line.trim() === '') continue;
        try {
          batch.push(EJSON.parse(line, { relaxed: false }) as StoredDoc);
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
      try {
        unlinkSync(file);
      } catch {
        // already removed by another process replaying the same directory
      }
    }
    return total;
  }
}
