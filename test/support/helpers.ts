/**
 * Shared test helpers: the fixture of every test file, a Koa app on a loopback port, and small waits.
 *
 * The fixture style: `const fx = useFixture('file_name')` at the top of the file's describe() (`useChanges` for
 * change auditing is built on it), and whatever a test opens is opened through it or handed to it (`fx.own(x)`,
 * `fx.cleanup(fn)`); no test file has teardown code of its own. Why: when each file opened its own connection and
 * wrote its own `after` hook, teardown was copied into dozens of files and went wrong where no test looks: auditors
 * never closed kept writing and retrying after their file, and an `after` hook registered after the fixture's runs
 * after it (mocha runs them in registration order), so it closed auditors whose connection was already gone and
 * lost their last flush. One stack, closed last-opened-first, gets the order right by construction: a server before
 * the auditor behind it, an auditor before its connection, a fake provider after the app that calls it. It goes on
 * when one close fails and reports the first failure, so that one broken close does not leak everything after it.
 */
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Koa from 'koa';
import mongoose, { type ConnectOptions, type Connection } from 'mongoose';
import { createAudit, type AuditEvent, type Auditor, type AuditKind, type AuditOptions } from '../../lib/index.js';
import { databaseUri, startDatabase } from './database.js';

export function serverKind(): string {
  return process.env.KOA_AUDIT_TEST_DB_KIND ?? 'unknown';
}

/** The URI of the test database `t_<name>` on the run's server. */
export async function testDbUri(name: string): Promise<string> {
  const base = process.env.KOA_AUDIT_TEST_URI ?? (await startDatabase()).uri;
  return databaseUri(base, `t_${name}`);
}

async function openDb(uri: string, options: ConnectOptions = {}): Promise<Connection> {
  return mongoose.createConnection(uri, { serverSelectionTimeoutMS: 10_000, ...options }).asPromise();
}

export interface Running {
  url: string;
  server: Server;
  close(): Promise<void>;
}

/** What can listen on a port: a Koa app, or a plain `http.Server` (a fake provider). */
export interface Listener {
  listen(port: number, host: string): Server;
}

/** Listens on 127.0.0.1 on a free port. */
export async function listen(app: Listener): Promise<Running> {
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

/** What test files share: their own database, auditors, servers and anything else, all closed after the file. */
export interface Fixture {
  readonly conn: Connection;
  /** The URI of this file's database, for what connects by itself (a child process, the command line). */
  readonly uri: string;
  /** A fresh temporary directory. */
  tmp(): string;
  /** An auditor on this file's database, with a spool directory of its own unless `opts` names one. */
  auditor(opts?: AuditOptions): Auditor;
  /** A Koa app: `a` in front of `handler` (default: answers 'ok'), listening on 127.0.0.1. */
  serve(a: Auditor, handler?: Koa.Middleware): Promise<Running>;
  /** `app` (a Koa app or an `http.Server`) listening on 127.0.0.1. */
  listen(app: Listener): Promise<Running>;
  /** Another connection (a pool of its own, as another process would have) to this file's database. */
  connect(options?: ConnectOptions): Promise<Connection>;
  /** A connection to a fresh, empty database `t_<name>` of its own. */
  database(name: string, options?: ConnectOptions): Promise<Connection>;
  /** `thing`, closed after the file (a fake server, a browser, a connection the test opened itself). */
  own<T extends { close(): unknown }>(thing: T): T;
  /** Runs `fn` after the file, with the closes, in reverse order of registration. */
  cleanup(fn: () => unknown): void;
}

export interface FixtureOptions {
  /** Opens the file's connection, instead of a fresh database named after the file. */
  connect?: () => Promise<Connection>;
  /** `false`: the file needs no database of its own (what it starts connects by itself, or to nothing). */
  database?: false;
  /** Options of the file's connection (e.g. `monitorCommands`, for a test that looks at what is sent). */
  connection?: ConnectOptions;
}

/** Registers the file's `before`/`after` hooks and returns the fixture. */
export function useFixture(name: string, options: FixtureOptions = {}): Fixture {
  let conn: Connection | undefined;
  let uri: string | undefined;
  const cleanups: (() => unknown)[] = [];
  const cleanup = (fn: () => unknown): void => void cleanups.push(fn);
  const fresh = async (db: string, opts?: ConnectOptions): Promise<Connection> => {
    const c = await openDb(await testDbUri(db), opts);
    cleanup(() => c.close());
    await c.dropDatabase();
    return c;
  };
  before(async () => {
    if (options.database === false) return;
    if (options.connect === undefined) {
      uri = await testDbUri(name);
      conn = await fresh(name, options.connection);
    } else {
      const c = await options.connect();
      cleanup(() => c.close());
      conn = c;
    }
  });
  after(async () => {
    let first: unknown;
    for (const fn of cleanups.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first;
  });
  const tmp = (): string => mkdtempSync(join(tmpdir(), `ka-${name}-`));
  const connection = (): Connection => {
    if (conn === undefined) throw new Error(options.database === false ? 'this fixture has no database' : 'the fixture connects in before()');
    return conn;
  };
  const fx: Fixture = {
    get conn(): Connection {
      return connection();
    },
    get uri(): string {
      if (uri === undefined) throw new Error('no uri: the fixture connects in before(), and has none with its own connect() or no database');
      return uri;
    },
    tmp,
    auditor(opts = {}) {
      const a = createAudit({ connection: opts.connection ?? connection(), spoolDir: tmp(), ...opts });
      cleanup(() => a.close({ timeoutMs: 2000 }));
      return a;
    },
    async serve(a, handler = (ctx) => void (ctx.body = 'ok')) {
      const app = new Koa();
      app.use(a());
      app.use(handler);
      return fx.listen(app);
    },
    async listen(app) {
      const r = await listen(app);
      cleanup(() => r.close());
      return r;
    },
    async connect(opts) {
      const c = await openDb(fx.uri, opts);
      cleanup(() => c.close());
      return c;
    },
    database: fresh,
    own(thing) {
      cleanup(() => thing.close());
      return thing;
    },
    cleanup,
  };
  return fx;
}

/** `a`'s stored events matching `filter`, oldest first, once what it holds is flushed. */
export async function storedEvents(a: Auditor, filter: Record<string, unknown> = {}): Promise<AuditEvent[]> {
  await a.flush();
  return (await a.model.find(filter).sort({ ts: 1, _id: 1 }).lean()) as AuditEvent[];
}

/** A filter for the application's events: the trail's own (chain start and stop, checkpoints, prunes) left out. */
export const APP_EVENTS: { kind: { $nin: AuditKind[] } } = { kind: { $nin: ['audit_start', 'audit_stop', 'checkpoint', 'prune'] } };
