import { expect } from 'chai';
import Router from '@koa/router';
import Koa, { type Context, type Next } from 'koa';
import passportModule, { KoaPassport } from 'koa-passport';
import session from 'koa-session';
import { Strategy as BearerStrategy } from 'passport-http-bearer';
import { Strategy as LocalStrategy } from 'passport-local';
import { auditPassport, type AuditEvent, type Auditor } from '../lib/index.js';
import { storedEvents, useFixture, type Running } from './support/helpers.js';

const PASSWORD = 'alice-pw-SENTINEL-73c1';
const TOKEN = 'bearer-token-SENTINEL-5be0';
const ECHOED_TOKEN = 'echoed-token-SENTINEL-8d2f';
const USERS = [{ id: 'u-alice', username: 'alice', password: PASSWORD, token: TOKEN }];

/** A JSON and form body parser, so that passport-local finds the credentials on ctx.request.body. */
async function body(ctx: Context, next: Next): Promise<void> {
  if (ctx.method === 'POST') {
    let text = '';
    for await (const chunk of ctx.req as AsyncIterable<Buffer>) text += chunk.toString('utf8');
    const r = ctx.request as { body?: unknown };
    r.body = text === '' ? {} : ctx.is('json') ? JSON.parse(text) : Object.fromEntries(new URLSearchParams(text));
  }
  await next();
}

describe('auditPassport: koa-passport strategies', () => {
  const fx = useFixture('passport');
  let auditor: Auditor;
  let server: Running;
  const errors: unknown[] = [];

  const events = (filter: Record<string, unknown>): Promise<AuditEvent[]> => storedEvents(auditor, filter);
  const logins = (requestId: string | null): Promise<AuditEvent[]> =>
    events({ requestId, kind: { $in: ['login', 'login_failed', 'logout'] } });
  const post = (path: string, data: unknown, headers: Record<string, string> = {}): Promise<Response> =>
    fetch(`${server.url}${path}`, { method: 'POST', redirect: 'manual', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(data) });
  const rid = (res: Response): string => res.headers.get('x-request-id') ?? '';

  before(async () => {
    auditor = fx.auditor({
      collection: 'passport_events',
      loginFailures: { max: 1000, windowMs: 60_000 },
    });
    auditor.on('error', (err) => errors.push(err));

    const passport = new KoaPassport();
    passport.use(new LocalStrategy((username, password, done) => {
      const user = USERS.find((u) => u.username === username);
      if (user === undefined) return done(null, false, { message: 'Unknown user.' });
      if (username === 'broken') return done(new Error('db down'));
      if (user.password !== password) return done(null, false, { message: 'Incorrect password.' });
      return done(null, { id: user.id, username: user.username });
    }));
    // The error echoes the password it was given (the request event keeps an error's message as thrown: scrubbing
    // values there is the business of the request middleware, so this password is not a SENTINEL).
    passport.use('broken', new LocalStrategy((_u, password, done) => done(new Error(`directory down for ${password}`))));
    passport.use(new BearerStrategy((token, done) => {
      const user = USERS.find((u) => u.token === token);
      // A careless strategy echoing the token in its message: the stored reason must not carry it.
      if (user === undefined) return done(null, false, { message: `no such token ${token}`, scope: '' });
      return done(null, { id: user.id, username: user.username });
    }));
    passport.serializeUser((user, done) => done(null, (user as { id: string }).id));
    passport.deserializeUser((id, done) => {
      const u = USERS.find((x) => x.id === id);
      done(null, u === undefined ? false : { id: u.id, username: u.username });
    });
    expect(auditPassport(passport, { auditor })).to.equal(passport);
    expect(auditPassport(passport, { auditor }), 'a second call with the same auditor is harmless').to.equal(passport);

    const app = new Koa();
    app.silent = true; // the strategy error below is expected
    app.keys = ['passport-test-session-key'];
    app.use(auditor());
    app.use(session({ key: 'sid', signed: true }, app));
    app.use(body);
    app.use(passport.initialize());
    app.use(passport.session());
    const router = new Router();
    router.post('/login', passport.authenticate('local'), (ctx) => {
      ctx.body = { ok: true };
    });
    router.post('/login-stateless', passport.authenticate('local', { session: false }), (ctx) => {
      ctx.body = { ok: true };
    });
    router.post('/login-callback', (ctx, next) =>
      passport.authenticate('local', async (err: unknown, user: unknown, info: { message?: string } | undefined) => {
        if (err) throw err;
        if (!user) {
          ctx.status = 401;
          ctx.body = { error: info?.message };
          return;
        }
        await ctx.login(user);
        ctx.body = { ok: true };
      })(ctx, next));
    router.post('/login-broken', passport.authenticate('broken', { session: false }), (ctx) => {
      ctx.body = { ok: true };
    });
    router.get('/api/me', passport.authenticate('bearer', { session: false }), (ctx) => {
      ctx.body = ctx.state.user;
    });
    router.post('/either', passport.authenticate(['bearer', 'local'], { session: false }), (ctx) => {
      ctx.body = ctx.state.user;
    });
    router.get('/whoami', (ctx) => {
      ctx.body = { user: ctx.state.user ?? null };
    });
    router.post('/logout', async (ctx) => {
      await ctx.logout();
      ctx.body = { ok: true };
    });
    app.use(router.routes());
    server = await fx.listen(app);
  });

  it('local strategy with sessions: login, the session user, logout', async () => {
    const res = await post('/login', { username: 'alice', password: PASSWORD });
    expect(res.status).to.equal(200);
    const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
    const [login] = await logins(rid(res));
    expect(login).to.deep.include({ kind: 'login', outcome: 'success', provider: 'local', identifier: 'alice' });
    expect(login.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'explicit' });
    const [request] = await events({ requestId: rid(res), kind: 'request' });
    expect(request.actor, 'the login request is attributed to the user who logged in').to.deep.include({ id: 'u-alice' });

    const who = await fetch(`${server.url}/whoami`, { headers: { cookie } });
    expect(await who.json()).to.deep.equal({ user: { id: 'u-alice', username: 'alice' } });
    const [whoEvent] = await events({ requestId: rid(who), kind: 'request' });
    expect(whoEvent.actor).to.deep.equal({ id: 'u-alice', name: 'alice', via: 'state' });

    const out = await post('/logout', {}, { cookie });
    expect(out.status).to.equal(200);
    const list = await logins(rid(out));
    expect(list.map((e) => [e.kind, e.provider, e.identifier, e.actor?.id])).to.deep.equal([['logout', 'passport', 'alice', 'u-alice']]);
  });

  it('local strategy: a wrong password and missing credentials, with the strategy\'s reasons', async () => {
    const bad = await post('/login', { username: 'alice', password: 'wrong-SENTINEL' });
    expect(bad.status).to.equal(401);
    const [ev] = await logins(rid(bad));
    expect(ev).to.deep.include({ kind: 'login_failed', outcome: 'failure', provider: 'local', identifier: 'alice', reason: 'Incorrect password.', actor: null });
    expect(ev.meta).to.deep.equal({ strategy: 'local' });

    const unknown = await post('/login', { username: 'mallory', password: 'x' });
    expect((await logins(rid(unknown))).map((e) => [e.reason, e.identifier])).to.deep.equal([['Unknown user.', 'mallory']]);

    const missing = await post('/login', {});
    expect(missing.status).to.equal(400);
    const [m] = await logins(rid(missing));
    expect(m).to.deep.include({ kind: 'login_failed', reason: 'Missing credentials', identifier: null });
    expect(m.meta).to.deep.equal({ strategy: 'local', status: 400 });
  });

  it('sessions off and a custom callback: the same events', async () => {
    const ok = await post('/login-stateless', { username: 'alice', password: PASSWORD });
    expect(ok.status).to.equal(200);
    expect(ok.headers.getSetCookie().join(';')).to.not.include('sid=');
    expect((await logins(rid(ok))).map((e) => [e.kind, e.provider, e.identifier])).to.deep.equal([['login', 'local', 'alice']]);

    const cb = await post('/login-callback', { username: 'alice', password: PASSWORD });
    expect(cb.status).to.equal(200);
    expect((await logins(rid(cb))).map((e) => [e.kind, e.provider, e.identifier])).to.deep.equal([['login', 'local', 'alice']]);

    const cbBad = await post('/login-callback', { username: 'alice', password: 'nope' });
    expect(cbBad.status).to.equal(401);
    expect(await cbBad.json()).to.deep.equal({ error: 'Incorrect password.' });
    expect((await logins(rid(cbBad))).map((e) => [e.kind, e.reason, e.identifier])).to.deep.equal([['login_failed', 'Incorrect password.', 'alice']]);
  });

  it('a strategy error is a login_failed with reason strategy_error, its message scrubbed', async () => {
    const res = await post('/login-broken', { username: 'alice', password: 'broken-route-password' });
    expect(res.status).to.equal(500);
    const [ev] = await logins(rid(res));
    expect(ev).to.deep.include({ kind: 'login_failed', provider: 'broken', reason: 'strategy_error', identifier: 'alice' });
    expect(ev.meta).to.deep.equal({ strategy: 'broken', error: 'Error', message: 'directory down for [REDACTED]' });
  });

  it('bearer strategy: success, a bad token, no token', async () => {
    // An OAuth strategy's callback carries `?code=`: while a strategy runs, the request event keeps it redacted.
    const ok = await fetch(`${server.url}/api/me?code=oauth-code-SENTINEL-1&x=1`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(ok.status).to.equal(200);
    const [okRequest] = await events({ requestId: rid(ok), kind: 'request' });
    expect(okRequest.http?.query).to.equal('code=[REDACTED]&x=1');
    const [login] = await logins(rid(ok));
    expect(login).to.deep.include({ kind: 'login', provider: 'bearer', identifier: 'alice' });
    expect(login.actor).to.deep.include({ id: 'u-alice' });

    const bad = await fetch(`${server.url}/api/me`, { headers: { authorization: `Bearer ${ECHOED_TOKEN}` } });
    expect(bad.status).to.equal(401);
    const [b] = await logins(rid(bad));
    expect(b).to.deep.include({
      kind: 'login_failed',
      provider: 'bearer',
      identifier: null,
      reason: 'Bearer realm="Users", error="invalid_token", error_description="no such token [REDACTED]"',
    });

    const none = await fetch(`${server.url}/api/me`);
    expect(none.status).to.equal(401);
    const [n] = await logins(rid(none));
    expect(n).to.deep.include({ kind: 'login_failed', provider: 'bearer', reason: 'Bearer realm="Users"' });
  });

  it('a chain of strategies: an earlier failure does not count when a later one succeeds', async () => {
    const ok = await post('/either', { username: 'alice', password: PASSWORD });
    expect(ok.status).to.equal(200);
    expect((await logins(rid(ok))).map((e) => [e.kind, e.provider])).to.deep.equal([['login', 'local']]);

    const both = await post('/either', { username: 'alice', password: 'nope' }, { authorization: 'Bearer nope-token' });
    expect(both.status).to.equal(401);
    expect((await logins(rid(both))).map((e) => [e.kind, e.provider, e.reason])).to.deep.equal([
      ['login_failed', 'bearer', 'Bearer realm="Users", error="invalid_token", error_description="no such token [REDACTED]"'],
      ['login_failed', 'local', 'Incorrect password.'],
    ]);
  });

  it('options are checked', async () => {
    expect(() => auditPassport(passportModule, { auditor: {} as Auditor })).to.throw(TypeError, /"auditor"/);
    expect(() => auditPassport({} as typeof passportModule, { auditor })).to.throw(TypeError, /"passport"/);
    expect(() => auditPassport(new KoaPassport(), { auditor, bogus: 1 } as never)).to.throw(TypeError, /"bogus"/);
    const other = fx.auditor({ collection: 'passport_other' });
    const p = new KoaPassport();
    auditPassport(p, { auditor });
    expect(() => auditPassport(p, { auditor: other })).to.throw(TypeError, /already audited/);
  });

  it('stores no password or token anywhere', async () => {
    const all = await events({});
    expect(all.length).to.be.above(10);
    const text = JSON.stringify(all);
    const leak = all.find((e) => JSON.stringify(e).includes('SENTINEL'));
    expect(leak, JSON.stringify(leak)).to.equal(undefined);
    expect(text).to.not.include('SENTINEL');
    expect(text).to.not.include('nope-token');
    expect(errors).to.deep.equal([]);
  });
});
