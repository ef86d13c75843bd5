import { expect } from 'chai';
import { FloodControl, type FloodSummary } from '../lib/login/flood.js';
import type { AuditEvent, Auditor, AuditOptions } from '../lib/index.js';
import { eventually, useFixture, type Running } from './support/helpers.js';

describe('failed-login flood control', () => {
  const fx = useFixture('login_flood');
  let n = 0;
  const make = (opts: AuditOptions): Auditor => fx.auditor({ collection: `flood_${n++}`, ...opts });

  /** An app whose POST /login always fails for the `user` query parameter. */
  const serve = (a: Auditor): Promise<Running> =>
    fx.serve(a, async (ctx) => {
      await a.loginFailed({ ctx, identifier: String(ctx.query.user), provider: 'local', reason: 'bad_password' });
      ctx.status = 401;
    });
  const fail = async (r: Running, user: string, times: number): Promise<string[]> => {
    const ids: string[] = [];
    for (let i = 0; i < times; i++) {
      const res = await fetch(`${r.url}/login?user=${encodeURIComponent(user)}`, { method: 'POST' });
      expect(res.status).to.equal(401);
      ids.push(res.headers.get('x-request-id') ?? '');
    }
    return ids;
  };
  const failures = async (a: Auditor): Promise<{ detailed: AuditEvent[]; summaries: AuditEvent[] }> => {
    const all = (await a.model.find({ kind: 'login_failed' }).sort({ ts: 1, _id: 1 }).lean()) as AuditEvent[];
    return { detailed: all.filter((e) => e.meta?.summary !== true), summaries: all.filter((e) => e.meta?.summary === true) };
  };

  it('records at most max detailed failures per identifier and IP, then one summary per key with the true count', async () => {
    const a = make({ loginFailures: { max: 3, windowMs: 60_000 } });
    const r = await serve(a);
    const ids = await fail(r, 'mallory', 10);
    await a.flush();
    const { detailed, summaries } = await failures(a);
    expect(detailed.map((e) => e.requestId)).to.deep.equal(ids.slice(0, 3));
    expect(summaries).to.have.length(2);
    const byKey = Object.fromEntries(summaries.map((s) => [s.meta?.key as string, s]));
    expect(byKey.identifier).to.include({ kind: 'login_failed', outcome: 'failure', identifier: 'mallory', provider: 'local', reason: 'flood_summary', actor: null, requestId: null });
    expect(byKey.identifier.meta).to.include({ summary: true, suppressed: 7, total: 10, reason: 'bad_password' });
    expect(byKey.ip.ip).to.match(/127\.0\.0\.1$/);
    expect(byKey.ip.identifier).to.equal(null);
    expect(byKey.ip.meta).to.include({ suppressed: 7, total: 10 });
    const m = byKey.identifier.meta as Record<string, string>;
    expect(Date.parse(m.windowEnd) - Date.parse(m.windowStart)).to.equal(60_000);
    // The request events are not flood-controlled: those are the app's traffic.
    expect(await a.model.countDocuments({ kind: 'request' })).to.equal(10);
  });

  it('keeps holding back after a flush within the same window', async () => {
    const a = make({ loginFailures: { max: 2, windowMs: 60_000 } });
    for (let i = 0; i < 5; i++) await a.loginFailed({ identifier: 'bob', reason: 'bad_password' });
    await a.flush();
    for (let i = 0; i < 4; i++) await a.loginFailed({ identifier: 'bob', reason: 'bad_password' });
    await a.flush();
    const { detailed, summaries } = await failures(a);
    expect(detailed).to.have.length(2);
    expect(summaries.map((s) => s.meta?.suppressed)).to.deep.equal([3, 4]);
    expect(summaries.map((s) => s.meta?.total)).to.deep.equal([5, 9]);
    expect(summaries.every((s) => s.ip === null && s.identifier === 'bob')).to.equal(true);
  });

  it('one IP spraying many identifiers yields one IP summary, not one per identifier', async () => {
    const a = make({ loginFailures: { max: 3, windowMs: 60_000 } });
    const r = await serve(a);
    for (let i = 0; i < 12; i++) await fail(r, `user${i}`, 1);
    await a.flush();
    const { detailed, summaries } = await failures(a);
    expect(detailed.map((e) => e.identifier)).to.deep.equal(['user0', 'user1', 'user2']);
    expect(summaries).to.have.length(1);
    expect(summaries[0].meta).to.include({ key: 'ip', suppressed: 9, total: 12 });
  });

  it('writes the summary when the window ends, without a flush, and starts a fresh window', async () => {
    const a = make({ loginFailures: { max: 2, windowMs: 1000 }, flushIntervalMs: 50 });
    for (let i = 0; i < 6; i++) await a.loginFailed({ identifier: 'carol', reason: 'bad_password' });
    const summary = await eventually(async () => (await failures(a)).summaries[0], 5000);
    expect(summary.meta).to.include({ suppressed: 4, total: 6, complete: true });
    await a.loginFailed({ identifier: 'carol', reason: 'bad_password' });
    await a.flush();
    const { detailed, summaries } = await failures(a);
    expect(detailed).to.have.length(3, 'the new window records in detail again');
    expect(summaries).to.have.length(1);
  });

  it('close() stores the pending summary', async () => {
    const a = make({ loginFailures: { max: 2, windowMs: 60_000 } });
    for (let i = 0; i < 7; i++) a.signals.emit('login_failed', { identifier: 'dave', reason: 'bad_password', provider: 'sso' });
    expect(await a.close({ timeoutMs: 5000 })).to.deep.equal({ unwritten: 0 });
    const { detailed, summaries } = await failures(a);
    expect(detailed).to.have.length(2);
    expect(summaries).to.have.length(1);
    expect(summaries[0]).to.include({ provider: 'sso', identifier: 'dave' });
    expect(summaries[0].meta).to.include({ suppressed: 5, total: 7 });
  });

  describe('FloodControl', () => {
    const summaries: FloodSummary[] = [];
    let clock = 1_000_000;
    const control = (max: number, windowMs: number, maxKeys?: number): FloodControl =>
      new FloodControl({ max, windowMs, maxKeys, onSummary: (s) => summaries.push(s), now: () => clock });

    beforeEach(() => {
      summaries.length = 0;
    });

    it('reports a window when the next failure arrives after it ended', () => {
      const f = control(1, 1000);
      expect([f.admit('eve', null, 'local', 'x'), f.admit('eve', null, 'local', 'x'), f.admit('eve', null, 'local', 'y')]).to.deep.equal([true, false, false]);
      clock += 1000;
      expect(f.admit('eve', null, 'local', 'x')).to.equal(true);
      expect(summaries).to.have.length(1);
      expect(summaries[0]).to.include({ key: 'identifier', value: 'eve', suppressed: 2, total: 3, complete: true, reason: 'multiple' });
      f.close();
    });

    it('bounds the keys it tracks and reports what an evicted window held back', () => {
      const f = control(1, 60_000, 100);
      f.admit('first', null, 'local', 'x');
      f.admit('first', null, 'local', 'x');
      for (let i = 0; i < 500; i++) f.admit(`k${i}`, `10.0.${i >> 8}.${i & 255}`, 'local', 'x');
      expect(f.size).to.be.at.most(100);
      expect(summaries.map((s) => s.value)).to.deep.equal(['first']);
      expect(summaries[0]).to.include({ suppressed: 1, total: 2, complete: false });
      f.close();
    });

    it('an IP spraying identifiers past the key bound never evicts its own window', () => {
      const f = control(3, 60_000, 5);
      let detailed = 0;
      for (let i = 0; i < 40; i++) if (f.admit(`spray${i}`, '10.9.9.9', 'local', 'x')) detailed++;
      expect(detailed).to.equal(3);
      expect(f.size).to.be.at.most(5);
      f.close();
      expect(summaries.filter((s) => s.key === 'ip')).to.have.length(1);
      expect(summaries.find((s) => s.key === 'ip')).to.include({ value: '10.9.9.9', suppressed: 37, total: 40 });
    });

    it('keeps an identifier apart from an IP address with the same text', () => {
      const f = control(1, 60_000);
      expect(f.admit('10.1.1.1', '10.1.1.1', 'local', 'x')).to.equal(true);
      expect(f.admit('10.1.1.1', null, 'local', 'x')).to.equal(false);
      f.close();
      expect(summaries.map((s) => [s.key, s.value, s.total])).to.deep.equal([['identifier', '10.1.1.1', 2]]);
    });
  });
});
