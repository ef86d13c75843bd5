import { expect } from 'chai';
import Koa from 'koa';
import { mongo } from 'mongoose';
import { auditRouter, type Auditor, type QueryFilter } from '../lib/index.js';
import { eventToJson } from '../lib/core/json.js';
import { ids, newestFirst, sampleEvents } from './support/events.js';
import { useFixture, type Running } from './support/helpers.js';

interface Page {
  items: { _id: string; ts: string; kind: string; [k: string]: unknown }[];
  next: string | null;
}

describe('HTTP API (auditRouter)', () => {
  const fx = useFixture('router', { connection: { monitorCommands: true } });
  let a: Auditor;
  let server: Running;
  /** Commands the audit collection received, to prove a refused request reads nothing. */
  const reads: string[] = [];
  const all = sampleEvents(140);
  const admin = { headers: { 'x-test-role': 'admin' } };

  const get = async (path: string, init: RequestInit = admin): Promise<{ status: number; body: Record<string, unknown> & Page; res: Response }> => {
    const res = await fetch(`${server.url}${path}`, { redirect: 'manual', ...init });
    const text = await res.text();
    let body: unknown = null;
    try {
      body = JSON.parse(text);
    } catch {
      body = { text };
    }
    return { status: res.status, body: body as Record<string, unknown> & Page, res };
  };

  before(async () => {
    fx.conn.getClient().on('commandStarted', (ev) => {
      const target = (ev.command as Record<string, unknown>)[ev.commandName];
      if (target === 'r_events' && ev.commandName !== 'insert' && ev.commandName !== 'createIndexes') reads.push(ev.commandName);
    });
    a = fx.auditor({ collection: 'r_events' });
    await a.ready();
    await a.model.collection.insertMany(all);

    const app = new Koa();
    app.use(a());
    // The app's own authentication, standing in for a session or token check.
    app.use(async (ctx, next) => {
      const role = ctx.get('x-test-role');
      if (role !== '') ctx.state.user = { id: `${role}-1`, role };
      await next();
    });
    const router = auditRouter({ auditor: a, prefix: '/audit', authorize: (ctx) => ctx.state.user?.role === 'admin' });
    app.use(router.routes());
    server = await fx.listen(app);
  });

  it('requires authorize (and checks its other options) at construction', () => {
    expect(() => auditRouter({ auditor: a } as never)).to.throw(TypeError, /authorize/);
    expect(() => auditRouter({ auditor: a, authorize: true } as never)).to.throw(TypeError, /authorize/);
    expect(() => auditRouter({ authorize: () => true } as never)).to.throw(TypeError, /auditor/);
    expect(() => auditRouter({ auditor: a, authorize: () => true, prefix: 'audit' })).to.throw(TypeError, /prefix/);
    expect(() => auditRouter({ auditor: a, authorize: () => true, perfix: '/x' } as never)).to.throw(TypeError, /perfix/);
    expect(() => auditRouter(undefined as never)).to.throw(TypeError);
  });

  it('lists events newest first as JSON, with _id as hex and ts as ISO, paged by `next`', async () => {
    const older = '2026-06-01T00:00:00Z'; // before the request events this test run itself produces
    const first = await get(`/audit/api/events?limit=50&to=${older}`);
    expect(first.status).to.equal(200);
    expect(first.res.headers.get('content-type')).to.match(/^application\/json/);
    expect(first.res.headers.get('cache-control')).to.equal('no-store');
    const direct = await a.query({ limit: 50, to: new Date(older) });
    expect(first.body.items).to.deep.equal(JSON.parse(JSON.stringify(direct.items.map(eventToJson))));
    expect(first.body.items[0]._id).to.match(/^[0-9a-f]{24}$/);
    expect(first.body.items[0].ts).to.equal(all[139].ts.toISOString());
    const seen = first.body.items.map((e) => e._id);
    let next = first.body.next;
    while (next !== null) {
      const p = await get(`/audit/api/events?limit=50&to=${older}&after=${encodeURIComponent(next)}`);
      expect(p.status).to.equal(200);
      seen.push(...p.body.items.map((e) => e._id));
      next = p.body.next;
    }
    expect(seen).to.deep.equal(ids([...all].sort(newestFirst)));
  });

  it('maps every query parameter onto the filter', async () => {
    const from = all[20].ts.toISOString();
    const to = all[120].ts.toISOString();
    const cases: [string, QueryFilter][] = [
      ['kind=update', { kind: 'update' }],
      ['kind=login&kind=logout', { kind: ['login', 'logout'] }],
      ['actor=u2', { actorId: 'u2' }],
      ['actorId=u2', { actorId: 'u2' }],
      ['model=Post', { model: 'Post' }],
      ['model=Post&documentId=d3', { model: 'Post', documentId: 'd3' }],
      ['documentId=d3', { documentId: 'd3' }],
      ['requestId=r5', { requestId: 'r5' }],
      ['outcome=failure', { outcome: 'failure' }],
      ['ip=10.0.0.3', { ip: '10.0.0.3' }],
      [`from=${from}&to=${to}`, { from: new Date(from), to: new Date(to) }],
      [`kind=request&outcome=failure&actor=u0&to=${to}`, { kind: 'request', outcome: 'failure', actorId: 'u0', to: new Date(to) }],
      ['from=2026-01-01&to=2026-01-01T00:00:30.000%2B00:00', { from: new Date('2026-01-01T00:00:00Z'), to: new Date('2026-01-01T00:00:30Z') }],
    ];
    for (const [qs, filter] of cases) {
      const r = await get(`/audit/api/events?limit=500&${qs}`);
      expect(r.status, qs).to.equal(200);
      const want = ids((await a.query({ ...filter, limit: 500 })).items);
      expect(want.length, `${qs} matches something`).to.be.greaterThan(0);
      expect(r.body.items.map((e) => e._id), qs).to.deep.equal(want);
    }
  });

  it('answers 400 naming the malformed parameter', async () => {
    const cases: [string, string][] = [
      ['kind=bogus', 'kind'],
      ['kind=update&kind=', 'kind'],
      ['outcome=ok', 'outcome'],
      ['limit=0', 'limit'],
      ['limit=501', 'limit'],
      ['limit=ten', 'limit'],
      ['limit=1e2', 'limit'],
      ['limit=5&limit=6', 'limit'],
      ['from=yesterday', 'from'],
      ['from=2026-01-01T10:00', 'from'],
      ['to=2026-13-45', 'to'],
      ['from=2026-02-30', 'from'],
      ['to=2026-04-31T10:00:00Z', 'to'],
      ['from=2026-01-01T24:00:00Z', 'from'],
      ['after=garbage', 'after'],
      [`after=${'A'.repeat(27)}x`, 'after'],
      ['actor=', 'actor'],
      ['model=Post&model=User', 'model'],
      ['documentId=', 'documentId'],
      ['documentId=d1&documentId=d2', 'documentId'],
      [`requestId=${'x'.repeat(5000)}`, 'requestId'],
      ['ip=', 'ip'],
      ['sort=ts', 'sort'],
      ['__proto__=1', '__proto__'],
    ];
    for (const [qs, name] of cases) {
      const r = await get(`/audit/api/events?${qs}`);
      expect(r.status, qs).to.equal(400);
      expect(String(r.body.error), qs).to.include(`"${name}"`);
    }
  });

  it('serves one event by id, 404 for an unknown id, 400 for a malformed one', async () => {
    const e = all[42];
    const ok = await get(`/audit/api/events/${e._id.toHexString()}`);
    expect(ok.status).to.equal(200);
    expect(ok.body._id).to.equal(e._id.toHexString());
    expect(ok.body.ts).to.equal(e.ts.toISOString());
    expect(ok.body.kind).to.equal(e.kind);
    const missing = await get(`/audit/api/events/${new mongo.ObjectId().toHexString()}`);
    expect(missing.status).to.equal(404);
    expect(String(missing.body.error)).to.match(/no event/);
    for (const bad of ['123', 'zzzzzzzzzzzzzzzzzzzzzzzz', `${e._id.toHexString()}0`, '%7B%22%24ne%22%3A1%7D']) {
      const r = await get(`/audit/api/events/${bad}`);
      expect(r.status, bad).to.equal(400);
      expect(String(r.body.error)).to.include('"id"');
    }
  });

  it("serves a document's history, oldest first, through auditor.history", async () => {
    const docId = new mongo.ObjectId().toHexString();
    const t0 = Date.UTC(2026, 2, 1);
    const changes = ['create', 'update', 'update', 'delete'].map((kind, i) => ({
      ...sampleEvents(1)[0],
      ts: new Date(t0 + i * 60_000),
      kind,
      outcome: 'success',
      model: 'HistPost',
      collectionName: 'histposts',
      documentId: docId,
      operation: kind === 'create' ? 'save' : kind === 'update' ? 'updateOne' : 'deleteOne',
      changes: [{ path: 'title', from: i === 0 ? null : `t${i - 1}`, to: kind === 'delete' ? null : `t${i}` }],
    }));
    await a.model.collection.insertMany([...changes].reverse());
    const r = await get(`/audit/api/history/HistPost/${docId}`);
    expect(r.status, JSON.stringify(r.body)).to.equal(200);
    expect(r.body.model).to.equal('HistPost');
    expect(r.body.documentId).to.equal(docId);
    expect(r.body.items.map((e) => e._id)).to.deep.equal(ids(changes));
    expect(r.body.items[0].ts).to.equal(new Date(t0).toISOString());
  });

  it('answers 403 to a caller authorize refuses, on every route, without reading the audit trail', async () => {
    const id = all[0]._id.toHexString();
    for (const init of [{}, { headers: { 'x-test-role': 'viewer' } }]) {
      reads.length = 0;
      for (const path of ['/audit/api/events', '/audit/api/events?kind=update', `/audit/api/events/${id}`, `/audit/api/history/Post/${id}`, '/audit/', '/audit']) {
        const r = await get(path, init);
        expect(r.status, path).to.equal(403);
      }
      expect(reads, 'no command read the audit collection').to.deep.equal([]);
    }
    await get('/audit/api/events?limit=1');
    expect(reads, 'the probe does see reads').to.include('find');
  });

  it('treats anything but true from authorize as a refusal, and awaits an async authorize', async () => {
    const verdicts: unknown[] = [1, 'yes', {}, null, undefined, Promise.resolve(false), Promise.resolve(true)];
    for (const verdict of verdicts) {
      const app = new Koa();
      app.use(auditRouter({ auditor: a, prefix: '/x', authorize: () => verdict as boolean }).routes());
      const s = await fx.listen(app);
      const res = await fetch(`${s.url}/x/api/events?limit=1`);
      expect(res.status, String(verdict)).to.equal(verdict instanceof Promise && (await verdict) === true ? 200 : 403);
    }
  });

  it('serves the viewer page with a strict CSP, and redirects {prefix} to {prefix}/', async () => {
    const page = await get('/audit/');
    expect(page.status).to.equal(200);
    expect(page.res.headers.get('content-type')).to.match(/^text\/html/);
    expect(String(page.body.text)).to.include('<title>Audit trail</title>');
    const csp = page.res.headers.get('content-security-policy') ?? '';
    expect(csp).to.include("default-src 'none'");
    expect(csp).to.match(/script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(csp).to.not.include('unsafe-inline');
    expect(page.res.headers.get('x-frame-options')).to.equal('DENY');
    const bare = await get('/audit?kind=update');
    expect(bare.status).to.equal(302);
    expect(bare.res.headers.get('location')).to.equal('/audit/?kind=update');
  });

  it('audits its own reads like any request (the app middleware sees them)', async () => {
    const rid = `read-${Date.now()}`;
    expect((await get('/audit/api/events?kind=update&limit=3', { headers: { ...admin.headers, 'x-request-id': rid } })).status).to.equal(200);
    expect((await get('/audit/api/events?limit=3', { headers: { 'x-test-role': 'viewer', 'x-request-id': `${rid}-denied` } })).status).to.equal(403);
    expect((await get('/audit/api/events?limit=0', { headers: { ...admin.headers, 'x-request-id': `${rid}-bad` } })).status).to.equal(400);
    await a.flush();
    const [ok] = (await a.query({ clientRequestId: rid })).items;
    expect(ok.kind).to.equal('request');
    expect(ok.outcome).to.equal('success');
    expect(ok.actor).to.deep.include({ id: 'admin-1' });
    expect(ok.http).to.deep.include({ method: 'GET', path: '/audit/api/events', status: 200 });
    expect(ok.http?.query).to.equal('kind=update&limit=3');
    const [denied] = (await a.query({ clientRequestId: `${rid}-denied` })).items;
    expect(denied.outcome).to.equal('failure');
    expect(denied.http?.status).to.equal(403);
    expect(denied.actor).to.deep.include({ id: 'viewer-1' });
    const [bad] = (await a.query({ clientRequestId: `${rid}-bad` })).items;
    expect(bad.http?.status).to.equal(400);
  });

  it('mounts at another prefix, or at the root', async () => {
    for (const [prefix, path] of [['/admin/audit/', '/admin/audit/api/events?limit=2'], ['', '/api/events?limit=2']] as const) {
      const app = new Koa();
      app.use(auditRouter({ auditor: a, prefix, authorize: () => true }).routes());
      const s = await fx.listen(app);
      const res = await fetch(`${s.url}${path}`);
      expect(res.status, prefix).to.equal(200);
      expect(((await res.json()) as Page).items).to.have.length(2);
      expect((await fetch(`${s.url}${prefix.replace(/\/$/, '')}/`)).status).to.equal(200);
    }
  });
});
