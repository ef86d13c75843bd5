/**
 * `createAudit()`: one auditor = one store (connection + collection) + its options. The auditor is a function
 * (calling it returns the Koa middleware, as the contract's `app.use(audit())` wants) carrying the rest of the
 * API as properties. Each concern lives in its own module and gets the `AuditCore` below.
 */
import { EventEmitter } from 'node:events';
import type { Context, Middleware } from 'koa';
import { mongo, type Model, type Schema } from 'mongoose';
import { createRequestResolver } from './core/actor.js';
import { reportError } from './core/errors.js';
import { actorNow, frameFor, ipOf, storage, type AuditContext } from './core/context.js';
import { history, versionAt } from './changes/history.js';
import { createLogin, type LoginFailedInput, type LoginSignals, type LoginSucceededInput, type LogoutInput } from './login/login.js';
import { createMiddleware, type MiddlewareOptions } from './request/middleware.js';
import { resolveOptions, type AuditOptions, type ResolvedOptions } from './core/options.js';
import { createPlugin, type PluginOptions } from './changes/plugin.js';
import { prune, query, type QueryFilter, type QueryPage } from './read/query.js';
import { createRedactor, type Redactor } from './core/redact.js';
import { DEFAULT_LIMITS, capString, toStored, type SafeLimits } from './core/safe.js';
import { eventModel } from './store/model.js';
import { ensureWritableDir, Spool, type StoredDoc } from './store/spool.js';
import { checkWriteConcern } from './store/write-concern.js';
import { Writer, type AuditStats } from './store/writer.js';
import type { Actor, ActorInput, AuditEvent } from './core/types.js';
import { toActor } from './core/actor.js';

/** Fields of an event that its producer supplies; the core adds `_id`, `ts`, actor and request fields. */
export type EventFields = Omit<Partial<AuditEvent>, '_id' | 'actor' | 'requestId' | 'ip' | 'userAgent'> &
  Pick<AuditEvent, 'kind' | 'outcome'>;

/** Where the request fields come from when the async context is not enough (a login call given `ctx`). */
export interface EventSource {
  ctx?: Context | null;
  /** An actor decided by the producer (a login names its user); otherwise the async context's actor. */
  actor?: Actor | null;
}

/** What the modules of an auditor share. Internal. */
export interface AuditCore {
  readonly options: ResolvedOptions;
  readonly redactor: Redactor;
  readonly limits: SafeLimits;
  readonly events: EventEmitter;
  readonly writer: Writer;
  readonly model: Model<AuditEvent>;
  readonly resolveRequestActor: (frame: AuditContext) => Promise<Actor | null>;
  /** Builds the stored document of an event (common fields, safe values). */
  build(fields: EventFields, source?: EventSource): Promise<StoredDoc>;
  /** Builds and accepts an event. Rejects only under `onFull: 'block'` when the store cannot take it. */
  record(fields: EventFields, source?: EventSource): Promise<void>;
  /** Accepts a built document (and has the indexes created, once). Rejects as `record` does. */
  accept(doc: StoredDoc): Promise<void>;
  /** Stores a built document now (sync mode; see Writer.writeNow), the indexes requested as by `accept`. */
  writeNow(doc: StoredDoc, instead: (doc: StoredDoc) => StoredDoc): Promise<void>;
  /** Indexes (and retention) are in place. Memoized; a failure is reported and tried again next time. */
  ready(): Promise<void>;
  /** Emits a process warning once per code. */
  warnOnce(code: string, message: string): void;
  /** Reports a fault of the auditor (lib/errors.ts): never thrown into the application. */
  report(err: unknown): void;
}

export interface CloseResult {
  /** Events that could not be stored before the timeout (moved to the spool when there is one). */
  unwritten: number;
}

export interface AuditorEvents {
  /** A write failed (it is retried); never thrown into the code that recorded the event. */
  error: [err: unknown];
  /** Writes have been failing for longer than `degradedAfterMs`. */
  degraded: [err: unknown];
  /** Writes succeed again after `degraded`. */
  recovered: [];
}

export interface Auditor {
  /** The Koa middleware: request and exception auditing, and the async context of the request. */
  (options?: MiddlewareOptions): Middleware;
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
  on<E extends keyof AuditorEvents>(event: E, listener: (...args: AuditorEvents[E]) => void): Auditor;
  once<E extends keyof AuditorEvents>(event: E, listener: (...args: AuditorEvents[E]) => void): Auditor;
  off<E extends keyof AuditorEvents>(event: E, listener: (...args: AuditorEvents[E]) => void): Auditor;
}

export function createAudit(options?: AuditOptions): Auditor {
  const o = resolveOptions(options);
  const events = new EventEmitter();
  const redactor = createRedactor(o.redact);
  const limits: SafeLimits = { ...DEFAULT_LIMITS, maxString: o.maxStringLength };
  const model = eventModel(o.connection, o.collection);
  const warned = new Set<string>();

  function warnOnce(code: string, message: string): void {
    if (warned.has(code)) return;
    warned.add(code);
    process.emitWarning(`koa-audit: ${message}`, { type: 'KoaAuditWarning', code });
  }

  let onFull = o.onFull;
  let spool: Spool | null = null;
  if (onFull === 'spool') {
    try {
      ensureWritableDir(o.spoolDir);
      spool = new Spool(o.spoolDir);
    } catch (err) {
      warnOnce('KOA_AUDIT_SPOOL', `spool directory ${o.spoolDir} is not writable (${(err as Error).message}); using onFull: 'block'`);
      onFull = 'block';
    }
  }

  const writer = new Writer(() => model.collection, {
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
  }, events);

  let readyPromise: Promise<void> | null = null;
  function ready(): Promise<void> {
    readyPromise ??= (async () => {
      await model.createIndexes();
      await setUpRetention(core);
      await checkWriteConcern(o.connection, o.writeConcern, warnOnce);
    })().catch((err: unknown) => {
      readyPromise = null;
      throw err;
    });
    return readyPromise;
  }

  async function build(fields: EventFields, source: EventSource = {}): Promise<StoredDoc> {
    // A login handler may pass `ctx` from outside the request's async context (a callback API, say).
    const frame = frameFor(source.ctx);
    const ctx = source.ctx ?? frame?.ctx ?? null;
    const doc: StoredDoc = {
      _id: new mongo.ObjectId(),
      ts: fields.ts ?? new Date(),
      kind: fields.kind,
      outcome: fields.outcome,
      actor: source.actor !== undefined ? source.actor : await actorNow(frame),
      requestId: frame?.requestId ?? null,
      ip: frame?.ip ?? ipOf(ctx),
      userAgent: frame?.userAgent ?? (ctx === null ? null : capString(ctx.get('user-agent'), 512) || null),
    };
    for (const key in fields) {
      if (key === 'ts' || key === 'kind' || key === 'outcome') continue;
      const value = (fields as Record<string, unknown>)[key];
      if (value !== undefined) doc[key] = toStored(value, redactor, limits);
    }
    return doc;
  }

  // The first event asks for the indexes; a failure is reported and the next event asks again.
  let indexesRequested = false;
  function requestIndexes(): void {
    if (indexesRequested) return;
    indexesRequested = true;
    ready().catch((err: unknown) => {
      indexesRequested = false;
      reportError(events, err);
    });
  }

  async function accept(doc: StoredDoc): Promise<void> {
    requestIndexes();
    await writer.accept(doc);
  }

  async function record(fields: EventFields, source?: EventSource): Promise<void> {
    await accept(await build(fields, source));
  }

  const core: AuditCore = {
    options: o,
    redactor,
    limits,
    events,
    writer,
    model,
    resolveRequestActor: createRequestResolver(o.jwt, o.resolveActor),
    build,
    record,
    accept,
    writeNow: (doc, instead) => {
      requestIndexes();
      return writer.writeNow(doc, instead);
    },
    ready,
    warnOnce,
    report: (err) => reportError(events, err),
  };

  const login = createLogin(core);
  const auditor = ((mwOptions?: MiddlewareOptions) => createMiddleware(core, mwOptions)) as Auditor;
  Object.assign(auditor, {
    model,
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
    query: (filter?: QueryFilter) => query(core, filter),
    history: (m: string | Model<never>, id: unknown) => history(core, m, id),
    versionAt: (m: string | Model<never>, id: unknown, date: Date) => versionAt(core, m, id, date),
    prune: (opts: { before: Date }) => prune(core, opts),
    ready,
    // Login events are accepted asynchronously and flood summaries are held in memory: both go first.
    flush: () => login.flush().then(() => writer.flush()),
    close: async (opts?: { timeoutMs?: number }) => {
      await login.close();
      const result = await writer.close(opts?.timeoutMs ?? o.closeTimeoutMs);
      // An index creation still under way would fail once the app closes its connection: let it end first.
      await readyPromise?.catch(() => {});
      return result;
    },
    stats: () => writer.stats(),
    on(event: keyof AuditorEvents, listener: (...args: unknown[]) => void) {
      events.on(event, listener);
      return auditor;
    },
    once(event: keyof AuditorEvents, listener: (...args: unknown[]) => void) {
      events.once(event, listener);
      return auditor;
    },
    off(event: keyof AuditorEvents, listener: (...args: unknown[]) => void) {
      events.off(event, listener);
      return auditor;
    },
  });
  return auditor;
}

/** Retention: a TTL index where the server has them; otherwise a warning, and `prune()` is the way. */
async function setUpRetention(core: AuditCore): Promise<void> {
  const days = core.options.retention?.days;
  if (days === undefined) return;
  const seconds = Math.round(days * 86_400);
  try {
    await core.model.collection.createIndex({ ts: 1 }, { name: 'koa_audit_retention', expireAfterSeconds: seconds });
  } catch (err) {
    const e = err as { code?: unknown; name?: unknown };
    // A network fault says nothing about TTL support: fail ready() so that it is tried again.
    if (typeof e.name === 'string' && /^Mongo(Network|NetworkTimeout|ServerSelection)Error$/.test(e.name)) throw err;
    // IndexOptionsConflict: the index exists with another period (retention was changed); change it in place.
    if (e.code === 85) {
      try {
        await core.options.connection.db?.command({ collMod: core.model.collection.collectionName, index: { name: 'koa_audit_retention', expireAfterSeconds: seconds } });
        return;
      } catch {
        // fall through to the warning
      }
    }
    core.warnOnce('KOA_AUDIT_NO_TTL', `this server cannot create a TTL index (${(err as Error).message}); call audit.prune({ before }) to apply retention`);
  }
}
