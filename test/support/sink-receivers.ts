/**
 * Receivers the sink tests deliver to, each a server on 127.0.0.1 that can be told to fail: a webhook receiver
 * (Koa, verifying every signature with `verifyWebhook`) and an OTLP/HTTP logs receiver (decoding with the
 * OpenTelemetry protobuf definitions). Both count what they accepted by event id.
 */
import Koa from 'koa';
import { verifyWebhook, WebhookVerificationError, type JsonEvent } from '../../lib/index.js';
import { listen, type Running } from './helpers.js';

export type ReceiverMode = { status: number; retryAfter?: string; delayMs?: number; location?: string };

export interface Attempt {
  at: number;
  status: number;
  events: number;
  /** The request's headers (webhook receiver only). */
  headers?: Record<string, string | string[] | undefined>;
}

export interface Receiver {
  url: string;
  /** What the next requests are answered with. */
  mode: ReceiverMode;
  /** Times each event id was accepted (answered 2xx). */
  readonly accepted: Map<string, number>;
  /** Every event accepted, in order. */
  readonly events: JsonEvent[];
  readonly attempts: Attempt[];
  /** Requests refused for a bad or missing signature. */
  readonly refused: string[];
  /** Content types seen. */
  readonly contentTypes: Set<string>;
  close(): Promise<void>;
  /** Stops listening (connections refused) until `start()`, on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

export async function webhookReceiver(secret: string): Promise<Receiver> {
  const r: Receiver = {
    url: '',
    mode: { status: 200 },
    accepted: new Map(),
    events: [],
    attempts: [],
    refused: [],
    contentTypes: new Set(),
    close: async () => {},
    stop: async () => {},
    start: async () => {},
  };
  const app = new Koa();
  app.use(async (ctx) => {
    let events: JsonEvent[];
    try {
      ({ events } = await verifyWebhook(ctx.req, secret));
    } catch (err) {
      if (!(err instanceof WebhookVerificationError)) throw err;
      r.refused.push(err.reason);
      ctx.status = err.status;
      return;
    }
    r.contentTypes.add(String(ctx.get('content-type')));
    const mode = r.mode;
    if (mode.delayMs !== undefined) await new Promise((resolve) => setTimeout(resolve, mode.delayMs));
    r.attempts.push({ at: Date.now(), status: mode.status, events: events.length, headers: { ...ctx.headers } });
    ctx.status = mode.status;
    if (mode.retryAfter !== undefined) ctx.set('Retry-After', mode.retryAfter);
    if (mode.location !== undefined) ctx.set('Location', mode.location);
    if (mode.status >= 300) return;
    for (const e of events) {
      r.accepted.set(e._id, (r.accepted.get(e._id) ?? 0) + 1);
      r.events.push(e);
    }
  });
  let running: Running = await listen(app);
  const port = new URL(running.url).port;
  r.url = `${running.url}/hook`;
  r.close = () => running.close();
  r.stop = () => running.close();
  r.start = async () => {
    const server = app.listen(Number(port), '127.0.0.1');
    await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
    running = {
      url: running.url,
      server,
      close: () => new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
    };
  };
  return r;
}

/** One LogRecord as the OTLP receiver decoded it. */
export interface OtlpRecord {
  attributes: Record<string, string | number | boolean>;
  body: unknown;
  traceId: string;
  spanId: string;
  timeUnixNano: string;
  severityText: string;
  resource: Record<string, string | number | boolean>;
  contentType: string;
}

interface AnyValue {
  stringValue?: string | null;
  boolValue?: boolean | null;
  intValue?: number | { toString(): string } | null;
  doubleValue?: number | null;
  arrayValue?: { values: AnyValue[] } | null;
  kvlistValue?: { values: { key: string; value: AnyValue }[] } | null;
}
interface KeyValue {
  key: string;
  value: AnyValue;
}
interface DecodedRequest {
  resourceLogs: {
    resource?: { attributes: KeyValue[] };
    scopeLogs: {
      logRecords: {
        attributes: KeyValue[];
        body?: AnyValue;
        traceId: Uint8Array;
        spanId: Uint8Array;
        timeUnixNano: number | { toString(): string };
        severityText: string;
      }[];
    }[];
  }[];
}
interface RequestType {
  decode(buf: Uint8Array): DecodedRequest;
  fromObject(o: object): DecodedRequest;
}

/**
 * The OTLP logs request type, from the OpenTelemetry protobuf definitions as generated (protobufjs static code) in
 * @opentelemetry/otlp-transformer 0.52 (installed as the dev dependency `otlp-proto-root`). Those definitions
 * predate the LogRecord's `event_name` field: the event's name is checked through the `event.name` attribute.
 */
function requestType(): RequestType {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const root = require('otlp-proto-root/build/src/generated/root') as {
    opentelemetry: { proto: { collector: { logs: { v1: { ExportLogsServiceRequest: RequestType } } } } };
  };
  return root.opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest;
}

function plain(v: AnyValue | undefined | null): unknown {
  if (v === undefined || v === null) return null;
  if (v.stringValue !== undefined && v.stringValue !== null) return v.stringValue;
  if (v.boolValue !== undefined && v.boolValue !== null) return v.boolValue;
  if (v.intValue !== undefined && v.intValue !== null) return Number(v.intValue.toString());
  if (v.doubleValue !== undefined && v.doubleValue !== null) return v.doubleValue;
  if (v.arrayValue) return v.arrayValue.values.map(plain);
  if (v.kvlistValue) return Object.fromEntries(v.kvlistValue.values.map((kv) => [kv.key, plain(kv.value)]));
  return null;
}

const attrs = (list: KeyValue[] | undefined): Record<string, string | number | boolean> =>
  Object.fromEntries((list ?? []).map((kv) => [kv.key, plain(kv.value) as string | number | boolean]));

/** OTLP/JSON writes trace and span ids as hex, where the proto3 JSON mapping would have base64. */
function hexIdsToBytes(json: { resourceLogs?: { scopeLogs?: { logRecords?: { traceId?: string; spanId?: string }[] }[] }[] }): object {
  for (const rl of json.resourceLogs ?? []) {
    for (const sl of rl.scopeLogs ?? []) {
      for (const r of sl.logRecords ?? []) {
        for (const k of ['traceId', 'spanId'] as const) {
          if (typeof r[k] === 'string') (r as Record<string, unknown>)[k] = Buffer.from(r[k] as string, 'hex').toString('base64');
        }
      }
    }
  }
  return json;
}

export interface OtlpReceiver {
  url: string;
  mode: ReceiverMode;
  /** Times each event (`log.record.uid`) was accepted. */
  readonly accepted: Map<string, number>;
  readonly records: Map<string, OtlpRecord>;
  readonly attempts: Attempt[];
  close(): Promise<void>;
}

/** An OTLP/HTTP logs endpoint (`POST /v1/logs`), protobuf or JSON, decoded with the OpenTelemetry definitions. */
export async function otlpReceiver(): Promise<OtlpReceiver> {
  const Request = requestType();
  const r: OtlpReceiver = { url: '', mode: { status: 200 }, accepted: new Map(), records: new Map(), attempts: [], close: async () => {} };
  const app = new Koa();
  app.use(async (ctx) => {
    if (ctx.method !== 'POST' || ctx.path !== '/v1/logs') {
      ctx.status = 404;
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of ctx.req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks);
    const type = String(ctx.get('content-type'));
    const req = type.startsWith('application/x-protobuf')
      ? Request.decode(raw)
      : Request.fromObject(hexIdsToBytes(JSON.parse(raw.toString('utf8')) as object));
    const mode = r.mode;
    const records: OtlpRecord[] = [];
    for (const rl of req.resourceLogs) {
      const resource = attrs(rl.resource?.attributes);
      for (const sl of rl.scopeLogs) {
        for (const lr of sl.logRecords) {
          records.push({
            attributes: attrs(lr.attributes),
            body: plain(lr.body),
            traceId: Buffer.from(lr.traceId ?? []).toString('hex'),
            spanId: Buffer.from(lr.spanId ?? []).toString('hex'),
            timeUnixNano: lr.timeUnixNano.toString(),
            severityText: lr.severityText,
            resource,
            contentType: type,
          });
        }
      }
    }
    r.attempts.push({ at: Date.now(), status: mode.status, events: records.length });
    ctx.status = mode.status;
    if (mode.status >= 300) return;
    for (const rec of records) {
      const id = String(rec.attributes['log.record.uid']);
      r.accepted.set(id, (r.accepted.get(id) ?? 0) + 1);
      r.records.set(id, rec);
    }
    if (type.startsWith('application/x-protobuf')) {
      ctx.type = 'application/x-protobuf';
      ctx.body = Buffer.alloc(0); // an empty ExportLogsServiceResponse
    } else ctx.body = {};
  });
  const running = await listen(app);
  r.url = `${running.url}/v1/logs`;
  r.close = () => running.close();
  return r;
}
