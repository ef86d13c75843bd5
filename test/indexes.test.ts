import { expect } from 'chai';
import { mongo } from 'mongoose';
import type { QueryFilter } from '../lib/index.js';
import { exportQuery } from '../lib/read/export.js';
import { FILTER_KEYS, planQuery } from '../lib/read/query.js';
import { AUDIT_INDEXES, QUERY_CATALOGUE, RESIDUAL_FILTERS, RETIRED_INDEXES, TEXT_INDEX, type QueryShape } from '../lib/store/indexes.js';
import { sampleEvents } from './support/events.js';
import { whyNotServed, winningStages, type PlanStage } from './support/explain.js';
import { serverKind, useFixture } from './support/helpers.js';

/** A query a catalogued shape stands for, built the way the library builds it. */
interface Example {
  filter: Record<string, unknown>;
  sort?: Record<string, 1 | -1>;
  limit?: number;
  op?: QueryShape['op'];
}

const FROM = new Date(Date.UTC(2026, 0, 1));
const TO = new Date(Date.UTC(2026, 0, 2));
const plan = (f: QueryFilter): Example => {
  const p = planQuery(f, 'scan');
  return { filter: p.filter, sort: p.sort, limit: p.fetch };
};
const cursor = (): string => {
  const buf = Buffer.alloc(20);
  buf.writeBigInt64BE(BigInt(TO.getTime()), 0);
  buf.set(new mongo.ObjectId().id, 8);
  return buf.toString('base64url');
};

/** One value per filter key that has no index of its own. */
const RESIDUAL_SAMPLES: Record<string, QueryFilter> = {
  outcome: { outcome: 'failure' }, auditRead: { auditRead: false }, method: { method: 'GET' }, status: { status: 500 }, statusClass: { statusClass: '5xx' },
  provider: { provider: 'local' }, ip: { ip: '10.0.0.7' }, name: { name: 'authz_fail' }, traceId: { traceId: '4bf92f3577b34da6a3ce929d0e0e4736' },
  onBehalfOfId: { onBehalfOfId: 'alice' }, reason: { reason: 'ticket' }, clientRequestId: { clientRequestId: 'abc-1' }, path: { path: '/api/*' },
  route: { route: '/posts/:id' }, identifier: { identifier: 'alice' }, q: { q: 'timeout' },
};

const range = { $gte: FROM, $lt: TO };
const EXAMPLES: Record<string, () => Example> = {
  'query: no filter (the list)': () => plan({}),
  'query: from/to': () => plan({ from: FROM, to: TO }),
  'query: next page (after)': () => plan({ after: cursor() }),
  'query: kind, or kinds': () => plan({ kind: ['create', 'update', 'delete'] }),
  'query: kind + from/to (dashboard tiles and charts)': () => plan({ kind: 'login_failed', from: FROM, to: TO }),
  'query: kind + identifier (dashboard: failed logins)': () => plan({ kind: 'login_failed', identifier: 'alice', from: FROM, to: TO }),
  'query: kind + method + route (dashboard: routes)': () => plan({ kind: 'request', method: 'GET', route: '/posts/:id', from: FROM, to: TO }),
  'query: kind + statusClass (dashboard: 5xx)': () => plan({ kind: 'request', statusClass: '5xx', from: FROM, to: TO }),
  'query: actorId (actor timeline)': () => plan({ actorId: 'u-alice' }),
  'query: actorId + kinds (dashboard: top actors)': () => plan({ actorId: 'u-alice', kind: ['create', 'update', 'delete'], from: FROM, to: TO }),
  'query: documentId': () => plan({ documentId: 'd-1' }),
  'query: model + documentId': () => plan({ model: 'Post', documentId: 'd-1' }),
  'query: model': () => plan({ model: 'Post' }),
  "query: requestId (a request's events)": () => plan({ requestId: 'r-1', limit: 200 }),
  'query: tenant (every read of a tenant-scoped grant)': () => plan({ tenant: 'acme' }),
  'query: tenant + kind': () => plan({ tenant: 'acme', kind: 'update' }),
  ...Object.fromEntries(Object.entries(RESIDUAL_SAMPLES).map(([key, f]) => [`query: ${key} (no index of its own)`, () => plan(f)])),
  'query: q with the text index ($text)': () => {
    const p = planQuery({ q: 'timeout', from: FROM, to: TO }, 'index');
    return { filter: p.filter, sort: p.sort, limit: p.fetch };
  },
  'export: any filter, oldest first': () => ({ ...exportQuery({ from: FROM, to: TO }) }),
  'count: kind + from/to': () => ({ filter: planQuery({ kind: 'request', from: FROM, to: TO }).filter, op: 'count' }),
  'count: from/to': () => ({ filter: planQuery({ from: FROM, to: TO, auditRead: false }).filter, op: 'count' }),
  'related: requestIds, kind ≠ request': () => ({ filter: { requestId: { $in: ['r-1', 'r-2'] }, kind: { $ne: 'request' } }, op: 'aggregate' }),
  'model names (a model typed in another case)': () => ({ filter: {}, op: 'distinct' }),
  'event by id': () => ({ filter: { _id: new mongo.ObjectId(), tenant: 'acme' } }),
  'history: model + documentId, oldest first': () => ({ filter: { model: 'Post', documentId: 'd-1', tenant: 'acme' }, sort: { ts: 1, _id: 1 } }),
  'versionAt: model + documentId + ts ≤ date': () => ({ filter: { model: 'Post', documentId: 'd-1', ts: { $lte: TO } }, sort: { ts: 1, _id: 1 } }),
  'dashboard without rollups: from/to': () => ({ filter: { ts: range } }),
  'dashboard without rollups: tenant + from/to': () => ({ filter: { ts: range, tenant: 'acme' } }),
  'dashboard: loss events of the range': () => ({ filter: { kind: 'loss', ts: range }, sort: { ts: -1, _id: -1 }, limit: 50 }),
  'rollups: one hour of events': () => ({ filter: { ts: range } }),
  'rollups: rebuild, oldest first': () => ({ filter: {}, sort: { ts: 1 } }),
  'verify: the range in chain order': () => ({ filter: { ts: range }, sort: { 'chain.id': 1, 'chain.seq': 1, _id: 1 } }),
  'verify: one chain': () => ({ filter: { ts: range, 'chain.id': 'c-1' }, sort: { 'chain.id': 1, 'chain.seq': 1, _id: 1 } }),
  'verify: the hash at a position': () => ({ filter: { 'chain.id': 'c-1', 'chain.seq': 7 } }),
  'verify: prune and checkpoint records': () => ({ filter: { kind: { $in: ['prune', 'checkpoint'] } } }),
  'verify: the first audit_start': () => ({ filter: { kind: 'audit_start', 'chain.seq': 0 }, sort: { ts: 1 }, limit: 1 }),
  'prune: events before a date': () => ({ filter: { ts: { $lt: TO } }, limit: 1000 }),
  'prune: one kind before a date': () => ({ filter: { kind: 'request', ts: { $lt: TO } }, limit: 1000 }),
};

const byName = new Map<string, Readonly<Record<string, unknown>>>([['_id_', { _id: 1 }], [TEXT_INDEX.name, TEXT_INDEX.fields], ...AUDIT_INDEXES.map((i) => [i.name, i.key] as const)]);

describe('indexes: every index serves a catalogued query, every catalogued query has its index', () => {
  const fx = useFixture('indexes');

  it('the schema declares exactly the catalogue\'s indexes, under the driver\'s default names', () => {
    const a = fx.auditor({ collection: 'idx_schema' });
    const declared = a.model.schema.indexes().map(([key, opts]) => ({ name: (opts as { name?: string }).name, key }));
    expect(declared).to.deep.equal(AUDIT_INDEXES.map((i) => ({ name: i.name, key: i.key })));
    for (const i of AUDIT_INDEXES) expect(i.name).to.equal(Object.entries(i.key).map(([k, v]) => `${k}_${v}`).join('_'));
    // No index is both kept and retired.
    expect(AUDIT_INDEXES.map((i) => i.name)).to.not.include.members(RETIRED_INDEXES.map((i) => i.name));
  });

  it('every catalogued query names an index whose key serves it (equality, sort, range)', () => {
    const ids = QUERY_CATALOGUE.map((q) => q.id);
    expect(new Set(ids).size, 'ids are unique').to.equal(ids.length);
    for (const q of QUERY_CATALOGUE) {
      const key = byName.get(q.index);
      expect(key, `${q.id}: index ${q.index} exists`).to.not.equal(undefined);
      if (q.text === true) {
        expect(q.index, `${q.id}: $text needs the text index`).to.equal(TEXT_INDEX.name);
        continue;
      }
      expect(whyNotServed(key as Record<string, unknown>, q), `${q.id} by ${q.index}`).to.equal(null);
    }
  });

  it('every index serves at least one catalogued query', () => {
    for (const i of AUDIT_INDEXES) {
      const served = QUERY_CATALOGUE.filter((q) => q.index === i.name && whyNotServed(i.key, q) === null);
      expect(served.map((q) => q.id), i.name).to.not.be.empty;
    }
  });

  it('the ESR check refuses what an index cannot serve', () => {
    const shape = { equality: ['kind'], sort: { ts: -1, _id: -1 } as const, range: [], residual: [] };
    expect(whyNotServed({ kind: 1, ts: -1, _id: -1 }, shape)).to.equal(null);
    expect(whyNotServed({ kind: 1, ts: 1, _id: 1 }, shape), 'walked backwards').to.equal(null);
    expect(whyNotServed({ ts: -1, _id: -1 }, shape)).to.match(/equality field/);
    expect(whyNotServed({ kind: 1, model: 1, ts: -1, _id: -1 }, shape)).to.match(/sort field ts/);
    expect(whyNotServed({ kind: 1, ts: -1, _id: 1 }, shape)).to.match(/direction/);
    expect(whyNotServed({ ts: -1, _id: -1 }, { equality: [], sort: {}, range: ['ts'], residual: [] })).to.equal(null);
    expect(whyNotServed({ kind: 1, ts: -1 }, { equality: [], sort: {}, range: ['ts'], residual: [] })).to.match(/bounds nothing/);
    expect(whyNotServed({ kind: 1 }, { equality: ['kind'], sort: {}, range: ['ts'], residual: [] })).to.match(/range field/);
  });

  it('every query shape has an example (the query API\'s built by planQuery and exportQuery), with the fields the catalogue says', () => {
    expect(Object.keys(EXAMPLES).sort()).to.deep.equal(QUERY_CATALOGUE.map((q) => q.id).sort());
    for (const q of QUERY_CATALOGUE) {
      const ex = EXAMPLES[q.id]();
      const declared = new Set([...q.equality, ...q.range, ...q.residual]);
      for (const field of Object.keys(ex.filter)) {
        // The cursor's tie-break on _id, and free text's alternatives, sit in $or / $and.
        const name = field === '$and' ? '$or' : field;
        expect(declared.has(name), `${q.id}: filter field ${field} is catalogued`).to.equal(true);
      }
      for (const field of q.equality) expect(Object.keys(ex.filter), `${q.id}: equality ${field}`).to.include(field);
      if (ex.sort !== undefined) expect(Object.keys(q.sort).length > 0, `${q.id}: sorted`).to.equal(true);
      expect(ex.op ?? 'find', q.id).to.equal(q.op ?? 'find');
    }
  });

  it('every filter key of the query API is catalogued (with its index, or as residual)', () => {
    const indexed: Record<string, string> = { kind: 'kind', actorId: 'actor.id', model: 'model', documentId: 'documentId', requestId: 'requestId', tenant: 'tenant' };
    for (const key of FILTER_KEYS) {
      if (['from', 'to', 'limit', 'after'].includes(key)) continue;
      if (key in RESIDUAL_FILTERS) {
        expect(indexed, key).to.not.have.property(key);
        const f = planQuery(RESIDUAL_SAMPLES[key], 'scan').filter;
        expect(Object.keys(f), `${key} filters ${RESIDUAL_FILTERS[key]}`).to.include(RESIDUAL_FILTERS[key]);
        continue;
      }
      expect(indexed, `${key} is catalogued`).to.have.property(key);
      const field = indexed[key];
      expect(QUERY_CATALOGUE.some((q) => q.id.startsWith('query: ') && q.equality.includes(field)), `${key}: a list shape with ${field} as equality`).to.equal(true);
    }
  });

  it('reads MongoDB explain output of every shape: classic, slot-based, aggregate, sharded; rejected plans ignored', () => {
    const ixscan = { stage: 'IXSCAN', indexName: 'kind_1_ts_-1__id_-1', keyPattern: { kind: 1, ts: -1, _id: -1 } };
    const classic = { queryPlanner: { winningPlan: { stage: 'LIMIT', inputStage: { stage: 'FETCH', inputStage: ixscan } }, rejectedPlans: [{ stage: 'COLLSCAN' }] } };
    expect(winningStages(classic)?.map((s) => s.stage)).to.deep.equal(['LIMIT', 'FETCH', 'IXSCAN']);
    const sbe = { explainVersion: '2', queryPlanner: { winningPlan: { queryPlan: { stage: 'FETCH', inputStage: { stage: 'SORT_MERGE', inputStages: [ixscan, ixscan] } }, slotBasedPlan: { stages: '[2] cfilter {(exists(s5) && exists(s6))} ...' } }, rejectedPlans: [] } };
    expect(winningStages(sbe)?.map((s) => s.stage)).to.deep.equal(['FETCH', 'SORT_MERGE', 'IXSCAN', 'IXSCAN']);
    const aggregate = { stages: [{ $cursor: { queryPlanner: { winningPlan: { stage: 'COLLSCAN', direction: 'forward' }, rejectedPlans: [] } } }, { $group: {} }] };
    expect(winningStages(aggregate)?.map((s) => s.stage)).to.deep.equal(['COLLSCAN']);
    const sharded = { queryPlanner: { winningPlan: { stage: 'SHARD_MERGE', shards: [{ shardName: 'a', winningPlan: { stage: 'FETCH', inputStage: ixscan } }, { shardName: 'b', winningPlan: { stage: 'COLLSCAN' } }] } } };
    expect(winningStages(sharded)?.map((s) => s.stage)).to.include.members(['SHARD_MERGE', 'IXSCAN', 'COLLSCAN']);
    expect(winningStages(classic)?.find((s) => s.stage === 'IXSCAN')?.indexName).to.equal('kind_1_ts_-1__id_-1');
    // FerretDB: its backend's plan, no stages.
    expect(winningStages({ queryPlanner: { Plan: 'SCAN TABLE "q_events_1"' }, explainVersion: '1' })).to.equal(null);
  });

  it('ready() drops the indexes an earlier version created, and only those: never an index of the user\'s', async () => {
    const name = 'idx_upgrade';
    const coll = fx.conn.collection(name);
    await coll.insertOne({ ts: new Date(), kind: 'request', outcome: 'success' });
    // As an earlier version left it, except where the user made an index of their own:
    const mine: { name: string; key: Record<string, 1 | -1> }[] = [
      { name: 'mine_ip', key: { ip: 1, ts: -1, _id: -1 } }, // a retired key, under the user's own name
      { name: 'name_1_ts_-1__id_-1', key: { name: 1, ts: 1 } }, // a retired name, on another key
      { name: 'my_outcome', key: { outcome: 1 } },
    ];
    for (const old of RETIRED_INDEXES) {
      if (mine.some((m) => m.name === old.name || JSON.stringify(m.key) === JSON.stringify(old.key))) continue;
      await coll.createIndex(old.key as Record<string, 1 | -1>, { name: old.name });
    }
    for (const m of mine) await coll.createIndex(m.key, { name: m.name });
    // The text index serves free text where the server has text search: it is kept, never retired.
    const text = await coll.createIndex({ ...TEXT_INDEX.fields }, { name: TEXT_INDEX.name, default_language: 'none' })
      .then(() => true, (err: unknown) => void console.log(`      (no text index on ${serverKind()}: ${String((err as Error).message).slice(0, 80)})`));
    const before = (await coll.indexes()).map((i) => i.name as string);
    expect(before).to.include.members(['outcome_1_ts_-1__id_-1', 'model_1_documentId_1_ts_-1__id_-1', 'traceId_1_ts_-1__id_-1']);

    const a = fx.auditor({ collection: name });
    await a.ready();
    const after = (await coll.indexes()).map((i) => i.name as string);
    const retiredOurs = RETIRED_INDEXES.map((i) => i.name).filter((n) => before.includes(n) && !mine.some((m) => m.name === n));
    expect(retiredOurs).to.have.length(9);
    if (text === true) expect(after).to.include(TEXT_INDEX.name);
    for (const n of retiredOurs) expect(after, n).to.not.include(n);
    expect(after, "the user's indexes stay").to.include.members(mine.map((m) => m.name));
    expect(after).to.include.members(['_id_', ...AUDIT_INDEXES.map((i) => i.name)]);
    expect(after).to.have.length(1 + AUDIT_INDEXES.length + mine.length + (text === true ? 1 : 0));

    // A second start finds nothing to do.
    const b = fx.auditor({ collection: name });
    await b.ready();
    expect((await coll.indexes()).map((i) => i.name as string).sort()).to.deep.equal([...after].sort());
  });

  describe('explain on the real server', () => {
    const COLLECTION = 'idx_explain';
    let coll: mongo.Collection;

    async function explain(ex: Example): Promise<unknown> {
      const op = ex.op ?? 'find';
      if (op === 'find') {
        return coll.find(ex.filter, { ...(ex.sort === undefined ? {} : { sort: ex.sort }), ...(ex.limit === undefined ? {} : { limit: ex.limit }) }).explain('queryPlanner');
      }
      if (op === 'count' || op === 'aggregate') {
        // countDocuments is this pipeline; countByRequest groups what its $match finds.
        const tail = op === 'count' ? [{ $limit: 100_001 }, { $group: { _id: 1, n: { $sum: 1 } } }] : [{ $group: { _id: { r: '$requestId', k: '$kind' }, n: { $sum: 1 } } }];
        return coll.aggregate([{ $match: ex.filter }, ...tail]).explain('queryPlanner');
      }
      return (fx.conn.db as mongo.Db).command({ explain: { distinct: coll.collectionName, key: 'model', query: ex.filter }, verbosity: 'queryPlanner' });
    }

    before(async function () {
      const a = fx.auditor({ collection: COLLECTION });
      await a.ready();
      coll = a.model.collection;
      // Some data, so that a planner that compares candidate plans by trial has something to compare.
      await coll.insertMany(sampleEvents(300) as unknown as mongo.OptionalId<mongo.Document>[]);
      const probe = await explain(EXAMPLES['query: kind, or kinds']());
      if (winningStages(probe) === null) {
        console.log(`      (skipped: ${serverKind()}'s explain reports no plan stages (it answered ${JSON.stringify(probe).slice(0, 120)}…), so index use cannot be asserted here)`);
        this.skip();
      }
    });

    for (const q of QUERY_CATALOGUE) {
      // $text matches come in score order: sorting them by time is a sort in memory, of the matches only.
      const sorted = Object.keys(q.sort).length > 0 && q.text !== true;
      it(`${q.id}: no collection scan${sorted ? ', no in-memory sort' : ''}`, async () => {
        const stages = winningStages(await explain(EXAMPLES[q.id]())) as PlanStage[];
        const names = stages.map((s) => s.stage);
        expect(names, `${q.id}: ${names.join(' > ')}`).to.not.include('COLLSCAN');
        expect(names.some((s) => /IXSCAN|DISTINCT_SCAN|IDHACK|EXPRESS|TEXT/.test(s)), `${q.id}: ${names.join(' > ')}`).to.equal(true);
        if (sorted) expect(names, `${q.id}: ${names.join(' > ')}`).to.not.include('SORT');
        for (const s of stages) if (s.indexName !== undefined) expect(byName.has(s.indexName), `${q.id}: ${s.indexName} is ours`).to.equal(true);
      });
    }
  });
});
