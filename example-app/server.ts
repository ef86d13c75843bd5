/**
 * `npm start`: the example app on http://127.0.0.1:3000 (PORT to change it). Uses MONGODB_URI when set,
 * else the test harness's database (a real mongod when one can be had, else FerretDB), whose data is kept
 * across restarts in `.koa-audit-example/` (git-ignored; KOA_AUDIT_EXAMPLE_DATA names another folder) unless
 * `npm start -- --fresh` is given. Shuts down gracefully on SIGTERM/SIGINT: stops accepting requests, then
 * `auditor.close()` stores every queued event.
 */
import { rmSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import mongoose from 'mongoose';
import { createAudit } from '../lib/index.js';
import { databaseUri, startDatabase, stopDatabase } from '../test/support/database.js';
import { createApp } from './app.js';
import { feishuForEnvironment, oidcForEnvironment } from './auth.js';
import { seedDemo } from './seed.js';

async function main(): Promise<void> {
  const dataDir = resolve(process.env.KOA_AUDIT_EXAMPLE_DATA ?? resolve(__dirname, '..', '.koa-audit-example'));
  const fresh = process.argv.includes('--fresh');
  if (fresh && process.env.MONGODB_URI === undefined) rmSync(dataDir, { recursive: true, force: true });
  const base = process.env.MONGODB_URI ?? (await startDatabase({ dataDir })).uri;
  const uri = process.env.MONGODB_URI ?? databaseUri(base, 'koa_audit_example');
  const connection = await mongoose.createConnection(uri).asPromise();
  const jwtSecret = process.env.JWT_SECRET ?? 'example-only-secret-change-me';
  const auditor = createAudit({ connection, jwt: { secret: jwtSecret, algorithms: ['HS256'], cookie: 'token' } });
  auditor.on('error', (err) => console.error('[audit] write failed, will retry:', (err as Error).message));
  auditor.on('degraded', () => console.error('[audit] degraded: the audit store is not taking writes'));
  auditor.on('recovered', () => console.error('[audit] recovered'));
  await auditor.ready();
  const seeded = await seedDemo(auditor);
  if (seeded > 0) console.log(`[audit] seeded ${seeded} demo events over the past 7 days (meta.seeded: true; SEED=0 to skip)`);

  const feishu = await feishuForEnvironment();
  const port = Number(process.env.PORT ?? 3000);
  const oidc = await oidcForEnvironment([`http://127.0.0.1:${port}/auth/oidc/callback`, `http://localhost:${port}/auth/oidc/callback`]);
  const app = createApp({ auditor, connection, jwtSecret, feishu: feishu.config, oidc: oidc.config });
  const server = app.listen(port, process.env.HOST ?? '127.0.0.1', () => {
    // A password in MONGODB_URI is not printed.
    console.log(`koa-audit example listening on http://127.0.0.1:${port}  (database: ${uri.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@')})`);
    console.log('log in at /login (alice / alice-password), then see /audit/; export with: npx koa-audit export --uri <the database above>');
    if (process.env.MONGODB_URI === undefined) {
      const shown = relative(process.cwd(), dataDir) || '.';
      console.log(`data kept in ${shown.startsWith('..') ? dataDir : shown}/ across restarts (npm start -- --fresh starts empty)`);
    }
  });

  let stopping = false;
  const shutdown = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: shutting down`);
    server.close();
    server.closeIdleConnections();
    const { unwritten } = await auditor.close({ timeoutMs: 10_000 });
    if (unwritten > 0) console.error(`[audit] ${unwritten} events could not be stored (kept in the spool for the next start)`);
    await feishu.close();
    await oidc.close();
    await connection.close();
    await stopDatabase();
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
