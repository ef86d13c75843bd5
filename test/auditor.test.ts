import { expect } from 'chai';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Connection } from 'mongoose';
import defaultAudit, { audit, createAudit } from '../lib/index.js';
import { actorNow } from '../lib/core/context.js';
import { connectTestDb, sleep } from './support/helpers.js';

describe('createAudit', () => {
  let conn: Connection;
  before(async () => {
    conn = await connectTestDb('auditor');
  });
  after(() => conn.close());

  const bad: [string, Record<string, unknown>][] = [
    ['collection', { collection: '' }],
    ['connection', { connection: {} }],
    ['mode', { mode: 'eventually' }],
    ['maxQueue', { maxQueue: -1 }],
    ['maxQueueBytes', { maxQueueBytes: 1.5 }],
    ['onFull', { onFull: 'explode' }],
    ['retention', { retention: { days: 0 } }],
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
  ];
  for (const [name, opts] of bad) {
    it(`throws a TypeError naming "${name}" for ${JSON.stringify(opts)}`, () => {
      expect(() => createAudit({ connection: conn, ...opts } as never)).to.throw(TypeError, `"${name}"`);
    });
  }

  it('accepts a complete valid configuration', () => {
    const a = createAudit({
      connection: conn, collection: 'valid', jwt: { secret: 'k', algorithms: ['HS256'], cookie: 'tok' }, resolveActor: () => null,
      mode: 'sync', maxQueue: 10, maxQueueBytes: 1024, onFull: 'drop', blockTimeoutMs: 100, retention: { days: 30 },
      writeConcern: { w: 1 }, redact: ['pin'], batchSize: 5, flushIntervalMs: 10, models: ['Post'],
    });
    expect(a.model.collection.collectionName).to.equal('valid');
    expect(a.stats()).to.deep.include({ accepted: 0, stored: 0, queued: 0 });
  });

  it('has a default instance on the default connection, exported both as default and as `audit`', () => {
    expect(defaultAudit).to.equal(audit);
    expect(audit.model.collection.collectionName).to.equal('auditevents');
    expect(audit.model.db).to.equal(conn.base.connection);
  });

  it('falls back to block (and warns once) when the spool directory is not writable', async () => {
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => void warnings.push(w);
    process.on('warning', onWarning);
    try {
      // A path below a regular file can never be created, even by root.
      const file = join(mkdtempSync(join(tmpdir(), 'ka-')), 'plain-file');
      writeFileSync(file, 'x');
      const a = createAudit({ connection: conn, collection: 'nospool', spoolDir: join(file, 'spool') });
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
  let conn: Connection;
  before(async () => {
    conn = await connectTestDb('withactor');
  });
  after(() => conn.close());

  it('is the system actor outside any request and withActor', async () => {
    expect(await actorNow()).to.deep.equal({ id: 'system', via: 'system' });
    expect(audit.context()).to.equal(undefined);
  });

  it('attributes everything inside withActor, across awaits and timers, and restores afterwards', async () => {
    const a = createAudit({ connection: conn, spoolDir: mkdtempSync(join(tmpdir(), 'ka-')) });
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
    const a = createAudit({ connection: conn, spoolDir: mkdtempSync(join(tmpdir(), 'ka-')) });
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
    const id = new conn.base.Types.ObjectId();
    expect(audit.withActor({ id }, () => audit.context()?.explicitActor)).to.deep.equal({ id: id.toHexString(), via: 'explicit' });
    expect(() => audit.withActor({ id: '' }, () => 1)).to.throw(TypeError, 'withActor');
  });
});
