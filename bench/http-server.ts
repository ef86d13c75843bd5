/**
 * The HTTP benchmark's server, run in a child process of its own (see http.ts for why). One variant per
 * process: `bare`, `audited` (koa-audit, default async mode), `naive` (awaits one insertOne per request),
 * `sync` (koa-audit, mode 'sync'), `nostore` (diagnostic: koa-audit building every event, then dropping it
 * from a queue of one: the middleware's own cost, without the writer's and the database's). Talks to the parent over IPC: sends { port } once listening, answers
 * 'stats' with the auditor's counters and the CPU time used since 'mark', and on 'close' closes the auditor and reports what it stored.
 */
import Koa from 'koa';
import mongoose, { mongo } from 'mongoose';
import { mkdtempSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createAudit, type Auditor } from '../lib/index.js';

type Variant = 'bare' | 'audited' | 'naive' | 'sync' | 'nostore';

async function main(): Promise<void> {
  const [variant, uri, collection] = process.argv.slice(2) as [Variant, string, string];
  const app = new Koa();
  app.silent = true; // requests cut off at the end of a sample fail their writes: Koa need not print each one
  let auditor: Auditor | null = null;
  let conn: mongoose.Connection | null = null;
  if (variant !== 'bare') conn = await mongoose.createConnection(uri).asPromise();

  if (variant === 'audited' || variant === 'sync' || variant === 'nostore') {
    const nostore = variant === 'nostore' ? { batchSize: 10, flushIntervalMs: 600_000, maxQueue: 1, onFull: 'drop' as const } : {};
    auditor = createAudit({
      connection: conn as mongoose.Connection,
      collection,
      mode: variant === 'sync' ? 'sync' : 'async',
      spoolDir: mkdtempSync(join(tmpdir(), 'koa-audit-bench-spool-')),
      ...nostore,
    });
    // Requests cut off by the shutdown at the end of a sample may fail their sync write: not a benchmark error.
    auditor.on('error', () => {});
    await auditor.ready();
    app.use(auditor());
  } else if (variant === 'naive') {
    // What an app would write by hand: one awaited insert per request, on the request path.
    const coll = (conn as mongoose.Connection).collection(collection);
    app.use(async (ctx, next) => {
      const start = performance.now();
      await next();
      await coll.insertOne({
        _id: new mongo.ObjectId(),
        ts: new Date(),
        kind: 'request',
        outcome: ctx.status >= 400 ? 'failure' : 'success',
        actor: null,
        requestId: ctx.get('x-request-id') || null,
        ip: ctx.ip,
        userAgent: ctx.get('user-agent') || null,
        http: { method: ctx.method, path: ctx.path, route: null, query: ctx.querystring, status: ctx.status, durationMs: performance.now() - start },
      });
    });
  }
  app.use((ctx) => {
    ctx.body = { id: ctx.path.slice(7), name: 'widget', price: 42 };
  });

  const server = app.listen(0, '127.0.0.1');
  server.keepAliveTimeout = 60_000;
  await new Promise((r) => server.once('listening', r));
  const send = (m: unknown): void => {
    process.send?.(m);
  };
  let mark = process.cpuUsage();
  process.on('message', async (msg: string) => {
    if (msg === 'mark') mark = process.cpuUsage();
    if (msg === 'stats') {
      const cpu = process.cpuUsage(mark);
      send({ stats: auditor?.stats() ?? null, cpuMicros: cpu.user + cpu.system });
    }
    if (msg === 'close') {
      server.closeAllConnections();
      server.close();
      const t = performance.now();
      const closed = auditor === null ? null : await auditor.close({ timeoutMs: 120_000 });
      const drainMs = performance.now() - t;
      const stored = conn === null ? 0 : await conn.collection(collection).countDocuments();
      send({ closed, drainMs, stored, stats: auditor?.stats() ?? null });
      await conn?.close();
      process.exit(0);
    }
  });
  send({ port: (server.address() as AddressInfo).port });
}

void main();
