import { expect } from 'chai';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { mongo } from 'mongoose';
import { eventually, useFixture } from './support/helpers.js';

const root = join(__dirname, '..');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

describe('two commands on a fresh clone: npm start and npm test (issue 11, item 17)', function () {
  this.timeout(180_000);
  // No database of its own: npm start brings the example's.
  const fx = useFixture('first_run', { database: false });

  describe('dependencies installed by prestart / pretest', () => {
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };

    it('npm start and npm test first make sure node_modules matches the lockfile, and the README shows just those two', () => {
      expect(pkg.scripts.prestart).to.equal('node scripts/ensure-deps.mjs');
      expect(pkg.scripts.pretest).to.equal('node scripts/ensure-deps.mjs');
      const readme = readFileSync(join(root, 'README.md'), 'utf8');
      const quick = /### From the repository\n[^`]*```sh\n([\s\S]*?)```/.exec(readme)?.[1] ?? '';
      expect(quick.split('\n').filter((l) => l.trim() !== '').map((l) => l.split('#')[0].trim())).to.deep.equal(['npm start', 'npm test']);
    });

    it('is a silent no-op when node_modules is current (as after `npm ci` in CI)', () => {
      const out = execFileSync(process.execPath, [join(root, 'scripts/ensure-deps.mjs')], { cwd: root, encoding: 'utf8' });
      expect(out).to.equal('');
    });

    it('runs `npm ci` with one line of explanation when node_modules is missing or stale', async () => {
      const clone = fx.tmp();
      fx.cleanup(() => rmSync(clone, { recursive: true, force: true }));
      mkdirSync(join(clone, 'scripts'));
      for (const f of ['package.json', 'package-lock.json', 'scripts/ensure-deps.mjs']) copyFileSync(join(root, f), join(clone, f));
      // A stand-in for npm on the PATH: records how it was called, and installs nothing.
      const bin = join(clone, 'fake-bin');
      mkdirSync(bin);
      writeFileSync(join(bin, 'npm'), `#!/bin/sh\necho "$@" > "${join(clone, 'npm-args')}"\n`);
      chmodSync(join(bin, 'npm'), 0o755);
      const env: NodeJS.ProcessEnv = { ...process.env, PATH: `${bin}:${process.env.PATH}` };
      delete env.npm_execpath;
      const run = (): string => execFileSync(process.execPath, [join(clone, 'scripts/ensure-deps.mjs')], { cwd: clone, encoding: 'utf8', env });

      expect(run().trim()).to.equal('koa-audit: installing the dependencies first (node_modules is missing): npm ci');
      expect(readFileSync(join(clone, 'npm-args'), 'utf8').trim()).to.equal('ci --no-audit --no-fund');

      // Installed, but one package at another version than the lockfile's.
      const { installNeeded } = (await import(join(clone, 'scripts/ensure-deps.mjs'))) as { installNeeded(dir: string): string | null };
      const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8')) as { packages: Record<string, { version?: string }> };
      mkdirSync(join(clone, 'node_modules'));
      for (const path of Object.keys(lock.packages)) if (path !== '') mkdirSync(join(clone, path), { recursive: true });
      writeFileSync(join(clone, 'node_modules/.package-lock.json'), JSON.stringify(lock));
      expect(installNeeded(clone)).to.equal(null);
      lock.packages['node_modules/mongoose'].version = '8.0.0';
      writeFileSync(join(clone, 'node_modules/.package-lock.json'), JSON.stringify(lock));
      expect(installNeeded(clone)).to.match(/^mongoose is 8\.0\.0, the lockfile says 9\./);
      rmSync(join(clone, 'npm-args'));
      expect(run()).to.match(/installing the dependencies first \(mongoose is 8\.0\.0/);
      expect(existsSync(join(clone, 'npm-args'))).to.equal(true);
    });
  });

  describe('npm start', () => {
    let dataDir: string;
    let child: ChildProcess | null = null;
    before(() => {
      dataDir = join(fx.tmp(), 'data');
      fx.cleanup(() => rmSync(dataDir, { recursive: true, force: true }));
      fx.cleanup(() => child !== null && child.exitCode === null && child.kill('SIGKILL')); // before its data goes
    });

    /** Starts the example as `npm start` does (its own database, data in `dataDir`); resolves with its URLs. */
    async function start(args: string[] = [], again = false): Promise<{ url: string; uri: string; output: () => string; stop: () => Promise<void> }> {
      const port = await freePort();
      const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), NODE_ENV: 'development', KOA_AUDIT_EXAMPLE_DATA: dataDir };
      // A restart finds the same kind of server as the first start did, without asking for a mongod again.
      if (again && process.env.KOA_AUDIT_TEST_DB_KIND !== 'mongod') env.KOA_AUDIT_SKIP_MONGOD = '1';
      delete env.MONGODB_URI;
      let output = '';
      const c = spawn(process.execPath, ['--import', 'tsx', join(root, 'example-app/server.ts'), ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
      child = c;
      c.stdout?.on('data', (d) => (output += d));
      c.stderr?.on('data', (d) => (output += d));
      await eventually(() => output.includes('listening') || c.exitCode !== null, 90_000, 100);
      const m = /listening on (http:\/\/127\.0\.0\.1:\d+) +\(database: (mongodb:\/\/127\.0\.0\.1:\d+\/koa_audit_example)\)/.exec(output);
      expect(m, output).to.not.equal(null);
      return {
        url: (m as RegExpExecArray)[1],
        uri: (m as RegExpExecArray)[2],
        output: () => output,
        stop: async () => {
          c.kill('SIGTERM');
          await once(c, 'exit');
        },
      };
    }

    const countServers = async (uri: string): Promise<number> => {
      const client = new mongo.MongoClient(uri);
      try {
        return await client.db().collection('auditevents').countDocuments({ kind: 'create', model: 'Server', 'meta.seeded': { $ne: true } }); // npm start's demo events aside
      } finally {
        await client.close();
      }
    };

    it('prints the database URI beside the app URL, no stack trace, and keeps the data across restarts unless --fresh', async () => {
      const first = await start();
      expect(first.output()).to.match(/data kept in .* across restarts \(npm start -- --fresh starts empty\)/);
      // An offline machine cannot fetch a mongod: one line says so, no download stack trace.
      expect(first.output()).to.not.match(/^\s+at /m);
      expect(first.output()).to.not.include('Starting the MongoMemoryServer Instance failed');
      const login = await fetch(`${first.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'alice-password' }) });
      const cookie = (login.headers.get('set-cookie') as string).split(';')[0];
      const created = await fetch(`${first.url}/servers`, { method: 'POST', headers: { 'content-type': 'application/json', cookie }, body: JSON.stringify({ name: 'kept-1', ip: '10.0.0.9' }) });
      expect(created.status).to.equal(201);
      await first.stop();
      expect(existsSync(dataDir)).to.equal(true);

      const second = await start([], true);
      expect(await countServers(second.uri)).to.equal(1);
      await second.stop();

      const fresh = await start(['--fresh'], true);
      expect(await countServers(fresh.uri)).to.equal(0);
      await fresh.stop();
    });
  });
});
