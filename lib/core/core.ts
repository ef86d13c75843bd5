/**
 * The core of one auditor: builds events (common fields, safe values), accepts them into the store, and
 * reports its own faults. Every producer (request, changes, logins, the store's loss events) goes through it,
 * so one builder gives every event its shape. The store is handed in as an interface: the core depends on
 * nothing above `lib/core/`.
 */
import type { EventEmitter } from 'node:events';
import type { Context } from 'koa';
import { mongo, type Model } from 'mongoose';
import { createRequestResolver, toActor } from './actor.js';
import { boundEvent } from './bound.js';
import { actorOf, frameFor, frameOf, ipOf, SYSTEM_ACTOR, type AuditContext } from './context.js';
import { reportError } from './errors.js';
import type { ResolvedOptions } from './options.js';
import { createRedactor, type Redactor } from './redact.js';
import { capString, DEFAULT_LIMITS, toStored, type SafeLimits } from './safe.js';
import { tenantValue } from './scope.js';
import { activeSpanIds } from './trace.js';
import type { Actor, AuditEvent, OnFull, StoredDoc } from './types.js';

/** Fields of an event that its producer supplies; the core adds `_id`, `ts`, actor and request fields. */
export type EventFields = Omit<Partial<AuditEvent>, '_id' | 'actor' | 'requestId' | 'ip' | 'userAgent'> &
  Pick<AuditEvent, 'kind' | 'outcome'>;

/** Where the request fields come from when the async context is not enough (a login call given `ctx`). */
export interface EventSource {
  ctx?: Context | null;
  /** An actor decided by the producer (a login names its user); otherwise the async context's actor. */
  actor?: Actor | null;
}

/** What the core needs of the store (lib/store/writer.ts implements it). */
export interface EventSink {
  readonly onFull: OnFull;
  accept(doc: StoredDoc): void | Promise<void>;
  writeNow(doc: StoredDoc, instead?: (doc: StoredDoc) => StoredDoc): Promise<void>;
  waitForRoom(): Promise<void>;
}

/** What the modules of an auditor share. Internal. */
export interface AuditCore {
  readonly options: ResolvedOptions;
  readonly redactor: Redactor;
  readonly limits: SafeLimits;
  readonly events: EventEmitter;
  readonly model: Model<AuditEvent>;
  /** True under `onFull: 'block'`: writers wait for room (`waitForRoom`) before they act. */
  readonly blocking: boolean;
  readonly resolveRequestActor: (frame: AuditContext) => Actor | null | Promise<Actor | null>;
  /** Builds the stored document of an event (common fields, safe values). */
  build(fields: EventFields, source?: EventSource): Promise<StoredDoc>;
  /** Builds an event of the auditor itself: the system actor, no request, whatever async context runs now. */
  buildSystem(fields: EventFields): StoredDoc;
  /** Builds and accepts an event. Rejects only under `onFull: 'block'` when the store cannot take it. */
  record(fields: EventFields, source?: EventSource): Promise<void>;
  /**
   * As `record`, without a promise when nothing has to be waited for (no async resolver, room in the store):
   * the request path's way. May throw (a fault of the auditor) where `record` would reject.
   */
  submit(fields: EventFields, source?: EventSource): void | Promise<void>;
  /** Accepts a built document (and has the indexes created, once). Rejects as `record` does. */
  accept(doc: StoredDoc): Promise<void>;
  /** Stores a built document now (sync mode), the indexes requested as by `accept`. */
  writeNow(doc: StoredDoc, instead: (doc: StoredDoc) => StoredDoc): Promise<void>;
  /** Resolves when the store has room; rejects with AuditUnavailableError after `blockTimeoutMs`. */
  waitForRoom(): Promise<void>;
  /** Indexes (and retention) are in place. Memoized; a failure is reported and tried again next time. */
  ready(): Promise<void>;
  /** Resolves once an index creation under way (if any) has ended, however it ended. */
  settled(): Promise<void>;
  /** Emits a process warning once per code. */
  warnOnce(code: string, message: string): void;
  /** Reports a fault of the auditor (lib/core/errors.ts): never thrown into the application. */
  report(err: unknown): void;
}

/** The context of an event beyond actor and request fields (see contextFields). */
interface ContextFields {
  onBehalfOf?: Actor | null;
  tenant?: string | null;
  traceId?: string;
  spanId?: string;
  reason?: string;
  meta?: Record<string, unknown>;
}

/** The app's `onBehalfOf(ctx)`: a user-like value (or a promise of one) becomes an actor; a fault means none. */
async function resolveOnBehalfOf(fn: (ctx: Context) => unknown, ctx: Context): Promise<Actor | null> {
  try {
    return toActor(await fn(ctx), 'resolver');
  } catch {
    return null;
  }
}

function resolveTenant(fn: (ctx: Context) => unknown, ctx: Context): string | null {
  try {
    return tenantValue(fn(ctx));
  } catch {
    return null;
  }
}

/** A request's user agent as stored: scrubbed (a token pasted there is still a token), at most 512 characters. */
export function userAgentOf(ctx: Context | null, redactor: Redactor): string | null {
  const ua = ctx === null ? '' : ctx.get('user-agent');
  return ua === '' ? null : capString(redactor.text(ua.length > 1024 ? ua.slice(0, 1024) : ua), 512);
}

export interface CoreParts {
  options: ResolvedOptions;
  events: EventEmitter;
  model: Model<AuditEvent>;
  /** The store, made at its first use (it builds its loss events with this core). */
  sink: () => EventSink;
  /** Creates indexes and retention: run once, by the first event or `ready()`. */
  prepare: (core: AuditCore) => Promise<void>;
}

export function createCore(parts: CoreParts): AuditCore {
  const { options: o, events, sink } = parts;
  const redactor = createRedactor(o.redact, o.scrub);
  const limits: SafeLimits = { ...DEFAULT_LIMITS, maxString: o.maxStringLength };
  const warned = new Set<string>();

  function warnOnce(code: string, message: string): void {
    if (warned.has(code)) return;
    warned.add(code);
    process.emitWarning(`koa-audit: ${message}`, { type: 'KoaAuditWarning', code });
  }

  let readyPromise: Promise<void> | null = null;
  function ready(): Promise<void> {
    readyPromise ??= parts.prepare(core).catch((err: unknown) => {
      readyPromise = null;
      throw err;
    });
    return readyPromise;
  }

  function assemble(fields: EventFields, actor: Actor | null, frame: AuditContext | undefined, ctx: Context | null, extra: ContextFields | null = null): StoredDoc {
    const doc: StoredDoc = {
      _id: new mongo.ObjectId(),
      ts: fields.ts ?? new Date(),
      kind: fields.kind,
      outcome: fields.outcome,
      actor,
      requestId: frame?.requestId ?? null,
      ip: frame?.ip ?? ipOf(ctx),
      userAgent: frame?.userAgent ?? userAgentOf(ctx, redactor),
    };
    if (extra !== null) {
      if (extra.onBehalfOf != null) doc.onBehalfOf = extra.onBehalfOf;
      if (extra.tenant != null) doc.tenant = extra.tenant;
      if (extra.traceId !== undefined) {
        doc.traceId = extra.traceId;
        doc.spanId = extra.spanId;
      }
    }
    for (const key in fields) {
      if (key === 'ts' || key === 'kind' || key === 'outcome') continue;
      const value = (fields as Record<string, unknown>)[key];
      if (value !== undefined) doc[key] = toStored(value, redactor, limits);
    }
    if (extra !== null) {
      // The producer's own reason (a failed login's) and meta keys win over the context's.
      if (extra.reason !== undefined && doc.reason === undefined) doc.reason = capString(extra.reason, limits.maxString);
      if (extra.meta !== undefined) doc.meta = toStored(fields.meta === undefined ? extra.meta : { ...extra.meta, ...fields.meta }, redactor, limits);
    }
    return doc;
  }

  /**
   * What the frame says beyond actor and request: onBehalfOf, tenant, trace ids, reason and meta. Null when it
   * says nothing, which is the common case and costs a few property reads; resolvers run only when configured.
   */
  function contextFields(frame: AuditContext | undefined, ctx: Context | null): ContextFields | null | Promise<ContextFields | null> {
    if (frame === undefined) {
      const span = activeSpanIds();
      return span === null ? null : { ...span };
    }
    const root = frame.ctx !== null ? frameOf.get(frame.ctx) : undefined;
    const note = root !== undefined && root !== frame ? root.note ?? frame.note : frame.note;
    const onBehalfOf = frame.onBehalfOf;
    let tenant = frame.tenant;
    const rctx = frame.ctx ?? ctx;
    if (tenant === undefined && frame.tenantOf !== undefined && rctx !== null) tenant = resolveTenant(frame.tenantOf, rctx);
    let traceId = frame.traceId;
    let spanId = frame.spanId;
    if (traceId === undefined && frame.ctx === null) {
      const span = activeSpanIds();
      if (span !== null) ({ traceId, spanId } = span);
    }
    const reason = frame.reason ?? note?.reason;
    const meta = note?.meta === undefined ? frame.meta : frame.meta === undefined ? note.meta : { ...note.meta, ...frame.meta };
    const out: ContextFields = { onBehalfOf, tenant, traceId, spanId, reason, meta };
    // Only the app's onBehalfOf resolver may be asynchronous: nothing else here waits.
    if (onBehalfOf === undefined && frame.onBehalfOfOf !== undefined && rctx !== null) {
      return resolveOnBehalfOf(frame.onBehalfOfOf, rctx).then((ob) => {
        out.onBehalfOf = ob;
        return out;
      });
    }
    if (onBehalfOf == null && tenant == null && traceId === undefined && reason === undefined && meta === undefined) return null;
    return out;
  }

  /** The stored document of an event: synchronous unless the actor or onBehalfOf resolver of the app is asynchronous. */
  function compose(fields: EventFields, source: EventSource = {}): StoredDoc | Promise<StoredDoc> {
    // A login handler may pass `ctx` from outside the request's async context (a callback API, say).
    const frame = frameFor(source.ctx);
    const ctx = source.ctx ?? frame?.ctx ?? null;
    const actor = source.actor !== undefined ? source.actor : actorOf(frame);
    if (actor instanceof Promise) return actor.then((a) => withContext(fields, a, frame, ctx));
    return withContext(fields, actor, frame, ctx);
  }

  function withContext(fields: EventFields, actor: Actor | null, frame: AuditContext | undefined, ctx: Context | null): StoredDoc | Promise<StoredDoc> {
    const extra = contextFields(frame, ctx);
    if (extra instanceof Promise) return extra.then((e) => assemble(fields, actor, frame, ctx, e));
    return assemble(fields, actor, frame, ctx, extra);
  }

  async function build(fields: EventFields, source?: EventSource): Promise<StoredDoc> {
    return compose(fields, source);
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

  // Every event is bounded before the store sees it (bound.ts): no single event can stop delivery.
  const bounded = (doc: StoredDoc): StoredDoc => boundEvent(doc, o.maxEventBytes, o.maxStringLength);

  async function accept(doc: StoredDoc): Promise<void> {
    await acceptNow(doc);
  }

  function acceptNow(doc: StoredDoc): void | Promise<void> {
    requestIndexes();
    return sink().accept(bounded(doc));
  }

  function submit(fields: EventFields, source?: EventSource): void | Promise<void> {
    const doc = compose(fields, source);
    return doc instanceof Promise ? doc.then(acceptNow) : acceptNow(doc);
  }

  const core: AuditCore = {
    options: o,
    redactor,
    limits,
    events,
    get model() {
      return parts.model;
    },
    // The store's policy, not the option: a spool directory that cannot be written falls back to 'block'.
    get blocking() {
      return sink().onFull === 'block';
    },
    resolveRequestActor: createRequestResolver(o.jwt, o.resolveActor),
    build,
    // A timer of the store may run in a request's async context: a system event never takes its fields.
    buildSystem: (fields) => assemble(fields, SYSTEM_ACTOR, undefined, null),
    record: async (fields, source) => submit(fields, source),
    submit,
    accept,
    writeNow: (doc, instead) => {
      requestIndexes();
      return sink().writeNow(bounded(doc), instead);
    },
    waitForRoom: () => sink().waitForRoom(),
    ready,
    settled: async () => {
      await readyPromise?.catch(() => {});
    },
    warnOnce,
    report: (err) => reportError(events, err),
  };
  return core;
}
