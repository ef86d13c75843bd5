/**
 * A database server of one test file's own, for tests that stop and restart it: the shared server of the run
 * is never interrupted. It is the same FerretDB binary and flags as database.ts (or, when the run uses a real
 * mongod, a private mongod), on a fixed 127.0.0.1 port and data directory, so that `restart()` brings back
 * the same server at the same address and drivers reconnect by themselves.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { mongo } from 'mongoose';

export interface PrivateServer {
  /** URI without a database name. */
  uri: string;
  stop(): Promise<void>;
  restart(): Promise<void>;
  /** Stops it for good and removes its data. */
  destroy(): Promise<void>;
}

const ROOT = resolve(__dirname, '../..');

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => res(port));
    });
  });
}

async function ping(uri: string, timeoutMs: number): Promise<boolean> {
  const client = new mongo.MongoClient(uri, { serverSelectionTimeoutMS: timeoutMs, connectTimeoutMS: timeoutMs });
  try {
    await client.db('admin').command({ ping: 1 });
    return true;
  } catch {
    return false;
  } finally {
    await client.close().catch(() => {});
  }
}

export async function startPrivateServer(): Promise<PrivateServer> {
  if (process.env.KOA_AUDIT_TEST_DB_KIND === 'mongod') {
    const mongod = await privateMongod();
    if (mongod !== null) return mongod;
  }
  return privateFerret();
}

async function privateMongod(): Promise<PrivateServer | null> {
  try {
    const { MongoMemoryServer } = await import('mongodb-memory-server-core');
    const server = await MongoMemoryServer.create();
    return {
      uri: server.getUri().replace(/\/[^/]*$/, '/'),
      stop: async () => {
        await server.stop({ doCleanup: false, force: false });
      },
      restart: () => server.start(true),
      destroy: async () => {
        await server.stop({ doCleanup: true, force: true });
      },
    };
  } catch {
    return null;
  }
}

async function privateFerret(): Promise<PrivateServer> {
  const out = execFileSync('bash', [join(ROOT, 'scripts/install-ferretdb.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const bin = out.trim().split('\n').pop() as string;
  const dir = mkdtempSync(join(tmpdir(), 'koa-audit-private-ferretdb-'));
  const port = await freePort();
  const uri = `mongodb://127.0.0.1:${port}/`;
  const args = [
    '--handler=sqlite', `--sqlite-url=file:${dir}/`, `--state-dir=${dir}`, `--listen-addr=127.0.0.1:${port}`,
    '--telemetry=disable', '--debug-addr=-', '--log-level=error',
  ];
  let child: ChildProcess | null = null;

  const launch = async (): Promise<void> => {
    if (child !== null && child.exitCode === null) return; // running already
    // Watchdog as in database.ts: the server dies with our stdin pipe, however this process ends.
    const script = '"$@" </dev/null & pid=$!; trap "kill $pid 2>/dev/null" TERM INT; cat >/dev/null; kill $pid 2>/dev/null; wait $pid 2>/dev/null';
    const c = spawn('sh', ['-c', script, 'ferretdb', bin, ...args], { stdio: ['pipe', 'ignore', 'inherit'] });
    child = c;
    const exited = new Promise<number | null>((res) => c.once('exit', (code) => res(code)));
    for (let i = 0; i < 100; i++) {
      if (await ping(uri, 500)) return;
      const code = await Promise.race([exited, new Promise<undefined>((res) => setTimeout(() => res(undefined), 100))]);
      if (code !== undefined) throw new Error(`private FerretDB exited with code ${code} before answering`);
    }
    throw new Error('private FerretDB did not answer a ping within 20 s');
  };

  const stop = async (): Promise<void> => {
    const c = child;
    child = null;
    if (c === null || c.exitCode !== null) return;
    const gone = new Promise<void>((res) => c.once('exit', () => res()));
    c.stdin?.end();
    c.kill('SIGTERM');
    await Promise.race([gone, new Promise((res) => setTimeout(res, 3000))]);
  };

  const onExit = (): void => {
    try {
      child?.kill('SIGTERM');
    } catch {
      // already gone
    }
  };
  process.once('exit', onExit);
  await launch();
  return {
    uri,
    stop,
    restart: launch,
    destroy: async () => {
      await stop();
      process.off('exit', onExit);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
