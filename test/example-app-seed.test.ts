/**
 * The example app's demo seed (`npm start` seeds a few hundred events over the past days): the seeded events
 * form a chain of their own, sealed as an auditor's are, so that `koa-audit verify` on the example's database
 * reports no problem, even where chains began before the seed (a database an older example app already used,
 * where unchained events stored after chains began are reported as `inserted`). The dashboard counts them.
 */
import { expect } from 'chai';
import { PassThrough } from 'node:stream';
import { mongo } from 'mongoose';
import { seedDemo, sealedChain } from '../example-app/seed.js';
import type { StoredDoc } from '../lib/core/types.js';
import { main } from '../lib/read/cli.js';
import { APP_EVENTS, useFixture } from './support/helpers.js';

const DAY = 86_400_000;

describe('example app seed: a chain of its own, so verify is clean', function () {
  this.timeout(60_000);
  const fx = useFixture('example_seed');

  const verifyCli = async (collection: string): Promise<{ code: number; result: { ok: boolean; chains: number; events: number; problems: unknown[] } }> => {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d) => (text += String(d)));
    const client = fx.conn.getClient() as unknown as { options: { hosts: { toString(): string }[] } };
    const uri = `mongodb://${client.options.hosts[0].toString()}/${fx.conn.db!.databaseName}`;
    const code = await main(['verify', '--uri', uri, '--collection', collection, '--json'], { stdout: out, stderr: new PassThrough() });
    return { code, result: JSON.parse(text) as { ok: boolean; chains: number; events: number; problems: unknown[] } };
  };

  it('seeds into a sealed chain that verify accepts, where chains began days before', async () => {
    const a = fx.auditor({ collection: 'demo' });
    await a.ready();
    // An earlier run of the app, three days ago: its chain is older than most of what the seed writes.
    const earlier: StoredDoc = { _id: new mongo.ObjectId(), ts: new Date(Date.now() - 3 * DAY), kind: 'request', outcome: 'success', actor: null, requestId: 'old', ip: null, userAgent: null,
      http: { method: 'GET', path: '/', route: null, query: '', status: 200, durationMs: 1 } };
    await a.model.collection.insertMany(sealedChain([earlier], 'demo', undefined, {}) as never[]);

    const seeded = await seedDemo(a, 300);
    expect(seeded).to.be.at.least(300);
    const docs = await a.model.collection.find({ 'meta.seeded': true }).toArray();
    const starts = docs.filter((d) => d.kind === 'audit_start');
    expect(starts).to.have.length(1, 'one seeded chain');
    const chainId = (starts[0].chain as { id: string }).id;
    const events = docs.filter((d) => d.kind !== 'audit_start' && d.kind !== 'audit_stop');
    expect(events).to.have.length(seeded);
    expect(events.every((d) => (d.chain as { id?: string } | undefined)?.id === chainId)).to.equal(true, 'every seeded event is chained');
    expect(events.every((d) => (d.ts as Date).getTime() > Date.now() - 8 * DAY)).to.equal(true);

    const r = await a.verify();
    expect(r.problems).to.deep.equal([]);
    expect(r).to.include({ ok: true, chains: 2 });
    const cli = await verifyCli('demo');
    expect(cli.code).to.equal(0);
    expect(cli.result).to.include({ ok: true, chains: 2 });
    expect(cli.result.problems).to.deep.equal([]);

    // Seeded once: a second start changes nothing.
    expect(await seedDemo(a)).to.equal(0);
    // The dashboard's numbers count them (the rollups were recounted after the seed).
    const d = await a.dashboard({ from: new Date(Date.now() - 8 * DAY), to: new Date(Date.now() + 60_000), bucket: 'day' });
    expect(d.source).to.equal('rollups', String(d.reason));
    expect(d.totals.events).to.equal(await a.model.countDocuments({}));
    expect(await a.model.countDocuments({ ...APP_EVENTS, 'meta.seeded': true })).to.equal(seeded);
  });

  it('a tampered seeded event is still caught', async () => {
    const a = fx.auditor({ collection: 'demo_tampered' });
    await a.ready();
    await seedDemo(a, 50);
    const victim = await a.model.collection.findOne({ 'meta.seeded': true, kind: 'request' });
    await a.model.collection.updateOne({ _id: victim!._id }, { $set: { 'http.status': 299 } });
    const r = await a.verify();
    expect(r.ok).to.equal(false);
    expect(r.problems.map((p) => p.type)).to.include('modified');
  });
});
