/**
 * `verifyWebhook`: what a receiver of `webhookSink` calls first. It checks the HMAC over the exact bytes received
 * (in constant time) and the timestamp (a captured request replayed later is refused), then parses the events.
 * Redeliveries are legitimate (an answer lost on the way back): receivers keep events by `_id`.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import type { JsonEvent } from '../core/json.js';
import { DELIVERY_HEADER, SIGNATURE_HEADER } from './webhook.js';

export type WebhookFailure = 'missing_signature' | 'malformed_signature' | 'bad_signature' | 'expired' | 'too_large' | 'malformed_body';

export class WebhookVerificationError extends Error {
  readonly reason: WebhookFailure;
  /** What a receiver answers: 401, or 413 / 400 for a body too large or not events. */
  readonly status: number;
  readonly expose = true;
  constructor(reason: WebhookFailure, message: string) {
    super(message);
    this.name = 'WebhookVerificationError';
    this.reason = reason;
    this.status = reason === 'too_large' ? 413 : reason === 'malformed_body' ? 400 : 401;
  }
}

export interface VerifyWebhookOptions {
  /** Largest accepted difference between the signature's time and now, in seconds. Default 300. */
  toleranceSec?: number;
  /** Largest body read from a request stream. Default 16 MiB. */
  maxBytes?: number;
  now?: () => number;
}

export interface VerifiedWebhook {
  events: JsonEvent[];
  /** When the sender signed it. */
  signedAt: Date;
  /** The attempt's id (a redelivery has a new one: dedupe events by `_id`). */
  delivery: string | null;
}

/** A Node request (its body not yet read, e.g. Koa's `ctx.req`), or headers with the raw body. */
export type WebhookInput = IncomingMessage | { headers: IncomingHttpHeaders | Headers; body: string | Buffer };

function header(headers: IncomingHttpHeaders | Headers, name: string): string | null {
  if (typeof (headers as Headers).get === 'function') return (headers as Headers).get(name);
  const v = (headers as IncomingHttpHeaders)[name];
  return Array.isArray(v) ? v[0] ?? null : v ?? null;
}

async function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new WebhookVerificationError('too_large', `webhook body larger than ${maxBytes} bytes`);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Verifies a delivery of `webhookSink` and returns its events; throws WebhookVerificationError (`reason`, and a
 * `status` a Koa app can answer with) otherwise. `secret` may be a list, for a rotation.
 */
export async function verifyWebhook(input: WebhookInput, secret: string | readonly string[], options: VerifyWebhookOptions = {}): Promise<VerifiedWebhook> {
  const secrets = typeof secret === 'string' ? [secret] : [...secret];
  if (secrets.length === 0 || secrets.some((s) => typeof s !== 'string' || s === '')) throw new TypeError('koa-audit: verifyWebhook needs the secret');
  const tolerance = options.toleranceSec ?? 300;
  const now = (options.now ?? Date.now)();
  const signature = header(input.headers, SIGNATURE_HEADER);
  if (signature === null) throw new WebhookVerificationError('missing_signature', `no ${SIGNATURE_HEADER} header`);
  let t: number | null = null;
  const macs: Buffer[] = [];
  for (const part of signature.split(',')) {
    const [k, v] = part.trim().split('=', 2);
    if (k === 't' && /^\d{1,12}$/.test(v ?? '')) t = Number(v);
    else if (k === 'v1' && /^[0-9a-f]{64}$/.test(v ?? '')) macs.push(Buffer.from(v, 'hex'));
  }
  if (t === null || macs.length === 0) throw new WebhookVerificationError('malformed_signature', `malformed ${SIGNATURE_HEADER} header`);
  const body = 'body' in input && input.body !== undefined && (typeof input.body === 'string' || Buffer.isBuffer(input.body))
    ? Buffer.from(input.body)
    : await readBody(input as IncomingMessage, options.maxBytes ?? 16 * 1024 * 1024);
  // Every secret against every signature, without an early exit: the time taken says nothing about which matched.
  let ok = false;
  for (const s of secrets) {
    const expected = createHmac('sha256', s).update(`${t}.`).update(body).digest();
    for (const m of macs) ok = timingSafeEqual(expected, m) || ok;
  }
  if (!ok) throw new WebhookVerificationError('bad_signature', 'webhook signature does not match');
  if (Math.abs(now - t * 1000) > tolerance * 1000) throw new WebhookVerificationError('expired', `webhook signed at ${new Date(t * 1000).toISOString()}, outside the tolerance of ${tolerance} s`);
  const text = body.toString('utf8');
  let events: JsonEvent[];
  try {
    const trimmed = text.trimStart();
    events = trimmed.startsWith('[')
      ? (JSON.parse(text) as JsonEvent[])
      : text.split('\n').filter((l) => l.trim() !== '').map((l) => JSON.parse(l) as JsonEvent);
  } catch {
    throw new WebhookVerificationError('malformed_body', 'webhook body is not NDJSON or a JSON array');
  }
  if (!Array.isArray(events) || events.some((e) => e === null || typeof e !== 'object' || typeof e._id !== 'string')) {
    throw new WebhookVerificationError('malformed_body', 'webhook body holds something other than events');
  }
  return { events, signedAt: new Date(t * 1000), delivery: header(input.headers, DELIVERY_HEADER) };
}
