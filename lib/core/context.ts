/**
 * The async context: what code running while a request is served (or inside `withActor`) can learn about it.
 *
 * One AsyncLocalStorage for the whole package, not one per auditor: the request belongs to the app, and a
 * plugin registered on one auditor must see a request opened by another. The frame keeps a reference to the
 * resolver of the auditor that opened it, because only that auditor knows the app's `jwt`/`resolveActor`.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { Context } from 'koa';
import { capString } from './safe.js';
import type { Actor } from './types.js';

export interface AuditContext {
  /** The request id, or null outside a request. */
  readonly requestId: string | null;
  readonly ip: string | null;
  readonly userAgent: string | null;
  /** The Koa context of the request, or null outside a request. */
  readonly ctx: Context | null;
  /** Set by `withActor` or a successful login; wins over everything else. */
  explicitActor: Actor | null;
  /** Resolves the actor from the request (state, token, resolver); absent outside a request. */
  readonly resolve: ((frame: AuditContext) => Actor | null | Promise<Actor | null>) | null;
  /** The JWT verdict is stable for a request: computed once, kept here (undefined: not yet asked). */
  tokenActor?: Actor | null;
  /** Query parameters secret for this request only (an OAuth callback's `code`): redacted in its request event. */
  secretQuery?: string[];
  /** Set by auditRouter: this request reads the audit trail (recorded as `http.auditRead: true`). */
  auditRead?: boolean;
  /**
   * Set by `withContext` (or a write's `{ audit }` option): win over what the request says. `null` clears an
   * outer value; undefined leaves it to the request's resolvers below.
   */
  onBehalfOf?: Actor | null;
  tenant?: string | null;
  reason?: string;
  meta?: Record<string, unknown>;
  /** `annotate()`: kept on the frame that was current then (the request's own frame inside a request). */
  note?: { reason?: string; meta?: Record<string, unknown> };
  /** Request-time resolvers of the middleware / createAudit options; absent when not configured. */
  readonly tenantOf?: ((ctx: Context) => unknown) | undefined;
  readonly onBehalfOfOf?: ((ctx: Context) => unknown) | undefined;
  /** W3C trace context of the request (traceparent or the active span), fixed when the request starts. */
  traceId?: string;
  spanId?: string;
}

export const storage = new AsyncLocalStorage<AuditContext>();

const kFrame = Symbol('koa-audit.frame');
type WithFrame = Context & { [kFrame]?: AuditContext };

/**
 * The frame of each request being served, for callers that hand us `ctx` from outside its async context. Kept as a
 * symbol property of the request's own `ctx` (which dies with the request): cheaper than a WeakMap entry per request.
 */
export const frameOf = {
  get: (ctx: Context): AuditContext | undefined => (ctx as WithFrame)[kFrame],
  set: (ctx: Context, frame: AuditContext): void => {
    (ctx as WithFrame)[kFrame] = frame;
  },
};

/**
 * Marks the request `ctx` belongs to as a read of the audit trail. Access to the trail is itself audited (PCI DSS
 * 10.2.1.3): the request event is kept, and says so, so that a viewer can tell it from the app's own traffic.
 */
export function markAuditRead(ctx: Context): void {
  const frame = frameFor(ctx);
  if (frame !== undefined && frame.ctx === ctx) frame.auditRead = true;
}

export function currentContext(): AuditContext | undefined {
  return storage.getStore();
}

/** The frame of the request `ctx` belongs to when one is given, else the frame of whatever runs now. */
export function frameFor(ctx: Context | null | undefined): AuditContext | undefined {
  return (ctx != null ? frameOf.get(ctx) : undefined) ?? storage.getStore();
}

/** Koa's `ctx.ip`, capped; null when there is none (or reading it fails on a malformed header). */
export function ipOf(ctx: Context | null | undefined): string | null {
  if (ctx == null) return null;
  try {
    const ip = ctx.ip;
    return ip === '' || ip === undefined ? null : capString(plainIp(ip), 256);
  } catch {
    return null;
  }
}

/**
 * Set on a request's `ctx` once an `authz_fail` was recorded for it (by `auditor.security`, or `auditRouter`'s
 * refusal), so that the middleware's `authzFail` option does not record the same denial twice.
 */
export const kAuthzFailRecorded: unique symbol = Symbol.for('koa-audit.authzFailRecorded');
const MAPPED_V4 = /^::ffff:(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/**
 * An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`, what a dual-stack socket reports for an IPv4 client) as the IPv4
 * address it is, so that the address a user types finds it; any other text as it is.
 */
export function plainIp(ip: string): string {
  const m = MAPPED_V4.exec(ip);
  return m === null ? ip : m[1];
}

export const SYSTEM_ACTOR: Actor = Object.freeze({ id: 'system', via: 'system' }) as Actor;

/**
 * The actor of whatever runs now: explicit (withActor, login) first, then what the request says, then `null`
 * for an anonymous request, and the system actor outside any request.
 */
export async function actorNow(frame: AuditContext | undefined = storage.getStore()): Promise<Actor | null> {
  return actorOf(frame);
}

/** As actorNow, without a promise unless the app's resolver returns one (the event builder's hot path). */
export function actorOf(frame: AuditContext | undefined): Actor | null | Promise<Actor | null> {
  if (frame === undefined) return SYSTEM_ACTOR;
  if (frame.explicitActor !== null) return frame.explicitActor;
  if (frame.resolve !== null) return frame.resolve(frame);
  return frame.ctx === null ? SYSTEM_ACTOR : null;
}
