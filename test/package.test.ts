import { expect } from 'chai';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { startTestIssuer } from './support/oidc-provider.js';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { launchChromium } from './support/browser.js';
import { useFixture } from './support/helpers.js';

const root = join(__dirname, '..');
const node = (args: string[]): string => execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' }).trim();

describe('the built package', function () {
  this.timeout(180_000);
  const fx = useFixture('package', { database: false });

  before(() => {
    execFileSync(process.execPath, [join(root, 'scripts/build.mjs')], { cwd: root, stdio: 'pipe' });
    expect(existsSync(join(root, 'dist/cjs/index.d.ts'))).to.equal(true, 'declarations are emitted');
  });

  it('loads with require()', () => {
    const out = node(['-e', `
      const k = require('koa-audit');
      const { audit, createAudit } = k;
      console.log([typeof audit, typeof createAudit, typeof audit.plugin, typeof audit.flush, k.default === audit].join(','));
    `]);
    expect(out).to.equal('function,function,function,function,true');
  });

  it('loads with import, and both ways share one instance', () => {
    const out = node(['--input-type=module', '-e', `
      import audit, { createAudit, audit as named } from 'koa-audit';
      import { createRequire } from 'node:module';
      const cjs = createRequire(import.meta.url)('koa-audit');
      console.log([typeof audit, typeof createAudit, audit === named, audit === cjs.audit].join(','));
    `]);
    expect(out).to.equal('function,function,true,true');
  });

  // What importing the package does: nothing. Run in a child with an empty TMPDIR, so that a directory made
  // anywhere under the OS temp dir (the default spool) is seen.
  const probe = (load: string): Record<string, unknown> => {
    const tmp = fx.tmp();
    const script = `(async () => {
      ${load}
      const { readdirSync, existsSync } = require('node:fs');
      const mongoose = require('mongoose');
      const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
      const seen = { type: typeof k.audit, models: mongoose.modelNames().length + mongoose.connection.modelNames().length,
        files: readdirSync(process.env.TMPDIR).length, timers: timers() };
      const own = k.createAudit({ connection: mongoose.createConnection(), spoolDir: process.env.TMPDIR + '/own' });
      seen.afterCreate = { defaultModels: mongoose.connection.modelNames().length, defaultSpool: readdirSync(process.env.TMPDIR).some((n) => n.startsWith('koa-audit-spool')) };
      void k.audit.plugin; // the first use of the default instance brings it to life
      seen.afterUse = { defaultSpool: readdirSync(process.env.TMPDIR).some((n) => n.startsWith('koa-audit-spool')) };
      console.log(JSON.stringify(seen));
      process.exit(0);
    })();`;
    const out = execFileSync(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, TMPDIR: tmp } });
    return JSON.parse(out.trim()) as Record<string, unknown>;
  };

  for (const [how, load] of [['require', "const k = require('koa-audit');"], ['import', "const k = await import('koa-audit');"]] as const) {
    it(`does nothing at ${how}: no model, no directory, no timer; createAudit() leaves the default instance alone`, () => {
      const seen = probe(load);
      expect(seen).to.deep.equal({
        type: 'function', models: 0, files: 0, timers: 0,
        afterCreate: { defaultModels: 0, defaultSpool: false },
        afterUse: { defaultSpool: true },
      });
    });
  }

  it('exports types for import and for require', () => {
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    // Throws (failing the test) with tsc's diagnostics when either entry's types do not resolve or check.
    const out = execFileSync(process.execPath, [tsc, '-p', join(root, 'test/fixtures/package/tsconfig.json')], { cwd: root, encoding: 'utf8' });
    expect(out.trim()).to.equal('');
  });

  it('loads openid-client (ES module only) from the CommonJS build at first use: oidcRouter discovers a real issuer', async () => {
    const issuer = fx.own(await startTestIssuer({ clientSecret: 'package-test-secret' }));
    await issuer.setRedirectUri('http://127.0.0.1:1/auth/oidc/callback');
    const script = `
      const { createAudit, oidcRouter } = require('koa-audit');
      const Koa = require('koa');
      const mongoose = require('mongoose');
      const a = createAudit({ connection: mongoose.createConnection(), spoolDir: require('node:os').tmpdir() + '/ka-package-oidc' });
      const app = new Koa();
      app.use(oidcRouter({ signals: a, issuer: process.env.ISSUER, clientId: process.env.CLIENT_ID, clientSecret: 's', onLogin: () => {} }).routes());
      const server = app.listen(0, '127.0.0.1', async () => {
        const res = await fetch('http://127.0.0.1:' + server.address().port + '/auth/oidc/login', { redirect: 'manual' });
        const to = new URL(res.headers.get('location'));
        console.log(res.status, to.origin === process.env.ISSUER, to.pathname, to.searchParams.get('code_challenge_method'));
        process.exit(0);
      });`;
    // Not execFileSync: the issuer answers from this process, whose event loop must keep running.
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { cwd: root, encoding: 'utf8', env: { ...process.env, ISSUER: issuer.url, CLIENT_ID: issuer.clientId } });
    expect(stdout.trim()).to.equal('302 true /auth S256');
  });

  it('ships the viewer: its browser script and uPlot reach dist, and the page runs from there without an error', async () => {
    expect(readFileSync(join(root, 'dist/cjs/read/viewer-page.js'), 'utf8')).to.equal(readFileSync(join(root, 'lib/read/viewer-page.js'), 'utf8'));
    // A server on the built package, over a reader that answers a fixed dashboard (no database needed).
    const server = spawn(process.execPath, ['-e', `
      const Koa = require('koa');
      const { auditRouter } = require('koa-audit');
      const point = (ts, n) => ({ ts, events: n, byKind: { request: n }, failuresByKind: {}, failures: 0, status: { '2xx': n }, loginFailed: 0, loginFailedAttempts: 0, lost: 0 });
      const answer = { source: 'rollups', reason: null, from: '2026-01-01T00:00:00.000Z', to: '2026-01-01T02:00:00.000Z', bucket: 'hour', bucketMs: 3600000, tenant: null,
        totals: point(undefined, 5), series: [point('2026-01-01T00:00:00.000Z', 2), point('2026-01-01T01:00:00.000Z', 3)],
        topFailedIdentifiers: [], topFailedIps: [], topActors: [], topModels: [], topDocuments: [], routes: [], overflow: {}, losses: [], degraded: false };
      const reader = Object.assign(() => {}, { query: async () => ({ items: [], next: null }), history: async () => [], dashboard: async () => answer, model: {} });
      const app = new Koa();
      app.use(auditRouter({ auditor: reader, prefix: '/audit', authorize: () => true }).routes());
      const s = app.listen(0, '127.0.0.1', () => console.log('port ' + s.address().port));
    `], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    fx.cleanup(() => server.kill());
    const [line] = (await once(server.stdout, 'data')) as [Buffer];
    const url = `http://127.0.0.1:${/port (\d+)/.exec(String(line))?.[1]}/audit/`;
    const res = await fetch(url);
    const html = await res.text();
    const script = readFileSync(join(root, 'lib/read/viewer-page.js'), 'utf8');
    expect(res.headers.get('content-security-policy')).to.include(`'sha256-${createHash('sha256').update(script).digest('base64')}'`);
    expect(html).to.include(script);
    const browser = await launchChromium(fx);
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => void (m.type() === 'error' && errors.push(m.text())));
    await page.goto(url);
    await page.waitForSelector('#dashboard[data-ready="1"] #chart-events .uplot');
    expect(await page.$$eval('#chart-events td[data-series="request"]', (c) => c.map((x) => (x as unknown as { dataset: { count: string } }).dataset.count))).to.deep.equal(['2', '3']);
    expect(errors).to.deep.equal([]);
  });
});
