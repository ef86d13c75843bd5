/**
 * OpenID Connect login (Okta, Azure AD / Entra ID, Google, Keycloak, Authing, Lark's OIDC...) as a `LoginProvider`,
 * built on `openid-client`: discovery, the authorization code flow with PKCE (S256), `state` and `nonce`, and the
 * ID token validated (issuer, audience, expiry, nonce, and its signature against the issuer's JWKS).
 *
 * openid-client v6 is an ES module only; this package is built to CommonJS, so it is loaded with a dynamic
 * `import()` at first use (discovery happens then too, and is retried after a failure). An app that never mounts
 * `oidcRouter` never loads it.
 *
 * Failure reasons beyond the router's own: `nonce_mismatch`, `id_token_expired`, `id_token_bad_signature`,
 * `id_token_invalid` (another claim check: issuer, audience, ...), `token_exchange_failed` (the token endpoint
 * refused the code), `user_info_failed`, `discovery_failed`, `network_error` (refused, reset, timeout).
 */
import type Router from '@koa/router';
import type { Context } from 'koa';
import type * as OpenIdClient from 'openid-client';
import { checkKnown, bool, nonEmptyString, objectOption, positiveInt } from '../../core/options.js';
import { capString } from '../../core/safe.js';
import { signalsOf, type SignalTarget } from '../login.js';
import { absoluteUrl, networkDetail, providerRouter, ProviderError, requiredString, ROUTER_OPTION_KEYS, type LoginProvider, type ProviderRouterOptions } from './provider.js';

type Client = typeof OpenIdClient;

export type OidcFailureReason =
  | 'state_mismatch'
  | 'state_replayed'
  | 'access_denied'
  | 'authorize_error'
  | 'missing_code'
  | 'nonce_mismatch'
  | 'id_token_expired'
  | 'id_token_bad_signature'
  | 'id_token_invalid'
  | 'token_exchange_failed'
  | 'user_info_failed'
  | 'discovery_failed'
  | 'network_error'
  | 'rejected'
  | 'on_login_error';

/** The user as the ID token (and the UserInfo endpoint) describe them. */
export interface OidcUser {
  /** The subject: stable and unique at this issuer. */
  sub: string;
  issuer: string;
  name?: string;
  preferredUsername?: string;
  email?: string;
  emailVerified?: boolean;
  /** Every claim of the ID token, merged with the UserInfo response. */
  claims: Record<string, unknown>;
}

export interface OidcTokens {
  accessToken: string;
  idToken: string;
  refreshToken?: string;
  expiresIn?: number;
  scope?: string;
  tokenType?: string;
}

/** What the OpenID Connect provider needs to know (the router's own options come on top). */
export interface OidcProviderOptions {
  /** The issuer URL (its `/.well-known/openid-configuration` is read at first use). */
  issuer: string;
  clientId: string;
  /** Confidential clients: sent with `client_secret_basic`; also the default key of the state cookie. Without it the client is public (PKCE only). */
  clientSecret?: string;
  /** Default `'openid profile email'`. */
  scope?: string;
  /** Also read the UserInfo endpoint (name, email are often only there). Default true when the issuer has one. */
  userInfo?: boolean;
  /** Timeout of each call to the issuer, in ms. Default 10,000. */
  timeoutMs?: number;
  /** Allow an http:// issuer. Default: only for a loopback issuer (127.0.0.1, ::1, localhost) in development. */
  allowInsecureRequests?: boolean;
  /** `provider` of the events. Default `'oidc'` (e.g. `'okta'`, `'keycloak'` when an app has several). */
  name?: string;
  /** Used in the plain-text failure answer. Default `'OpenID Connect'`. */
  label?: string;
}

export interface OidcRouterOptions extends Omit<ProviderRouterOptions<OidcUser, OidcTokens>, 'signals'>, OidcProviderOptions {
  /** Where `login` / `login_failed` are emitted: an auditor or its `signals`. Default: the default `audit` instance. */
  signals?: SignalTarget;
}

const KNOWN = [
  ...ROUTER_OPTION_KEYS, 'issuer', 'clientId', 'clientSecret', 'scope', 'userInfo', 'timeoutMs', 'allowInsecureRequests', 'name', 'label',
] as const;

let loading: Promise<Client> | null = null;
/** openid-client, loaded once; `import()` stays a real dynamic import in the CommonJS build. */
function openidClient(): Promise<Client> {
  loading ??= import('openid-client').catch((err: unknown) => {
    loading = null;
    throw err;
  });
  return loading;
}

function isLoopback(url: URL): boolean {
  return url.hostname === '127.0.0.1' || url.hostname === '[::1]' || url.hostname === 'localhost';
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? capString(v, 512) : undefined;
}

/** The innermost `cause` chain of an openid-client error, as a list (ClientError → OperationProcessingError → ...). */
function causes(err: unknown): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  let e = err;
  for (let i = 0; i < 5 && e !== null && typeof e === 'object'; i++) {
    out.push(e as Record<string, unknown>);
    e = (e as { cause?: unknown }).cause;
  }
  return out;
}

/** Turns what openid-client threw into the precise reason. Never copies a token or the code into the detail. */
function classify(client: Client, err: unknown, stage: string): ProviderError {
  if (err instanceof ProviderError) return err;
  if (err instanceof client.ResponseBodyError) {
    const detail: Record<string, unknown> = { stage, status: err.status, error: capString(err.error, 128) };
    if (typeof err.error_description === 'string') detail.message = capString(err.error_description, 256);
    return new ProviderError(stage === 'userinfo' ? 'user_info_failed' : 'token_exchange_failed', detail);
  }
  if (err instanceof client.AuthorizationResponseError) {
    return new ProviderError(err.error === 'access_denied' ? 'access_denied' : 'authorize_error', { error: capString(err.error, 128) });
  }
  const chain = causes(err);
  const code = chain.map((c) => c.code).find((c): c is string => typeof c === 'string');
  const claim = chain.map((c) => c.claim).find((c): c is string => typeof c === 'string');
  const messages = chain.map((c) => c.message).filter((m): m is string => typeof m === 'string');
  if (code === 'OAUTH_TIMEOUT' || code === 'OAUTH_ABORT') return new ProviderError('network_error', { stage, error: 'timeout' });
  if (err instanceof TypeError && messages[0] === 'fetch failed') {
    return new ProviderError('network_error', networkDetail(stage, err));
  }
  if (code === 'OAUTH_KEY_SELECTION_FAILED' || messages.includes('JWT signature verification failed')) {
    return new ProviderError('id_token_bad_signature', { stage, detail: code === 'OAUTH_KEY_SELECTION_FAILED' ? 'no key of the issuer matches' : 'signature does not verify' });
  }
  if (code === 'OAUTH_JWT_TIMESTAMP_CHECK_FAILED' && claim === 'exp') return new ProviderError('id_token_expired', { stage });
  if (code === 'OAUTH_JWT_CLAIM_COMPARISON_FAILED' && claim === 'nonce') return new ProviderError('nonce_mismatch', { stage });
  if (code === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED' && claim === 'state') return new ProviderError('state_mismatch', { stage });
  if (code !== undefined && code.startsWith('OAUTH_')) {
    const detail: Record<string, unknown> = { stage, code };
    if (claim !== undefined) detail.claim = claim;
    if (messages.length > 1) detail.message = capString(messages[1], 256);
    return new ProviderError(stage === 'discovery' ? 'discovery_failed' : stage === 'userinfo' ? 'user_info_failed' : 'id_token_invalid', detail);
  }
  if (stage === 'discovery') return new ProviderError('discovery_failed', { stage, error: capString(messages[0] ?? 'unknown', 256) });
  return new ProviderError(stage === 'userinfo' ? 'user_info_failed' : 'token_exchange_failed', { stage, error: capString(messages[0] ?? 'unknown', 256) });
}


/** OpenID Connect as a `LoginProvider`. */
export function oidcProvider(options: OidcProviderOptions): LoginProvider<OidcUser, OidcTokens> {
  const issuer = new URL(absoluteUrl('issuer', options.issuer));
  const clientId = requiredString('clientId', options.clientId);
  const clientSecret = options.clientSecret === undefined ? undefined : requiredString('clientSecret', options.clientSecret);
  const scope = nonEmptyString('scope', options.scope, 'openid profile email');
  if (!scope.split(/\s+/).includes('openid')) throw new TypeError(`koa-audit: option "scope" must include openid, got ${JSON.stringify(scope)}`);
  const wantUserInfo = bool('userInfo', options.userInfo, true);
  const timeoutMs = positiveInt('timeoutMs', options.timeoutMs, 10_000);
  const insecure = bool('allowInsecureRequests', options.allowInsecureRequests, issuer.protocol === 'http:' && isLoopback(issuer));
  if (issuer.protocol === 'http:' && !insecure) {
    throw new TypeError(`koa-audit: option "issuer" must be an https URL (or set allowInsecureRequests: true), got ${issuer.href}`);
  }
  const name = nonEmptyString('name', options.name, 'oidc');
  const label = nonEmptyString('label', options.label, 'OpenID Connect');

  let configuring: Promise<OpenIdClient.Configuration> | null = null;
  async function configuration(client: Client): Promise<OpenIdClient.Configuration> {
    configuring ??= (async () => {
      const auth = clientSecret === undefined ? client.None() : client.ClientSecretBasic(clientSecret);
      try {
        const config = await client.discovery(issuer, clientId, clientSecret === undefined ? undefined : { client_secret: clientSecret }, auth, {
          execute: insecure ? [client.allowInsecureRequests] : [],
          timeout: Math.ceil(timeoutMs / 1000),
        });
        config.timeout = Math.ceil(timeoutMs / 1000);
        // Tokens from the token endpoint come over TLS, so OIDC lets a client skip the ID token's signature; an
        // audit trail wants the issuer's signature checked: a token it did not sign is never a login.
        client.enableNonRepudiationChecks(config);
        return config;
      } catch (err) {
        throw classify(client, err, 'discovery');
      }
    })();
    configuring.catch(() => {
      configuring = null; // tried again at the next login
    });
    return configuring;
  }

  return {
    name,
    label,
    reasons: ['nonce_mismatch', 'id_token_expired', 'id_token_bad_signature', 'id_token_invalid', 'token_exchange_failed', 'user_info_failed', 'discovery_failed', 'network_error'],
    async authorizeUrl({ state, redirectUri }) {
      const client = await openidClient();
      const config = await configuration(client);
      const verifier = client.randomPKCECodeVerifier();
      const nonce = client.randomNonce();
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: redirectUri,
        scope,
        state,
        nonce,
        code_challenge: await client.calculatePKCECodeChallenge(verifier),
        code_challenge_method: 'S256',
      });
      return { url: url.href, keep: { nonce, verifier } };
    },
    async exchange({ state, redirectUri, callbackUrl, kept }) {
      const client = await openidClient();
      const config = await configuration(client);
      if (kept.verifier === undefined || kept.nonce === undefined) throw new ProviderError('state_mismatch', { stateCheck: 'cookie incomplete' });
      let result: Awaited<ReturnType<Client['authorizationCodeGrant']>>;
      try {
        result = await client.authorizationCodeGrant(config, callbackUrl, {
          pkceCodeVerifier: kept.verifier,
          expectedState: state,
          expectedNonce: kept.nonce,
          idTokenExpected: true,
        }, { redirect_uri: redirectUri });
      } catch (err) {
        throw classify(client, err, 'token');
      }
      const claims = result.claims();
      if (claims === undefined || typeof result.id_token !== 'string') throw new ProviderError('id_token_invalid', { stage: 'token', detail: 'no ID token' });
      const tokens: OidcTokens = { accessToken: result.access_token, idToken: result.id_token };
      if (typeof result.refresh_token === 'string') tokens.refreshToken = result.refresh_token;
      if (typeof result.expires_in === 'number') tokens.expiresIn = result.expires_in;
      if (typeof result.scope === 'string') tokens.scope = result.scope;
      if (typeof result.token_type === 'string') tokens.tokenType = result.token_type;
      return tokens;
    },
    async userInfo(tokens) {
      const client = await openidClient();
      const config = await configuration(client);
      // The ID token was validated in `exchange`; its claims are read again from the token kept there.
      const idClaims = JSON.parse(Buffer.from(tokens.idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
      const sub = str(idClaims.sub);
      if (sub === undefined) throw new ProviderError('id_token_invalid', { stage: 'token', claim: 'sub' });
      let claims: Record<string, unknown> = { ...idClaims };
      if (wantUserInfo && config.serverMetadata().userinfo_endpoint !== undefined) {
        try {
          const info = await client.fetchUserInfo(config, tokens.accessToken, sub);
          claims = { ...claims, ...info };
        } catch (err) {
          throw classify(client, err, 'userinfo');
        }
      }
      const user: OidcUser = { sub, issuer: str(idClaims.iss) ?? issuer.href, claims };
      const displayName = str(claims.name);
      if (displayName !== undefined) user.name = displayName;
      const preferred = str(claims.preferred_username);
      if (preferred !== undefined) user.preferredUsername = preferred;
      const email = str(claims.email);
      if (email !== undefined) user.email = email;
      if (typeof claims.email_verified === 'boolean') user.emailVerified = claims.email_verified;
      return { id: sub, name: user.name ?? user.preferredUsername ?? user.email, profile: user, meta: { issuer: user.issuer } };
    },
  };
}

/**
 * `GET {prefix}/login` and `GET {prefix}/callback` for one OpenID Connect issuer: `login` (identifier: the `sub`)
 * or `login_failed` with one of `OidcFailureReason`.
 */
export function oidcRouter(options: OidcRouterOptions & { signals: SignalTarget }): Router {
  objectOption('oidcRouter options', options ?? null);
  checkKnown(options, KNOWN, 'oidcRouter');
  signalsOf(options.signals, 'signals');
  const provider = oidcProvider(options);
  return providerRouter(provider, { ...options, prefix: options.prefix ?? '/auth/oidc' }, options.clientSecret);
}
