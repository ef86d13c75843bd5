/**
 * The test database: one module, used by the tests, the example app and the benchmarks.
 *
 * `startDatabase()` resolves to a MongoDB URI (without a database name), trying in order:
 *   1. `MONGODB_URI` when set;
 *   2. a real `mongod` through mongodb-memory-server-core (`MONGOMS_SYSTEM_BINARY`, or a download), given a
 *      short deadline so that an offline machine moves on instead of hanging;
 *   3. FerretDB v1.24.2 (SQLite backend), installed once by scripts/install-ferretdb.sh and started on a free
 *      127.0.0.1 port in a temporary directory.
 * Whatever it starts is stopped, and its directory removed, when `stopDatabase()` runs, when the process
 * exits, and on SIGINT/SIGTERM. FerretDB runs under a watchdog shell that kills it when our stdin pipe
 * closes, so even a SIGKILLed test run leaves no server behind.
 *
 * `startPrivateServer()` starts another server of the same kind for a test that stops and restarts it (the fault
 * tests), so that the shared one is never interrupted.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { mongo } from 'mongoose';

const { MongoClient } = mongo;

export type DatabaseKind = 'env' | 'mongod' | 'ferretdb';

export interface Database {
  /** URI without a database name. */
  uri: string;
  kind: DatabaseKind;
  /** Stops the server (if this module started it); `restart()` brings it back on the same port and data. */
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** Stops it for good and removes its data. */
  destroy(): Promise<void>;
}

const ROOT = resolve(__dirname, '../..');
let current: Promise<Database> | null = null;
const cleanups: (() => void)[] = [];

function log(msg: string): void {
  if (process.env.KOA_AUDIT_DB_QUIET !== '1') process.stderr.write(`[test-db] ${msg}\n`);
}

export interface StartOptions {
  /**
   * Keep the server's data in this directory across runs (the example app's data), instead of a temporary one
   * removed at exit. Each kind of server keeps its own subdirectory.
   */
  dataDir?: string;
}

export function startDatabase(options: StartOptions = {}): Promise<Database> {
  current ??= start(options);
  return current;
}

/** A URI for one database of the server, so that each test file works in its own. */
export function databaseUri(base: string, name: string): string {
  const u = new URL(base);
  u.pathname = `/${name.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 60)}`;
  return u.toString();
}

export async function stopDatabase(): Promise<void> {
  if (current === null) return;
  const db = await current;
  current = null;
  await db.stop();
  cleanupAll();
}

async function start(options: StartOptions): Promise<Database> {
  if (process.env.MONGODB_URI) {
    log('using MONGODB_URI');
    const uri = process.env.MONGODB_URI;
    return { uri, kind: 'env', stop: async () => {}, restart: async () => {}, destroy: async () => {} };
  }
  const { dataDir } = options;
  const mongod = await tryMemoryServer(Number(process.env.KOA_AUDIT_MONGOD_TIMEOUT_MS ?? 20_000), dataDir === undefined ? undefined : join(dataDir, 'mongod'));
  if (mongod !== null) return mongod;
  return startFerret(dataDir === undefined ? undefined : join(dataDir, 'ferretdb'));
}

/** A server of this test file's own, of the same kind as the shared one (never the shared one itself). */
export async function startPrivateServer(): Promise<Database> {
  if (process.env.KOA_AUDIT_TEST_DB_KIND === 'mongod') {
    const mongod = await tryMemoryServer(60_000);
    if (mongod !== null) return mongod;
  }
  return startFerret();
}

/** Registers a cleanup to run at exit; the returned function runs it now, once. */
function atExit(fn: () => void): () => void {
  cleanups.push(fn);
  return () => {
    const i = cleanups.indexOf(fn);
    if (i !== -1) cleanups.splice(i, 1);
    fn();
  };
}

/**
 * mongodb-memory-server prints a download error with its whole stack to the console before it rejects; offline that
 * is expected, and the one line logged below says it. Only that message is held back, only while starting.
 */
async function withoutStartupWarning<T>(work: () => Promise<T>): Promise<T> {
  const warn = console.warn;
  console.warn = (...args: unknown[]): void => {
    if (typeof args[0] === 'string' && args[0].startsWith('Starting the MongoMemoryServer Instance failed')) return;
    warn.apply(console, args);
  };
  try {
    return await work();
  } finally {
    console.warn = warn;
  }
}

async function tryMemoryServer(deadline: number, dbPath?: string): Promise<Database | null> {
  if (process.env.KOA_AUDIT_SKIP_MONGOD === '1') return null;
  let MongoMemoryServer: typeof import('mongodb-memory-server-core').MongoMemoryServer;
  try {
    ({ MongoMemoryServer } = await import('mongodb-memory-server-core'));
  } catch {
    return null;
  }
  let timer: NodeJS.Timeout | undefined;
  if (dbPath !== undefined) mkdirSync(dbPath, { recursive: true });
  const creating = withoutStartupWarning(() => MongoMemoryServer.create(dbPath === undefined ? undefined : { instance: { dbPath, storageEngine: 'wiredTiger' } }));
  try {
    const server = await Promise.race([
      creating,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no mongod within ${deadline} ms`)), deadline);
      }),
    ]);
    const port = server.instanceInfo?.port;
    log(`using mongod from mongodb-memory-server on port ${port}`);
    const stop = async (): Promise<void> => {
      await server.stop({ doCleanup: false, force: false });
    };
    // Kept data stays where it is: only a temporary server's files are removed.
    const cleanup = atExit(() => void server.stop({ doCleanup: dbPath === undefined, force: dbPath === undefined }).catch(() => {}));
    return {
      uri: server.getUri().replace(/\/[^/]*$/, '/'),
      kind: 'mongod',
      stop,
      restart: () => server.start(true),
      destroy: async () => {
        await stop();
        cleanup();
      },
    };
  } catch (err) {
    log(`mongod unavailable (${String((err as Error).message).split('\n')[0]}); falling back to FerretDB`);
    creating.then((s) => s.stop({ doCleanup: true, force: true })).catch(() => {});
    return null;
  } finally {
    clearTimeout(timer);
  }
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolvePort(port));
    });
  });
}

async function ping(uri: string, timeoutMs: number): Promise<boolean> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: timeoutMs, connectTimeoutMS: timeoutMs });
  try {
    await client.db('admin').command({ ping: 1 });
    return true;
  } catch {
    return false;
  } finally {
    await client.close().catch(() => {});
  }
}

function signalGroup(c: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-(c.pid as number), signal);
  } catch {
    // already gone
  }
}

async function untilPortFree(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const free = await new Promise<boolean>((res) => {
      const srv = createServer();
      srv.once('error', () => res(false));
      srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
    });
    if (free) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`port ${port} is still in use after 10 s`);
}

/** Where scripts/install-ferretdb.sh keeps the binary it builds. */
function ferretBinary(): string {
  return join(process.env.KOA_AUDIT_CACHE ?? join(homedir(), '.cache/koa-audit'), 'bin/ferretdb');
}

async function startFerret(dataDir?: string): Promise<Database> {
  // Building it takes minutes, once: say so rather than go quiet.
  if (!existsSync(ferretBinary())) log('building the embedded database (FerretDB v1.24.2) the first time: this takes a few minutes');
  const bin = execFileSync('bash', [join(ROOT, 'scripts/install-ferretdb.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop() as string;
  if (dataDir !== undefined) mkdirSync(dataDir, { recursive: true });
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'koa-audit-ferretdb-'));
  const port = await freePort();
  const uri = `mongodb://127.0.0.1:${port}/`;
  const args = [
    '--handler=sqlite', `--sqlite-url=file:${dir}/`, `--state-dir=${dir}`, `--listen-addr=127.0.0.1:${port}`,
    '--telemetry=disable', '--debug-addr=-', '--log-level=error',
  ];
  let child: ChildProcess | null = null;

  const launch = async (): Promise<void> => {
    if (child !== null && child.exitCode === null) return; // running already
    // A server still shutting down holds the port: a new one would fail to bind, and a ping answered by the old one
    // would pass for the new one until it went away.
    await untilPortFree(port);
    // The watchdog: when our end of stdin closes (we exit, however we exit), the server is killed. Its own process
    // group, so that stop() can kill the shell and the server together.
    // The shell's own job reports ("Terminated") go nowhere; the server's stderr stays ours.
    const script = 'exec 3>&2 2>/dev/null; "$@" </dev/null 2>&3 & pid=$!; trap "kill $pid 2>/dev/null" TERM INT; cat >/dev/null; kill $pid 2>/dev/null; wait $pid';
    const c = spawn('sh', ['-c', script, 'ferretdb', bin, ...args], { stdio: ['pipe', 'ignore', 'inherit'], detached: true });
    child = c;
    const exited = new Promise<number | null>((res) => c.once('exit', (code) => res(code)));
    for (let i = 0; i < 100; i++) {
      if (await ping(uri, 500)) {
        if (c.exitCode === null) return;
        break;
      }
      const code = await Promise.race([exited, new Promise<undefined>((res) => setTimeout(() => res(undefined), 100))]);
      if (code !== undefined) break;
    }
    if (c.exitCode !== null) throw new Error(`FerretDB exited with code ${c.exitCode} before answering`);
    throw new Error('FerretDB did not answer a ping within 20 s');
  };

  // Asked politely first. FerretDB waits for its clients to hang up before it exits, and an auditor's pool never
  // does, so after a second it is killed: stop() returns with the server gone and its port free. (Returning with it
  // still up let restart()'s ping reach the old server, which then went away: the CI failure this fixes.)
  const kill = async (): Promise<void> => {
    const c = child;
    child = null;
    if (c === null || c.exitCode !== null) return;
    const gone = new Promise<void>((res) => c.once('exit', () => res()));
    c.stdin?.end();
    c.kill('SIGTERM'); // the shell, which passes it on (the whole group would make the shell report its `cat` killed)
    const timedOut = await Promise.race([gone.then(() => false), new Promise<boolean>((res) => setTimeout(() => res(true), 1000))]);
    if (timedOut) {
      signalGroup(c, 'SIGKILL');
      await gone;
    }
  };

  const cleanup = atExit(() => {
    if (child !== null) signalGroup(child, 'SIGTERM');
    if (dataDir === undefined) rmSync(dir, { recursive: true, force: true });
  });
  await launch();
  log(`using FerretDB v1.24.2 on port ${port} (${dir})`);
  return {
    uri,
    kind: 'ferretdb',
    stop: kill,
    restart: launch,
    destroy: async () => {
      await kill();
      cleanup();
    },
  };
}

function cleanupAll(): void {
  for (const c of cleanups.splice(0)) c();
}

process.once('exit', cleanupAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    // An app with its own handler (the example app's graceful shutdown) stops the database itself, at the end.
    if (process.listenerCount(sig) > 0) return;
    cleanupAll();
    process.kill(process.pid, sig);
  });
}
