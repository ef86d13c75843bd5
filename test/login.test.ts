import { expect } from 'chai';
import Router from '@koa/router';
import jwt from 'jsonwebtoken';
import Koa, { type Context } from 'koa';
import { storage } from '../lib/core/context.js';
import { jwtLogin, type AuditEvent, type Auditor, type JwtAlgorithm, type LoginFailedInput } from '../lib/index.js';
import { eventually, storedEvents, useFixture, type Running } from './support/helpers.js';

const SECRET = 'login-test-jwt-secret';
const USERS: Record<string, { id: string; username: string; password: string }> = {
  alice: { id: 'u-alice', username: 'alice', password: 'correct horse' },
};

async function readJson(ctx: Context): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of ctx.req as AsyncIterable<Buffer>) text += chunk.toString('utf8');
  return text === '' ? {} : (JSON.parse(text) as Record<string, unknown>);
}

function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'user-agent': 'login-test/1.0', ...headers },
    body: JSON.stringify(body),
  });
}

describe('login auditing', () => {
  const fx = useFixture('login');
  let auditor: Auditor;
  let server: Running;
  const errors: unknown[] = [];

  const events = (filter: Record<string, unknown>): Promise<AuditEvent[]> => storedEvents(auditor, filter);
  const one = async (filter: Record<string, unknown>): Promise<AuditEvent> => {
    const list = await events(filter);
    expect(list, JSON.stringify(filter)).to.have.length(1);
    return list[0];
  };

  before(async () => {
    auditor = fx.auditor({
      collection: 'login_events',
      jwt: { secret: SECRET, algorithms: ['HS256'] },
      // Flood control has its own tests; here every failure is wanted in detail.
      loginFailures: { max: 1000, windowMs: 60_000 },
    });
    auditor.on('error', (err) => errors.push(err));

    const issueToken = jwtLogin({
      signals: auditor.signals,
      secret: SECRET,
      verify: (name, password) => {
        const u = USERS[name];
        return u !== undefined && u.password === password ? { id: u.id, username: u.username } : null;
      },
    });

    const router = new Router();
    router.post('/login', async (ctx) => {
      const { username, password } = (await readJson(ctx)) as { username: string; password: string };
      const u = USERS[username];
      if (u === undefined || u.password !== password) {
        await auditor.loginFailed({ ctx, identifier: username, provider: 'local', reason: u === undefined ? 'unknown_user' : 'bad_password' });
        ctx.status = 401;
        return;
      }
      await auditor.loginSucceeded({ ctx, user: { id: u.id, username: u.username }, provider: 'local', identifier: username, meta: { method: 'password' } });
      ctx.body = { actorNow: auditor.context()?.explicitActor ?? null };
    });
    router.post('/logout', async (ctx) => {
      await auditor.logout({ ctx, user: { id: 'u-alice', username: 'alice' } });
      ctx.body = { ok: true };
    });
    // A callback-style API that has lost the async context: only `ctx` connects the login to its request.
    router.post('/detached-login', async (ctx) => {
      await new Promise<void>((resolve, reject) => {
        storage.exit(() => {
          setImmediate(() => {
            if (auditor.context() !== undefined) return reject(new Error('still inside the context'));
            auditor.loginSucceeded({ ctx, user: { id: 'u-detached' }, identifier: 'detached' }).then(resolve, reject);
          });
        });
      });
      ctx.body = 'ok';
    });
    router.post('/signal/:kind', async (ctx) => {
      const body = await readJson(ctx);
      const kind = ctx.params.kind;
      if (kind === 'login') auditor.signals.emit('login', { ctx, user: { id: 'u-sig', username: 'sig' }, provider: 'custom', identifier: 'sig' });
      else if (kind === 'login_failed') auditor.signals.emit('login_failed', { ctx, identifier: 'sig', provider: 'custom', reason: String(body.reason) });
      else if (kind === 'logout') auditor.signals.emit('logout', { ctx, user: { id: 'u-sig', username: 'sig' }, provider: 'custom' });
      else if (kind === 'broken') auditor.signals.emit('login', { ctx, user: null, provider: 'custom' });
      ctx.body = { emitted: kind };
    });
    router.post('/token', async (ctx) => {
      const { username, password } = (await readJson(ctx)) as { username: string; password: string };
      const result = await issueToken({ ctx, identifier: username, password });
      if (result === null) ctx.status = 401;
      else ctx.body = { token: result.token };
    });
    router.get('/whoami', (ctx) => {
      ctx.body = 'ok';
    });

    const app = new Koa();
    app.use(auditor());
    app.use(router.routes());
    server = await fx.listen(app);
  });

  it('records a successful login with the request id, IP, user agent and the user as actor', async () => {
    const res = await post(`${server.url}/login`, { username: 'alice', password: 'correct horse' });
    expect(res.status).to.equal(200);
    const requestId = res.headers.get('x-request-id');
    expect(requestId).to.be.a('string').and.not.equal('');
    const ev = await one({ kind: 'login', requestId });
    expect(ev).to.include({ outcome: 'success', provider: 'local', identifier: 'alice', userAgent: 'login-test/1.0' });
    expect(ev.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'explicit' });
    expect(ev.ip).to.match(/127\.0\.0\.1$/);
    expect(ev.meta).to.deep.equal({ method: 'password' });
  });

  it('makes the logged-in user the actor of the rest of the request', async () => {
    const res = await post(`${server.url}/login`, { username: 'alice', password: 'correct horse' });
    const body = (await res.json()) as { actorNow: unknown };
    expect(body.actorNow).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'explicit' });
    const requestId = res.headers.get('x-request-id');
    const request = await eventually(async () => (await events({ kind: 'request', requestId }))[0]);
    expect(request.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'explicit' });
  });

  it('records a failed login as anonymous, with its reason and request fields', async () => {
    const res = await post(`${server.url}/login`, { username: 'alice', password: 'wrong' });
    expect(res.status).to.equal(401);
    const requestId = res.headers.get('x-request-id');
    const ev = await one({ kind: 'login_failed', requestId });
    expect(ev).to.include({ outcome: 'failure', provider: 'local', identifier: 'alice', reason: 'bad_password', actor: null });
    expect(ev.ip).to.match(/127\.0\.0\.1$/);
    const request = await eventually(async () => (await events({ kind: 'request', requestId }))[0]);
    expect(request.actor).to.equal(null);
    expect(request.outcome).to.equal('failure');
  });

  it('records a logout with the user as actor', async () => {
    const res = await post(`${server.url}/logout`, {});
    expect(res.status).to.equal(200);
    const ev = await one({ kind: 'logout', requestId: res.headers.get('x-request-id') });
    expect(ev).to.include({ outcome: 'success', provider: 'local', identifier: 'alice' });
    expect(ev.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'explicit' });
  });

  it('takes the request fields from ctx when called outside the async context', async () => {
    const res = await post(`${server.url}/detached-login`, {});
    expect(res.status).to.equal(200);
    const ev = await one({ kind: 'login', identifier: 'detached' });
    expect(ev.requestId).to.equal(res.headers.get('x-request-id'));
    expect(ev.userAgent).to.equal('login-test/1.0');
    expect(ev.actor).to.deep.equal({ id: 'u-detached', via: 'explicit' });
  });

  it('records logins outside any request with null request fields', async () => {
    await auditor.loginSucceeded({ user: 'u-cli', provider: 'cli', identifier: 'cli-user' });
    const ev = await one({ kind: 'login', identifier: 'cli-user' });
    expect(ev).to.include({ requestId: null, ip: null, userAgent: null, provider: 'cli' });
    expect(ev.actor).to.deep.equal({ id: 'u-cli', via: 'explicit' });
  });

  it('rejects a login without a user id and a failure without a reason', async () => {
    let err: unknown = null;
    await auditor.loginSucceeded({ user: { name: 'no id' } }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(TypeError);
    err = null;
    await auditor.loginFailed({ identifier: 'x', reason: '' }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(TypeError);
    err = null;
    await auditor.logout({ user: undefined }).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(TypeError);
  });

  it('drops stray fields and redacts credential-like meta keys', async () => {
    const input = {
      identifier: 'stray',
      reason: 'bad_password',
      password: 'stray-password-value',
      token: 'stray-token-value',
      meta: { password: 'meta-password-value', nested: { apiToken: 'nested-token-value', 'dotted.key': 1 }, attempt: 3 },
    } as LoginFailedInput;
    await auditor.loginFailed(input);
    const ev = await one({ kind: 'login_failed', identifier: 'stray' });
    const raw = ev as unknown as Record<string, unknown>;
    expect(raw).to.not.have.property('password');
    expect(raw).to.not.have.property('token');
    expect(ev.meta).to.deep.equal({ password: '[REDACTED]', nested: { apiToken: '[REDACTED]', 'dotted%2Ekey': 1 }, attempt: 3 });
    expect(JSON.stringify(ev)).to.not.match(/stray-password-value|stray-token-value|meta-password-value|nested-token-value/);
  });

  describe('signals emitter', () => {
    it('records login, login_failed and logout emitted on audit.signals, with the request id', async () => {
      for (const kind of ['login', 'login_failed', 'logout']) {
        const res = await post(`${server.url}/signal/${kind}`, { reason: 'custom_reason' });
        expect(res.status).to.equal(200);
        const ev = await one({ kind, provider: 'custom', requestId: res.headers.get('x-request-id') });
        expect(ev.identifier).to.equal('sig');
        if (kind === 'login_failed') expect(ev).to.include({ reason: 'custom_reason', outcome: 'failure', actor: null });
        else expect(ev.actor).to.deep.equal({ id: 'u-sig', name: 'sig', via: 'explicit' });
      }
    });

    it('never throws into the emitter, and reports a bad input as an auditor error', async () => {
      const before = errors.length;
      const res = await post(`${server.url}/signal/broken`, {});
      expect(res.status).to.equal(200);
      await eventually(() => errors.length > before);
      expect(errors[errors.length - 1]).to.be.instanceOf(TypeError);
      expect(() => auditor.signals.emit('login_failed', { identifier: null, reason: 42 as unknown as string })).to.not.throw();
    });

    it('a fire-and-forget emit is stored once flush() resolves', async () => {
      auditor.signals.emit('login', { user: { id: 'u-ff' }, provider: 'custom', identifier: 'fire-and-forget' });
      await auditor.flush();
      expect(await auditor.model.countDocuments({ identifier: 'fire-and-forget' })).to.equal(1);
    });
  });

  describe('jsonwebtoken adapter', () => {
    it('signs a token and emits login; the token then names the actor of later requests', async () => {
      const res = await post(`${server.url}/token`, { username: 'alice', password: 'correct horse' });
      expect(res.status).to.equal(200);
      const { token } = (await res.json()) as { token: string };
      const payload = jwt.verify(token, SECRET, { algorithms: ['HS256'] }) as jwt.JwtPayload;
      expect(payload).to.include({ sub: 'u-alice', name: 'alice' });
      const ev = await one({ kind: 'login', provider: 'jwt', requestId: res.headers.get('x-request-id') });
      expect(ev).to.include({ identifier: 'alice', outcome: 'success' });
      expect(ev.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'explicit' });

      const next = await fetch(`${server.url}/whoami`, { headers: { authorization: `Bearer ${token}` } });
      const request = await eventually(async () => (await events({ kind: 'request', requestId: next.headers.get('x-request-id') }))[0]);
      expect(request.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'jwt' });
    });

    it('emits login_failed on bad credentials and issues no token', async () => {
      const res = await post(`${server.url}/token`, { username: 'alice', password: 'nope' });
      expect(res.status).to.equal(401);
      const ev = await one({ kind: 'login_failed', provider: 'jwt', requestId: res.headers.get('x-request-id') });
      expect(ev).to.include({ identifier: 'alice', reason: 'bad_credentials', actor: null });
      const missing = await post(`${server.url}/token`, { username: 'alice' });
      expect(missing.status).to.equal(401);
      const ev2 = await one({ kind: 'login_failed', provider: 'jwt', requestId: missing.headers.get('x-request-id') });
      expect(ev2.reason).to.equal('missing_credentials');
    });

    it('takes the identity claims from the recorded actor only, whatever claims() returns', async () => {
      const issue = jwtLogin({
        signals: auditor,
        secret: SECRET,
        verify: () => ({ id: 'u-claims', username: 'claims-user' }),
        claims: () => ({ id: 'u-admin', _id: 'u-admin', sub: 'u-admin', username: 'admin', name: 'admin', email: 'admin@example.com', role: 'editor' }),
      });
      const result = await issue({ identifier: 'claims-user', password: 'pw' });
      expect(result).to.not.equal(null);
      const ev = await one({ kind: 'login', identifier: 'claims-user' });
      expect(ev.actor).to.deep.equal({ id: 'u-claims', name: 'claims-user', via: 'explicit' });
      const payload = jwt.verify(result?.token ?? '', SECRET, { algorithms: ['HS256'] }) as jwt.JwtPayload;
      expect(payload).to.include({ sub: 'u-claims', name: 'claims-user', role: 'editor', email: 'admin@example.com' });
      expect(payload).to.not.have.any.keys('id', '_id', 'username');

      const next = await fetch(`${server.url}/whoami`, { headers: { authorization: `Bearer ${result?.token ?? ''}` } });
      const request = await eventually(async () => (await events({ kind: 'request', requestId: next.headers.get('x-request-id') }))[0]);
      expect(request.actor).to.deep.equal({ id: 'u-claims', name: 'claims-user', via: 'jwt' });
    });

    it('drops an email claim that would become the name of an actor without one', async () => {
      const issue = jwtLogin({ signals: auditor, secret: SECRET, verify: () => ({ id: 'u-noname' }), claims: () => ({ email: 'other@example.com' }) });
      const result = await issue({ identifier: 'noname', password: 'pw' });
      const payload = jwt.verify(result?.token ?? '', SECRET, { algorithms: ['HS256'] }) as jwt.JwtPayload;
      expect(payload.sub).to.equal('u-noname');
      expect(payload).to.not.have.any.keys('email', 'name');
    });

    it('records login_failed with reason sign_error when claims() or signing throws, and rethrows', async () => {
      const boom = new Error('claims boom');
      const throwing = jwtLogin({ signals: auditor, secret: SECRET, verify: () => ({ id: 'u-sign' }), claims: () => {
        throw boom;
      } });
      let err: unknown = null;
      await throwing({ identifier: 'sign-claims', password: 'pw' }).catch((e: unknown) => (err = e));
      expect(err).to.equal(boom);
      expect(await events({ kind: 'login', identifier: 'sign-claims' })).to.have.length(0);
      expect(await one({ kind: 'login_failed', identifier: 'sign-claims' })).to.include({ reason: 'sign_error', provider: 'jwt', actor: null });

      // RS256 with an HMAC string: jsonwebtoken refuses to sign.
      const badKey = jwtLogin({ signals: auditor, secret: SECRET, algorithm: 'RS256', verify: () => ({ id: 'u-sign' }) });
      err = null;
      await badKey({ identifier: 'sign-key', password: 'pw' }).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(Error);
      expect(await one({ kind: 'login_failed', identifier: 'sign-key' })).to.include({ reason: 'sign_error' });
      expect(await events({ kind: 'login', identifier: 'sign-key' })).to.have.length(0);
    });

    it('records login_failed with reason verify_error when verify() returns a user without an id', async () => {
      const issue = jwtLogin({ signals: auditor, secret: SECRET, verify: () => ({ name: 'no id' }) });
      let err: unknown = null;
      await issue({ identifier: 'no-id-user', password: 'pw' }).catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(TypeError);
      expect(await one({ kind: 'login_failed', identifier: 'no-id-user' })).to.include({ reason: 'verify_error' });
    });

    it('validates its options', () => {
      expect(() => jwtLogin({ signals: auditor, secret: '', verify: () => null })).to.throw(TypeError, /"secret"/);
      expect(() => jwtLogin({ signals: {} as Auditor, secret: 's', verify: () => null })).to.throw(TypeError, /"signals"/);
      expect(() => jwtLogin({ signals: auditor, secret: 's', verify: () => null, algorithm: 'none' as unknown as JwtAlgorithm })).to.throw(TypeError, /"algorithm"/);
      expect(() => jwtLogin({ signals: auditor, secret: 's', verify: () => null, algorithm: 'EdDSA' as unknown as JwtAlgorithm })).to.throw(TypeError, /"algorithm"/);
      expect(() => jwtLogin({ signals: auditor, secret: 's', verify: () => null, provider: '' })).to.throw(TypeError, /"provider"/);
      expect(() => jwtLogin({ signals: auditor, secret: 's', verify: () => null, issuer: 42 as unknown as string })).to.throw(TypeError, /"issuer"/);
      expect(() => jwtLogin(null as unknown as Parameters<typeof jwtLogin>[0])).to.throw(TypeError, /jwtLogin options/);
    });
  });
});
