import { expect } from 'chai';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { otlpSink, type Auditor, type JsonEvent } from '../lib/index.js';
import { eventually, useFixture, type Running, APP_EVENTS } from './support/helpers.js';
import { otlpReceiver, type OtlpReceiver } from './support/sink-receivers.js';

describe('OTLP sink', function () {
  this.timeout(60_000);
  const fx = useFixture('sinks_otlp');
  let n = 0;
  const receiver = async (): Promise<OtlpReceiver> => fx.own(await otlpReceiver());
  const storedIds = async (a: Auditor): Promise<string[]> =>
    ((await a.model.find(APP_EVENTS, { _id: 1 }).lean()) as { _id: { toHexString(): string } }[]).map((d) => d._id.toHexString()).sort();
  const hit = async (r: Running, count: number): Promise<void> => {
    let next = 0;
    await Promise.all(Array.from({ length: 10 }, async () => {
      while (next < count) {
        const i = next++;
        const res = await fetch(`${r.url}/things/${i}?q=${i}`, { headers: { 'user-agent': 'otlp-test/1.0', 'x-user': 'u-alice' } });
        expect(res.status).to.equal(200);
        await res.text();
      }
    }));
  };
  const serve = (a: Auditor): Promise<Running> =>
    fx.serve(a, (ctx) => {
      ctx.state.user = { id: ctx.get('x-user'), username: 'alice' };
      ctx.body = 'ok';
    });

  it('refuses bad options by name', () => {
    expect(() => otlpSink({ url: 'ftp://x/v1/logs' })).to.throw(TypeError, /otlpSink\.url/);
    expect(() => otlpSink({ url: 'http://127.0.0.1:4318/v1/logs', protocol: 'grpc' as never })).to.throw(TypeError, /otlpSink\.protocol/);
    expect(() => otlpSink({ url: 'http://127.0.0.1:4318/v1/logs', endpoint: 'x' } as never)).to.throw(TypeError, /unknown otlpSink option "endpoint"/);
  });

  for (const protocol of ['http/protobuf', 'http/json'] as const) {
    it(`sends each event as a LogRecord with semantic-convention attributes (${protocol})`, async () => {
      const r = await receiver();
      const a = fx.auditor({ collection: `ot_${n++}`, sinks: [otlpSink({ url: r.url, protocol, serviceName: 'billing' })] });
      await hit(await serve(a), 3);
      await a.flush();
      const ids = await storedIds(a);
      await eventually(() => r.accepted.size === 3);
      expect([...r.accepted.keys()].sort()).to.deep.equal(ids);
      const rec = r.records.get(ids[0]);
      expect(rec?.contentType).to.match(protocol === 'http/json' ? /^application\/json/ : /^application\/x-protobuf/);
      expect(rec?.resource['service.name']).to.equal('billing');
      expect(rec?.attributes).to.include({
        'event.name': 'koa_audit.request',
        'log.record.uid': ids[0],
        'http.request.method': 'GET',
        'http.response.status_code': 200,
        'user_agent.original': 'otlp-test/1.0',
        'user.id': 'u-alice',
        'user.name': 'alice',
        'koa_audit.kind': 'request',
        'koa_audit.outcome': 'success',
      });
      expect(String(rec?.attributes['url.path'])).to.match(/^\/things\/\d$/);
      expect(String(rec?.attributes['client.address'])).to.match(/127\.0\.0\.1$/);
      expect(rec?.attributes).not.to.have.property('http.route'); // no router matched
      expect(rec?.severityText).to.equal('INFO');
      // The body is the whole event in its JSON form; the timestamp is the event's.
      const body = rec?.body as JsonEvent;
      expect(body._id).to.equal(ids[0]);
      expect(BigInt(rec?.timeUnixNano ?? 0) / 1_000_000n).to.equal(BigInt(Date.parse(body.ts)));
    });
  }

  it('carries trace and span ids and the exception of an event', async () => {
    const r = await receiver();
    const sink = otlpSink({ url: r.url });
    const event = {
      _id: '65f000000000000000000001', ts: '2026-11-21T13:31:15.044Z', kind: 'request', outcome: 'failure',
      actor: null, requestId: 'r1', ip: '10.0.0.7', userAgent: null, traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
      spanId: '00f067aa0ba902b7', tenant: 'acme',
      http: { method: 'POST', path: '/posts/7', route: '/posts/:id', query: 'a=1', status: 500, durationMs: 3 },
      error: { name: 'TypeError', message: 'boom', status: 500, stack: null },
    } as unknown as JsonEvent;
    await sink.send([event]);
    await sink.close();
    const rec = r.records.get(event._id);
    expect(rec?.traceId).to.equal('4bf92f3577b34da6a3ce929d0e0e4736');
    expect(rec?.spanId).to.equal('00f067aa0ba902b7');
    expect(rec?.severityText).to.equal('WARN');
    expect(rec?.attributes).to.include({
      'http.route': '/posts/:id', 'url.query': 'a=1', 'http.response.status_code': 500, 'client.address': '10.0.0.7',
      'exception.type': 'TypeError', 'exception.message': 'boom', 'koa_audit.tenant': 'acme', 'koa_audit.request_id': 'r1',
    });
    expect(rec?.attributes).not.to.have.property('user.id');
  });

  it('delivers every event exactly once after the Collector was down for a while, under load, and across a restart', async () => {
    const r = await receiver();
    r.mode = { status: 503 };
    const spoolDir = fx.tmp();
    const collection = `ot_${n++}`;
    const sink = (): ReturnType<typeof otlpSink> => otlpSink({ url: r.url, timeoutMs: 1000, retryMaxMs: 300, batchSize: 50 });
    const first = fx.auditor({ collection, spoolDir, maxQueue: 60, sinks: [sink()] });
    first.on('error', () => {});
    const app = await serve(first);
    await hit(app, 120);
    await first.flush();
    await eventually(() => first.stats().sinks?.otlp.failing === true);
    expect(r.attempts.length).to.be.above(0);
    await app.close();
    await first.close({ timeoutMs: 500 });
    expect(readdirSync(join(spoolDir, 'sinks', 'otlp')).length).to.be.above(0);

    r.mode = { status: 200 };
    const second = fx.auditor({ collection, spoolDir, sinks: [sink()] });
    second.on('error', () => {});
    await hit(await serve(second), 80);
    await second.flush();
    const ids = await storedIds(second);
    expect(ids).to.have.length(200);
    await eventually(() => r.accepted.size === 200, 30_000);
    expect([...r.accepted.keys()].sort()).to.deep.equal(ids);
    expect([...r.accepted.values()].every((c) => c === 1)).to.equal(true, 'no event accepted twice');
  });

  it('records a loss, naming the sink, when the Collector refuses records for good (400)', async () => {
    const r = await receiver();
    r.mode = { status: 400 };
    const a = fx.auditor({ collection: `ot_${n++}`, sinks: [otlpSink({ url: r.url, name: 'collector', retryMaxMs: 100 })] });
    a.on('error', () => {});
    await a.loginFailed({ identifier: 'x', reason: 'bad_password' });
    await a.flush();
    const loss = (await eventually(async () => {
      const found = await a.model.find({ kind: 'loss' }).lean();
      return found.length > 0 ? found : null;
    }, 10_000)) as { meta: Record<string, unknown> }[];
    expect(loss[0].meta).to.include({ sink: 'collector', lost: 1, reason: 'rejected' });
    expect(a.stats().sinks?.collector.dropped).to.be.at.least(1);
  });
});
