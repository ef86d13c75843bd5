import { expect } from 'chai';
import Koa, { type Context } from 'koa';
import { feishuRouter, type AuditEvent, type Auditor, type FeishuTokens, type FeishuUser } from '../lib/index.js';
import { startFakeFeishu, type FakeFeishu, type FakeFeishuMode } from './support/fake-feishu.js';
import { storedEvents, useFixture, type Running } from './support/helpers.js';

const APP_SECRET = 'feishu-app-secret-SENTINEL-4f1c';
const TOKEN_PREFIX = 'u-token-SENTINEL-9a7e-';

interface Flow {
  /** The app's answer to the callback. */
  callback: Response;
  requestId: string;
  /** Request id of the authorize redirect. */
  loginRequestId: string;
}

describe('Feishu OAuth provider', () => {
  const fx = useFixture('feishu');
  let auditor: Auditor;
  let fake: FakeFeishu;
  let server: Running;
  const logins: { user: FeishuUser; tokens: FeishuTokens; actorDuring: unknown }[] = [];
  let refuse = false;

  const events = (filter: Record<string, unknown>): Promise<AuditEvent[]> => storedEvents(auditor, filter);

  /** Plays the browser: app login -> Feishu authorize -> app callback, carrying the state cookie. */
  async function flow(tamper?: (callback: URL) => void, keepCookie = true): Promise<Flow> {
    const start = await fetch(`${server.url}/auth/feishu/login`, { redirect: 'manual' });
    expect(start.status).to.equal(302);
    const cookies = start.headers.getSetCookie().map((c) => c.split(';')[0]);
    expect(cookies.join('; ')).to.match(/^koa_audit_feishu_state=/);
    expect(start.headers.getSetCookie()[0]).to.match(/httponly/i);
    const authorize = new URL(start.headers.get('location') ?? '');
    expect(authorize.origin + authorize.pathname).to.equal(`${fake.url}/open-apis/authen/v1/authorize`);
    expect(authorize.searchParams.get('app_id')).to.equal(fake.appId);
    expect(authorize.searchParams.get('redirect_uri')).to.equal(`${server.url}/auth/feishu/callback`);
    expect(authorize.searchParams.get('state')).to.have.length.above(20);

    const consent = await fetch(authorize, { redirect: 'manual' });
    expect(consent.status).to.equal(302);
    const back = new URL(consent.headers.get('location') ?? '');
    tamper?.(back);
    const callback = await fetch(back, { redirect: 'manual', headers: keepCookie ? { cookie: cookies.join('; ') } : {} });
    return { callback, requestId: callback.headers.get('x-request-id') ?? '', loginRequestId: start.headers.get('x-request-id') ?? '' };
  }

  async function failure(mode: FakeFeishuMode, reason: string, tamper?: (u: URL) => void, keepCookie = true): Promise<AuditEvent> {
    fake.mode = mode;
    const { callback, requestId } = await flow(tamper, keepCookie);
    expect([401, 502]).to.include(callback.status);
    expect(await callback.text()).to.equal(`Feishu login failed: ${reason}`);
    const list = await events({ requestId, kind: { $in: ['login', 'login_failed'] } });
    expect(list).to.have.length(1);
    expect(list[0]).to.include({ kind: 'login_failed', outcome: 'failure', provider: 'feishu', reason, actor: null });
    return list[0];
  }

  before(async () => {
    fake = fx.own(await startFakeFeishu({ appSecret: APP_SECRET, tokenPrefix: TOKEN_PREFIX }));
    auditor = fx.auditor({
      collection: 'feishu_events',
      loginFailures: { max: 1000, windowMs: 60_000 },
    });
    const app = new Koa();
    app.use(auditor());
    const router = feishuRouter({
      signals: auditor,
      appId: fake.appId,
      appSecret: APP_SECRET,
      baseUrl: fake.url,
      timeoutMs: 500,
      onLogin: (ctx: Context, user: FeishuUser, tokens: FeishuTokens) => {
        logins.push({ user, tokens, actorDuring: auditor.context()?.explicitActor });
        if (refuse) return false;
        ctx.cookies.set('session', `s-${user.openId}`);
        return { id: `app-${user.openId}`, name: user.name };
      },
    });
    app.use(router.routes());
    server = await fx.listen(app);
  });

  beforeEach(() => {
    fake.mode = 'ok';
    refuse = false;
  });

  it('logs the user in end to end and emits login with the open id', async () => {
    const { callback, requestId, loginRequestId } = await flow();
    expect(callback.status).to.equal(302);
    expect(callback.headers.get('location')).to.equal('/');
    expect(callback.headers.getSetCookie().join(';')).to.include('session=s-ou_fake_alice');

    const last = logins[logins.length - 1];
    expect(last.user).to.include({ openId: 'ou_fake_alice', name: 'Alice Feishu', email: 'alice@feishu.example', unionId: 'on_fake_alice' });
    expect(last.tokens.accessToken.startsWith(TOKEN_PREFIX)).to.equal(true);
    expect(last.actorDuring, 'onLogin runs as the Feishu identity').to.deep.equal({ id: 'ou_fake_alice', name: 'Alice Feishu', via: 'explicit' });

    const list = await events({ requestId, kind: { $in: ['login', 'login_failed'] } });
    expect(list).to.have.length(1);
    expect(list[0]).to.include({ kind: 'login', outcome: 'success', provider: 'feishu', identifier: 'ou_fake_alice' });
    expect(list[0].actor).to.deep.equal({ id: 'app-ou_fake_alice', name: 'Alice Feishu', via: 'explicit' });
    expect(list[0].meta).to.deep.equal({ unionId: 'on_fake_alice', tenantKey: 'fake_tenant' });

    // The redirect to Feishu is a plain, successful request: never a failure.
    const start = await events({ requestId: loginRequestId });
    expect(start.map((e) => [e.kind, e.outcome])).to.deep.equal([['request', 'success']]);

    // The token exchange used Feishu's documented JSON body; user_info the Bearer token.
    const tokenCall = fake.calls.filter((c) => c.path === '/open-apis/authen/v2/oauth/token').at(-1);
    expect(tokenCall?.body).to.include({ grant_type: 'authorization_code', client_id: fake.appId, client_secret: APP_SECRET, redirect_uri: `${server.url}/auth/feishu/callback` });
    const infoCall = fake.calls.filter((c) => c.path === '/open-apis/authen/v1/user_info').at(-1);
    expect(infoCall?.authorization).to.equal(`Bearer ${last.tokens.accessToken}`);
  });

  it('state_mismatch: a tampered state', async () => {
    await failure('ok', 'state_mismatch', (u) => u.searchParams.set('state', 'forged-state-value-0123456789'));
  });

  it('state_mismatch: no state cookie (another browser)', async () => {
    const before = fake.calls.length;
    await failure('ok', 'state_mismatch', undefined, false);
    expect(fake.calls.slice(before).map((c) => c.path)).to.not.include('/open-apis/authen/v2/oauth/token');
  });

  it('access_denied: the user refused consent', async () => {
    const ev = await failure('deny', 'access_denied');
    expect(ev.meta).to.deep.equal({ error: 'access_denied' });
  });

  it('token_exchange_failed: Feishu refuses the code', async () => {
    const ev = await failure('token_error', 'token_exchange_failed');
    expect(ev.meta).to.include({ stage: 'token', status: 400, code: 20050 });
  });

  it('token_exchange_failed: a replayed code', async () => {
    let used = '';
    fake.mode = 'ok';
    await flow((u) => (used = u.href));
    const replay = await fetch(`${server.url}/auth/feishu/login`, { redirect: 'manual' });
    const cookie = replay.headers.getSetCookie()[0].split(';')[0];
    const state = new URL(replay.headers.get('location') ?? '').searchParams.get('state') ?? '';
    const again = new URL(used);
    again.searchParams.set('state', state);
    const res = await fetch(again, { redirect: 'manual', headers: { cookie } });
    expect(res.status).to.equal(401);
    const [ev] = await events({ requestId: res.headers.get('x-request-id'), kind: 'login_failed' });
    expect(ev).to.include({ reason: 'token_exchange_failed' });
    expect(ev.meta).to.include({ code: 20003 });
  });

  it('state_replayed: the whole callback replayed with its state cookie; the code never stored', async () => {
    fake.mode = 'ok';
    const start = await fetch(`${server.url}/auth/feishu/login`, { redirect: 'manual' });
    const cookie = start.headers.getSetCookie()[0].split(';')[0];
    const consent = await fetch(start.headers.get('location') ?? '', { redirect: 'manual' });
    const back = consent.headers.get('location') ?? '';
    const first = await fetch(back, { redirect: 'manual', headers: { cookie } });
    expect(first.status).to.equal(302);
    const again = await fetch(back, { redirect: 'manual', headers: { cookie } });
    expect(again.status).to.equal(401);
    expect(await again.text()).to.equal('Feishu login failed: state_replayed');
    const [ev] = await events({ requestId: again.headers.get('x-request-id'), kind: 'login_failed' });
    expect(ev).to.include({ reason: 'state_replayed', provider: 'feishu' });
    const code = new URL(back).searchParams.get('code') ?? '';
    const [request] = await events({ requestId: first.headers.get('x-request-id'), kind: 'request' });
    expect(request.http?.query).to.match(/^code=\[REDACTED\]&state=/);
    expect(JSON.stringify(await events({}))).to.not.include(code);
  });

  it('network_error: the token call is reset', async () => {
    const ev = await failure('token_reset', 'network_error');
    expect(ev.meta).to.include({ stage: 'token' });
  });

  it('network_error: the token call times out', async () => {
    const ev = await failure('token_hang', 'network_error');
    expect(ev.meta).to.deep.equal({ stage: 'token', error: 'timeout' });
  });

  it('user_info_failed and network_error on the user info call', async () => {
    const ev = await failure('user_info_error', 'user_info_failed');
    expect(ev.meta).to.include({ stage: 'user_info', code: 99991663 });
    const ev2 = await failure('user_info_reset', 'network_error');
    expect(ev2.meta).to.include({ stage: 'user_info' });
  });

  it('rejected: onLogin refuses the user', async () => {
    refuse = true;
    const { callback, requestId } = await flow();
    expect(callback.status).to.equal(401);
    const list = await events({ requestId, kind: { $in: ['login', 'login_failed'] } });
    expect(list.map((e) => [e.kind, e.reason, e.identifier])).to.deep.equal([['login_failed', 'rejected', 'ou_fake_alice']]);
    const [request] = await events({ requestId, kind: 'request' });
    expect(request.actor, 'a refused user is not the actor').to.equal(null);
  });

  it('never stores the app secret or a token', async () => {
    const all = JSON.stringify(await events({}));
    expect(all).to.include('ou_fake_alice');
    expect(all).to.not.include('SENTINEL');
  });

  it('validates its options', () => {
    const base = { signals: auditor, appId: 'a', appSecret: 's', onLogin: () => undefined };
    expect(() => feishuRouter({ ...base, appSecret: '' })).to.throw(TypeError, /"appSecret"/);
    expect(() => feishuRouter({ ...base, baseUrl: 'ftp://x' })).to.throw(TypeError, /"baseUrl"/);
    expect(() => feishuRouter({ ...base, timeoutMs: 0 })).to.throw(TypeError, /"timeoutMs"/);
    expect(() => feishuRouter({ ...base, bogus: 1 } as typeof base)).to.throw(TypeError, /"bogus"/);
    expect(() => feishuRouter({ ...base, appId: undefined } as unknown as typeof base)).to.throw(TypeError, /"appId" must be a non-empty string, got undefined/);
    expect(() => feishuRouter({ ...base, prefix: '' })).to.throw(TypeError, /"prefix"/);
    expect(() => feishuRouter({ ...base, scope: 7 } as unknown as typeof base)).to.throw(TypeError, /"scope"/);
    expect(() => feishuRouter(null as unknown as typeof base)).to.throw(TypeError, /feishuRouter options/);
  });
});
