import { expect } from 'chai';
import Koa from 'koa';
import { mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { type Browser, type Page } from 'playwright-core';
import { auditRouter, type Auditor } from '../lib/index.js';
import { ids, newestFirst, sampleEvents, type RawEvent } from './support/events.js';
import { launchChromium } from './support/browser.js';
import { useFixture, type Running } from './support/helpers.js';

/** The few browser globals the in-page callbacks use: this project compiles without the DOM lib. */
interface PageNode {
  textContent: string | null;
  dataset: Record<string, string | undefined>;
}
declare const document: {
  getElementById(id: string): PageNode | null;
  querySelector(selector: string): PageNode | null;
  addEventListener(type: 'securitypolicyviolation', listener: (e: { violatedDirective: string; blockedURI: string }) => void): void;
};
declare const window: { __pwned?: number; __cspViolation(v: string): void };

const OUTPUT = resolve(__dirname, 'output');
const PWNED = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>';

describe('viewer page (headless Chromium)', function () {
  this.timeout(60_000);
  const fx = useFixture('viewer');
  let a: Auditor;
  let server: Running;
  let browser: Browser;
  let page: Page;
  const cspViolations: string[] = [];
  const pageErrors: string[] = [];
  const all: RawEvent[] = sampleEvents(260);
  // The newest event carries markup everywhere an attacker could put it.
  const hostile: RawEvent = {
    ...sampleEvents(1, Date.UTC(2026, 5, 1))[0],
    kind: 'request',
    outcome: 'failure',
    actor: { id: PWNED, name: PWNED, via: 'jwt' },
    requestId: 'hostile-req',
    userAgent: PWNED,
    http: { method: 'GET', path: `/x/${PWNED}`, route: null, query: `q=${PWNED}`, status: 500, durationMs: 12 },
    error: { name: 'TypeError', message: `cannot read ${PWNED}`, status: 500, stack: `TypeError: cannot read\n    at handler (${PWNED})` },
  };
  all.push(hostile);

  /** Waits until the list has answered (the status line leaves "Loading…"). */
  const loaded = async (): Promise<string> => {
    await page.waitForFunction(() => {
      const s = document.getElementById('status')?.textContent ?? '';
      return s !== '' && s !== 'Loading…';
    });
    return (await page.textContent('#status')) ?? '';
  };
  const rowIds = (): Promise<string[]> => page.$$eval('#events tbody tr[data-id]', (rows) => rows.map((r) => (r as unknown as PageNode).dataset.id ?? ''));
  const expected = async (filter: Parameters<Auditor['query']>[0]): Promise<string[]> => ids((await a.query(filter)).items);

  before(async () => {
    mkdirSync(OUTPUT, { recursive: true });
    a = fx.auditor({ collection: 'v_events' });
    await a.ready();
    await a.model.collection.insertMany(all);
    const app = new Koa();
    // The viewer's own reads are excluded here so that the list stays exactly the inserted events.
    app.use(a({ exclude: ['/audit', '/audit/'] }));
    app.use(auditRouter({ auditor: a, prefix: '/audit', authorize: () => true }).routes());
    server = await fx.listen(app);
    browser = await launchChromium(fx);
    page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (msg) => {
      // The 400 the malformed-filter test provokes is logged by Chromium itself; anything else is a fault.
      if (msg.type() === 'error' && !/status of 400/.test(msg.text())) pageErrors.push(msg.text());
    });
    await page.exposeFunction('__cspViolation', (v: string) => cspViolations.push(v));
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        window.__cspViolation(`${e.violatedDirective} ${e.blockedURI}`);
      });
    });
  });

  it('loads the newest page of events, escaping hostile data, with no CSP violation', async () => {
    const res = await page.goto(`${server.url}/audit?view=events`);
    expect(res?.status()).to.equal(200);
    expect(new URL(page.url()).pathname).to.equal('/audit/');
    expect(await loaded()).to.equal('50 events on this page');
    expect(await rowIds()).to.deep.equal(ids([...all].sort(newestFirst).slice(0, 50)));
    const firstRow = await page.textContent('#events tbody tr:first-child');
    expect(firstRow).to.include(`/x/${PWNED}`);
    expect(await page.$$('#events img, #events script')).to.have.length(0);
    expect(await page.evaluate(() => window.__pwned)).to.equal(undefined);
    expect(await page.isDisabled('#newer')).to.equal(true);
    expect(await page.isEnabled('#older')).to.equal(true);
    expect(cspViolations).to.deep.equal([]);
    expect(pageErrors).to.deep.equal([]);
  });

  it('filters by kind, model, outcome and time range, and keeps the filter in the URL', async () => {
    await page.check('input[name=kind][value=update]');
    await page.check('input[name=kind][value=create]');
    await page.fill('input[name=model]', 'Post');
    await page.selectOption('select[name=outcome]', 'success');
    await page.fill('input[name=from]', all[40].ts.toISOString().slice(0, 19));
    await page.fill('input[name=to]', all[220].ts.toISOString().slice(0, 19));
    await page.click('button[type=submit]');
    await loaded();
    const want = await expected({ kind: ['update', 'create'], model: 'Post', outcome: 'success', from: all[40].ts, to: all[220].ts });
    expect(want.length).to.be.within(1, 49);
    expect(await rowIds()).to.deep.equal(want);
    const url = new URL(page.url());
    expect(url.searchParams.getAll('kind')).to.deep.equal(['create', 'update']);
    expect(url.searchParams.get('model')).to.equal('Post');
    expect(url.searchParams.get('from')).to.equal(all[40].ts.toISOString().slice(0, 19) + 'Z');

    await page.fill('input[name=actorId]', 'u3');
    await page.click('button[type=submit]');
    await loaded();
    expect(await rowIds()).to.deep.equal(await expected({ kind: ['update', 'create'], model: 'Post', outcome: 'success', actorId: 'u3', from: all[40].ts, to: all[220].ts }));

    await page.fill('input[name=actorId]', 'nobody-at-all');
    await page.click('button[type=submit]');
    expect(await loaded()).to.equal('No events match these filters.');
    expect(await rowIds()).to.deep.equal([]);

    // A malformed filter (a document id over the server's length cap) shows the server's 400 message.
    await page.click('#clear');
    await loaded();
    await page.fill('input[name=documentId]', 'd'.repeat(5000));
    await page.click('button[type=submit]');
    expect(await loaded()).to.match(/Error 400: .*"documentId" must be a non-empty string of at most 4096 characters/);
    expect(await page.getAttribute('#status', 'class')).to.equal('error');
  });

  it('pages older and newer on the server', async () => {
    await page.click('#clear');
    await loaded();
    await page.selectOption('select[name=limit]', '25');
    await page.click('button[type=submit]');
    await loaded();
    const sorted = ids([...all].sort(newestFirst));
    expect(await rowIds()).to.deep.equal(sorted.slice(0, 25));
    await page.click('#older');
    await loaded();
    expect(await rowIds()).to.deep.equal(sorted.slice(25, 50));
    expect(await page.textContent('#pageinfo')).to.equal('Page 2');
    await page.click('#older');
    await loaded();
    expect(await rowIds()).to.deep.equal(sorted.slice(50, 75));
    await page.click('#newer');
    await loaded();
    expect(await rowIds()).to.deep.equal(sorted.slice(25, 50));
    await page.click('#newer');
    await loaded();
    expect(await rowIds()).to.deep.equal(sorted.slice(0, 25));
    expect(await page.isDisabled('#newer')).to.equal(true);
  });

  it("opens a change's detail: the diff field by field, and links to its request and its document's history", async () => {
    const update = [...all].sort(newestFirst).slice(0, 25).find((e) => e.kind === 'update')!;
    await page.click(`#events tbody tr[data-id="${update._id.toHexString()}"] button`);
    await page.waitForSelector('#detail:not([hidden])');
    const diff = await page.$$eval('#detail table.diff tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent)));
    const change = (update.changes as { path: string; from: unknown; to: unknown }[])[0];
    expect(diff).to.deep.equal([[change.path, JSON.stringify(change.from), JSON.stringify(change.to)]]);
    expect(await page.textContent('#detail')).to.include(update.documentId as string);

    await page.click('#detail .history-button');
    await page.waitForSelector('#detail .history .history-item, #detail .history .empty:not(:empty)');
    await page.waitForFunction(() => !document.querySelector('#detail .history')?.textContent?.includes('Loading'));
    const history = (await a.history(update.model as string, update.documentId as string)).length;
    expect(history).to.be.greaterThan(0);
    expect(await page.$$('#detail .history .history-item')).to.have.length(history);
    await page.screenshot({ path: join(OUTPUT, 'viewer-change-detail.png'), fullPage: false });

    await page.click(`#detail a.nav:has-text("All events of request")`);
    await loaded();
    expect(new URL(page.url()).searchParams.get('requestId')).to.equal(update.requestId);
    expect(await page.inputValue('input[name=requestId]')).to.equal(update.requestId);
    expect(await rowIds()).to.deep.equal(await expected({ requestId: update.requestId as string }));
  });

  it("opens a failed request's detail with its error, all of it as text", async () => {
    await page.goto(`${server.url}/audit/?requestId=hostile-req`);
    await loaded();
    expect(await rowIds()).to.deep.equal([hostile._id.toHexString()]);
    await page.click('#events tbody tr:first-child');
    await page.waitForSelector('#detail:not([hidden])');
    const text = (await page.textContent('#detail')) ?? '';
    expect(text).to.include(`cannot read ${PWNED}`);
    expect(await page.textContent('#detail pre.stack')).to.equal(String((hostile.error as { stack: string }).stack));
    expect(text).to.include(`/x/${PWNED}`);
    expect(await page.$$('#detail img, #detail script')).to.have.length(0);
    expect(await page.evaluate(() => window.__pwned)).to.equal(undefined);

    const shot = join(OUTPUT, 'viewer.png');
    await page.screenshot({ path: shot, fullPage: true });
    expect(statSync(shot).size).to.be.greaterThan(10_000);
    expect(statSync(shot).mtimeMs).to.be.greaterThan(Date.now() - 60_000);
    expect(cspViolations).to.deep.equal([]);
    expect(pageErrors).to.deep.equal([]);
  });
});
