/**
 * The Kafka sink against a real Apache Kafka broker (3.9.1, KRaft, one node) that test/support/kafka.ts starts.
 * Skipped, with the reason printed, where Java, Maven or the broker's jars cannot be had.
 */
import { expect } from 'chai';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { kafkaSink, type AuditEvent, type Auditor } from '../lib/index.js';
import { eventually, useFixture, type Running, APP_EVENTS } from './support/helpers.js';
import { startKafka, type KafkaBroker } from './support/kafka.js';

interface Received {
  ids: Map<string, number>;
  keys: Map<string, string | null>;
  headers: Map<string, string>;
  partitions: Map<string, number>;
}

describe('kafka sink (real broker)', function () {
  // The first run on a machine downloads the broker's jars into ~/.m2.
  this.timeout(60_000);
  const fx = useFixture('sinks_kafka');
  let broker: KafkaBroker | null = null;
  let client: Kafka;
  let n = 0;

  before(async function () {
    this.timeout(10 * 60_000);
    const why: { reason?: string } = {};
    broker = await startKafka(why);
    if (broker === null) {
      console.log(`      (kafka sink tests skipped: ${why.reason})`);
      this.skip();
    }
    fx.cleanup(() => broker?.destroy());
    // Quick to reconnect: the consumers ride out the broker's outages.
    client = new Kafka({ brokers: [broker.broker], logLevel: logLevel.NOTHING, clientId: 'test', retry: { initialRetryTime: 100, maxRetryTime: 1000, retries: 30 } });
  });

  /** A new topic, and a consumer collecting everything on it by event id. */
  const topicWithConsumer = async (config: { name: string; value: string }[] = []): Promise<{ topic: string; got: Received }> => {
    const topic = `audit-${n++}-${Date.now()}`;
    const admin = client.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 3, configEntries: config }], waitForLeaders: true });
    await admin.disconnect();
    const got: Received = { ids: new Map(), keys: new Map(), headers: new Map(), partitions: new Map() };
    const consumer = client.consumer({ groupId: `g-${topic}`, sessionTimeout: 10_000, heartbeatInterval: 1000 });
    fx.cleanup(() => consumer.disconnect().catch(() => {}));
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message, partition }) => {
        const event = JSON.parse(String(message.value)) as { _id: string };
        got.ids.set(event._id, (got.ids.get(event._id) ?? 0) + 1);
        got.keys.set(event._id, message.key === null ? null : String(message.key));
        got.headers.set(event._id, String(message.headers?.['koa-audit-id']));
        got.partitions.set(event._id, partition);
      },
    });
    return { topic, got };
  };
  const storedIds = async (a: Auditor): Promise<string[]> =>
    ((await a.model.find(APP_EVENTS, { _id: 1 }).lean()) as { _id: { toHexString(): string } }[]).map((d) => d._id.toHexString()).sort();
  /** `count` requests, ten at a time, each by user u<i % 5>. */
  const hit = async (r: Running, count: number): Promise<void> => {
    let next = 0;
    await Promise.all(Array.from({ length: 10 }, async () => {
      while (next < count) {
        const i = next++;
        const res = await fetch(`${r.url}/x?i=${i}`, { headers: { 'x-user': `u${i % 5}` } });
        expect(res.status).to.equal(200);
        await res.text();
      }
    }));
  };
  const serve = (a: Auditor): Promise<Running> => {
    return fx.serve(a, (ctx) => {
      ctx.state.user = { id: ctx.get('x-user'), username: ctx.get('x-user') };
      ctx.body = 'ok';
    });
  };
  const sink = (topic: string): ReturnType<typeof kafkaSink> =>
    kafkaSink({ brokers: [(broker as KafkaBroker).broker], topic, retryMaxMs: 500, connectionTimeoutMs: 1000 });

  it('refuses bad options by name', () => {
    expect(() => kafkaSink({ brokers: [], topic: 't' })).to.throw(TypeError, /kafkaSink\.brokers/);
    expect(() => kafkaSink({ brokers: ['127.0.0.1:9092'], topic: 'a topic' })).to.throw(TypeError, /kafkaSink\.topic/);
    expect(() => kafkaSink({ brokers: ['127.0.0.1:9092'], topic: 't', acks: 1 } as never)).to.throw(TypeError, /unknown kafkaSink option "acks"/);
  });

  it('delivers every event exactly once by _id after the broker was down for a while, under load; key = tenant or actor id', async () => {
    const { topic, got } = await topicWithConsumer();
    const a = fx.auditor({ collection: `kf_${n++}`, sinks: [sink(topic)] });
    a.on('error', () => {});
    const app = await serve(a);
    await hit(app, 50);
    await a.flush();
    await eventually(() => got.ids.size === 50, 20_000);

    await (broker as KafkaBroker).stop();
    await hit(app, 150); // the broker is down: the store takes these all the same
    await a.flush();
    await eventually(() => a.stats().sinks?.kafka.failing === true, 20_000);
    expect(a.stats().stored).to.equal(200);
    await (broker as KafkaBroker).start();
    await hit(app, 100); // load while it recovers
    await a.flush();

    const ids = await storedIds(a);
    expect(ids).to.have.length(300);
    await eventually(() => got.ids.size === 300, 45_000, 200);
    expect([...got.ids.keys()].sort()).to.deep.equal(ids);
    const twice = [...got.ids.values()].filter((c) => c > 1).length;
    expect(twice).to.equal(0, 'no event reached the topic twice');
    // Keys: the actor's id (no tenant on these events); one actor's events share a partition, hence their order.
    const events = (await a.model.find(APP_EVENTS).lean()) as AuditEvent[];
    const byActor = new Map<string, Set<number>>();
    for (const e of events) {
      const id = e._id.toHexString();
      expect(got.keys.get(id)).to.equal(e.actor?.id ?? null);
      expect(got.headers.get(id)).to.equal(id);
      if (e.actor !== null) byActor.set(e.actor.id, (byActor.get(e.actor.id) ?? new Set()).add(got.partitions.get(id) as number));
    }
    expect(byActor.size).to.equal(5);
    for (const parts of byActor.values()) expect(parts.size).to.equal(1);
    expect(a.stats().sinks?.kafka).to.include({ delivered: 300, failing: false, dropped: 0 });
  });

  it('keeps what the broker did not get in the sink spool across a restart of the app', async () => {
    const { topic, got } = await topicWithConsumer();
    const spoolDir = fx.tmp();
    const collection = `kf_${n++}`;
    await (broker as KafkaBroker).stop();
    const first = fx.auditor({ collection, spoolDir, sinks: [sink(topic)] });
    first.on('error', () => {});
    await hit(await serve(first), 80);
    await first.flush();
    await eventually(() => first.stats().sinks?.kafka.failing === true, 20_000);
    await first.close({ timeoutMs: 1000 });
    expect(readdirSync(join(spoolDir, 'sinks', 'kafka')).length).to.be.above(0);

    await (broker as KafkaBroker).start();
    const second = fx.auditor({ collection, spoolDir, sinks: [sink(topic)] });
    second.on('error', () => {});
    const ids = await storedIds(second);
    expect(ids).to.have.length(80);
    await eventually(() => got.ids.size === 80, 45_000, 200);
    expect([...got.ids.keys()].sort()).to.deep.equal(ids);
    expect([...got.ids.values()].every((c) => c === 1)).to.equal(true);
  });

  it('records a loss, naming the sink, when the broker refuses a record for good (too large for the topic)', async () => {
    const { topic, got } = await topicWithConsumer([{ name: 'max.message.bytes', value: '2000' }]);
    const a = fx.auditor({ collection: `kf_${n++}`, sinks: [sink(topic)] });
    a.on('error', () => {});
    await a.loginSucceeded({ user: { id: 'big' }, meta: { notes: 'x'.repeat(3000) } });
    await a.flush();
    const loss = (await eventually(async () => {
      const found = (await a.model.find({ kind: 'loss' }).lean()) as AuditEvent[];
      return found.length > 0 ? found : null;
    }, 20_000)) as AuditEvent[];
    expect(loss[0].meta).to.include({ sink: 'kafka', lost: 1, reason: 'rejected' });
    // The loss event itself is small: it reaches the topic.
    await eventually(() => got.ids.has(loss[0]._id.toHexString()), 20_000);
    expect(a.stats().sinks?.kafka.dropped).to.equal(1);
  });
});
