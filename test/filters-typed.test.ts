import { expect } from 'chai';
import Koa from 'koa';
import { Schema } from 'mongoose';
import { auditRouter } from '../lib/index.js';
import { useFixture } from './support/helpers.js';

describe('filters match what users type (issue 11, item 15)', () => {
  const fx = useFixture('filters_typed');

  it('an IPv4-mapped client address is stored as IPv4, and an IPv4 filter (either spelling) finds it and older mapped events', async () => {
    const a = fx.auditor({ flushIntervalMs: 20 });
    const app = new Koa();
    app.proxy = true; // X-Forwarded-For is how a test on 127.0.0.1 can present a mapped address
    app.use(a());
    app.use((ctx) => void (ctx.body = 'ok'));
    const r = await fx.listen(app);
    const res = await fetch(`${r.url}/ip-probe`, { headers: { 'x-forwarded-for': '::ffff:10.1.2.3' } });
    expect(res.status).to.equal(200);
    await a.flush();
    const stored = await a.model.find({ 'http.path': '/ip-probe' }).lean();
    expect(stored.map((e) => e.ip)).to.deep.equal(['10.1.2.3']);
    // An event stored before this rule, with the mapped spelling.
    await a.model.collection.insertOne({ ts: new Date(), kind: 'request', outcome: 'success', actor: null, requestId: 'legacy', ip: '::ffff:10.1.2.3', userAgent: null });
    for (const ip of ['10.1.2.3', '::ffff:10.1.2.3', '::FFFF:10.1.2.3']) {
      const page = await a.query({ ip });
      expect(page.items.map((e) => e.requestId ?? e.http?.path).length, ip).to.equal(2);
    }
    expect((await a.query({ ip: '10.1.2.30' })).items).to.have.length(0);
  });

  it('a model name in another case finds the stored model, through the query API and the HTTP API', async () => {
    const a = fx.auditor({ flushIntervalMs: 20 });
    const schema = new Schema({ title: String });
    schema.plugin(a.plugin);
    const Post = fx.conn.model('CasePost', schema);
    await Post.create({ title: 'x' });
    await a.flush();
    expect((await a.query({ model: 'CasePost' })).items).to.have.length(1);
    expect((await a.query({ model: 'casepost' })).items.map((e) => e.model)).to.deep.equal(['CasePost']);
    expect((await a.query({ model: 'CASEPOST', kind: 'create' })).items).to.have.length(1);
    expect((await a.query({ model: 'nosuchmodel' })).items).to.have.length(0);

    const app = new Koa();
    app.use(auditRouter({ auditor: a, authorize: () => true }).routes());
    const r = await fx.listen(app);
    const res = await fetch(`${r.url}/audit/api/events?model=casepost`);
    expect(res.status).to.equal(200);
    const body = (await res.json()) as { items: { model: string }[] };
    expect(body.items.map((e) => e.model)).to.deep.equal(['CasePost']);
  });
});
