import { expect } from 'chai';
import { eventually, sleep, useFixture, type Running, APP_EVENTS } from './support/helpers.js';

describe('event store', () => {
  const fx = useFixture('store');
  const hit = async (r: Running, n: number): Promise<void> => {
    for (let i = 0; i < n; i++) expect((await fetch(`${r.url}/n/${i}`)).status).to.equal(200);
  };

  it('creates the indexes the queries need', async () => {
    const a = fx.auditor({ collection: 'idx_events' });
    await a.ready();
    const keys = (await a.model.collection.indexes()).map((i) => JSON.stringify(i.key));
    for (const k of [
      { ts: -1, _id: -1 },
      { 'actor.id': 1, ts: -1, _id: -1 },
      { documentId: 1, ts: -1, _id: -1 },
      { model: 1, ts: -1, _id: -1 },
      { requestId: 1, ts: -1, _id: -1 },
      { kind: 1, ts: -1, _id: -1 },
    ]) expect(keys).to.include(JSON.stringify(k));
  });

  it('writes full batches at once and holds a partial one for the interval', async () => {
    const a = fx.auditor({ collection: 'batch_count', batchSize: 10, flushIntervalMs: 60_000 });
    await hit(await fx.serve(a), 25);
    await eventually(async () => (await a.model.countDocuments(APP_EVENTS)) === 20);
    await sleep(300);
    expect(await a.model.countDocuments(APP_EVENTS)).to.equal(20, 'the partial batch waits for the interval');
    expect(a.stats().queued).to.equal(5);
    await a.flush();
    expect(await a.model.countDocuments(APP_EVENTS)).to.equal(25);
    expect(a.stats()).to.include({ accepted: 25, stored: 25, queued: 0 });
  });

  it('writes a partial batch once the interval passes', async () => {
    const interval = 1000;
    const a = fx.auditor({ collection: 'batch_time', batchSize: 1000, flushIntervalMs: interval });
    const r = await fx.serve(a);
    const t0 = Date.now(); // before the first event: the interval starts at its acceptance, later
    await hit(r, 3);
    const count = await a.model.countDocuments(APP_EVENTS);
    // Only checkable while the interval has surely not passed (a stalled machine may take longer to get here).
    if (Date.now() - t0 < interval) expect(count, 'nothing written before the interval').to.equal(0);
    await eventually(async () => (await a.model.countDocuments(APP_EVENTS)) === 3, 5000);
    expect(Date.now() - t0, 'the partial batch was written after the interval, not before').to.be.at.least(interval);
  });

  it('close() stores every queued event', async () => {
    const a = fx.auditor({ collection: 'close_queued', batchSize: 1000, flushIntervalMs: 60_000 });
    await hit(await fx.serve(a), 40);
    expect(a.stats().queued).to.equal(40);
    const res = await a.close();
    expect(res).to.deep.equal({ unwritten: 0 });
    expect(await a.model.countDocuments(APP_EVENTS)).to.equal(40);
  });

  it('assigns _id and ts at acceptance, and stores the contract fields', async () => {
    const a = fx.auditor({ collection: 'shape' });
    const before = new Date();
    await hit(await fx.serve(a), 1);
    await a.flush();
    const [ev] = await a.model.find(APP_EVENTS).lean();
    expect(ev._id).to.be.instanceOf(fx.conn.base.Types.ObjectId);
    expect(ev.ts).to.be.instanceOf(Date);
    expect(ev.ts.getTime()).to.be.at.least(before.getTime() - 5);
    expect(ev).to.include({ kind: 'request', outcome: 'success', actor: null });
    expect(ev.requestId).to.be.a('string');
  });
});
