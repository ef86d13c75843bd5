import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { main } from '../lib/read/cli.js';
import { eventually, useFixture } from './support/helpers.js';
import { browse } from './support/oidc-provider.js';

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

describe('example app (npm start)', function () {
  this.timeout(90_000);
  const fx = useFixture('example_app');
  let child: ChildProcess;
  let url: string;
  let output = '';

  before(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, '../example-app/server.ts')], {
      env: { ...process.env, MONGODB_URI: fx.uri, PORT: String(port), NODE_ENV: 'development' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    fx.cleanup(() => child.exitCode === null && child.kill('SIGKILL'));
    child.stdout?.on('data', (d) => (output += d));
    child.stderr?.on('data', (d) => (output += d));
    await eventually(() => output.includes('listening'), 60_000, 100);
  });

  it('serves its routes, audits them, and stores every event on SIGTERM', async () => {
    const login = await fetch(`${url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'alice-password' }) });
    expect(login.status).to.equal(200);
    const cookie = (login.headers.get('set-cookie') as string).split(';')[0];
    const created = await fetch(`${url}/servers`, { method: 'POST', headers: { 'content-type': 'application/json', cookie }, body: JSON.stringify({ name: 'db-1', ip: '10.0.0.2' }) });
    expect(created.status).to.equal(201);
    const { id } = (await created.json()) as { id: string };
    const patched = await fetch(`${url}/servers/${id}`, { method: 'PATCH', headers: { 'content-type': 'application/json', cookie }, body: JSON.stringify({ env: 'prod' }) });
    expect(patched.status, await patched.text()).to.equal(200);
    expect((await fetch(`${url}/boom`)).status).to.equal(500);
    expect((await fetch(`${url}/servers`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })).status).to.equal(401);

    // "Log in with OpenID Connect": in development, a real oidc-provider on 127.0.0.1 that logs everyone in as Alice.
    const page = await (await fetch(`${url}/login`)).text();
    expect(page).to.include('<a id="oidc-login" href="/auth/oidc/login">log in with OpenID Connect</a>');
    const oidc = await browse(`${url}/auth/oidc/login`, `${url}/auth/oidc/callback`);
    expect(oidc.callback.status).to.equal(302);
    expect(oidc.callback.headers.get('location')).to.equal('/auth/me');
    const oidcCookie = oidc.callback.headers.getSetCookie().find((c) => c.startsWith('token='))?.split(';')[0] ?? '';
    const me = (await (await fetch(`${url}/auth/me`, { headers: { cookie: oidcCookie } })).json()) as { user: unknown };
    expect(me.user).to.deep.equal({ id: 'oidc:sub-alice', username: 'alice', role: 'user' });

    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).to.equal(0);
    expect(output).to.include('SIGTERM: shutting down');

    const events = await fx.conn.collection('auditevents').find({}).sort({ ts: 1, _id: 1 }).toArray();
    const summary = events.map((e) => `${e.kind}:${(e.http as { path?: string } | undefined)?.path ?? e.model ?? e.provider}:${(e.actor as { id?: string } | null)?.id ?? '-'}`);
    expect(summary).to.include.members([
      'login:local:u-alice', 'request:/auth/login:u-alice', 'create:Server:u-alice', 'request:/servers:u-alice',
      'update:Server:u-alice', `request:/servers/${id}:u-alice`, 'request:/boom:-', 'request:/servers:-',
      'login:oidc:oidc:sub-alice', 'request:/auth/oidc/callback:oidc:sub-alice', 'request:/auth/me:oidc:sub-alice',
    ]);
    const update = events.find((e) => e.kind === 'update');
    expect(update?.changes).to.deep.equal([{ path: 'env', from: 'dev', to: 'prod' }]);
    expect(JSON.stringify(events)).not.to.include('alice-password');

    // The demo seed is there, and a newcomer's `koa-audit verify` on the example's database finds no problem: the
    // seeded events are a sealed chain of their own, the app's run another.
    expect(output).to.match(/seeded \d+ demo events/);
    expect(events.filter((e) => (e.meta as { seeded?: boolean } | undefined)?.seeded === true).length).to.be.at.least(400);
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += String(d)));
    expect(await main(['verify', '--uri', fx.uri, '--json'], { stdout: out, stderr: new PassThrough() })).to.equal(0);
    const result = JSON.parse(text) as { ok: boolean; chains: number; problems: unknown[] };
    expect(result.problems).to.deep.equal([]);
    expect(result).to.include({ ok: true, chains: 2 });
  });
});
