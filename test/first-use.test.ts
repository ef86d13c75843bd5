/**
 * Bounded shutdown in every state, and clear errors for the mistakes a new user makes first: a connection
 * that is not open, audit() registered after a router or after ctx.body was set, the global plugin applied
 * after the models were compiled.
 */
import { expect } from 'chai';
import Router from '@koa/router';
import Koa from 'koa';
import mongoose, { type Connection } from 'mongoose';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { createAudit, type Auditor } from '../lib/index.js';
import { databaseUri } from './support/database.js';
import { sleep, useFixture } from './support/helpers.js';

/** Runs test/support/first-use-child.ts in a process of its own (TMPDIR: a directory of this test). */
function child(scenario: string, tmp: string): Promise<Record<string, unknown>> {
  const uri = databaseUri(process.env.KOA_AUDIT_TEST_URI as string, 't_first_use_child');
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', join(__dirname, 'support/first-use-child.ts'), scenario, uri], { env: { ...process.env, TMPDIR: tmp }, timeout: 60_000 }, (err, stdout, stderr) => {
      if (err !== null) return reject(new Error(`${err.message}\n${stderr}`));
      resolve(JSON.parse(stdout.trim().split('\n').pop() as string) as Record<string, unknown>);
    });
  });
}

describe('first use: bounded close, clear errors', function () {
  this.timeout(60_000);
  const fx = useFixture('first_use');
  const SLACK = 1500;

  /** Records three events with `a`, then closes it with a 300 ms timeout: resolves with the result and how long it took. */
  async function closeAfterEvents(a: Auditor): Promise<{ unwritten: number; ms: number }> {
    a.on('error', () => {});
    for (let i = 0; i < 3; i++) await a.loginFailed({ identifier: `u${i}`, provider: 'local', reason: 'x' });
    const t = Date.now();
    const { unwritten } = await Promise.race([
      a.close({ timeoutMs: 300 }),
      sleep(300 + 20_000).then(() => ({ unwritten: -1 })),
    ]);
    return { unwritten, ms: Date.now() - t };
  }

  it('close({ timeoutMs }) returns in time when the database was never reachable, and spools what it could not write', async () => {
    const conn = fx.own(mongoose.createConnection('mongodb://127.0.0.1:9/never', { serverSelectionTimeoutMS: 200 }));
    conn.on('error', () => {});
    await conn.asPromise().catch(() => {});
    const dir = fx.tmp();
    const a = createAudit({ connection: conn, collection: 'unreachable', spoolDir: dir });
    const r = await closeAfterEvents(a);
    expect(r.unwritten).to.equal(3, 'spooled, and counted');
    expect(r.ms).to.be.below(300 + SLACK);
  });

  it('close({ timeoutMs }) returns in time when connect() was never called', async () => {
    const conn: Connection = mongoose.createConnection();
    const a = createAudit({ connection: conn, collection: 'never_connected', spoolDir: fx.tmp() });
    const r = await closeAfterEvents(a);
    expect(r.unwritten).to.equal(3);
    expect(r.ms).to.be.below(300 + SLACK);
  });

  it("the auditor's connection not open at the first event: an error at once that says so and names it", async () => {
    const conn = mongoose.createConnection();
    const a = createAudit({ connection: conn, collection: 'not_open', spoolDir: fx.tmp() });
    const errors: Error[] = [];
    a.on('error', (e) => errors.push(e));
    await a.loginFailed({ identifier: 'x', provider: 'local', reason: 'x' });
    expect(errors).to.have.length(1);
    expect(errors[0].message).to.contain('is not open').and.contain('createAudit({ connection })').and.contain('connection.openUri');
    await a.close({ timeoutMs: 100 });
  });

  it('the default audit, with an app that opened its own createConnection(): the error names mongoose.connection, close() returns in time', async () => {
    const out = (await child('default-close', fx.tmp())) as { errors: string[]; result: { unwritten: number }; elapsed: number };
    expect(out.errors[0]).to.contain('mongoose.connection (the default connection)').and.contain('is not open').and.contain('t_first_use_child');
    expect(out.result.unwritten).to.equal(3);
    expect(out.elapsed).to.be.below(500 + SLACK);
  });

  it('mongoose.plugin(audit.plugin) after models were compiled: one warning naming those models', async () => {
    const out = (await child('plugin-late', fx.tmp())) as { warnings: { code: string; message: string }[] };
    expect(out.warnings).to.have.length(1);
    expect(out.warnings[0].code).to.equal('KOA_AUDIT_PLUGIN_LATE');
    expect(out.warnings[0].message).to.contain('EarlyBird, EarlyWorm').and.not.contain('LateComer');
  });

  describe('audit() registered too late', () => {
    async function warningsWhile(fn: () => Promise<void>): Promise<string[]> {
      const seen: string[] = [];
      const on = (w: Error): void => {
        if ((w as { code?: string }).code === 'KOA_AUDIT_ORDER') seen.push(w.message);
      };
      process.on('warning', on);
      try {
        await fn();
        await new Promise((r) => setImmediate(r));
      } finally {
        process.off('warning', on);
      }
      return seen;
    }

    it('after a router: one warning naming the fix', async () => {
      const a = fx.auditor({ collection: 'after_router' });
      const router = new Router();
      router.get('/routed', (ctx) => {
        ctx.body = 'routed';
      });
      const app = new Koa();
      app.use(router.routes());
      app.use(a());
      app.use((ctx) => {
        ctx.body = 'fallthrough';
      });
      const r = await fx.listen(app);
      const warned = await warningsWhile(async () => {
        for (const p of ['/routed', '/other', '/other2']) await (await fetch(r.url + p)).text();
      });
      expect(warned).to.have.length(1);
      expect(warned[0]).to.contain('after a router').and.contain('app.use(audit()) before app.use(router.routes())');
    });

    it('after a middleware that set ctx.body: one warning naming the fix', async () => {
      const a = fx.auditor({ collection: 'after_body' });
      const app = new Koa();
      app.use(async (ctx, next) => {
        ctx.body = 'early';
        await next();
      });
      app.use(a());
      const r = await fx.listen(app);
      const warned = await warningsWhile(async () => {
        for (let i = 0; i < 3; i++) await (await fetch(`${r.url}/b/${i}`)).text();
      });
      expect(warned).to.have.length(1);
      expect(warned[0]).to.contain('ctx.body').and.contain('Register it first');
    });

    it('first: no warning', async () => {
      const a = fx.auditor({ collection: 'first_ok' });
      const router = new Router();
      router.get('/routed', (ctx) => {
        ctx.body = 'routed';
      });
      const app = new Koa();
      app.use(a());
      app.use(router.routes());
      const r = await fx.listen(app);
      const warned = await warningsWhile(async () => {
        await (await fetch(`${r.url}/routed`)).text();
      });
      expect(warned).to.deep.equal([]);
    });
  });
});
