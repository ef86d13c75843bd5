/**
 * The option kit, and the options of `createAudit`. Every factory (createAudit, the middleware, the plugin,
 * auditRouter, jwtLogin, feishuRouter) validates and resolves its options once, at construction, with the
 * rules below: one rule per kind of value. A wrong option throws a TypeError that names it; an unknown option
 * is an error too, with the nearest known name suggested (a typo would otherwise silently turn a safety
 * feature off). Resolved options are final: nothing rewrites them later.
 */
import { hkdfSync } from 'node:crypto';
import mongoose, { type Connection, type WriteConcern } from 'mongoose';
import type { ActorResolver, JwtOptions } from './actor.js';
import { SCRUB_RULES, type ScrubOptions, type ScrubRule } from './scrub.js';
import type { AuditSink } from './sink.js';
import { DEFAULT_MAX_EVENT_BYTES } from './bound.js';
import type { Context } from 'koa';
import type { AuditKind, Checkpoint, IntegrityOptions, OnFull } from './types.js';

export interface RetentionOptions {
  /** Days every event is kept (absent with `byKind`: kinds not named there are kept forever). */
  days?: number;
  /** Days per kind, e.g. `{ request: 30, login_failed: 365, update: 2555 }`. */
  byKind?: Partial<Record<AuditKind, number>>;
}

/** The kinds `retention.byKind` may name. */
export const RETENTION_KINDS: readonly AuditKind[] = ['request', 'create', 'update', 'delete', 'login', 'login_failed', 'logout', 'loss', 'prune'];

export interface AuditOptions {
  /** The mongoose Connection events are written through. Default: `mongoose.connection`. */
  connection?: Connection;
  /** Collection name. Default `'auditevents'`. */
  collection?: string;
  /** Verify Bearer tokens (or a cookie) to find the actor. */
  jwt?: JwtOptions;
  /** Consulted when neither `ctx.state.user` nor a verified token gives an actor. */
  resolveActor?: ActorResolver;
  /** `'async'` (default): queued, batched writes; `'sync'`: the request event is stored before the response. */
  mode?: 'async' | 'sync';
  /** Events held in memory while the store is slow or down. Default 10,000. */
  maxQueue?: number;
  /** Bytes held in memory (estimated). Default 64 MiB. */
  maxQueueBytes?: number;
  /** What happens when the queue is full. Default `'spool'`. */
  onFull?: OnFull;
  /**
   * Where spooled events (and the write-ahead file) are kept. Default: a directory of this destination
   * (database and collection) under `<os tmpdir>/koa-audit-spool-<uid>/`.
   */
  spoolDir?: string;
  /**
   * `'memory'` (default): accepted events wait in memory until stored (a `kill -9` loses those not yet
   * stored or spooled); `'disk'`: every accepted event is first appended to a write-ahead file in `spoolDir`,
   * which a restarted process replays.
   */
  durability?: Durability;
  /** Largest stored event (BSON bytes); bigger ones are cut (`truncated`). Default 2 MiB, at most 15 MiB. */
  maxEventBytes?: number;
  /** How long a request waits for room under `onFull: 'block'` before failing with 503. Default 5,000 ms. */
  blockTimeoutMs?: number;
  /**
   * `{ days, byKind }`: keep events `days` long, and events of the kinds named in `byKind` as long as it says
   * (TTL indexes where supported, partial ones per kind; else a scheduled prune).
   */
  retention?: RetentionOptions;
  /** The tenant of each request's events: `(ctx) => string | null`, run when an event is built. */
  tenant?: (ctx: Context) => string | null | undefined;
  /** Write concern of the audit inserts. Default: the connection's. */
  writeConcern?: WriteConcern;
  /** Extra key names whose values are stored as `'[REDACTED]'`. */
  redact?: string[];
  /** Events per insert. Default 500. */
  batchSize?: number;
  /** Longest wait before a partial batch is written, in ms. Default 250. */
  flushIntervalMs?: number;
  /** Emit `degraded` once writes have failed for this long. Default 5,000 ms. */
  degradedAfterMs?: number;
  /** How long `close()` tries before giving up. Default 10,000 ms. */
  closeTimeoutMs?: number;
  /** Longest stored string. Default 4,096 characters. */
  maxStringLength?: number;
  /** Which models the change plugin audits: names, or a predicate. Default: every model it is applied to. */
  models?: string[] | ((modelName: string) => boolean);
  /** Flood control of failed logins. Default `{ max: 10, windowMs: 60_000 }` per identifier and per IP, in memory. */
  loginFailures?: LoginFailuresOptions;
  /** Copies of the trail elsewhere (`webhookSink`, `otlpSink`, `kafkaSink`, or your own): fed after the store. */
  sinks?: AuditSink[];
  /** Signed checkpoints of the hash chain: `{ key }` (HMAC-SHA256) or `{ privateKey }` (Ed25519). Resolved by
   *  lib/core/integrity-options.ts (at construction, by createAudit). */
  integrity?: IntegrityOptions;
  /** Receives every checkpoint too, to keep it on another system (a witness for `verify`). */
  onCheckpoint?: (checkpoint: Checkpoint) => unknown;
  /** Value scrubbing of free text: extra `patterns`, and built-in rules to `disable` (`true`: all of them). */
  scrub?: ScrubOptions;
  /** Use a well-formed incoming `X-Request-Id` as the request id (only for ids set by your own proxy). Default false. */
  trustRequestId?: boolean;
  /** `'hmac'`: `login_failed` of an unknown user stores a keyed HMAC of the identifier, not what was typed. Default `'plain'`. */
  failedIdentifiers?: 'plain' | 'hmac';
  /** The HMAC key of `failedIdentifiers: 'hmac'` (16+ bytes). Default: derived from `jwt.secret`. */
  identifierKey?: string | Buffer;
  /**
   * The dashboard's rollups, kept as events are stored: `false` to turn them off, or `{ days, topK }` (default
   * `{ days: 400, topK: 100 }`: kept 400 days, at most 100 keys per hour and day in each top table).
   */
  rollups?: false | { days?: number; topK?: number };
}

export interface LoginFailuresOptions {
  max: number;
  windowMs: number;
  /** `'memory'` (default): windows per process; `'mongo'`: windows in a small collection that every process shares. */
  store?: 'memory' | 'mongo';
  /** The shared windows' collection (store `'mongo'`). Default `<collection>_flood`. */
  collection?: string;
  /** Store `'mongo'`: longest wait for the collection per failure; past it the failure is recorded in detail. Default 2,000 ms. */
  timeoutMs?: number;
}

export interface ResolvedOptions {
  connection: Connection;
  collection: string;
  jwt: JwtOptions | undefined;
  resolveActor: ActorResolver | undefined;
  mode: 'async' | 'sync';
  maxQueue: number;
  maxQueueBytes: number;
  onFull: OnFull;
  /** Null: the default directory of the destination, decided once the connection names its database. */
  spoolDir: string | null;
  durability: Durability;
  maxEventBytes: number;
  blockTimeoutMs: number;
  retention: { days: number | undefined; byKind: Readonly<Record<string, number>> } | undefined;
  tenant: ((ctx: Context) => unknown) | undefined;
  writeConcern: WriteConcern | undefined;
  redact: string[];
  batchSize: number;
  flushIntervalMs: number;
  degradedAfterMs: number;
  closeTimeoutMs: number;
  maxStringLength: number;
  auditsModel: (modelName: string) => boolean;
  loginFailures: { max: number; windowMs: number; store: 'memory' | 'mongo'; collection: string; timeoutMs: number };
  sinks: AuditSink[];
  scrub: { patterns: RegExp[]; disable: ScrubRule[] };
  trustRequestId: boolean;
  failedIdentifiers: 'plain' | 'hmac';
  /** The key of `failedIdentifiers: 'hmac'`; null under `'plain'`. */
  identifierKey: Buffer | null;
  rollups: { days: number; topK: number } | null;
}

export type Durability = 'memory' | 'disk';

/** What jsonwebtoken 9 signs and verifies (it knows no EdDSA: a token of that kind could never be accepted). */
export const JWT_ALGORITHMS: ReadonlySet<string> = new Set([
  'HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512',
]);

export function fail(name: string, expected: string, got: unknown): never {
  const shown = typeof got === 'string' ? JSON.stringify(got) : typeof got === 'function' ? 'a function' : String(got);
  throw new TypeError(`koa-audit: option "${name}" must be ${expected}, got ${shown}`);
}

export function checkKnown(given: object, known: readonly string[], where: string): void {
  for (const key of Object.keys(given)) {
    if (known.includes(key)) continue;
    const near = nearest(key, known);
    throw new TypeError(`koa-audit: unknown ${where} option "${key}"${near === null ? ` (known: ${known.join(', ')})` : `; did you mean "${near}"?`}`);
  }
}

/** The known name closest to a mistyped one (edit distance at most a third of its length, min. 2), or null. */
export function nearest(name: string, known: readonly string[]): string | null {
  const lower = name.toLowerCase();
  let best: string | null = null;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const k of known) {
    const d = k.toLowerCase() === lower ? 0 : editDistance(lower, k.toLowerCase());
    if (d < bestDistance) {
      best = k;
      bestDistance = d;
    }
  }
  return best;
}

/** Optimal string alignment distance: insertions, deletions, substitutions and adjacent transpositions. */
function editDistance(a: string, b: string): number {
  const rows: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) rows[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      rows[i][j] = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) rows[i][j] = Math.min(rows[i][j], rows[i - 2][j - 2] + 1);
    }
  }
  return rows[a.length][b.length];
}

export function positiveInt(name: string, v: unknown, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(name, 'a positive integer', v);
  return v;
}

export function bool(name: string, v: unknown, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') fail(name, 'a boolean', v);
  return v;
}

/** An options object (absent: `{}`); anything else is a TypeError naming it. */
export function objectOption(name: string, v: unknown): Record<string, unknown> {
  if (v === undefined) return {};
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail(name, 'an object', v);
  return v as Record<string, unknown>;
}

export function nonEmptyString(name: string, v: unknown, dflt: string): string {
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || v === '') fail(name, 'a non-empty string', v);
  return v;
}

export function oneOf<T extends string>(name: string, v: unknown, allowed: readonly T[], dflt: T): T {
  if (v === undefined) return dflt;
  if (!allowed.includes(v as T)) fail(name, `one of ${allowed.map((a) => `'${a}'`).join(', ')}`, v);
  return v as T;
}

export function stringList(name: string, v: unknown): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x === '')) fail(name, 'an array of non-empty strings', v);
  return [...v];
}

/** A function option; `what` describes its signature for the message. Absent: undefined, or a TypeError when required. */
export function fnOption<F extends (...args: never[]) => unknown>(name: string, v: unknown, what: string, required: boolean): F | undefined {
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'function') fail(name, `a function ${what}${required ? ' (it is required)' : ''}`, v);
  return v as F;
}

/**
 * A route prefix: a path starting with '/', without query, fragment or white space, or '' (the root) where
 * `root` allows it. Trailing slashes are dropped, so `${prefix}/x` is always one slash.
 */
export function routePrefix(name: string, v: unknown, dflt: string, root: boolean): string {
  const prefix = v === undefined ? dflt : v;
  const ok = typeof prefix === 'string' && (prefix === '' ? root : prefix.startsWith('/') && prefix.replace(/\/+$/, '') !== '') && !/[?#\s]/.test(prefix);
  if (!ok) fail(name, `a path starting with '/'${root ? " (or '' for the root)" : ''}`, prefix);
  return prefix.replace(/\/+$/, '');
}

/** A signing or verifying key: a non-empty string, a Buffer, or a KeyObject. */
export function signingKey(name: string, v: unknown): string | Buffer | object {
  if (!(typeof v === 'string' && v !== '') && !Buffer.isBuffer(v) && (v === null || typeof v !== 'object')) {
    fail(name, 'a non-empty string, Buffer or KeyObject', v);
  }
  return v as string | Buffer | object;
}

/** A list of document field paths: non-empty strings that neither start nor end with a dot. Absent: null. */
export function pathList(name: string, v: unknown): string[] | null {
  if (v === undefined) return null;
  const list = stringList(name, v);
  if (list.some((p) => p.startsWith('.') || p.endsWith('.'))) fail(name, 'an array of field paths (non-empty strings)', v);
  return list;
}

function jwtOptions(v: unknown): JwtOptions | undefined {
  if (v === undefined) return undefined;
  if (v === null || typeof v !== 'object') fail('jwt', 'an object { secret | publicKey, algorithms }', v);
  const j = v as Record<string, unknown>;
  checkKnown(j, ['secret', 'publicKey', 'algorithms', 'cookie', 'issuer', 'audience'], 'jwt');
  if ((j.secret === undefined) === (j.publicKey === undefined)) fail('jwt', 'an object with exactly one of secret or publicKey', 'neither or both');
  signingKey(j.secret === undefined ? 'jwt.publicKey' : 'jwt.secret', j.secret ?? j.publicKey);
  const algs = j.algorithms;
  if (!Array.isArray(algs) || algs.length === 0 || algs.some((a) => !JWT_ALGORITHMS.has(a as string))) {
    fail('jwt.algorithms', `a non-empty array of ${[...JWT_ALGORITHMS].join(', ')} (pinning them is required; 'none' is never accepted)`, algs);
  }
  if (j.cookie !== undefined) nonEmptyString('jwt.cookie', j.cookie, '');
  return j as unknown as JwtOptions;
}

function modelsOption(v: unknown): (name: string) => boolean {
  if (v === undefined) return () => true;
  if (typeof v === 'function') return v as (name: string) => boolean;
  const names = new Set(stringList('models', v));
  return (name) => names.has(name);
}

const KNOWN = [
  'connection', 'collection', 'jwt', 'resolveActor', 'mode', 'maxQueue', 'maxQueueBytes', 'onFull', 'spoolDir',
  'blockTimeoutMs', 'retention', 'writeConcern', 'redact', 'batchSize', 'flushIntervalMs', 'degradedAfterMs',
  'closeTimeoutMs', 'maxStringLength', 'models', 'loginFailures', 'durability', 'maxEventBytes', 'sinks', 'tenant',
  'integrity', 'onCheckpoint', 'scrub', 'trustRequestId', 'failedIdentifiers', 'identifierKey', 'rollups',
] as const;

const SINK_NAME = /^[A-Za-z0-9._-]{1,64}$/;

function sinksOption(v: unknown): AuditSink[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) fail('sinks', 'an array of sinks (webhookSink(), otlpSink(), kafkaSink(), ...)', v);
  const names = new Set<string>();
  v.forEach((s: unknown, i) => {
    const k = s as Partial<AuditSink> | null;
    if (k === null || typeof k !== 'object' || typeof k.send !== 'function' || typeof k.close !== 'function') {
      fail(`sinks[${i}]`, 'a sink: an object with name, batchSize, send() and close()', s);
    }
    if (typeof k.name !== 'string' || !SINK_NAME.test(k.name) || k.name.startsWith('.')) fail(`sinks[${i}].name`, 'a name of 1 to 64 letters, digits, ".", "_" or "-"', k.name);
    positiveInt(`sinks[${i}].batchSize`, k.batchSize, 1);
    if (k.retryMaxMs !== undefined) positiveInt(`sinks[${i}].retryMaxMs`, k.retryMaxMs, 1);
    if (names.has(k.name)) fail(`sinks[${i}].name`, 'unique among the sinks (give one of them another name)', k.name);
    names.add(k.name);
  });
  return [...v] as AuditSink[];
}

function maxEventBytes(v: unknown): number {
  const n = positiveInt('maxEventBytes', v, DEFAULT_MAX_EVENT_BYTES);
  if (n < 64 * 1024 || n > 15 * 1024 * 1024) fail('maxEventBytes', 'an integer from 65536 (64 KiB) to 15728640 (15 MiB)', v);
  return n;
}

function retentionOption(v: unknown): ResolvedOptions['retention'] {
  if (v === undefined) return undefined;
  const expected = 'an object { days?: number > 0, byKind?: { kind: days } } naming at least one';
  if (v === null || typeof v !== 'object' || Array.isArray(v)) fail('retention', expected, v);
  const r = v as Record<string, unknown>;
  checkKnown(r, ['days', 'byKind'], 'retention');
  if (r.days !== undefined && (typeof r.days !== 'number' || !(r.days > 0) || !Number.isFinite(r.days))) fail('retention.days', 'a number > 0', r.days);
  const byKind: Record<string, number> = {};
  if (r.byKind !== undefined) {
    const b = r.byKind as Record<string, unknown> | null;
    if (b === null || typeof b !== 'object' || Array.isArray(b)) fail('retention.byKind', 'an object { kind: days }', b);
    checkKnown(b, RETENTION_KINDS, 'retention.byKind');
    for (const [kind, days] of Object.entries(b)) {
      if (typeof days !== 'number' || !(days > 0) || !Number.isFinite(days)) fail(`retention.byKind.${kind}`, 'a number > 0', days);
      byKind[kind] = days;
    }
  }
  if (r.days === undefined && Object.keys(byKind).length === 0) fail('retention', expected, v);
  return { days: r.days as number | undefined, byKind };
}

function scrubOption(v: unknown): ResolvedOptions['scrub'] {
  const o = objectOption('scrub', v);
  checkKnown(o, ['patterns', 'disable'], 'scrub');
  const patterns = o.patterns ?? [];
  if (!Array.isArray(patterns) || patterns.some((p) => !(p instanceof RegExp))) fail('scrub.patterns', 'an array of RegExps', patterns);
  let disable: ScrubRule[] = [];
  if (o.disable === true) disable = [...SCRUB_RULES];
  else if (o.disable !== undefined) {
    const ok = Array.isArray(o.disable) && o.disable.every((r) => (SCRUB_RULES as readonly unknown[]).includes(r));
    if (!ok) fail('scrub.disable', `true or an array of ${SCRUB_RULES.map((r) => `'${r}'`).join(', ')}`, o.disable);
    disable = [...(o.disable as ScrubRule[])];
  }
  return { patterns: [...(patterns as RegExp[])], disable };
}

/**
 * The key of `failedIdentifiers: 'hmac'`: `identifierKey`, else one derived (HKDF) from `jwt.secret`, the
 * deployment's own secret, so that every process of one deployment hashes an identifier alike and the JWT
 * secret itself is never the HMAC key. Without either, construction fails: a random key would stop repeated
 * attempts from grouping across restarts without anyone noticing.
 */
function identifierKeyOption(mode: 'plain' | 'hmac', v: unknown, jwt: JwtOptions | undefined): Buffer | null {
  if (v !== undefined) {
    const key = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.isBuffer(v) ? v : null;
    if (key === null || key.length < 16) fail('identifierKey', 'a string or Buffer of at least 16 bytes', Buffer.isBuffer(v) ? `${v.length} bytes` : typeof v === 'string' ? `${v.length} characters` : v);
    return mode === 'hmac' ? Buffer.from(key) : null;
  }
  if (mode === 'plain') return null;
  const secret = jwt?.secret;
  if (typeof secret === 'string' || Buffer.isBuffer(secret)) {
    return Buffer.from(hkdfSync('sha256', secret, 'koa-audit', 'failed login identifiers', 32));
  }
  return fail('identifierKey', "given with failedIdentifiers: 'hmac' (16+ bytes; or a jwt.secret to derive it from)", v);
}

function rollupsOption(v: unknown): { days: number; topK: number } | null {
  if (v === false) return null;
  if (v === undefined) return { days: 400, topK: 100 };
  if (v === null || typeof v !== 'object') fail('rollups', 'false, or an object { days?, topK? }', v);
  const r = v as Record<string, unknown>;
  checkKnown(r, ['days', 'topK'], 'rollups');
  if (r.days !== undefined && (typeof r.days !== 'number' || !(r.days > 0))) fail('rollups.days', 'a number > 0', r.days);
  return { days: (r.days as number | undefined) ?? 400, topK: positiveInt('rollups.topK', r.topK, 100) };
}

export function resolveOptions(options: unknown): ResolvedOptions {
  const o = objectOption('options', options);
  checkKnown(o, KNOWN, 'createAudit');

  const connection = o.connection ?? mongoose.connection;
  if (!(connection instanceof mongoose.Connection)) fail('connection', 'a mongoose Connection', connection);
  const collection = nonEmptyString('collection', o.collection, 'auditevents');

  const retention = retentionOption(o.retention);
  if (o.writeConcern !== undefined && (o.writeConcern === null || typeof o.writeConcern !== 'object')) {
    fail('writeConcern', 'an object such as { w: "majority" }', o.writeConcern);
  }
  if (o.spoolDir !== undefined) nonEmptyString('spoolDir', o.spoolDir, '');

  let loginFailures = { max: 10, windowMs: 60_000, store: 'memory' as 'memory' | 'mongo', collection: `${collection}_flood`, timeoutMs: 2_000 };
  if (o.loginFailures !== undefined) {
    const l = o.loginFailures as Record<string, unknown> | null;
    if (l === null || typeof l !== 'object') fail('loginFailures', 'an object { max, windowMs }', l);
    checkKnown(l, ['max', 'windowMs', 'store', 'collection', 'timeoutMs'], 'loginFailures');
    loginFailures = {
      max: positiveInt('loginFailures.max', l.max, 10),
      windowMs: positiveInt('loginFailures.windowMs', l.windowMs, 60_000),
      store: oneOf('loginFailures.store', l.store, ['memory', 'mongo'] as const, 'memory'),
      collection: nonEmptyString('loginFailures.collection', l.collection, `${collection}_flood`),
      timeoutMs: positiveInt('loginFailures.timeoutMs', l.timeoutMs, 2_000),
    };
  }

  const jwt = jwtOptions(o.jwt);
  const failedIdentifiers = oneOf('failedIdentifiers', o.failedIdentifiers, ['plain', 'hmac'] as const, 'plain');
  return {
    connection: connection as Connection,
    collection,
    jwt,
    resolveActor: fnOption<ActorResolver>('resolveActor', o.resolveActor, '(ctx) => user | null', false),
    mode: oneOf('mode', o.mode, ['async', 'sync'] as const, 'async'),
    maxQueue: positiveInt('maxQueue', o.maxQueue, 10_000),
    maxQueueBytes: positiveInt('maxQueueBytes', o.maxQueueBytes, 64 * 1024 * 1024),
    onFull: oneOf('onFull', o.onFull, ['spool', 'block', 'drop'] as const, 'spool'),
    spoolDir: (o.spoolDir as string | undefined) ?? null,
    durability: oneOf('durability', o.durability, ['memory', 'disk'] as const, 'memory'),
    maxEventBytes: maxEventBytes(o.maxEventBytes),
    blockTimeoutMs: positiveInt('blockTimeoutMs', o.blockTimeoutMs, 5_000),
    retention,
    writeConcern: o.writeConcern as WriteConcern | undefined,
    redact: stringList('redact', o.redact),
    batchSize: positiveInt('batchSize', o.batchSize, 500),
    flushIntervalMs: positiveInt('flushIntervalMs', o.flushIntervalMs, 250),
    degradedAfterMs: positiveInt('degradedAfterMs', o.degradedAfterMs, 5_000),
    closeTimeoutMs: positiveInt('closeTimeoutMs', o.closeTimeoutMs, 10_000),
    maxStringLength: positiveInt('maxStringLength', o.maxStringLength, 4_096),
    auditsModel: modelsOption(o.models),
    loginFailures,
    sinks: sinksOption(o.sinks),
    tenant: fnOption<(ctx: Context) => unknown>('tenant', o.tenant, '(ctx) => string | null', false),
    scrub: scrubOption(o.scrub),
    trustRequestId: bool('trustRequestId', o.trustRequestId, false),
    failedIdentifiers,
    identifierKey: identifierKeyOption(failedIdentifiers, o.identifierKey, jwt),
    rollups: rollupsOption(o.rollups),
  };
}
