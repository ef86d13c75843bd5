/** Shared test helpers: a database per test file, a Koa app on a loopback port, and small waits. */
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Koa from 'koa';
import mongoose, { type Connection } from 'mongoose';
import { createAudit, type Auditor, type AuditKind, type AuditOptions } from '../../lib/index.js';
import { databaseUri, startDatabase } from './database.js';

export function serverKind(): string {
  return process.env.KOA_AUDIT_TEST_DB_KIND ?? 'unknown';
}

/** A fresh, empty database of its own for one test file. */
export async function connectTestDb(name: string): Promise<Connection> {
  const base = process.env.KOA_AUDIT_TEST_URI ?? (await startDatabase()).uri;
  const conn = await mongoose.createConnection(databaseUri(base, `t_${name}`), { serverSelectionTimeoutMS: 10_000 }).asPromise();
  await conn.dropDatabase();
  return conn;
}

export interface Running {
  url: string;
  server: Server;
  close(): Promise<void>;
}

/** Listens on 127.0.0.1 on a free port. */
export async function listen(app: Koa): Promise<Running> {
  const server = app.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 5000, stepMs = 25): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > end) throw new Error(`condition not met within ${timeoutMs} ms`);
    await sleep(stepMs);
  }
}

/** What most test files share: their own database, auditors and Koa apps, all closed after the file. */
export interface Fixture {
  readonly conn: Connection;
  /** A fresh temporary directory. */
  tmp(): string;
  /** An auditor on this file's database, with a spool directory of its own unless `opts` names one. */
  auditor(opts?: AuditOptions): Auditor;
  /** A Koa app: `a` in front of `handler` (default: answers 'ok'), listening on 127.0.0.1. */
  serve(a: Auditor, handler?: Koa.Middleware): Promise<Running>;
}

/**
 * Registers the file's `before`/`after` hooks and returns the fixture. `connect` opens the file's connection
 * (default: a fresh database named after the file on the run's server).
 */
export function useFixture(name: string, connect: () => Promise<Connection> = () => connectTestDb(name)): Fixture {
  let conn: Connection | undefined;
  const auditors: Auditor[] = [];
  const servers: Running[] = [];
  before(async () => {
    conn = await connect();
  });
  after(async () => {
    for (const s of servers) await s.close();
    for (const a of auditors) await a.close({ timeoutMs: 2000 });
    await conn?.close();
  });
  const tmp = (): string => mkdtempSync(join(tmpdir(), `ka-${name}-`));
  const connection = (): Connection => {
    if (conn === undefined) throw new Error('the fixture connects in before()');
    return conn;
  };
  return {
    get conn(): Connection {
      return connection();
    },
    tmp,
    auditor(opts = {}) {
      const a = createAudit({ connection: connection(), spoolDir: tmp(), ...opts });
      auditors.push(a);
      return a;
    },
    async serve(a, handler = (ctx) => void (ctx.body = 'ok')) {
      const app = new Koa();
      app.use(a());
      app.use(handler);
      const r = await listen(app);
      servers.push(r);
      return r;
    },
  };
}

/** A filter for the application's events: the trail's own (chain start and stop, checkpoints, prunes) left out. */
export const APP_EVENTS: { kind: { $nin: AuditKind[] } } = { kind: { $nin: ['audit_start', 'audit_stop', 'checkpoint', 'prune'] } };
