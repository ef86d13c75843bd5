/**
 * Chromium for the page tests: Debian's, headless, no network of its own, closed by the file's fixture. One
 * launch for every file, so that a flag one page needs (or Chromium's next version refuses) changes in one place;
 * and the waits on the viewer's own signals (data-ready, the list's count) that the page tests share.
 */
import { chromium, type Browser, type Page } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];

/** The few browser globals the in-page callbacks use: this project compiles without the DOM lib. */
export interface PageNode {
  textContent: string | null;
  dataset: Record<string, string | undefined>;
}

export async function launchChromium(fx: { own<T extends { close(): unknown }>(thing: T): T }): Promise<Browser> {
  return fx.own(await chromium.launch({ executablePath: CHROMIUM, args: ARGS }));
}

/** A page whose script errors, console errors and console warnings are collected in `errors`. */
export async function watchedPage(browser: Browser, viewport: { width: number; height: number }, errors: string[]): Promise<Page> {
  const page = await browser.newPage({ viewport });
  page.on('pageerror', (err) => errors.push(err.message));
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') errors.push(msg.text());
  });
  return page;
}

/** Waits for the viewer's dashboard to have answered and drawn its first chart. */
export async function dashboardReady(page: Page): Promise<void> {
  await page.waitForSelector('#dashboard[data-ready="1"] #chart-events .uplot');
}

/** Waits for the viewer's event list to have loaded, and returns its count. */
export async function listReady(page: Page): Promise<number> {
  await page.waitForFunction(() => {
    const d = (globalThis as unknown as { document: { getElementById(id: string): PageNode | null } }).document;
    const s = d.getElementById('status')?.textContent ?? '';
    return s !== '' && s !== 'Loading…' && d.getElementById('count')?.dataset.count !== undefined;
  });
  return Number(await page.getAttribute('#count', 'data-count'));
}
