import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { signWebhook, verifyWebhook, webhookSink, WebhookVerificationError, type AuditEvent, type Auditor } from '../lib/index.js';
import { eventually, useFixture, type Running, APP_EVENTS } from './support/helpers.js';
import { webhookReceiver, type Receiver } from './support/sink-receivers.js';

const SECRET = 'whsec-0123456789abcdef-test';

describe('webhook sink', () => {
  const fx = useFixture('sinks_webhook');
  let n = 0;
  const receiver = async (): Promise<Receiver> => fx.own(await webhookReceiver(SECRET));
  const storedIds = async (a: Auditor): Promise<string[]> =>
    ((await a.model.find(APP_EVENTS, { _id: 1 }).lean()) as { _id: { toHexString(): string } }[]).map((d) => d._id.toHexString()).sort();
  const hit = async (r: Running, count: number, parallel = 10): Promise<void> => {
    let next = 0;
    await Promise.all(Array.from({ length: parallel }, async () => {
      while (next < count) {
        next++;
        const res = await fetch(`${r.url}/x?i=${next}`);
        expect(res.status).to.equal(200);
        await res.text();
      }
    }));
  };

  describe('signature', () => {
    const body = '{"_id":"a"}\n';
    const headers = (sig: string): Record<string, string> => ({ 'x-koa-audit-signature': sig });
    let now = 0;
    beforeEach(() => {
      now = Math.floor(Date.now() / 1000); // when each test runs: a suite can take longer than the tolerance
    });

    it('verifies a signed body and returns its events', async () => {
      const v = await verifyWebhook({ headers: headers(signWebhook(body, SECRET, now)), body }, SECRET);
      expect(v.events).to.deep.equal([{ _id: 'a' }]);
      expect(v.signedAt.getTime()).to.equal(now * 1000);
    });

    it('refuses a tampered body, a wrong secret, a missing or malformed header, and a replay outside the tolerance', async () => {
      const reason = async (p: Promise<unknown>): Promise<string> => {
        try {
          await p;
        } catch (err) {
          expect(err).to.be.instanceOf(WebhookVerificationError);
          return (err as WebhookVerificationError).reason;
        }
        return 'accepted';
      };
      const sig = signWebhook(body, SECRET, now);
      expect(await reason(verifyWebhook({ headers: headers(sig), body: '{"_id":"b"}\n' }, SECRET))).to.equal('bad_signature');
      expect(await reason(verifyWebhook({ headers: headers(sig), body }, 'another-secret-of-some-length'))).to.equal('bad_signature');
      expect(await reason(verifyWebhook({ headers: {}, body }, SECRET))).to.equal('missing_signature');
      expect(await reason(verifyWebhook({ headers: headers('v1=zz'), body }, SECRET))).to.equal('malformed_signature');
      const old = signWebhook(body, SECRET, now - 3600);
      expect(await reason(verifyWebhook({ headers: headers(old), body }, SECRET))).to.equal('expired');
      // The timestamp is signed too: moving it forward breaks the signature.
      const moved = old.replace(/t=\d+/, `t=${now}`);
      expect(await reason(verifyWebhook({ headers: headers(moved), body }, SECRET))).to.equal('bad_signature');
      // A secret rotation: either secret verifies.
      expect((await verifyWebhook({ headers: headers(sig), body }, ['new-secret-0123456789', SECRET])).events).to.have.length(1);
    });

    it('a receiver refuses an unsigned POST', async () => {
      const r = await receiver();
      const res = await fetch(r.url, { method: 'POST', body: '{"_id":"x"}\n' });
      expect(res.status).to.equal(401);
      expect(r.refused).to.deep.equal(['missing_signature']);
    });
  });

  describe('options', () => {
    it('refuses a non-HTTPS URL except to loopback or with allowHttp, a short secret, an unknown option', () => {
      expect(() => webhookSink({ url: 'http://audit.example.com/hook', secret: SECRET })).to.throw(TypeError, /webhookSink\.url.*https/);
      expect(() => webhookSink({ url: 'http://audit.example.com/hook', secret: SECRET, allowHttp: true })).not.to.throw();
      expect(() => webhookSink({ url: 'http://127.0.0.1:9/hook', secret: SECRET })).not.to.throw();
      expect(() => webhookSink({ url: 'http://[::1]:9/hook', secret: SECRET })).not.to.throw();
      expect(() => webhookSink({ url: 'https://audit.example.com/hook', secret: SECRET })).not.to.throw();
      expect(() => webhookSink({ url: 'ftp://audit.example.com/', secret: SECRET })).to.throw(TypeError, /webhookSink\.url/);
      expect(() => webhookSink({ url: 'https://u:p@audit.example.com/', secret: SECRET })).to.throw(TypeError, /credentials/);
      expect(() => webhookSink({ url: 'https://audit.example.com/', secret: 'short' })).to.throw(TypeError, /webhookSink\.secret/);
      expect(() => webhookSink({ url: 'https://audit.example.com/', secret: SECRET, batchsize: 3 } as never)).to.throw(TypeError, /unknown webhookSink option "batchsize"/);
      expect(() => webhookSink({ url: 'https://audit.example.com/', secret: SECRET, headers: { 'X-Koa-Audit-Signature': 'x' } })).to.throw(TypeError, /headers/);
      // Header injection is refused when the sink is made, without echoing the value (it may be a key).
      const injected = (): unknown => webhookSink({ url: 'https://audit.example.com/', secret: SECRET, headers: { 'X-Api-Key': 'k-secret\r\nX-Evil: 1' } });
      expect(injected).to.throw(TypeError, /webhookSink\.headers\.X-Api-Key.*no CR, LF/);
      expect(() => injected()).to.throw(TypeError).that.satisfies((e: Error) => !e.message.includes('k-secret'));
      expect(() => webhookSink({ url: 'https://audit.example.com/', secret: SECRET, headers: { 'Bad Name': 'v' } })).to.throw(TypeError, /webhookSink\.headers\.Bad Name/);
    });

    it('createAudit refuses two sinks of one name, and something that is not a sink', () => {
      const s = webhookSink({ url: 'https://audit.example.com/', secret: SECRET });
      expect(() => fx.auditor({ sinks: [s, s] })).to.throw(TypeError, /sinks\[1\]\.name/);
      expect(() => fx.auditor({ sinks: [{ name: 'x' }] as never })).to.throw(TypeError, /sinks\[0\]/);
      expect(() => fx.auditor({ sinks: [{ ...s, name: '../x' }] })).to.throw(TypeError, /sinks\[0\]\.name/);
    });
  });

  it('delivers every event exactly once after being down for a while, under load; a dead sink holds up neither the store nor another sink', async function () {
    this.timeout(60_000);
    const up = await receiver();
    const down = await receiver();
    up.mode = { status: 503 };
    down.mode = { status: 500 };
    const a = fx.auditor({
      collection: `wh_${n++}`,
      maxQueue: 40, // small, so that the sinks' overflow goes to their spools
      sinks: [
        webhookSink({ url: up.url, secret: SECRET, name: 'up', batchSize: 25, retryMaxMs: 200 }),
        webhookSink({ url: down.url, secret: SECRET, name: 'down', retryMaxMs: 200, format: 'json' }),
      ],
    });
    a.on('error', () => {}); // the sinks' failures are reported there
    const app = await fx.serve(a);
    await hit(app, 150);
    await a.flush();
    // Both sinks are down: the store has everything all the same.
    const ids = await storedIds(a);
    expect(ids).to.have.length(150);
    const s1 = a.stats();
    expect(s1.stored).to.equal(150);
    expect(s1.sinks?.up).to.include({ failing: true });
    expect(s1.sinks?.up.spooled).to.be.above(0);
    expect(up.attempts.length).to.be.above(0);

    up.mode = { status: 200 };
    await hit(app, 100); // and more load while it recovers
    await a.flush();
    const all = await storedIds(a);
    expect(all).to.have.length(250);
    await eventually(() => up.accepted.size === 250, 30_000);
    expect([...up.accepted.keys()].sort()).to.deep.equal(all);
    expect([...up.accepted.values()].every((c) => c === 1)).to.equal(true, 'no event accepted twice');
    expect(up.contentTypes).to.deep.equal(new Set(['application/x-ndjson']));
    // The events travel in their JSON form, `_id` first.
    const one = up.events.find((e) => e.kind === 'request') as unknown as AuditEvent & { _id: string };
    expect(one._id).to.match(/^[0-9a-f]{24}$/);
    expect((one as unknown as { http: { path: string } }).http.path).to.equal('/x');
    // The receiver counts a batch before its answer reaches the sink: the sink's count follows.
    await eventually(() => a.stats().sinks?.up.delivered === 250);
    const s2 = a.stats();
    expect(s2.sinks?.up).to.include({ delivered: 250, failing: false, queued: 0, dropped: 0 });
    expect(s2.sinks?.down).to.include({ failing: true, delivered: 0 });
    expect(down.accepted.size).to.equal(0);
    expect(down.contentTypes).to.deep.equal(new Set(['application/json']));
  });

  it('keeps what a dead sink did not get in its spool across a restart, and delivers it once the sink is back', async function () {
    this.timeout(30_000);
    const r = await receiver();
    await r.stop(); // connection refused
    const spoolDir = fx.tmp();
    const collection = `wh_${n++}`;
    const sink = (): ReturnType<typeof webhookSink> => webhookSink({ url: r.url, secret: SECRET, retryMaxMs: 200 });
    const first = fx.auditor({ collection, spoolDir, sinks: [sink()] });
    first.on('error', () => {});
    const app = await fx.serve(first);
    await hit(app, 60);
    await first.flush();
    await eventually(() => first.stats().sinks?.webhook.failing === true);
    await first.close({ timeoutMs: 2000 });
    const files = readdirSync(join(spoolDir, 'sinks', 'webhook'));
    expect(files.length).to.be.above(0);

    await r.start();
    const second = fx.auditor({ collection, spoolDir, sinks: [sink()] });
    const ids = await storedIds(second);
    expect(ids).to.have.length(60);
    await eventually(() => r.accepted.size === 60, 20_000);
    expect([...r.accepted.keys()].sort()).to.deep.equal(ids);
    expect([...r.accepted.values()].every((c) => c === 1)).to.equal(true);
    await eventually(() => readdirSync(join(spoolDir, 'sinks', 'webhook')).length === 0);
    expect(existsSync(join(spoolDir, 'sinks', 'webhook'))).to.equal(true);
  });

  it('honours Retry-After', async function () {
    this.timeout(20_000);
    const r = await receiver();
    r.mode = { status: 429, retryAfter: '1' };
    const a = fx.auditor({ collection: `wh_${n++}`, sinks: [webhookSink({ url: r.url, secret: SECRET, retryMaxMs: 100 })] });
    a.on('error', () => {});
    await a.withActor({ id: 'cron' }, () => a.loginSucceeded({ user: { id: 'u1' } }));
    await a.flush();
    await eventually(() => r.attempts.length === 1);
    r.mode = { status: 200 };
    await eventually(() => r.accepted.size === 1, 10_000);
    expect(r.attempts).to.have.length(2);
    // Without the header the next attempt would come after ~100 ms; the receiver asked for a second.
    expect(r.attempts[1].at - r.attempts[0].at).to.be.at.least(950);
  });

  it('sends the configured headers beside its own, one signed body of the length it declares', async () => {
    const r = await receiver();
    const a = fx.auditor({ collection: `wh_${n++}`, sinks: [webhookSink({ url: r.url, secret: SECRET, headers: { 'X-Api-Key': 'k-1' } })] });
    await a.withActor({ id: 'cron' }, () => a.loginSucceeded({ user: { id: 'ü-1' } })); // a multi-byte character
    await a.flush();
    await eventually(() => r.accepted.size === 1);
    const h = r.attempts[0].headers ?? {};
    expect(h['x-api-key']).to.equal('k-1');
    expect(h['content-type']).to.equal('application/x-ndjson');
    expect(h['x-koa-audit-delivery']).to.match(/^[0-9a-f-]{36}$/);
    expect(Number(h['content-length'])).to.equal(Buffer.byteLength(`${JSON.stringify(r.events[0])}\n`));
    expect(r.refused).to.deep.equal([]);
    expect(r.events[0].actor?.id).to.equal('ü-1');
  });

  it('follows no redirect (the signed body goes nowhere it was not sent), and retries until the destination answers 2xx', async function () {
    this.timeout(20_000);
    const r = await receiver();
    const elsewhere = await receiver();
    r.mode = { status: 307, location: elsewhere.url };
    const a = fx.auditor({ collection: `wh_${n++}`, sinks: [webhookSink({ url: r.url, secret: SECRET, retryMaxMs: 100 })] });
    const errors: Error[] = [];
    a.on('error', (e) => errors.push(e));
    await a.withActor({ id: 'cron' }, () => a.loginSucceeded({ user: { id: 'u1' } }));
    await a.flush();
    await eventually(() => r.attempts.length >= 2);
    expect(elsewhere.attempts).to.deep.equal([]);
    expect(errors.some((e) => /answered 307/.test(e.message))).to.equal(true);
    r.mode = { status: 200 };
    await eventually(() => r.accepted.size === 1, 10_000);
    expect(elsewhere.attempts).to.deep.equal([]);
  });

  it('gives up on an answer that does not come within timeoutMs, and delivers on a later attempt', async function () {
    this.timeout(20_000);
    const r = await receiver();
    r.mode = { status: 200, delayMs: 2000 };
    const a = fx.auditor({ collection: `wh_${n++}`, sinks: [webhookSink({ url: r.url, secret: SECRET, timeoutMs: 300, retryMaxMs: 100 })] });
    const errors: Error[] = [];
    a.on('error', (e) => errors.push(e));
    await a.withActor({ id: 'cron' }, () => a.loginSucceeded({ user: { id: 'u1' } }));
    await a.flush();
    await eventually(() => errors.some((e) => /no answer within 300 ms/.test(e.message)), 5000);
    expect(a.stats().sinks?.webhook.failing).to.equal(true);
    r.mode = { status: 200 };
    await eventually(() => a.stats().sinks?.webhook.delivered === 1, 10_000);
    expect(a.stats().sinks?.webhook.failing).to.equal(false);
    expect([...r.accepted.keys()]).to.have.length(1); // a late answer's copy carries the same _id: one event
  });

  it('delivers over HTTPS to a receiver with a private CA that asks for a client certificate (tls: { ca, cert, key }), and to no other', async function () {
    this.timeout(30_000);
    // A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl for this test.
    const dir = fx.tmp();
    const ssl = (...args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    ssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', '/CN=koa-audit test CA');
    writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\n');
    writeFileSync(join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth\n');
    for (const who of ['server', 'client']) {
      ssl('req', ...ec, '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=${who}`);
      ssl('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.crt`, '-days', '1', '-extfile', `${who}.ext`);
    }
    const pem = (f: string): string => readFileSync(join(dir, f), 'utf8');
    const received: string[] = [];
    const server = https.createServer({ key: pem('server.key'), cert: pem('server.crt'), ca: pem('ca.crt'), requestCert: true, rejectUnauthorized: true }, (req, res) => {
      verifyWebhook(req, SECRET).then(({ events }) => {
        received.push(...events.map((e) => e._id));
        res.end();
      }, () => {
        res.statusCode = 400;
        res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    fx.cleanup(() => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;

    const a = fx.auditor({
      collection: `wh_${n++}`,
      sinks: [
        webhookSink({ url, secret: SECRET, name: 'trusted', tls: { ca: pem('ca.crt'), cert: pem('client.crt'), key: pem('client.key') }, retryMaxMs: 100 }),
        webhookSink({ url, secret: SECRET, name: 'nocert', tls: { ca: [Buffer.from(pem('ca.crt'))] }, retryMaxMs: 100 }),
        webhookSink({ url, secret: SECRET, name: 'noca', retryMaxMs: 100 }),
      ],
    });
    const errors: Error[] = [];
    a.on('error', (e) => errors.push(e));
    await a.withActor({ id: 'cron' }, () => a.loginSucceeded({ user: { id: 'u1' } }));
    await a.flush();
    await eventually(() => a.stats().sinks?.trusted.delivered === 1);
    await eventually(() => (a.stats().sinks?.nocert.retried ?? 0) > 0 && (a.stats().sinks?.noca.retried ?? 0) > 0);
    expect(received).to.have.length(1, 'only the sink with the CA and a client certificate got through');
    expect(a.stats().sinks?.nocert).to.include({ delivered: 0, failing: true });
    expect(a.stats().sinks?.noca).to.include({ delivered: 0, failing: true });
    // The server's certificate is not trusted without the CA.
    expect(errors.some((e) => /self[- ]signed|unable to (verify|get local issuer)/i.test(e.message))).to.equal(true);
  });

  it('refuses tls options that cannot work, without showing a key', () => {
    const key = '-----BEGIN PRIVATE KEY-----\nsecret-key-material\n-----END PRIVATE KEY-----\n';
    expect(() => webhookSink({ url: 'http://127.0.0.1:9/hook', secret: SECRET, tls: { ca: 'x' } })).to.throw(TypeError, /webhookSink\.tls.*https/);
    const halfPair = (): unknown => webhookSink({ url: 'https://audit.example.com/', secret: SECRET, tls: { key } });
    expect(halfPair).to.throw(TypeError, /webhookSink\.tls.*both cert and key/);
    expect(() => halfPair()).to.throw(TypeError).that.satisfies((e: Error) => !e.message.includes('secret-key-material'));
    expect(() => webhookSink({ url: 'https://audit.example.com/', secret: SECRET, tls: { ca: [] } })).to.throw(TypeError, /webhookSink\.tls\.ca/);
    expect(() => webhookSink({ url: 'https://audit.example.com/', secret: SECRET, tls: { cert: 42, key } } as never)).to.throw(TypeError, /webhookSink\.tls\.cert/);
    expect(() => webhookSink({ url: 'https://audit.example.com/', secret: SECRET, tls: { rejectUnauthorized: false } } as never)).to.throw(TypeError, /unknown webhookSink\.tls option "rejectUnauthorized"/);
  });

  it('records a loss in the trail, naming the sink, when the destination refuses events for good', async function () {
    this.timeout(20_000);
    const r = await receiver();
    r.mode = { status: 400 };
    const a = fx.auditor({ collection: `wh_${n++}`, sinks: [webhookSink({ url: r.url, secret: SECRET, name: 'siem', retryMaxMs: 100 })] });
    const errors: Error[] = [];
    a.on('error', (e) => errors.push(e));
    for (let i = 0; i < 3; i++) await a.loginFailed({ identifier: `x${i}`, reason: 'bad_password' });
    await a.flush();
    const loss = await eventually(async () => {
      const found = (await a.model.find({ kind: 'loss' }).lean()) as AuditEvent[];
      return found.length > 0 ? found : null;
    }) as AuditEvent[];
    await a.flush();
    const all = (await a.model.find({ kind: 'loss' }).lean()) as AuditEvent[];
    expect(all).to.have.length(1, 'the loss of the loss event is not recorded again');
    expect(loss[0]).to.include({ kind: 'loss', outcome: 'failure' });
    expect(loss[0].actor).to.deep.include({ id: 'system' });
    expect(loss[0].meta).to.include({ sink: 'siem', lost: 3, reason: 'rejected' });
    expect(a.stats().sinks?.siem.dropped).to.be.at.least(3);
    expect(errors.some((e) => /answered 400/.test(e.message))).to.equal(true);
  });

  it("hands over what mode: 'sync' stores too", async () => {
    const r = await receiver();
    const a = fx.auditor({ collection: `wh_${n++}`, mode: 'sync', sinks: [webhookSink({ url: r.url, secret: SECRET })] });
    const app = await fx.serve(a);
    await hit(app, 3, 1);
    const ids = await storedIds(a);
    expect(ids).to.have.length(3);
    await eventually(() => r.accepted.size === 3);
    expect([...r.accepted.keys()].sort()).to.deep.equal(ids);
  });

  it('a slow sink holds up neither the requests, nor the store, nor another sink', async function () {
    this.timeout(30_000);
    const slow = await receiver();
    const fast = await receiver();
    slow.mode = { status: 200, delayMs: 3000 }; // each delivery takes 3 s
    const a = fx.auditor({
      collection: `wh_${n++}`,
      sinks: [
        webhookSink({ url: slow.url, secret: SECRET, name: 'slow', batchSize: 10 }),
        webhookSink({ url: fast.url, secret: SECRET, name: 'fast' }),
      ],
    });
    const app = await fx.serve(a);
    await hit(app, 60);
    await a.flush();
    const ids = await storedIds(a);
    expect(ids).to.have.length(60);
    await eventually(() => fast.accepted.size === 60, 10_000);
    // The fast sink has everything while the slow one is still on its first batches.
    expect(slow.accepted.size).to.be.below(60);
    expect(a.stats().sinks?.slow.queued).to.be.above(0);
    expect([...fast.accepted.keys()].sort()).to.deep.equal(ids);
  });
});
