/** Shared test helpers: a database per test file, a Koa app on a loopback port, and small waits. */
import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type Koa from 'koa';
import mongoose, { type Connection } from 'mongoose';
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
