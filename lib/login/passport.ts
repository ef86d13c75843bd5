/**
 * `auditPassport(passport, { auditor })`: every koa-passport strategy audited with one call.
 *
 * Passport runs a strategy by creating a fresh object from the registered one (`Object.create`), giving it
 * `success` / `fail` / `error` / `redirect` / `pass` and calling its `authenticate(req)`. We hook there, in
 * `passport._strategy(name)` (how passport 0.4 to 0.7 look strategies up), so what is recorded does not depend on
 * how the app called `passport.authenticate`: with or without a custom callback, sessions on or off, one strategy or
 * a chain. `success` is a `login`, `fail` a `login_failed` with the strategy's own reason, `error` a `login_failed`
 * with reason `strategy_error`. In a chain (`authenticate(['bearer', 'local'])`) a strategy's failure counts only
 * when no later one succeeds: passport tries the next strategy synchronously inside `fail()`, so a `fail()` that
 * returns without another strategy having started was the last word.
 *
 * `ctx.logout()` is wrapped by the `initialize()` middleware: call `auditPassport` before `passport.initialize()`.
 * Nothing secret reaches an event: the identifier is the submitted username field (never the password field), a
 * reason is scrubbed of the request's credentials (the password, a bearer token) and capped.
 */
import type { Context, Next } from 'koa';
import { checkKnown, fail, fnOption, nonEmptyString, objectOption } from '../core/options.js';
import { capString } from '../core/safe.js';
import { frameFor } from '../core/context.js';
import { signalsOf, type LoginSignals, type SignalTarget } from './login.js';

/** A passport strategy as passport uses it (only what we touch). */
export interface PassportStrategyLike {
  name?: string;
  authenticate(this: PassportStrategyLike, req: unknown, options?: unknown): unknown;
}

/** What `auditPassport` needs of a koa-passport instance (`require('koa-passport')` or `new KoaPassport()`). */
export interface PassportLike {
  initialize(...args: never[]): unknown;
  authenticate(...args: never[]): unknown;
}

/** The internals we hook (checked at run time: `_strategy` is how passport 0.4 to 0.7 look a strategy up). */
interface PassportInternals {
  initialize(...args: unknown[]): unknown;
  _strategy(name: string): PassportStrategyLike | undefined;
  _userProperty?: string;
}

export interface AuditPassportOptions {
  /** Where `login` / `login_failed` / `logout` go: an auditor or its `signals`. */
  auditor: SignalTarget;
  /**
   * The identifier of an attempt. Default: the value of the strategy's username field (`usernameField` of
   * passport-local) in the body or query; on success, else the user's `username`/`name`/`email`.
   */
  identifier?: (ctx: Context, strategy: string, user: unknown) => string | null | undefined;
  /** `provider` of the `logout` event. Default `'passport'` (a session does not remember which strategy logged in). */
  logoutProvider?: string;
}

const kAudited = Symbol.for('koa-audit.passport');
const MAX_REASON = 256;
const MIN_SECRET = 3;

type Callback = (...args: unknown[]) => unknown;
interface RunningStrategy {
  success: Callback;
  fail: Callback;
  error: Callback;
  _usernameField?: unknown;
  _passwordField?: unknown;
}
/** One `passport.authenticate` call: koa-passport makes one `req` mock per call. */
interface Attempt {
  started: number;
  failures: { strategy: string; reason: string; identifier: string | null; status?: number }[];
}

function field(ctx: Context, name: unknown): string | null {
  if (typeof name !== 'string' || name === '') return null;
  const body = (ctx.request as { body?: unknown }).body;
  const fromBody = body !== null && typeof body === 'object' ? (body as Record<string, unknown>)[name] : undefined;
  const v = fromBody ?? ctx.query[name];
  return typeof v === 'string' && v !== '' ? v : null;
}

/** The credentials this request carries, so that a reason echoing one of them can be scrubbed. */
function secretsOf(ctx: Context, strategy: RunningStrategy): string[] {
  const out: string[] = [];
  const add = (v: string | null): void => {
    if (v !== null && v.length >= MIN_SECRET) out.push(v);
  };
  add(field(ctx, strategy._passwordField ?? 'password'));
  add(field(ctx, 'access_token'));
  const auth = ctx.get('authorization');
  const space = auth.indexOf(' ');
  if (space > 0) add(auth.slice(space + 1).trim());
  return out;
}

function scrub(text: string, secrets: string[]): string {
  let s = text;
  // Longest first: a password that is part of a token must not leave the rest of the token behind.
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) s = s.split(secret).join('[REDACTED]');
  return capString(s, MAX_REASON);
}

/** The strategy's reason, as passport hands it to `fail(challenge, status)`. */
function reasonOf(challenge: unknown, status: unknown): string {
  if (typeof challenge === 'string' && challenge !== '') return challenge;
  if (challenge !== null && typeof challenge === 'object') {
    const m = (challenge as { message?: unknown }).message;
    if (typeof m === 'string' && m !== '') return m;
  }
  if (typeof challenge === 'number') return `status ${challenge}`;
  if (typeof status === 'number') return `status ${status}`;
  return 'unauthorized';
}

export function auditPassport<P extends PassportLike>(given: P, options: AuditPassportOptions): P {
  const passport = given as unknown as PassportInternals;
  if (passport === null || typeof passport !== 'object' || typeof passport._strategy !== 'function' || typeof passport.initialize !== 'function') {
    fail('passport', 'a koa-passport instance (require(\'koa-passport\'), or new KoaPassport())', passport);
  }
  objectOption('auditPassport options', options ?? null);
  checkKnown(options, ['auditor', 'identifier', 'logoutProvider'], 'auditPassport');
  const signals: LoginSignals = signalsOf(options.auditor, 'auditor');
  const identifierOf = fnOption<NonNullable<AuditPassportOptions['identifier']>>('identifier', options.identifier, '(ctx, strategy, user) => string', false);
  const logoutProvider = nonEmptyString('logoutProvider', options.logoutProvider, 'passport');
  const marked = passport as PassportInternals & { [kAudited]?: LoginSignals };
  if (marked[kAudited] !== undefined) {
    if (marked[kAudited] === signals) return given;
    throw new TypeError('koa-audit: this passport instance is already audited by another auditor');
  }
  marked[kAudited] = signals;

  const attempts = new WeakMap<object, Attempt>();
  const wrapped = new WeakMap<PassportStrategyLike, PassportStrategyLike>();

  function identify(ctx: Context, strategy: string, running: RunningStrategy, user: unknown): string | null | undefined {
    if (identifierOf !== undefined) {
      try {
        const v = identifierOf(ctx, strategy, user);
        if (typeof v === 'string' || v === null) return v;
      } catch {
        // a faulty identifier callback must not break the login; fall back to the default
      }
    }
    const submitted = field(ctx, running._usernameField);
    return submitted ?? (user === null ? null : undefined);
  }

  function flush(ctx: Context, attempt: Attempt): void {
    const failures = attempt.failures;
    attempt.failures = [];
    for (const f of failures) {
      const meta: Record<string, unknown> = { strategy: f.strategy };
      if (f.status !== undefined) meta.status = f.status;
      signals.emit('login_failed', { ctx, identifier: f.identifier, provider: f.strategy, reason: f.reason, meta });
    }
  }

  function instrument(running: RunningStrategy, req: { ctx?: Context }, name: string): void {
    const ctx = req.ctx;
    if (ctx === undefined) return; // not koa-passport's request: nothing to attribute the event to
    let attempt = attempts.get(req);
    if (attempt === undefined) {
      attempt = { started: 0, failures: [] };
      attempts.set(req, attempt);
    }
    attempt.started++;
    const a = attempt;
    // An OAuth strategy's callback carries the authorization code: a credential, kept out of the request event.
    const frame = frameFor(ctx);
    if (frame !== undefined && frame.ctx === ctx && typeof ctx.query.code === 'string' && !(frame.secretQuery ?? []).includes('code')) {
      frame.secretQuery = [...(frame.secretQuery ?? []), 'code'];
    }
    const { success, fail: failed, error } = running;
    running.success = function (this: unknown, user: unknown, ...rest: unknown[]) {
      a.failures = []; // an earlier strategy of the chain failing is not a failed login: this one let the user in
      if (user !== null && user !== undefined && user !== false) {
        const identifier = identify(ctx, name, running, user);
        signals.emit('login', { ctx, user, provider: name, ...(identifier === undefined ? {} : { identifier }), meta: { strategy: name } });
      }
      return success.call(this, user, ...rest);
    };
    running.fail = function (this: unknown, challenge: unknown, status: unknown, ...rest: unknown[]) {
      const entry: Attempt['failures'][number] = {
        strategy: name,
        reason: scrub(reasonOf(challenge, status), secretsOf(ctx, running)),
        identifier: identify(ctx, name, running, null) ?? null,
      };
      const code = typeof challenge === 'number' ? challenge : status;
      if (typeof code === 'number') entry.status = code;
      a.failures.push(entry);
      const before = a.started;
      try {
        return failed.call(this, challenge, status, ...rest);
      } finally {
        if (a.started === before) flush(ctx, a); // no later strategy was tried: the attempt failed
      }
    };
    running.error = function (this: unknown, err: unknown, ...rest: unknown[]) {
      a.failures = [];
      const e = err as { name?: unknown; message?: unknown } | null;
      const meta: Record<string, unknown> = { strategy: name };
      if (e !== null && typeof e === 'object') {
        if (typeof e.name === 'string') meta.error = capString(e.name, 64);
        if (typeof e.message === 'string') meta.message = scrub(e.message, secretsOf(ctx, running));
      }
      signals.emit('login_failed', { ctx, identifier: identify(ctx, name, running, null) ?? null, provider: name, reason: 'strategy_error', meta });
      return error.call(this, err, ...rest);
    };
  }

  function audited(proto: PassportStrategyLike, name: string): PassportStrategyLike {
    let w = wrapped.get(proto);
    if (w === undefined) {
      w = Object.create(proto) as PassportStrategyLike;
      w.authenticate = function (this: PassportStrategyLike, req: unknown, opts?: unknown): unknown {
        if (req !== null && typeof req === 'object') instrument(this as unknown as RunningStrategy, req as { ctx?: Context }, name);
        return proto.authenticate.call(this, req, opts);
      };
      wrapped.set(proto, w);
    }
    return w;
  }

  const lookup = passport._strategy;
  passport._strategy = function (this: PassportInternals, name: string): PassportStrategyLike | undefined {
    const proto = lookup.call(this, name);
    return proto === undefined || proto === null ? proto : audited(proto, name);
  };

  const initialize = passport.initialize;
  passport.initialize = function (this: PassportInternals, ...args: unknown[]) {
    const mw = initialize.apply(this, args) as (ctx: Context, next: Next) => unknown;
    const userProperty = (): string => (typeof passport._userProperty === 'string' ? passport._userProperty : 'user');
    return function auditedPassportInitialize(ctx: Context, next: Next) {
      return mw(ctx, () => {
        const c = ctx as unknown as { logout?: Callback; logOut?: Callback };
        const logout = c.logout;
        if (typeof logout === 'function') {
          c.logout = c.logOut = async function (this: unknown, ...a: unknown[]) {
            const user: unknown = ctx.state[userProperty()];
            const result = await logout.apply(ctx, a);
            if (user !== null && user !== undefined) signals.emit('logout', { ctx, user, provider: logoutProvider });
            return result;
          };
        }
        return next();
      });
    };
  };

  return given;
}
