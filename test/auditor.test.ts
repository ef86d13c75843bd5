import { expect } from 'chai';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import defaultAudit, { audit, createAudit } from '../lib/index.js';
import { actorNow } from '../lib/core/context.js';
import jwt from 'jsonwebtoken';
import { sleep, useFixture } from './support/helpers.js';

describe('createAudit', () => {
  const fx = useFixture('auditor');

  const bad: [string, Record<string, unknown>][] = [
    ['collection', { collection: '' }],
    ['connection', { connection: {} }],
    ['mode', { mode: 'eventually' }],
    ['maxQueue', { maxQueue: -1 }],
    ['maxQueueBytes', { maxQueueBytes: 1.5 }],
    ['onFull', { onFull: 'explode' }],
    ['retention.days', { retention: { days: 0 } }],
    ['nope', { retention: { byKind: { nope: 3 } } }],
    ['retention.byKind.request', { retention: { byKind: { request: -1 } } }],
    ['redact', { redact: ['ok', 42] }],
    ['resolveActor', { resolveActor: 'me' }],
    ['jwt', { jwt: { algorithms: ['HS256'] } }],
    ['jwt.algorithms', { jwt: { secret: 's', algorithms: ['none'] } }],
    ['jwt.algorithms', { jwt: { secret: 's' } }],
    ['jwt.algorithms', { jwt: { publicKey: 'k', algorithms: ['EdDSA'] } }],
    ['writeConcern', { writeConcern: 'majority' }],
    ['batchSize', { batchSize: 0 }],
    ['loginFailures.max', { loginFailures: { max: 0, windowMs: 10 } }],
    ['jsonwebtoken', { jsonwebtoken: {} }],
    ['scrub', { scrub: 'off' }],
    ['scrub.disable', { scrub: { disable: ['everything'] } }],
    ['trustRequestId', { trustRequestId: 1 }],
    ['failedIdentifiers', { failedIdentifiers: 'md5' }],
    ['identifierKey', { failedIdentifiers: 'hmac' }],
  ];
  for (const [name, opts] of bad) {
    it(`throws a TypeError naming "${name}" for ${JSON.stringify(opts)}`, () => {
      expect(() => createAudit({ connection: fx.conn, ...opts } as never)).to.throw(TypeError, `"${name}"`);
    });
  }

  it('suggests the nearest option name for a typo, and lists the known ones otherwise', () => {
    expect(() => createAudit({ connection: fx.conn, colection: 'x' } as never)).to.throw(TypeError, 'unknown createAudit option "colection"; did you mean "collection"?');
    expect(() => createAudit({ connection: fx.conn, MaxQueue: 1 } as never)).to.throw(TypeError, 'did you mean "maxQueue"?');
    expect(() => createAudit({ connection: fx.conn, zzzzzz: 1 } as never)).to.throw(TypeError, /unknown createAudit option "zzzzzz" \(known: connection, collection/);
  });

  it('takes every option of a complete configuration into effect', async () => {
    const secret = 'all-options-secret';
    const checkpoints: unknown[] = [];
    const a = fx.auditor({
      connection: fx.conn, collection: 'valid', jwt: { secret, algorithms: ['HS256'], cookie: 'tok' }, resolveActor: (ctx) => (ctx.get('x-resolve') === '' ? null : { id: 'resolved' }),
      mode: 'sync', maxQueue: 10, maxQueueBytes: 1024 * 1024, onFull: 'drop', blockTimeoutMs: 2000, retention: { days: 30 },
      writeConcern: { w: 1 }, redact: ['pin'], batchSize: 5, flushIntervalMs: 10, models: ['Post'], maxStringLength: 64,
      spoolDir: fx.tmp(),
      integrity: { key: 'an all-options integrity key....', checkpointEvery: 2, checkpointMs: 60_000 }, onCheckpoint: (cp) => void checkpoints.push(cp),
      scrub: { patterns: [/INT-\d{4}/], disable: ['card'] }, trustRequestId: true, failedIdentifiers: 'hmac', identifierKey: 'sixteen-bytes-or-more',
    });
    const server = await fx.serve(a);
    expect(a.model.collection.collectionName).to.equal('valid');
    const token = jwt.sign({ sub: 'u-cookie' }, secret, { algorithm: 'HS256' });
    // mode: 'sync': each event is stored before its response arrives, so no flush() is needed below.
    await fetch(`${server.url}/jwt?pin=1234&note=${'x'.repeat(100)}`, { headers: { cookie: `tok=${token}` } });
    await fetch(`${server.url}/resolver`, { headers: { 'x-resolve': '1', 'x-request-id': 'proxy-id-1' } });
    await fetch(`${server.url}/INT-1234/4539578763621486`);
    const events = await a.model.find({ kind: 'request' }).sort({ ts: 1, _id: 1 }).lean();
    expect(events.map((e) => e.http?.path)).to.deep.equal(['/jwt', '/resolver', '/[REDACTED]/4539578763621486']); // scrub
    expect(events[1].requestId).to.equal('proxy-id-1'); // trustRequestId
    await a.loginFailed({ identifier: 'typed-password', reason: 'unknown user' });
    await a.flush();
    expect((await a.model.findOne({ kind: 'login_failed' }).lean())?.identifier).to.match(/^hmac:[0-9a-f]{32}$/); // failedIdentifiers, identifierKey
    expect(events[0].actor).to.deep.equal({ id: 'u-cookie', via: 'jwt' }); // jwt.cookie
    expect(events[1].actor).to.deep.equal({ id: 'resolved', via: 'resolver' });
    expect(events[0].http?.query).to.match(/^pin=\[REDACTED\]&note=x+…\[truncated/); // redact, maxStringLength
    expect((events[0].http?.query ?? '').length).to.be.at.most(64);
    // models: ['Post']: a Post is audited, an Other is not.
    const schema = new fx.conn.base.Schema({ n: Number });
    schema.plugin(a.plugin);
    const Post = fx.conn.model('Post', schema, 'all_posts');
    const Other = fx.conn.model('Other', schema.clone(), 'all_others');
    await Post.create({ n: 1 });
    await Other.create({ n: 2 });
    await a.flush();
    expect(await a.model.countDocuments({ kind: 'create' })).to.equal(1);
    expect(await a.model.countDocuments({ kind: 'create', model: 'Post' })).to.equal(1);
    // integrity: HMAC-signed checkpoints every 2 events, each handed to onCheckpoint.
    expect(checkpoints.length).to.be.at.least(1);
    expect(checkpoints[0]).to.include({ alg: 'hmac-sha256' });
    await a.close(); // audit_stop written: the whole chain is verified
    expect((await a.verify()).problems).to.deep.equal([]);
  });

  it('has a default instance on the default connection, exported both as default and as `audit`', () => {
    expect(defaultAudit).to.equal(audit);
    expect(audit.model.collection.collectionName).to.equal('auditevents');
    expect(audit.model.db).to.equal(fx.conn.base.connection);
  });

  it('falls back to block (and warns once) when the spool directory is not writable', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      // A path below a regular file can never be created, even by root.
      const file = join(fx.tmp(), 'plain-file');
      writeFileSync(file, 'x');
      const a = fx.auditor({ collection: 'nospool', spoolDir: join(file, 'spool') });
      expect(a.stats().spooled).to.equal(0);
      await sleep(10);
    } finally {
      process.off('warning', onWarning);
    }
    const mine = warnings.filter((w) => w.message.includes('not writable'));
    expect(mine).to.have.length(1);
    expect(mine[0].message).to.include("onFull: 'block'");
  });
});

describe('withActor and the async context', () => {
  const fx = useFixture('withactor');

  it('is the system actor outside any request and withActor', async () => {
    expect(await actorNow()).to.deep.equal({ id: 'system', via: 'system' });
    expect(audit.context()).to.equal(undefined);
  });

  it('attributes everything inside withActor, across awaits and timers, and restores afterwards', async () => {
    const a = fx.auditor();
    const seen = await a.withActor({ id: 'cron', name: 'nightly job' }, async () => {
      await sleep(5);
      const inTimer = await new Promise((resolve) => setTimeout(() => resolve(actorNow()), 5));
      return [await actorNow(), inTimer];
    });
    expect(seen).to.deep.equal([
      { id: 'cron', name: 'nightly job', via: 'explicit' },
      { id: 'cron', name: 'nightly job', via: 'explicit' },
    ]);
    expect(await actorNow()).to.deep.equal({ id: 'system', via: 'system' });
  });

  it('keeps concurrent withActor calls apart', async () => {
    const a = fx.auditor();
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        a.withActor({ id: `u${i}` }, async () => {
          await sleep(Math.random() * 10);
          return (await actorNow())?.id;
        })),
    );
    expect(results).to.deep.equal(Array.from({ length: 200 }, (_, i) => `u${i}`));
  });

  it('turns an ObjectId actor id into its hex string and rejects an actor without id', () => {
    const id = new fx.conn.base.Types.ObjectId();
    expect(audit.withActor({ id }, () => audit.context()?.explicitActor)).to.deep.equal({ id: id.toHexString(), via: 'explicit' });
    expect(() => audit.withActor({ id: '' }, () => 1)).to.throw(TypeError, 'withActor');
  });
});
