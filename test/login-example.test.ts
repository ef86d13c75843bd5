import { expect } from 'chai';
import Koa from 'koa';
import { authRouter, feishuForEnvironment, sessionMiddleware } from '../example-app/auth.js';
import type { AuditEvent, Auditor, LoginFailedInput, LoginSucceededInput } from '../lib/index.js';
import { startFakeFeishu, type FakeFeishu } from './support/fake-feishu.js';
import { storedEvents, useFixture, type Running } from './support/helpers.js';
import jwt from 'jsonwebtoken';

const JWT_SECRET = 'example-jwt-secret';
/** Sent as a password on every login path; it must never reach the audit collection. */
const SENTINEL = 'Sentinel-Pa55word-7d3b9c';

describe('example app login routes', () => {
  const fx = useFixture('login_example');
  let auditor: Auditor;
  let fake: FakeFeishu;
  let server: Running;

  const events = (filter: Record<string, unknown>): Promise<AuditEvent[]> => storedEvents(auditor, filter);
  const loginEvents = (requestId: string | null) => events({ requestId, kind: { $in: ['login', 'login_failed', 'logout'] } });
  const postJson = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  const postForm = (path: string, form: Record<string, string>) =>
    fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(form).toString() });

  before(async () => {
    // The app secret carries the sentinel too: the client secret must never be stored either.
    fake = fx.own(await startFakeFeishu({ appSecret: `secret-${SENTINEL}`, tokenPrefix: `tok-${SENTINEL}-` }));
    auditor = fx.auditor({
      collection: 'example_events',
      jwt: { secret: JWT_SECRET, algorithms: ['HS256'], cookie: 'token' },
      loginFailures: { max: 1000, windowMs: 60_000 },
    });
    const app = new Koa();
    app.use(auditor({ captureBody: true }));
    const auth = authRouter({ auditor, jwtSecret: JWT_SECRET, feishu: { baseUrl: fake.url, appId: fake.appId, appSecret: fake.appSecret } });
    app.use(auth.routes()).use(auth.allowedMethods());
    server = await fx.listen(app);
  });

  it('serves a login form whose post logs in and redirects to a local `next` only', async () => {
    const page = await fetch(`${server.url}/login`);
    expect(page.headers.get('content-type')).to.match(/^text\/html/);
    const html = await page.text();
    expect(html).to.include('action="/auth/login"').and.include('name="next" value="/audit/"');
    const ok = await fetch(`${server.url}/auth/login`, {
      method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username: 'alice', password: 'alice-password', next: '/audit/' }).toString(),
    });
    expect(ok.status).to.equal(302);
    expect(ok.headers.get('location')).to.equal('/audit/');
    expect(ok.headers.get('set-cookie')).to.match(/^token=/);
    for (const next of ['//evil.example/', 'https://evil.example/', '/\\evil.example/', '/\t/evil.example/']) {
      const res = await fetch(`${server.url}/auth/login`, {
        method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ username: 'alice', password: 'alice-password', next }).toString(),
      });
      expect(res.status, next).to.equal(200);
      expect(res.headers.get('location'), next).to.equal(null);
    }
  });

  it('local login (scrypt): success sets the token cookie; later requests are attributed through it', async () => {
    const res = await postJson('/auth/login', { username: 'alice', password: 'alice-password' });
    expect(res.status).to.equal(200);
    const [ev] = await loginEvents(res.headers.get('x-request-id'));
    expect(ev).to.include({ kind: 'login', provider: 'local', identifier: 'alice' });
    expect(ev.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'explicit' });
    const cookie = res.headers.getSetCookie().find((c) => c.startsWith('token='))?.split(';')[0] ?? '';
    expect(cookie).to.match(/^token=ey/);

    const me = await fetch(`${server.url}/auth/me`, { headers: { cookie } });
    expect(((await me.json()) as { user: { id: string } }).user.id).to.equal('u-alice');
    const [request] = await events({ requestId: me.headers.get('x-request-id'), kind: 'request' });
    expect(request.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'jwt' });

    const out = await fetch(`${server.url}/auth/logout`, { method: 'POST', headers: { cookie } });
    expect(out.status).to.equal(200);
    const [logout] = await loginEvents(out.headers.get('x-request-id'));
    expect(logout).to.include({ kind: 'logout', provider: 'local', identifier: 'alice' });
    expect(logout.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'explicit' });
  });

  it('local login failures: bad password, unknown user, missing credentials', async () => {
    const cases: [Record<string, unknown>, number, string, string | null][] = [
      [{ username: 'alice', password: 'nope' }, 401, 'bad_password', 'alice'],
      [{ username: 'nobody', password: 'nope' }, 401, 'unknown_user', 'nobody'],
      [{ username: 'alice' }, 400, 'missing_credentials', 'alice'],
    ];
    for (const [body, status, reason, identifier] of cases) {
      const res = await postJson('/auth/login', body);
      expect(res.status).to.equal(status);
      const list = await loginEvents(res.headers.get('x-request-id'));
      expect(list.map((e) => [e.kind, e.reason, e.identifier, e.actor])).to.deep.equal([['login_failed', reason, identifier, null]]);
    }
  });

  it('the JWT endpoint issues a token through the jsonwebtoken adapter', async () => {
    const res = await postJson('/auth/token', { username: 'bob', password: 'bob-password' });
    expect(res.status).to.equal(200);
    const { token } = (await res.json()) as { token: string };
    const [ev] = await loginEvents(res.headers.get('x-request-id'));
    expect(ev).to.include({ kind: 'login', provider: 'jwt', identifier: 'bob' });
    const me = await fetch(`${server.url}/auth/me`, { headers: { authorization: `Bearer ${token}` } });
    expect(((await me.json()) as { user: { role: string } }).user.role).to.equal('user');
    const bad = await postJson('/auth/token', { username: 'bob', password: 'nope' });
    expect(bad.status).to.equal(401);
    const [failed] = await loginEvents(bad.headers.get('x-request-id'));
    expect(failed).to.include({ kind: 'login_failed', provider: 'jwt', reason: 'bad_credentials' });
  });

  it('logout without a session answers 401 and records nothing', async () => {
    const res = await fetch(`${server.url}/auth/logout`, { method: 'POST' });
    expect(res.status).to.equal(401);
    expect(await loginEvents(res.headers.get('x-request-id'))).to.have.length(0);
  });

  it('Feishu login through the fake provider', async () => {
    const start = await fetch(`${server.url}/auth/feishu/login`, { redirect: 'manual' });
    const cookie = start.headers.getSetCookie()[0].split(';')[0];
    const consent = await fetch(start.headers.get('location') ?? '', { redirect: 'manual' });
    const callback = await fetch(consent.headers.get('location') ?? '', { redirect: 'manual', headers: { cookie } });
    expect(callback.status).to.equal(302);
    expect(callback.headers.getSetCookie().some((c) => c.startsWith('token=ey'))).to.equal(true);
    const [ev] = await loginEvents(callback.headers.get('x-request-id'));
    expect(ev).to.include({ kind: 'login', provider: 'feishu', identifier: 'ou_fake_alice' });
    expect(ev.actor).to.deep.equal({ id: 'feishu:ou_fake_alice', name: 'Alice Feishu', via: 'explicit' });
  });

  it('sessionMiddleware makes the user of a valid token ctx.state.user, and ignores a forged one', async () => {
    const app = new Koa();
    app.use(sessionMiddleware(JWT_SECRET));
    app.use((ctx) => {
      ctx.body = { user: ctx.state.user ?? null };
    });
    const r = await fx.listen(app);
    const good = jwt.sign({ sub: 'u-alice', name: 'alice', role: 'admin' }, JWT_SECRET, { algorithm: 'HS256' });
    const forged = jwt.sign({ sub: 'u-alice', name: 'alice', role: 'admin' }, 'not-the-secret', { algorithm: 'HS256' });
    const who = async (token: string) => ((await (await fetch(r.url, { headers: { cookie: `token=${token}` } })).json()) as { user: unknown }).user;
    expect(await who(good)).to.deep.equal({ id: 'u-alice', username: 'alice', role: 'admin' });
    expect(await who(forged)).to.equal(null);
  });

  it('feishuForEnvironment: the fake in development, none in production, the real one when configured', async () => {
    const dev = fx.own(await feishuForEnvironment({ NODE_ENV: 'development' }));
    expect(dev.config?.baseUrl).to.match(/^http:\/\/127\.0\.0\.1:\d+$/);
    const res = await fetch(`${dev.config?.baseUrl}/open-apis/authen/v1/user_info`);
    expect(res.status).to.equal(401);
    expect((await feishuForEnvironment({ NODE_ENV: 'production' })).config).to.equal(null);
    const real = await feishuForEnvironment({ FEISHU_APP_ID: 'cli_x', FEISHU_APP_SECRET: 'y' });
    expect(real.config).to.deep.equal({ baseUrl: 'https://open.feishu.cn', appId: 'cli_x', appSecret: 'y' });
  });

  it('a sentinel password sent to every login path never appears anywhere in the audit collection', async () => {
    const sent: Response[] = [];
    // Local login: JSON and form bodies, wrong and right user, and in the query string too.
    sent.push(await postJson(`/auth/login?password=${SENTINEL}&user=alice`, { username: 'alice', password: SENTINEL }));
    sent.push(await postJson('/auth/login', { username: 'nobody', password: SENTINEL, passwordConfirm: SENTINEL }));
    sent.push(await postForm('/auth/login', { username: 'alice', password: SENTINEL }));
    sent.push(await postJson('/auth/login', { username: 'alice', password: 'alice-password', newPassword: SENTINEL, extra: { pwd: SENTINEL } }));
    // JWT endpoint.
    sent.push(await postJson(`/auth/token?pwd=${SENTINEL}`, { username: 'bob', password: SENTINEL }));
    sent.push(await postForm('/auth/token', { username: 'bob', password: SENTINEL }));
    // Logout and Feishu callback given the sentinel as well.
    sent.push(await postJson('/auth/logout', { password: SENTINEL }, { authorization: `Bearer ${SENTINEL}` }));
    sent.push(await fetch(`${server.url}/auth/feishu/callback?code=x&state=y&password=${SENTINEL}`, { redirect: 'manual' }));
    const start = await fetch(`${server.url}/auth/feishu/login?password=${SENTINEL}`, { redirect: 'manual' });
    const cookie = start.headers.getSetCookie()[0].split(';')[0];
    const consent = await fetch(start.headers.get('location') ?? '', { redirect: 'manual' });
    sent.push(await fetch(consent.headers.get('location') ?? '', { redirect: 'manual', headers: { cookie, authorization: `Basic ${SENTINEL}` } }));
    expect(sent.map((r) => r.status)).to.deep.equal([401, 401, 401, 200, 401, 401, 401, 401, 302]);

    // The API and the emitter, given the password in stray fields, meta and the user object.
    await auditor.loginFailed({ identifier: 'api', reason: 'bad_password', password: SENTINEL, meta: { password: SENTINEL, form: { passwd: SENTINEL } } } as LoginFailedInput);
    await auditor.loginSucceeded({ user: { id: 'u-api', username: 'api', password: SENTINEL }, identifier: 'api', credentials: SENTINEL } as LoginSucceededInput);
    auditor.signals.emit('login_failed', { identifier: 'sig', reason: 'bad_password', meta: { userPassword: SENTINEL } });
    auditor.signals.emit('login', { user: { id: 'u-sig', secret: SENTINEL }, password: SENTINEL } as LoginSucceededInput);
    auditor.signals.emit('logout', { user: { id: 'u-sig' }, meta: { token: SENTINEL } });

    const all = (await events({})) as unknown as Record<string, unknown>[];
    const logins = all.filter((e) => e.kind !== 'request');
    expect(logins.length).to.be.at.least(14, 'every path recorded something');
    expect(all.filter((e) => e.kind === 'request').length).to.be.at.least(10, 'the request events (with queries and bodies) are there too');
    expect(all.some((e) => JSON.stringify(e).includes('[REDACTED]'))).to.equal(true);
    expect(JSON.stringify(all)).to.not.include(SENTINEL);
    expect(JSON.stringify(all)).to.not.include(encodeURIComponent(SENTINEL));
  });
});
