/**
 * The query API.
 *
 * Queries are newest first and keyset-paged on (ts, _id): the indexes that serve lists end with `ts: -1, _id: -1`
 * (lib/store/indexes.ts, which catalogues every query shape with its index), so the sort comes from the index
 * and a page stops after `limit` matches. Filters without an index of their own are checked on the events the
 * walk reaches; `from`/`to` bound it. The cursor is where the
 * previous page stopped, not an offset, so events arriving meanwhile neither repeat nor hide older ones.
 */
import { mongo, trusted } from 'mongoose';
import type { AuditCore } from '../core/core.js';
import { plainIp } from '../core/context.js';
import { OWN_FILTER } from '../store/model.js';
import type { AuditEvent, AuditKind, AuditOutcome } from '../core/types.js';

export interface QueryFilter {
  /** One kind, or any of several. */
  kind?: AuditKind | AuditKind[];
  /** `actor.id` of the events. */
  actorId?: string;
  model?: string;
  /** On its own or with `model` (the document id's index serves both). */
  documentId?: string;
  requestId?: string;
  /** `http.clientRequestId`: the `X-Request-Id` a client sent, kept apart from the server's request id. */
  clientRequestId?: string;
  outcome?: AuditOutcome;
  ip?: string;
  /** The `name` of `security` events (`authz_fail`, ...). */
  name?: string;
  /** Events at or after this instant. */
  from?: Date;
  /** Events strictly before this instant. */
  to?: Date;
  /** Page size, 1 to 500. Default 50. */
  limit?: number;
  /** The `next` cursor of the previous page. */
  after?: string;
  /** `false`: leave out the requests that read the audit trail (`http.auditRead`); `true`: only those. */
  auditRead?: boolean;
  /** Events of this tenant. */
  tenant?: string;
  /** Events of this W3C trace (32 lowercase hex). */
  traceId?: string;
  /** `onBehalfOf.id` of the events: what was done as this user (impersonation). */
  onBehalfOfId?: string;
  /** Events whose `reason` starts with this text (case-sensitive prefix). */
  reason?: string;
  /** Request path (`http.path`): exact, or a prefix when it ends with `*` (`/api/*`). */
  path?: string;
  /** Matched route pattern (`http.route`): exact, or a prefix when it ends with `*`. */
  route?: string;
  /** HTTP method of request events. */
  method?: string;
  /** HTTP status of request events. */
  status?: number;
  /** `'1xx'` to `'5xx'`: requests whose status is in that class. */
  statusClass?: StatusClassName;
  /** Login identifier (login, login_failed, logout). */
  identifier?: string;
  /** Login provider. */
  provider?: string;
  /**
   * Free text over path, route, identifier, error message and document label: a text index where the server
   * has one (whole words), else a case-insensitive substring match over the filtered range (the page says so).
   */
  q?: string;
}

export type StatusClassName = '1xx' | '2xx' | '3xx' | '4xx' | '5xx';

export interface QueryPage {
  items: AuditEvent[];
  /** Pass as `after` for the next (older) page; null when this page is the last. */
  next: string | null;
  /** Set when the query was served in a degraded way (free text without a text index), and why. */
  notice?: string;
}

export const AUDIT_KINDS: readonly AuditKind[] = [
  'request', 'create', 'update', 'delete', 'login', 'login_failed', 'logout', 'security', 'loss', 'audit_start', 'audit_stop', 'checkpoint', 'prune',
];
export const AUDIT_OUTCOMES: readonly AuditOutcome[] = ['success', 'failure'];
export const MAX_LIMIT = 500;
export const DEFAULT_LIMIT = 50;

/** Every filter key, in one order: the JS API, the HTTP API (`?key=`) and the CLI (`--key`) take the same list. */
export const FILTER_KEYS = [
  'kind', 'actorId', 'model', 'documentId', 'requestId', 'clientRequestId', 'outcome', 'ip', 'name', 'from', 'to', 'limit', 'after', 'auditRead',
  'tenant', 'traceId', 'onBehalfOfId', 'reason',
  'path', 'route', 'method', 'status', 'statusClass', 'identifier', 'provider', 'q',
] as const;
/** Filter keys whose values are booleans: the HTTP API and the CLI read `true` / `false`. */
export const BOOLEAN_KEYS: readonly string[] = ['auditRead'];
/** Older spellings still accepted by the HTTP API and the CLI, and the key each one means. */
export const FILTER_ALIASES: Readonly<Record<string, (typeof FILTER_KEYS)[number]>> = { actor: 'actorId', since: 'from', until: 'to' };
const STRING_KEYS = ['actorId', 'model', 'documentId', 'requestId', 'clientRequestId', 'ip', 'name', 'tenant', 'traceId', 'onBehalfOfId', 'reason', 'identifier', 'provider'] as const;
/** Stored path of a string filter key, where it is not the key itself. */
const FIELD_OF: Readonly<Record<string, string>> = {
  actorId: 'actor.id', onBehalfOfId: 'onBehalfOf.id', clientRequestId: 'http.clientRequestId', path: 'http.path', route: 'http.route', method: 'http.method', status: 'http.status',
};

/** A regular expression matching exactly the strings that start with `text` (anchored: an index serves it). */
function prefixPattern(text: string): string {
  return `^${text.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&')}`;
}
const STATUS_CLASSES: readonly StatusClassName[] = ['1xx', '2xx', '3xx', '4xx', '5xx'];
const MAX_TEXT = 200;
/** The fields free text searches: TEXT_INDEX's (lib/store/indexes.ts), or by substring where the server has none. */
export const TEXT_FIELDS = ['http.path', 'http.route', 'identifier', 'error.message', 'documentLabel'] as const;
const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const MAX_VALUE_LENGTH = 4096;
const MAX_DATE_MS = 8.64e15;

/**
 * A bad filter value. `key` and `problem` let a caller speaking another vocabulary (the HTTP API's parameter
 * names) say the same thing in its own words.
 */
export class QueryFilterError extends TypeError {
  constructor(readonly key: string, readonly problem: string) {
    super(`koa-audit: query filter "${key}" ${problem}`);
  }
}

function bad(key: string, expected: string, got: unknown): never {
  const shown = typeof got === 'string' ? JSON.stringify(got.length > 80 ? `${got.slice(0, 80)}…` : got) : got instanceof Date ? String(got) : typeof got === 'object' && got !== null ? 'an object' : String(got);
  throw new QueryFilterError(key, `must be ${expected}, got ${shown}`);
}

// A date, or a date-time with a zone: a zoneless time would mean the local time of a machine nobody can see.
const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|([+-])(\d{2}):?(\d{2})))?$/;

/** What parseIsoDate accepts, for messages. */
export const ISO_DATE_HINT = 'an ISO 8601 date, or date-time with a zone (2026-01-31T12:00:00Z)';

/**
 * `2026-01-31`, `2026-01-31T12:00Z`, `2026-01-31T12:00:00.5+01:00`..., or undefined. Unlike `new Date(text)` it
 * refuses dates no calendar has (`2026-02-30` is not quietly March 2) and out-of-range fields (`T24:00`).
 */
export function parseIsoDate(text: string): Date | undefined {
  const m = ISO_DATE.exec(text);
  if (m === null) return undefined;
  const [year, month, day] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const [hour, minute, second] = [Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0)];
  const [offHours, offMinutes] = [Number(m[10] ?? 0), Number(m[11] ?? 0)];
  // Leap years repeat every 400 years; 2000 + keeps Date.UTC away from its 1900 + y reading of years 0-99.
  const daysInMonth = month >= 1 && month <= 12 ? new Date(Date.UTC(2000 + (year % 400), month, 0)).getUTCDate() : 0;
  if (day < 1 || day > daysInMonth || hour > 23 || minute > 59 || second > 59 || offHours > 23 || offMinutes > 59) return undefined;
  const d = new Date(Date.UTC(2000, month - 1, day, hour, minute, second, Number((m[7] ?? '').padEnd(3, '0').slice(0, 3))));
  d.setUTCFullYear(year);
  const offsetMs = (m[9] === '-' ? -1 : 1) * (offHours * 60 + offMinutes) * 60_000;
  return new Date(d.getTime() - offsetMs);
}

function validDate(key: string, v: unknown): Date {
  if (!(v instanceof Date) || Number.isNaN(v.getTime())) bad(key, 'a valid Date', v);
  return v;
}

/** The opaque cursor: base64url of 8 bytes of `ts` (ms, signed) and the 12 bytes of `_id`. */
export function encodeCursor(ts: Date, id: mongo.ObjectId): string {
  const buf = Buffer.alloc(20);
  buf.writeBigInt64BE(BigInt(ts.getTime()), 0);
  buf.set(id.id, 8);
  return buf.toString('base64url');
}

const CURSOR_SHAPE = /^[A-Za-z0-9_-]{27}$/;

export function decodeCursor(cursor: unknown): { ts: Date; id: mongo.ObjectId } {
  const expected = "a cursor returned as `next` by a previous query";
  if (typeof cursor !== 'string' || !CURSOR_SHAPE.test(cursor)) bad('after', expected, cursor);
  const buf = Buffer.from(cursor, 'base64url');
  const ms = buf.length === 20 ? Number(buf.readBigInt64BE(0)) : NaN;
  // Re-encoding must give the same text: rejects non-canonical spellings of the same bytes.
  if (!(Math.abs(ms) <= MAX_DATE_MS) || buf.toString('base64url') !== cursor) bad('after', expected, cursor);
  return { ts: new Date(ms), id: new mongo.ObjectId(buf.subarray(8, 20)) };
}

export interface QueryPlan {
  filter: Record<string, unknown>;
  sort: { ts: -1; _id: -1 };
  /** One more than the page size: whether that extra event exists says if there is a next page. */
  fetch: number;
  limit: number;
}

/** How free text is searched: `$text` over the text index, or a substring scan where the server has none. */
export type TextSearch = 'index' | 'scan';

/** Validates a filter and turns it into the MongoDB query. Throws a TypeError naming the bad key. */
export function planQuery(input: QueryFilter | undefined, text: TextSearch = 'index'): QueryPlan {
  const f = (input ?? {}) as Record<string, unknown>;
  if (typeof f !== 'object' || f === null || Array.isArray(f)) bad('filter', 'an object', f);
  for (const key of Object.keys(f)) {
    if (!(FILTER_KEYS as readonly string[]).includes(key)) {
      throw new TypeError(`koa-audit: unknown query filter key "${key}" (known: ${FILTER_KEYS.join(', ')})`);
    }
  }
  const filter: Record<string, unknown> = {};

  if (f.kind !== undefined) {
    const kinds = Array.isArray(f.kind) ? f.kind : [f.kind];
    if (kinds.length === 0 || kinds.some((k) => !AUDIT_KINDS.includes(k as AuditKind))) {
      bad('kind', `one of ${AUDIT_KINDS.join(', ')}, or a non-empty array of them`, f.kind);
    }
    const unique = [...new Set(kinds as AuditKind[])];
    filter.kind = unique.length === 1 ? unique[0] : trusted({ $in: unique });
  }
  for (const key of STRING_KEYS) {
    const v = f[key];
    if (v === undefined) continue;
    if (typeof v !== 'string' || v === '' || v.length > MAX_VALUE_LENGTH) bad(key, `a non-empty string of at most ${MAX_VALUE_LENGTH} characters`, v);
    filter[FIELD_OF[key] ?? key] = key === 'ip' ? ipFilter(v) : key === 'reason' ? trusted({ $regex: prefixPattern(v) }) : v;
  }
  for (const key of ['path', 'route'] as const) {
    const v = f[key];
    if (v === undefined) continue;
    if (typeof v !== 'string' || v === '' || v === '*' || v.length > MAX_VALUE_LENGTH) bad(key, `a non-empty string of at most ${MAX_VALUE_LENGTH} characters (a prefix when it ends with *)`, v);
    // An anchored prefix: the index on the field serves it as a range.
    filter[FIELD_OF[key]] = v.endsWith('*') ? trusted({ $regex: `^${escapeRegExp(v.slice(0, -1))}` }) : v;
  }
  if (f.method !== undefined) {
    if (typeof f.method !== 'string' || !/^[A-Za-z]{1,20}$/.test(f.method)) bad('method', 'an HTTP method (GET, POST, ...)', f.method);
    filter['http.method'] = f.method.toUpperCase();
  }
  if (f.status !== undefined && f.statusClass !== undefined) bad('statusClass', 'given without status (status already names one)', f.statusClass);
  if (f.status !== undefined) {
    if (typeof f.status !== 'number' || !Number.isInteger(f.status) || f.status < 100 || f.status > 599) bad('status', 'an integer from 100 to 599', f.status);
    filter['http.status'] = f.status;
  }
  if (f.statusClass !== undefined) {
    if (!STATUS_CLASSES.includes(f.statusClass as StatusClassName)) bad('statusClass', `one of ${STATUS_CLASSES.join(', ')}`, f.statusClass);
    const low = Number((f.statusClass as string)[0]) * 100;
    filter['http.status'] = trusted({ $gte: low, $lt: low + 100 });
  }
  let textClause: Record<string, unknown> | null = null;
  if (f.q !== undefined) {
    if (typeof f.q !== 'string' || f.q.trim() === '' || f.q.length > MAX_TEXT) bad('q', `a non-empty text of at most ${MAX_TEXT} characters`, f.q);
    const words = f.q.trim();
    if (text === 'index') filter.$text = trusted({ $search: words });
    else {
      const re = { $regex: escapeRegExp(words), $options: 'i' };
      textClause = { $or: TEXT_FIELDS.map((field) => ({ [field]: trusted(re) })) };
    }
  }
  if (f.outcome !== undefined && !AUDIT_OUTCOMES.includes(f.outcome as AuditOutcome)) bad('outcome', "'success' or 'failure'", f.outcome);
  if (f.auditRead !== undefined) {
    if (typeof f.auditRead !== 'boolean') bad('auditRead', 'true or false', f.auditRead);
    filter['http.auditRead'] = f.auditRead ? true : trusted({ $ne: true });
  }

  let limit = DEFAULT_LIMIT;
  if (f.limit !== undefined) {
    if (typeof f.limit !== 'number' || !Number.isInteger(f.limit) || f.limit < 1 || f.limit > MAX_LIMIT) bad('limit', `an integer from 1 to ${MAX_LIMIT}`, f.limit);
    limit = f.limit;
  }

  const ts: Record<string, Date> = {};
  if (f.from !== undefined) ts.$gte = validDate('from', f.from);
  if (f.to !== undefined) ts.$lt = validDate('to', f.to);
  if (f.after !== undefined) {
    const c = decodeCursor(f.after);
    // `$lte` bounds the index scan at the cursor; the `$or` only has to decide among events of that same ms.
    ts.$lte = c.ts;
    filter.$or = [{ ts: trusted({ $lt: c.ts }) }, { _id: trusted({ $lt: c.id }) }];
  }
  if (Object.keys(ts).length > 0) filter.ts = trusted(ts);
  if (f.outcome !== undefined) filter.outcome = f.outcome;
  if (textClause !== null) {
    // The cursor already holds the top-level $or.
    if (filter.$or === undefined) Object.assign(filter, textClause);
    else filter.$and = [textClause];
  }

  return { filter, sort: { ts: -1, _id: -1 }, fetch: limit + 1, limit };
}


const IPV4 = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

/**
 * IPv4 addresses are stored as such (an IPv4-mapped `::ffff:a.b.c.d` as `a.b.c.d`); events stored before that rule
 * kept the mapped spelling, so an IPv4 filter, in either spelling, matches both.
 */
function ipFilter(v: string): unknown {
  const ip = plainIp(v);
  return IPV4.test(ip) ? trusted({ $in: [ip, `::ffff:${ip}`] }) : v;
}

/**
 * The stored spellings of a model name given in another case (`post` for `Post`), or null when there is none. Asked
 * only when the exact name matched nothing, so the common query pays nothing; `distinct` walks the `model` index.
 */
export async function storedModelNames(core: AuditCore, model: string): Promise<string[] | null> {
  const lower = model.toLowerCase();
  const names = (await core.model.distinct('model').setOptions(OWN_FILTER)) as unknown[];
  const same = names.filter((n): n is string => typeof n === 'string' && n !== model && n.toLowerCase() === lower);
  return same.length === 0 ? null : same;
}

const textModes = new WeakMap<object, Promise<{ mode: TextSearch; reason: string | null }>>();

/**
 * Whether this collection's server answers `$text` (MongoDB with the text index), asked once per collection.
 * FerretDB has no text index: free text is then matched by substring over the rest of the filter's range.
 */
export function textSearch(collection: mongo.Collection | { findOne: mongo.Collection['findOne'] }): Promise<{ mode: TextSearch; reason: string | null }> {
  let known = textModes.get(collection);
  if (known === undefined) {
    known = collection.findOne({ $text: { $search: 'koa-audit-probe' } }, { projection: { _id: 1 } }).then(
      () => ({ mode: 'index' as const, reason: null }),
      (err: unknown) => ({ mode: 'scan' as const, reason: `free text is matched by scanning the filtered range: this server has no text search (${String((err as Error).message).slice(0, 160)})` }),
    );
    textModes.set(collection, known);
  }
  return known;
}

export async function query(core: AuditCore, input?: QueryFilter): Promise<QueryPage> {
  const text = input?.q === undefined ? { mode: 'index' as const, reason: null } : await textSearch(core.model.collection);
  const plan = planQuery(input, text.mode);
  let docs = await core.model.find(plan.filter).setOptions(OWN_FILTER).sort(plan.sort).limit(plan.fetch).lean<AuditEvent[]>();
  if (docs.length === 0 && typeof plan.filter.model === 'string') {
    // Model names match whatever case the user typed: the names as stored are used instead.
    const names = await storedModelNames(core, plan.filter.model);
    if (names !== null) {
      plan.filter.model = names.length === 1 ? names[0] : trusted({ $in: names });
      docs = await core.model.find(plan.filter).setOptions(OWN_FILTER).sort(plan.sort).limit(plan.fetch).lean<AuditEvent[]>();
    }
  }
  const notice = text.reason === null ? {} : { notice: text.reason };
  if (docs.length <= plan.limit) return { items: docs, next: null, ...notice };
  const items = docs.slice(0, plan.limit);
  const last = items[items.length - 1];
  return { items, next: encodeCursor(last.ts, last._id), ...notice };
}

/** Per request id, how many events of each kind other than `request` it has (a request row's changes and logins). */
export async function countByRequest(collection: mongo.Collection, requestIds: string[], tenant: string | null = null): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {};
  if (requestIds.length === 0) return out;
  const rows = await collection.aggregate<{ _id: { r: string; k: string }; n: number }>([
    { $match: { requestId: { $in: requestIds }, kind: { $ne: 'request' }, ...(tenant === null ? {} : { tenant }) } },
    { $group: { _id: { r: '$requestId', k: '$kind' }, n: { $sum: 1 } } },
  ]).toArray();
  for (const row of rows) (out[row._id.r] ??= {})[row._id.k] = row.n;
  return out;
}
