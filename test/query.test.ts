import { expect } from 'chai';
import mongoose from 'mongoose';
import type { Auditor, QueryFilter } from '../lib/index.js';
import { decodeCursor, encodeCursor, parseIsoDate, planQuery } from '../lib/read/query.js';
import { ids, newestFirst, sampleEvents, type RawEvent } from './support/events.js';
import { explainStages } from './support/explain.js';
import { serverKind, useFixture } from './support/helpers.js';

/** Every page of a query, following `next`. */
async function allPages(a: Auditor, filter: QueryFilter): Promise<{ items: string[]; pages: number }> {
  const items: string[] = [];
  let after: string | undefined;
  let pages = 0;
  for (;;) {
    const page = await a.query({ ...filter, ...(after === undefined ? {} : { after }) });
    pages++;
    expect(page.items.length).to.be.at.most(filter.limit ?? 50);
    items.push(...ids(page.items));
    if (page.next === null) break;
    after = page.next;
    expect(pages, 'runaway paging').to.be.below(1000);
  }
  return { items, pages };
}

/** The same filter applied in memory: what the database must answer. */
function reference(all: RawEvent[], f: QueryFilter): string[] {
  const kinds = f.kind === undefined ? null : Array.isArray(f.kind) ? f.kind : [f.kind];
  return ids(all.filter((e) =>
    (kinds === null || kinds.includes(e.kind)) &&
    (f.actorId === undefined || e.actor?.id === f.actorId) &&
    (f.model === undefined || e.model === f.model) &&
    (f.documentId === undefined || e.documentId === f.documentId) &&
    (f.requestId === undefined || e.requestId === f.requestId) &&
    (f.clientRequestId === undefined || (e.http as { clientRequestId?: string } | undefined)?.clientRequestId === f.clientRequestId) &&
    (f.outcome === undefined || e.outcome === f.outcome) &&
    (f.ip === undefined || e.ip === f.ip) &&
    (f.from === undefined || e.ts >= f.from) &&
    (f.to === undefined || e.ts < f.to),
  ).sort(newestFirst));
}

/** Every stage of a winning plan, classic (inputStage/s) or slot-based (queryPlan). */
describe('query API', () => {
  const fx = useFixture('query');
  let a: Auditor;
  const all = sampleEvents(420);
  const from = all[100].ts;
  const to = all[300].ts;

  before(async () => {
    a = fx.auditor({ collection: 'q_events' });
    await a.ready();
    await a.model.collection.insertMany(all);
  });

  const single: [string, QueryFilter][] = [
    ['no filter', {}],
    ['kind', { kind: 'update' }],
    ['kind array', { kind: ['login', 'login_failed', 'logout'] }],
    ['actorId', { actorId: 'u3' }],
    ['model', { model: 'Post' }],
    ['model + documentId', { model: 'User', documentId: 'd4' }],
    ['documentId', { documentId: 'd5' }],
    ['requestId', { requestId: 'r17' }],
    ['outcome', { outcome: 'failure' }],
    ['ip', { ip: '10.0.0.2' }],
    ['clientRequestId', { clientRequestId: 'client-2' }],
    ['from', { from }],
    ['to', { to }],
    ['from + to', { from, to }],
  ];
  const combos: [string, QueryFilter][] = [
    ['kind + actorId', { kind: 'request', actorId: 'u1' }],
    ['kind array + outcome', { kind: ['request', 'login_failed'], outcome: 'failure' }],
    ['model + kind + outcome', { model: 'Post', kind: 'update', outcome: 'success' }],
    ['model + documentId + kind array + time range', { model: 'Post', documentId: 'd3', kind: ['create', 'update'], from, to }],
    ['requestId + kind', { requestId: 'r21', kind: 'create' }],
    ['ip + outcome + from', { ip: '10.0.0.1', outcome: 'success', from }],
    ['actorId + to + kind array', { actorId: 'u0', to, kind: ['request', 'delete'] }],
    ['every filter at once', { kind: ['create', 'update', 'delete'], actorId: 'u2', model: 'Post', documentId: 'd7', outcome: 'success', ip: '10.0.0.3', from: all[0].ts, to: all[419].ts }],
    ['a filter nothing matches', { actorId: 'nobody' }],
    ['from after to', { from: to, to: from }],
  ];

  for (const [name, f] of [...single, ...combos]) {
    it(`filters by ${name}, paged, newest first`, async () => {
      const want = reference(all, f);
      const got = await allPages(a, { ...f, limit: 7 });
      expect(got.items).to.deep.equal(want);
      expect(got.pages).to.equal(Math.max(1, Math.ceil(want.length / 7)));
    });
  }

  it('checks the filters match something (the reference is not vacuous)', () => {
    for (const [name, f] of [...single, ...combos.slice(0, -2)]) expect(reference(all, f).length, name).to.be.greaterThan(0);
  });

  it('defaults to 50 per page and allows 500', async () => {
    const p1 = await a.query();
    expect(p1.items).to.have.length(50);
    expect(ids(p1.items)).to.deep.equal(reference(all, {}).slice(0, 50));
    expect(p1.next).to.be.a('string');
    const big = await a.query({ limit: 500 });
    expect(big.items).to.have.length(420);
    expect(big.next).to.equal(null);
    const exact = await a.query({ limit: 420 });
    expect(exact.items).to.have.length(420);
    expect(exact.next, 'no empty last page').to.equal(null);
  });

  it('returns stored events with their types: ObjectId _id, Date ts', async () => {
    const { items } = await a.query({ requestId: 'r0', kind: 'request' });
    expect(items).to.have.length(1);
    const e = items[0];
    expect(e._id.toHexString()).to.equal(all[0]._id.toHexString());
    expect(e.ts).to.be.instanceOf(Date);
    expect(e.ts.getTime()).to.equal(all[0].ts.getTime());
    expect(e.http?.path).to.equal('/p/0');
  });

  it('rejects a bad filter with a TypeError naming the key', async () => {
    const cases: [unknown, RegExp][] = [
      [{ kinds: 'update' }, /unknown query filter key "kinds"/],
      [{ kind: 'upsert' }, /"kind"/],
      [{ kind: [] }, /"kind"/],
      [{ kind: ['update', 'nope'] }, /"kind"/],
      [{ actorId: '' }, /"actorId"/],
      [{ actorId: 42 }, /"actorId"/],
      [{ actorId: { $ne: null } }, /"actorId"/],
      [{ model: ['Post'] }, /"model"/],
      [{ documentId: '' }, /"documentId"/],
      [{ requestId: 'x'.repeat(5000) }, /"requestId"/],
      [{ outcome: 'ok' }, /"outcome"/],
      [{ ip: null }, /"ip"/],
      [{ from: '2026-01-01' }, /"from"/],
      [{ to: new Date('nope') }, /"to"/],
      [{ limit: 0 }, /"limit"/],
      [{ limit: 501 }, /"limit"/],
      [{ limit: 2.5 }, /"limit"/],
      [{ limit: '10' }, /"limit"/],
      [{ after: 'garbage' }, /"after"/],
      [{ after: 12 }, /"after"/],
      [{ after: 'A'.repeat(26) + 'B' }, /"after"/],
      [{ after: 'f'.repeat(28) }, /"after"/],
    ];
    for (const [filter, message] of cases) {
      let caught: unknown;
      try {
        await a.query(filter as QueryFilter);
      } catch (err) {
        caught = err;
      }
      expect(caught, JSON.stringify(filter)).to.be.instanceOf(TypeError);
      expect((caught as Error).message, JSON.stringify(filter)).to.match(message);
    }
  });

  it('parses ISO dates and refuses impossible calendar dates (parseIsoDate)', () => {
    const ok: [string, string][] = [
      ['2026-01-31', '2026-01-31T00:00:00.000Z'],
      ['2024-02-29', '2024-02-29T00:00:00.000Z'],
      ['2000-02-29', '2000-02-29T00:00:00.000Z'],
      ['2026-01-31T12:00Z', '2026-01-31T12:00:00.000Z'],
      ['2026-01-31T12:00:00.123456789Z', '2026-01-31T12:00:00.123Z'],
      ['2026-01-31T12:00:00+01:30', '2026-01-31T10:30:00.000Z'],
      ['2026-01-31T12:00-0500', '2026-01-31T17:00:00.000Z'],
      ['0050-03-01', '0050-03-01T00:00:00.000Z'],
    ];
    for (const [text, iso] of ok) expect(parseIsoDate(text)?.toISOString(), text).to.equal(iso);
    for (const text of ['2026-02-30', '2026-02-29', '1900-02-29', '2026-04-31', '2026-00-10', '2026-13-01', '2026-01-00', '2026-01-01T24:00Z', '2026-01-01T10:60Z', '2026-01-01T10:00:60Z', '2026-01-01T10:00+24:00', '2026-01-01T10:00', 'yesterday', '']) {
      expect(parseIsoDate(text), text).to.equal(undefined);
    }
  });

  it("is not rewritten by an app's global sanitizeFilter or strictQuery settings", async () => {
    const saved = { sanitizeFilter: mongoose.get('sanitizeFilter'), strictQuery: mongoose.get('strictQuery') };
    mongoose.set('sanitizeFilter', true);
    mongoose.set('strictQuery', 'throw');
    try {
      const f: QueryFilter = { kind: ['update', 'create'], actorId: 'u1', from, limit: 5 };
      const first = await a.query(f);
      expect(ids(first.items)).to.deep.equal(reference(all, f).slice(0, 5));
      expect(ids((await a.query({ ...f, after: first.next as string })).items)).to.deep.equal(reference(all, f).slice(5, 10));
    } finally {
      mongoose.set('sanitizeFilter', saved.sanitizeFilter);
      mongoose.set('strictQuery', saved.strictQuery);
    }
  });

  it('has an opaque cursor that round-trips ts and _id', () => {
    const e = all[7];
    const c = encodeCursor(e.ts, e._id);
    expect(c).to.match(/^[A-Za-z0-9_-]{27}$/);
    const back = decodeCursor(c);
    expect(back.ts.getTime()).to.equal(e.ts.getTime());
    expect(back.id.toHexString()).to.equal(e._id.toHexString());
  });

  it('pages without duplicates or gaps while new events are being inserted', async () => {
    const before = reference(all, { kind: ['request', 'update'] });
    const seen: string[] = [];
    let after: string | undefined;
    let inserted = 0;
    for (;;) {
      const page = await a.query({ kind: ['request', 'update'], limit: 9, ...(after === undefined ? {} : { after }) });
      seen.push(...ids(page.items));
      // Between pages: new events of the queried kinds, some in the very millisecond of the cursor's event.
      const fresh = sampleEvents(6, Date.now(), 1).map((e, i) => ({ ...e, kind: i % 2 ? ('request' as const) : ('update' as const) }));
      if (page.items.length > 0) {
        const last = page.items[page.items.length - 1];
        fresh.push({ ...sampleEvents(1)[0], kind: 'update', ts: last.ts });
      }
      await a.model.collection.insertMany(fresh);
      inserted += fresh.length;
      if (page.next === null) break;
      after = page.next;
    }
    expect(new Set(seen).size, 'no duplicates').to.equal(seen.length);
    // Events stamped with the cursor's own ms get a newer _id, so they sort before the cursor: none leak in.
    expect(seen, 'exactly the events that existed when paging began').to.deep.equal(before);
    expect(inserted).to.be.greaterThan(60);
  });

  it('serves every filter from an index (explain, where the server reports index use)', async function () {
    const probe = await explainStages(a.model.find(planQuery({ kind: 'update' }).filter).sort({ ts: -1, _id: -1 }).limit(5));
    if ('skip' in probe) {
      console.log(`      (skipped on ${serverKind()}: ${probe.skip})`);
      this.skip();
    }
    const expectedIndex: Record<string, string> = {
      'no filter': 'ts_-1__id_-1',
      kind: 'kind_1_ts_-1__id_-1',
      'kind array': 'kind_1_ts_-1__id_-1',
      actorId: 'actor.id_1_ts_-1__id_-1',
      model: 'model_1_ts_-1__id_-1',
      'model + documentId': 'documentId_1_ts_-1__id_-1',
      documentId: 'documentId_1_ts_-1__id_-1',
      requestId: 'requestId_1_ts_-1__id_-1',
      // No index of their own (lib/store/indexes.ts): newest first on the ts index, checked on each event.
      outcome: 'ts_-1__id_-1',
      ip: 'ts_-1__id_-1',
      clientRequestId: 'ts_-1__id_-1',
    };
    const cursor = encodeCursor(all[200].ts, all[200]._id);
    // ('from after to' is left out: a server may answer an empty range with an EOF plan, which is fine.)
    const planned = [...single, ...combos.filter(([n]) => n !== 'from after to'), ['cursor', { kind: 'update', after: cursor }] as [string, QueryFilter]];
    for (const [name, f] of planned) {
      const plan = planQuery(f);
      const ex = await explainStages(a.model.find(plan.filter).sort(plan.sort).limit(plan.fetch));
      const st = 'stages' in ex ? ex.stages : [];
      const names = st.map((s) => s.stage);
      expect(names, `${name}: ${names.join(' > ')}`).to.not.include('COLLSCAN');
      expect(names, `${name}: no in-memory sort`).to.not.include('SORT');
      expect(names.some((s) => s.includes('IXSCAN')), `${name}: ${names.join(' > ')}`).to.equal(true);
      if (expectedIndex[name] !== undefined) expect(st.map((s) => s.indexName), name).to.include(expectedIndex[name]);
    }
  });
});
