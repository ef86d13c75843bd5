/**
 * `webhookSink`: POSTs batches of events to an HTTPS endpoint, signed the way Stripe and GitHub sign theirs, so
 * that the receiver knows the body came from this app and is not a replay (see `verifyWebhook`).
 *
 *   X-Koa-Audit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the secret>
 *   X-Koa-Audit-Delivery:  a UUID per attempt
 *   Content-Type:          application/x-ndjson (one event per line) or application/json (an array)
 *
 * 2xx is delivered; 408, 425, 429 and 5xx (and network errors, timeouts) are retried, after `Retry-After` when
 * the answer has one; 400, 413 and 422 refuse the events for good (they are recorded as lost); any other status
 * is retried, since a 401 or 404 is more likely a receiver being deployed than a verdict on the events.
 */
import { createHmac, randomUUID } from 'node:crypto';
import http, { type IncomingMessage } from 'node:http';
import https from 'node:https';
import { isIP } from 'node:net';
import type { JsonEvent } from '../core/json.js';
import { bool, checkKnown, fail, nonEmptyString, objectOption, positiveInt } from '../core/options.js';
import { SinkError, type AuditSink } from '../core/sink.js';

export const SIGNATURE_HEADER = 'x-koa-audit-signature';
export const DELIVERY_HEADER = 'x-koa-audit-delivery';

export interface WebhookSinkOptions {
  /** `https:`; `http:` only to a loopback address, or with `allowHttp: true`. */
  url: string;
  /** The shared HMAC secret (at least 16 characters). */
  secret: string;
  /** Extra request headers (an API key, say); they cannot replace the signature or content type. */
  headers?: Record<string, string>;
  /** Events per POST. Default 100. */
  batchSize?: number;
  /** Per request. Default 10,000 ms. */
  timeoutMs?: number;
  /** `'ndjson'` (default) or `'json'` (an array). */
  format?: 'ndjson' | 'json';
  /** Allow a plain-HTTP URL to a non-loopback host. Default false. */
  allowHttp?: boolean;
  /** The sink's name (stats, spool directory, loss events). Default `'webhook'`. */
  name?: string;
  /** Longest backoff between attempts. Default 30,000 ms. */
  retryMaxMs?: number;
  /** For an `https:` URL: a private CA to trust, and a client certificate (mutual TLS). */
  tls?: WebhookTls;
}

/** PEM text or bytes, as `node:tls` takes them. */
export type Pem = string | Buffer;

export interface WebhookTls {
  /** Certificates to trust instead of Node's bundled roots (an internal CA). */
  ca?: Pem | readonly Pem[];
  /** Client certificate chain, with `key`. */
  cert?: Pem;
  /** Client private key, with `cert`. */
  key?: Pem;
  /** Of an encrypted `key`. */
  passphrase?: string;
}

const isPem = (v: unknown): v is Pem => (typeof v === 'string' && v.length > 0) || Buffer.isBuffer(v);

/** The TLS options of `tls`, checked; values are never shown in errors (a key is a secret). */
function tlsOptions(v: unknown, https: boolean): { ca?: Pem | Pem[]; cert?: Pem; key?: Pem; passphrase?: string } {
  const t = objectOption('webhookSink.tls', v);
  checkKnown(t, ['ca', 'cert', 'key', 'passphrase'], 'webhookSink.tls');
  if (Object.keys(t).length > 0 && !https) fail('webhookSink.tls', 'given only with an https: URL', '[tls options]');
  const out: { ca?: Pem | Pem[]; cert?: Pem; key?: Pem; passphrase?: string } = {};
  if (t.ca !== undefined) {
    const list = Array.isArray(t.ca) ? t.ca : [t.ca];
    if (list.length === 0 || !list.every(isPem)) fail('webhookSink.tls.ca', 'PEM text or a Buffer, or a non-empty list of them', '[refused]');
    out.ca = list as Pem[];
  }
  for (const k of ['cert', 'key'] as const) {
    if (t[k] === undefined) continue;
    if (!isPem(t[k])) fail(`webhookSink.tls.${k}`, 'PEM text or a Buffer', '[refused]');
    out[k] = t[k];
  }
  if ((out.cert === undefined) !== (out.key === undefined)) fail('webhookSink.tls', 'both cert and key, or neither', '[one of them]');
  if (t.passphrase !== undefined) {
    if (typeof t.passphrase !== 'string') fail('webhookSink.tls.passphrase', 'a string', '[refused]');
    out.passphrase = t.passphrase;
  }
  return out;
}

const PERMANENT = new Set([400, 413, 422]);
const OWN_HEADERS = new Set(['content-type', SIGNATURE_HEADER, DELIVERY_HEADER, 'content-length']);

function isLoopback(hostname: string): boolean {
  const h = hostname.startsWith('[') ? hostname.slice(1, -1) : hostname;
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return h === '::1';
}

/** Seconds or an HTTP date, in ms from now; undefined when absent or unreadable. */
export function retryAfterMs(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value.trim() === '') return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The signature header's value for `body` at `timestamp` (unix seconds). */
export function signWebhook(body: string | Buffer, secret: string, timestamp: number): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

export function webhookSink(options: WebhookSinkOptions): AuditSink {
  const o = objectOption('webhookSink', options);
  checkKnown(o, ['url', 'secret', 'headers', 'batchSize', 'timeoutMs', 'format', 'allowHttp', 'name', 'retryMaxMs', 'tls'], 'webhookSink');
  const urlText = nonEmptyString('webhookSink.url', o.url, '');
  let url: URL;
  try {
    url = new URL(urlText);
  } catch {
    fail('webhookSink.url', 'an absolute URL', urlText);
  }
  const allowHttp = bool('webhookSink.allowHttp', o.allowHttp, false);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && (allowHttp || isLoopback(url.hostname)))) {
    fail('webhookSink.url', 'an https: URL (http: only to a loopback address, or with allowHttp: true)', urlText);
  }
  if (url.username !== '' || url.password !== '') fail('webhookSink.url', 'a URL without credentials (use headers)', '[a URL with credentials]');
  if (typeof o.secret !== 'string' || o.secret.length < 16) fail('webhookSink.secret', 'a string of at least 16 characters', typeof o.secret === 'string' ? '[too short]' : o.secret);
  const secret = o.secret;
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(objectOption('webhookSink.headers', o.headers))) {
    if (typeof v !== 'string') fail(`webhookSink.headers.${k}`, 'a string', v);
    if (OWN_HEADERS.has(k.toLowerCase())) fail(`webhookSink.headers.${k}`, 'a header the sink does not set itself', k);
    try {
      http.validateHeaderName(k);
      http.validateHeaderValue(k, v);
    } catch {
      fail(`webhookSink.headers.${k}`, 'a valid HTTP header name and value (no CR, LF or other control characters)', '[refused]');
    }
    headers[k] = v;
  }
  const format = o.format ?? 'ndjson';
  if (format !== 'ndjson' && format !== 'json') fail('webhookSink.format', "'ndjson' or 'json'", format);
  const timeoutMs = positiveInt('webhookSink.timeoutMs', o.timeoutMs, 10_000);
  const contentType = format === 'ndjson' ? 'application/x-ndjson' : 'application/json';
  const shown = `${url.origin}${url.pathname}`; // never the query string: it may carry a token
  // node:http rather than fetch: a batch costs about a fifth of the CPU (fetch's streams and Headers cost ~9 µs an
  // event at 100 events a POST, as much as the rest of a request's auditing). One socket, kept alive: the relay has
  // one send in flight at a time.
  const secure = url.protocol === 'https:';
  const tls = tlsOptions(o.tls, secure);
  const client = secure ? https : http;
  const agent = secure ? new https.Agent({ keepAlive: true, maxSockets: 1, ...tls }) : new http.Agent({ keepAlive: true, maxSockets: 1 });

  /** One POST; resolves with the answer's status once its body is read (so the socket is reused). */
  const post = (body: Buffer, head: Record<string, string>): Promise<{ status: number; retryAfter: string | null }> =>
    new Promise((resolve, reject) => {
      const failed = (err: Error): void => {
        clearTimeout(timer);
        reject(new SinkError(`webhook ${shown}: ${err.message}`, { cause: err }));
      };
      const req = client.request(url, { method: 'POST', headers: head, agent }, (res: IncomingMessage) => {
        const retryAfter = res.headers['retry-after'] ?? null;
        res.on('error', failed).on('end', () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, retryAfter });
        }).resume();
      });
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs).unref();
      req.on('error', failed).end(body);
    });

  return {
    name: nonEmptyString('webhookSink.name', o.name, 'webhook'),
    batchSize: positiveInt('webhookSink.batchSize', o.batchSize, 100),
    retryMaxMs: positiveInt('webhookSink.retryMaxMs', o.retryMaxMs, 30_000),
    async send(events: readonly JsonEvent[]): Promise<void> {
      const text = format === 'ndjson' ? events.map((e) => `${JSON.stringify(e)}\n`).join('') : JSON.stringify(events);
      const body = Buffer.from(text); // encoded once: signed and sent as these bytes
      const res = await post(body, {
        ...headers,
        'content-type': contentType,
        'content-length': String(body.length),
        [SIGNATURE_HEADER]: signWebhook(body, secret, Math.floor(Date.now() / 1000)),
        [DELIVERY_HEADER]: randomUUID(),
      });
      if (res.status >= 200 && res.status < 300) return;
      // A redirect is not followed: it would carry the signed body somewhere nobody configured.
      throw new SinkError(`webhook ${shown} answered ${res.status}`, {
        permanent: PERMANENT.has(res.status),
        retryAfterMs: retryAfterMs(res.retryAfter),
      });
    },
    async close(): Promise<void> {
      agent.destroy();
    },
  };
}
