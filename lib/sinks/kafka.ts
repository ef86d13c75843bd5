/**
 * `kafkaSink`: each event one Kafka message, produced with kafkajs by an idempotent producer with `acks: -1`
 * (all in-sync replicas), so a retry of the producer never writes a message twice within its session.
 *
 * - key: the event's `tenant`, else its actor's id, else none (by default): one tenant's (or one actor's) events
 *   land on one partition and keep their order; `key` may be a function of the event instead.
 * - value: the event's JSON form (`_id` hex, `ts` ISO), UTF-8; headers `koa-audit-id` and `koa-audit-kind`.
 * - A batch the relay resends after a failure whose outcome was unknown, or after a restart, may reach the topic
 *   again: consumers keep events by `_id` (a compacted topic keyed by `_id`, or an upsert downstream).
 */
import type { Kafka as KafkaClient, KafkaConfig, Producer } from 'kafkajs';
import type { JsonEvent } from '../core/json.js';
import { checkKnown, fail, nonEmptyString, objectOption, positiveInt } from '../core/options.js';
import { SinkError, type AuditSink } from '../core/sink.js';
import { loadOptional } from './optional.js';

export interface KafkaSinkOptions {
  /** `host:port` of one or more brokers. */
  brokers: string[];
  topic: string;
  /** Default `'koa-audit'`. */
  clientId?: string;
  /** kafkajs's `ssl` and `sasl` options, passed through. */
  ssl?: KafkaConfig['ssl'];
  sasl?: KafkaConfig['sasl'];
  /** The message key of an event. Default: `tenant`, else `actor.id`, else none. */
  key?: (event: JsonEvent) => string | null;
  /** Events per produce request. Default 500. */
  batchSize?: number;
  /** Per produce request, in ms. Default 30,000. */
  requestTimeoutMs?: number;
  /** Per connection attempt, in ms. Default 3,000. */
  connectionTimeoutMs?: number;
  /** The sink's name. Default `'kafka'`. */
  name?: string;
  /** Longest backoff between attempts. Default 30,000 ms. */
  retryMaxMs?: number;
}

type KafkaJs = typeof import('kafkajs');

/** Kafka's verdicts on the records themselves: sending them again cannot succeed. */
const REFUSED = new Set(['MESSAGE_TOO_LARGE', 'INVALID_RECORD', 'CORRUPT_MESSAGE', 'RECORD_LIST_TOO_LARGE', 'INVALID_REQUIRED_ACKS', 'TOPIC_AUTHORIZATION_FAILED']);

export function defaultKafkaKey(event: JsonEvent): string | null {
  const tenant = (event as { tenant?: unknown }).tenant;
  if (typeof tenant === 'string' && tenant !== '') return tenant;
  return event.actor?.id ?? null;
}

function refusal(err: unknown): string | null {
  for (let e = err as { type?: unknown; originalError?: unknown; cause?: unknown } | undefined, i = 0; e !== undefined && e !== null && i < 5; i++) {
    if (typeof e.type === 'string' && REFUSED.has(e.type)) return e.type;
    e = (e.originalError ?? e.cause) as typeof e;
  }
  return null;
}

export function kafkaSink(options: KafkaSinkOptions): AuditSink {
  const o = objectOption('kafkaSink', options);
  checkKnown(o, ['brokers', 'topic', 'clientId', 'ssl', 'sasl', 'key', 'batchSize', 'requestTimeoutMs', 'connectionTimeoutMs', 'name', 'retryMaxMs'], 'kafkaSink');
  if (!Array.isArray(o.brokers) || o.brokers.length === 0 || o.brokers.some((b) => typeof b !== 'string' || !/^[^\s:]+:\d+$/.test(b))) {
    fail('kafkaSink.brokers', 'a non-empty array of "host:port"', o.brokers);
  }
  const topic = nonEmptyString('kafkaSink.topic', o.topic, '');
  if (!/^[A-Za-z0-9._-]{1,249}$/.test(topic)) fail('kafkaSink.topic', 'a Kafka topic name', topic);
  if (o.key !== undefined && typeof o.key !== 'function') fail('kafkaSink.key', 'a function (event) => string | null', o.key);
  const keyOf = (o.key as ((e: JsonEvent) => string | null) | undefined) ?? defaultKafkaKey;
  const requestTimeout = positiveInt('kafkaSink.requestTimeoutMs', o.requestTimeoutMs, 30_000);
  const kafkajs = loadOptional<KafkaJs>('kafkajs', 'kafkaSink');
  const client: KafkaClient = new kafkajs.Kafka({
    brokers: [...(o.brokers as string[])],
    clientId: nonEmptyString('kafkaSink.clientId', o.clientId, 'koa-audit'),
    ssl: o.ssl as KafkaConfig['ssl'],
    sasl: o.sasl as KafkaConfig['sasl'],
    connectionTimeout: positiveInt('kafkaSink.connectionTimeoutMs', o.connectionTimeoutMs, 3_000),
    requestTimeout,
    // The relay retries (with its own backoff, its spool and its stats); kafkajs only rides out a short blip.
    retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1_000 },
    logLevel: kafkajs.logLevel.NOTHING, // failures reach the auditor's 'error' event
  });
  let producer: Producer | null = null;
  let connecting: Promise<Producer> | null = null;
  const connected = (): Promise<Producer> => {
    connecting ??= (async () => {
      const p = client.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        createPartitioner: kafkajs.Partitioners.DefaultPartitioner,
        retry: { retries: 3, initialRetryTime: 100, maxRetryTime: 1_000 },
      });
      try {
        await p.connect();
      } catch (err) {
        connecting = null;
        throw err;
      }
      producer = p;
      return p;
    })();
    return connecting;
  };

  return {
    name: nonEmptyString('kafkaSink.name', o.name, 'kafka'),
    batchSize: positiveInt('kafkaSink.batchSize', o.batchSize, 500),
    retryMaxMs: positiveInt('kafkaSink.retryMaxMs', o.retryMaxMs, 30_000),
    async send(events: readonly JsonEvent[]): Promise<void> {
      try {
        const p = await connected();
        await p.send({
          topic,
          acks: -1,
          timeout: requestTimeout,
          messages: events.map((e) => ({
            key: keyOf(e),
            value: JSON.stringify(e),
            headers: { 'koa-audit-id': e._id, 'koa-audit-kind': String(e.kind) },
          })),
        });
      } catch (err) {
        const refused = refusal(err);
        throw new SinkError(`kafka topic ${topic}: ${(err as Error).message}`, { cause: err, permanent: refused !== null });
      }
    },
    async close(): Promise<void> {
      connecting = null;
      const p = producer;
      producer = null;
      await p?.disconnect();
    },
  };
}
