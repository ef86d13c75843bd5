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
import type { Model, Schema } from 'mongoose';
import { history, versionAt } from './changes/history.js';
import { createPlugin, type PluginOptions } from './changes/plugin.js';
import { storage, type AuditContext } from './core/context.js';
import { createCore, type EventSink } from './core/core.js';
import { toActor } from './core/actor.js';
import { resolveOptions, type AuditOptions } from './core/options.js';
import type { ActorInput, AuditEvent, AuditorEvents, AuditStats, CloseResult, OnFull } from './core/types.js';
import { createLogin, type LoginFailedInput, type LoginSignals, type LoginSucceededInput, type LogoutInput } from './login/login.js';
import { query, type QueryFilter, type QueryPage } from './read/query.js';
import { createMiddleware, type MiddlewareOptions } from './request/middleware.js';
import { eventModel } from './store/model.js';
import { prune, setUpRetention } from './store/retention.js';
import { ensureWritableDir, Spool } from './store/spool.js';
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
  loginSucceeded(input: LoginSucceededInput): Promise<void>;
  loginFailed(input: LoginFailedInput): Promise<void>;
  logout(input: LogoutInput): Promise<void>;
  /** Newest first, keyset-paged: pass the previous page's `next` as `after`. */
  query(filter?: QueryFilter): Promise<QueryPage>;
  /** The change events of one document, oldest first. */
  history(model: string | Model<never>, documentId: unknown): Promise<AuditEvent[]>;
  /** The document as it was at `date`, rebuilt from its events; null when it did not exist then. */
  versionAt(model: string | Model<never>, documentId: unknown, date: Date): Promise<Record<string, unknown> | null>;
  /** Deletes events older than `before` (the only delete the library does). Resolves with the count. */
  prune(options: { before: Date }): Promise<number>;
  /** Indexes (and the retention index) exist when this resolves. */
  ready(): Promise<void>;
  /** Resolves when every accepted event is stored. */
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
  const events = new EventEmitter();

  let model: Model<AuditEvent> | null = null;
  const modelNow = (): Model<AuditEvent> => (model ??= eventModel(o.connection, o.collection));

  let writer: Writer | null = null; // made at the end of construction: it builds its loss events with the core
  function sink(): EventSink & Writer {
    writer ??= startWriter();
    return writer;
  }
  function startWriter(): Writer {
    let onFull: OnFull = o.onFull;
    let spool: Spool | null = null;
    if (onFull === 'spool') {
      try {
        ensureWritableDir(o.spoolDir);
        spool = new Spool(o.spoolDir);
      } catch (err) {
        core.warnOnce('KOA_AUDIT_SPOOL', `spool directory ${o.spoolDir} is not writable (${(err as Error).message}); using onFull: 'block'`);
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
      blockTimeoutMs: o.blockTimeoutMs,
      writeConcern: o.writeConcern,
      degradedAfterMs: o.degradedAfterMs,
      retryMinMs: 50,
      retryMaxMs: 5_000,
      lossEvent: ({ lost, from, to, policy }) =>
        core.buildSystem({ kind: 'loss', outcome: 'failure', meta: { lost, from: from.toISOString(), to: to.toISOString(), policy } }),
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
      await modelNow().createIndexes();
      await setUpRetention(c);
      await checkWriteConcern(o.connection, o.writeConcern, c.warnOnce);
    },
  });

  const login = createLogin(core);
  let closing: Promise<CloseResult> | null = null;
  const api: AuditorApi = {
    get model() {
      return modelNow();
    },
    plugin: createPlugin(core),
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
    loginSucceeded: login.loginSucceeded,
    loginFailed: login.loginFailed,
    logout: login.logout,
    query: (filter) => query(core, filter),
    history: (m, id) => history(core, m, id),
    versionAt: (m, id, date) => versionAt(core, m, id, date),
    prune: (opts) => prune(core, opts),
    ready: () => core.ready(),
    // Login events are accepted asynchronously and flood summaries are held in memory: both go first.
    flush: async () => {
      await login.flush();
      await writer?.flush();
    },
    close: (opts) => (closing ??= (async () => {
      await login.close();
      const result = writer === null ? { unwritten: 0 } : await writer.close(opts?.timeoutMs ?? o.closeTimeoutMs);
      // An index creation still under way would fail once the app closes its connection: let it end first.
      await core.settled();
      return result;
    })()),
    stats: () => writer?.stats() ?? { accepted: 0, stored: 0, retried: 0, dropped: 0, spooled: 0, queued: 0, degraded: false },
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
  sink(); // an earlier process's spool is replayed as soon as the store answers, not at the first event
  const auditor: Auditor = withProperties((mwOptions?: MiddlewareOptions) => createMiddleware(core, mwOptions), api);
  return auditor;
}

/** `fn` carrying the properties of `props`, accessors kept as accessors (Object.assign would read them now). */
function withProperties<F extends (...args: never[]) => unknown, P extends object>(fn: F, props: P): F & P {
  return Object.defineProperties(fn, Object.getOwnPropertyDescriptors(props)) as F & P;
}
