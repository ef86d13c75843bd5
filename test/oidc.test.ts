import { expect } from 'chai';
import Koa, { type Context } from 'koa';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { oidcRouter, type AuditEvent, type Auditor, type OidcTokens, type OidcUser } from '../lib/index.js';
import { storedEvents, useFixture, type Running } from './support/helpers.js';
import { browse, startTestIssuer, type TestIssuer, type TokenTamper } from './support/oidc-provider.js';

const CLIENT_SECRET = 'oidc-client-secret-SENTINEL-2b9d';

describe('OpenID Connect login (openid-client against a real oidc-provider)', function () {
  this.timeout(60_000);
  const fx = useFixture('oidc');
  let auditor: Auditor;
  let issuer: TestIssuer;
  let server: Running;
  const logins: { user: OidcUser; tokens: OidcTokens; actorDuring: unknown }[] = [];
  let refuse = false;

  const events = (filter: Record<string, unknown>): Promise<AuditEvent[]> => storedEvents(auditor, filter);
  const loginEvents = (requestId: string | null): Promise<AuditEvent[]> => events({ requestId, kind: { $in: ['login', 'login_failed'] } });

  /** Every authorization code the issuer handed out: none may be stored. */
  const callbackCodes: string[] = [];

  async function flow(tamperCallback?: (u: URL) => void) {
    const r = await browse(`${server.url}/auth/oidc/login`, `${server.url}/auth/oidc/callback`, tamperCallback);
    const code = r.callbackUrl.searchParams.get('code');
    if (code !== null) callbackCodes.push(code);
    return { ...r, requestId: r.callback.headers.get('x-request-id') ?? '' };
  }

  async function failure(tamper: TokenTamper, reason: string, status = 401): Promise<AuditEvent> {
    issuer.tamper = tamper;
    const { callback, requestId } = await flow();
    expect(await callback.text()).to.equal(`OpenID Connect login failed: ${reason}`);
    expect(callback.status).to.equal(status);
    const list = await loginEvents(requestId);
    expect(list).to.have.length(1);
    expect(list[0]).to.include({ kind: 'login_failed', outcome: 'failure', provider: 'oidc', reason, actor: null });
    return list[0];
  }

  before(async () => {
    issuer = fx.own(await startTestIssuer({ clientSecret: CLIENT_SECRET }));
    auditor = fx.auditor({
      collection: 'oidc_events',
      loginFailures: { max: 1000, windowMs: 60_000 },
    });
    const app = new Koa();
    app.use(auditor());
    app.use(oidcRouter({
      signals: auditor,
      issuer: issuer.url,
      clientId: issuer.clientId,
      clientSecret: CLIENT_SECRET,
      timeoutMs: 2000,
      onLogin: (ctx: Context, user: OidcUser, tokens: OidcTokens) => {
        logins.push({ user, tokens, actorDuring: auditor.context()?.explicitActor });
        if (refuse) return false;
        ctx.cookies.set('session', `s-${user.sub}`);
        return { id: `app-${user.sub}`, name: user.name };
      },
    }).routes());
    server = await fx.listen(app);
    await issuer.setRedirectUri(`${server.url}/auth/oidc/callback`);
  });

  beforeEach(() => {
    issuer.tamper = 'none';
    issuer.account = 'sub-alice';
    refuse = false;
  });

  it('logs the user in end to end: discovery, PKCE, state, nonce, a validated ID token', async () => {
    const { callback, requestId, loginResponse } = await flow();
    expect(callback.status).to.equal(302);
    expect(callback.headers.get('location')).to.equal('/');
    expect(callback.headers.getSetCookie().join(';')).to.include('session=s-sub-alice');

    const authorize = new URL(loginResponse.headers.get('location') ?? '');
    expect(authorize.origin).to.equal(issuer.url);
    expect(authorize.searchParams.get('code_challenge_method')).to.equal('S256');
    expect(authorize.searchParams.get('code_challenge')).to.have.length(43);
    expect(authorize.searchParams.get('nonce')).to.have.length.above(20);
    expect(authorize.searchParams.get('state')).to.have.length.above(20);
    expect(authorize.searchParams.get('scope')).to.equal('openid profile email');
    expect(issuer.seen).to.include('GET /.well-known/openid-configuration');
    expect(issuer.seen.some((s) => s.startsWith('GET /jwks'))).to.equal(true, 'the ID token signature was checked against the JWKS');

    const last = logins[logins.length - 1];
    expect(last.user).to.include({ sub: 'sub-alice', issuer: issuer.url, name: 'Alice OIDC', email: 'alice@oidc.example', preferredUsername: 'alice', emailVerified: true });
    expect(last.tokens.idToken.split('.')).to.have.length(3);
    expect(last.actorDuring, 'onLogin runs as the OIDC identity').to.deep.equal({ id: 'sub-alice', name: 'Alice OIDC', via: 'explicit' });

    const list = await loginEvents(requestId);
    expect(list).to.have.length(1);
    expect(list[0]).to.include({ kind: 'login', outcome: 'success', provider: 'oidc', identifier: 'sub-alice' });
    expect(list[0].actor).to.deep.equal({ id: 'app-sub-alice', name: 'Alice OIDC', via: 'explicit' });
    expect(list[0].meta).to.deep.equal({ issuer: issuer.url });
    const [request] = await events({ requestId, kind: 'request' });
    expect(request.actor).to.deep.include({ id: 'app-sub-alice' });
  });

  it('id_token_bad_signature: an ID token signed with the wrong key', async () => {
    const ev = await failure('wrong_key', 'id_token_bad_signature');
    expect(ev.meta).to.deep.equal({ stage: 'token', detail: 'signature does not verify' });
  });

  it('id_token_expired: an expired ID token, correctly signed', async () => {
    const ev = await failure('expired', 'id_token_expired');
    expect(ev.meta).to.deep.equal({ stage: 'token' });
  });

  it('nonce_mismatch: an ID token minted for another login', async () => {
    await failure('other_nonce', 'nonce_mismatch');
  });

  it('id_token_invalid: an ID token that is not a JWT', async () => {
    const ev = await failure('garbage', 'id_token_invalid');
    expect(ev.meta).to.have.property('stage', 'token');
  });

  it('network_error: the token call is reset', async () => {
    const ev = await failure('reset', 'network_error', 502);
    expect(ev.meta).to.include({ stage: 'token' });
  });

  it('access_denied: the user refuses consent', async () => {
    issuer.account = 'deny';
    const { callback, requestId } = await flow();
    expect(callback.status).to.equal(401);
    expect(await callback.text()).to.equal('OpenID Connect login failed: access_denied');
    const [ev] = await loginEvents(requestId);
    expect(ev).to.include({ kind: 'login_failed', reason: 'access_denied' });
    expect(ev.meta).to.deep.equal({ error: 'access_denied' });
  });

  it('state_mismatch: a tampered state, or no state cookie', async () => {
    const tampered = await flow((u) => u.searchParams.set('state', 'forged-state-value-0123456789'));
    expect(await tampered.callback.text()).to.equal('OpenID Connect login failed: state_mismatch');
    expect((await loginEvents(tampered.requestId)).map((e) => e.reason)).to.deep.equal(['state_mismatch']);

    const { callbackUrl } = await flow();
    const res = await fetch(callbackUrl, { redirect: 'manual' });
    expect(res.status).to.equal(401);
    const [ev] = await loginEvents(res.headers.get('x-request-id'));
    expect(ev).to.include({ reason: 'state_mismatch' });
    expect(ev.meta).to.deep.equal({ stateCheck: 'cookie missing or expired' });
  });

  it('state_replayed: the whole callback replayed, state cookie included', async () => {
    const first = await flow();
    expect(first.callback.status).to.equal(302);
    const again = await fetch(first.callbackUrl, { redirect: 'manual', headers: { cookie: first.appCookies } });
    expect(again.status).to.equal(401);
    expect(await again.text()).to.equal('OpenID Connect login failed: state_replayed');
    expect((await loginEvents(again.headers.get('x-request-id'))).map((e) => [e.kind, e.reason])).to.deep.equal([['login_failed', 'state_replayed']]);
  });

  it('token_exchange_failed: a replayed code under a fresh state', async () => {
    const first = await flow();
    expect(first.callback.status).to.equal(302);
    // A new login in the same browser gives a fresh state; the old code is sent with it.
    const fresh = await fetch(`${server.url}/auth/oidc/login`, { redirect: 'manual' });
    const cookie = fresh.headers.getSetCookie()[0].split(';')[0];
    const state = new URL(fresh.headers.get('location') ?? '').searchParams.get('state') ?? '';
    const replay = new URL(first.callbackUrl);
    replay.searchParams.set('state', state);
    const res = await fetch(replay, { redirect: 'manual', headers: { cookie } });
    expect(await res.text()).to.equal('OpenID Connect login failed: token_exchange_failed');
    const [ev] = await loginEvents(res.headers.get('x-request-id'));
    expect(ev).to.include({ reason: 'token_exchange_failed' });
    expect(ev.meta).to.include({ stage: 'token', status: 400, error: 'invalid_grant' });
  });

  it('rejected: onLogin refuses the user', async () => {
    refuse = true;
    const { callback, requestId } = await flow();
    expect(callback.status).to.equal(401);
    expect((await loginEvents(requestId)).map((e) => [e.kind, e.reason, e.identifier])).to.deep.equal([['login_failed', 'rejected', 'sub-alice']]);
  });

  it('network_error: an issuer that cannot be reached answers 502 at /login, and no login event', async () => {
    const app = new Koa();
    app.use(auditor());
    app.use(oidcRouter({ signals: auditor, issuer: 'http://127.0.0.1:9/', clientId: 'x', clientSecret: 'y-SENTINEL', timeoutMs: 1000, onLogin: () => undefined }).routes());
    const down = await fx.listen(app);
    const res = await fetch(`${down.url}/auth/oidc/login`, { redirect: 'manual' });
    expect(res.status).to.equal(502);
    expect(await res.text()).to.equal('OpenID Connect login unavailable: network_error');
    expect(await loginEvents(res.headers.get('x-request-id'))).to.deep.equal([]);
  });

  it('never stores the client secret, a code, a token or the PKCE verifier: every stored document scanned', async () => {
    const all = await events({});
    expect(all.length).to.be.above(20);
    const codes = [...logins.map((l) => [l.tokens.accessToken, l.tokens.idToken]).flat(), ...callbackCodes];
    expect(callbackCodes.length).to.be.above(5);
    for (const doc of all) {
      const text = JSON.stringify(doc);
      expect(text).to.not.include('SENTINEL');
      for (const secret of codes) expect(text).to.not.include(secret);
      expect(text).to.not.match(/(^|[?&"])code=(?!\[REDACTED\])/);
    }
  });

  it('validates its options', () => {
    const base = { signals: auditor, issuer: 'https://id.example.com', clientId: 'c', onLogin: () => undefined };
    expect(() => oidcRouter({ ...base, issuer: 'http://id.example.com' })).to.throw(TypeError, /"issuer" must be an https URL/);
    expect(() => oidcRouter({ ...base, clientId: '' })).to.throw(TypeError, /"clientId"/);
    expect(() => oidcRouter({ ...base, scope: 'profile' })).to.throw(TypeError, /"scope" must include openid/);
    expect(() => oidcRouter({ ...base, bogus: 1 } as typeof base)).to.throw(TypeError, /"bogus"/);
    expect(() => oidcRouter({ ...base, onLogin: undefined } as unknown as typeof base)).to.throw(TypeError, /"onLogin"/);
    expect(() => oidcRouter({ ...base, timeoutMs: -1 })).to.throw(TypeError, /"timeoutMs"/);
    expect(oidcRouter({ ...base, issuer: 'http://id.example.com', allowInsecureRequests: true })).to.have.property('routes');
  });

  it('without signals, as in the contract, the events go to the default audit instance', () => {
    // In a child with its own TMPDIR: the default instance (and its spool directory) must not outlive this check.
    const script = `const k = require('./lib/index.ts');
      const r = k.oidcRouter({ issuer: 'https://id.example.com', clientId: 'c', onLogin: () => undefined });
      console.log(typeof r.routes, k.audit.signals.listenerCount('login'));
      process.exit(0);`;
    const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', script], {
      cwd: join(__dirname, '..'), encoding: 'utf8', env: { ...process.env, TMPDIR: fx.tmp() },
    });
    expect(out.trim()).to.equal('function 1');
  });
});
