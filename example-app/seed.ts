/**
 * Demo data for `npm start`: a few hundred events over the past seven days, so that a newcomer's first look at
 * the dashboard shows something real. Every seeded event is marked: `meta.seeded: true`, user agent
 * `koa-audit example seed`, and request ids starting with `seed-`. Seeded once per database (skipped when any
 * seeded event exists, or with SEED=0).
 *
 * Their times are in the past, which the recording API never does, so they are not recorded through it: they
 * are written as a chain of their own, complete as the auditor's are (an `audit_start` with `meta.seeded`, the
 * events in time order, an `audit_stop` and a closing checkpoint, hashed by the library's own chain code), so
 * that `koa-audit verify` on the example app's database reports no problem: the seeded chain verifies like any
 * other, and nothing unchained sits among the chained events. Then the dashboard's rollups are recounted.
 */
import { hostname } from 'node:os';
import { mongo } from 'mongoose';
import type { Auditor } from '../lib/index.js';
import type { StoredDoc } from '../lib/core/types.js';
import { resolveIntegrity } from '../lib/core/integrity-options.js';
import { Chain } from '../lib/integrity/chain.js';
import { LIBRARY_VERSION } from '../lib/integrity/trail.js';

const SYSTEM = { id: 'system', via: 'system' };

/**
 * The seeded events (in time order) as one sealed chain: what an auditor that had recorded them would have
 * stored. `integrity` (the auditor's option of that name) signs its checkpoint as the auditor would (none by default);
 * `mark` is added to the meta of the chain's own start and stop events.
 */
export function sealedChain(events: StoredDoc[], collection: string, integrity?: unknown, mark: Record<string, unknown> = { seeded: true }): StoredDoc[] {
  const sorted = [...events].sort((a, b) => (a.ts as Date).getTime() - (b.ts as Date).getTime());
  const first = (sorted[0]?.ts as Date | undefined)?.getTime() ?? Date.now();
  const last = (sorted[sorted.length - 1]?.ts as Date | undefined)?.getTime() ?? first;
  const own = (kind: string, ts: number, meta?: Record<string, unknown>): StoredDoc => ({
    _id: new mongo.ObjectId(), ts: new Date(ts), kind, outcome: 'success', actor: SYSTEM, requestId: null, ip: null, userAgent: null, ...(meta ? { meta } : {}),
  });
  const out: StoredDoc[] = [];
  const chain: Chain = new Chain({
    integrity: { ...resolveIntegrity(integrity, undefined), checkpointEvery: Number.MAX_SAFE_INTEGER },
    startEvent: (chainId) => own('audit_start', first - 1, { chainId, ...mark, host: hostname(), pid: process.pid, version: LIBRARY_VERSION, node: process.version, collection }),
    recordCheckpoint: (checkpoint) => {
      const doc = own('checkpoint', last + 2);
      doc.checkpoint = checkpoint;
      out.push(...chain.link(doc));
    },
    report: (err) => {
      throw err;
    },
  });
  try {
    for (const e of sorted) out.push(...chain.link(e));
    out.push(...chain.link(own('audit_stop', last + 1, { chainId: chain.id, ...mark, accepted: sorted.length, stored: sorted.length, dropped: 0, spooled: 0 })));
    chain.checkpoint(); // seals everything, then links the closing checkpoint
    chain.seal();
  } finally {
    chain.stop();
  }
  return out;
}

const HOUR = 3_600_000;
const ROUTES = [
  { method: 'GET', route: '/servers', weight: 6, ms: 12 },
  { method: 'GET', route: '/servers/:id', weight: 4, ms: 9 },
  { method: 'POST', route: '/servers', weight: 2, ms: 35 },
  { method: 'PATCH', route: '/servers/:id', weight: 2, ms: 28 },
  { method: 'GET', route: '/reports/monthly', weight: 1, ms: 900 },
];
const PEOPLE = [{ id: 'u-alice', name: 'Alice (seeded)' }, { id: 'u-bob', name: 'Bob (seeded)' }, { id: 'u-carol', name: 'Carol (seeded)' }];
const SERVERS = ['db-1', 'db-2', 'web-1', 'web-2', 'cache-1'];

/** A small deterministic generator: the same demo every time. */
function random(seed: number): () => number {
  let s = seed;
  return () => ((s = (s * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31);
}

export async function seedDemo(auditor: Auditor, count = 400): Promise<number> {
  if (process.env.SEED === '0') return 0;
  const coll = auditor.model.collection;
  if ((await coll.findOne({ 'meta.seeded': true }, { projection: { _id: 1 } })) !== null) return 0;
  const rnd = random(42);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(rnd() * list.length)];
  const now = Date.now();
  const docs: Record<string, unknown>[] = [];
  const base = (ts: number, requestId: string | null, actor: { id: string; name: string } | null, ip: string): Record<string, unknown> => ({
    _id: new mongo.ObjectId(), ts: new Date(ts), outcome: 'success', requestId, ip, userAgent: 'koa-audit example seed',
    actor: actor === null ? null : { ...actor, via: 'jwt' }, meta: { seeded: true },
  });
  for (let i = 0; docs.length < count; i++) {
    // More activity in recent days and in working hours.
    const ts = now - Math.floor(rnd() ** 1.6 * 7 * 24 * HOUR);
    const requestId = `seed-${i}`;
    const r = rnd();
    if (r < 0.12) {
      // A burst of failed logins against a few accounts from two addresses.
      const identifier = pick(['admin', 'root', 'alice', 'admin']);
      docs.push({ ...base(ts, requestId, null, pick(['203.0.113.9', '198.51.100.23', '10.0.0.7'])), kind: 'login_failed', outcome: 'failure', provider: 'local', identifier, reason: 'bad password' });
      continue;
    }
    const who = pick(PEOPLE);
    const ip = `10.0.0.${2 + Math.floor(rnd() * 5)}`;
    if (r < 0.17) {
      docs.push({ ...base(ts, requestId, who, ip), kind: 'login', provider: 'local', identifier: who.id.slice(2) });
      continue;
    }
    let total = 0;
    for (const x of ROUTES) total += x.weight;
    let w = rnd() * total;
    const route = ROUTES.find((x) => (w -= x.weight) < 0) ?? ROUTES[0];
    const failed = rnd() < 0.07;
    const status = failed ? pick([400, 404, 500, 503]) : route.method === 'POST' ? 201 : 200;
    const name = pick(SERVERS);
    const path = route.route.replace(':id', new mongo.ObjectId().toHexString());
    docs.push({
      ...base(ts, requestId, who, ip), kind: 'request', outcome: status >= 400 ? 'failure' : 'success',
      http: { method: route.method, path, route: route.route, query: '', status, durationMs: Math.round(route.ms * (0.5 + rnd() * 2) * (failed ? 3 : 1)) },
      ...(status >= 500 ? { error: { name: 'Error', message: 'upstream timed out (seeded)', status, stack: null } } : {}),
    });
    if (!failed && (route.method === 'POST' || route.method === 'PATCH')) {
      const kind = route.method === 'POST' ? 'create' : 'update';
      docs.push({
        ...base(ts + 3, requestId, who, ip), kind, model: 'Server', collectionName: 'servers', documentId: `seed-${name}`, documentLabel: name,
        operation: kind === 'create' ? 'save' : 'updateOne',
        changes: kind === 'create' ? [{ path: 'name', from: null, to: name }, { path: 'env', from: null, to: 'dev' }] : [{ path: 'env', from: 'dev', to: pick(['staging', 'prod']) }],
      });
    }
  }
  await coll.insertMany(sealedChain(docs as StoredDoc[], auditor.model.collection.collectionName));
  await auditor.rebuildRollups();
  return docs.length;
}
