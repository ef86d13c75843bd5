/**
 * The HTTP side of the dashboard and the investigation list: `/api/dashboard` (guarded by authorize, its
 * parameters checked), `/api/count`, `/api/related`, `/api/export`, the assets route, the new filters, and
 * `koa-audit rollup --rebuild`.
 */
import { expect } from 'chai';
import Koa from 'koa';
import { Writable } from 'node:stream';
import { mongo } from 'mongoose';
import { auditRouter, type Auditor } from '../lib/index.js';
import { main } from '../lib/read/cli.js';
import { CSV_COLUMNS } from '../lib/read/export.js';
import { useFixture, type Running } from './support/helpers.js';

const T0 = Date.UTC(2026, 4, 1, 10);

function events(): Record<string, unknown>[] {
  const base = { outcome: 'success', actor: null, ip: '10.0.0.1', userAgent: 'ua' };
  const list: Record<string, unknown>[] = [];
  for (let i = 0; i < 12; i++) {
    const status = i < 8 ? 200 : i < 10 ? 404 : 503;
    list.push({ ...base, _id: new mongo.ObjectId(), ts: new Date(T0 + i * 60_000), kind: 'request', outcome: status >= 400 ? 'failure' : 'success', requestId: `r${i}`,
      http: { method: i % 2 ? 'GET' : 'POST', path: i < 6 ? `/api/items/${i}` : `/admin/${i}`, route: i < 6 ? '/api/items/:id' : null, query: '', status, durationMs: 10 + i },
      ...(status === 503 ? { error: { name: 'Error', message: 'database unavailable', status: 503, stack: null } } : {}) });
  }
  list.push({ ...base, _id: new mongo.ObjectId(), ts: new Date(T0 + 1000), kind: 'update', requestId: 'r0', model: 'Item', documentId: 'i1', operation: 'updateOne', changes: [] });
  list.push({ ...base, _id: new mongo.ObjectId(), ts: new Date(T0 + 2000), kind: 'update', requestId: 'r0', model: 'Item', documentId: 'i2', operation: 'updateOne', changes: [] });
  list.push({ ...base, _id: new mongo.ObjectId(), ts: new Date(T0 + 3000), kind: 'login_failed', outcome: 'failure', requestId: 'r1', provider: 'oidc', identifier: 'mallory', reason: 'bad password' });
  return list;
}

describe('dashboard and investigation HTTP API', function () {
  this.timeout(60_000);
  const fx = useFixture('dashboard_api');
  let a: Auditor;
  let r: Running;
  let allowed = true;
  const get = async (path: string): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`${r.url}/audit${path}`);
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  before(async () => {
    a = fx.auditor({ collection: 'api_events' });
    await a.ready();
    await a.model.collection.insertMany(events());
    await a.rebuildRollups();
    const app = new Koa();
    app.use(auditRouter({ auditor: a, prefix: '/audit', authorize: () => allowed }).routes());
    r = await fx.listen(app);
  });

  it('answers the dashboard from the rollups, and 403 before reading when not authorized', async () => {
    const from = new Date(T0).toISOString();
    const to = new Date(T0 + 3_600_000).toISOString();
    const { status, body } = await get(`/api/dashboard?from=${from}&to=${to}&bucket=hour`);
    expect(status).to.equal(200);
    expect(body).to.include({ source: 'rollups', reason: null, from, to, bucket: 'hour' });
    expect((body.totals as { events: number; status: Record<string, number> }).events).to.equal(15);
    expect((body.totals as { status: Record<string, number> }).status).to.deep.equal({ '1xx': 0, '2xx': 8, '3xx': 0, '4xx': 2, '5xx': 2 });
    allowed = false;
    try {
      expect((await get(`/api/dashboard?from=${from}&to=${to}`)).status).to.equal(403);
      expect((await get('/api/count')).status).to.equal(403);
      expect((await fetch(`${r.url}/audit/api/export?format=csv`)).status).to.equal(403);
    } finally {
      allowed = true;
    }
  });

  it('refuses malformed dashboard parameters with 400 naming them', async () => {
    const cases: [string, RegExp][] = [
      ['', /"from" is required/],
      ['?from=2026-05-01&to=yesterday', /"to" must be an ISO 8601/],
      ['?from=2026-05-01&to=2026-05-02&bucket=week', /"bucket" must be one of/],
      ['?from=2026-05-02&to=2026-05-01', /"to" must be after "from"/],
      ['?from=2026-01-01&to=2026-12-31&bucket=minute', /more than 2000 buckets/],
      ['?from=2026-05-01&to=2026-05-02&colour=red', /unknown parameter "colour"/],
    ];
    for (const [q, message] of cases) {
      const { status, body } = await get(`/api/dashboard${q}`);
      expect(status, q).to.equal(400);
      expect(body.error, q).to.match(message);
    }
  });

  it('filters by path and route (exact or prefix*), method, status, statusClass, identifier, provider, free text', async () => {
    const count = async (q: string): Promise<number> => {
      const { status, body } = await get(`/api/count?${q}`);
      expect(status, `${q}: ${JSON.stringify(body)}`).to.equal(200);
      return body.count as number;
    };
    expect(await count('path=/api/*')).to.equal(6);
    expect(await count('path=/api/items/3')).to.equal(1);
    expect(await count('route=/api/items/:id')).to.equal(6);
    expect(await count('route=/api/*')).to.equal(6);
    expect(await count('method=get&kind=request')).to.equal(6);
    expect(await count('status=404')).to.equal(2);
    expect(await count('statusClass=5xx')).to.equal(2);
    expect(await count('statusClass=2xx&path=/admin/*')).to.equal(2);
    expect(await count('identifier=mallory&provider=oidc')).to.equal(1);
    expect(await count('q=unavailable')).to.equal(2);
    expect(await count('q=mallory')).to.equal(1);
    // The page names the way free text was served where it is not an index.
    const page = await get('/api/events?q=unavailable');
    expect((page.body.items as unknown[]).length).to.equal(2);
    if (page.body.notice !== undefined) console.log(`      (${String(page.body.notice).slice(0, 100)}…)`);
    for (const [q, message] of [['status=abc', /"status" must be an integer/], ['statusClass=6xx', /"statusClass" must be one of/], ['method=G%20T', /"method"/], ['path=*', /"path"/], ['status=200&statusClass=2xx', /"statusClass"/]] as const) {
      const { status, body } = await get(`/api/count?${q}`);
      expect(status, q).to.equal(400);
      expect(body.error, q).to.match(message);
    }
  });

  it('counts what each request caused, and streams the current filter as CSV and NDJSON', async () => {
    const { body } = await get('/api/related?requestId=r0&requestId=r1&requestId=r5');
    expect(body.counts).to.deep.equal({ r0: { update: 2 }, r1: { login_failed: 1 } });
    const csv = await fetch(`${r.url}/audit/api/export?format=csv&statusClass=4xx`);
    expect(csv.headers.get('content-type')).to.match(/^text\/csv/);
    expect(csv.headers.get('content-disposition')).to.equal('attachment; filename="audit-events.csv"');
    const lines = (await csv.text()).trimEnd().split('\r\n');
    expect(lines[0]).to.equal(CSV_COLUMNS.join(','));
    expect(lines).to.have.length(3);
    const nd = await (await fetch(`${r.url}/audit/api/export?format=ndjson&kind=update`)).text();
    expect(nd.trimEnd().split('\n').map((l) => (JSON.parse(l) as { documentId: string }).documentId)).to.deep.equal(['i1', 'i2']);
    expect((await fetch(`${r.url}/audit/api/export?format=xml`)).status).to.equal(400);
    expect((await fetch(`${r.url}/audit/api/export?limit=5`)).status).to.equal(400);
  });

  it('serves uPlot from the package under assets/, and nothing else there', async () => {
    const page = await (await fetch(`${r.url}/audit/`)).text();
    const name = /"uplot":"assets\/(uplot-[\d.]+\.min\.js)"/.exec(page)?.[1];
    expect(name).to.be.a('string');
    const res = await fetch(`${r.url}/audit/assets/${name}`);
    expect(res.status).to.equal(200);
    expect(res.headers.get('content-type')).to.match(/javascript/);
    expect(await res.text()).to.include('uPlot');
    expect((await fetch(`${r.url}/audit/assets/..%2Fpackage.json`)).status).to.equal(404);
  });

  it('koa-audit rollup --rebuild recounts the rollups from the events', async () => {
    // The refused requests above recorded security events of their own (written on the flush timer): all of them
    // are stored before the rebuild, which counts every event.
    await a.flush();
    const stored = await a.model.countDocuments({});
    expect(stored).to.be.at.least(15);
    const rollups = fx.conn.collection('api_events_rollups');
    await rollups.deleteMany({ _id: { $ne: 'meta' as never } });
    let err = '';
    const io = {
      stdout: new Writable({ write: (_c, _e, cb) => cb() }),
      stderr: new Writable({ write(chunk: Buffer, _e, cb) { err += chunk.toString(); cb(); } }),
    };
    const uri = fx.uri;
    expect(await main(['rollup', '--rebuild', '--uri', uri, '--collection', 'api_events'], io), err).to.equal(0);
    expect(err).to.match(new RegExp(`rebuilt the rollups of ${stored} events`));
    const d = await a.dashboard({ from: new Date(T0), to: new Date(T0 + 3_600_000), bucket: 'hour' });
    expect(d.source).to.equal('rollups');
    expect(d.totals.events).to.equal(15);
    expect(await main(['rollup', '--uri', uri], io)).to.equal(2);
    expect(err).to.match(/--rebuild is required/);
  });
});
