/**
 * One shape for every redirect-based login (OAuth 2.0 / OpenID Connect): a provider knows its own endpoints
 * (authorize URL, code exchange, user info) and its failure reasons; `providerRouter` does everything else the
 * same way for all of them:
 *
 *   GET {prefix}/login     a fresh `state` in a sealed cookie, then the redirect to the provider
 *   GET {prefix}/callback  the state checked (and spent), the provider's error, the code exchanged, the user read,
 *                          `onLogin(ctx, profile, tokens)`, then `login` or `login_failed` with the reason
 *
 * The state cookie is sealed with AES-256-GCM (integrity and confidentiality): besides `state` and its expiry it
 * carries what the provider asked to keep between the two requests (an OIDC nonce and PKCE verifier), so no server
 * memory is needed and several app instances work without sticky sessions. A spent state is also remembered in
 * memory until it expires, so replaying a whole callback (cookie included) to the same instance is `state_replayed`.
 * The redirect and the consent screen are never failures. Secrets (app secret, code, tokens) are never in an event.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import { toActor } from '../../core/actor.js';
import { frameFor, storage } from '../../core/context.js';
import { fail, fnOption, nonEmptyString, positiveInt, routePrefix } from '../../core/options.js';
import { capString } from '../../core/safe.js';
import { signalsOf, type LoginSignals, type SignalTarget } from '../login.js';

/** Failures the router itself detects, the same for every provider. */
export type RouterFailureReason =
  | 'state_mismatch'
  | 'state_replayed'
  | 'access_denied'
  | 'authorize_error'
  | 'missing_code'
  | 'network_error'
  | 'rejected'
  | 'on_login_error';

/** Who the provider says logged in. */
export interface ProviderIdentity<U> {
  /** Stable id at the provider (open id, `sub`): the login event's `identifier` and default actor id. */
  id: string;
  /** A display name for the default actor. */
  name?: string;
  /** The provider's user, handed to `onLogin`. */
  profile: U;
  /** Non-secret facts worth keeping on the `login` event (tenant, issuer). */
  meta?: Record<string, unknown>;
}

/**
 * A login provider. Implement these four members (and throw `ProviderError(reason, detail)` on failures) to add
 * one (DingTalk, WeCom, GitHub): see the README.
 */
export interface LoginProvider<U, T> {
  /** `provider` of the events: `'feishu'`, `'oidc'`, `'github'`. */
  readonly name: string;
  /** Human name used in the plain-text failure answer (`GitHub login failed: <reason>`). */
  readonly label: string;
  /** The reasons `exchange` and `userInfo` may throw with, beyond the router's own (documentation and tests). */
  readonly reasons: readonly string[];
  /** The URL of the provider's consent page, and what to keep until the callback (nonce, PKCE verifier). */
  authorizeUrl(input: { state: string; redirectUri: string }): Promise<AuthorizeStep> | AuthorizeStep;
  /** Trades the callback's code for tokens. `callbackUrl` is the full callback URL as received. */
  exchange(input: { code: string; state: string; redirectUri: string; callbackUrl: URL; kept: Record<string, string> }): Promise<T>;
  /** Reads the user the tokens belong to. */
  userInfo(tokens: T, kept: Record<string, string>): Promise<ProviderIdentity<U>>;
}

export interface AuthorizeStep {
  url: string;
  /** Kept, sealed, in the state cookie until the callback. Never a long-lived secret. */
  keep?: Record<string, string>;
}

/** A failure of a provider's step: `reason` goes into the event, `detail` (never a secret) into its meta. */
export class ProviderError extends Error {
  constructor(readonly reason: string, readonly detail: Record<string, unknown> = {}) {
    super(reason);
    this.name = 'ProviderError';
  }
}

export interface ProviderRouterOptions<U, T> {
  /** Where `login` / `login_failed` are emitted: an auditor or its `signals`. */
  signals: SignalTarget;
  /**
   * Called after the provider vouched for the user, before the redirect. May set a session or a token cookie.
   * Return the app's own user to make it the actor of the `login` event (default: `{ id, name }` of the provider's
   * identity), or `false` to refuse the login (recorded as `login_failed`, reason `'rejected'`).
   */
  onLogin: (ctx: Context, user: U, tokens: T) => unknown;
  /** Route prefix, e.g. `'/auth/github'`. */
  prefix?: string;
  /** The callback URL registered with the provider. Default: this request's protocol and host + prefix + `/callback`. */
  redirectUri?: string;
  /** Where to go after a successful login (when `onLogin` did not answer itself). Default `'/'`. */
  successRedirect?: string;
  /** Where to go after a failed one, with `?error=<reason>` appended. Default: answer 401 (502 for network errors). */
  failureRedirect?: string;
  /** How long a login may take from the redirect to the callback. Default 10 minutes. */
  stateTtlMs?: number;
  /** Key of the sealed state cookie. Default: derived from the provider's secret (random per process without one). */
  stateSecret?: string;
  /** Default `koa_audit_<provider>_state`. */
  cookieName?: string;
}

export const ROUTER_OPTION_KEYS = [
  'signals', 'onLogin', 'prefix', 'redirectUri', 'successRedirect', 'failureRedirect', 'stateTtlMs', 'stateSecret', 'cookieName',
] as const;

/** A string option without a default: absent is as wrong as empty. */
export function requiredString(name: string, v: unknown): string {
  return v === undefined ? fail(name, 'a non-empty string', v) : nonEmptyString(name, v, '');
}

export function absoluteUrl(name: string, v: unknown): string {
  const s = requiredString(name, v);
  if (!URL.canParse(s) || !/^https?:$/.test(new URL(s).protocol)) fail(name, 'an absolute http(s) URL', s);
  return s;
}

/** A transport failure (refused, reset, timeout) as the detail of a `network_error`. */
export function networkDetail(stage: string, err: unknown): Record<string, unknown> {
  let e = err as { name?: string; code?: unknown; cause?: unknown } | null;
  // fetch wraps the socket error in `cause` (sometimes twice); the innermost code says what happened.
  for (let i = 0; i < 4 && e !== null && typeof e === 'object' && typeof e.code !== 'string' && e.cause !== undefined; i++) {
    const inner = e.cause as typeof e;
    if (inner === null || typeof inner !== 'object') break;
    if (inner.name === 'TimeoutError' || inner.name === 'AbortError') return { stage, error: 'timeout' };
    e = inner;
  }
  if (e?.name === 'TimeoutError' || e?.name === 'AbortError') return { stage, error: 'timeout' };
  const code = typeof e?.code === 'string' ? e.code : undefined;
  return { stage, error: code ?? (typeof e?.name === 'string' ? e.name : 'fetch failed') };
}

const MAX_REPLAY_MEMORY = 10_000;

/** Marks query parameters of this request as secret for its request event (see AuditContext.secretQuery). */
export function markSecretQuery(ctx: Context, ...names: string[]): void {
  const frame = frameFor(ctx);
  if (frame === undefined || frame.ctx !== ctx) return;
  frame.secretQuery = [...(frame.secretQuery ?? []), ...names];
}

export function providerRouter<U, T>(provider: LoginProvider<U, T>, options: ProviderRouterOptions<U, T>, keySeed?: string): Router {
  const signals: LoginSignals = signalsOf(options.signals, 'signals');
  const onLogin = fnOption<ProviderRouterOptions<U, T>['onLogin']>('onLogin', options.onLogin, '(ctx, user, tokens) => ...', true) as ProviderRouterOptions<U, T>['onLogin'];
  const prefix = routePrefix('prefix', options.prefix, `/auth/${provider.name}`, false);
  const redirectUri = options.redirectUri === undefined ? undefined : absoluteUrl('redirectUri', options.redirectUri);
  const successRedirect = nonEmptyString('successRedirect', options.successRedirect, '/');
  const failureRedirect = options.failureRedirect === undefined ? undefined : nonEmptyString('failureRedirect', options.failureRedirect, '');
  const stateTtlMs = positiveInt('stateTtlMs', options.stateTtlMs, 10 * 60_000);
  const cookieName = nonEmptyString('cookieName', options.cookieName, `koa_audit_${provider.name}_state`);
  const seed = options.stateSecret === undefined ? keySeed : nonEmptyString('stateSecret', options.stateSecret, '');
  const stateKey = seed === undefined ? randomBytes(32) : createHmac('sha256', seed).update(`koa-audit ${provider.name} state`).digest();
  const cookiePath = prefix === '' ? '/' : prefix;
  /** Spent states and when they expire: a replayed callback is refused even with its cookie. */
  const spent = new Map<string, number>();

  // Not `ctx.origin`: in Koa 3 that is the client's Origin header. Forwarded host and protocol count only
  // when the app trusts its proxy (`app.proxy`).
  const callbackUrl = (ctx: Context): string => redirectUri ?? `${ctx.protocol}://${ctx.host}${prefix}/callback`;

  function seal(payload: unknown): string {
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', stateKey, iv);
    const body = Buffer.concat([cipher.update(JSON.stringify(payload), 'utf8'), cipher.final()]);
    return Buffer.concat([iv, body, cipher.getAuthTag()]).toString('base64url');
  }

  function unseal(value: string): unknown {
    const raw = Buffer.from(value, 'base64url');
    if (raw.length < 12 + 16 + 2) return null;
    try {
      const decipher = createDecipheriv('aes-256-gcm', stateKey, raw.subarray(0, 12));
      decipher.setAuthTag(raw.subarray(raw.length - 16));
      const text = Buffer.concat([decipher.update(raw.subarray(12, raw.length - 16)), decipher.final()]).toString('utf8');
      return JSON.parse(text) as unknown;
    } catch {
      return null;
    }
  }

  function setStateCookie(ctx: Context, value: string | null): void {
    ctx.cookies.set(cookieName, value, {
      httpOnly: true,
      sameSite: 'lax', // sent on the top-level redirect back from the provider, not on cross-site subrequests
      secure: ctx.secure,
      path: cookiePath,
      maxAge: value === null ? undefined : stateTtlMs,
      overwrite: true,
    });
  }

  /** The state the cookie vouches for (with its expiry and what the provider kept), when it is intact and fresh. */
  function stateFromCookie(ctx: Context): { state: string; expires: number; kept: Record<string, string> } | null {
    let raw: string | undefined;
    try {
      raw = ctx.cookies.get(cookieName);
    } catch {
      return null;
    }
    if (raw === undefined || raw.length > 4096) return null;
    const p = unseal(raw) as { s?: unknown; e?: unknown; k?: unknown } | null;
    if (p === null || typeof p !== 'object' || typeof p.s !== 'string' || typeof p.e !== 'number') return null;
    if (!(p.e > Date.now())) return null;
    const kept: Record<string, string> = {};
    if (p.k !== null && typeof p.k === 'object') {
      for (const [k, v] of Object.entries(p.k as Record<string, unknown>)) if (typeof v === 'string') kept[k] = v;
    }
    return { state: p.s, expires: p.e, kept };
  }

  function sameState(a: string, b: string): boolean {
    const x = Buffer.from(a);
    const y = Buffer.from(b);
    return x.length === y.length && timingSafeEqual(x, y);
  }

  function spend(state: string, expires: number): boolean {
    const now = Date.now();
    if ((spent.get(state) ?? 0) > now) return false;
    if (spent.size >= MAX_REPLAY_MEMORY) {
      for (const [s, exp] of spent) if (exp <= now) spent.delete(s);
      // Still full: forget the oldest (Map keeps insertion order). A replay to it still fails at the code exchange.
      while (spent.size >= MAX_REPLAY_MEMORY) spent.delete(spent.keys().next().value as string);
    }
    spent.set(state, expires);
    return true;
  }

  function failed(ctx: Context, err: ProviderError, identifier: string | null): void {
    // An identifier here is one the provider vouched for, never something typed: a known user.
    signals.emit('login_failed', { ctx, identifier, knownUser: identifier !== null, provider: provider.name, reason: err.reason, meta: err.detail });
    if (failureRedirect !== undefined) {
      const sep = failureRedirect.includes('?') ? '&' : '?';
      ctx.redirect(`${failureRedirect}${sep}error=${encodeURIComponent(err.reason)}`);
      return;
    }
    ctx.status = err.reason === 'network_error' ? 502 : 401;
    ctx.type = 'text/plain';
    ctx.body = `${provider.label} login failed: ${err.reason}`;
  }

  const router = new Router({ prefix: prefix === '' ? undefined : prefix });

  router.get('/login', async (ctx) => {
    const state = randomBytes(24).toString('base64url');
    let step: AuthorizeStep;
    try {
      step = await provider.authorizeUrl({ state, redirectUri: callbackUrl(ctx) });
    } catch (err) {
      // Nobody has tried to log in yet: a provider that cannot even be reached is an error of the app, not a login.
      if (err instanceof ProviderError) {
        ctx.status = err.reason === 'network_error' ? 502 : 500;
        ctx.type = 'text/plain';
        ctx.body = `${provider.label} login unavailable: ${err.reason}`;
        return;
      }
      throw err;
    }
    setStateCookie(ctx, seal({ s: state, e: Date.now() + stateTtlMs, k: step.keep ?? {} }));
    ctx.redirect(step.url);
  });

  router.get('/callback', async (ctx) => {
    // The authorization code is a credential until it is spent: the request event keeps it as [REDACTED].
    markSecretQuery(ctx, 'code');
    const expected = stateFromCookie(ctx);
    setStateCookie(ctx, null); // one login per state, whatever happens next
    const q = ctx.query;
    const state = typeof q.state === 'string' ? q.state : '';
    if (expected === null || state === '' || !sameState(state, expected.state)) {
      return failed(ctx, new ProviderError('state_mismatch', { stateCheck: expected === null ? 'cookie missing or expired' : 'cookie present' }), null);
    }
    if (!spend(expected.state, expected.expires)) return failed(ctx, new ProviderError('state_replayed'), null);
    if (typeof q.error === 'string') {
      const reason = q.error === 'access_denied' ? 'access_denied' : 'authorize_error';
      return failed(ctx, new ProviderError(reason, { error: capString(q.error, 128) }), null);
    }
    const code = typeof q.code === 'string' && q.code !== '' ? q.code : null;
    if (code === null) return failed(ctx, new ProviderError('missing_code'), null);

    const redirect = callbackUrl(ctx);
    const received = new URL(redirect);
    received.search = ctx.querystring;
    let tokens: T;
    let identity: ProviderIdentity<U>;
    try {
      tokens = await provider.exchange({ code, state, redirectUri: redirect, callbackUrl: received, kept: expected.kept });
      identity = await provider.userInfo(tokens, expected.kept);
    } catch (err) {
      if (err instanceof ProviderError) return failed(ctx, err, null);
      throw err;
    }

    // What onLogin changes (creating the app's user, say) is attributed to the provider's identity: it runs in a
    // frame of its own, so the request's frame is never changed and nothing has to be put back afterwards.
    const who = { id: identity.id, name: identity.name };
    const frame = frameFor(ctx);
    const run = async (): Promise<unknown> => onLogin(ctx, identity.profile, tokens);
    let appUser: unknown;
    try {
      appUser = await (frame === undefined ? run() : storage.run({ ...frame, explicitActor: toActor(who, 'explicit') }, run));
    } catch (err) {
      signals.emit('login_failed', { ctx, identifier: identity.id, knownUser: true, provider: provider.name, reason: 'on_login_error' });
      throw err;
    }
    if (appUser === false) return failed(ctx, new ProviderError('rejected'), identity.id);
    signals.emit('login', {
      ctx,
      user: toActor(appUser, 'explicit') !== null ? appUser : who,
      provider: provider.name,
      identifier: identity.id,
      meta: identity.meta ?? {},
    });
    if (ctx.body == null && ctx.status === 404) ctx.redirect(successRedirect);
  });

  return router;
}
