/**
 * The dashboard page in headless Chromium over a trail this test wrote with known numbers: each chart and table
 * shows exactly those numbers (read from the DOM: the charts' data tables and the lists), following a bar or a
 * row opens the event list with the matching count, and nothing logs an error. Screenshots go to test/output/.
 */
import { expect } from 'chai';
import Koa from 'koa';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { mongo } from 'mongoose';
import { type Browser, type Page } from 'playwright-core';
import { auditRouter, type Auditor } from '../lib/index.js';
import type { RawEvent } from './support/events.js';
import { dashboardReady, launchChromium, listReady, watchedPage, type PageNode } from './support/browser.js';
import { useFixture, type Running } from './support/helpers.js';


const OUTPUT = resolve(__dirname, 'output');
const HOUR = 3_600_000;

/** The trail: every number the page must show is counted here. */
function trail(): RawEvent[] {
  const base = Math.floor(Date.now() / HOUR) * HOUR - 5 * HOUR;
  const list: RawEvent[] = [];
  let i = 0;
  const ev = (hour: number, fields: Partial<RawEvent> & Pick<RawEvent, 'kind'>): RawEvent => {
    const e: RawEvent = {
      _id: new mongo.ObjectId(),
      ts: new Date(base + hour * HOUR + (i++ % 50) * 60_000 + 1000),
      outcome: 'success', actor: null, requestId: `r${i}`, ip: '10.0.0.1', userAgent: 'test', ...fields,
    };
    list.push(e);
    return e;
  };
  const request = (hour: number, method: string, route: string | null, path: string, status: number, durationMs: number, requestId?: string): RawEvent =>
    ev(hour, { kind: 'request', outcome: status >= 400 ? 'failure' : 'success', ...(requestId ? { requestId } : {}), http: { method, path, route, query: '', status, durationMs } });
  for (let n = 0; n < 35; n++) request(n % 3, 'GET', '/posts/:id', `/posts/${n}`, 200, 5);
  for (let n = 0; n < 5; n++) request(1, 'GET', '/posts/:id', `/posts/x${n}`, 500, 800);
  for (let n = 0; n < 9; n++) request(2, 'POST', '/slow', '/slow', 200, 1500);
  request(2, 'POST', '/slow', '/slow', 200, 1500, 'req-ann');
  for (let n = 0; n < 3; n++) request(3, 'GET', null, '/wp-login.php', 404, 2);
  const failed = (identifier: string, ip: string | null, meta?: Record<string, unknown>): RawEvent =>
    ev(3, { kind: 'login_failed', outcome: 'failure', provider: 'local', identifier, ip, reason: meta ? 'flood_summary' : 'bad password', ...(meta ? { meta } : {}) });
  for (let n = 0; n < 6; n++) failed('admin', '203.0.113.9');
  for (let n = 0; n < 2; n++) failed('alice', '198.51.100.7');
  failed('admin', null, { summary: true, key: 'identifier', suppressed: 30, total: 36 });
  for (let n = 0; n < 5; n++) {
    ev(2, { kind: 'update', requestId: 'req-ann', actor: { id: 'u-ann', name: 'Ann', via: 'state' }, model: 'Post', collectionName: 'posts', documentId: n < 3 ? 'p1' : 'p2', documentLabel: n < 3 ? 'First post' : 'Second post', operation: 'updateOne', changes: [{ path: 'title', from: 'a', to: 'b' }] });
  }
  for (let n = 0; n < 2; n++) ev(4, { kind: 'create', actor: { id: 'u-bob', via: 'state' }, model: 'User', collectionName: 'users', documentId: `x${n}`, operation: 'save', changes: [{ path: 'name', from: null, to: 'x' }] });
  for (let n = 0; n < 3; n++) ev(4, { kind: 'login', actor: { id: 'u-ann', via: 'explicit' }, provider: 'local', identifier: 'ann' });
  ev(4, { kind: 'loss', outcome: 'failure', actor: { id: 'system', via: 'system' }, requestId: null, ip: null, meta: { lost: 4, from: new Date(base).toISOString(), to: new Date(base + 1000).toISOString(), policy: 'drop' } });
  return list;
}

describe('dashboard page (headless Chromium)', function () {
  this.timeout(90_000);
  const fx = useFixture('dashboard');
  let a: Auditor;
  let server: Running;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];
  const events = trail();

  const text = (selector: string): Promise<string> => page.textContent(selector).then((t) => (t ?? '').trim());
  /** Per series, the sum of a chart's data table. */
  const chartTotals = (id: string): Promise<Record<string, number>> =>
    page.$$eval(`#${id} table.datatable td[data-series]`, (cells) => {
      const out: Record<string, number> = {};
      for (const c of cells as unknown as PageNode[]) out[c.dataset.series ?? ''] = (out[c.dataset.series ?? ''] ?? 0) + Number(c.dataset.count);
      return out;
    });
  const top = (id: string): Promise<[string, number, number][]> =>
    page.$$eval(`#${id} li`, (items) => (items as unknown as PageNode[]).map((li) => [li.dataset.key ?? '', Number(li.dataset.events), Number(li.dataset.attempts)] as [string, number, number]));

  before(async () => {
    mkdirSync(OUTPUT, { recursive: true });
    a = fx.auditor({ collection: 'd_events' });
    await a.ready();
    await a.model.collection.insertMany(events);
    // Written around the store: the rollups learn of them by a rebuild, as `koa-audit rollup --rebuild` does.
    expect(await a.rebuildRollups()).to.equal(events.length);
    const app = new Koa();
    app.use(a({ exclude: ['/audit/'] }));
    app.use(auditRouter({ auditor: a, prefix: '/audit', authorize: () => true }).routes());
    server = await fx.listen(app);
    browser = await launchChromium(fx);
    page = await watchedPage(browser, { width: 1400, height: 1000 }, errors);
  });

  it('opens on the dashboard, from the rollups, with every known number', async () => {
    await page.goto(`${server.url}/audit/`);
    await dashboardReady(page);
    expect(new URL(page.url()).search).to.equal('');
    expect(await page.getAttribute('#source', 'data-source')).to.equal('rollups');
    expect(await text('#tile-events a')).to.equal(String(events.length));
    expect(await text('#tile-login-failed a')).to.equal('9');
    expect(await text('#tile-5xx a')).to.equal('5');
    expect(await chartTotals('chart-events')).to.deep.equal({ request: 53, update: 5, create: 2, login: 3, login_failed: 9, loss: 1, failures: 5 + 3 + 9 + 1 });
    expect(await chartTotals('chart-status')).to.deep.equal({ '2xx': 45, '4xx': 3, '5xx': 5 });
    expect(await chartTotals('chart-logins')).to.deep.equal({ 'failed logins': 9 });
    expect(await top('top-identifiers')).to.deep.equal([['admin', 7, 36], ['alice', 2, 2]]);
    expect(await top('top-ips')).to.deep.equal([['203.0.113.9', 6, 6], ['198.51.100.7', 2, 2]]);
    expect(await top('top-actors')).to.deep.equal([['u-ann', 5, 5], ['u-bob', 2, 2]]);
    expect(await top('top-models')).to.deep.equal([['Post', 5, 5], ['User', 2, 2]]);
    expect((await top('top-documents'))[0]).to.deep.equal(['["Post","p1"]', 3, 3]);
    const routes = await page.$$eval('#routes tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => (td.textContent ?? '').trim())));
    expect(routes).to.deep.equal([
      ['GET', '/posts/:id', '40', '5', '12.5%', '5', '1000'],
      ['POST', '/slow', '10', '0', '0.0%', '2000', '2000'],
      ['GET', '/wp-login.php (no route)', '3', '3', '100.0%', '2', '2'],
    ]);
    expect(await text('#losses')).to.include('4 events could not be kept');
    await page.click('#routes th[data-key="p95"]');
    expect(await page.$$eval('#routes tbody tr', (rows) => rows.map((r) => (r as unknown as PageNode).dataset.route))).to.deep.equal(['/slow POST', '/posts/:id GET', '/wp-login.php GET']);
    await page.screenshot({ path: join(OUTPUT, 'dashboard.png'), fullPage: true });
    expect(errors).to.deep.equal([]);
  });

  it('follows a bar, a top row and a route to the list of exactly the events they count', async () => {
    // The bucket with the most requests, from the events chart's data table.
    const cell = await page.$$eval('#chart-events td[data-series="request"]', (cells) => {
      const list = (cells as unknown as PageNode[]).map((c) => Number(c.dataset.count));
      const max = Math.max(...list);
      return { index: list.indexOf(max), count: max };
    });
    await page.click('#chart-events details.data summary');
    await page.locator('#chart-events td[data-series="request"]').nth(cell.index).locator('a').click();
    expect(await listReady(page)).to.equal(cell.count);
    expect(new URL(page.url()).searchParams.getAll('kind')).to.deep.equal(['request']);

    await page.goBack();
    await dashboardReady(page);
    await page.click('#top-identifiers li[data-key="admin"] a');
    expect(await listReady(page)).to.equal(7);
    await page.goBack();
    await dashboardReady(page);
    await page.click('#routes tr[data-route="/posts/:id GET"] td.errors a');
    expect(await listReady(page)).to.equal(5);
    await page.goBack();
    await dashboardReady(page);
    await page.click('#top-documents li:first-child a');
    expect(await listReady(page)).to.equal(3);
    expect(await page.textContent('#events tbody')).to.include('“First post”');
    expect(errors).to.deep.equal([]);
  });

  it('a click on a chart bar opens the list of that bucket and kind', async () => {
    await page.goto(`${server.url}/audit/?range=24h`);
    await dashboardReady(page);
    const over = (await page.$('#chart-status .u-over'))!;
    const box = (await over.boundingBox())!;
    const counts = await page.$$eval('#chart-status td[data-series="2xx"]', (cells) => (cells as unknown as PageNode[]).map((c) => Number(c.dataset.count)));
    const idx = counts.findIndex((n) => n > 0);
    // The x scale is the whole range, a bar in the middle of its bucket; near the base is the 2xx band (the bottom one).
    const x = box.x + ((idx + 0.5) / counts.length) * box.width;
    await page.mouse.move(x, box.y + box.height - 3);
    await page.mouse.click(x, box.y + box.height - 3);
    expect(await listReady(page)).to.equal(counts[idx]);
    const p = new URL(page.url()).searchParams;
    expect([p.get('kind'), p.get('statusClass')]).to.deep.equal(['request', '2xx']);
  });

  it('investigates: reload keeps page 3, a request row shows what it caused, downloads, free text, actor page', async () => {
    await page.goto(`${server.url}/audit/?view=events&limit=25`);
    expect(await listReady(page)).to.equal(events.length);
    await page.click('#older');
    await listReady(page);
    await page.click('#older');
    await listReady(page);
    const rows = await page.$$eval('#events tbody tr[data-id]', (r) => (r as unknown as PageNode[]).map((x) => x.dataset.id));
    await page.reload();
    await listReady(page);
    expect(await text('#pageinfo')).to.equal('Page 3');
    expect(await page.$$eval('#events tbody tr[data-id]', (r) => (r as unknown as PageNode[]).map((x) => x.dataset.id))).to.deep.equal(rows);

    await page.goto(`${server.url}/audit/?requestId=req-ann`);
    await listReady(page);
    await page.waitForSelector('#events button.related');
    expect(await page.getAttribute('#events button.related', 'data-changes')).to.equal('5');
    await page.click('#events button.related');
    await page.waitForSelector('#events tr.sub');
    expect(await page.$$('#events tr.sub')).to.have.length(5);

    const csv = await (await fetch(`${server.url}/audit/api/export?format=csv&kind=login_failed`)).text();
    expect(csv.trimEnd().split('\r\n')).to.have.length(1 + 9);
    expect(await page.getAttribute('#download-csv', 'href')).to.equal('api/export?format=csv&requestId=req-ann&auditRead=false');

    await page.goto(`${server.url}/audit/?view=events&q=wp-login`);
    expect(await listReady(page)).to.equal(3);
    const notice = await page.$eval('#notice', (n) => ({ hidden: (n as unknown as { hidden: boolean }).hidden, text: n.textContent }));
    if (notice.hidden) expect(notice.text).to.equal('');
    else {
      console.log(`      (free text: ${notice.text})`);
      expect(notice.text).to.match(/scanning/);
    }

    await page.goto(`${server.url}/audit/?view=actor&actorId=u-ann`);
    await page.waitForSelector('#actor .timeline .history-item');
    expect(await page.$$('#actor .timeline .history-item')).to.have.length(8);
    expect(errors).to.deep.equal([]);
  });

  it('stays usable at 420 px and in dark mode, without errors', async () => {
    await page.setViewportSize({ width: 420, height: 900 });
    await page.emulateMedia({ colorScheme: 'dark' });
    await page.goto(`${server.url}/audit/?range=7d`);
    await dashboardReady(page);
    const overflow = await page.evaluate(() => {
      const d = (globalThis as unknown as { document: { documentElement: { scrollWidth: number; clientWidth: number } } }).document;
      return d.documentElement.scrollWidth - d.documentElement.clientWidth;
    });
    expect(overflow).to.be.at.most(0);
    await page.screenshot({ path: join(OUTPUT, 'dashboard-420-dark.png'), fullPage: true });
    await page.goto(`${server.url}/audit/?view=events`);
    await listReady(page);
    await page.screenshot({ path: join(OUTPUT, 'events-420-dark.png'), fullPage: false });
    expect(errors).to.deep.equal([]);
  });
});
