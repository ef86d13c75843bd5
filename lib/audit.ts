/**
 * `createAudit()`, the composition root: one auditor = one store (connection + collection) + its options.
 * The auditor is a function (calling it returns the Koa middleware, as the contract's `app.use(audit())`
 * wants) carrying the rest of the API as properties. Each concern lives in its own folder and gets the core.
 *
 * Construction validates the options and starts the store (the spool directory, and the replay of what an
 * earlier process left in it). The mongoose model is registered at its first use. The default `audit`
 * instance (lib/index.ts) is made at its own first use, so importing the package does nothing.
 */
import { EventEmitter } from 'node:events';
import type { Middleware } from 'koa';
import mongoose, { type Connection, type Model, type Schema } from 'mongoose';
import { history, versionAt, type HistoryScope } from './changes/history.js';
import { watchLatePlugin } from './changes/late-plugin.js';
import { restore, revert, type RestoreOptions, type RevertOptions, type RevertResult } from './changes/revert.js';
import { annotate, withContext } from './core/scope.js';
import { createPlugin, type PluginOptions } from './changes/plugin.js';
import { storage, type AuditContext } from './core/context.js';
import { createCore, type EventSink } from './core/core.js';
import { toActor } from './core/actor.js';
import { resolveIntegrity } from './core/integrity-options.js';
import { resolveOptions, type AuditOptions } from './core/options.js';
import type { ActorInput, AuditEvent, AuditNote, AuditorEvents, AuditScope, AuditStats, CloseResult, OnFull } from './core/types.js';
import { isChainRecord, type Chain } from './integrity/chain.js';
import { createChain, stopChain } from './integrity/trail.js';
import { verifyTrail, type VerifyResult } from './integrity/verify.js';
import { verifyRun, type VerifyOptions } from './integrity/verify-options.js';
import { createLogin, type LoginFailedInput, type LoginSignals, type LoginSucceededInput, type LogoutInput } from './login/login.js';
import { createSecurity, type SecurityEventName, type SecurityInput } from './login/security.js';
import { createTokenEvents, type TokenEventInput } from './login/tokens.js';
import { query, type QueryFilter, type QueryPage } from './read/query.js';
import { dashboard, type DashboardAnswer, type DashboardQuery } from './rollup/dashboard.js';
import { RollupStore } from './rollup/store.js';
import { recordStoreHealth } from './store/health.js';
import { createMiddleware, type MiddlewareOptions } from './request/middleware.js';
import { eventModel } from './store/model.js';
import { ensureTextIndex, retiredMessage, retireIndexes } from './store/indexes.js';
import { prune, pruneExpired, PRUNE_EVERY_MS, setUpRetention } from './store/retention.js';
import { defaultSpoolBase, defaultSpoolDir, SpoolTrustError, trustedDir, type Destination } from './store/spool-files.js';
import { Spool } from './store/spool.js';
import { WriteAheadLog } from './store/wal.js';
import { SinkSet } from './sinks/fanout.js';
import { checkWriteConcern } from './store/write-concern.js';
import { Writer } from './store/writer.js';

type Listener<E extends keyof AuditorEvents> = (...args: AuditorEvents[E]) => void;

/** Everything an auditor is besides being the middleware factory. */
export interface AuditorApi {
  /** The mongoose Model of the audit collection. */
  readonly model: Model<AuditEvent>;
  /** The mongoose plugin for change auditing: `schema.plugin(audit.plugin, options)`. */
  readonly plugin: (schema: Schema, options?: PluginOptions) => void;
  /** Emit `login`, `login_failed`, `logout` here and the auditor records them. */
  readonly signals: LoginSignals;
  /** The async context of whatever runs now, or undefined outside a request and `withActor`. */
  context(): AuditContext | undefined;
  /** Runs `fn` with `actor` as the actor of everything it does. */
  withActor<T>(actor: ActorInput, fn: () => T): T;
  /**
   * Runs `fn` with this context on everything it records: `actor` (accountable), `onBehalfOf` (whom they act
   * as), `tenant`, and the `reason` and `meta` of its changes.
   */
  withContext<T>(scope: AuditScope, fn: () => T): T;
  /** A reason and meta for the rest of the current request (its changes and its request event) or scope. */
  annotate(note: AuditNote): void;
  /**
   * Undoes one change event through the application's model (itself audited, with `meta.revertOf`). Throws
   * RevertConflictError when the document changed since (unless `force`), RevertRefusedError for redacted paths.
   */
  revert(eventId: string, options?: RevertOptions): Promise<RevertResult>;
  /** Writes back the version `versionAt(model, id, at)` rebuilds (itself audited, with `meta.restoredTo`). */
  restore(model: string | Model<never>, documentId: unknown, at: Date, options?: RestoreOptions): Promise<RevertResult>;
  loginSucceeded(input: LoginSucceededInput): Promise<void>;
  loginFailed(input: LoginFailedInput): Promise<void>;
  logout(input: LogoutInput): Promise<void>;
  /** A security event of the OWASP Logging Vocabulary (`authz_fail`, `authz_change`, ...): kind `security` with `name`. */
  security(name: SecurityEventName, input?: SecurityInput): Promise<void>;
  /** Records `authn_token_created` (the token itself is never stored, only its fingerprint, `jti` and expiry). */
  tokenIssued(input: TokenEventInput): Promise<void>;
  /** Records `authn_token_revoked`. */
  tokenRevoked(input: TokenEventInput): Promise<void>;
  /** The identifier as `login_failed` of an unknown user stores it: its HMAC under `failedIdentifiers: 'hmac'`, else itself. */
  hashIdentifier(identifier: string): string;
  /** Newest first, keyset-paged: pass the previous page's `next` as `after`. */
  query(filter?: QueryFilter): Promise<QueryPage>;
  /** The change events of one document, oldest first. */
  history(model: string | Model<never>, documentId: unknown, scope?: HistoryScope): Promise<AuditEvent[]>;
  /** The document as it was at `date`, rebuilt from its events; null when it did not exist then. */
  versionAt(model: string | Model<never>, documentId: unknown, date: Date): Promise<Record<string, unknown> | null>;
  /** The numbers behind the dashboard page, from the rollups where they can answer. */
  dashboard(query: DashboardQuery): Promise<DashboardAnswer>;
  /** Recounts the rollups from the events (what `koa-audit rollup --rebuild` does). Resolves with the events counted. */
  rebuildRollups(): Promise<number>;
  /**
   * Deletes events older than `before` (the only delete the library does) and records it in a `prune` event.
   * With `retention` set, a `before` inside the retention period needs `force: true`. Without options, applies
   * the `retention` option now (per kind, recorded as a `prune` event). Resolves with the count.
   */
  prune(options?: { before: Date; force?: boolean }): Promise<number>;
  /** Checks the hash chains, checkpoints and witnesses of the collection (lib/integrity/verify.ts). */
  verify(options?: VerifyOptions): Promise<VerifyResult>;
  /** Indexes (and the retention index) exist when this resolves. */
  ready(): Promise<void>;
  /**
   * Resolves when every accepted event is stored, and what an earlier process left in the spool too: with a spool,
   * that waits for the connection to open (the spool is looked at then).
   */
  flush(): Promise<void>;
  /** Flushes, then stops timers; after `timeoutMs` resolves with what it could not write. */
  close(options?: { timeoutMs?: number }): Promise<CloseResult>;
  stats(): AuditStats;
  on<E extends keyof AuditorEvents>(event: E, listener: Listener<E>): Auditor;
  once<E extends keyof AuditorEvents>(event: E, listener: Listener<E>): Auditor;
  off<E extends keyof AuditorEvents>(event: E, listener: Listener<E>): Auditor;
}

export interface Auditor extends AuditorApi {
  /** The Koa middleware: request and exception auditing, and the async context of the request. */
  (options?: MiddlewareOptions): Middleware;
}

export function createAudit(options?: AuditOptions): Auditor {
  const o = resolveOptions(options);
  const integrity = resolveIntegrity((options as AuditOptions | undefined)?.integrity, (options as AuditOptions | undefined)?.onCheckpoint);
  const events = new EventEmitter();

  let model: Model<AuditEvent> | null = null;
  const modelNow = (): Model<AuditEvent> => (model ??= eventModel(o.connection, o.collection));

  // A spool belongs to one destination: the database and collection, recorded in each of its files.
  const destination = (): Destination => ({ db: databaseName(o.connection), collection: o.collection });
  let spool: Spool | null = null;
  // Each sink is fed after the store took a batch, through its own relay (lib/sinks/): never in the store's way.
  const sinks = o.sinks.length === 0 ? null : new SinkSet(o.sinks, {
    trustedBase: o.spoolDir ?? defaultSpoolBase(),
    spoolDir: () => o.spoolDir ?? defaultSpoolDir(destination()),
    destination,
    maxQueue: o.maxQueue,
    onLoss: ({ sink, lost, from, to, reason }) => {
      core.accept(core.buildSystem({ kind: 'loss', outcome: 'failure', meta: { sink, lost, from: from.toISOString(), to: to.toISOString(), reason } }))
        .catch((err: unknown) => core.report(err));
    },
    report: (err) => core.report(err),
    warnOnce: (code, message) => core.warnOnce(code, message),
  });
  const createdAt = new Date();
  const rollups = o.rollups === null
    ? null
    : new RollupStore(() => modelNow().collection, () => o.connection.collection(RollupStore.collectionName(o.collection)), o.rollups);

  let writer: Writer | null = null; // made at the end of construction: it builds its loss events with the core
  function sink(): EventSink & Writer {
    writer ??= startWriter();
    return writer;
  }
  function startWriter(): Writer {
    let onFull: OnFull = o.onFull;
    const disk = o.durability === 'disk';
    if (onFull === 'spool' || disk) {
      try {
        // The default directory is per destination, made once the connection names its database, under a
        // base directory of this user's own (checked now, so that an untrusted one is known at start).
        trustedDir(o.spoolDir ?? defaultSpoolBase());
        spool = new Spool(o.spoolDir ?? (() => defaultSpoolDir(destination())), destination);
        spool.onRefused = (message) => process.emitWarning(message, { type: 'KoaAuditWarning', code: 'KOA_AUDIT_SPOOL_REFUSED' });
      } catch (err) {
        const dir = o.spoolDir ?? defaultSpoolBase();
        const why = err instanceof SpoolTrustError ? err.message.replace(/^koa-audit: /, '') : `spool directory ${dir}: ${(err as Error).message}`;
        if (disk) throw new Error(`koa-audit: durability 'disk' needs a spool directory it can trust: ${why}`);
        core.warnOnce('KOA_AUDIT_SPOOL', `${why}; using onFull: 'block'`);
        onFull = 'block';
      }
    }
    return new Writer(() => modelNow().collection, {
      batchSize: o.batchSize,
      flushIntervalMs: o.flushIntervalMs,
      maxQueue: o.maxQueue,
      maxQueueBytes: o.maxQueueBytes,
      onFull,
      spool,
      wal: disk && spool !== null ? new WriteAheadLog(spool) : null,
      blockTimeoutMs: o.blockTimeoutMs,
      writeConcern: o.writeConcern,
      degradedAfterMs: o.degradedAfterMs,
      retryMinMs: 50,
      retryMaxMs: 5_000,
      chain,
      lossEvent: ({ lost, from, to, policy }) =>
        core.buildSystem({ kind: 'loss', outcome: 'failure', meta: { lost, from: from.toISOString(), to: to.toISOString(), policy } }),
      // Sinks get the application's events (with their chain fields); the chain's own records stay in the store.
      onStored: sinks === null ? undefined : (docs) => sinks.offer(docs.filter((d) => !isChainRecord(d))),
      afterStore: rollups === null ? undefined : (stored, duplicates) => rollups.afterStore(stored, duplicates, core.report),
    }, events);
  }

  const core = createCore({
    options: o,
    events,
    get model() {
      return modelNow();
    },
    sink,
    prepare: async (c) => {
      if (!opened(o.connection)) c.report(new Error(notOpenMessage(o.connection)));
      await modelNow().createIndexes();
      if ((await setUpRetention(c)) === 'prune') schedulePrune();
      await rollups?.prepare(createdAt);
      await ensureTextIndex(modelNow().collection); // where the server has none, free text is matched by a scan (query.ts)
      // After the new ones exist: a query never finds neither.
      const retired = await retireIndexes(modelNow().collection);
      if (retired.left.length > 0) c.warnOnce('KOA_AUDIT_RETIRED_INDEXES', retiredMessage(modelNow().collection.collectionName, retired.left, retired.reason));
      await checkWriteConcern(o.connection, o.writeConcern, c.warnOnce);
    },
  });

  // Where TTL indexes cannot apply retention, a timer does (unref'd: it never keeps the process alive).
  let pruneTimer: NodeJS.Timeout | null = null;
  function schedulePrune(): void {
    if (pruneTimer !== null || closing !== null) return;
    pruneTimer = setInterval(() => {
      pruneExpired(core).catch(core.report);
    }, PRUNE_EVERY_MS);
    pruneTimer.unref();
  }

  // Degraded periods are recorded in the trail (sys_monitor_disabled / _enabled), so a past outage never hides.
  recordStoreHealth(core, events);
  const chain: Chain = createChain(core, integrity);
  const login = createLogin(core);
  async function shutDown(timeoutMs: number): Promise<CloseResult> {
    const deadline = Date.now() + timeoutMs;
    if (pruneTimer !== null) clearInterval(pruneTimer);
    await within(login.close(), deadline);
    if (writer !== null) {
      // audit_stop reports what was stored: what can be written in half the time left is written first.
      await within(writer.flush(), Date.now() + Math.max(0, deadline - Date.now()) / 2);
      stopChain(core, chain, writer.stats());
    }
    const result = writer === null ? { unwritten: 0 } : await writer.close(Math.max(0, deadline - Date.now()));
    // The rollups of what was stored (their writes trail the store's by a moment).
    if (rollups !== null) await within(rollups.flush(), deadline);
    // Sinks get what is left of the time; what they cannot deliver waits in their spools for the next process.
    await sinks?.close(Math.max(0, deadline - Date.now()));
    // An index creation still under way would fail once the app closes its connection: let it end first.
    await within(core.settled(), deadline);
    spool?.close();
    return result;
  }
  const plugin = createPlugin(core);
  const watchPlugin = watchLatePlugin(core, plugin);
  const security = createSecurity(core);
  const tokens = createTokenEvents(security);
  let closing: Promise<CloseResult> | null = null;
  const api: AuditorApi = {
    get model() {
      return modelNow();
    },
    // Read by `mongoose.plugin(audit.plugin)`: models compiled before that call are not audited; say so.
    get plugin() {
      watchPlugin();
      return plugin;
    },
    signals: login.signals,
    context: () => storage.getStore(),
    withActor<T>(actor: ActorInput, fn: () => T): T {
      const explicit = toActor(actor, 'explicit');
      if (explicit === null) throw new TypeError('koa-audit: withActor needs an actor with an id');
      const parent = storage.getStore();
      const frame: AuditContext = parent === undefined
        ? { requestId: null, ip: null, userAgent: null, ctx: null, explicitActor: explicit, resolve: null }
        : { ...parent, explicitActor: explicit };
      return storage.run(frame, fn);
    },
    withContext: (scope, fn) => withContext(scope, fn),
    annotate: (note) => annotate(note),
    // The events read must be stored: what this auditor still holds in memory is written first.
    revert: async (eventId, opts) => {
      await api.flush();
      return revert(core, eventId, opts);
    },
    restore: async (m, id, at, opts) => {
      await api.flush();
      return restore(core, m, id, at, opts);
    },
    loginSucceeded: login.loginSucceeded,
    loginFailed: login.loginFailed,
    logout: login.logout,
    security,
    tokenIssued: tokens.tokenIssued,
    tokenRevoked: tokens.tokenRevoked,
    hashIdentifier: (identifier) => login.hashIdentifier(identifier) ?? identifier,
    query: (filter) => query(core, filter),
    history: (m, id, scope) => history(core, m, id, scope),
    versionAt: (m, id, date) => versionAt(core, m, id, date),
    prune: async (opts) => {
      if (opts === undefined) {
        // Retention by kind: the rollups keep their own retention (they are not recounted per kind).
        const expired = await pruneExpired(core);
        await rollups?.pruneOld();
        return expired;
      }
      const n = await prune(core, opts);
      await rollups?.afterPrune(opts.before);
      await rollups?.pruneOld();
      return n;
    },
    dashboard: async (q) => {
      await core.ready();
      return dashboard({ events: () => modelNow().collection, rollups, degraded: () => writer?.stats().degraded ?? false }, q);
    },
    rebuildRollups: async () => {
      if (rollups === null) throw new TypeError('koa-audit: rollups are disabled (rollups: false)');
      await core.ready();
      await writer?.flush();
      return rollups.rebuild();
    },
    verify: async (opts) => {
      // Retention by kind deletes events of some kinds from the middle of a chain: a gap is explained once it
      // is older than the shortest period of any kind (verify cannot know the kind of an event that is gone).
      const run = verifyRun(opts, integrity.signer, shortestRetention(o.retention));
      // What this auditor accepted is stored first; its chain is the one still open here.
      await api.flush();
      const open = closing === null && chain.started ? new Set([chain.id]) : new Set<string>();
      return verifyTrail(modelNow().collection, { ...run, openChains: open });
    },
    ready: () => core.ready(),
    // Login events are accepted asynchronously and flood summaries are held in memory: both go first.
    flush: async () => {
      await login.flush();
      if (spool !== null) await spoolChecked;
      await writer?.flush();
      await rollups?.flush();
    },
    // Bounded in every state (a store never reached, a connection never opened): what could not be written
    // by the deadline is spooled and counted in `unwritten`.
    close: (opts) => {
      const timeoutMs = opts?.timeoutMs ?? o.closeTimeoutMs;
      if (typeof timeoutMs !== 'number' || !(timeoutMs >= 0)) return Promise.reject(new TypeError(`koa-audit: close({ timeoutMs }) must be a number >= 0, got ${String(timeoutMs)}`));
      return (closing ??= shutDown(timeoutMs));
    },

    stats: () => {
      const s = writer?.stats() ?? { accepted: 0, stored: 0, retried: 0, dropped: 0, spooled: 0, queued: 0, degraded: false };
      return sinks === null ? s : { ...s, sinks: sinks.stats() };
    },
    on(event, listener) {
      events.on(event, listener as (...args: unknown[]) => void);
      return auditor;
    },
    once(event, listener) {
      events.once(event, listener as (...args: unknown[]) => void);
      return auditor;
    },
    off(event, listener) {
      events.off(event, listener as (...args: unknown[]) => void);
      return auditor;
    },
  };
  const w = sink();
  // What an earlier process left in the spool is replayed as soon as the store answers, not at the first
  // event; looked for once the connection is open (the default directory depends on its database).
  // Until then flush() cannot know what the spool holds, so it waits rather than report everything stored.
  let spoolLooked: () => void = () => {};
  const spoolChecked = new Promise<void>((resolve) => (spoolLooked = resolve));
  const checkSpools = (): void => {
    w.checkSpool();
    sinks?.checkSpool();
    spoolLooked();
  };
  if (o.connection.readyState === 1) checkSpools();
  else o.connection.once('open', checkSpools);
  const auditor: Auditor = withProperties((mwOptions?: MiddlewareOptions) => createMiddleware(core, mwOptions), api);
  return auditor;
}

/** Resolves when `p` settles or at `deadline`, whichever comes first. */
async function within(p: Promise<unknown>, deadline: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    p.then(() => {}, () => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
    }),
  ]);
  clearTimeout(timer);
}

/** The database a connection writes to: known once it has a URI (before it is open). */
function databaseName(conn: Connection): string | null {
  if (typeof conn.name === 'string' && conn.name !== '') return conn.name;
  const dbName = (conn as { client?: { options?: { dbName?: unknown } } }).client?.options?.dbName;
  return typeof dbName === 'string' && dbName !== '' ? dbName : null;
}

/** Open now, or opening (connect() called, not failed yet). */
function opened(conn: Connection): boolean {
  return conn.readyState === 1 || conn.readyState === 2 || (conn as { _hasOpened?: boolean })._hasOpened === true;
}

function notOpenMessage(conn: Connection): string {
  const isDefault = conn === mongoose.connection;
  const name = isDefault ? 'mongoose.connection (the default connection)' : `the connection given as createAudit({ connection }) (database ${JSON.stringify(databaseName(conn))})`;
  const others = mongoose.connections.filter((c) => c !== conn && c.readyState === 1).map((c) => JSON.stringify(c.name));
  const hint = isDefault && others.length > 0
    ? ` Your app opened its own connection (database ${others.join(', ')}): pass it as createAudit({ connection }) and use that auditor.`
    : isDefault ? ' Call mongoose.connect(uri) first, or pass an open connection as createAudit({ connection }).' : ' Call connection.openUri(uri) (or create it with a URI) first.';
  return `koa-audit: the audit connection, ${name}, is not open (never connected, or its connection failed): events wait in memory and are not stored.${hint}`;
}

/** `fn` carrying the properties of `props`, accessors kept as accessors (Object.assign would read them now). */
function withProperties<F extends (...args: never[]) => unknown, P extends object>(fn: F, props: P): F & P {
  return Object.defineProperties(fn, Object.getOwnPropertyDescriptors(props)) as F & P;
}

/** The shortest period of the retention option, across `days` and `byKind`; undefined without retention. */
function shortestRetention(r: { days?: number; byKind: Readonly<Record<string, number>> } | undefined): number | undefined {
  if (r === undefined) return undefined;
  const periods = [...(r.days === undefined ? [] : [r.days]), ...Object.values(r.byKind)];
  return periods.length === 0 ? undefined : Math.min(...periods);
}
