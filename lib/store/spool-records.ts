/**
 * The binary body of a spool file (`.bson`): after the destination header line, one record per event, each a
 * 4-byte mark followed by the event's BSON document (which starts with its own length). BSON is what the driver
 * sends the server anyway: an event is serialised once to be spooled and read back as the driver would, with
 * no text form in between (the `.ndjson` files of earlier versions held Extended JSON lines; they are still read).
 *
 * A crash mid-append leaves a torn last record: it is recognised (length past the end of the file, no closing
 * NUL, a document that does not parse) and skipped; reading resumes at the next mark, so anything written
 * after a damaged record is still found.
 */
import { mongo } from 'mongoose';
import type { StoredDoc } from '../core/types.js';

const { BSON } = mongo;

/** The mark before every record: "KAE" and a format byte. */
export const MARK = Buffer.from([0x4b, 0x41, 0x45, 0x01]);

/** The size of the buffer bson's serialize works in: a longer document comes out cut, silently. */
const SERIALIZE_BUFFER = 17 * 1024 * 1024;

/** The records of `docs`, as buffers to write in one call. */
export function encodeRecords(docs: readonly StoredDoc[]): Buffer[] {
  const out: Buffer[] = [];
  for (const d of docs) {
    let bytes = BSON.serialize(d as mongo.Document) as Buffer;
    if (bytes.length >= SERIALIZE_BUFFER) {
      // Events are bounded far below this (maxEventBytes), but Spool's callers may hold a bigger one (an older
      // spool's): bson's shared buffer grows to its size for this one document, then back to its usual size.
      BSON.setInternalBufferSize(BSON.calculateObjectSize(d as mongo.Document) + 1);
      try {
        bytes = BSON.serialize(d as mongo.Document) as Buffer;
      } finally {
        BSON.setInternalBufferSize(SERIALIZE_BUFFER);
      }
    }
    out.push(MARK, bytes);
  }
  return out;
}

function markAt(buf: Buffer, i: number): boolean {
  return buf[i] === MARK[0] && buf[i + 1] === MARK[1] && buf[i + 2] === MARK[2] && buf[i + 3] === MARK[3];
}

/** The next mark at or after `from`, or -1. */
function nextMark(buf: Buffer, from: number): number {
  return buf.indexOf(MARK, from);
}

export interface Parsed {
  docs: StoredDoc[];
  /** Bytes of `buf` dealt with; the rest waits for more of the file (unless `final`). */
  consumed: number;
  /** Records found damaged and skipped. */
  damaged: number;
}

/**
 * The records in `buf[start..]`; `more` bytes of the file follow `buf`. A record that runs past the end of `buf`
 * is left for the next call, with more of the file; past the end of the file, it is a torn record, skipped.
 * `decode` false: records are only checked for their frame (counting), not parsed.
 */
export function parseRecords(buf: Buffer, start: number, more: number, decode = true): Parsed {
  const final = more === 0;
  const docs: StoredDoc[] = [];
  let damaged = 0;
  let p = start;
  while (p < buf.length) {
    if (buf.length - p < 8) {
      if (!final) break;
      damaged++;
      p = buf.length;
      break;
    }
    let ok = markAt(buf, p);
    const size = ok ? buf.readInt32LE(p + 4) : 0;
    if (ok && (size < 5 || p + 4 + size > buf.length + more)) ok = false;
    if (ok && p + 4 + size > buf.length) break; // the rest of this record is further in the file
    if (ok && buf[p + 4 + size - 1] !== 0) ok = false;
    if (ok && decode) {
      try {
        docs.push(BSON.deserialize(buf.subarray(p + 4, p + 4 + size)) as StoredDoc);
      } catch {
        ok = false;
      }
    } else if (ok) docs.push(null as unknown as StoredDoc);
    if (ok) {
      p += 4 + size;
      continue;
    }
    // Damage: resume at the next mark. Without one in what was read, keep the last bytes (a mark may be cut).
    damaged++;
    const next = nextMark(buf, p + 1);
    if (next >= 0) {
      p = next;
      continue;
    }
    p = final ? buf.length : Math.max(p + 1, buf.length - (MARK.length - 1));
    break;
  }
  return { docs, consumed: p - start, damaged };
}

const CHUNK = 1024 * 1024;

/**
 * A binary spool file's records, fed to it a chunk at a time: the header line is skipped, and a record cut
 * between two chunks is kept until the next one completes it.
 */
export class RecordReader {
  private buf: Buffer = Buffer.alloc(0);
  private headerDone = false;
  /** `decode` false: records are counted, not parsed (their entries are null). */
  constructor(private readonly decode: boolean) {}

  /** A buffer for the next read: a chunk, or more when a record longer than that waits to be completed. */
  chunk(): Buffer {
    return Buffer.allocUnsafe(Math.max(CHUNK, this.buf.length));
  }

  /** The records completed by `bytes`; `more` bytes of the file follow them (0: the end of the file). */
  feed(bytes: Buffer, more: number): StoredDoc[] {
    // Each chunk() is a new buffer: what is left of this one may be kept as it is.
    this.buf = this.buf.length === 0 ? bytes : Buffer.concat([this.buf, bytes]);
    let start = 0;
    if (!this.headerDone) {
      const nl = this.buf.indexOf(0x0a);
      if (nl < 0 && more > 0) return [];
      this.headerDone = true;
      start = nl < 0 ? this.buf.length : nl + 1;
    }
    const parsed = parseRecords(this.buf, start, more, this.decode);
    this.buf = this.buf.subarray(start + parsed.consumed);
    return parsed.docs;
  }
}
