import { expect } from 'chai';
import Router from '@koa/router';
import Koa from 'koa';
import { auditRouter, KNOWN_SECURITY_NAMES, type AuditEvent, type Auditor } from '../lib/index.js';
import { Writable } from 'node:stream';
import { main as cli } from '../lib/read/cli.js';
import { storedEvents, useFixture, type Running } from './support/helpers.js';

// An application's own security event names, added to the vocabulary the documented way.
declare module '../lib/index.js' {
  interface SecurityEventNames {
    report_exported: true;
  }
}

describe('security events (OWASP Logging Vocabulary)', () => {
  const fx = useFixture('security');
  let auditor: Auditor;
  let server: Running;
  let plain: Running;

  const events = (filter: Record<string, unknown>): Promise<AuditEvent[]> => storedEvents(auditor, filter);
  const rid = (res: Response): string => res.headers.get('x-request-id') ?? '';
  const as = (role: string): RequestInit => ({ headers: { 'x-test-user': `u-${role}`, 'x-test-role': role } });

  function app(authzFail: boolean): Koa {
    const a = new Koa();
    a.silent = true;
    a.use(auditor({ authzFail }));
    a.use(async (ctx, next) => {
      const id = ctx.get('x-test-user');
      if (id !== '') ctx.state.user = { id, username: id.slice(2), role: ctx.get('x-test-role') };
      await next();
    });
    const router = new Router();
    router.post('/password', async (ctx) => {
      await auditor.security('authn_password_change_fail', { reason: 'old password does not match' });
      ctx.status = 400;
    });
    router.post('/users/:id/role', async (ctx) => {
      // A full user document: the target keeps its id and name, never its password hash.
      const target = { _id: ctx.params.id, username: 'carol', passwordHash: '$2b$10$SENTINELhash', role: 'viewer' };
      await auditor.security('authz_change', { ctx, target, from: ['viewer'], to: ['admin'], path: 'roles', reason: 'ticket 7' });
      ctx.body = { ok: true };
    });
    router.get('/admin', (ctx) => {
      if (ctx.state.user?.role !== 'admin') ctx.throw(403, 'admins only');
      ctx.body = 'ok';
    });
    router.get('/me', (ctx) => {
      if (ctx.state.user === undefined) ctx.status = 401;
      else ctx.body = ctx.state.user;
    });
    router.get('/limited', async (ctx) => {
      await auditor.security('excess_rate_limit_exceeded', { target: { type: 'route', id: '/limited' }, meta: { limit: 10, windowMs: 1000 } });
      ctx.status = 429;
    });
    a.use(router.routes());
    a.use(auditRouter({ auditor, prefix: '/audit', authorize: (ctx) => ctx.state.user?.role === 'admin' }).routes());
    return a;
  }

  before(async () => {
    auditor = fx.auditor({ collection: 'security_events' });
    server = await fx.listen(app(true));
    plain = await fx.listen(app(false));
  });

  it('records a named event of kind security, attributed to the request\'s actor', async () => {
    const res = await fetch(`${server.url}/password`, { method: 'POST', ...as('bob') });
    expect(res.status).to.equal(400);
    const list = await events({ requestId: rid(res), kind: 'security' });
    expect(list).to.have.length(1);
    expect(list[0]).to.deep.include({ kind: 'security', name: 'authn_password_change_fail', outcome: 'failure', reason: 'old password does not match' });
    expect(list[0].actor).to.deep.equal({ id: 'u-bob', name: 'bob', via: 'state' });
  });

  it('authz_change keeps from/to as changes and reduces the target to id and name', async () => {
    const res = await fetch(`${server.url}/users/u-carol/role`, { method: 'POST', ...as('admin') });
    expect(res.status).to.equal(200);
    const [ev] = await events({ requestId: rid(res), kind: 'security' });
    expect(ev).to.deep.include({ name: 'authz_change', outcome: 'success', reason: 'ticket 7', target: { id: 'u-carol', name: 'carol' } });
    expect(ev.changes).to.deep.equal([{ path: 'roles', from: ['viewer'], to: ['admin'] }]);
    expect(JSON.stringify(ev)).to.not.include('SENTINEL');
  });

  it('outside a request: the given user is the actor; custom names through declaration merging', async () => {
    await auditor.security('user_deleted', { user: { id: 'u-admin', name: 'admin' }, target: 'u-dave', meta: { password: 'SENTINEL-pw', soft: false } });
    await auditor.security('report_exported', { user: 'svc-reports', outcome: 'success' });
    const [deleted] = await events({ name: 'user_deleted' });
    expect(deleted).to.deep.include({ kind: 'security', outcome: 'success', target: 'u-dave', requestId: null });
    expect(deleted.actor).to.deep.equal({ id: 'u-admin', name: 'admin', via: 'explicit' });
    expect(deleted.meta).to.deep.equal({ password: '[REDACTED]', soft: false });
    const [custom] = await events({ name: 'report_exported' });
    expect(custom.actor).to.deep.equal({ id: 'svc-reports', via: 'explicit' });
    const [system] = await Promise.all([auditor.security('sys_startup'), auditor.flush()]);
    expect(system).to.equal(undefined);
    const [startup] = await events({ name: 'sys_startup' });
    expect(startup.actor).to.deep.equal({ id: 'system', via: 'system' });
  });

  it('tokenRevoked of an API key (not a JWT) or of a malformed JWT: identified by its fingerprint, never stored', async () => {
    await auditor.tokenRevoked({ user: 'svc-keys', token: 'ak_live_SENTINEL_0001', tokenType: 'api_key', reason: 'rotated' });
    await auditor.tokenRevoked({ user: 'svc-keys', token: 'eyJub3QganNvbg.e30.SENTINEL' });
    const list = await events({ name: 'authn_token_revoked', 'actor.id': 'svc-keys' });
    expect(list).to.have.length(2);
    expect(list[0].target).to.deep.equal({ type: 'api_key', id: list[0].meta?.fingerprint });
    expect(list[0]).to.deep.include({ reason: 'rotated', outcome: 'success' });
    expect(list[1].target).to.deep.equal({ type: 'token', id: list[1].meta?.fingerprint });
    expect(JSON.stringify(list)).to.not.include('SENTINEL');
  });

  it('refuses malformed names and inputs with a clear error', async () => {
    // @ts-expect-error not a name of the vocabulary (the type says so; the run time checks only the shape)
    await auditor.security('not_in_vocabulary');
    for (const bad of ['', 'Authz_Fail', 'authz fail', 'a'.repeat(65), '$where', 'authz__fail']) {
      await auditor.security(bad as 'authz_fail').then(() => expect.fail(bad), (err: Error) => expect(err).to.be.instanceOf(TypeError).with.property('message').match(/security event name/));
    }
    await auditor.security('authz_fail', { user: {} }).then(() => expect.fail(), (err: Error) => expect(err.message).to.match(/"user" needs an id/));
    await auditor.security('authz_fail', { outcome: 'maybe' as 'success' }).then(() => expect.fail(), (err: Error) => expect(err.message).to.match(/"outcome"/));
    expect(KNOWN_SECURITY_NAMES).to.include.members(['authz_fail', 'authz_change', 'authn_password_change', 'authn_password_change_fail',
      'authn_mfa_enabled', 'authn_token_created', 'authn_token_revoked', 'user_created', 'user_deleted', 'excess_rate_limit_exceeded']);
  });

  it('authzFail: every 401/403 the app answers is an authz_fail; nothing for other answers or without the option', async () => {
    const forbidden = await fetch(`${server.url}/admin`, as('bob'));
    expect(forbidden.status).to.equal(403);
    const [f] = await events({ requestId: rid(forbidden), kind: 'security' });
    expect(f).to.deep.include({ name: 'authz_fail', outcome: 'failure', reason: 'forbidden (403)', target: { type: 'route', id: '/admin', method: 'GET' } });
    expect(f.actor).to.deep.include({ id: 'u-bob' });

    const anonymous = await fetch(`${server.url}/me`);
    expect(anonymous.status).to.equal(401);
    const [u] = await events({ requestId: rid(anonymous), kind: 'security' });
    expect(u).to.deep.include({ name: 'authz_fail', reason: 'unauthenticated (401)', actor: null });

    const limited = await fetch(`${server.url}/limited`, as('bob'));
    expect(limited.status).to.equal(429);
    expect((await events({ requestId: rid(limited), kind: 'security' })).map((e) => [e.name, e.outcome])).to.deep.equal([['excess_rate_limit_exceeded', 'failure']]);

    for (const res of [await fetch(`${server.url}/admin`, as('admin')), await fetch(`${plain.url}/admin`, as('bob')), await fetch(`${plain.url}/me`)]) {
      expect(await events({ requestId: rid(res), kind: 'security' })).to.deep.equal([]);
    }
  });

  it('auditRouter records its own refusals as authz_fail, once even with authzFail on', async () => {
    for (const base of [server.url, plain.url]) {
      const res = await fetch(`${base}/audit/api/events?kind=security`, as('bob'));
      expect(res.status).to.equal(403);
      const list = await events({ requestId: rid(res), kind: 'security' });
      expect(list).to.have.length(1);
      expect(list[0]).to.deep.include({ name: 'authz_fail', reason: 'auditRouter authorize refused', target: { type: 'audit_trail', id: '/audit/api/events' } });
      expect(list[0].actor).to.deep.include({ id: 'u-bob' });
    }
  });

  it('name is a filter of the query API and the HTTP API, and security a kind', async () => {
    await auditor.flush();
    const page = await auditor.query({ kind: 'security', name: 'authz_fail' });
    expect(page.items.length).to.be.at.least(4);
    expect(page.items.every((e) => e.kind === 'security' && e.name === 'authz_fail')).to.equal(true);

    const res = await fetch(`${server.url}/audit/api/events?kind=security&name=authz_change`, as('admin'));
    expect(res.status).to.equal(200);
    const body = (await res.json()) as { items: { name: string }[] };
    expect(body.items.map((e) => e.name)).to.deep.equal(['authz_change']);

    // The viewer offers the kind and the name as filters.
    const viewer = await (await fetch(`${server.url}/audit/`, as('admin'))).text();
    expect(viewer).to.include('<input type="checkbox" name="kind" value="security">');
    expect(viewer).to.include('<input type="text" name="name"');

    const bad = await fetch(`${server.url}/audit/api/events?name=`, as('admin'));
    expect(bad.status).to.equal(400);
    expect(((await bad.json()) as { error: string }).error).to.match(/parameter "name"/);
    await auditor.query({ name: 7 as unknown as string }).then(() => expect.fail(), (err: Error) => expect(err).to.be.instanceOf(TypeError).with.property('message').match(/"name"/));
  });

  it('koa-audit export takes --name like the other filters', async () => {
    await auditor.flush();
    let out = '';
    let err = '';
    const sink = (add: (t: string) => void): Writable => new Writable({ write(chunk: Buffer, _enc, cb) { add(chunk.toString()); cb(); } });
    const uri = fx.uri;
    const code = await cli(['export', '--uri', uri, '--collection', 'security_events', '--kind', 'security', '--name', 'authz_change'],
      { stdout: sink((t) => (out += t)), stderr: sink((t) => (err += t)) });
    expect(code, err).to.equal(0);
    const lines = out.trimEnd().split('\n').map((l) => JSON.parse(l) as { name: string });
    expect(lines.map((e) => e.name)).to.deep.equal(['authz_change']);
    let csv = '';
    const csvCode = await cli(['export', '--uri', uri, '--collection', 'security_events', '--name', 'authz_change', '--format', 'csv'],
      { stdout: sink((t) => (csv += t)), stderr: sink(() => {}) });
    expect(csvCode).to.equal(0);
    const [header, row] = csv.split('\r\n');
    // The flat CSV (issue 11) has the security event's name after the reason (the change context's columns follow).
    expect(header.endsWith(',reason,name,on_behalf_of_id,tenant,trace_id')).to.equal(true, header);
    expect(row.endsWith(',authz_change,,,')).to.equal(true, row);
  });
});
