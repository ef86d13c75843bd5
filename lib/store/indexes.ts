/**
 * The audit collection's indexes, and the catalogue of every query shape the library runs against it with the
 * index that serves it. The collection is append-only and written far more than read: each index is a B-tree
 * update on every stored event, so an index exists only when a query in QUERY_CATALOGUE needs it
 * (test/indexes.test.ts holds the two lists to each other, statically and with `explain` on the real server).
 *
 * A shape names its filter's fields by role, in the order an index must hold them (ESR): `equality` (a value or
 * an `$in`), then `sort`, then `range`. `residual` fields are tested on the documents the index walk reaches,
 * without an index of their own: low-cardinality fields (outcome, method, status), fields that only narrow a
 * lookup another field already bounds (the model of a document id), and the investigation filters (ip, trace,
 * route, ...): newest first, a page stops after `limit` matches, and `from`/`to` bound the walk.
 */
import type { mongo } from 'mongoose';

export type IndexKey = Readonly<Record<string, 1 | -1>>;

export interface AuditIndex {
  /** The driver's default name for the key (what earlier versions created): an upgrade keeps the index. */
  readonly name: string;
  readonly key: IndexKey;
}

/** The driver's default index name: `field_dir` pairs joined by `_`. */
export function indexName(key: IndexKey): string {
  return Object.entries(key).map(([k, v]) => `${k}_${v}`).join('_');
}

const index = (key: IndexKey): AuditIndex => ({ name: indexName(key), key });

/** A fault of the connection, not the server's answer about the operation: such a failure says nothing about support. */
export const isNetworkError = (err: unknown): boolean => /^Mongo(Network|NetworkTimeout|ServerSelection)Error$/.test(String((err as { name?: unknown } | null)?.name));

/**
 * Every secondary index of the audit collection (the schema's, lib/store/model.ts). Newest-first keyset
 * pagination sorts on (ts, _id): each one that serves a list ends with both.
 */
export const AUDIT_INDEXES: readonly AuditIndex[] = [
  index({ ts: -1, _id: -1 }),
  index({ kind: 1, ts: -1, _id: -1 }),
  index({ 'actor.id': 1, ts: -1, _id: -1 }),
  index({ requestId: 1, ts: -1, _id: -1 }),
  index({ documentId: 1, ts: -1, _id: -1 }),
  index({ model: 1, ts: -1, _id: -1 }),
  index({ tenant: 1, ts: -1, _id: -1 }),
  index({ 'chain.id': 1, 'chain.seq': 1, _id: 1 }),
];

/**
 * Free text (`q`: path, route, identifier, error message, document label) where the server has text indexes
 * (MongoDB): `$text` walks this instead of scanning the range. Made apart from the schema's (ensureTextIndex):
 * a server without text search refuses it, and free text is then matched by substring (lib/read/query.ts).
 */
export const TEXT_INDEX = {
  name: 'koa_audit_text',
  fields: { 'http.path': 'text', 'http.route': 'text', identifier: 'text', 'error.message': 'text', documentLabel: 'text' },
} as const;

/** Creates TEXT_INDEX; resolves with why not where the server has no text search (a network fault rejects). */
export async function ensureTextIndex(collection: mongo.Collection): Promise<string | null> {
  try {
    await collection.createIndex({ ...TEXT_INDEX.fields }, { name: TEXT_INDEX.name, default_language: 'none' });
    return null;
  } catch (err) {
    if (isNetworkError(err)) throw err;
    return (err as Error).message;
  }
}

/*
 * Besides these, only with the `retention` option (lib/store/retention.ts): the TTL index `koa_audit_retention`
 * ({ ts: 1 }), or one partial TTL index per kind (`koa_audit_retention_<kind>`), whose reader is the server's own
 * expiry; the dashboard's rollups keep their indexes in their own collection (lib/rollup/store.ts).
 */

/**
 * Indexes earlier versions created that no query needs any more. `ready()` drops these, matched by name AND
 * key (an index of yours, under another name or on another key, is never touched); see retireIndexes.
 */
export const RETIRED_INDEXES: readonly { readonly name: string; readonly key: Readonly<Record<string, unknown>> }[] = [
  // model + documentId: a document id alone bounds the walk; the model is checked on what it finds.
  index({ model: 1, documentId: 1, ts: -1, _id: -1 }),
  // Two values: an index would hold half the collection under each key.
  index({ outcome: 1, ts: -1, _id: -1 }),
  // Investigation filters: served newest first from the ts index (or kind's, tenant's), bounded by from/to.
  index({ ip: 1, ts: -1, _id: -1 }),
  index({ name: 1, ts: -1, _id: -1 }),
  index({ traceId: 1, ts: -1, _id: -1 }),
  index({ 'onBehalfOf.id': 1, ts: -1, _id: -1 }),
  index({ reason: 1, ts: -1, _id: -1 }),
  index({ 'http.clientRequestId': 1, ts: -1, _id: -1 }),
  index({ 'http.route': 1, ts: -1, _id: -1 }),
  index({ 'http.path': 1, ts: -1, _id: -1 }),
  index({ identifier: 1, ts: -1, _id: -1 }),
];

export type Consumer = 'query' | 'http' | 'viewer' | 'export' | 'history' | 'revert' | 'dashboard' | 'rollups' | 'verify' | 'prune' | 'cli';

export interface QueryShape {
  /** Unique, readable: what runs it and with which filter. */
  readonly id: string;
  /** Where it runs (file and function), to keep the catalogue honest when code moves. */
  readonly runBy: string;
  readonly consumers: readonly Consumer[];
  readonly equality: readonly string[];
  /** Field order of the sort, `1` or `-1` each; empty when unsorted. */
  readonly sort: IndexKey;
  readonly range: readonly string[];
  readonly residual: readonly string[];
  /** The index that serves it (`_id_` for lookups by id, or a TTL index, which the server itself uses). */
  readonly index: string;
  /** `find` (default), `count` (countDocuments), `aggregate` ($match first), `distinct`. */
  readonly op?: 'find' | 'count' | 'aggregate' | 'distinct';
  /** Served by TEXT_INDEX (`$text`), not by a key's order: equality/sort/range do not apply. */
  readonly text?: true;
}

const NEWEST: IndexKey = { ts: -1, _id: -1 };
const OLDEST: IndexKey = { ts: 1, _id: 1 };
const TS = indexName({ ts: -1, _id: -1 });
const KIND = indexName({ kind: 1, ts: -1, _id: -1 });
const CHAIN = indexName({ 'chain.id': 1, 'chain.seq': 1, _id: 1 });
const TENANT = indexName({ tenant: 1, ts: -1, _id: -1 });

/**
 * The query API's filters that have no index of their own: each is checked on the events a walk of the `ts`
 * index reaches (or of another filter's index, when one is given with it). Key of QueryFilter → stored field.
 */
export const RESIDUAL_FILTERS: Readonly<Record<string, string>> = {
  outcome: 'outcome', auditRead: 'http.auditRead', method: 'http.method', status: 'http.status', statusClass: 'http.status',
  provider: 'provider', ip: 'ip', name: 'name', traceId: 'traceId', onBehalfOfId: 'onBehalfOf.id', reason: 'reason',
  clientRequestId: 'http.clientRequestId', path: 'http.path', route: 'http.route', identifier: 'identifier',
  // Where the server has no text search (FerretDB); elsewhere TEXT_INDEX serves it.
  q: '$or',
};

const list = (id: string, equality: string[], idx: string, residual: string[] = [], range: string[] = []): QueryShape => ({
  id: `query: ${id}`, runBy: 'lib/read/query.ts query() (HTTP /api/events, the viewer\'s list and actor timeline)',
  consumers: ['query', 'http', 'viewer'], equality, sort: NEWEST, range, residual, index: idx,
});

export const QUERY_CATALOGUE: readonly QueryShape[] = [
  // ---- the query API, the HTTP API and the viewer (planQuery): newest first, keyset on (ts, _id)
  list('no filter (the list)', [], TS),
  list('from/to', [], TS, [], ['ts']),
  list('next page (after)', [], TS, ['$or'], ['ts']),
  list('kind, or kinds', ['kind'], KIND),
  list('kind + from/to (dashboard tiles and charts)', ['kind'], KIND, [], ['ts']),
  list('kind + identifier (dashboard: failed logins)', ['kind'], KIND, ['identifier'], ['ts']),
  list('kind + method + route (dashboard: routes)', ['kind'], KIND, ['http.method', 'http.route'], ['ts']),
  list('kind + statusClass (dashboard: 5xx)', ['kind'], KIND, ['http.status'], ['ts']),
  list('actorId (actor timeline)', ['actor.id'], indexName({ 'actor.id': 1, ts: -1, _id: -1 })),
  list('actorId + kinds (dashboard: top actors)', ['actor.id'], indexName({ 'actor.id': 1, ts: -1, _id: -1 }), ['kind'], ['ts']),
  list('documentId', ['documentId'], indexName({ documentId: 1, ts: -1, _id: -1 })),
  list('model + documentId', ['documentId'], indexName({ documentId: 1, ts: -1, _id: -1 }), ['model']),
  list('model', ['model'], indexName({ model: 1, ts: -1, _id: -1 })),
  list('requestId (a request\'s events)', ['requestId'], indexName({ requestId: 1, ts: -1, _id: -1 })),
  list('tenant (every read of a tenant-scoped grant)', ['tenant'], TENANT),
  list('tenant + kind', ['tenant'], TENANT, ['kind']),
  ...Object.entries(RESIDUAL_FILTERS).map(([key, field]) => list(`${key} (no index of its own)`, [], TS, [field], ['ts'])),
  { ...list('q with the text index ($text)', [], TEXT_INDEX.name, ['$text', 'ts']), text: true },
  {
    id: 'export: any filter, oldest first', runBy: 'lib/read/export.ts exportEvents (HTTP /api/export, koa-audit export)',
    consumers: ['export', 'http', 'cli'], equality: [], sort: OLDEST, range: ['ts'], residual: [], index: TS,
  },
  {
    id: 'count: kind + from/to', runBy: 'lib/read/router.ts /api/count', consumers: ['http', 'viewer'],
    equality: ['kind'], sort: {}, range: ['ts'], residual: [], index: KIND, op: 'count',
  },
  {
    id: 'count: from/to', runBy: 'lib/read/router.ts /api/count', consumers: ['http', 'viewer'],
    equality: [], sort: {}, range: ['ts'], residual: ['http.auditRead'], index: TS, op: 'count',
  },
  {
    id: 'related: requestIds, kind ≠ request', runBy: 'lib/read/query.ts countByRequest (HTTP /api/related)', consumers: ['http', 'viewer'],
    equality: ['requestId'], sort: {}, range: [], residual: ['kind'], index: indexName({ requestId: 1, ts: -1, _id: -1 }), op: 'aggregate',
  },
  {
    id: 'model names (a model typed in another case)', runBy: 'lib/read/query.ts storedModelNames, lib/read/cli.ts', consumers: ['query', 'cli'],
    // A distinct walks the index in its key's order (DISTINCT_SCAN): as a sort on the model.
    equality: [], sort: { model: 1 }, range: [], residual: [], index: indexName({ model: 1, ts: -1, _id: -1 }), op: 'distinct',
  },
  {
    id: 'event by id', runBy: 'lib/read/router.ts eventById, lib/changes/revert.ts', consumers: ['http', 'viewer', 'revert'],
    equality: ['_id'], sort: {}, range: [], residual: ['tenant'], index: '_id_',
  },
  // ---- history and versionAt: oldest first
  {
    id: 'history: model + documentId, oldest first', runBy: 'lib/changes/history.ts history() (HTTP /api/history)', consumers: ['history', 'http', 'viewer'],
    equality: ['documentId'], sort: OLDEST, range: [], residual: ['model', 'tenant'], index: indexName({ documentId: 1, ts: -1, _id: -1 }),
  },
  {
    id: 'versionAt: model + documentId + ts ≤ date', runBy: 'lib/changes/history.ts versionAt()', consumers: ['history'],
    equality: ['documentId'], sort: OLDEST, range: ['ts'], residual: ['model'], index: indexName({ documentId: 1, ts: -1, _id: -1 }),
  },
  // ---- the dashboard and its rollups
  {
    id: 'dashboard without rollups: from/to', runBy: 'lib/rollup/dashboard.ts dashboard()', consumers: ['dashboard'],
    equality: [], sort: {}, range: ['ts'], residual: [], index: TS,
  },
  {
    id: 'dashboard without rollups: tenant + from/to', runBy: 'lib/rollup/dashboard.ts dashboard()', consumers: ['dashboard'],
    equality: ['tenant'], sort: {}, range: ['ts'], residual: [], index: TENANT,
  },
  {
    id: 'dashboard: loss events of the range', runBy: 'lib/rollup/dashboard.ts dashboard()', consumers: ['dashboard'],
    equality: ['kind'], sort: NEWEST, range: ['ts'], residual: [], index: KIND,
  },
  {
    id: 'rollups: one hour of events', runBy: 'lib/rollup/store.ts recount()/afterStore', consumers: ['rollups'],
    equality: [], sort: {}, range: ['ts'], residual: [], index: TS,
  },
  {
    id: 'rollups: rebuild, oldest first', runBy: 'lib/rollup/store.ts rebuild()', consumers: ['rollups'],
    equality: [], sort: { ts: 1 }, range: [], residual: [], index: TS,
  },
  // ---- verify: the chains in one pass, in (chain.id, chain.seq) order
  {
    id: 'verify: the range in chain order', runBy: 'lib/integrity/verify.ts verifyTrail()', consumers: ['verify', 'http', 'cli'],
    equality: [], sort: { 'chain.id': 1, 'chain.seq': 1, _id: 1 }, range: [], residual: ['ts'], index: CHAIN,
  },
  {
    id: 'verify: one chain', runBy: 'lib/integrity/verify.ts verifyTrail({ chainId })', consumers: ['verify', 'http', 'cli'],
    equality: ['chain.id'], sort: { 'chain.id': 1, 'chain.seq': 1, _id: 1 }, range: [], residual: ['ts'], index: CHAIN,
  },
  {
    id: 'verify: the hash at a position', runBy: 'lib/integrity/verify.ts hashAt()', consumers: ['verify'],
    equality: ['chain.id', 'chain.seq'], sort: {}, range: [], residual: [], index: CHAIN,
  },
  {
    id: 'verify: prune and checkpoint records', runBy: 'lib/integrity/verify.ts verifyTrail()', consumers: ['verify'],
    equality: ['kind'], sort: {}, range: [], residual: [], index: KIND,
  },
  {
    id: 'verify: the first audit_start', runBy: 'lib/integrity/verify.ts verifyTrail()', consumers: ['verify'],
    equality: ['kind'], sort: { ts: 1 }, range: [], residual: ['chain.seq'], index: KIND,
  },
  // ---- retention
  {
    id: 'prune: events before a date', runBy: 'lib/store/retention.ts prune(), pruneExpired()', consumers: ['prune'],
    equality: [], sort: {}, range: ['ts'], residual: ['kind'], index: TS,
  },
  {
    id: 'prune: one kind before a date', runBy: 'lib/store/retention.ts pruneExpired() (retention.byKind)', consumers: ['prune'],
    equality: ['kind'], sort: {}, range: ['ts'], residual: [], index: KIND,
  },
];

const sameKey = (a: Readonly<Record<string, unknown>>, b: Readonly<Record<string, unknown>>): boolean =>
  JSON.stringify(Object.entries(a)) === JSON.stringify(Object.entries(b));


/**
 * Drops the RETIRED_INDEXES an earlier version created on `collection`, each only when both its name and its key
 * are ours (never `syncIndexes`, which would drop every index the schema does not list: yours, the retention
 * TTL index). Resolves with the names dropped and, when some could not be (a role without `dropIndex`, such
 * as koaAuditWriter), the names left and why; a network fault rejects (ready() is then tried again).
 */
export async function retireIndexes(collection: mongo.Collection): Promise<{ dropped: string[]; left: string[]; reason: string | null }> {
  let existing: { name?: string; key?: Record<string, unknown> }[];
  try {
    existing = await collection.indexes();
  } catch (err) {
    if (isNetworkError(err)) throw err;
    // No collection yet (code 26): nothing to retire.
    return { dropped: [], left: [], reason: null };
  }
  const dropped: string[] = [];
  const left: string[] = [];
  let reason: string | null = null;
  for (const old of RETIRED_INDEXES) {
    const found = existing.find((i) => i.name === old.name);
    if (found?.key === undefined || !sameKey(found.key, old.key)) continue;
    try {
      await collection.dropIndex(old.name);
      dropped.push(old.name);
    } catch (err) {
      if (isNetworkError(err)) throw err;
      // Dropped meanwhile by another process (IndexNotFound): the outcome wanted.
      if ((err as { code?: unknown }).code === 27) continue;
      left.push(old.name);
      reason ??= (err as Error).message;
    }
  }
  return { dropped, left, reason };
}

/** The warning when retired indexes could not be dropped: what an operator runs instead. */
export function retiredMessage(collection: string, names: readonly string[], reason: string | null): string {
  const commands = names.map((n) => `db.getCollection(${JSON.stringify(collection)}).dropIndex(${JSON.stringify(n)})`).join('; ');
  return `indexes of an earlier version that no query uses any more slow every insert, and could not be dropped (${reason ?? 'unknown reason'}); as an operator, run: ${commands}`;
}
