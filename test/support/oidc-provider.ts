/**
 * A real OpenID Provider (`oidc-provider`, certified, running on Koa 3) on 127.0.0.1, behind a small HTTP proxy that
 * is the issuer URL. The proxy forwards everything untouched unless a test asks it to misbehave at the token
 * endpoint: re-sign the ID token with another key, make it expired or carry another nonce, or reset the connection.
 * The interaction (login and consent) is answered by code, as the user chosen by the test, or refused.
 */
import { createPrivateKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import type { Context, Next } from 'koa';

export type TokenTamper = 'none' | 'wrong_key' | 'expired' | 'other_nonce' | 'reset' | 'garbage';

export interface TestIssuer {
  /** The issuer URL (the proxy). */
  url: string;
  clientId: string;
  clientSecret: string;
  /** Where the provider may redirect back (starts the provider): call before the first login. */
  setRedirectUri(uri: string | string[]): Promise<void>;
  /** What the next token responses go through. */
  tamper: TokenTamper;
  /** The account the interaction logs in, or `'deny'` to refuse consent. */
  account: string | 'deny';
  /** Every request the proxy saw, as method + path. */
  seen: string[];
  close(): Promise<void>;
}

export const ACCOUNTS: Record<string, { name: string; email: string; preferred_username: string }> = {
  'sub-alice': { name: 'Alice OIDC', email: 'alice@oidc.example', preferred_username: 'alice' },
};

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function b64(json: unknown): string {
  return Buffer.from(JSON.stringify(json)).toString('base64url');
}

function resign(idToken: string, key: KeyObject, change: (claims: Record<string, unknown>) => void): string {
  const [h, p] = idToken.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as Record<string, unknown>;
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>;
  change(claims);
  const input = `${b64(header)}.${b64(claims)}`;
  return `${input}.${sign('sha256', Buffer.from(input), key).toString('base64url')}`;
}

export async function startTestIssuer(options: { clientSecret: string }): Promise<TestIssuer> {
  const specifier = 'oidc-provider'; // it ships no types: the little used is typed by ProviderLike below
  const { default: Provider } = (await import(specifier)) as unknown as { default: new (issuer: string, config: unknown) => ProviderLike };
  const good = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const wrong = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...good.privateKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256', use: 'sig' };
  const goodKey = createPrivateKey({ key: jwk as never, format: 'jwk' });

  let target = '';
  const state: Pick<TestIssuer, 'tamper' | 'account' | 'seen'> = { tamper: 'none', account: 'sub-alice', seen: [] };

  const proxy = createServer((req: IncomingMessage, res: ServerResponse) => {
    state.seen.push(`${req.method} ${req.url}`);
    const isToken = req.method === 'POST' && req.url === '/token';
    if (isToken && issuerState.tamper === 'reset') {
      req.socket.destroy();
      return;
    }
    const up = request(`${target}${req.url}`, { method: req.method, headers: { ...req.headers, host: new URL(issuerUrl).host } }, (upRes) => {
      if (!isToken || issuerState.tamper === 'none') {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        upRes.pipe(res);
        return;
      }
      const chunks: Buffer[] = [];
      upRes.on('data', (c: Buffer) => chunks.push(c));
      upRes.on('end', () => {
        let body = Buffer.concat(chunks).toString('utf8');
        const json = JSON.parse(body) as Record<string, unknown>;
        const idToken = json.id_token;
        if (typeof idToken === 'string') {
          const now = Math.floor(Date.now() / 1000);
          if (issuerState.tamper === 'wrong_key') json.id_token = resign(idToken, wrong.privateKey, () => {});
          if (issuerState.tamper === 'expired') json.id_token = resign(idToken, goodKey, (c) => Object.assign(c, { iat: now - 7200, exp: now - 3600 }));
          if (issuerState.tamper === 'other_nonce') json.id_token = resign(idToken, goodKey, (c) => Object.assign(c, { nonce: 'a-nonce-of-another-login' }));
          if (issuerState.tamper === 'garbage') json.id_token = 'not.a.jwt';
        }
        body = JSON.stringify(json);
        const headers = { ...upRes.headers, 'content-length': String(Buffer.byteLength(body)) };
        res.writeHead(upRes.statusCode ?? 502, headers);
        res.end(body);
      });
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  const issuerUrl = await listen(proxy);
  const issuerState = state as TestIssuer;

  let provider: ProviderLike | null = null;
  let providerServer: Server | null = null;
  const clientId = 'koa-audit-test-client';

  async function setRedirectUri(uri: string | string[]): Promise<void> {
    const p = new Provider(issuerUrl, {
      clients: [{ client_id: clientId, client_secret: options.clientSecret, redirect_uris: Array.isArray(uri) ? uri : [uri], grant_types: ['authorization_code'], response_types: ['code'] }],
      jwks: { keys: [jwk] },
      cookies: { keys: ['oidc-test-cookie-key'] },
      findAccount: (_ctx: unknown, sub: string) => {
        const a = ACCOUNTS[sub];
        return a === undefined ? undefined : { accountId: sub, claims: () => ({ sub, ...a, email_verified: true }) };
      },
      claims: { openid: ['sub'], profile: ['name', 'preferred_username'], email: ['email', 'email_verified'] },
      features: { devInteractions: { enabled: false } },
      pkce: { required: () => true },
      ttl: { AccessToken: 600, AuthorizationCode: 60, Grant: 600, IdToken: 600, Interaction: 600, Session: 600 },
      interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
    });
    p.proxy = true;
    // The interaction, answered by code: the test's account logs in and consents, or refuses.
    p.use(async (ctx: Context, next: Next) => {
      if (!/^\/interaction\/[^/]+$/.test(ctx.path)) return next();
      const details = await p.interactionDetails(ctx.req, ctx.res);
      ctx.respond = false;
      if (issuerState.account === 'deny') {
        return p.interactionFinished(ctx.req, ctx.res, { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false });
      }
      const accountId = issuerState.account;
      const grant = new p.Grant({ accountId, clientId: details.params.client_id });
      grant.addOIDCScope(String(details.params.scope));
      const grantId = await grant.save();
      return p.interactionFinished(ctx.req, ctx.res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
    });
    provider = p;
    const server = createServer(p.callback());
    target = await listen(server);
    providerServer = server;
  }

  return Object.assign(issuerState, {
    url: issuerUrl,
    clientId,
    clientSecret: options.clientSecret,
    setRedirectUri,
    async close() {
      for (const s of [proxy, providerServer]) {
        if (s === null) continue;
        s.closeAllConnections();
        await new Promise<void>((resolve) => s.close(() => resolve()));
      }
      void provider;
    },
  });
}

/** The little of oidc-provider's API the test uses (it ships no types). */
interface ProviderLike {
  proxy: boolean;
  use(mw: (ctx: Context, next: Next) => unknown): unknown;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<{ params: { client_id: string; scope?: string } }>;
  interactionFinished(req: IncomingMessage, res: ServerResponse, result: unknown, options?: { mergeWithLastSubmission?: boolean }): Promise<void>;
  Grant: new (init: { accountId: string; clientId: string }) => { addOIDCScope(scope: string): void; save(): Promise<string> };
}

/**
 * Plays the browser from the app's login route to the app's callback: follows redirects, carrying cookies per host
 * (the app's state cookie, the provider's interaction cookies). Stops at the first answer of the app's callback.
 */
export async function browse(start: string, callbackPrefix: string, tamperCallback?: (u: URL) => void): Promise<{ callback: Response; callbackUrl: URL; appCookies: string; loginResponse: Response }> {
  const jars = new Map<string, Map<string, string>>();
  const cookieHeader = (url: URL): string => [...(jars.get(url.host) ?? new Map<string, string>())].map(([k, v]) => `${k}=${v}`).join('; ');
  const keep = (url: URL, res: Response): void => {
    const jar = jars.get(url.host) ?? new Map<string, string>();
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(c)) jar.delete(name);
      else jar.set(name, value);
    }
    jars.set(url.host, jar);
  };
  let url = new URL(start);
  let loginResponse: Response | null = null;
  for (let hop = 0; hop < 15; hop++) {
    const isCallback = url.href.startsWith(callbackPrefix);
    if (isCallback) tamperCallback?.(url);
    const appCookies = cookieHeader(url);
    const res = await fetch(url, { redirect: 'manual', headers: { cookie: appCookies } });
    loginResponse ??= res;
    keep(url, res);
    if (isCallback) return { callback: res, callbackUrl: url, appCookies, loginResponse };
    const location = res.headers.get('location');
    if (location === null) throw new Error(`no redirect from ${url.href}: ${res.status} ${await res.text()}`);
    url = new URL(location, url);
  }
  throw new Error('too many redirects');
}
