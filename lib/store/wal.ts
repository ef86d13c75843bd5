/**
 * The write-ahead file of `durability: 'disk'`: every accepted event is appended (one write(2), synchronous)
 * before `accept()` returns, so that a process killed one instruction later has it on disk; once the store
 * has an event, it no longer needs its line. Lines cannot be removed one by one, so the file is cut into
 * segments: a segment is deleted as soon as every event in it is stored (or handed to the spool, itself on
 * disk), and a new one is started when the current one is done or has grown past `SEGMENT_BYTES`.
 *
 * Segments are spool-format files (`wal-….bson`, with the destination header, 0600, in the spool directory; one
 * BSON record per event, spool-records.ts): what a dead process leaves is replayed by the spool of the next one
 * (spool.ts), and `_id`s make the events it had already stored harmless. (Segments of earlier versions, `.ndjson`
 * Extended JSON lines, are replayed too.) The write is not fsync'd: it survives the death of the process, not a
 * crash of the machine.
 */
import { closeSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { StoredDoc } from '../core/types.js';
import { BSON_SUFFIX, createOwnFile, newFileName, trustedDir, writeAll } from './spool-files.js';
import { encodeRecords } from './spool-records.js';
import type { Spool } from './spool.js';

const SEGMENT_BYTES = 16 * 1024 * 1024;

/** One segment: its events not yet stored. */
export interface Segment {
  readonly path: string;
  fd: number | null;
  pending: number;
  bytes: number;
}

export class WriteAheadLog {
  private readonly spool: Spool;
  private current: Segment | null = null;

  /** The log lives in `spool`'s directory, under its instance token and destination. */
  constructor(spool: Spool) {
    this.spool = spool;
  }

  /** Appends one event; the returned segment is handed back to `done()` once the event no longer needs it. */
  append(doc: StoredDoc): Segment {
    // One record, one write(2): BSON, as the driver will send it (Extended JSON text cost ~4× the CPU).
    const record = encodeRecords([doc]);
    let seg = this.current;
    if (seg === null || seg.bytes > SEGMENT_BYTES) {
      if (seg !== null) this.retire(seg);
      trustedDir(this.spool.dir);
      const path = join(this.spool.dir, newFileName('wal', this.spool.instance, BSON_SUFFIX));
      seg = { path, fd: createOwnFile(path, 'wal', this.spool.destination, 2), pending: 0, bytes: 0 };
      this.current = seg;
    }
    writeAll(seg.fd as number, record);
    seg.pending++;
    seg.bytes += record[0].length + record[1].length;
    return seg;
  }

  /** The event is stored (or spooled, or given up): its segment goes once all of its events have. */
  done(seg: Segment): void {
    seg.pending--;
    if (seg.pending > 0) return;
    if (seg === this.current) this.current = null;
    this.retire(seg);
    if (seg.pending === 0) {
      try {
        unlinkSync(seg.path);
      } catch {
        // already gone
      }
    }
  }

  /** Closes the file of a segment; it stays on disk until its last event is done. */
  private retire(seg: Segment): void {
    if (seg.fd === null) return;
    try {
      closeSync(seg.fd);
    } catch {
      // already closed
    }
    seg.fd = null;
  }

  /** Stops writing. Segments with events not stored stay on disk for the next process (or auditor) to replay. */
  close(): void {
    if (this.current !== null) this.retire(this.current);
    this.current = null;
  }
}
