/**
 * The files the store keeps on disk (spool files and write-ahead files) are data: where they live, who may
 * have written them, and which destination they belong to.
 *
 * - Location: by default `<tmp>/koa-audit-spool-<uid>/<database>.<collection>-<hash>`, one directory per
 *   destination, so two apps on one host never share one.
 * - Trust: directories are created 0700 and files 0600 by this process (O_EXCL, no symlink followed). A
 *   directory or a file that another user owns, or that others can write, is refused: never read, never replayed.
 * - Destination: the first line of every file names the database and collection it belongs to; a file of
 *   another destination is left alone.
 * - Names: `<kind>-<time>-<seq>-<instance>-<pid>.<format>`, the format `bson` (spool and write-ahead files:
 *   spool-records.ts) or `ndjson` (both kinds, as earlier versions wrote them: Extended JSON lines); the instance
 *   token tells this auditor's own files from those of an earlier process that had the same pid (a restarted
 *   container's pid 1, say).
 */
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, chmodSync, closeSync, constants, lstatSync, mkdirSync, openSync, readSync, writeSync, writevSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Destination {
  /** The database name, or null when the connection has not named one yet. */
  db: string | null;
  collection: string;
}

export type FileKind = 'spool' | 'wal';

export const SUFFIX = '.ndjson';
/** Spool files of this version: binary records (spool-records.ts). */
export const BSON_SUFFIX = '.bson';
/** A file being replayed is renamed first, so that a process still appending to its old name starts a new file. */
export const CLAIMED = '.replaying';
const NAME = /^(spool|wal)-(\d{15})-(\d{6})-([0-9a-f]{8})-(\d+)\.(ndjson|bson)(\.replaying)?$/;

export interface FileName {
  kind: FileKind;
  /** Sorts files in the order they were started. */
  order: string;
  instance: string;
  pid: number;
  claimed: boolean;
  /** How its events are written: Extended JSON lines, or binary records. */
  format: 'ndjson' | 'bson';
}

export function parseName(name: string): FileName | null {
  const m = NAME.exec(name);
  if (m === null) return null;
  return { kind: m[1] as FileKind, order: `${m[2]}-${m[3]}`, instance: m[4], pid: Number(m[5]), claimed: m[7] !== undefined, format: m[6] as 'ndjson' | 'bson' };
}

/** This process's auditors: one token each (files of an earlier process with the same pid are not ours). */
export function instanceToken(): string {
  return randomBytes(4).toString('hex');
}

let seq = 0;
export function newFileName(kind: FileKind, instance: string, suffix: string = SUFFIX): string {
  const stamp = Date.now().toString().padStart(15, '0');
  return `${kind}-${stamp}-${(seq++ % 1_000_000).toString().padStart(6, '0')}-${instance}-${process.pid}${suffix}`;
}

/** A spool directory that cannot be trusted (or used): the message says why and names it. */
export class SpoolTrustError extends Error {
  constructor(message: string) {
    super(`koa-audit: ${message}`);
    this.name = 'SpoolTrustError';
  }
}

const uid = (): number | undefined => (typeof process.getuid === 'function' ? process.getuid() : undefined);

/** Why a file or directory cannot be trusted, or null. */
function distrust(path: string, what: 'directory' | 'file'): string | null {
  const st = lstatSync(path);
  if (what === 'directory' ? !st.isDirectory() : !st.isFile()) return `spool ${what} ${path} is not a plain ${what} (a symbolic link or something else)`;
  const me = uid();
  if (me !== undefined && st.uid !== me) return `spool ${what} ${path} is owned by uid ${st.uid}, not by this process's user (uid ${me})`;
  if (me !== undefined && (st.mode & 0o022) !== 0) return `spool ${what} ${path} can be written by other users (mode ${(st.mode & 0o777).toString(8)}): refusing it`;
  return null;
}

/** Creates `dir` (0700) when missing; throws SpoolTrustError when it is not ours alone, or not writable. */
export function trustedDir(dir: string): void {
  let created: string | undefined;
  try {
    created = mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new SpoolTrustError(`spool directory ${dir} is not writable: it cannot be created (${(err as Error).message})`);
  }
  if (created !== undefined) chmodSync(dir, 0o700); // exactly 0700, whatever the umask
  const why = distrust(dir, 'directory');
  if (why !== null) throw new SpoolTrustError(why);
  try {
    accessSync(dir, constants.W_OK);
  } catch (err) {
    throw new SpoolTrustError(`spool directory ${dir} is not writable (${(err as Error).message})`);
  }
}

/** Why a spool file must not be read, or null. */
export function distrustFile(path: string): string | null {
  try {
    return distrust(path, 'file');
  } catch (err) {
    return `spool file ${path} cannot be inspected (${(err as Error).message})`;
  }
}

const safe = (s: string): string => s.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 64);

/** The base of the default spool directories: this user's own, under the OS temp directory. */
export function defaultSpoolBase(): string {
  return join(tmpdir(), `koa-audit-spool-${uid() ?? 'user'}`);
}

/** The default spool directory of one destination: no two destinations share it. */
export function defaultSpoolDir(d: Destination): string {
  const db = d.db ?? '_unnamed';
  const hash = createHash('sha256').update(`${db}\0${d.collection}`).digest('hex').slice(0, 10);
  return join(defaultSpoolBase(), `${safe(db)}.${safe(d.collection)}-${hash}`);
}

interface Header {
  koaAudit: FileKind;
  /** 1: Extended JSON lines follow; 2: binary records (spool-records.ts). */
  v: 1 | 2;
  db: string | null;
  collection: string;
}

export function headerLine(kind: FileKind, d: Destination, v: 1 | 2 = 1): string {
  const h: Header = { koaAudit: kind, v, db: d.db, collection: d.collection };
  return `${JSON.stringify(h)}\n`;
}

export function isHeader(line: string): boolean {
  return line.startsWith('{"koaAudit":');
}

/** Reads the header of a file: its destination, or null when it has none (not a file of ours). */
export function readDestination(path: string): Destination | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | (constants.O_NOFOLLOW ?? 0));
  } catch {
    return null;
  }
  try {
    const buf = Buffer.alloc(4096);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const text = buf.subarray(0, n).toString('utf8');
    const nl = text.indexOf('\n');
    if (nl < 0) return null;
    const line = text.slice(0, nl);
    if (!isHeader(line)) return null;
    const h = JSON.parse(line) as Partial<Header>;
    if (typeof h.collection !== 'string') return null;
    return { db: typeof h.db === 'string' ? h.db : null, collection: h.collection };
  } catch {
    return null;
  } finally {
    closeSync(fd);
  }
}

export function sameDestination(a: Destination, b: Destination): boolean {
  return a.collection === b.collection && a.db === b.db;
}

/** Opens a new file of ours for appending: created by this call (never an existing one, never through a link), 0600, header written. */
export function createOwnFile(path: string, kind: FileKind, d: Destination, v: 1 | 2 = 1): number {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_APPEND | (constants.O_NOFOLLOW ?? 0);
  const fd = openSync(path, flags, 0o600);
  writeSync(fd, headerLine(kind, d, v));
  return fd;
}

/** The auditors of this process that are running: their files are theirs alone. */
const live = new Set<string>();
export function registerInstance(token: string): void {
  live.add(token);
}
export function unregisterInstance(token: string): void {
  live.delete(token);
}

/** True when another process with this pid runs (its files may still be written). */
function otherProcessAlive(pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM'; // exists, but is not ours to signal
  }
}

/**
 * True when the auditor `own` may replay this file: its own spool files (never its own write-ahead files:
 * their events are in its queue), and the files of auditors that are gone (closed, or their process dead).
 */
export function replayable(f: FileName, own: string): boolean {
  if (f.instance === own) return f.kind === 'spool';
  if (live.has(f.instance)) return false;
  return !otherProcessAlive(f.pid);
}

/** One append, all of it: writev may write less than asked (a signal, a full disk that frees up). */
export function writeAll(fd: number, chunks: Buffer[]): void {
  let bufs = chunks;
  for (;;) {
    let left = 0;
    for (const b of bufs) left += b.length;
    const n = bufs.length === 1 ? writeSync(fd, bufs[0]) : writevSync(fd, bufs);
    if (n >= left) return;
    let skip = n;
    const rest: Buffer[] = [];
    for (const b of bufs) {
      if (skip >= b.length) skip -= b.length;
      else {
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
    }
    bufs = rest;
  }
}
