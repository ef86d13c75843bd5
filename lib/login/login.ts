/**
 * Login auditing: `loginSucceeded`, `loginFailed`, `logout`, and the `signals` emitter that records whatever
 * an auth library emits on it. Only the named fields of an input are read: there is no password parameter,
 * and stray fields (a `password` passed by mistake) are never stored. `meta` is redacted like everything else.
 */
import { EventEmitter } from 'node:events';
import type { Context } from 'koa';
import { toActor } from '../core/actor.js';
import type { AuditCore, EventFields } from '../core/core.js';
import { frameFor, ipOf, storage, type AuditContext } from '../core/context.js';
import { FloodControl, type FloodSummary } from './flood.js';
import { SharedFloodControl } from './flood-store.js';
import { identifierHasher } from './identifiers.js';
import { capString } from '../core/safe.js';
import type { Actor } from '../core/types.js';

export interface LoginSucceededInput {
  /** The request; optional inside the request's async context. */
  ctx?: Context;
  /** The user who logged in: an object with `id`/`_id`/`sub` (and `username`/`name`/`email`), or an id. */
  user: unknown;
  /** Default `'local'`. */
  provider?: string;
  /** The name the user logged in with. Default: the user's `username`/`name`/`email`, else null. */
  identifier?: string | null;
  meta?: Record<string, unknown>;
}

export interface LoginFailedInput {
  ctx?: Context;
  /** The name that was tried (never a password), or null when none was given. */
  identifier: string | null;
  /**
   * True when the identifier names an account that exists (a wrong password for a real user, a locked account,
   * an identity a provider vouched for). Under `failedIdentifiers: 'hmac'` only such identifiers are stored as
   * given; any other is an unknown user's, possibly a password typed into the wrong field, and is hashed.
   */
  knownUser?: boolean;
  /** Default `'local'`. */
  provider?: string;
  reason: string;
  meta?: Record<string, unknown>;
}

export interface LogoutInput {
  ctx?: Context;
  user: unknown;
  /** Default `'local'`. */
  provider?: string;
  meta?: Record<string, unknown>;
}

export interface LoginSignalEvents {
  login: [LoginSucceededInput];
  login_failed: [LoginFailedInput];
  logout: [LogoutInput];
}

/** Emit `login`, `login_failed`, `logout` here: the auditor records them (fire-and-forget). */
export type LoginSignals = EventEmitter<LoginSignalEvents>;

/** Something that carries login signals: the emitter itself, or an auditor (`audit.signals`). */
export type SignalTarget = LoginSignals | { readonly signals: LoginSignals };

export function signalsOf(target: SignalTarget, option: string): LoginSignals {
  const s = target instanceof EventEmitter ? target : (target as { signals?: unknown } | null)?.signals;
  if (!(s instanceof EventEmitter)) {
    throw new TypeError(`koa-audit: option "${option}" must be an auditor or its signals emitter`);
  }
  return s as LoginSignals;
}

const MAX_NAME = 256;
const MAX_PROVIDER = 64;
const MAX_REASON = 512;

function text(v: unknown, max: number): string | null {
  if (typeof v === 'string') return v === '' ? null : capString(v, max);
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  return null;
}

function providerOf(v: unknown): string {
  return text(v, MAX_PROVIDER) ?? 'local';
}

/** Only a plain object is kept as meta (it is redacted and made safe when stored). */
function metaOf(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
}

function inputOf<T>(input: T, what: string): T {
  if (input === null || typeof input !== 'object') throw new TypeError(`koa-audit: ${what} needs an input object`);
  return input;
}

function userActor(user: unknown, what: string): Actor {
  const actor = toActor(user, 'explicit');
  if (actor === null) throw new TypeError(`koa-audit: ${what} needs a user with an id (id, _id or sub)`);
  return actor;
}

export function createLogin(core: AuditCore) {
  const signals: LoginSignals = new EventEmitter<LoginSignalEvents>();
  /** Records not yet accepted by the writer (their build is async): `flush()` waits for them. */
  const inFlight = new Set<Promise<void>>();

  function track(p: Promise<void>): Promise<void> {
    inFlight.add(p);
    const done = (): void => {
      inFlight.delete(p);
    };
    p.then(done, done);
    return p;
  }

  const hashIdentifier = identifierHasher(core.options.identifierKey);

  const onSummary = (s: FloodSummary): void => {
    track(recordSummary(s)).catch(core.report);
  };
  const lf = core.options.loginFailures;
  // 'mongo': the windows are shared by every process (lib/login/flood-store.ts); admitting a failure then waits for it.
  const flood: FloodControl | SharedFloodControl = lf.store === 'mongo'
    ? new SharedFloodControl({ collection: () => core.options.connection.collection(lf.collection), max: lf.max, windowMs: lf.windowMs, timeoutMs: lf.timeoutMs, onSummary, report: core.report })
    : new FloodControl({ max: lf.max, windowMs: lf.windowMs, onSummary });

  function recordSummary(s: FloodSummary): Promise<void> {
    // A summary belongs to no request: it is recorded in a frame of its own, which carries the IP it counts.
    const frame: AuditContext = {
      requestId: null,
      ip: s.key === 'ip' ? s.value : null,
      userAgent: null,
      ctx: null,
      explicitActor: null,
      resolve: null,
    };
    const fields: EventFields = {
      kind: 'login_failed',
      outcome: 'failure',
      provider: s.provider,
      identifier: s.key === 'identifier' ? s.value : null,
      reason: 'flood_summary',
      meta: {
        summary: true,
        key: s.key,
        suppressed: s.suppressed,
        total: s.total,
        windowStart: s.windowStart.toISOString(),
        windowEnd: s.windowEnd.toISOString(),
        complete: s.complete,
        reason: s.reason,
      },
    };
    return storage.run(frame, () => core.record(fields, { actor: null }));
  }

  function loginSucceeded(input: LoginSucceededInput): Promise<void> {
    try {
      const i = inputOf(input, 'loginSucceeded');
      const actor = userActor(i.user, 'loginSucceeded');
      const frame = frameFor(i.ctx);
      // Synchronously, before any await: the handler's next statements already run as this user.
      if (frame !== undefined && frame.ctx !== null) frame.explicitActor = actor;
      const fields: EventFields = {
        kind: 'login',
        outcome: 'success',
        provider: providerOf(i.provider),
        identifier: i.identifier === undefined ? actor.name ?? null : text(i.identifier, MAX_NAME),
      };
      const meta = metaOf(i.meta);
      if (meta !== undefined) fields.meta = meta as EventFields['meta'];
      return track(core.record(fields, { ctx: i.ctx, actor }));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  function loginFailed(input: LoginFailedInput): Promise<void> {
    try {
      const i = inputOf(input, 'loginFailed');
      const reason = text(i.reason, MAX_REASON);
      if (reason === null) throw new TypeError('koa-audit: loginFailed needs a reason (a non-empty string)');
      const typed = text(i.identifier, MAX_NAME);
      // Hashed before flood control counts it: a summary keyed by identifier must not repeat what was typed.
      const identifier = hashIdentifier !== null && i.knownUser !== true ? hashIdentifier(typed) : typed;
      const provider = providerOf(i.provider);
      const frame = frameFor(i.ctx);
      const ip = frame?.ip ?? ipOf(i.ctx);
      const fields: EventFields = { kind: 'login_failed', outcome: 'failure', provider, identifier, reason };
      const meta = metaOf(i.meta);
      if (meta !== undefined) fields.meta = meta as EventFields['meta'];
      // A failed login has no established identity: the event is anonymous, whatever the request's actor.
      const admitted = flood.admit(identifier, ip, provider, reason);
      if (admitted === false) return Promise.resolve();
      if (admitted === true) return track(core.record(fields, { ctx: i.ctx, actor: null }));
      return track(admitted.then((detailed) => (detailed ? core.record(fields, { ctx: i.ctx, actor: null }) : undefined)));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  function logout(input: LogoutInput): Promise<void> {
    try {
      const i = inputOf(input, 'logout');
      const actor = userActor(i.user, 'logout');
      const fields: EventFields = { kind: 'logout', outcome: 'success', provider: providerOf(i.provider), identifier: actor.name ?? null };
      const meta = metaOf(i.meta);
      if (meta !== undefined) fields.meta = meta as EventFields['meta'];
      return track(core.record(fields, { ctx: i.ctx, actor }));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  // Listeners never throw into the emitter's caller: an auth library must not fail because auditing did.
  signals.on('login', (input) => {
    loginSucceeded(input).catch(core.report);
  });
  signals.on('login_failed', (input) => {
    loginFailed(input).catch(core.report);
  });
  signals.on('logout', (input) => {
    logout(input).catch(core.report);
  });

  /** Reports held-back failures so far, then waits until every login event is accepted by the writer. */
  async function flush(): Promise<void> {
    while (inFlight.size > 0) await Promise.allSettled([...inFlight]); // failures still being counted
    await flood.flush();
    while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
  }

  /** Like `flush`, and forgets the flood windows and stops their timer. */
  async function close(): Promise<void> {
    while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    await flood.close();
    while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
  }

  return { signals, loginSucceeded, loginFailed, logout, flush, close, hashIdentifier: (id: string | null) => hashIdentifier?.(id) ?? id };
}

