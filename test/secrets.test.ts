/**
 * No secret reaches the store by any path: a distinct sentinel is planted in every place an app can put a
 * secret (query strings, bodies as objects and as text, paths, headers, user agents, error messages and stacks,
 * thrown objects, validation, cast and duplicate-key errors, documents, diffs, summaries, login meta, failed
 * login identifiers), then every stored event is read back as JSON and searched for them.
 */
import { expect } from 'chai';
import Router from '@koa/router';
import Koa from 'koa';
import mongoose, { mongo, Schema, type Model } from 'mongoose';
import { errorInfo } from '../lib/core/error-info.js';
import { createRedactor } from '../lib/core/redact.js';
import { DEFAULT_LIMITS } from '../lib/core/safe.js';
import { createAudit, type AuditEvent, type Auditor } from '../lib/index.js';
import { isCardNumber } from '../lib/core/scrub.js';
import { useFixture, type Running } from './support/helpers.js';

const R = '[REDACTED]';

/** A minimal upstream body parser: JSON and forms parsed, unless `x-raw` asks to leave the text as it came. */
async function bodyParser(ctx: Koa.Context, next: Koa.Next): Promise<void> {
  if (ctx.method === 'POST') {
    let text = '';
    for await (const c of ctx.req as AsyncIterable<Buffer>) text += c.toString('utf8');
    const req = ctx.request as { body?: unknown };
    if (ctx.get('x-raw') !== '') req.body = text;
    else if (ctx.request.type === 'application/json') req.body = JSON.parse(text);
    else if (ctx.request.type === 'application/x-www-form-urlencoded') req.body = Object.fromEntries(new URLSearchParams(text));
    else req.body = text;
  }
  await next();
}

interface Account {
  username: string;
  password?: string;
  pin?: number;
  apiKey?: string;
  note?: string;
  extra?: Record<string, unknown>;
  profile?: { creditCardNumber?: string; recoveryCodes?: string[]; otp?: string; nickname?: string };
}

describe('no secret reaches the store', function () {
  this.timeout(30_000);
  const fx = useFixture('secrets');
  let a: Auditor;
  let Account: Model<Account>;
  let server: Running;
  /** The login routes, audited without captureBody: a captured body would keep the username field as typed. */
  let loginServer: Running;

  before(async () => {
    a = fx.auditor({ failedIdentifiers: 'hmac', identifierKey: 'a-key-of-this-deployment', flushIntervalMs: 20 });
    const schema = new Schema<Account>({
      username: { type: String, required: true },
      password: { type: String, minlength: 40 },
      pin: Number,
      apiKey: { type: String, unique: true, sparse: true },
      note: String,
      extra: Schema.Types.Mixed,
      profile: { creditCardNumber: String, recoveryCodes: [String], otp: String, nickname: String },
    });
    schema.plugin(a.plugin, { maxDocuments: 1 });
    Account = fx.conn.model<Account>('SecretAccount', schema);
    await Account.init();

    const app = new Koa();
    app.silent = true;
    app.use(a({ captureBody: true, maxBodyBytes: 64 * 1024, redactParams: ['inviteId'] }));
    app.use(bodyParser);
    const router = new Router();
    router.get('/search', (ctx) => void (ctx.body = 'ok'));
    router.post('/echo', (ctx) => void (ctx.body = 'ok'));
    router.post('/accounts', async (ctx) => {
      const doc = await Account.create((ctx.request as { body?: unknown }).body as Account);
      ctx.body = { id: doc._id.toHexString() };
    });
    router.get('/reset/:token', async (ctx) => {
      await Account.findById(ctx.params.token); // a CastError quoting the token on _id
    });
    router.get('/reset2/:token', (ctx) => {
      throw new Error(`no reset pending for ${ctx.params.token}`);
    });
    router.get('/verify/:resetCode', (ctx) => void (ctx.body = 'ok'));
    router.get('/invite/:inviteId/accept', (ctx) => void (ctx.body = 'ok'));
    router.get('/files/:name', (ctx) => void (ctx.body = 'ok'));
    router.post('/fail/:kind', (ctx) => {
      const s = (ctx.request as { body?: unknown }).body as Record<string, string>;
      switch (ctx.params.kind) {
        case 'message':
          throw new Error(s.text);
        case 'object':
          throw { token: s.token, nested: { password: s.password }, note: s.note }; // eslint-disable-line no-throw-literal
        case 'string':
          throw s.text; // eslint-disable-line no-throw-literal
        default:
          ctx.throw(400);
      }
    });
    const logins = new Router();
    logins.post('/login', async (ctx) => {
      const { username, password } = (ctx.request as { body?: unknown }).body as Record<string, string>;
      if (username === 'alice' && password === 'right') {
        await a.loginSucceeded({ user: { id: 'u-alice', username }, meta: (ctx.request as { body?: unknown }).body as Record<string, unknown> });
        ctx.body = 'ok';
      } else if (username === 'alice') {
        await a.loginFailed({ identifier: username, knownUser: true, reason: 'bad password', meta: { attempt: 1, note: `password=${password}` } });
        ctx.status = 401;
      } else {
        await a.loginFailed({ identifier: username, reason: 'unknown user' });
        ctx.status = 401;
      }
    });
    app.use(router.routes());
    server = await fx.listen(app);
    const loginApp = new Koa();
    loginApp.use(a());
    loginApp.use(bodyParser);
    loginApp.use(logins.routes());
    loginServer = await fx.listen(loginApp);
  });

  it('stores no sentinel anywhere, and still records every event with its structure', async () => {
    const sentinels = new Map<string, string>();
    const S = (label: string): string => {
      const v = `zqx${label.replace(/[^A-Za-z0-9]/g, '')}${sentinels.size}Q`;
      sentinels.set(label, v);
      return v;
    };
    const plant = (label: string, value: string): string => {
      sentinels.set(label, value);
      return value;
    };
    const jwtToken = plant('jwt token', 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ6cXhqd3QifQ.c2VudGluZWwtc2lnbmF0dXJlLXpxeA');
    const card = plant('card', '4539578763621486');
    expect(isCardNumber(card)).to.equal(true);
    const basic = plant('basic', Buffer.from(`bob:${S('basic password')}`).toString('base64'));
    const url = server.url;
    const json = (path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
      fetch(`${path === '/login' ? loginServer.url : url}${path}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...headers } });
    const raw = (path: string, body: string, type: string): Promise<Response> =>
      fetch(`${url}${path}`, { method: 'POST', body, headers: { 'content-type': type, 'x-raw': '1' } });

    // Query strings: the names of the issue, split names, and values found by their content.
    const names = ['jwt', 'key', 'auth', 'sig', 'signature', 'session', 'pan', 'code', 'user[pwd]', 'api.key', 'api key', 'password', 'access_token', 'pin'];
    const q = names.map((n) => `${encodeURIComponent(n)}=${S(`query ${n}`)}`).join('&');
    expect((await fetch(`${url}/search?${q}&q=keyboard&next=${encodeURIComponent(`https://bob:${S('query userinfo')}@x.example/`)}`)).status).to.equal(200);
    // Headers, cookies and the user agent.
    await fetch(`${url}/search`, {
      headers: {
        authorization: `Bearer ${S('auth header')}`,
        cookie: `sid=${S('cookie')}`,
        'user-agent': `agent/1.0 (token=${S('ua pair')}) ${jwtToken} Basic ${basic}`,
      },
    });
    // Bodies as objects, with names outside the old list.
    const bodyNames = ['pin', 'otp', 'passphrase', 'cvc', 'creditCardNumber', 'sessionId', 'recoveryCodes', 'user[pwd]', 'api.key', 'api key', 'password', 'jwt'];
    const body: Record<string, unknown> = Object.fromEntries(bodyNames.map((n) => [n, S(`body ${n}`)]));
    body.nested = { accessToken: S('body nested token'), list: [{ secret: S('body list secret') }] };
    body.note = `call me, card ${card}`;
    await json('/echo', body);
    // Bodies as text: form-encoded and JSON parsed by their type, anything else scrubbed.
    await raw('/echo', `username=alice&password=${S('text form password')}&pin=${S('text form pin')}`, 'application/x-www-form-urlencoded');
    await raw('/echo', JSON.stringify({ otp: S('text json otp'), inner: { apiKey: S('text json apiKey') } }), 'application/json');
    await raw('/echo', `hello token=${S('text plain token')} and Bearer ${S('text plain bearer')}`, 'text/plain');
    // Paths: secret route parameters, by name, by the redactParams option, and a token found by its content.
    await fetch(`${url}/verify/${S('path resetCode')}`);
    await fetch(`${url}/invite/${S('path inviteId')}/accept`);
    await fetch(`${url}/files/${jwtToken}`);
    // Errors: a cast error quoting a path token, a message repeating it, free-text messages, thrown objects and strings.
    await fetch(`${url}/reset/${S('cast token')}`);
    await fetch(`${url}/reset2/${S('message token')}`);
    await json('/fail/message', { text: `upstream said: Authorization: Bearer ${S('message bearer')}, {"password": "${S('message json')}"}, via mongodb://app:${S('message userinfo')}@db:27017, card ${card}` });
    await json('/fail/object', { token: S('thrown token'), password: S('thrown password'), note: `api_key=${S('thrown note')}` });
    await json('/fail/string', { text: `password=${S('thrown string')}` });
    // Validation, cast and duplicate-key errors on secret paths.
    const pw = S('validation password');
    expect((await json('/accounts', { username: 'v', password: pw })).status).to.equal(500);
    expect((await json('/accounts', { username: 'c', pin: S('cast pin') })).status).to.equal(500);
    const apiKey = S('duplicate apiKey');
    expect((await json('/accounts', { username: 'd1', apiKey })).status).to.equal(200);
    expect((await json('/accounts', { username: 'd2', apiKey })).status).to.equal(500);
    // Changes: secret fields, nested secret names, free text in a field; updates, a summary above maxDocuments.
    const created = (await (await json('/accounts', {
      username: 'carol', password: S('create password').padEnd(40, 'x'), pin: 1234,
      profile: { creditCardNumber: S('create card'), recoveryCodes: [S('create recovery')], otp: S('create otp'), nickname: 'cc' },
      note: `my card is ${card}, password=${S('create note')}`,
      extra: { [`Bearer ${S('mixed key')}`]: 1, plain: 'visible' },
    })).json()) as { id: string };
    expect(created.id).to.be.a('string');
    await a.withActor({ id: 'admin' }, async () => {
      await Account.updateOne({ _id: created.id }, { $set: { password: S('update password').padEnd(40, 'y'), 'profile.otp': S('update otp') } });
      await Account.create({ username: 'dave', apiKey: S('summary apiKey') });
      await Account.updateMany({ username: { $in: ['carol', 'dave'] }, apiKey: { $ne: S('summary filter') } }, { $set: { 'profile.otp': S('summary otp'), note: `token=${S('summary note')}` } });
    });
    // Logins: meta with secrets and headers, a failed login of a known user, and one of an unknown user who
    // typed a password into the username field.
    await json('/login', { username: 'alice', password: 'right', otp: S('login otp'), headers: { authorization: `Bearer ${S('login header')}`, cookie: `sid=${S('login cookie')}` }, err: 'x' });
    await json('/login', { username: 'alice', password: S('login bad password') });
    const typed = S('login typed password');
    await json('/login', { username: typed, password: 'whatever' });
    await a.loginSucceeded({ user: { id: 'u-bob' }, meta: { err: new mongoose.Error.ValidationError() , card } });

    await a.flush();
    const stored = (await a.model.find().lean()) as unknown as AuditEvent[];
    const text = JSON.stringify(stored);
    const leaked = [...sentinels].filter(([, v]) => text.includes(v)).map(([k]) => k);
    expect(leaked, 'sentinels found in the store').to.deep.equal([]);
    expect(text).not.to.include('zqx');

    // The trail still says what happened.
    const requests = stored.filter((e) => e.kind === 'request');
    expect(requests).to.have.length(22);
    const byPath = (p: string): AuditEvent | undefined => requests.find((e) => e.http?.path.startsWith(p));
    expect(byPath('/verify/')?.http).to.include({ path: `/verify/${R}`, route: '/verify/:resetCode' });
    expect(byPath('/invite/')?.http).to.include({ path: `/invite/${R}/accept`, route: '/invite/:inviteId/accept' });
    expect(byPath('/files/')?.http).to.include({ path: `/files/${R}` });
    expect(byPath('/reset/')?.http).to.include({ path: `/reset/${R}`, route: '/reset/:token' });
    expect(byPath('/reset/')?.error).to.deep.include({ name: 'CastError', errors: [{ path: '_id', kind: 'ObjectId', name: 'CastError' }] });
    expect(byPath('/reset/')?.error?.message).to.include(`Cast to ObjectId failed for value "${R}"`);
    const search = requests.filter((e) => e.http?.path === '/search');
    expect(search[0].http?.query).to.include('q=keyboard');
    expect(search[1].userAgent).to.include('agent/1.0');
    const accounts = requests.filter((e) => e.http?.path === '/accounts' && e.error !== undefined);
    const [validation, cast, duplicate] = accounts;
    expect(validation.error).to.deep.include({ name: 'ValidationError', errors: [{ path: 'password', kind: 'minlength', name: 'ValidatorError' }] });
    expect(validation.error?.message).to.equal('SecretAccount validation failed: password: Path `password` is invalid (minlength)');
    expect(cast.error).to.deep.include({ name: 'ValidationError', errors: [{ path: 'pin', kind: 'Number', name: 'CastError' }] });
    expect(duplicate.error).to.include({ code: 11000 });
    if (duplicate.error?.errors === undefined) {
      // FerretDB names neither the index nor the key: the paths are unknown (the driver-shaped test below covers MongoDB's form).
      console.log(`      (the ${process.env.KOA_AUDIT_TEST_DB_KIND ?? 'test'} server's duplicate-key error names no key: "${duplicate.error?.message}")`);
    } else expect(duplicate.error.errors).to.deep.equal([{ path: 'apiKey', kind: 'unique', name: 'DuplicateKey' }]);
    const thrown = requests.find((e) => e.http?.path === '/fail/object');
    expect(JSON.parse(thrown?.error?.message ?? '{}')).to.deep.include({ token: R, nested: { password: R } });
    const form = requests.find((e) => JSON.stringify(e.http?.requestBody ?? '').includes('alice'));
    expect(form?.http?.requestBody).to.deep.equal({ username: 'alice', password: R, pin: R });
    const changes = stored.filter((e) => e.kind === 'create' || e.kind === 'update');
    expect(changes.length).to.be.at.least(4);
    const carolChanges = changes.find((e) => e.kind === 'create' && e.changes?.some((c) => c.path === 'username' && c.to === 'carol'))?.changes ?? [];
    expect(carolChanges.find((c) => c.path === `extra.Bearer ${R}`)).to.deep.equal({ path: `extra.Bearer ${R}`, from: null, to: R });
    expect(carolChanges.find((c) => c.path === 'extra.plain')).to.deep.equal({ path: 'extra.plain', from: null, to: 'visible' });
    expect(carolChanges.find((c) => c.path === 'profile.creditCardNumber')).to.deep.equal({ path: 'profile.creditCardNumber', from: null, to: R });
    expect(carolChanges.find((c) => c.path === 'note')?.to).to.equal(`my card is ${R}, password=${R}`);
    expect(stored.some((e) => e.summary !== undefined)).to.equal(true);
    const failures = stored.filter((e) => e.kind === 'login_failed');
    expect(failures.map((e) => e.identifier)).to.deep.equal(['alice', a.hashIdentifier(typed)]);
    expect(failures[1].identifier).to.match(/^hmac:[0-9a-f]{32}$/);
  });

  it('stores a MongoDB duplicate-key error as its index paths, without the key value of a secret path', () => {
    const red = createRedactor();
    const secret = 'zqx-duplicate-api-key';
    const err = new mongo.MongoServerError({
      errmsg: `E11000 duplicate key error collection: app.accounts index: apiKey_1 dup key: { apiKey: "${secret}" }`,
      code: 11000,
      keyPattern: { apiKey: 1 },
      keyValue: { apiKey: secret },
    });
    const info = errorInfo(err, red, DEFAULT_LIMITS);
    expect(info).to.deep.include({ name: 'MongoServerError', code: 11000, errors: [{ path: 'apiKey', kind: 'unique', name: 'DuplicateKey' }] });
    expect(info.message).to.equal('E11000 duplicate key error collection: app.accounts index: apiKey_1');
    expect(JSON.stringify(info)).not.to.include(secret);
    // A key that is not secret keeps its value: it is what an investigation needs.
    const email = new mongo.MongoServerError({ errmsg: 'E11000 duplicate key error collection: app.accounts index: email_1 dup key: { email: "a@b.c" }', code: 11000, keyPattern: { email: 1 }, keyValue: { email: 'a@b.c' } });
    expect(errorInfo(email, red, DEFAULT_LIMITS).message).to.include('dup key: { email: "a@b.c" }');
    // Without a key pattern, the index name says which paths were involved.
    const named = new mongo.MongoServerError({ errmsg: `E11000 duplicate key error collection: app.x index: user_1_apiKey_-1 dup key: { : "${secret}" }`, code: 11000 });
    const namedInfo = errorInfo(named, red, DEFAULT_LIMITS);
    expect(namedInfo.errors?.map((e) => e.path)).to.deep.equal(['user', 'apiKey']);
    expect(JSON.stringify(namedInfo)).not.to.include(secret);
  });

  it('groups the failed logins of one unknown identifier under one HMAC, and keeps a known user\'s as typed', async () => {
    await a.loginFailed({ identifier: 'hunter2-typed-as-name', reason: 'unknown user' });
    await a.loginFailed({ identifier: 'hunter2-typed-as-name', reason: 'unknown user' });
    await a.loginFailed({ identifier: 'someone-else', reason: 'unknown user' });
    await a.loginFailed({ identifier: 'bob', knownUser: true, reason: 'bad password' });
    await a.flush();
    const ids = (await a.model.find({ kind: 'login_failed', reason: { $in: ['unknown user', 'bad password'] }, identifier: { $ne: 'alice' } }).sort({ ts: 1, _id: 1 }).lean()).map((e) => e.identifier);
    const tail = ids.slice(-4);
    expect(tail[0]).to.equal(tail[1]);
    expect(tail[2]).not.to.equal(tail[0]);
    expect(tail[3]).to.equal('bob');
    expect(tail[0]).to.equal(a.hashIdentifier('hunter2-typed-as-name'));
    // Another auditor of the same deployment (same key) hashes alike; the default stays plain.
    const b = createAudit({ connection: fx.conn, collection: 'other', spoolDir: fx.tmp(), failedIdentifiers: 'hmac', identifierKey: 'a-key-of-this-deployment' });
    expect(b.hashIdentifier('hunter2-typed-as-name')).to.equal(tail[0]);
    await b.close();
    const plain = createAudit({ connection: fx.conn, collection: 'other', spoolDir: fx.tmp() });
    expect(plain.hashIdentifier('x')).to.equal('x');
    await plain.close();
  });

  it('validates the new options, naming them', () => {
    const make = (o: object): unknown => createAudit({ connection: fx.conn, spoolDir: fx.tmp(), ...o });
    expect(() => make({ failedIdentifiers: 'hmac' })).to.throw(TypeError, /"identifierKey"/);
    expect(() => make({ failedIdentifiers: 'sha' })).to.throw(TypeError, /"failedIdentifiers"/);
    expect(() => make({ failedIdentifiers: 'hmac', identifierKey: 'short' })).to.throw(TypeError, /"identifierKey" must be a string or Buffer of at least 16 bytes/);
    expect(() => make({ trustRequestId: 'yes' })).to.throw(TypeError, /"trustRequestId"/);
    expect(() => make({ scrub: { patterns: ['x'] } })).to.throw(TypeError, /"scrub.patterns"/);
    expect(() => make({ scrub: { disable: ['cards'] } })).to.throw(TypeError, /"scrub.disable"/);
    expect(() => make({ scrub: { disabled: true } })).to.throw(TypeError, /unknown scrub option "disabled"/);
    const fromJwt = make({ failedIdentifiers: 'hmac', jwt: { secret: 'a-jwt-secret-of-this-app', algorithms: ['HS256'] } }) as Auditor;
    expect(fromJwt.hashIdentifier('x')).to.match(/^hmac:[0-9a-f]{32}$/);
    void fromJwt.close();
  });

  it('applies the scrub option to every stored string', async () => {
    const b = fx.auditor({ collection: 'scrub_opts', scrub: { patterns: [/INT-\d{6}/], disable: ['card'] } });
    const r = await fx.serve(b, (ctx) => {
      ctx.app.silent = true;
      throw new Error(`ticket INT-123456 for 4539578763621486 token=abc`);
    });
    await fetch(`${r.url}/x`);
    await b.flush();
    const [ev] = await b.model.find({ kind: 'request' }).lean();
    expect(ev.error?.message).to.equal(`ticket ${R} for 4539578763621486 token=${R}`);
  });
});
