/**
 * What the dashboard must never hide, and what its links must keep: a degraded period of the store is recorded in
 * the trail (`security` events `sys_monitor_disabled` / `sys_monitor_enabled`, meta.monitor 'koa-audit store')
 * and shown on the dashboard (API and page) with links to its events; and every link of a dashboard scoped to a
 * tenant (by a tenant grant, or by `?tenant=` under a full grant) lists exactly the events its number counts.
 * The store's outage is real: this file starts, stops and restarts a private server of its own.
 */
import { expect } from 'chai';
import Koa from 'koa';
import mongoose, { type Connection } from 'mongoose';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type Browser, type Page } from 'playwright-core';
import { auditRouter, type Auditor } from '../lib/index.js';
import { dashboard, type DashboardAnswer } from '../lib/rollup/dashboard.js';
import { STORE_MONITOR } from '../lib/store/health.js';
import { startPrivateServer, type Database } from './support/database.js';
import { dashboardReady, launchChromium, listReady, watchedPage, type PageNode } from './support/browser.js';
import { eventually, useFixture, type Running } from './support/helpers.js';


const OUTPUT = resolve(__dirname, 'output');
const HOUR = 3_600_000;

describe('dashboard: degraded periods and tenant-scoped links', function () {
  this.timeout(90_000);
  let server: Database;
  const fx = useFixture('dashboard_scope', {
    connect: async (): Promise<Connection> => {
      server = await startPrivateServer();
      fx.cleanup(() => server.destroy()); // registered first, so run last: after the auditors and the connection
      // No buffering while the server is down: writes fail at once (after server selection) and are retried.
      const conn = await mongoose.createConnection(`${server.uri}dashboard_scope`, { serverSelectionTimeoutMS: 1000, heartbeatFrequencyMS: 500, bufferCommands: false }).asPromise();
      await conn.dropDatabase();
      return conn;
    },
  });
  let a: Auditor;
  let app: Running;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];
  const range = () => ({ from: new Date(Date.now() - 2 * HOUR), to: new Date(Date.now() + HOUR), bucket: 'hour' as const });
  /** Requests of a tenant (none: no tenant); `fail` of them answer 500. */
  const send = async (tenant: string | null, n: number, fail = 0): Promise<void> => {
    for (let i = 0; i < n; i++) {
      const res = await fetch(`${app.url}/${i < fail ? 'fail' : 'p'}/${i}`, { headers: tenant === null ? {} : { 'x-tenant': tenant } });
      await res.text();
    }
  };

  before(async () => {
    mkdirSync(OUTPUT, { recursive: true });
    a = fx.auditor({ collection: 'scoped', flushIntervalMs: 50, degradedAfterMs: 300, tenant: (ctx) => ctx.get('x-tenant') || null });
    a.on('error', () => {}); // the writes failing during the outage are expected; they are retried
    await a.ready();
    const k = new Koa();
    k.silent = true; // the 500s are the test's own
    k.use(a({ exclude: ['/audit/', '/acme-audit/'] }));
    k.use(auditRouter({ auditor: a, prefix: '/audit', authorize: () => true }).routes());
    k.use(auditRouter({ auditor: a, prefix: '/acme-audit', authorize: () => ({ tenant: 'acme' }) }).routes());
    k.use((ctx) => {
      if (ctx.path.startsWith('/fail/')) ctx.throw(500, 'boom');
      ctx.body = 'ok';
    });
    app = await fx.listen(k);
  });

  it('records a degraded period in the trail, and the dashboard shows it (rollups and a fresh count agree)', async () => {
    await send(null, 3);
    await a.flush();
    await server.stop();
    try {
      await send(null, 2); // queued while nothing can be written
      await eventually(() => a.stats().degraded, 15_000);
    } finally {
      await server.restart();
    }
    await eventually(() => !a.stats().degraded, 15_000);
    await a.flush();

    const marks = await a.model.find({ kind: 'security', name: { $in: ['sys_monitor_disabled', 'sys_monitor_enabled'] } }).sort({ ts: 1 }).lean();
    expect(marks.map((m) => [m.name, m.outcome, m.actor?.id])).to.deep.equal([['sys_monitor_disabled', 'failure', 'system'], ['sys_monitor_enabled', 'success', 'system']]);
    const [down, up] = marks as unknown as { _id: unknown; ts: Date; meta: Record<string, unknown> }[];
    expect(down.meta).to.include({ monitor: STORE_MONITOR, collection: 'scoped', degradedAfterMs: 300 });
    expect(down.meta.error).to.be.a('string').and.not.equal('');
    expect(up.meta).to.include({ monitor: STORE_MONITOR, degradedAt: down.ts.toISOString() });
    expect(up.meta.durationMs).to.equal(up.ts.getTime() - down.ts.getTime());
    expect(await a.model.countDocuments({ kind: 'request' })).to.equal(5, 'the requests of the outage were stored once it ended');

    const q = range();
    const d = await a.dashboard(q);
    expect(d.source).to.equal('rollups', String(d.reason));
    const period = { from: down.ts.toISOString(), to: up.ts.toISOString(), startId: String(down._id), endId: String(up._id), error: down.meta.error };
    expect(d.degradedPeriods).to.deep.equal([period]);
    // The rollups written during the outage failed: their hours were recounted, and agree with the events.
    const fresh = await dashboard({ events: () => a.model.collection, rollups: null, degraded: () => false }, q);
    const strip = ({ source: _s, reason: _r, degraded: _d, ...rest }: DashboardAnswer) => rest;
    expect(strip(d)).to.deep.equal(strip(fresh));

    const url = (prefix: string) => `${app.url}/${prefix}/api/dashboard?from=${q.from.toISOString()}&to=${q.to.toISOString()}&bucket=hour`;
    const viaApi = (await (await fetch(url('audit'))).json()) as DashboardAnswer;
    expect(viaApi.degradedPeriods).to.deep.equal([period]);
    // A tenant's dashboard counts that tenant's events: the store's own are not among them.
    const acme = (await (await fetch(url('acme-audit'))).json()) as DashboardAnswer;
    expect(acme.tenant).to.equal('acme');
    expect(acme.degradedPeriods).to.deep.equal([]);
  });

  describe('in the page (headless Chromium)', () => {
    const tile = async (id: string): Promise<number> => Number((await page.textContent(`#${id} a`))?.trim());

    before(async () => {
      await send('acme', 8, 2);
      await send('globex', 4, 1);
      await a.flush();
      browser = await launchChromium(fx);
      page = await watchedPage(browser, { width: 1300, height: 1000 }, errors);
    });

    it('shows the degraded period, linked to its events', async () => {
      await page.goto(`${app.url}/audit/`);
      await dashboardReady(page);
      expect(await page.$$('#degraded li')).to.have.length(1);
      expect(await page.textContent('#degraded')).to.include('failed to write');
      await page.screenshot({ path: join(OUTPUT, 'dashboard-degraded.png'), fullPage: true });
      await page.click('#degraded li a.start');
      expect(await listReady(page)).to.equal(1);
      expect(new URL(page.url()).searchParams.get('name')).to.equal('sys_monitor_disabled');
      await page.goBack();
      await dashboardReady(page);
      await page.click('#degraded li a.end');
      expect(await listReady(page)).to.equal(1);
      expect(new URL(page.url()).searchParams.get('name')).to.equal('sys_monitor_enabled');
      // Narrow and dark: the card fits.
      await page.setViewportSize({ width: 420, height: 900 });
      await page.emulateMedia({ colorScheme: 'dark' });
      await page.goto(`${app.url}/audit/`);
      await dashboardReady(page);
      expect(await page.$$('#degraded li')).to.have.length(1);
      const overflow = await page.evaluate(() => {
        const d = (globalThis as unknown as { document: { documentElement: { scrollWidth: number; clientWidth: number } } }).document;
        return d.documentElement.scrollWidth - d.documentElement.clientWidth;
      });
      expect(overflow).to.be.at.most(0);
      await page.screenshot({ path: join(OUTPUT, 'dashboard-degraded-420-dark.png'), fullPage: false });
      await page.setViewportSize({ width: 1300, height: 1000 });
      await page.emulateMedia({ colorScheme: 'light' });
      expect(errors).to.deep.equal([]);
    });

    it('under a tenant grant, every link lists exactly the events it counts, and carries the tenant', async () => {
      const acme = await a.model.countDocuments({ tenant: 'acme' });
      expect(acme).to.equal(8);
      await page.goto(`${app.url}/acme-audit/`);
      await dashboardReady(page);
      expect(await page.$('#degraded')).to.equal(null);
      expect(await tile('tile-events')).to.equal(acme);
      expect(await tile('tile-5xx')).to.equal(2);
      await page.click('#tile-events a');
      expect(await listReady(page)).to.equal(acme);
      expect(new URL(page.url()).searchParams.get('tenant')).to.equal('acme');
      await page.goBack();
      await dashboardReady(page);
      await page.click('#tile-5xx a');
      expect(await listReady(page)).to.equal(2);
      await page.goBack();
      await dashboardReady(page);
      // A bar of the events chart (its data table's cell), and a row of the routes table.
      const cell = await page.$$eval('#chart-events td[data-series="request"]', (cells) => {
        const list = (cells as unknown as PageNode[]).map((c) => Number(c.dataset.count));
        return { index: list.findIndex((n) => n > 0), count: Math.max(...list) };
      });
      await page.click('#chart-events details.data summary');
      const link = page.locator('#chart-events td[data-series="request"]').nth(cell.index).locator('a');
      expect(new URL(await link.getAttribute('href') ?? '', app.url).searchParams.get('tenant')).to.equal('acme');
      await link.click();
      expect(await listReady(page)).to.equal(cell.count);
      expect(errors).to.deep.equal([]);
    });

    it('under a full grant with ?tenant=, the numbers and their links are that tenant\'s only', async () => {
      await page.goto(`${app.url}/audit/?view=dashboard&tenant=globex`);
      await dashboardReady(page);
      expect(await tile('tile-events')).to.equal(4);
      expect(await page.$('#degraded')).to.equal(null);
      await page.click('#tile-failures a');
      expect(await listReady(page)).to.equal(1);
      expect(new URL(page.url()).searchParams.get('tenant')).to.equal('globex');
      await page.goBack();
      await dashboardReady(page);
      // The routes table: each row's requests, listed.
      const rows = await page.$$eval('#routes tbody tr', (trs) => trs.map((r) => (r as unknown as PageNode).dataset.route ?? ''));
      expect(rows.length).to.be.greaterThan(0);
      const first = await page.textContent('#routes tbody tr:first-child td.requests');
      await page.click('#routes tbody tr:first-child td.requests a');
      expect(await listReady(page)).to.equal(Number(first?.trim()));
      await page.goBack();
      await dashboardReady(page);
      // A range link keeps the tenant (and the dashboard).
      await page.click('#ranges a:first-child');
      await dashboardReady(page);
      expect(new URL(page.url()).searchParams.get('tenant')).to.equal('globex');
      expect(await tile('tile-events')).to.equal(4);
      await page.screenshot({ path: join(OUTPUT, 'dashboard-tenant.png'), fullPage: true });
      expect(errors).to.deep.equal([]);
    });
  });
});
