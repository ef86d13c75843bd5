/**
 * Turning what an app knows about a user into an audit `Actor`, and the request-time resolution order:
 * `ctx.state.user`, then a verified JWT, then the app's `resolveActor`. Nothing else a client sends counts.
 */
import type { KeyObject } from 'node:crypto';
import jwt from 'jsonwebtoken';
import type { Context } from 'koa';
import { objectIdHex } from './bson.js';
import type { AuditContext } from './context.js';
import { capString } from './safe.js';
import type { Actor, ActorVia } from './types.js';

const MAX_ID = 256;

function idString(v: unknown): string | null {
  if (typeof v === 'string') return v === '' ? null : capString(v, MAX_ID);
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (v !== null && typeof v === 'object') {
    const hex = objectIdHex(v);
    if (hex !== null) return hex;
    const s = String(v);
    if (s !== '[object Object]') return capString(s, MAX_ID);
  }
  return null;
}

/**
 * Builds an actor from a user-like object (`id`/`_id`/`sub`, `username`/`name`/`email`), or null. Never throws: a
 * user whose fields cannot be read (throwing getters, a hostile Proxy) is no actor, and the event is still recorded.
 */
export function toActor(user: unknown, via: ActorVia): Actor | null {
  try {
    return readActor(user, via);
  } catch {
    return null;
  }
}

function readActor(user: unknown, via: ActorVia): Actor | null {
  if (user === null || user === undefined) return null;
  if (typeof user === 'string' || typeof user === 'number') {
    const id = idString(user);
    return id === null ? null : { id, via };
  }
  if (typeof user !== 'object') return null;
  const u = user as Record<string, unknown>;
  const id = idString(u.id ?? u._id ?? u.sub);
  if (id === null) return null;
  let rawName: unknown;
  try {
    rawName = u.username ?? u.name ?? u.email;
  } catch {
    rawName = undefined; // an unreadable name: the actor keeps its id
  }
  const actor: Actor = { id, via };
  if (typeof rawName === 'string' && rawName !== '') actor.name = capString(rawName, MAX_ID);
  return actor;
}

/** A JWT algorithm koa-audit verifies and signs with: jsonwebtoken 9's, without `none`. */
export type JwtAlgorithm = 'HS256' | 'HS384' | 'HS512' | 'RS256' | 'RS384' | 'RS512' | 'ES256' | 'ES384' | 'ES512' | 'PS256' | 'PS384' | 'PS512';

/**
 * A key as jsonwebtoken takes it. Declared here rather than taken from @types/jsonwebtoken, so that an app type-checks
 * koa-audit's declarations without installing that package's types.
 */
export type JwtSecret = string | Buffer | KeyObject | { key: string | Buffer; passphrase: string };

export interface JwtOptions {
  /** HMAC secret (HS*) ... */
  secret?: JwtSecret;
  /** ... or public key (RS*, ES*, PS*). */
  publicKey?: JwtSecret;
  /** Accepted algorithms. Required: a verifier that lets the token choose its algorithm can be fooled. */
  algorithms: JwtAlgorithm[];
  /** Also read the token from this cookie when there is no Bearer header. */
  cookie?: string;
  issuer?: string | string[];
  audience?: string | string[];
}

export type ActorResolver = (ctx: Context) => unknown;

const MAX_TOKEN = 16 * 1024;

function tokenOf(ctx: Context, cookie: string | undefined): string | null {
  const header = ctx.get('authorization');
  if (header.length > 7 && header.length < MAX_TOKEN && header.slice(0, 7).toLowerCase() === 'bearer ') {
    return header.slice(7).trim();
  }
  if (cookie !== undefined) {
    try {
      const v = ctx.cookies.get(cookie);
      if (v !== undefined && v.length < MAX_TOKEN) return v;
    } catch {
      return null;
    }
  }
  return null;
}

function verify(token: string, o: JwtOptions): Actor | null {
  try {
    const payload = jwt.verify(token, (o.secret ?? o.publicKey) as jwt.Secret, {
      algorithms: o.algorithms,
      issuer: o.issuer as string | [string, ...string[]] | undefined,
      audience: o.audience as string | [string, ...string[]] | undefined,
    });
    return typeof payload === 'object' ? toActor(payload, 'jwt') : null;
  } catch {
    return null; // unsigned, badly signed, expired, wrong algorithm: never an actor
  }
}

/**
 * The request-time resolver of one auditor: built once, at construction. Synchronous unless the app's
 * `resolveActor` answers with a promise: an event needs no promise of its own to learn its actor.
 */
export function createRequestResolver(
  jwtOptions: JwtOptions | undefined,
  resolveActor: ActorResolver | undefined,
): (frame: AuditContext) => Actor | null | Promise<Actor | null> {
  return function resolveRequestActor(frame: AuditContext): Actor | null | Promise<Actor | null> {
    const ctx = frame.ctx;
    if (ctx === null) return null;
    const fromState = toActor(ctx.state?.user, 'state');
    if (fromState !== null) return fromState;
    if (jwtOptions !== undefined) {
      if (frame.tokenActor === undefined) {
        const token = tokenOf(ctx, jwtOptions.cookie);
        frame.tokenActor = token === null ? null : verify(token, jwtOptions);
      }
      if (frame.tokenActor !== null) return frame.tokenActor;
    }
    if (resolveActor !== undefined) {
      let user: unknown;
      try {
        user = resolveActor(ctx);
        if (!isThenable(user)) return toActor(user, 'resolver');
      } catch {
        return null; // the app's resolver failing must not lose the event
      }
      return Promise.resolve(user).then((u) => toActor(u, 'resolver'), () => null);
    }
    return null;
  };
}

/** What `await` would wait for (reading `then` may throw: the caller treats that as the resolver failing). */
function isThenable(v: unknown): v is PromiseLike<unknown> {
  return v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as { then?: unknown }).then === 'function';
}
