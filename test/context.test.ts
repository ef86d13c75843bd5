/**
 * Change context (issue 15): reason and meta through every write path, withContext, annotate; impersonation
 * (onBehalfOf) across concurrent requests; tenants; W3C trace context and the OpenTelemetry span.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { expect } from 'chai';
import { context, ROOT_CONTEXT, trace, type Context as OtelContext, type ContextManager } from '@opentelemetry/api';
import Koa from 'koa';
import { mongo } from 'mongoose';
import { parseTraceparent } from '../lib/index.js';
import { planQuery } from '../lib/read/query.js';
import { explainStages } from './support/explain.js';
import type { AuditEvent } from '../lib/core/types.js';
import { changeFixture, type ChangeFixture } from './support/changes.js';
import { APP_EVENTS, serverKind, useFixture } from './support/helpers.js';

describe('change context: reason, meta, onBehalfOf, tenant, trace', () => {
  const f = useFixture('context');
  let fx: ChangeFixture;
  before(() => {
    fx = changeFixture(f, { collection: 'ctx_events' });
  });

  describe('reason and meta on changes', () => {
    it('every write path carries its own { audit: { reason, meta } }', async () => {
      const M = fx.model<{ title?: string; n?: number }>({ title: String, n: Number });
      // (mongoose types query-write options with the driver's types, which a plugin cannot extend)
      const r = (reason: string): Record<string, unknown> => ({ audit: { reason, meta: { ticket: reason, password: 'hunter2' } } });
      const a = await new M({ title: 'a' }).save(r('save-create'));
      a.set('title', 'a2');
      await a.save(r('save-update'));
      await M.insertMany([{ title: 'b' }, { title: 'c' }], r('insertMany'));
      await M.bulkWrite([{ updateOne: { filter: { title: 'b' }, update: { $set: { n: 1 } } } }], r('bulkWrite'));
      await M.updateOne({ title: 'c' }, { $set: { n: 2 } }, r('updateOne'));
      await M.updateMany({}, { $inc: { n: 1 } }, r('updateMany'));
      await M.findOneAndUpdate({ title: 'a2' }, { $set: { n: 9 } }, r('findOneAndUpdate'));
      await M.replaceOne({ title: 'c' }, { title: 'c2', n: 0 }, r('replaceOne'));
      await M.findOneAndReplace({ title: 'c2' }, { title: 'c3' }, r('findOneAndReplace'));
      await M.findOneAndDelete({ title: 'c3' }, r('findOneAndDelete'));
      await M.deleteOne({ title: 'b' }, r('deleteOne'));
      await M.deleteMany({}, r('deleteMany'));
      const events = await fx.events({ model: M.modelName });
      const byOp = new Map<string, Set<string>>();
      for (const e of events) {
        const set = byOp.get(e.operation as string) ?? new Set();
        set.add(String(e.reason));
        byOp.set(e.operation as string, set);
        expect(e.meta).to.deep.equal({ ticket: e.reason, password: '[REDACTED]' });
      }
      expect([...byOp.get('save')!].sort()).to.deep.equal(['save-create', 'save-update']);
      for (const op of ['insertMany', 'bulkWrite', 'updateOne', 'updateMany', 'findOneAndUpdate', 'replaceOne', 'findOneAndReplace', 'findOneAndDelete', 'deleteOne', 'deleteMany']) {
        expect([...(byOp.get(op) ?? [])], op).to.deep.equal([op]);
      }
    });

    it('a bad { audit } option fails the write before anything is written', async () => {
      const M = fx.model<{ title?: string }>({ title: String });
      const err = await M.updateOne({}, { $set: { title: 'x' } }, { audit: { reason: 42 } } as Record<string, unknown>).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(TypeError);
      expect(String(err)).to.include('"reason"');
      expect(await M.countDocuments()).to.equal(0);
      const err2 = await M.insertMany([{ title: 'x' }], { audit: { why: 'x' } as never }).catch((e: unknown) => e);
      expect(String(err2)).to.include('unknown { audit } option key "why"');
      expect(await M.countDocuments()).to.equal(0);
    });

    it('withContext gives reason, meta, actor, onBehalfOf and tenant to what runs inside; nested scopes add up', async () => {
      const M = fx.model<{ title?: string }>({ title: String });
      await fx.auditor.withContext({ actor: { id: 'admin', name: 'Admin' }, onBehalfOf: { id: 'alice' }, tenant: 't1', reason: 'ticket 1', meta: { a: 1 } }, async () => {
        await M.create({ title: 'x' });
        await fx.auditor.withContext({ reason: 'inner', meta: { b: 2 } }, () => M.updateOne({ title: 'x' }, { $set: { title: 'y' } }).exec());
        // A write's own option wins over the scope's reason.
        // The typed per-call form of updateOne/updateMany: mongoose types their options with the driver's own.
        await M.updateOne({ title: 'y' }, { $set: { title: 'z' } }).setOptions({ audit: { reason: 'per call' } });
      });
      const [c, u1, u2] = await fx.events({ model: M.modelName });
      expect(c.actor).to.deep.equal({ id: 'admin', name: 'Admin', via: 'explicit' });
      expect(c.onBehalfOf).to.deep.equal({ id: 'alice', via: 'explicit' });
      expect(c.tenant).to.equal('t1');
      expect([c.reason, u1.reason, u2.reason]).to.deep.equal(['ticket 1', 'inner', 'per call']);
      expect(u1.meta).to.deep.equal({ a: 1, b: 2 });
      expect(u2.tenant).to.equal('t1');
      expect(() => fx.auditor.withContext({ tenant: 5 as unknown as string }, () => 1)).to.throw(TypeError, '"tenant"');
      expect(() => fx.auditor.withContext({ onBehalfOf: {} as never }, () => 1)).to.throw(TypeError, '"onBehalfOf"');
    });

    it('annotate() reaches the later changes of the request and its request event; query({ reason }) matches a prefix', async () => {
      const M = fx.model<{ title?: string }>({ title: String });
      const app = new Koa();
      app.use(fx.auditor());
      app.use(async (ctx) => {
        await M.create({ title: 'before' });
        fx.auditor.annotate({ reason: 'GDPR request 7', meta: { case: 7 } });
        await M.create({ title: 'after' });
        ctx.body = 'ok';
      });
      const s = await f.listen(app);
      await (await fetch(`${s.url}/x`)).text();
      const [before, after] = await fx.events({ model: M.modelName });
      expect(before.reason).to.equal(undefined);
      expect(after.reason).to.equal('GDPR request 7');
      expect(after.meta).to.deep.equal({ case: 7 });
      const req = await fx.events({ kind: 'request', requestId: after.requestId });
      expect(req).to.have.length(1);
      expect(req[0].reason).to.equal('GDPR request 7');
      const page = await fx.auditor.query({ reason: 'GDPR req' });
      expect(page.items.map((e) => e.kind).sort()).to.deep.equal(['create', 'request']);
      expect((await fx.auditor.query({ reason: 'GDPR.' })).items).to.deep.equal([]); // a dot is literal
      expect(() => fx.auditor.annotate({ reason: 'outside' })).to.throw(TypeError, 'inside a request');
    });
  });

  describe('impersonation', () => {
    it('1,000 concurrent requests: each event carries its own request\'s actor and onBehalfOf (0 mix-ups)', async () => {
      const a = f.auditor({ collection: 'imp_events' });
      const M = f.conn.model('ImpDoc', new (await import('mongoose')).Schema({ n: Number }).plugin(a.plugin));
      const app = new Koa();
      app.use(a({ onBehalfOf: (ctx) => (ctx.get('x-as') === '' ? null : { id: ctx.get('x-as') }) }));
      app.use(async (ctx, next) => {
        ctx.state.user = { id: ctx.get('x-user') };
        await next();
      });
      app.use(async (ctx) => {
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 5)));
        await M.create({ n: Number(ctx.get('x-n')) });
        ctx.body = 'ok';
      });
      const s = await f.listen(app);
      const N = 1000;
      for (let start = 0; start < N; start += 250) {
        await Promise.all(Array.from({ length: 250 }, (_, k) => start + k).map(async (i) => {
          const res = await fetch(`${s.url}/r`, { headers: { 'x-user': `admin${i % 7}`, 'x-as': `user${i}`, 'x-n': String(i) } });
          await res.text();
        }));
      }
      await a.flush();
      const events = (await a.model.find({}).lean()) as unknown as AuditEvent[];
      const creates = events.filter((e) => e.kind === 'create');
      const requests = events.filter((e) => e.kind === 'request');
      expect(creates).to.have.length(N);
      expect(requests).to.have.length(N);
      let mixups = 0;
      const byRequest = new Map(requests.map((e) => [e.requestId, e]));
      for (const e of creates) {
        const n = (e.changes ?? []).find((c) => c.path === 'n')?.to as number;
        if (e.onBehalfOf?.id !== `user${n}` || e.actor?.id !== `admin${n % 7}`) mixups++;
        const r = byRequest.get(e.requestId);
        if (r?.onBehalfOf?.id !== `user${n}` || r?.actor?.id !== `admin${n % 7}`) mixups++;
      }
      expect(mixups).to.equal(0);
      expect(creates[0].onBehalfOf?.via).to.equal('resolver');
      expect((await a.query({ onBehalfOfId: 'user5' })).items.map((e) => e.kind).sort()).to.deep.equal(['create', 'request']);
    });

    it('logins carry onBehalfOf; withActor stays as it was', async () => {
      const a = f.auditor({ collection: 'imp_login' });
      await a.withContext({ onBehalfOf: { id: 'alice' } }, () => a.loginSucceeded({ user: { id: 'admin' } }));
      await a.withActor({ id: 'cron' }, () => a.logout({ user: { id: 'cron' } }));
      await a.flush();
      const [login, logout] = (await a.model.find({}).sort({ ts: 1, _id: 1 }).lean()) as unknown as AuditEvent[];
      expect(login.onBehalfOf).to.deep.equal({ id: 'alice', via: 'explicit' });
      expect(logout.onBehalfOf).to.equal(undefined);
    });
  });

  describe('tenants', () => {
    it('createAudit({ tenant }) marks every event of the request; the middleware option wins; query({ tenant })', async () => {
      const a = f.auditor({ collection: 'tenant_events', tenant: (ctx) => ctx.get('x-tenant') || null });
      const M = f.conn.model('TenantDoc', new (await import('mongoose')).Schema({ n: Number }).plugin(a.plugin));
      const app = new Koa();
      app.use(a());
      app.use(async (ctx) => {
        await M.create({ n: 1 });
        ctx.body = 'ok';
      });
      const s = await f.listen(app);
      await (await fetch(`${s.url}/`, { headers: { 'x-tenant': 'acme' } })).text();
      await (await fetch(`${s.url}/`)).text();
      await a.flush();
      const acme = await a.query({ tenant: 'acme' });
      expect(acme.items.map((e) => e.kind).sort()).to.deep.equal(['create', 'request']);
      expect(await a.model.countDocuments({ tenant: { $exists: false }, ...APP_EVENTS })).to.equal(2);
      const mw = a({ tenant: () => 'fixed' });
      const app2 = new Koa();
      app2.use(mw);
      app2.use((ctx) => void (ctx.body = 'ok'));
      const s2 = await f.listen(app2);
      await (await fetch(`${s2.url}/`, { headers: { 'x-tenant': 'acme' } })).text();
      await a.flush();
      expect((await a.query({ tenant: 'fixed' })).items).to.have.length(1);
      await a.ready();
      const indexes = await a.model.collection.indexes();
      expect(indexes.some((i) => Object.keys(i.key)[0] === 'tenant')).to.equal(true);
    });
  });

  describe('trace correlation', () => {
    const T = '4bf92f3577b34da6a3ce929d0e0e4736';
    const S = '00f067aa0ba902b7';
    const table: [string, string, { traceId: string; spanId: string } | null][] = [
      ['valid', `00-${T}-${S}-01`, { traceId: T, spanId: S }],
      ['valid, flags 00', `00-${T}-${S}-00`, { traceId: T, spanId: S }],
      ['all-zero trace id', `00-${'0'.repeat(32)}-${S}-01`, null],
      ['all-zero parent id', `00-${T}-${'0'.repeat(16)}-01`, null],
      ['upper-case hex', `00-${T.toUpperCase()}-${S}-01`, null],
      ['extra fields on version 00', `00-${T}-${S}-01-extra`, null],
      ['version ff', `ff-${T}-${S}-01`, null],
      ['version 01', `01-${T}-${S}-01`, null],
      ['short trace id', `00-${T.slice(1)}-${S}-01`, null],
      ['non-hex', `00-${T.slice(0, 31)}g-${S}-01`, null],
      ['bad flags', `00-${T}-${S}-0z`, null],
      ['wrong separators', `00_${T}_${S}_01`, null],
      ['empty', '', null],
      ['two headers joined', `00-${T}-${S}-01, 00-${T}-${S}-01`, null],
    ];
    for (const [name, header, expected] of table) {
      it(`traceparent: ${name}`, () => {
        expect(parseTraceparent(header)).to.deep.equal(expected);
      });
    }

    it('a valid traceparent gives traceId/spanId to every event of the request; query({ traceId })', async () => {
      const a = f.auditor({ collection: 'trace_events' });
      const M = f.conn.model('TraceDoc', new (await import('mongoose')).Schema({ n: Number }).plugin(a.plugin));
      const s = await f.serve(a, async (ctx) => {
        await M.create({ n: 1 });
        ctx.body = 'ok';
      });
      await (await fetch(`${s.url}/`, { headers: { traceparent: `00-${T}-${S}-01` } })).text();
      await (await fetch(`${s.url}/`, { headers: { traceparent: `00-${T.toUpperCase()}-${S}-01` } })).text();
      await a.flush();
      const page = await a.query({ traceId: T });
      expect(page.items.map((e) => e.kind).sort()).to.deep.equal(['create', 'request']);
      expect(page.items.every((e) => e.spanId === S)).to.equal(true);
      expect(await a.model.countDocuments({ traceId: { $exists: false }, ...APP_EVENTS })).to.equal(2);
    });

    it('an active OpenTelemetry span wins over the header', async () => {
      // A minimal context manager (what @opentelemetry/context-async-hooks provides), so that spans propagate.
      const als = new AsyncLocalStorage<OtelContext>();
      const manager: ContextManager = {
        active: () => als.getStore() ?? ROOT_CONTEXT,
        with: (ctx, fn, thisArg, ...args) => als.run(ctx, () => fn.call(thisArg, ...args)),
        bind: (_ctx, target) => target,
        enable() {
          return this;
        },
        disable() {
          return this;
        },
      };
      context.setGlobalContextManager(manager);
      try {
        const OT = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1';
        const OS = 'bbbbbbbbbbbbbbb2';
        const a = f.auditor({ collection: 'otel_events' });
        const app = new Koa();
        app.use((ctx, next) => context.with(trace.setSpan(context.active(), trace.wrapSpanContext({ traceId: OT, spanId: OS, traceFlags: 1 })), next));
        app.use(a());
        app.use((ctx) => void (ctx.body = 'ok'));
        const s = await f.listen(app);
        await (await fetch(`${s.url}/`, { headers: { traceparent: `00-${T}-${S}-01` } })).text();
        await a.flush();
        const [e] = (await a.model.find({ kind: 'request' }).lean()) as unknown as AuditEvent[];
        expect([e.traceId, e.spanId]).to.deep.equal([OT, OS]);
      } finally {
        context.disable();
      }
    });
  });
  describe('query filters of the change context', () => {
    const base = Date.UTC(2026, 0, 1);
    const raw = Array.from({ length: 60 }, (_, i) => ({
      _id: new mongo.ObjectId(),
      ts: new Date(base + i * 1000),
      kind: 'update',
      outcome: 'success',
      actor: { id: 'admin', via: 'state' },
      requestId: `r${i}`,
      ip: null,
      userAgent: null,
      tenant: `t${i % 3}`,
      traceId: `${(i % 4).toString(16)}`.padStart(32, 'a'),
      spanId: 'b'.repeat(16),
      onBehalfOf: { id: `u${i % 5}`, via: 'resolver' },
      reason: i % 2 ? `ticket ${i}` : `cleanup ${i}`,
    }));
    let q: ReturnType<typeof f.auditor>;
    before(async () => {
      q = f.auditor({ collection: 'ctx_query' });
      await q.ready();
      await q.model.collection.insertMany(raw);
    });
    const cases: [string, Record<string, string>, (e: (typeof raw)[number]) => boolean][] = [
      ['tenant', { tenant: 't1' }, (e) => e.tenant === 't1'],
      ['traceId', { traceId: raw[2].traceId }, (e) => e.traceId === raw[2].traceId],
      ['onBehalfOfId', { onBehalfOfId: 'u3' }, (e) => e.onBehalfOf.id === 'u3'],
      ['reason prefix', { reason: 'ticket 1' }, (e) => e.reason.startsWith('ticket 1')],
      ['tenant + reason', { tenant: 't0', reason: 'cleanup' }, (e) => e.tenant === 't0' && e.reason.startsWith('cleanup')],
    ];
    for (const [name, filter, match] of cases) {
      it(`filters by ${name}, paged, newest first`, async () => {
        const want = raw.filter(match).map((e) => String(e._id)).reverse();
        expect(want.length).to.be.greaterThan(1);
        const got: string[] = [];
        let after: string | undefined;
        do {
          const page = await q.query({ ...filter, limit: 4, after });
          got.push(...page.items.map((e) => String(e._id)));
          after = page.next ?? undefined;
        } while (after !== undefined);
        expect(got).to.deep.equal(want);
      });
    }
    it('a reason is matched as a literal prefix (regex characters escaped)', async () => {
      expect((await q.query({ reason: 'ticket.*' })).items).to.deep.equal([]);
      expect((await q.query({ reason: '(' })).items).to.deep.equal([]);
    });
    it('serves each new filter from an index (explain, where the server reports index use)', async function () {
      const probe = await explainStages(q.model.find(planQuery({ tenant: 't1' }).filter).sort({ ts: -1, _id: -1 }).limit(5));
      if ('skip' in probe) {
        console.log(`      (skipped on ${serverKind()}: ${probe.skip})`);
        this.skip();
      }
      for (const [name, filter] of cases) {
        const plan = planQuery(filter);
        const ex = await explainStages(q.model.find(plan.filter).sort(plan.sort).limit(plan.fetch));
        const names = 'stages' in ex ? ex.stages.map((st) => st.stage) : [];
        expect(names, `${name}: ${names.join(' > ')}`).to.not.include('COLLSCAN');
        expect(names.some((st) => st.includes('IXSCAN')), `${name}: ${names.join(' > ')}`).to.equal(true);
      }
    });
  });

  it('a document deleteOne takes the { audit } option too', async () => {
    const M = fx.model<{ title?: string }>({ title: String });
    const d = await M.create({ title: 'x' });
    await d.deleteOne({ audit: { reason: 'doc delete' } } as Record<string, unknown>);
    const [del] = await fx.events({ model: M.modelName, kind: 'delete' });
    expect(del.reason).to.equal('doc delete');
  });
});
