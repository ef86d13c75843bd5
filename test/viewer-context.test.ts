/**
 * The viewer's change-context parts (headless Chromium): "admin as alice", the context section, the link to a
 * trace's events, added/removed elements, and the revert button with its confirming prompt.
 */
import { expect } from 'chai';
import Koa from 'koa';
import { Schema, type Model } from 'mongoose';
import { type Browser, type Page } from 'playwright-core';
import { auditRouter, type Auditor } from '../lib/index.js';
import { launchChromium } from './support/browser.js';
import { useFixture, type Running } from './support/helpers.js';

declare const document: { getElementById(id: string): { textContent: string | null } | null };

const T = '4bf92f3577b34da6a3ce929d0e0e4736';

describe('viewer: change context and revert (headless Chromium)', function () {
  this.timeout(90_000);
  const f = useFixture('viewer_context');
  let a: Auditor;
  let Post: Model<{ title: string; tags: string[] }>;
  let server: Running;
  let browser: Browser;
  let page: Page;
  let postId: string;
  const pageErrors: string[] = [];

  before(async () => {
    a = f.auditor({ collection: 'vc_events' });
    Post = f.conn.model('VcPost', new Schema({ title: String, tags: [String] }).plugin(a.plugin)) as never;
    const p = await Post.create({ title: 'v1', tags: Array.from({ length: 30 }, (_, i) => `t${i}`) });
    postId = String(p._id);
    const app = new Koa();
    app.use(async (ctx, next) => {
      ctx.state.user = { id: 'admin' };
      await next();
    });
    app.use(a({ exclude: ['/audit/'], onBehalfOf: (ctx) => (ctx.get('x-as') === '' ? null : { id: ctx.get('x-as') }) }));
    app.use(auditRouter({ auditor: a, prefix: '/audit', authorize: () => true, authorizeWrite: () => true }).routes());
    app.use(async (ctx) => {
      a.annotate({ reason: 'ticket 5' });
      await Post.updateOne({ _id: postId }, { $set: { title: 'v2' }, $push: { tags: 'new' } });
      ctx.body = 'ok';
    });
    server = await f.listen(app);
    await (await fetch(`${server.url}/edit`, { headers: { 'x-as': 'alice', traceparent: `00-${T}-00f067aa0ba902b7-01` } })).text();
    await a.flush();
    browser = await launchChromium(f);
    page = await browser.newPage({ viewport: { width: 1500, height: 1000 } });
    page.on('pageerror', (err) => pageErrors.push(err.message));
  });

  const loaded = async (): Promise<void> => {
    await page.waitForFunction(() => {
      const s = document.getElementById('status')?.textContent ?? '';
      return s !== '' && s !== 'Loading…';
    });
  };

  it('shows "admin as alice", the reason, the trace link, the added element, and reverts after the prompt', async () => {
    const update = (await a.query({ kind: 'update' })).items[0];
    await page.goto(`${server.url}/audit/?view=events`); // `/audit/` opens on the dashboard
    await loaded();
    const row = page.locator(`#events tbody tr[data-id="${String(update._id)}"]`);
    expect(await row.textContent()).to.include('admin as alice');
    await row.locator('td.time button').click(); // the rest of a row holds click-to-filter links
    const detail = (await page.textContent('#detail')) ?? '';
    expect(detail).to.include('ticket 5');
    expect(detail).to.include(T);
    expect(detail).to.include('+ ["new"]');
    await page.click(`text=All events of trace ${T}`);
    await loaded();
    expect(new URL(page.url()).searchParams.get('traceId')).to.equal(T);
    expect(await page.locator('#events tbody tr[data-id]').count()).to.equal(2); // the request and its update
    await page.locator(`#events tbody tr[data-id="${String(update._id)}"] td.time button`).click();
    page.once('dialog', (d) => void d.accept('viewer undo'));
    await page.click('button.revert-button');
    await page.waitForSelector('text=Reverted (update).');
    const now = await Post.findById(postId).lean();
    expect(now?.title).to.equal('v1');
    expect(now?.tags).to.have.length(30);
    await a.flush();
    const undo = (await a.query({ reason: 'viewer undo' })).items;
    expect(undo.map((e) => e.kind)).to.include('update');
    expect(undo.find((e) => e.kind === 'update')?.meta).to.deep.equal({ revertOf: String(update._id) });
    expect(pageErrors).to.deep.equal([]);
  });

  it('a cancelled prompt reverts nothing', async () => {
    const update = (await a.query({ kind: 'update', reason: 'viewer undo' })).items[0];
    await page.goto(`${server.url}/audit/?kind=update`);
    await loaded();
    await page.locator(`#events tbody tr[data-id="${String(update._id)}"] td.time button`).click();
    const before = await a.model.countDocuments();
    page.once('dialog', (d) => void d.dismiss());
    await page.click('button.revert-button');
    await a.flush();
    expect(await a.model.countDocuments()).to.equal(before);
  });
});
