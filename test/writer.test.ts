import { expect } from 'chai';
import mongoose, { mongo } from 'mongoose';
import { readdirSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { createAudit, type Auditor } from '../lib/index.js';
import { AuditUnavailableError } from '../lib/core/errors.js';
import { Writer, type WriterOptions } from '../lib/store/writer.js';
import { useFixture, type Running, APP_EVENTS } from './support/helpers.js';

describe('writer: queue policies, duplicates, sync mode', () => {
  const fx = useFixture('writer');
  const tmp = fx.tmp;
  const make = fx.auditor;
  let handled = 0;
  const serve = (a: Auditor): Promise<Running> =>
    fx.serve(a, (ctx) => {
      handled++;
      ctx.body = 'ok';
    });
  const get = async (r: Running, path: string): Promise<number> => (await fetch(r.url + path)).status;

  // A queue that is never drained on its own (huge batch, long interval) is "full" at maxQueue: the policies
  // can be watched without stopping the server; faults.test.ts does the same with the server really down.
  const stalled = { batchSize: 10_000, flushIntervalMs: 600_000 } as const;

  it("'drop': counts what did not fit and records the loss, with count and time range, once the store writes", async () => {
    const a = make({ collection: 'drop_policy', ...stalled, maxQueue: 5, onFull: 'drop' });
    const r = await serve(a);
    const t0 = new Date();
    for (let i = 0; i < 8; i++) expect(await get(r, `/d/${i}`)).to.equal(200);
    expect(a.stats()).to.include({ accepted: 8, queued: 5, dropped: 3, spooled: 0 });
    await a.flush();
    expect(await a.model.countDocuments({ kind: 'request' })).to.equal(5);
    const losses = await a.model.find({ kind: 'loss' }).lean();
    expect(losses).to.have.length(1);
    const meta = losses[0].meta as { lost: number; from: string; to: string; policy: string };
    expect(meta).to.include({ lost: 3, policy: 'drop' });
    expect(new Date(meta.from).getTime()).to.be.at.least(t0.getTime() - 5);
    expect(new Date(meta.to).getTime()).to.be.at.least(new Date(meta.from).getTime());
    expect(losses[0].actor).to.deep.equal({ id: 'system', via: 'system' });
    expect(a.stats()).to.include({ stored: 6, queued: 0 });
  });

  it("'spool': what did not fit goes to the spool file and is stored after the queue, nothing lost", async () => {
    const dir = tmp();
    const a = make({ collection: 'spool_policy', ...stalled, maxQueue: 5, onFull: 'spool', spoolDir: dir });
    const r = await serve(a);
    for (let i = 0; i < 12; i++) expect(await get(r, `/s/${i}`)).to.equal(200);
    expect(a.stats()).to.include({ accepted: 12, queued: 5, spooled: 7, dropped: 0 });
    expect(readdirSync(dir).filter((f) => f.startsWith('spool-'))).to.have.length(1);
    await a.flush();
    const paths = (await a.model.find({ kind: 'request' }).lean()).map((e) => e.http?.path).sort();
    expect(paths).to.deep.equal(Array.from({ length: 12 }, (_, i) => `/s/${i}`).sort());
    expect(await a.model.countDocuments({ kind: 'loss' })).to.equal(0);
    expect(readdirSync(dir)).to.deep.equal([], 'replayed spool files are removed');
    expect(a.stats()).to.include({ stored: 12, queued: 0 });
  });

  it("'block': the request waits for room, then fails closed with 503 before the handler runs", async () => {
    const a = make({ collection: 'block_policy', ...stalled, maxQueue: 2, onFull: 'block', blockTimeoutMs: 300 });
    const r = await serve(a);
    expect(await get(r, '/b/1')).to.equal(200);
    expect(await get(r, '/b/2')).to.equal(200);
    const before = handled;
    const t = Date.now();
    expect(await get(r, '/b/3')).to.equal(503);
    expect(Date.now() - t).to.be.at.least(250);
    expect(handled).to.equal(before, 'the handler did not run');
    await a.flush();
    expect(await get(r, '/b/4')).to.equal(200);
    await a.flush();
    expect(await a.model.countDocuments({ kind: 'request' })).to.equal(3);
  });

  it("'block': waiters woken by a write never push the queue past maxQueue", async () => {
    const a = make({ collection: 'block_bound', batchSize: 3, flushIntervalMs: 20, maxQueue: 3, onFull: 'block', blockTimeoutMs: 10_000 });
    const r = await serve(a);
    let maxQueued = 0;
    const sample = setInterval(() => {
      maxQueued = Math.max(maxQueued, a.stats().queued);
    }, 1);
    const statuses = await Promise.all(Array.from({ length: 40 }, (_, i) => get(r, `/w/${i}`)));
    clearInterval(sample);
    maxQueued = Math.max(maxQueued, a.stats().queued);
    expect(statuses.every((s) => s === 200)).to.equal(true);
    await a.flush();
    expect(await a.model.countDocuments({ kind: 'request' })).to.equal(40);
    expect(maxQueued).to.be.at.most(3);
    expect(a.stats().dropped).to.equal(0);
  });

  it('a retried batch whose documents already reached the server stores nothing twice, and counts them stored', async () => {
    // The writer directly, on a real collection: the documents a first attempt stored (before the client saw
    // an error) are on the server already, with the _ids given at acceptance.
    const coll = fx.conn.collection('dup_retry');
    const docs = Array.from({ length: 10 }, (_, i) => ({ _id: new mongo.ObjectId(), ts: new Date(), kind: 'request', outcome: 'success', n: i }));
    await coll.insertMany(docs.slice(0, 4).map((d) => ({ ...d })));
    const events = new EventEmitter();
    const errors: unknown[] = [];
    events.on('error', (e) => errors.push(e));
    const w = new Writer(() => coll, writerOptions(), events);
    for (const d of docs) w.accept({ ...d });
    await w.flush();
    expect(await coll.countDocuments(APP_EVENTS)).to.equal(10);
    expect(await coll.distinct('n')).to.have.length(10);
    expect(w.stats()).to.include({ accepted: 10, stored: 10, queued: 0, retried: 0 });
    expect(errors).to.deep.equal([]);
    await w.close(1000);
  });

  it('a document the server refuses is stored as a stub under its own _id, not dropped, and the batch around it is stored', async () => {
    const coll = fx.conn.collection('refused_stub');
    const base = (n: number): Record<string, unknown> => ({ _id: new mongo.ObjectId(), ts: new Date(), kind: 'request', outcome: 'success', actor: null, requestId: `r${n}`, n });
    // A key the server will not take (the core escapes such keys; a hand-made or foreign event may not).
    const refused: Record<string, unknown> = { ...base(1), $bad: 'x' };
    const events = new EventEmitter();
    const errors: unknown[] = [];
    events.on('error', (e) => errors.push(e));
    const w = new Writer(() => coll, writerOptions(), events);
    for (const d of [base(0), refused, base(2)]) w.accept(d);
    await w.flush();
    const stored = await coll.find().sort({ n: 1 }).toArray();
    expect(stored).to.have.length(3);
    expect(stored.map((d) => d.n ?? null)).to.have.members([0, 2, null]);
    const stub = stored.find((d) => String(d._id) === String(refused._id)) as Record<string, unknown>;
    expect(stub).to.deep.include({ kind: 'request', outcome: 'success', requestId: 'r1' });
    expect(stub).to.not.have.property('$bad');
    expect((stub.meta as { storeError?: string }).storeError).to.match(/\$bad|\$/);
    expect(w.stats()).to.include({ accepted: 3, stored: 3, dropped: 0, queued: 0 });
    await w.close(1000);
  });

  it("'block': an event that still finds no room after blockTimeoutMs is counted dropped, and the loss recorded", async () => {
    const coll = fx.conn.collection('block_loss');
    const w = new Writer(() => coll, writerOptions({ onFull: 'block', maxQueue: 1, blockTimeoutMs: 100, batchSize: 1000, flushIntervalMs: 600_000 }), new EventEmitter());
    const first = { _id: new mongo.ObjectId(), ts: new Date(), kind: 'request', outcome: 'success' };
    const second = { _id: new mongo.ObjectId(), ts: new Date(), kind: 'request', outcome: 'success' };
    expect(w.accept(first)).to.equal(undefined);
    let refused: unknown = null;
    await (w.accept(second) as Promise<void>).catch((err: unknown) => {
      refused = err;
    });
    expect(refused).to.be.instanceOf(AuditUnavailableError);
    expect(w.stats()).to.include({ accepted: 2, queued: 1, dropped: 1 });
    await w.flush();
    const loss = await coll.findOne({ kind: 'loss' });
    expect(loss?.meta).to.deep.include({ lost: 1, policy: 'block', from: second.ts.toISOString(), to: second.ts.toISOString() });
    expect(await coll.countDocuments({ kind: 'request' })).to.equal(1);
    await w.close(1000);
  });

  it('the byte bound applies as well as the count: big events overflow to the spool', async () => {
    const dir = tmp();
    const a = make({ collection: 'byte_bound', ...stalled, maxQueue: 10_000, maxQueueBytes: 4096, spoolDir: dir });
    const r = await serve(a);
    for (let i = 0; i < 10; i++) expect(await get(r, `/bytes/${'x'.repeat(500)}/${i}`)).to.equal(200);
    const s = a.stats();
    expect(s.queued).to.be.within(1, 4, 'about 4 KiB of ~1 KiB events');
    expect(s.spooled).to.equal(10 - s.queued);
    await a.flush();
    expect(await a.model.countDocuments({ kind: 'request' })).to.equal(10);
  });

  it('sync mode: the event is stored before the response is sent', async () => {
    const a = make({ collection: 'sync_ok', mode: 'sync' });
    const r = await serve(a);
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`${r.url}/sync/${i}`);
      expect(res.status).to.equal(200);
      // No flush: the write happened before the response left.
      expect(await a.model.countDocuments({ 'http.path': `/sync/${i}` })).to.equal(1);
      expect(await a.model.countDocuments({ requestId: res.headers.get('x-request-id') })).to.equal(1);
    }
    expect(a.stats()).to.include({ accepted: 5, stored: 5, queued: 0 });
  });

  it('sync mode: answers 503 when the event cannot be written, and the log learns of it once the store is back', async () => {
    // A connection to a port where nothing listens: the driver cannot reach any server.
    // Same database name as the fixture's: the spooled event belongs to the same destination, so `b` replays it.
    const dead = fx.own(mongoose.createConnection('mongodb://127.0.0.1:9/t_writer', { serverSelectionTimeoutMS: 300, bufferCommands: false }));
    dead.on('error', () => {});
    const dir = tmp();
    const a = createAudit({ connection: dead, collection: 'sync_fail', mode: 'sync', blockTimeoutMs: 800, spoolDir: dir });
    a.on('error', () => {});
    const r = await serve(a);
    const t = Date.now();
    const res = await fetch(`${r.url}/sync-fail`, { headers: { 'x-request-id': 'sync-503' } });
    expect(res.status).to.equal(503);
    expect(res.headers.get('x-request-id')).to.match(/^[0-9a-f-]{36}$/);
    expect(Date.now() - t).to.be.below(5000);
    expect(a.stats()).to.include({ accepted: 1, stored: 0, queued: 1 });
    const result = await a.close({ timeoutMs: 300 });
    expect(result.unwritten).to.equal(1);
    // The spooled event (a 503 request) is stored by an auditor on the same spool directory and a live store.
    // The 503 request reached the spool; an auditor on the same directory and a live store stores it.
    const b = make({ collection: 'sync_fail', spoolDir: dir });
    await b.flush();
    const stored = await b.model.find(APP_EVENTS).lean();
    expect(stored).to.have.length(1);
    expect(stored[0]).to.deep.include({ kind: 'request', outcome: 'failure' });
    expect(stored[0].http).to.include({ path: '/sync-fail', status: 503 });
    expect(stored[0].error).to.include({ name: 'AuditUnavailableError', status: 503 });
    // The 503 replacement took the failed write's place in the chain: the trail verifies.
    expect((await b.verify()).problems).to.deep.equal([]);
  });

  it('passes writeConcern to the inserts, and the connection\'s own by default', async () => {
    const monitored = await fx.connect({ monitorCommands: true, w: 1 });
    const seen: { collection: string; wc: unknown }[] = [];
    monitored.getClient().on('commandStarted', (e) => {
      if (e.commandName === 'insert') seen.push({ collection: String(e.command.insert), wc: e.command.writeConcern });
    });
    const explicit = fx.auditor({ connection: monitored, collection: 'wc_explicit', writeConcern: { w: 1, wtimeoutMS: 2000 } });
    const inherited = fx.auditor({ connection: monitored, collection: 'wc_inherited' });
    for (const a of [explicit, inherited]) expect(await get(await serve(a), '/wc')).to.equal(200);
    await explicit.flush();
    await inherited.flush();
    const e = seen.find((s) => s.collection === 'wc_explicit');
    const i = seen.find((s) => s.collection === 'wc_inherited');
    expect(e?.wc).to.deep.include({ w: 1, wtimeout: 2000 });
    expect(i?.wc).to.deep.equal({ w: 1 }, "the connection's write concern");
    expect(await explicit.model.countDocuments(APP_EVENTS)).to.equal(1);
  });
});

function writerOptions(over: Partial<WriterOptions> = {}): WriterOptions {
  return {
    batchSize: 500, flushIntervalMs: 50, maxQueue: 1000, maxQueueBytes: 1 << 24, onFull: 'drop', spool: null, wal: null,
    blockTimeoutMs: 1000, writeConcern: undefined, degradedAfterMs: 1000, retryMinMs: 20, retryMaxMs: 200, lossEvent, ...over,
  };
}

/** The loss event as the core builds it (lib/core/core.ts buildSystem). */
function lossEvent(f: { lost: number; from: Date; to: Date; policy: string }): Record<string, unknown> {
  return {
    _id: new mongo.ObjectId(), ts: new Date(), kind: 'loss', outcome: 'failure', actor: { id: 'system', via: 'system' },
    requestId: null, ip: null, userAgent: null, meta: { lost: f.lost, from: f.from.toISOString(), to: f.to.toISOString(), policy: f.policy },
  };
}
