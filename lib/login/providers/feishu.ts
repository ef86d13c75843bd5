/**
 * Feishu (Lark) OAuth login as a Koa router, through Feishu's documented open-platform endpoints:
 *
 *   GET {prefix}/login     redirects to {baseUrl}/open-apis/authen/v1/authorize with a fresh `state`
 *   GET {prefix}/callback  checks `state`, exchanges `code` at /open-apis/authen/v2/oauth/token, reads
 *                          /open-apis/authen/v1/user_info, then emits `login` (identifier: the open id) or
 *                          `login_failed` with the reason
 *
 * The redirect to Feishu and its consent screen are never failures. `state` lives in an HttpOnly cookie that
 * carries its expiry and an HMAC, so it is bound to the browser that started the login and needs no server
 * memory (several app instances work without sticky sessions). The app secret and the tokens are never part
 * of an event; the user access token is handed to `onLogin` only.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import Router from '@koa/router';
import type { Context } from 'koa';
import { toActor } from '../../core/actor.js';
import { frameFor, storage } from '../../core/context.js';
import { signalsOf, type LoginSignals, type SignalTarget } from '../login.js';
import { checkKnown, fail, fnOption, nonEmptyString, objectOption, positiveInt, routePrefix } from '../../core/options.js';
import { capString } from '../../core/safe.js';

export interface FeishuUser {
  openId: string;
  unionId?: string;
  userId?: string;
  name?: string;
  enName?: string;
  email?: string;
  enterpriseEmail?: string;
  avatarUrl?: string;
  tenantKey?: string;
}

export interface FeishuTokens {
  accessToken: string;
  refreshToken?: string;
  expiresIn?: number;
  scope?: string;
}

export type FeishuFailureReason =
  | 'state_mismatch'
  | 'access_denied'
  | 'authorize_error'
  | 'missing_code'
  | 'token_exchange_failed'
  | 'user_info_failed'
  | 'network_error'
  | 'rejected'
  | 'on_login_error';

export interface FeishuRouterOptions {
  /** Where `login` / `login_failed` are emitted: an auditor or its `signals`. */
  signals: SignalTarget;
  /** The app's App ID (`client_id`). */
  appId: string;
  /** The app's App Secret (`client_secret`). */
  appSecret: string;
  /**
   * Called after Feishu vouched for the user, before the redirect. May set a session or a token cookie.
   * Return the app's own user to make it the actor of the `login` event (default: `{ id: openId, name }`),
   * or `false` to refuse the login (recorded as `login_failed`, reason `'rejected'`).
   */
  onLogin: (ctx: Context, user: FeishuUser, tokens: FeishuTokens) => unknown;
  /** Default `'https://open.feishu.cn'` (Lark: `'https://open.larksuite.com'`). */
  baseUrl?: string;
  /** Route prefix. Default `'/auth/feishu'`. */
  prefix?: string;
  /** The callback URL registered with Feishu. Default: this request's protocol and host + prefix + `/callback`. */
  redirectUri?: string;
  /** Space-separated scopes to ask for. Default: none (Feishu's default scopes). */
  scope?: string;
  /** Where to go after a successful login (when `onLogin` did not answer itself). Default `'/'`. */
  successRedirect?: string;
  /** Where to go after a failed one, with `?error=<reason>` appended. Default: answer 401 (502 for network errors). */
  failureRedirect?: string;
  /** Timeout of each call to Feishu. Default 10,000 ms. */
  timeoutMs?: number;
  /** How long a login may take from the redirect to the callback. Default 10 minutes. */
  stateTtlMs?: number;
  /** Key of the state cookie's HMAC. Default: derived from `appSecret`. */
  stateSecret?: string;
  /** Default `'koa_audit_feishu_state'`. */
  cookieName?: string;
}

const KNOWN = [
  'signals', 'appId', 'appSecret', 'onLogin', 'baseUrl', 'prefix', 'redirectUri', 'scope', 'successRedirect',
  'failureRedirect', 'timeoutMs', 'stateTtlMs', 'stateSecret', 'cookieName',
] as const;

/** A string option without a default: absent is as wrong as empty. */
function required(name: string, v: unknown): string {
  return v === undefined ? fail(name, 'a non-empty string', v) : nonEmptyString(name, v, '');
}

function absoluteUrl(name: string, v: unknown): string {
  const s = required(name, v);
  if (!URL.canParse(s) || !/^https?:$/.test(new URL(s).protocol)) fail(name, 'an absolute http(s) URL', s);
  return s;
}

/** A failure of the flow: its reason goes into the event, `detail` (never a secret) into its meta. */
class FlowError extends Error {
  constructor(readonly reason: FeishuFailureReason, readonly detail: Record<string, unknown> = {}) {
    super(reason);
  }
}

interface FeishuReply {
  status: number;
  body: Record<string, unknown> | null;
}

/**
 * One call to Feishu. Transport failures (refused, reset, timeout) are `network_error`; the rest is the caller's.
 * The reply's size is not capped: `baseUrl` is trusted configuration, and the timeout covers reading the body.
 */
async function call(url: string, init: RequestInit, timeoutMs: number, stage: string): Promise<FeishuReply> {
  let res: Response;
  let text: string;
  try {
    res = await fetch(url, { ...init, redirect: 'error', signal: AbortSignal.timeout(timeoutMs) });
    text = await res.text();
  } catch (err) {
    const e = err as { name?: string; cause?: { code?: unknown } };
    const code = typeof e.cause?.code === 'string' ? e.cause.code : undefined;
    throw new FlowError('network_error', { stage, error: e.name === 'TimeoutError' ? 'timeout' : code ?? e.name ?? 'fetch failed' });
  }
  let body: Record<string, unknown> | null = null;
  try {
    const parsed: unknown = JSON.parse(text);
    if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
  } catch {
    body = null;
  }
  return { status: res.status, body };
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? capString(v, 512) : undefined;
}

/** What Feishu said about an error: its code and message, nothing else (never a token). */
function errorDetail(stage: string, reply: FeishuReply): Record<string, unknown> {
  const b = reply.body;
  const detail: Record<string, unknown> = { stage, status: reply.status };
  if (b === null) return { ...detail, error: 'not a JSON object' };
  if (typeof b.code === 'number') detail.code = b.code;
  const message = str(b.error_description) ?? str(b.msg) ?? str(b.error);
  if (message !== undefined) detail.message = message;
  return detail;
}

export function feishuRouter(options: FeishuRouterOptions): Router {
  objectOption('feishuRouter options', options ?? null);
  checkKnown(options, KNOWN, 'feishuRouter');
  const signals: LoginSignals = signalsOf(options.signals, 'signals');
  const appId = required('appId', options.appId);
  const appSecret = required('appSecret', options.appSecret);
  const onLogin = fnOption<FeishuRouterOptions['onLogin']>('onLogin', options.onLogin, '(ctx, user, tokens) => ...', true) as FeishuRouterOptions['onLogin'];
  const baseUrl = absoluteUrl('baseUrl', options.baseUrl ?? 'https://open.feishu.cn').replace(/\/+$/, '');
  const prefix = routePrefix('prefix', options.prefix, '/auth/feishu', false);
  const redirectUri = options.redirectUri === undefined ? undefined : absoluteUrl('redirectUri', options.redirectUri);
  const scope = options.scope === undefined ? undefined : nonEmptyString('scope', options.scope, '');
  const successRedirect = nonEmptyString('successRedirect', options.successRedirect, '/');
  const failureRedirect = options.failureRedirect === undefined ? undefined : nonEmptyString('failureRedirect', options.failureRedirect, '');
  const timeoutMs = positiveInt('timeoutMs', options.timeoutMs, 10_000);
  const stateTtlMs = positiveInt('stateTtlMs', options.stateTtlMs, 10 * 60_000);
  const cookieName = nonEmptyString('cookieName', options.cookieName, 'koa_audit_feishu_state');
  const stateKey = options.stateSecret === undefined
    ? createHmac('sha256', appSecret).update('koa-audit feishu state').digest()
    : Buffer.from(nonEmptyString('stateSecret', options.stateSecret, ''));
  const cookiePath = prefix === '' ? '/' : prefix;

  // Not `ctx.origin`: in Koa 3 that is the client's Origin header. Forwarded host and protocol count only
  // when the app trusts its proxy (`app.proxy`).
  const callbackUrl = (ctx: Context): string => redirectUri ?? `${ctx.protocol}://${ctx.host}${prefix}/callback`;
  const mac = (payload: string): Buffer => createHmac('sha256', stateKey).update(payload).digest();

  function setStateCookie(ctx: Context, value: string | null): void {
    ctx.cookies.set(cookieName, value, {
      httpOnly: true,
      sameSite: 'lax', // sent on the top-level redirect back from Feishu, not on cross-site subrequests
      secure: ctx.secure,
      path: cookiePath,
      maxAge: value === null ? undefined : stateTtlMs,
      overwrite: true,
    });
  }

  /** The state the cookie vouches for, when its HMAC is right and it has not expired. */
  function stateFromCookie(ctx: Context): string | null {
    let raw: string | undefined;
    try {
      raw = ctx.cookies.get(cookieName);
    } catch {
      return null;
    }
    if (raw === undefined || raw.length > 256) return null;
    const parts = raw.split('.');
    if (parts.length !== 3) return null;
    const [state, expires, sig] = parts;
    const given = Buffer.from(sig, 'base64url');
    const want = mac(`${state}.${expires}`);
    if (given.length !== want.length || !timingSafeEqual(given, want)) return null;
    if (!(Number(expires) > Date.now())) return null;
    return state;
  }

  function sameState(a: string, b: string): boolean {
    const x = Buffer.from(a);
    const y = Buffer.from(b);
    return x.length === y.length && timingSafeEqual(x, y);
  }

  function failed(ctx: Context, err: FlowError, identifier: string | null): void {
    signals.emit('login_failed', { ctx, identifier, provider: 'feishu', reason: err.reason, meta: err.detail });
    if (failureRedirect !== undefined) {
      const sep = failureRedirect.includes('?') ? '&' : '?';
      ctx.redirect(`${failureRedirect}${sep}error=${encodeURIComponent(err.reason)}`);
      return;
    }
    ctx.status = err.reason === 'network_error' ? 502 : 401;
    ctx.type = 'text/plain';
    ctx.body = `Feishu login failed: ${err.reason}`;
  }

  async function exchange(ctx: Context, code: string): Promise<FeishuTokens> {
    const reply = await call(`${baseUrl}/open-apis/authen/v2/oauth/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json; charset=utf-8' },
      body: JSON.stringify({ grant_type: 'authorization_code', client_id: appId, client_secret: appSecret, code, redirect_uri: callbackUrl(ctx) }),
    }, timeoutMs, 'token');
    const b = reply.body;
    const accessToken = b === null ? undefined : b.access_token;
    if (reply.status >= 400 || b === null || b.code !== 0 || typeof accessToken !== 'string' || accessToken === '') {
      throw new FlowError('token_exchange_failed', errorDetail('token', reply));
    }
    const tokens: FeishuTokens = { accessToken };
    if (typeof b.refresh_token === 'string') tokens.refreshToken = b.refresh_token;
    if (typeof b.expires_in === 'number') tokens.expiresIn = b.expires_in;
    if (typeof b.scope === 'string') tokens.scope = b.scope;
    return tokens;
  }

  async function userInfo(accessToken: string): Promise<FeishuUser> {
    const reply = await call(`${baseUrl}/open-apis/authen/v1/user_info`, {
      method: 'GET',
      headers: { authorization: `Bearer ${accessToken}` },
    }, timeoutMs, 'user_info');
    const b = reply.body;
    const data = b !== null && b.data !== null && typeof b.data === 'object' ? (b.data as Record<string, unknown>) : null;
    const openId = data === null ? undefined : str(data.open_id);
    if (reply.status >= 400 || b === null || b.code !== 0 || data === null || openId === undefined) {
      throw new FlowError('user_info_failed', errorDetail('user_info', reply));
    }
    const user: FeishuUser = { openId };
    const fields: [keyof FeishuUser, string][] = [
      ['unionId', 'union_id'], ['userId', 'user_id'], ['name', 'name'], ['enName', 'en_name'], ['email', 'email'],
      ['enterpriseEmail', 'enterprise_email'], ['avatarUrl', 'avatar_url'], ['tenantKey', 'tenant_key'],
    ];
    for (const [to, from] of fields) {
      const v = str(data[from]);
      if (v !== undefined) user[to] = v;
    }
    return user;
  }

  const router = new Router({ prefix: prefix === '' ? undefined : prefix });

  router.get('/login', (ctx) => {
    const state = randomBytes(24).toString('base64url');
    const expires = String(Date.now() + stateTtlMs);
    setStateCookie(ctx, `${state}.${expires}.${mac(`${state}.${expires}`).toString('base64url')}`);
    const url = new URL(`${baseUrl}/open-apis/authen/v1/authorize`);
    url.searchParams.set('app_id', appId);
    url.searchParams.set('redirect_uri', callbackUrl(ctx));
    url.searchParams.set('state', state);
    if (scope !== undefined) url.searchParams.set('scope', scope);
    ctx.redirect(url.href);
  });

  router.get('/callback', async (ctx) => {
    const expected = stateFromCookie(ctx);
    setStateCookie(ctx, null); // one login per state, whatever happens next
    const q = ctx.query;
    const state = typeof q.state === 'string' ? q.state : '';
    if (expected === null || state === '' || !sameState(state, expected)) {
      return failed(ctx, new FlowError('state_mismatch', { cookie: expected === null ? 'missing or expired' : 'present' }), null);
    }
    if (typeof q.error === 'string') {
      const reason = q.error === 'access_denied' ? 'access_denied' : 'authorize_error';
      return failed(ctx, new FlowError(reason, { error: capString(q.error, 128) }), null);
    }
    const code = typeof q.code === 'string' && q.code !== '' ? q.code : null;
    if (code === null) return failed(ctx, new FlowError('missing_code'), null);

    let tokens: FeishuTokens;
    let user: FeishuUser;
    try {
      tokens = await exchange(ctx, code);
      user = await userInfo(tokens.accessToken);
    } catch (err) {
      if (err instanceof FlowError) return failed(ctx, err, null);
      throw err;
    }

    // What onLogin changes (creating the app's user, say) is attributed to the Feishu identity: it runs in a
    // frame of its own, so the request's frame is never changed and nothing has to be put back afterwards.
    const identity = { id: user.openId, name: user.name ?? user.email };
    const frame = frameFor(ctx);
    const run = async (): Promise<unknown> => onLogin(ctx, user, tokens);
    let appUser: unknown;
    try {
      appUser = await (frame === undefined ? run() : storage.run({ ...frame, explicitActor: toActor(identity, 'explicit') }, run));
    } catch (err) {
      signals.emit('login_failed', { ctx, identifier: user.openId, provider: 'feishu', reason: 'on_login_error' });
      throw err;
    }
    if (appUser === false) return failed(ctx, new FlowError('rejected'), user.openId);
    const meta: Record<string, unknown> = {};
    if (user.unionId !== undefined) meta.unionId = user.unionId;
    if (user.tenantKey !== undefined) meta.tenantKey = user.tenantKey;
    signals.emit('login', {
      ctx,
      user: toActor(appUser, 'explicit') !== null ? appUser : identity,
      provider: 'feishu',
      identifier: user.openId,
      meta,
    });
    if (ctx.body == null && ctx.status === 404) ctx.redirect(successRedirect);
  });

  return router;
}
