/**
 * The example app's login routes, every one audited:
 *
 *   GET  /login          a login form for browsers (posts to /auth/login, then opens the viewer)
 *   POST /auth/login     local username/password (scrypt), sets the `token` cookie (a JWT); redirects to a local
 *                        `next` when the form sends one
 *   POST /auth/token     the same credentials through the jsonwebtoken adapter: answers { token } for API clients
 *   POST /auth/logout    clears the cookie, records the logout
 *   GET  /auth/me        who the app thinks you are
 *   GET  /auth/feishu/login, /auth/feishu/callback   Feishu OAuth (the fake provider in development)
 *   GET  /auth/oidc/login, /auth/oidc/callback       OpenID Connect (a local oidc-provider in development)
 *
 * Mount it after the audit middleware; the auditor should verify the same JWTs so that later requests are
 * attributed: createAudit({ jwt: { secret, algorithms: ['HS256'], cookie: 'token' } }).
 */
import { randomBytes, scrypt, scryptSync, timingSafeEqual, type BinaryLike } from 'node:crypto';
import Router from '@koa/router';
import jwt from 'jsonwebtoken';
import type { Context, Next } from 'koa';
import { feishuRouter, jwtLogin, oidcRouter, type Auditor, type FeishuUser, type OidcUser } from '../lib/index.js';
import { startFakeFeishu } from '../test/support/fake-feishu.js';
import { startTestIssuer } from '../test/support/oidc-provider.js';

export interface DemoUserInput {
  id: string;
  username: string;
  password: string;
  role: 'admin' | 'user';
}

/** Demo accounts; a real app keeps only the hashes, in its database. */
export const DEMO_USERS: readonly DemoUserInput[] = [
  { id: 'u-alice', username: 'alice', password: 'alice-password', role: 'admin' },
  { id: 'u-bob', username: 'bob', password: 'bob-password', role: 'user' },
];

export interface FeishuConfig {
  baseUrl: string;
  appId: string;
  appSecret: string;
}

export interface OidcConfig {
  issuer: string;
  clientId: string;
  clientSecret: string;
}

export interface AuthRouterOptions {
  auditor: Auditor;
  /** HMAC secret of the app's JWTs (the auditor's `jwt.secret` too). */
  jwtSecret: string;
  users?: readonly DemoUserInput[];
  /** Feishu login; absent or null: the Feishu routes are not mounted. */
  feishu?: FeishuConfig | null;
  /** OpenID Connect login; absent or null: the OIDC routes are not mounted. */
  oidc?: OidcConfig | null;
  /** Name of the JWT cookie. Default `'token'`. */
  cookie?: string;
}

/** What a token and `ctx.state.user` carry: never the password or its hash. */
export interface SessionUser {
  id: string;
  username: string;
  role: 'admin' | 'user';
}

interface StoredUser extends SessionUser {
  salt: Buffer;
  hash: Buffer;
}

const KEY_LENGTH = 64;
const MAX_BODY = 16 * 1024;

function scryptAsync(password: BinaryLike, salt: BinaryLike): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, KEY_LENGTH, (err, key) => (err === null ? resolve(key) : reject(err)));
  });
}

function hashUser(u: DemoUserInput): StoredUser {
  const salt = randomBytes(16);
  return { id: u.id, username: u.username, role: u.role, salt, hash: scryptSync(u.password, salt, KEY_LENGTH) };
}

/** A minimal body parser (JSON and urlencoded forms), so the example needs no extra dependency. */
async function readBody(ctx: Context): Promise<Record<string, unknown>> {
  const type = ctx.request.type;
  if (type !== 'application/json' && type !== 'application/x-www-form-urlencoded') return {};
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) ctx.throw(413, 'body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  let body: Record<string, unknown> = {};
  if (type === 'application/json') {
    try {
      const parsed: unknown = JSON.parse(text === '' ? '{}' : text);
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
    } catch {
      ctx.throw(400, 'malformed JSON');
    }
  } else {
    body = Object.fromEntries(new URLSearchParams(text));
  }
  // Where the audit middleware's `captureBody` finds it (and redacts the password).
  (ctx.request as { body?: unknown }).body = body;
  return body;
}

function credentials(body: Record<string, unknown>): { username: string; password: string } {
  return {
    username: typeof body.username === 'string' ? body.username.trim() : '',
    password: typeof body.password === 'string' ? body.password : '',
  };
}

export function authRouter(options: AuthRouterOptions): Router {
  const { auditor, jwtSecret } = options;
  const cookie = options.cookie ?? 'token';
  const users = new Map<string, StoredUser>();
  for (const u of options.users ?? DEMO_USERS) users.set(u.username, hashUser(u));
  // Unknown names cost one scrypt too, so response time does not tell which accounts exist.
  const dummy = hashUser({ id: '', username: '', password: randomBytes(16).toString('hex'), role: 'user' });

  type Check = { user: SessionUser } | { reason: 'unknown_user' | 'bad_password' };
  async function check(username: string, password: string): Promise<Check> {
    const stored = users.get(username);
    const target = stored ?? dummy;
    const key = await scryptAsync(password, target.salt);
    if (stored === undefined) return { reason: 'unknown_user' };
    if (!timingSafeEqual(key, stored.hash)) return { reason: 'bad_password' };
    return { user: { id: stored.id, username: stored.username, role: stored.role } };
  }

  const sign = (u: SessionUser): string => jwt.sign({ sub: u.id, name: u.username, role: u.role }, jwtSecret, { algorithm: 'HS256', expiresIn: '8h' });

  function setSession(ctx: Context, u: SessionUser): void {
    ctx.cookies.set(cookie, sign(u), { httpOnly: true, sameSite: 'lax', secure: ctx.secure, maxAge: 8 * 3600_000, overwrite: true });
  }



  const issueToken = jwtLogin<SessionUser>({
    signals: auditor,
    secret: jwtSecret,
    expiresIn: '1h',
    claims: (u) => ({ role: u.role }),
    verify: async (username, password) => {
      const r = await check(username, password);
      return 'user' in r ? r.user : null;
    },
  });

  const router = new Router();

  // A login form for people with a browser: it posts to /auth/login, which then sends them to `next`.
  router.get('/login', (ctx) => {
    ctx.type = 'html';
    ctx.body = loginPage(options.feishu != null, options.oidc != null);
  });

  router.post('/auth/login', async (ctx) => {
    const body = await readBody(ctx);
    const { username, password } = credentials(body);
    if (username === '' || password === '') {
      await auditor.loginFailed({ ctx, identifier: username === '' ? null : username, provider: 'local', reason: 'missing_credentials' });
      ctx.status = 400;
      ctx.body = { error: 'username and password are required' };
      return;
    }
    const r = await check(username, password);
    if (!('user' in r)) {
      await auditor.loginFailed({ ctx, identifier: username, provider: 'local', reason: r.reason });
      ctx.status = 401;
      ctx.body = { error: 'invalid username or password' };
      return;
    }
    await auditor.loginSucceeded({ ctx, user: r.user, provider: 'local', identifier: username });
    ctx.state.user = r.user;
    setSession(ctx, r.user);
    if (isLocalPath(body.next)) ctx.redirect(body.next);
    else ctx.body = { user: r.user };
  });

  router.post('/auth/token', async (ctx) => {
    const { username, password } = credentials(await readBody(ctx));
    const result = await issueToken({ ctx, identifier: username, password });
    if (result === null) {
      ctx.status = 401;
      ctx.body = { error: 'invalid username or password' };
      return;
    }
    ctx.body = { token: result.token, tokenType: 'Bearer', expiresIn: 3600 };
  });

  router.post('/auth/logout', async (ctx) => {
    const user = userFromToken(ctx, jwtSecret, cookie);
    ctx.cookies.set(cookie, null, { httpOnly: true, sameSite: 'lax', overwrite: true });
    if (user === null) {
      ctx.status = 401;
      ctx.body = { error: 'not logged in' };
      return;
    }
    await auditor.logout({ ctx, user, provider: 'local' });
    ctx.body = { ok: true };
  });

  router.get('/auth/me', (ctx) => {
    const user = userFromToken(ctx, jwtSecret, cookie);
    ctx.status = user === null ? 401 : 200;
    ctx.body = { user };
  });

  if (options.feishu != null) {
    const feishu = feishuRouter({
      signals: auditor,
      ...options.feishu,
      prefix: '/auth/feishu',
      onLogin: (ctx: Context, fu: FeishuUser): SessionUser => {
        // A real app would look up (or create) its own user by open id here.
        const user: SessionUser = { id: `feishu:${fu.openId}`, username: fu.name ?? fu.email ?? fu.openId, role: 'user' };
        setSession(ctx, user);
        return user;
      },
    });
    router.use(feishu.routes(), feishu.allowedMethods());
  }

  if (options.oidc != null) {
    const oidc = oidcRouter({
      signals: auditor,
      ...options.oidc,
      prefix: '/auth/oidc',
      successRedirect: '/auth/me',
      onLogin: (ctx: Context, ou: OidcUser): SessionUser => {
        // A real app would look up (or create) its own user by issuer and subject here.
        const user: SessionUser = { id: `oidc:${ou.sub}`, username: ou.preferredUsername ?? ou.name ?? ou.email ?? ou.sub, role: 'user' };
        setSession(ctx, user);
        return user;
      },
    });
    router.use(oidc.routes(), oidc.allowedMethods());
  }

  return router;
}

/**
 * Only a path of this site may follow a login: anything a browser would resolve to another host (`//evil`,
 * `/\evil`, `https://evil`) would make the form an open redirect.
 */
function isLocalPath(next: unknown): next is string {
  if (typeof next !== 'string' || !next.startsWith('/')) return false;
  const base = 'http://local.invalid';
  return URL.canParse(next, base) && new URL(next, base).origin === base;
}

function loginPage(withFeishu: boolean, withOidc: boolean): string {
  const feishu = withFeishu ? '<p>or <a href="/auth/feishu/login">log in with Feishu</a></p>' : '';
  const oidc = withOidc ? '<p>or <a id="oidc-login" href="/auth/oidc/login">log in with OpenID Connect</a></p>' : '';
  return `<!doctype html><html><head><meta charset="utf-8"><title>koa-audit example: log in</title></head>
<body style="font: 15px system-ui; max-width: 22rem; margin: 4rem auto">
<h1>Log in</h1>
<form method="post" action="/auth/login">
<input type="hidden" name="next" value="/audit/">
<p><label>Username <input name="username" value="alice" autocomplete="username"></label></p>
<p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>
<p><button>Log in and open the audit viewer</button></p>
</form>${feishu}${oidc}
<p>Demo accounts: alice / alice-password (admin), bob / bob-password.</p>
</body></html>`;
}

/** The user of a valid app token (Bearer header, else the cookie), or null: never the password or its hash. */
export function userFromToken(ctx: Context, jwtSecret: string, cookie: string): SessionUser | null {
  const header = ctx.get('authorization');
  const token = header.toLowerCase().startsWith('bearer ') ? header.slice(7).trim() : ctx.cookies.get(cookie);
  if (token === undefined || token === '') return null;
  try {
    const p = jwt.verify(token, jwtSecret, { algorithms: ['HS256'] });
    if (typeof p !== 'object' || typeof p.sub !== 'string') return null;
    return { id: p.sub, username: typeof p.name === 'string' ? p.name : p.sub, role: p.role === 'admin' ? 'admin' : 'user' };
  } catch {
    return null; // an invalid token is simply no session
  }
}

/** Makes the token's user `ctx.state.user` for the app's own handlers (the auditor verifies tokens itself). */
export function sessionMiddleware(jwtSecret: string, cookie = 'token') {
  return async (ctx: Context, next: Next): Promise<void> => {
    const user = userFromToken(ctx, jwtSecret, cookie);
    if (user !== null) ctx.state.user = user;
    await next();
  };
}

/**
 * The Feishu configuration for this environment: the real one from FEISHU_APP_ID / FEISHU_APP_SECRET
 * (FEISHU_BASE_URL optional), else in development the fake provider on 127.0.0.1, else none.
 */
export async function feishuForEnvironment(env: NodeJS.ProcessEnv = process.env): Promise<{ config: FeishuConfig | null; close(): Promise<void> }> {
  if (env.FEISHU_APP_ID !== undefined && env.FEISHU_APP_SECRET !== undefined) {
    return {
      config: { baseUrl: env.FEISHU_BASE_URL ?? 'https://open.feishu.cn', appId: env.FEISHU_APP_ID, appSecret: env.FEISHU_APP_SECRET },
      close: async () => undefined,
    };
  }
  if (env.NODE_ENV === 'production') return { config: null, close: async () => undefined };
  const fake = await startFakeFeishu();
  return { config: { baseUrl: fake.url, appId: fake.appId, appSecret: fake.appSecret }, close: () => fake.close() };
}

/**
 * The OpenID Connect configuration for this environment: the real issuer from OIDC_ISSUER / OIDC_CLIENT_ID /
 * OIDC_CLIENT_SECRET, else in development a real `oidc-provider` on 127.0.0.1 that logs everyone in as Alice
 * (for `redirectUris`: the app's callback URLs), else none.
 */
export async function oidcForEnvironment(redirectUris: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ config: OidcConfig | null; close(): Promise<void> }> {
  if (env.OIDC_ISSUER !== undefined && env.OIDC_CLIENT_ID !== undefined && env.OIDC_CLIENT_SECRET !== undefined) {
    return { config: { issuer: env.OIDC_ISSUER, clientId: env.OIDC_CLIENT_ID, clientSecret: env.OIDC_CLIENT_SECRET }, close: async () => undefined };
  }
  if (env.NODE_ENV === 'production') return { config: null, close: async () => undefined };
  const issuer = await startTestIssuer({ clientSecret: randomBytes(24).toString('base64url') });
  await issuer.setRedirectUri(redirectUris);
  return { config: { issuer: issuer.url, clientId: issuer.clientId, clientSecret: issuer.clientSecret }, close: () => issuer.close() };
}
