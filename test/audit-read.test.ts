import { expect } from 'chai';
import Koa from 'koa';
import { auditRouter, type Auditor } from '../lib/index.js';
import type { AuditEvent } from '../lib/core/types.js';
import { launchChromium } from './support/browser.js';
import { eventually, useFixture, type Running } from './support/helpers.js';

declare const document: { getElementById(id: string): { textContent: string | null } | null };

interface Row {
  http?: { path: string; auditRead?: boolean; status: number };
}

describe("reads of the audit trail are audited, marked and hidden by default (issue 11, item 16)", function () {
  this.timeout(60_000);
  const fx = useFixture('audit_read');
  let a: Auditor;
  let server: Running;

  before(async () => {
    a = fx.auditor({ flushIntervalMs: 20 });
    const app = new Koa();
    app.use(a()); // first, as the README says: the trail's own routes are audited like any other
    app.use(async (ctx, next) => {
      if (ctx.get('x-role') !== '') ctx.state.user = { id: 'reader', role: ctx.get('x-role') };
      await next();
    });
    app.use(auditRouter({ auditor: a, authorize: (ctx) => ctx.state.user?.role === 'admin' }).routes());
    app.use((ctx) => void (ctx.body = 'app'));
    server = await fx.listen(app);
  });

  const requestEvents = async (): Promise<AuditEvent[]> => {
    await a.flush();
    return (await a.model.find({ kind: 'request' }).sort({ ts: 1, _id: 1 }).lean()) as unknown as AuditEvent[];
  };

  it('records auditRouter requests (allowed and refused) with http.auditRead: true, and nothing else so', async () => {
    expect((await fetch(`${server.url}/hello`)).status).to.equal(200);
    expect((await fetch(`${server.url}/audit/api/events`, { headers: { 'x-role': 'admin' } })).status).to.equal(200);
    expect((await fetch(`${server.url}/audit/api/events`, { headers: { 'x-role': 'guest' } })).status).to.equal(403);
    const events = await eventually(async () => {
      const found = await requestEvents();
      return found.length >= 3 ? found : null;
    }) as AuditEvent[];
    expect(events.map((e) => [e.http?.path, e.http?.status, e.http?.auditRead ?? null, e.actor?.id ?? null])).to.deep.equal([
      ['/hello', 200, null, null],
      ['/audit/api/events', 200, true, 'reader'],
      ['/audit/api/events', 403, true, 'reader'],
    ]);
  });

  it('the query API and the HTTP API filter on it: auditRead false leaves them out, true keeps only them', async () => {
    expect((await a.query({ kind: 'request', auditRead: false })).items.map((e) => e.http?.path)).to.deep.equal(['/hello']);
    expect((await a.query({ kind: 'request', auditRead: true })).items.every((e) => e.http?.auditRead === true)).to.equal(true);
    const res = await fetch(`${server.url}/audit/api/events?kind=request&auditRead=false`, { headers: { 'x-role': 'admin' } });
    const body = (await res.json()) as { items: Row[] };
    expect(body.items.map((e) => e.http?.path)).to.deep.equal(['/hello']);
    const bad = await fetch(`${server.url}/audit/api/events?auditRead=maybe`, { headers: { 'x-role': 'admin' } });
    expect(bad.status).to.equal(400);
    expect(((await bad.json()) as { error: string }).error).to.match(/parameter "auditRead" must be true or false/);
  });

  it('the viewer hides them by default, and shows them when asked', async () => {
    const browser = await launchChromium(fx);
    const page = await browser.newPage();
    await page.setExtraHTTPHeaders({ 'x-role': 'admin' });
    const loaded = async (): Promise<void> => {
      await page.waitForFunction(() => {
        const s = document.getElementById('status')?.textContent ?? '';
        return s !== '' && s !== 'Loading…';
      });
    };
    const paths = (): Promise<string[]> => page.$$eval('#events tbody tr[data-id]', (rows) => rows.map((r) => (r as unknown as { textContent: string }).textContent));
    await page.goto(`${server.url}/audit/?kind=request`);
    await loaded();
    const hidden = await paths();
    expect(hidden).to.have.length(1);
    expect(hidden[0]).to.include('/hello');
    expect(await page.isChecked('input[name=showAuditReads]')).to.equal(false);

    await page.check('input[name=showAuditReads]');
    await page.click('button[type=submit]');
    await loaded();
    const shown = await paths();
    expect(shown.length).to.be.greaterThan(1);
    expect(shown.some((t) => t.includes('/audit/api/events'))).to.equal(true);
    expect(new URL(page.url()).searchParams.get('showAuditReads')).to.equal('1');
  });
});
