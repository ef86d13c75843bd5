/**
 * auditRouter with a tenant-scoped `authorize`: every endpoint (list, filters, event by id, history, config,
 * revert) serves only that tenant's events, over real HTTP; the revert route exists only with authorizeWrite.
 */
import { expect } from 'chai';
import Koa from 'koa';
import { Schema } from 'mongoose';
import { auditRouter, type Auditor } from '../lib/index.js';
import { useFixture, type Running } from './support/helpers.js';

const TRAIL_KINDS: readonly string[] = ['audit_start', 'audit_stop', 'checkpoint', 'prune'];

describe('auditRouter: tenant isolation and the revert route', () => {
  const f = useFixture('tenant_router');
  let a: Auditor;
  let server: Running;
  let readOnly: Running;
  const docs: Record<string, string> = {};
  const events: Record<string, { create: string; update: string }> = {};

  before(async () => {
    a = f.auditor({ collection: 'tr_events' });
    const Post = f.conn.model('TrPost', new Schema({ title: String }).plugin(a.plugin));
    for (const tenant of ['acme', 'globex']) {
      await a.withContext({ tenant, onBehalfOf: { id: `${tenant}-user` } }, async () => {
        const p = await Post.create({ title: `${tenant} v1` });
        await Post.updateOne({ _id: p._id }, { $set: { title: `${tenant} v2` } }).exec();
        docs[tenant] = String(p._id);
      });
    }
    await a.flush();
    for (const tenant of ['acme', 'globex']) {
      const [c, u] = (await a.history('TrPost', docs[tenant])).map((e) => String(e._id));
      events[tenant] = { create: c, update: u };
    }
    const make = (write: boolean): Koa => {
      const app = new Koa();
      app.use(async (ctx, next) => {
        ctx.state.viewer = ctx.get('x-viewer');
        await next();
      });
      const scope = (ctx: Koa.Context) => (ctx.state.viewer === 'root' ? true : ctx.state.viewer === '' ? false : { tenant: ctx.state.viewer as string });
      app.use(auditRouter({ auditor: a, prefix: '/audit', authorize: scope, ...(write ? { authorizeWrite: scope } : {}) }).routes());
      return app;
    };
    server = await f.listen(make(true));
    readOnly = await f.listen(make(false));
  });

  const get = async (path: string, viewer: string, base = server) => {
    const res = await fetch(`${base.url}/audit${path}`, { headers: { 'x-viewer': viewer } });
    return { status: res.status, body: (await res.json().catch(() => null)) as Record<string, unknown> & { items?: { tenant?: string; _id: string }[] } };
  };

  it('the list shows only the tenant\'s events, whatever tenant a filter asks for', async () => {
    const all = await get('/api/events', 'acme');
    expect(all.status).to.equal(200);
    expect(all.body.items!.length).to.equal(2);
    expect(all.body.items!.every((e) => e.tenant === 'acme')).to.equal(true);
    const asked = await get('/api/events?tenant=globex', 'acme');
    expect(asked.body.items!.every((e) => e.tenant === 'acme')).to.equal(true);
    for (const q of [`documentId=${docs.globex}`, `model=TrPost&documentId=${docs.globex}`, 'reason=x', `requestId=none`]) {
      const r = await get(`/api/events?${q}`, 'acme');
      expect(r.body.items!.filter((e) => e.tenant !== 'acme'), q).to.deep.equal([]);
    }
    // The root grant sees every tenant's events (and the trail's own audit_start, which belongs to no tenant).
    expect((await get('/api/events', 'root')).body.items!.filter((e) => !TRAIL_KINDS.includes((e as { kind?: string }).kind ?? '')).length).to.equal(4);
  });

  it('filters by onBehalfOfId over HTTP, within the tenant', async () => {
    const root = await get('/api/events?onBehalfOfId=acme-user', 'root');
    expect(root.body.items!.map((e) => e.tenant)).to.deep.equal(['acme', 'acme']);
    expect((await get('/api/events?onBehalfOfId=acme-user', 'globex')).body.items).to.deep.equal([]);
  });

  it('another tenant\'s event by id is a 404, its history is empty; config names the tenant', async () => {
    expect((await get(`/api/events/${events.globex.create}`, 'acme')).status).to.equal(404);
    expect((await get(`/api/events/${events.acme.create}`, 'acme')).status).to.equal(200);
    expect((await get(`/api/events/${events.globex.create}`, 'root')).status).to.equal(200);
    const h = await get(`/api/history/TrPost/${docs.globex}`, 'acme');
    expect(h.status).to.equal(200);
    expect(h.body.items).to.deep.equal([]);
    expect((await get(`/api/history/TrPost/${docs.acme}`, 'acme')).body.items!.length).to.equal(2);
    expect((await get('/api/config', 'acme')).body).to.deep.equal({ revert: true, tenant: 'acme' });
    expect((await get('/api/config', 'acme', readOnly)).body).to.deep.equal({ revert: false, tenant: 'acme' });
    expect((await get('/api/events', '')).status).to.equal(403);
  });

  it('revert: JSON only, confined to the tenant, audited; a conflict is a 409 naming the paths; absent without authorizeWrite', async () => {
    const post = (id: string, viewer: string, body: unknown, base = server, type = 'application/json') =>
      fetch(`${base.url}/audit/api/events/${id}/revert`, { method: 'POST', headers: { 'x-viewer': viewer, 'content-type': type }, body: JSON.stringify(body) });
    expect((await post(events.acme.update, 'acme', {}, readOnly)).status).to.be.oneOf([404, 405]);
    expect((await post(events.acme.update, 'acme', { reason: 'x' }, server, 'text/plain')).status).to.equal(400);
    expect((await post(events.globex.update, 'acme', { reason: 'x' })).status).to.equal(404);
    expect((await post(events.acme.update, '', { reason: 'x' })).status).to.equal(403);
    const ok = await post(events.acme.update, 'acme', { reason: 'undo via http' });
    expect(ok.status).to.equal(200);
    expect(((await ok.json()) as { action: string }).action).to.equal('update');
    await a.flush();
    const undo = (await a.query({ reason: 'undo via http' })).items;
    expect(undo).to.have.length(1);
    expect(undo[0].meta).to.deep.equal({ revertOf: events.acme.update });
    // The same update again: its paths no longer hold its values.
    const again = await post(events.acme.update, 'acme', { reason: 'twice' });
    expect(again.status).to.equal(409);
    expect(((await again.json()) as { paths: string[] }).paths).to.deep.equal(['title']);
  });
});
