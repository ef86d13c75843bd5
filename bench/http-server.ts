/**
 * The HTTP benchmark's server, run in a child process of its own (see http.ts for why). One variant per process:
 *   - `bare`: Koa alone;
 *   - `floor`: Koa + an AsyncLocalStorage context per request that keeps one small event in memory: what any
 *     request-scoped audit pays on Node 20, the floor koa-audit is measured against;
 *   - `audited`: koa-audit, default options, real store;
 *   - `durable`: the same with `durability: 'disk'` (every event appended to the write-ahead file first);
 *   - `discard`: koa-audit's middleware and core (every event built, redacted, made safe), with a store that
 *     accepts and discards: the request path's own cost, without the writer's and the database's;
 *   - `naive`: awaits one insertOne per request; `sync`: koa-audit, mode 'sync';
 *   - `baseline`: koa-audit from another commit's lib/ (BENCH_BASELINE), default options, through the API every
 *     version has had: createAudit({ connection, collection }), ready(), app.use(auditor()).
 * Talks to the parent over IPC: sends { port } once listening, answers 'stats' with the auditor's counters and
 * the CPU time used since 'mark', and on 'close' closes the auditor and reports what it stored.
 */
import Koa from 'koa';
import mongoose, { mongo } from 'mongoose';
import { mkdtempSync, rmSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import { createCore, type EventSink } from '../lib/core/core.js';
import { resolveOptions } from '../lib/core/options.js';
import { createAudit, webhookSink, type Auditor } from '../lib/index.js';
import { createMiddleware } from '../lib/request/middleware.js';
import { eventModel } from '../lib/store/model.js';

type Variant = 'bare' | 'floor' | 'audited' | 'durable' | 'discard' | 'naive' | 'sync' | 'webhook' | 'deadsink' | 'baseline';

/** `BENCH_SCRUB=off`: koa-audit without value scrubbing, so that two runs show what scrubbing costs end to end. */
const scrubOff = process.env.BENCH_SCRUB === 'off' ? { scrub: { disable: true as const } } : {};

async function main(): Promise<void> {
  const [variant, uri, collection, hook, baselineLib] = process.argv.slice(2) as [Variant, string, string, string, string];
  const app = new Koa();
  app.silent = true; // requests cut off at the end of a sample fail their writes: Koa need not print each one
  let auditor: Auditor | null = null;
  let spoolDir: string | null = null;
  let conn: mongoose.Connection | null = null;
  if (variant !== 'bare' && variant !== 'floor') conn = await mongoose.createConnection(uri).asPromise();

  if (variant === 'floor') {
    const storage = new AsyncLocalStorage<{ start: number; event: Record<string, unknown> | null }>();
    let kept: Record<string, unknown> | null = null;
    app.use(async (ctx, next) => {
      const frame = { start: performance.now(), event: null as Record<string, unknown> | null };
      await storage.run(frame, next);
      frame.event = { ts: new Date(), method: ctx.method, path: ctx.path, status: ctx.status, durationMs: performance.now() - frame.start };
      kept = frame.event; // one small event in memory, as a queue would hold it
    });
    void kept;
  } else if (variant === 'discard') {
    const options = resolveOptions({ connection: conn as mongoose.Connection, collection, ...scrubOff });
    let discarded = 0;
    const sink: EventSink = {
      onFull: 'drop',
      accept: () => void discarded++,
      writeNow: async () => void discarded++,
      waitForRoom: async () => {},
    };
    const core = createCore({ options, events: new EventEmitter(), model: eventModel(options.connection, collection), sink: () => sink, prepare: async () => {} });
    app.use(createMiddleware(core));
  } else if (variant === 'audited' || variant === 'durable' || variant === 'sync' || variant === 'webhook' || variant === 'deadsink') {
    spoolDir = mkdtempSync(join(tmpdir(), 'koa-audit-bench-spool-'));
    auditor = createAudit({
      connection: conn as mongoose.Connection,
      collection,
      mode: variant === 'sync' ? 'sync' : 'async',
      durability: variant === 'durable' ? 'disk' : 'memory',
      spoolDir,
      // 'webhook': a live receiver (in the parent process); 'deadsink': a closed port, the sink failing throughout.
      ...(variant === 'webhook' || variant === 'deadsink' ? { sinks: [webhookSink({ url: hook, secret: 'bench-secret-0123456789', retryMaxMs: 1000 })] } : {}),
      ...scrubOff,
    });
    // Requests cut off by the shutdown at the end of a sample may fail their sync write: not a benchmark error.
    auditor.on('error', () => {});
    await auditor.ready();
    app.use(auditor());
  } else if (variant === 'baseline') {
    const other = (await import(baselineLib)) as { createAudit: (o: { connection: mongoose.Connection; collection: string }) => Auditor };
    auditor = other.createAudit({ connection: conn as mongoose.Connection, collection });
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
      // What a sink could not deliver by now stays only as long as the sample (a dead sink's spool, 30 MB a round).
      if (spoolDir !== null) rmSync(spoolDir, { recursive: true, force: true });
      process.exit(0);
    }
  });
  send({ port: (server.address() as AddressInfo).port });
}

void main();
