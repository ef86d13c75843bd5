import { expect } from 'chai';
import type { Auditor, AuditOptions } from '../lib/index.js';
import { PRUNE_BATCH } from '../lib/store/retention.js';
import { ids, newestFirst, sampleEvents } from './support/events.js';
import { serverKind, useFixture, APP_EVENTS } from './support/helpers.js';

const DAY = 86_400_000;

describe('retention: TTL index, or prune()', () => {
  const fx = useFixture('retention', { connection: { monitorCommands: true } });
  /** Delete commands sent to the database, with how many ids each carried. */
  const deletes: { collection: string; ids: number }[] = [];
  const warnings: Error[] = [];
  const onWarning = (w: Error): void => {
    if ((w as { code?: string }).code === 'KOA_AUDIT_NO_TTL') warnings.push(w);
  };
  const make = (opts: AuditOptions): Auditor => fx.auditor(opts);
  /** process.emitWarning delivers on the next tick: once setImmediate runs, every warning emitted so far has arrived. */
  const warningsDelivered = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  const ttlIndex = async (a: Auditor): Promise<{ expireAfterSeconds?: number } | undefined> =>
    (await a.model.collection.indexes()).find((i) => i.name === 'koa_audit_retention');

  before(async () => {
    fx.conn.getClient().on('commandStarted', (ev) => {
      if (ev.commandName !== 'delete') return;
      const c = ev.command as { delete: string; deletes: { q: { _id?: { $in?: unknown[] } } }[] };
      deletes.push({ collection: c.delete, ids: c.deletes[0]?.q._id?.$in?.length ?? -1 });
    });
    process.on('warning', onWarning);
    fx.cleanup(() => process.off('warning', onWarning));
  });

  it('creates a TTL index on ts where the server can, else warns once that prune() is the way', async () => {
    const a = make({ collection: 'ret_ttl', retention: { days: 30 } });
    await a.ready();
    await a.model.collection.insertMany(sampleEvents(5));
    await a.ready();
    await a.withActor({ id: 'cron' }, () => a.loginFailed({ identifier: 'x', provider: 'local', reason: 'test' }));
    await a.flush();
    await warningsDelivered();
    const index = await ttlIndex(a);
    if (index !== undefined) {
      console.log(`      (${serverKind()} supports TTL indexes: checked the index, not the warning path)`);
      expect(index.expireAfterSeconds).to.equal(30 * 86_400);
      expect(warnings).to.deep.equal([]);
      // Retention changed: the same index gets the new period instead of a conflict.
      const b = make({ collection: 'ret_ttl', retention: { days: 7 } });
      await b.ready();
      expect((await ttlIndex(b))?.expireAfterSeconds).to.equal(7 * 86_400);
      expect(warnings).to.deep.equal([]);
    } else {
      console.log(`      (${serverKind()} has no TTL indexes: checked the warning path)`);
      expect(warnings).to.have.length(1);
      expect(warnings[0].name).to.equal('KoaAuditWarning');
      expect(warnings[0].message).to.match(/cannot create a TTL index .*prune\(\{ before \}\)/);
      // The other indexes are still there: only retention degraded.
      expect((await a.model.collection.indexes()).map((i) => i.name)).to.include('ts_-1__id_-1');
    }
  });

  it('creates no retention index and no warning without the option', async () => {
    await warningsDelivered();
    warnings.length = 0; // this test's own warnings only
    const a = make({ collection: 'ret_none' });
    await a.ready();
    await a.model.collection.insertMany(sampleEvents(3));
    await warningsDelivered();
    expect(await ttlIndex(a)).to.equal(undefined);
    expect(warnings).to.deep.equal([]);
    // The same collection with retention: the index, or the warning, does appear (this test can fail).
    const b = make({ collection: 'ret_none', retention: { days: 1 } });
    await b.ready();
    await warningsDelivered();
    expect((await ttlIndex(b)) !== undefined || warnings.length === 1).to.equal(true);
  });

  it('prune({ before }) deletes exactly the older events, in batches', async () => {
    const a = make({ collection: 'ret_prune', retention: { days: 30 } });
    await a.ready();
    const cutoff = new Date(Date.now() - 30 * DAY);
    const old = sampleEvents(2 * PRUNE_BATCH + 500, cutoff.getTime() - 5 * DAY, 60_000);
    const kept = sampleEvents(300, cutoff.getTime(), 60_000); // the first ones exactly at the cutoff: kept
    expect(old.every((e) => e.ts < cutoff)).to.equal(true);
    expect(kept[0].ts.getTime()).to.equal(cutoff.getTime());
    await a.model.collection.insertMany([...kept, ...old].sort(() => Math.random() - 0.5));
    // Another collection's events are never touched.
    const other = make({ collection: 'ret_other' });
    await other.model.collection.insertMany(sampleEvents(50, cutoff.getTime() - 90 * DAY));

    deletes.length = 0;
    const removed = await a.prune({ before: cutoff });
    expect(removed).to.equal(old.length);
    const left = await a.model.find(APP_EVENTS).sort({ ts: -1, _id: -1 }).lean();
    expect(ids(left)).to.deep.equal(ids([...kept].sort(newestFirst)));
    expect(await other.model.countDocuments(APP_EVENTS)).to.equal(50);

    // The dashboard's rollups follow the prune, in their own collection.
    const events = (): typeof deletes => deletes.filter((d) => d.collection !== 'ret_prune_rollups');
    expect(events().every((d) => d.collection === 'ret_prune')).to.equal(true);
    expect(events().map((d) => d.ids)).to.deep.equal([PRUNE_BATCH, PRUNE_BATCH, 500]);

    deletes.length = 0;
    expect(await a.prune({ before: cutoff })).to.equal(0);
    expect(events(), 'nothing left to delete: no delete command').to.deep.equal([]);
  });

  it('prune rejects a missing or invalid date', async () => {
    const a = make({ collection: 'ret_prune_bad' });
    await a.model.collection.insertMany(sampleEvents(300, Date.now() - 400 * DAY));
    for (const bad of [undefined, null, {}, { before: '2026-01-01' }, { before: new Date('nope') }, { before: Date.now() }]) {
      let caught: unknown;
      try {
        await a.prune(bad as never);
      } catch (err) {
        caught = err;
      }
      expect(caught, JSON.stringify(bad)).to.be.instanceOf(TypeError);
    }
    expect(await a.model.countDocuments(APP_EVENTS)).to.equal(300);
  });
});
