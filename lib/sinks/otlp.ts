/**
 * `otlpSink`: each event an OpenTelemetry LogRecord, exported over OTLP/HTTP with the official exporters
 * (`@opentelemetry/exporter-logs-otlp-http` for JSON, `@opentelemetry/exporter-logs-otlp-proto` for protobuf),
 * so that any OpenTelemetry Collector can route the trail to Kafka, ClickHouse, Elasticsearch or Splunk.
 *
 * Records are built by `@opentelemetry/sdk-logs` (a LoggerProvider whose only processor hands them to the relay's
 * batch); the SDK's own batching processor is not used, because it drops records when the Collector is away,
 * and here every batch is retried and spooled like any sink's.
 *
 * Attributes follow the semantic conventions where one exists: `event.name` (`koa_audit.<kind>`),
 * `log.record.uid` (the event's `_id`), `http.request.method`, `url.path`, `url.query`, `http.route`,
 * `http.response.status_code`, `client.address`, `user_agent.original`, `user.id`, `user.name`,
 * `exception.type`, `exception.message`; the rest under `koa_audit.*`. The record's trace and span ids are the
 * event's `traceId`/`spanId`. The body is the whole event in its JSON form.
 */
import type { JsonEvent } from '../core/json.js';
import { checkKnown, fail, nonEmptyString, objectOption, positiveInt } from '../core/options.js';
import { SinkError, type AuditSink } from '../core/sink.js';
import { loadOptional } from './optional.js';

export interface OtlpSinkOptions {
  /** The Collector's logs endpoint, e.g. `http://127.0.0.1:4318/v1/logs`. */
  url: string;
  headers?: Record<string, string>;
  /** `'http/protobuf'` (default, the OTLP default) or `'http/json'`. */
  protocol?: 'http/protobuf' | 'http/json';
  /** `service.name` of the resource. Default `'koa-audit'`. */
  serviceName?: string;
  /** Per export, in ms. Default 10,000. */
  timeoutMs?: number;
  /** Records per export. Default 200. */
  batchSize?: number;
  /** The sink's name. Default `'otlp'`. */
  name?: string;
  /** Longest backoff between attempts. Default 30,000 ms. */
  retryMaxMs?: number;
}

type Attr = string | number | boolean;
type SdkLogs = typeof import('@opentelemetry/sdk-logs');
type ApiLogs = typeof import('@opentelemetry/api-logs');
type Api = typeof import('@opentelemetry/api');
type Resources = typeof import('@opentelemetry/resources');
type Exporter = import('@opentelemetry/sdk-logs').LogRecordExporter;
type Readable = import('@opentelemetry/sdk-logs').ReadableLogRecord;

const TRACE_ID = /^[0-9a-f]{32}$/;
const SPAN_ID = /^[0-9a-f]{16}$/;

/** The semantic-convention attributes of an event (only those it has). */
export function otlpAttributes(e: JsonEvent): Record<string, Attr> {
  const a: Record<string, Attr> = {
    'event.name': `koa_audit.${e.kind}`,
    'log.record.uid': e._id,
    'koa_audit.kind': e.kind,
    'koa_audit.outcome': e.outcome,
  };
  const put = (k: string, v: unknown): void => {
    if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') a[k] = v;
  };
  const h = e.http;
  if (h !== undefined) {
    put('http.request.method', h.method);
    put('url.path', h.path);
    if (h.query !== '') put('url.query', h.query);
    put('http.route', h.route);
    put('http.response.status_code', h.status);
    put('koa_audit.http.duration_ms', h.durationMs);
  }
  put('client.address', e.ip);
  put('user_agent.original', e.userAgent);
  put('user.id', e.actor?.id);
  put('user.name', e.actor?.name);
  put('koa_audit.actor.via', e.actor?.via);
  put('koa_audit.request_id', e.requestId);
  put('exception.type', e.error?.name);
  put('exception.message', e.error?.message);
  const x = e as unknown as Record<string, unknown>;
  for (const k of ['model', 'collectionName', 'documentId', 'operation', 'provider', 'identifier', 'reason', 'tenant']) {
    put(`koa_audit.${k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`, x[k]);
  }
  put('koa_audit.on_behalf_of.id', (x.onBehalfOf as { id?: unknown } | undefined)?.id);
  return a;
}

export function otlpSink(options: OtlpSinkOptions): AuditSink {
  const o = objectOption('otlpSink', options);
  checkKnown(o, ['url', 'headers', 'protocol', 'serviceName', 'timeoutMs', 'batchSize', 'name', 'retryMaxMs'], 'otlpSink');
  const url = nonEmptyString('otlpSink.url', o.url, '');
  let shown = '';
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    shown = `${u.origin}${u.pathname}`; // never the query string or credentials
  } catch {
    fail('otlpSink.url', 'an http: or https: URL', url);
  }
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(objectOption('otlpSink.headers', o.headers))) {
    if (typeof v !== 'string') fail(`otlpSink.headers.${k}`, 'a string', v);
    headers[k] = v;
  }
  const protocol = o.protocol ?? 'http/protobuf';
  if (protocol !== 'http/protobuf' && protocol !== 'http/json') fail('otlpSink.protocol', "'http/protobuf' or 'http/json'", protocol);
  const timeoutMillis = positiveInt('otlpSink.timeoutMs', o.timeoutMs, 10_000);

  const forWhat = 'otlpSink';
  const sdk = loadOptional<SdkLogs>('@opentelemetry/sdk-logs', forWhat);
  const apiLogs = loadOptional<ApiLogs>('@opentelemetry/api-logs', forWhat);
  const api = loadOptional<Api>('@opentelemetry/api', forWhat);
  const resources = loadOptional<Resources>('@opentelemetry/resources', forWhat);
  const exporterPackage = protocol === 'http/json' ? '@opentelemetry/exporter-logs-otlp-http' : '@opentelemetry/exporter-logs-otlp-proto';
  const { OTLPLogExporter } = loadOptional<{ OTLPLogExporter: new (config: object) => Exporter }>(exporterPackage, forWhat);
  const exporter = new OTLPLogExporter({ url, headers, timeoutMillis });

  // Records go to whichever batch is being built: emit is synchronous, so nothing else interleaves.
  let building: Readable[] = [];
  const provider = new sdk.LoggerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': nonEmptyString('otlpSink.serviceName', o.serviceName, 'koa-audit') }),
    processors: [{
      onEmit: (record: Readable) => void building.push(record),
      forceFlush: async () => {},
      shutdown: async () => {},
    }],
  });
  const logger = provider.getLogger('koa-audit');

  function toRecords(events: readonly JsonEvent[]): Readable[] {
    building = [];
    for (const e of events) {
      const ts = new Date(e.ts);
      const x = e as unknown as { traceId?: unknown; spanId?: unknown };
      let context = api.ROOT_CONTEXT;
      if (typeof x.traceId === 'string' && TRACE_ID.test(x.traceId)) {
        const spanId = typeof x.spanId === 'string' && SPAN_ID.test(x.spanId) ? x.spanId : '0000000000000000';
        context = api.trace.setSpanContext(context, { traceId: x.traceId, spanId, traceFlags: api.TraceFlags.SAMPLED, isRemote: true });
      }
      const failure = e.outcome === 'failure';
      logger.emit({
        eventName: `koa_audit.${e.kind}`,
        timestamp: Number.isNaN(ts.getTime()) ? undefined : ts,
        severityNumber: failure ? apiLogs.SeverityNumber.WARN : apiLogs.SeverityNumber.INFO,
        severityText: failure ? 'WARN' : 'INFO',
        body: e as unknown as import('@opentelemetry/api-logs').AnyValueMap,
        attributes: otlpAttributes(e),
        context,
      });
    }
    const out = building;
    building = [];
    return out;
  }

  return {
    name: nonEmptyString('otlpSink.name', o.name, 'otlp'),
    batchSize: positiveInt('otlpSink.batchSize', o.batchSize, 200),
    retryMaxMs: positiveInt('otlpSink.retryMaxMs', o.retryMaxMs, 30_000),
    send(events: readonly JsonEvent[]): Promise<void> {
      const records = toRecords(events);
      return new Promise((resolve, reject) => {
        exporter.export(records, (result) => {
          if (result.code === 0) resolve();
          else {
            // The Collector's verdict on the records (400 Bad Request, 413, 422): sending them again cannot help.
            const code = (result.error as { code?: unknown } | undefined)?.code;
            const permanent = code === 400 || code === 413 || code === 422;
            reject(new SinkError(`otlp ${shown}: ${result.error?.message ?? 'export failed'}${typeof code === 'number' ? ` (${code})` : ''}`, { cause: result.error, permanent }));
          }
        });
      });
    },
    async close(): Promise<void> {
      await exporter.shutdown();
      await provider.shutdown();
    },
  };
}
