import { expect } from 'chai';
import Router from '@koa/router';
import jsonwebtoken from 'jsonwebtoken';
import Koa, { type Context } from 'koa';
import koaJwt from 'koa-jwt';
import { Schema, type Model } from 'mongoose';
import type { AuditEvent, Auditor } from '../lib/index.js';
import { storedEvents, useFixture, type Running } from './support/helpers.js';

const SECRET = 'koa-jwt-secret-SENTINEL-61aa';

describe('koa-jwt: audit() above jwt({ secret })', () => {
  const fx = useFixture('koa_jwt');
  let auditor: Auditor;
  let server: Running;
  let Post: Model<{ title: string }>;
  const issued: string[] = [];

  const events = (filter: Record<string, unknown>): Promise<AuditEvent[]> => storedEvents(auditor, filter);
  const rid = (res: Response): string => res.headers.get('x-request-id') ?? '';
  const token = async (): Promise<string> => {
    const res = await fetch(`${server.url}/token`, { method: 'POST' });
    const { token: t } = (await res.json()) as { token: string };
    issued.push(t);
    return t;
  };

  before(async () => {
    auditor = fx.auditor({ collection: 'jwt_events' });
    const schema = new Schema({ title: String });
    schema.plugin(auditor.plugin);
    Post = fx.conn.model('JwtPost', schema) as unknown as Model<{ title: string }>;

    const app = new Koa();
    app.silent = true;
    app.use(auditor({ authzFail: true }));
    app.use(koaJwt({ secret: SECRET, algorithms: ['HS256'] }).unless({ path: ['/token', '/public'] }));
    const router = new Router();
    router.post('/token', async (ctx: Context) => {
      // The app's own token endpoint (credentials checked elsewhere): it records the token-level event.
      const user = { sub: 'u-bob', name: 'bob' };
      const t = jsonwebtoken.sign({ ...user, jti: `jti-${issued.length}` }, SECRET, { algorithm: 'HS256', expiresIn: '1h' });
      await auditor.tokenIssued({ ctx, user: { id: user.sub, name: user.name }, token: t, tokenType: 'access' });
      ctx.body = { token: t };
    });
    router.get('/public', (ctx) => {
      ctx.body = 'hello';
    });
    router.post('/posts', async (ctx) => {
      const post = await Post.create({ title: 'by a verified user' });
      ctx.body = { id: post._id };
    });
    router.post('/logout', async (ctx) => {
      const t = ctx.get('authorization').replace(/^Bearer /, '');
      await auditor.tokenRevoked({ ctx, token: t, reason: 'logout' });
      ctx.status = 204;
    });
    app.use(router.routes());
    server = await fx.listen(app);
  });

  it('attributes the request and its changes to the verified ctx.state.user', async () => {
    const t = await token();
    const res = await fetch(`${server.url}/posts`, { method: 'POST', headers: { authorization: `Bearer ${t}` } });
    expect(res.status).to.equal(200);
    const list = await events({ requestId: rid(res) });
    expect(list.map((e) => [e.kind, e.actor?.id, e.actor?.via]).sort()).to.deep.equal([
      ['create', 'u-bob', 'state'],
      ['request', 'u-bob', 'state'],
    ]);
    expect(list.find((e) => e.kind === 'create')?.actor).to.deep.equal({ id: 'u-bob', name: 'bob', via: 'state' });
  });

  it('a rejected token (bad signature, expired, none) leaves the actor null and records authz_fail', async () => {
    const forged = jsonwebtoken.sign({ sub: 'u-mallory', name: 'mallory' }, 'another-secret', { algorithm: 'HS256' });
    const expired = jsonwebtoken.sign({ sub: 'u-bob', exp: Math.floor(Date.now() / 1000) - 60 }, SECRET, { algorithm: 'HS256' });
    const unsigned = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from('{"sub":"u-mallory"}').toString('base64url')}.`;
    for (const bad of [forged, expired, unsigned, '']) {
      const res = await fetch(`${server.url}/posts`, { method: 'POST', headers: bad === '' ? {} : { authorization: `Bearer ${bad}` } });
      expect(res.status).to.equal(401);
      const list = await events({ requestId: rid(res) });
      expect(list.map((e) => [e.kind, e.name ?? null, e.actor])).to.deep.equal([
        ['request', null, null],
        ['security', 'authz_fail', null],
      ]);
      expect(list[1]).to.deep.include({ outcome: 'failure', reason: 'unauthenticated (401)', target: { type: 'route', id: '/posts', method: 'POST' } });
    }
    expect(await Post.countDocuments({ title: 'by a verified user' })).to.equal(1);
  });

  it('tokenIssued / tokenRevoked record authn_token_created / authn_token_revoked without the token', async () => {
    const t = await token();
    const [created] = await events({ kind: 'security', name: 'authn_token_created', 'target.id': `jti-${issued.length - 1}` });
    expect(created).to.deep.include({ outcome: 'success', target: { type: 'access', id: `jti-${issued.length - 1}` } });
    expect(created.actor).to.deep.equal({ id: 'u-bob', name: 'bob', via: 'explicit' });
    expect(created.meta).to.have.keys(['fingerprint', 'expiresAt', 'subject']);
    expect(created.meta?.fingerprint).to.match(/^[0-9a-f]{16}$/);

    const out = await fetch(`${server.url}/logout`, { method: 'POST', headers: { authorization: `Bearer ${t}` } });
    expect(out.status).to.equal(204);
    const [revoked] = await events({ requestId: rid(out), kind: 'security' });
    expect(revoked).to.deep.include({ name: 'authn_token_revoked', reason: 'logout', target: { type: 'token', id: `jti-${issued.length - 1}` } });
    expect(revoked.actor, 'the verified user revoked it').to.deep.equal({ id: 'u-bob', name: 'bob', via: 'state' });
    expect(revoked.meta?.fingerprint).to.equal(created.meta?.fingerprint);
  });

  it('never stores a token or the secret: every stored document scanned', async () => {
    const all = await events({});
    expect(all.length).to.be.above(8);
    for (const doc of all) {
      const text = JSON.stringify(doc);
      expect(text).to.not.include('SENTINEL');
      for (const t of issued) {
        expect(text).to.not.include(t);
        expect(text).to.not.include(t.split('.')[2]);
      }
    }
  });
});
