/**
 * Delivery that one event cannot stop: events are bounded before they are queued, and a batch the server
 * refuses for a reason that is not an outage is split, its offending event stored reduced or recorded as a
 * loss, in the queue and in the spool replay alike.
 */
import { expect } from 'chai';
import mongoose, { mongo, Schema } from 'mongoose';
import { EventEmitter } from 'node:events';
import type { StoredDoc } from '../lib/core/types.js';
import { Spool } from '../lib/store/spool.js';
import { Writer, type WriterOptions } from '../lib/store/writer.js';
import { useFixture } from './support/helpers.js';

const MiB = 1024 * 1024;
const bsonSize = (d: object): number => mongo.BSON.calculateObjectSize(d);

/** A plain document of about `mb` MB: many fields of 4,000 characters each (every one under maxStringLength). */
function bigDocument(mb: number, letter: string): Record<string, string> {
  const doc: Record<string, string> = {};
  const fields = Math.round((mb * 1_000_000) / 4_010);
  for (let i = 0; i < fields; i++) doc[`f${i}`] = `${letter}${i}`.padEnd(4_000, letter);
  return doc;
}

describe('delivery: no event can halt it', function () {
  this.timeout(60_000);
  const fx = useFixture('delivery');

  it('a ~9.8 MB document updated in full: the event is bounded and stored, and the events behind it too', async () => {
    const a = fx.auditor({ collection: 'poison_update', flushIntervalMs: 20 });
    const errors: Error[] = [];
    a.on('error', (e) => errors.push(e));
    const Big = fx.conn.model('BigDoc', new Schema({}, { strict: false, collection: 'bigdocs' }).plugin(a.plugin));
    const before = bigDocument(9.8, 'a');
    const { insertedId } = await Big.collection.insertOne({ ...before });
    await Big.replaceOne({ _id: insertedId }, bigDocument(9.8, 'b'));
    await a.loginFailed({ identifier: 'after-the-big-one', provider: 'local', reason: 'bad password' });
    await a.flush();

    const update = await a.model.collection.findOne({ kind: 'update', model: 'BigDoc' });
    expect(update, 'the update event is stored').to.not.equal(null);
    const u = update as unknown as Record<string, unknown> & { truncated: { bytes: number; fields: Record<string, number> }; changes: { path: string }[] };
    expect(bsonSize(u)).to.be.at.most(2 * MiB + 64 * 1024, 'within maxEventBytes (default 2 MiB)');
    expect(u.truncated.bytes).to.be.above(16 * MiB, 'the original size is kept');
    expect(u.truncated.fields.changes).to.be.above(16 * MiB);
    expect(u.changes[0].path).to.equal('f0');
    expect(await a.model.countDocuments({ kind: 'login_failed', identifier: 'after-the-big-one' })).to.equal(1, 'not blocked behind it');
    expect(a.stats()).to.include({ queued: 0, dropped: 0 });
  });

  it('meta is bounded too: replaced by its size, the event says what was cut', async () => {
    const a = fx.auditor({ collection: 'big_meta', maxEventBytes: 256 * 1024 });
    const meta: Record<string, string> = {};
    for (let i = 0; i < 900; i++) meta[`k${i}`] = 'm'.repeat(4000); // ~3.6 MB, each string within maxStringLength
    await a.loginFailed({ identifier: 'big-meta', provider: 'local', reason: 'x', meta });
    await a.flush();
    const login = await a.model.collection.findOne({ kind: 'login_failed', identifier: 'big-meta' });
    expect(login?.meta).to.deep.include({ truncated: true });
    expect(login?.truncated.fields.meta).to.be.above(3_000_000);
    expect(bsonSize(login as object)).to.be.at.most(256 * 1024);
  });

  it('change paths are capped at maxStringLength', async () => {
    const a = fx.auditor({ collection: 'long_paths', maxStringLength: 1000 });
    const Long = fx.conn.model('LongPath', new Schema({}, { strict: false, collection: 'longpaths' }).plugin(a.plugin));
    await Long.create({ ['k'.repeat(5000)]: 1 });
    await a.flush();
    const ev = await a.model.findOne({ kind: 'create', model: 'LongPath' }).lean();
    const paths = (ev?.changes ?? []).map((c) => c.path);
    expect(paths).to.have.length(1);
    expect(paths[0].length).to.be.at.most(1000);
    expect(paths[0]).to.match(/^k+…\[truncated \d+ chars\]$/);
  });

  it('the writer: a refused batch is split; the offending event is stored reduced, nothing behind it waits', async () => {
    const coll = fx.conn.collection('poison_writer');
    const errors: Error[] = [];
    const events = new EventEmitter();
    events.on('error', (e: Error) => errors.push(e));
    const w = new Writer(() => coll, writerOptions(), events);
    const normal = (n: number): StoredDoc => ({ _id: new mongo.ObjectId(), ts: new Date(), kind: 'request', outcome: 'success', n });
    // Built around the core (which bounds every event): 17 MB, more than any server takes.
    const huge: StoredDoc = { _id: new mongo.ObjectId(), ts: new Date(), kind: 'update', outcome: 'success', actor: null, chain: { id: 'c1', seq: 7, prev: 'p', hash: 'h' }, changes: [{ path: 'x', from: null, to: 'y'.repeat(17 * MiB) }] };
    const docs = [normal(0), normal(1), huge, normal(3), normal(4)];
    for (const d of docs) w.accept(d);
    await w.flush();
    const stored = await coll.find().toArray();
    expect(stored.map((d) => String(d._id)).sort()).to.deep.equal(docs.map((d) => String(d._id)).sort(), 'all five, each once');
    const reduced = stored.find((d) => String(d._id) === String(huge._id)) as Record<string, unknown>;
    expect(reduced).to.deep.include({ kind: 'update', chain: { id: 'c1', seq: 7, prev: 'p', hash: 'h' } });
    expect(reduced.changes).to.equal(undefined);
    expect((reduced.truncated as { bytes: number }).bytes).to.be.above(17 * MiB);
    expect(w.stats()).to.include({ accepted: 5, stored: 5, queued: 0, dropped: 0, retried: 0 });
    expect(errors.map((e) => e.message).join('\n')).to.contain(String(huge._id));
    await w.close(1000);
  });

  it('the spool replay: an event the server refuses is stored reduced, the events after it are stored, the file removed', async () => {
    const dir = fx.tmp();
    const destination = { db: fx.conn.name, collection: 'poison_spool' };
    const left = new Spool(dir, () => destination);
    const before = { _id: new mongo.ObjectId(), ts: new Date(), kind: 'request', outcome: 'success', n: 0 };
    const huge = { _id: new mongo.ObjectId(), ts: new Date(), kind: 'update', outcome: 'success', meta: { blob: 'z'.repeat(17 * MiB) } };
    const after = { _id: new mongo.ObjectId(), ts: new Date(), kind: 'request', outcome: 'success', n: 2 };
    left.append([before, huge, after]);
    left.close(); // its auditor is gone: its files are anyone's to replay
    const a = fx.auditor({ collection: 'poison_spool', spoolDir: dir });
    a.on('error', () => {});
    await a.flush();
    const stored = await a.model.collection.find().toArray();
    expect(stored.map((d) => String(d._id)).sort()).to.deep.equal([before, huge, after].map((d) => String(d._id)).sort());
    const r = stored.find((d) => String(d._id) === String(huge._id)) as Record<string, unknown>;
    expect(Object.keys(r.meta as object)).to.deep.equal(['storeError'], 'the data is gone, the reason kept');
    expect((r.truncated as { bytes: number }).bytes).to.be.above(17 * MiB);
    expect(left.files()).to.deep.equal([]);
  });

  it('sync mode: one outage, one degraded/recovered pair (writes that began during the outage and fail after it are stale)', async () => {
    // Writes during the "outage" go to a server that does not exist (port 9): they time out after
    // blockTimeoutMs. The store comes back while some of them are still waiting; their failures, after the
    // first success, must not start a new outage.
    const dead = fx.own(mongoose.createConnection('mongodb://127.0.0.1:9/none', { serverSelectionTimeoutMS: 2_000 }));
    dead.on('error', () => {});
    let down = true;
    const live = fx.conn.collection('sync_storm');
    const events = new EventEmitter();
    events.on('error', () => {});
    const signals: string[] = [];
    events.on('degraded', () => signals.push('degraded'));
    events.on('recovered', () => signals.push('recovered'));
    const w = new Writer(() => (down ? dead.collection('sync_storm') : live), writerOptions({ blockTimeoutMs: 300, degradedAfterMs: 100 }), events);
    const doc = (): StoredDoc => ({ _id: new mongo.ObjectId(), ts: new Date(), kind: 'request', outcome: 'success' });
    const writes: Promise<unknown>[] = [];
    for (let i = 0; i < 40; i++) {
      if (i === 20) down = false; // recovery, while the writes of the last 300 ms still wait
      writes.push(w.writeNow(doc()).catch(() => {}));
      await new Promise((r) => setTimeout(r, 25));
    }
    await Promise.all(writes);
    expect(signals).to.deep.equal(['degraded', 'recovered']);
    await w.close(1000);
  });
});

function writerOptions(over: Partial<WriterOptions> = {}): WriterOptions {
  return {
    batchSize: 500, flushIntervalMs: 20, maxQueue: 1000, maxQueueBytes: 1 << 30, onFull: 'drop', spool: null, wal: null,
    blockTimeoutMs: 1000, writeConcern: undefined, degradedAfterMs: 1000, retryMinMs: 20, retryMaxMs: 200,
    lossEvent: (f) => ({ _id: new mongo.ObjectId(), ts: new Date(), kind: 'loss', outcome: 'failure', meta: { lost: f.lost } }),
    ...over,
  };
}
