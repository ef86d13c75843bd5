import { expect } from 'chai';
import Router from '@koa/router';
import jwt from 'jsonwebtoken';
import Koa from 'koa';
import { EventEmitter } from 'node:events';
import { createServer, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import type { Auditor, AuditEvent, AuditOptions, MiddlewareOptions } from '../lib/index.js';
import { eventually, sleep, useFixture, type Running, APP_EVENTS } from './support/helpers.js';

const SECRET = 'test-secret-which-is-long-enough';

/** A minimal upstream body parser, as koa-bodyparser would leave things: JSON, form, or raw bytes. */
async function bodyParser(ctx: Koa.Context, next: Koa.Next): Promise<void> {
  if (ctx.method === 'POST' || ctx.method === 'PUT') {
    const chunks: Buffer[] = [];
    for await (const c of ctx.req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const type = ctx.get('content-type');
    const req = ctx.request as { body?: unknown };
    if (type.startsWith('application/json')) req.body = JSON.parse(raw.toString('utf8'));
    else if (type.startsWith('application/x-www-form-urlencoded')) req.body = Object.fromEntries(new URLSearchParams(raw.toString('utf8')));
    else req.body = raw;
  }
  await next();
}

/** Sends raw bytes over a socket (for requests Node's client refuses to build) and returns the status line. */
function rawRequest(url: string, text: string): Promise<string> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => socket.write(text));
    let data = '';
    socket.on('data', (d) => {
      data += d.toString('latin1');
    });
    socket.on('end', () => resolve(data.split('\r\n')[0]));
    socket.on('error', reject);
  });
}

describe('request middleware', () => {
  const fx = useFixture('middleware');

  let n = 0;
  function auditor(opts: AuditOptions = {}): Auditor {
    return fx.auditor({ collection: `mw_${n++}`, ...opts });
  }

  /** The standard test app: router with a few routes, a JWT-free auth stub, a throwing route. */
  async function serve(a: Auditor, mw: MiddlewareOptions = {}, setup?: (app: Koa, router: Router) => void): Promise<Running> {
    const app = new Koa();
    app.silent = true;
    app.use(a(mw));
    app.use(bodyParser);
    const router = new Router();
    router.get('/posts/:id', (ctx) => {
      ctx.body = { id: ctx.params.id };
    });
    router.post('/posts', (ctx) => {
      ctx.status = 201;
      ctx.body = { ok: true };
    });
    router.get('/boom', () => {
      throw Object.assign(new Error('kaboom'), { status: 502 });
    });
    router.get('/plain-boom', () => {
      throw new Error('unexpected');
    });
    setup?.(app, router);
    app.use(router.routes());
    app.use(router.allowedMethods());
    return fx.listen(app);
  }

  async function events(a: Auditor, filter: Record<string, unknown> = {}): Promise<AuditEvent[]> {
    await a.flush();
    return a.model.find({ ...APP_EVENTS, ...filter }).sort({ ts: 1, _id: 1 }).lean();
  }

  describe('one event per request', () => {
    it('records method, path, route, redacted query, status, duration, ip, user agent, request id and outcome', async () => {
      const a = auditor();
      const r = await serve(a);
      const res = await fetch(`${r.url}/posts/42?x=1&password=hunter2&Token=abc`, { headers: { 'user-agent': 'test-agent/1.0' } });
      expect(res.status).to.equal(200);
      const [ev] = await events(a);
      expect(ev.kind).to.equal('request');
      expect(ev.outcome).to.equal('success');
      expect(ev.http).to.deep.include({
        method: 'GET', path: '/posts/42', route: '/posts/:id', query: 'x=1&password=[REDACTED]&Token=[REDACTED]', status: 200,
      });
      expect(ev.http?.durationMs).to.be.a('number').and.to.be.at.least(0);
      expect(ev.http).not.to.have.property('aborted');
      expect(ev.ip).to.match(/127\.0\.0\.1$/);
      expect(ev.userAgent).to.equal('test-agent/1.0');
      expect(ev.requestId).to.equal(res.headers.get('x-request-id'));
      expect(ev.actor).to.equal(null);
      expect(JSON.stringify(ev)).not.to.include('hunter2');
    });

    it('records an unmatched request with route null and a 404 as a failure', async () => {
      const a = auditor();
      const r = await serve(a);
      expect((await fetch(`${r.url}/nowhere`)).status).to.equal(404);
      const [ev] = await events(a);
      expect(ev.http).to.deep.include({ path: '/nowhere', route: null, status: 404 });
      expect(ev.outcome).to.equal('failure');
    });

    it('records exactly one event per request', async () => {
      const a = auditor();
      const r = await serve(a);
      for (let i = 0; i < 20; i++) await fetch(`${r.url}/posts/${i}`);
      const evs = await events(a);
      expect(evs).to.have.length(20);
      expect(new Set(evs.map((e) => e.requestId)).size).to.equal(20);
    });
  });

  describe('exceptions', () => {
    /** The same routes without auditing: what the client and app.on('error') see must be identical. */
    async function observe(withAudit: boolean, path: string): Promise<{ status: number; body: string; errors: string[] }> {
      const app = new Koa();
      const errors: string[] = [];
      app.on('error', (err: unknown) => errors.push(err instanceof Error ? `${err.name}:${err.message}` : String(err)));
      if (withAudit) app.use(auditor()());
      app.use(async (ctx) => {
        if (ctx.path === '/status') throw Object.assign(new Error('teapot'), { status: 418, expose: true });
        if (ctx.path === '/string') throw 'a plain string'; // eslint-disable-line no-throw-literal
        throw new RangeError('out of range');
      });
      const r = await fx.listen(app);
      const res = await fetch(`${r.url}${path}`);
      const body = await res.text();
      await sleep(20);
      return { status: res.status, body, errors };
    }

    // (`throw null` is left out: Koa then never answers, with or without auditing.)
    for (const path of ['/status', '/plain', '/string']) {
      it(`propagates ${path} exactly as without the middleware`, async () => {
        expect(await observe(true, path)).to.deep.equal(await observe(false, path));
      });
    }

    it('sends X-Request-Id on error responses too (Koa drops other headers there)', async () => {
      const a = auditor();
      const r = await serve(a);
      const res = await fetch(`${r.url}/boom`, { headers: { 'x-request-id': 'err-req-1' } });
      expect(res.status).to.equal(502);
      const sent = res.headers.get('x-request-id') as string;
      expect(sent).to.match(/^[0-9a-f-]{36}$/);
      const [ev] = await events(a);
      expect(ev.requestId).to.equal(sent);
      expect(ev.http?.clientRequestId).to.equal('err-req-1');
    });

    it('stores error name, message, status and stack, with outcome failure', async () => {
      const a = auditor();
      const r = await serve(a);
      expect((await fetch(`${r.url}/boom`)).status).to.equal(502);
      expect((await fetch(`${r.url}/plain-boom`)).status).to.equal(500);
      const [boom, plain] = await events(a);
      expect(boom.outcome).to.equal('failure');
      expect(boom.error).to.include({ name: 'Error', message: 'kaboom', status: 502 });
      expect(boom.error?.stack).to.include('kaboom');
      expect(boom.http?.status).to.equal(502);
      expect(plain.error).to.include({ message: 'unexpected', status: 500 });
      expect(plain.http?.status).to.equal(500);
    });

    it('records errors that are not Error objects', async () => {
      const a = auditor();
      const r = await serve(a, {}, (_app, router) => {
        router.get('/str', () => {
          throw 'just a string'; // eslint-disable-line no-throw-literal
        });
        router.get('/nul', () => {
          throw null; // eslint-disable-line no-throw-literal
        });
      });
      await fetch(`${r.url}/str`);
      // Koa never answers a `throw null`; the event is recorded anyway.
      await fetch(`${r.url}/nul`, { signal: AbortSignal.timeout(300) }).catch(() => null);
      const [s, nl] = await events(a);
      expect(s.error).to.deep.equal({ name: 'NonError', message: '"just a string"', status: 500, stack: null });
      expect(nl.error).to.deep.equal({ name: 'NonError', message: 'null', status: 500, stack: null });
      expect(s.outcome).to.equal('failure');
    });

    it('caps the stored stack at 8 KiB', async () => {
      const a = auditor();
      const r = await serve(a, {}, (_app, router) => {
        router.get('/deep', () => {
          const e = new Error('deep');
          e.stack = `Error: deep\n${'    at frame (file.js:1:1)\n'.repeat(2000)}`;
          throw e;
        });
      });
      await fetch(`${r.url}/deep`);
      const [ev] = await events(a);
      expect(ev.error?.stack?.length).to.be.at.most(8 * 1024 + 40);
      expect(ev.error?.stack).to.match(/truncated \d+ chars\]$/);
    });
  });

  describe('request id', () => {
    it('generates its own id, keeps a well-formed incoming X-Request-Id as http.clientRequestId, and sends its id back', async () => {
      const a = auditor();
      const r = await serve(a);
      const id = 'abc-123_X.y:z';
      const res = await fetch(`${r.url}/posts/1`, { headers: { 'x-request-id': id } });
      const sent = res.headers.get('x-request-id') as string;
      expect(sent).to.match(/^[0-9a-f-]{36}$/);
      const [ev] = await events(a);
      expect(ev.requestId).to.equal(sent);
      expect(ev.http?.clientRequestId).to.equal(id);
      expect((await a.query({ clientRequestId: id })).items.map((e) => e.requestId)).to.deep.equal([sent]);
    });

    it('uses a well-formed incoming X-Request-Id as the request id with trustRequestId: true, and sends it back', async () => {
      const a = auditor({ trustRequestId: true });
      const r = await serve(a);
      const id = 'abc-123_X.y:z';
      const res = await fetch(`${r.url}/posts/1`, { headers: { 'x-request-id': id } });
      expect(res.headers.get('x-request-id')).to.equal(id);
      const [ev] = await events(a);
      expect(ev.requestId).to.equal(id);
      expect(ev.http?.clientRequestId).to.equal(id);
    });

    it('gives two users sending one X-Request-Id two distinct request ids', async () => {
      const a = auditor();
      const r = await serve(a, {}, (_app, router) => {
        router.get('/me', (ctx) => {
          ctx.body = { requestId: a.context()?.requestId };
        });
      });
      const shared = 'same-id-1';
      const [alice, mallory] = await Promise.all(['alice', 'mallory'].map((user) => fetch(`${r.url}/me?u=${user}`, { headers: { 'x-request-id': shared } })));
      const ids = [alice.headers.get('x-request-id'), mallory.headers.get('x-request-id')];
      expect(ids[0]).not.to.equal(ids[1]);
      expect(((await alice.json()) as { requestId: string }).requestId).to.equal(ids[0]);
      expect(((await mallory.json()) as { requestId: string }).requestId).to.equal(ids[1]);
      const evs = await events(a);
      expect(new Set(evs.map((e) => e.requestId)).size).to.equal(2);
      expect(evs.map((e) => e.http?.clientRequestId)).to.deep.equal([shared, shared]);
      // "All events of request" of one of them shows that user's request only.
      for (const id of ids) expect((await a.query({ requestId: id as string })).items).to.have.length(1);
    });

    for (const [label, bad] of [['too long', 'a'.repeat(129)], ['bad characters', 'abc<script>'], ['spaces', 'a b'], ['empty', '']] as const) {
      it(`replaces an incoming id that is ${label}`, async () => {
        const a = auditor();
        const r = await serve(a);
        const res = await fetch(`${r.url}/posts/1`, { headers: { 'x-request-id': bad } });
        const sent = res.headers.get('x-request-id') as string;
        expect(sent).to.match(/^[0-9a-f-]{36}$/);
        expect(sent).not.to.equal(bad);
        const [ev] = await events(a);
        expect(ev.requestId).to.equal(sent);
        expect(ev.http).not.to.have.property('clientRequestId');
      });
    }
  });

  describe('actor', () => {
    const token = (payload: object, opts: jwt.SignOptions = {}, key: string = SECRET): string =>
      jwt.sign(payload, key, { algorithm: 'HS256', ...opts });

    async function actorFor(a: Auditor, headers: Record<string, string>, setup?: (app: Koa, router: Router) => void): Promise<unknown> {
      const r = await serve(a, {}, setup);
      await fetch(`${r.url}/posts/1`, { headers });
      return (await events(a))[0].actor;
    }

    it('takes ctx.state.user set by downstream authentication (id/_id/sub, username/name/email)', async () => {
      const users = [
        [{ id: 7, username: 'ann' }, { id: '7', name: 'ann', via: 'state' }],
        [{ _id: new fx.conn.base.Types.ObjectId('65f000000000000000000002'), name: 'Bob' }, { id: '65f000000000000000000002', name: 'Bob', via: 'state' }],
        [{ sub: 'u-9', email: 'c@example.com' }, { id: 'u-9', name: 'c@example.com', via: 'state' }],
      ] as const;
      for (const [user, expected] of users) {
        const a = auditor();
        const actor = await actorFor(a, {}, (app) => {
          app.use(async (ctx, next) => {
            await next(); // authentication that runs late: the actor is resolved after the handler
          });
          app.use(async (ctx, next) => {
            ctx.state.user = user;
            await next();
          });
        });
        expect(actor).to.deep.equal(expected);
      }
    });

    it('verifies a Bearer token against the pinned algorithms', async () => {
      const a = auditor({ jwt: { secret: SECRET, algorithms: ['HS256'] } });
      expect(await actorFor(a, { authorization: `Bearer ${token({ sub: 'jwt-user', name: 'J' })}` })).to.deep.equal({ id: 'jwt-user', name: 'J', via: 'jwt' });
    });

    it('reads the token from the configured cookie', async () => {
      const a = auditor({ jwt: { secret: SECRET, algorithms: ['HS256'], cookie: 'session' } });
      expect(await actorFor(a, { cookie: `session=${token({ id: 'cookie-user' })}` })).to.deep.equal({ id: 'cookie-user', via: 'jwt' });
    });

    const forged: [string, () => string][] = [
      ['unsigned (alg none)', () => jwt.sign({ sub: 'admin' }, '', { algorithm: 'none' })],
      ['badly signed', () => token({ sub: 'admin' }, {}, 'another-secret-of-decent-length')],
      ['expired', () => token({ sub: 'admin', exp: Math.floor(Date.now() / 1000) - 60 })],
      ['signed with another algorithm', () => token({ sub: 'admin' }, { algorithm: 'HS512' })],
      ['garbage', () => 'not.a.token'],
      ['tampered payload', () => {
        const [h, , s] = token({ sub: 'user' }).split('.');
        return [h, Buffer.from(JSON.stringify({ sub: 'admin' })).toString('base64url'), s].join('.');
      }],
    ];
    for (const [label, make] of forged) {
      it(`never takes the actor from a token that is ${label}`, async () => {
        const a = auditor({ jwt: { secret: SECRET, algorithms: ['HS256'] } });
        expect(await actorFor(a, { authorization: `Bearer ${make()}` })).to.equal(null);
      });
    }

    it('uses resolveActor after state and token, and ignores headers and bodies that name a user', async () => {
      const a = auditor({ resolveActor: (ctx) => (ctx.get('x-api-client') === 'known' ? { id: 'svc-1', name: 'service' } : null) });
      expect(await actorFor(a, { 'x-api-client': 'known', 'x-user-id': 'admin', 'x-actor': 'admin' })).to.deep.equal({ id: 'svc-1', name: 'service', via: 'resolver' });
      const b = auditor();
      expect(await actorFor(b, { 'x-user-id': 'admin', 'x-actor': 'admin', 'x-forwarded-user': 'admin' })).to.equal(null);
    });

    it('a failing resolveActor leaves the actor null and still records the event', async () => {
      const a = auditor({ resolveActor: () => {
        throw new Error('resolver down');
      } });
      expect(await actorFor(a, {})).to.equal(null);
    });

    it('withActor inside a request wins for the work it wraps', async () => {
      const a = auditor();
      const seen: unknown[] = [];
      const r = await serve(a, {}, (app, router) => {
        router.get('/job', async (ctx) => {
          ctx.state.user = { id: 'web-user' };
          seen.push(await a.withActor({ id: 'cron' }, async () => a.context()?.explicitActor));
          seen.push(a.context()?.explicitActor);
          ctx.body = 'ok';
        });
      });
      await fetch(`${r.url}/job`);
      expect(seen).to.deep.equal([{ id: 'cron', via: 'explicit' }, null]);
      expect((await events(a))[0].actor).to.deep.equal({ id: 'web-user', via: 'state' });
    });

    it('ctx.state.user wins over a verified token, and a token over resolveActor (state > jwt > resolver)', async () => {
      const secret = 'order-secret';
      const a = auditor({ jwt: { secret, algorithms: ['HS256'] }, resolveActor: () => ({ id: 'from-resolver' }) });
      const r = await serve(a, {}, (_app, router) => {
        router.get('/both', (ctx) => {
          ctx.state.user = { id: 'from-state' };
          ctx.body = 'ok';
        });
        router.get('/token', (ctx) => void (ctx.body = 'ok'));
      });
      const auth = { authorization: `Bearer ${jwt.sign({ sub: 'from-token' }, secret, { algorithm: 'HS256' })}` };
      await fetch(`${r.url}/both`, { headers: auth });
      await fetch(`${r.url}/token`, { headers: auth });
      await fetch(`${r.url}/token`);
      const actors = (await events(a)).sort((x, y) => x.ts.getTime() - y.ts.getTime() || (String(x._id) < String(y._id) ? -1 : 1)).map((e) => e.actor);
      expect(actors).to.deep.equal([
        { id: 'from-state', via: 'state' },
        { id: 'from-token', via: 'jwt' },
        { id: 'from-resolver', via: 'resolver' },
      ]);
    });
  });

  describe('ip', () => {
    it('ignores X-Forwarded-For unless the app trusts its proxy', async () => {
      const a = auditor();
      const r = await serve(a);
      await fetch(`${r.url}/posts/1`, { headers: { 'x-forwarded-for': '203.0.113.9' } });
      expect((await events(a))[0].ip).to.match(/127\.0\.0\.1$/);
    });

    it('uses X-Forwarded-For behind a trusted proxy, honouring maxIpsCount', async () => {
      const a = auditor();
      const r = await serve(a, {}, (app) => {
        app.proxy = true;
        app.maxIpsCount = 1;
      });
      await fetch(`${r.url}/posts/1`, { headers: { 'x-forwarded-for': '198.51.100.1, 203.0.113.9' } });
      expect((await events(a))[0].ip).to.equal('203.0.113.9');
    });

    it('stores a huge or malformed forwarded address truncated, never throwing', async () => {
      const a = auditor();
      const r = await serve(a, {}, (app) => {
        app.proxy = true;
      });
      const res = await fetch(`${r.url}/posts/1`, { headers: { 'x-forwarded-for': `${'9'.repeat(6000)}, ::::garbage` } });
      expect(res.status).to.equal(200);
      const [ev] = await events(a);
      expect(ev.ip).to.be.a('string');
      expect((ev.ip as string).length).to.be.at.most(256 + 40);
    });
  });

  describe('async context', () => {
    it('is visible to code below the middleware: timers, event emitters, auditor.context()', async () => {
      const a = auditor();
      const seen: (string | null | undefined)[] = [];
      const bus = new EventEmitter();
      bus.on('ping', () => seen.push(a.context()?.requestId));
      const r = await serve(a, {}, (_app, router) => {
        router.get('/ctx', async (ctx) => {
          await new Promise((resolve) => setTimeout(resolve, 5));
          seen.push(a.context()?.requestId);
          bus.emit('ping');
          setImmediate(() => seen.push(a.context()?.requestId));
          await sleep(5);
          ctx.body = 'ok';
        });
      });
      const res = await fetch(`${r.url}/ctx`);
      const id = res.headers.get('x-request-id');
      expect(seen).to.deep.equal([id, id, id]);
      expect(a.context()).to.equal(undefined);
    });

    it('keeps 1,000 concurrent requests with different users apart', async function () {
      this.timeout(120_000);
      const a = auditor({ jwt: { secret: SECRET, algorithms: ['HS256'] }, batchSize: 500 });
      const mismatches: string[] = [];
      const r = await serve(a, {}, (_app, router) => {
        router.get('/who/:i', async (ctx) => {
          const i = ctx.params.i;
          await sleep(Math.random() * 20);
          const mid = a.context();
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 10));
          if (mid?.requestId !== ctx.response.get('x-request-id')) mismatches.push(`request id of ${i}`);
          if (a.context() !== mid) mismatches.push(`context of ${i}`);
          ctx.body = i;
        });
      });
      r.server.maxConnections = 2000;
      const N = 1000;
      const ids = await Promise.all(Array.from({ length: N }, async (_, i) => {
        const res = await fetch(`${r.url}/who/${i}`, {
          headers: { authorization: `Bearer ${jwt.sign({ sub: `user-${i}` }, SECRET, { algorithm: 'HS256' })}`, 'x-request-id': `req-${i}` },
        });
        expect(await res.text()).to.equal(String(i));
        return res.headers.get('x-request-id');
      }));
      expect(new Set(ids).size).to.equal(N);
      expect(mismatches).to.deep.equal([]);
      const evs = await events(a);
      expect(evs).to.have.length(N);
      for (const ev of evs) {
        const i = (ev.http?.clientRequestId as string).slice(4);
        expect(ev.requestId).to.equal(ids[Number(i)]);
        expect(ev.actor, ev.requestId as string).to.deep.equal({ id: `user-${i}`, via: 'jwt' });
        expect(ev.http?.path).to.equal(`/who/${i}`);
      }
    });
  });

  describe('filters', () => {
    it('applies include, exclude (which wins), prefixes, RegExps and methods', async () => {
      const a = auditor();
      const r = await serve(a, { include: ['/posts/', '/posts', '/exact', /^\/re-\d+$/], exclude: ['/posts/secret', /^\/posts\/hidden-/], methods: ['get', 'POST'] }, (_app, router) => {
        router.get('/exact', (ctx) => void (ctx.body = 1));
        router.get('/exact/sub', (ctx) => void (ctx.body = 1));
        router.get('/re-:n', (ctx) => void (ctx.body = 1));
        router.delete('/posts/:id', (ctx) => void (ctx.body = 1));
      });
      const paths = ['/posts/1', '/posts/secret', '/posts/hidden-1', '/exact', '/exact/sub', '/re-12', '/re-x', '/other'];
      for (const p of paths) await fetch(`${r.url}${p}`);
      await fetch(`${r.url}/posts/1`, { method: 'DELETE' });
      await fetch(`${r.url}/posts`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
      const got = (await events(a)).map((e) => `${e.http?.method} ${e.http?.path}`);
      expect(got).to.deep.equal(['GET /posts/1', 'GET /exact', 'GET /re-12', 'POST /posts']);
    });

    it('still opens the async context on excluded paths', async () => {
      const a = auditor();
      let seen: string | null | undefined;
      const r = await serve(a, { exclude: ['/health'] }, (_app, router) => {
        router.get('/health', (ctx) => {
          seen = a.context()?.requestId;
          ctx.body = 'ok';
        });
      });
      const res = await fetch(`${r.url}/health`);
      expect(seen).to.equal(res.headers.get('x-request-id'));
      expect(await events(a)).to.have.length(0);
    });

    it('rejects invalid middleware options with a TypeError naming them', () => {
      const a = auditor();
      expect(() => a({ include: [42 as never] })).to.throw(TypeError, '"include"');
      expect(() => a({ methods: 'GET' as never })).to.throw(TypeError, '"methods"');
      expect(() => a({ maxBodyBytes: -1 })).to.throw(TypeError, '"maxBodyBytes"');
      expect(() => a({ captureBodies: true } as never)).to.throw(TypeError, '"captureBodies"');
    });
  });

  describe('body capture', () => {
    it('is off by default', async () => {
      const a = auditor();
      const r = await serve(a);
      await fetch(`${r.url}/posts`, { method: 'POST', body: JSON.stringify({ title: 't' }), headers: { 'content-type': 'application/json' } });
      expect((await events(a))[0].http).not.to.have.property('requestBody');
    });

    it('stores JSON and form bodies redacted, caps big ones, and records binary bodies by size', async () => {
      const a = auditor();
      const r = await serve(a, { captureBody: true, maxBodyBytes: 200 });
      const post = (body: string | Buffer, type: string): Promise<Response> => fetch(`${r.url}/posts`, { method: 'POST', body: typeof body === 'string' ? body : new Uint8Array(body), headers: { 'content-type': type } });
      await post(JSON.stringify({ title: 'hello', password: 'hunter2', nested: { api_key: 'k', 'a.b': 1 } }), 'application/json');
      await post('title=form&token=abc', 'application/x-www-form-urlencoded');
      await post(JSON.stringify({ big: 'x'.repeat(5000), password: 'hunter2' }), 'application/json');
      await post(Buffer.from([0, 255, 1, 2, 3]), 'application/octet-stream');
      const [json, form, big, bin] = await events(a);
      expect(json.http?.requestBody).to.deep.equal({ title: 'hello', password: '[REDACTED]', nested: { api_key: '[REDACTED]', 'a%2Eb': 1 } });
      expect(form.http?.requestBody).to.deep.equal({ title: 'form', token: '[REDACTED]' });
      expect(big.http?.requestBody).to.include({ truncated: true });
      expect(JSON.stringify(big.http?.requestBody).length).to.be.below(400);
      expect(bin.http?.requestBody).to.deep.equal({ binary: true, bytes: 5 });
      expect(JSON.stringify(await events(a))).not.to.include('hunter2');
    });
  });

  describe('bad input', () => {
    it('survives a huge URL, huge headers and thousands of query parameters', async () => {
      const a = auditor();
      const r = await serve(a);
      const longPath = `/posts/${'p'.repeat(8000)}`;
      const many = Array.from({ length: 3000 }, (_, i) => `a=${i % 10}`).join('&');
      expect((await fetch(`${r.url}${longPath}`)).status).to.equal(200);
      expect((await fetch(`${r.url}/posts/1?${many}&password=zzz`)).status).to.equal(200);
      // Within Node's 16 KiB header limit (above it Node answers 431 before any middleware runs).
      expect((await fetch(`${r.url}/posts/1`, { headers: { 'user-agent': 'U'.repeat(6000), 'x-junk': 'j'.repeat(6000) } })).status).to.equal(200);
      const [p, q, h] = await events(a);
      expect(p.http?.path.length).to.be.at.most(2048 + 40);
      expect(q.http?.query.length).to.be.at.most(4096 + 20);
      expect(h.userAgent?.length).to.be.at.most(512 + 40);
      expect(JSON.stringify([p, q, h])).not.to.include('zzz');
    });

    it('records invalid UTF-8 in the path and a missing user agent', async () => {
      const a = auditor();
      const r = await serve(a);
      const status = await rawRequest(r.url, 'GET /posts/%FF%FE%C0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      expect(status).to.match(/^HTTP\/1\.1 (200|400)/);
      const [ev] = await events(a);
      expect(ev.http?.path).to.equal('/posts/%FF%FE%C0');
      expect(ev.userAgent).to.equal(null);
    });

    it('never lets CR/LF from a header reach the response headers', async () => {
      const a = auditor();
      const app = new Koa();
      app.use(a());
      app.use((ctx) => void (ctx.body = 'ok'));
      const handle = app.callback();
      // Node's own parser refuses CR/LF in a header on the wire, so no middleware ever sees it there. A layer in
      // front of Koa (an HTTP/2 bridge, a framework calling app.callback()) can still hand one over: this server
      // does, with a value that would split the response head if it were echoed.
      const hostile = 'abc\r\nSet-Cookie: evil=1';
      const server = createServer((req, res) => {
        req.headers['x-request-id'] = hostile;
        void handle(req, res);
      });
      const { url } = await fx.listen(server);
      const res = await fetch(`${url}/posts/1`);
      expect(res.status).to.equal(200); // echoing the value would have thrown ERR_INVALID_CHAR: a 500
      expect(await res.text()).to.equal('ok');
      const id = res.headers.get('x-request-id') ?? '';
      expect(id).to.match(/^[A-Za-z0-9._:-]{1,128}$/);
      // A fresh id, nothing of the hostile value (`.not.include('abc')` failed whenever the random UUID held "abc").
      expect(id).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      expect(res.headers.get('set-cookie')).to.equal(null);
      const evs = await events(a);
      expect(evs).to.have.length(1);
      expect(evs[0].requestId).to.equal(id);
      expect(JSON.stringify(evs[0])).to.not.include('evil=1');
    });

    it('marks a request whose client went away as aborted, with no unhandled rejection', async () => {
      const a = auditor();
      const rejections: unknown[] = [];
      const onRejection = (e: unknown): void => void rejections.push(e);
      process.on('unhandledRejection', onRejection);
      try {
        const r = await serve(a, {}, (_app, router) => {
          router.get('/stream', (ctx) => {
            let i = 0;
            ctx.body = new Readable({
              read() {
                setTimeout(() => this.push(i++ < 100 ? `chunk ${i}\n` : null), 20);
              },
            });
          });
        });
        await new Promise<void>((resolve, reject) => {
          const req = httpRequest(`${r.url}/stream`, (res) => {
            res.once('data', () => {
              req.destroy();
              resolve();
            });
          });
          req.on('error', (e) => ((e as NodeJS.ErrnoException).code === 'ECONNRESET' ? resolve() : reject(e)));
          req.end();
        });
        const evs = await eventually(async () => {
          const found = await events(a);
          return found.length === 1 ? found : null;
        });
        const ev = (evs as AuditEvent[])[0];
        expect(ev.http?.aborted).to.equal(true);
        expect(ev.outcome).to.equal('failure');
        expect(ev.http?.status).to.equal(200);
      } finally {
        process.off('unhandledRejection', onRejection);
      }
      expect(rejections).to.deep.equal([]);
    });
  });

  describe('sync mode', () => {
    it('stores the request event before the response is sent', async () => {
      const a = auditor({ mode: 'sync' });
      const r = await serve(a);
      const res = await fetch(`${r.url}/posts/5`);
      const id = res.headers.get('x-request-id');
      // No flush: the event must already be there.
      const ev = await a.model.findOne({ requestId: id }).lean();
      expect(ev?.http?.path).to.equal('/posts/5');
    });

    it('has the collection\'s indexes created, as the async mode does', async () => {
      const a = auditor({ mode: 'sync' });
      const r = await serve(a);
      expect((await fetch(`${r.url}/posts/6`)).status).to.equal(200);
      // The first sync write requested them (nothing here calls ready()): every index of the model appears.
      const wanted = a.model.schema.indexes().map(([key]) => JSON.stringify(key));
      expect(wanted).to.include(JSON.stringify({ kind: 1, ts: -1, _id: -1 }));
      const keys = await eventually(async () => {
        const found = (await a.model.collection.indexes()).map((i) => JSON.stringify(i.key));
        return wanted.every((k) => found.includes(k)) ? found : null;
      }, 15_000);
      expect(keys).to.include.members(wanted);
    });
  });
});
