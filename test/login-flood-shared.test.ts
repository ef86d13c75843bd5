/**
 * Flood control shared by several processes (`loginFailures.store: 'mongo'`): auditors on separate connections,
 * as separate processes would be, hammering one identifier.
 */
import { expect } from 'chai';
import { createAudit, type AuditEvent, type Auditor, type AuditOptions } from '../lib/index.js';
import { eventually, serverKind, sleep, useFixture } from './support/helpers.js';

describe('failed-login flood control shared through MongoDB', function () {
  this.timeout(30_000);
  const fx = useFixture('login_flood_shared');
  /** A fault fails a failure open (recorded in detail): the counts below hold only without one. */
  let errors: Error[] = [];
  beforeEach(() => {
    errors = [];
  });
  let n = 0;

  /** `count` auditors, each on a connection of its own, sharing one audit collection and one flood collection. */
  const processes = async (count: number, loginFailures: AuditOptions['loginFailures']): Promise<Auditor[]> => {
    const collection = `fs_${n++}`;
    const out: Auditor[] = [];
    for (let i = 0; i < count; i++) {
      // A connection (a connection pool, a client) of its own: as another process would have.
      const a = fx.auditor({ connection: await fx.connect(), collection, loginFailures });
      a.on('error', (e) => errors.push(e));
      out.push(a);
    }
    return out;
  };
  /** Every auditor fails `each` logins for `identifier`, all at once. */
  const hammer = async (as: Auditor[], identifier: string, each: number): Promise<void> => {
    await Promise.all(as.flatMap((a) => Array.from({ length: each }, () => a.loginFailed({ identifier, reason: 'bad_password' }))));
  };
  const failures = async (a: Auditor, identifier: string): Promise<{ detailed: AuditEvent[]; summaries: AuditEvent[] }> => {
    const all = (await a.model.find({ kind: 'login_failed', identifier }).lean()) as AuditEvent[];
    return { detailed: all.filter((e) => e.meta?.summary !== true), summaries: all.filter((e) => e.meta?.summary === true) };
  };
  /** Windows are aligned to the epoch: start well inside one, so that a test's failures share it. */
  const insideWindow = async (windowMs: number, margin: number): Promise<void> => {
    const left = windowMs - (Date.now() % windowMs);
    if (left < margin) await sleep(left + 20);
  };

  it('three processes allow max detailed failures in all, and summarize every held-back failure exactly once', async () => {
    const as = await processes(3, { max: 5, windowMs: 60_000, store: 'mongo', timeoutMs: 30_000 });
    await insideWindow(60_000, 10_000);
    await hammer(as, 'victim', 20);
    for (const a of as) await a.flush();
    const { detailed, summaries } = await failures(as[0], 'victim');
    expect(errors.map((e) => e.message)).to.deep.equal([]);
    expect(detailed).to.have.length(5);
    const suppressed = summaries.reduce((sum, s) => sum + (s.meta?.suppressed as number), 0);
    expect(suppressed).to.equal(55);
    expect(summaries.length).to.be.within(1, 3, 'at most one summary per process');
    for (const s of summaries) expect(s.meta).to.include({ key: 'identifier', complete: false, reason: 'bad_password' });
    // A second flush finds nothing more to summarize.
    for (const a of as) await a.flush();
    expect((await failures(as[0], 'victim')).summaries).to.have.length(summaries.length);
    // The window lives in a small collection of its own: a counter and the max detail slots.
    const windows = await fx.conn.collection(`${as[0].model.collection.collectionName}_flood`).find({}).toArray();
    expect(windows.map((w) => String(w._id).split('#')[1] ?? 'counter').sort()).to.deep.equal(['1', '2', '3', '4', '5', 'counter']);
    if (serverKind() === 'ferretdb') {
      console.log('      (FerretDB v1 loses concurrent $inc updates: the window\'s total is checked on MongoDB only)');
    } else {
      expect(windows.find((w) => !String(w._id).includes('#'))).to.include({ count: 60 });
      expect(Math.max(...summaries.map((s) => s.meta?.total as number))).to.equal(60);
    }
  });

  it('with the default in-memory store, the same three processes record three times max', async () => {
    const as = await processes(3, { max: 5, windowMs: 60_000 });
    await hammer(as, 'victim', 20);
    for (const a of as) await a.flush();
    expect((await failures(as[0], 'victim')).detailed).to.have.length(15);
  });

  it('at the end of the window the processes write complete summaries, without a flush', async () => {
    const windowMs = 2000;
    const as = await processes(3, { max: 2, windowMs, store: 'mongo', timeoutMs: 30_000 });
    await insideWindow(windowMs, 1500);
    await hammer(as, 'eve', 3);
    const sum = async (): Promise<number> => (await failures(as[0], 'eve')).summaries.reduce((t, s) => t + (s.meta?.suppressed as number), 0);
    await eventually(async () => (await sum()) === 7, 10_000);
    await sleep(300); // every process's timer has run
    const { detailed, summaries } = await failures(as[0], 'eve');
    expect(errors.map((e) => e.message)).to.deep.equal([]);
    expect(detailed).to.have.length(2);
    expect(await sum()).to.equal(7);
    for (const s of summaries) {
      expect(s.meta).to.include({ complete: true, key: 'identifier' });
      expect(Date.parse(s.meta?.windowEnd as string) - Date.parse(s.meta?.windowStart as string)).to.equal(windowMs);
    }
  });

  it('refuses an unknown store', () => {
    expect(() => createAudit({ connection: fx.conn, loginFailures: { max: 1, windowMs: 1000, store: 'redis' as never } })).to.throw(TypeError, /loginFailures\.store/);
  });

  it('records a failure in detail when the shared collection does not answer in time (fails open), and reports it', async () => {
    const as = await processes(1, { max: 1, windowMs: 60_000, store: 'mongo', timeoutMs: 1 });
    await insideWindow(60_000, 10_000);
    await hammer(as, 'mallory', 10);
    await as[0].flush();
    expect((await failures(as[0], 'mallory')).detailed.length).to.be.above(1, 'more than max: nothing is held back blindly');
    expect(errors.some((e) => /did not answer within 1 ms/.test(e.message))).to.equal(true);
  });
});
