/**
 * Chromium for the page tests: Debian's, headless, no network of its own, closed by the file's fixture. One
 * launch for every file, so that a flag one page needs (or Chromium's next version refuses) changes in one place.
 */
import { chromium, type Browser } from 'playwright-core';

const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];

export async function launchChromium(fx: { own<T extends { close(): unknown }>(thing: T): T }): Promise<Browser> {
  return fx.own(await chromium.launch({ executablePath: CHROMIUM, args: ARGS }));
}
