/**
 * Feishu (Lark) OAuth login, through Feishu's documented open-platform endpoints, as a `LoginProvider`
 * (lib/login/providers/provider.ts does the state, the callback checks and the events, the same as for OIDC):
 *
 *   GET {prefix}/login     redirects to {baseUrl}/open-apis/authen/v1/authorize with a fresh `state`
 *   GET {prefix}/callback  checks `state`, exchanges `code` at /open-apis/authen/v2/oauth/token, reads
 *                          /open-apis/authen/v1/user_info, then emits `login` (identifier: the open id) or
 *                          `login_failed` with the reason
 *
 * The app secret and the tokens are never part of an event; the user access token is handed to `onLogin` only.
 */
import type Router from '@koa/router';
import type { Context } from 'koa';
import { signalsOf } from '../login.js';
import type { SignalTarget } from '../login.js';
import { checkKnown, nonEmptyString, objectOption, positiveInt } from '../../core/options.js';
import { capString } from '../../core/safe.js';
import { absoluteUrl, networkDetail, providerRouter, ProviderError, requiredString, ROUTER_OPTION_KEYS, type LoginProvider } from './provider.js';

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
  | 'state_replayed'
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

const KNOWN = [...ROUTER_OPTION_KEYS, 'appId', 'appSecret', 'baseUrl', 'scope', 'timeoutMs'] as const;

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
    throw new ProviderError('network_error', networkDetail(stage, err));
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

export interface FeishuProviderOptions {
  appId: string;
  appSecret: string;
  baseUrl?: string;
  scope?: string;
  timeoutMs?: number;
}

/** Feishu as a `LoginProvider`: its authorize URL, code exchange and user info. */
export function feishuProvider(options: FeishuProviderOptions): LoginProvider<FeishuUser, FeishuTokens> {
  const appId = requiredString('appId', options.appId);
  const appSecret = requiredString('appSecret', options.appSecret);
  const baseUrl = absoluteUrl('baseUrl', options.baseUrl ?? 'https://open.feishu.cn').replace(/\/+$/, '');
  const scope = options.scope === undefined ? undefined : nonEmptyString('scope', options.scope, '');
  const timeoutMs = positiveInt('timeoutMs', options.timeoutMs, 10_000);

  return {
    name: 'feishu',
    label: 'Feishu',
    reasons: ['token_exchange_failed', 'user_info_failed', 'network_error'],
    authorizeUrl({ state, redirectUri }) {
      const url = new URL(`${baseUrl}/open-apis/authen/v1/authorize`);
      url.searchParams.set('app_id', appId);
      url.searchParams.set('redirect_uri', redirectUri);
      url.searchParams.set('state', state);
      if (scope !== undefined) url.searchParams.set('scope', scope);
      return { url: url.href };
    },
    async exchange({ code, redirectUri }) {
      const reply = await call(`${baseUrl}/open-apis/authen/v2/oauth/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json; charset=utf-8' },
        body: JSON.stringify({ grant_type: 'authorization_code', client_id: appId, client_secret: appSecret, code, redirect_uri: redirectUri }),
      }, timeoutMs, 'token');
      const b = reply.body;
      const accessToken = b === null ? undefined : b.access_token;
      if (reply.status >= 400 || b === null || b.code !== 0 || typeof accessToken !== 'string' || accessToken === '') {
        throw new ProviderError('token_exchange_failed', errorDetail('token', reply));
      }
      const tokens: FeishuTokens = { accessToken };
      if (typeof b.refresh_token === 'string') tokens.refreshToken = b.refresh_token;
      if (typeof b.expires_in === 'number') tokens.expiresIn = b.expires_in;
      if (typeof b.scope === 'string') tokens.scope = b.scope;
      return tokens;
    },
    async userInfo(tokens) {
      const reply = await call(`${baseUrl}/open-apis/authen/v1/user_info`, {
        method: 'GET',
        headers: { authorization: `Bearer ${tokens.accessToken}` },
      }, timeoutMs, 'user_info');
      const b = reply.body;
      const data = b !== null && b.data !== null && typeof b.data === 'object' ? (b.data as Record<string, unknown>) : null;
      const openId = data === null ? undefined : str(data.open_id);
      if (reply.status >= 400 || b === null || b.code !== 0 || data === null || openId === undefined) {
        throw new ProviderError('user_info_failed', errorDetail('user_info', reply));
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
      const meta: Record<string, unknown> = {};
      if (user.unionId !== undefined) meta.unionId = user.unionId;
      if (user.tenantKey !== undefined) meta.tenantKey = user.tenantKey;
      return { id: openId, name: user.name ?? user.email, profile: user, meta };
    },
  };
}

export function feishuRouter(options: FeishuRouterOptions): Router {
  objectOption('feishuRouter options', options ?? null);
  checkKnown(options, KNOWN, 'feishuRouter');
  signalsOf(options.signals, 'signals');
  const provider = feishuProvider(options);
  // The state cookie's key derives from the app secret unless `stateSecret` is given: stable across instances.
  return providerRouter(provider, { ...options, prefix: options.prefix ?? '/auth/feishu' }, options.appSecret);
}
