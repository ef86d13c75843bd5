/** retention: { days, byKind }: partial TTL indexes per kind where supported, else a scheduled prune (recorded). */
import { expect } from 'chai';
import { mongo } from 'mongoose';
import type { AuditEvent } from '../lib/core/types.js';
import { serverKind } from './support/helpers.js';
import { useFixture } from './support/helpers.js';

const DAY = 86_400_000;

describe('retention by kind', () => {
  const f = useFixture('retention_kind');

  it('partial TTL indexes per kind, or (FerretDB) the prune path: each kind expires at its own age, and the prune is recorded', async function () {
    const a = f.auditor({ collection: 'rk_events', retention: { days: 60, byKind: { request: 30, update: 2555 } } });
    await a.ready();
    const indexes = await a.model.collection.indexes();
    const partial = indexes.filter((i) => String(i.name).startsWith('koa_audit_retention_'));
    const now = Date.now();
    const ev = (kind: string, ageDays: number) => ({ _id: new mongo.ObjectId(), ts: new Date(now - ageDays * DAY), kind, outcome: 'success', actor: null, requestId: null, ip: null, userAgent: null });
    const docs = [ev('request', 40), ev('request', 10), ev('update', 400), ev('update', 3000), ev('login', 70), ev('login', 50)];
    if (partial.length > 0) {
      console.log(`      (${serverKind()} supports partial TTL indexes: checked them; the server expires events itself)`);
      const byName = new Map(partial.map((i) => [i.name, i]));
      expect(byName.get('koa_audit_retention_request')?.expireAfterSeconds).to.equal(30 * 86_400);
      expect(byName.get('koa_audit_retention_update')?.expireAfterSeconds).to.equal(2555 * 86_400);
      expect(byName.get('koa_audit_retention_login')?.expireAfterSeconds).to.equal(60 * 86_400);
      expect(byName.get('koa_audit_retention_request')?.partialFilterExpression).to.deep.equal({ kind: 'request' });
    } else {
      console.log(`      (${serverKind()} has no partial TTL indexes: testing the scheduled prune path, run now with prune())`);
    }
    await a.model.collection.insertMany(docs);
    const deleted = await a.prune();
    expect(deleted).to.equal(3);
    const left = (await a.model.find({ kind: { $ne: 'prune' } }).lean()) as unknown as AuditEvent[];
    const ages = left.map((e) => `${e.kind}:${Math.round((now - e.ts.getTime()) / DAY)}`).sort();
    expect(ages).to.deep.equal(['login:50', 'request:10', 'update:400']);
    await a.flush();
    const [rec] = (await a.model.find({ kind: 'prune' }).lean()) as unknown as AuditEvent[];
    expect(rec.meta).to.deep.include({ deleted: 3, byKind: { request: 1, update: 1, '*': 1 } });
    expect(rec.actor).to.deep.equal({ id: 'system', via: 'system' });
  });

  it('prune() without options needs a retention option', async () => {
    const a = f.auditor({ collection: 'rk_none' });
    expect(await a.prune().catch((e: unknown) => e)).to.be.instanceOf(TypeError);
  });
});
