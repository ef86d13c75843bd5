/**
 * Receivers the sink tests deliver to, each a server on 127.0.0.1 that can be told to fail: a webhook receiver
 * (Koa, verifying every signature with `verifyWebhook`) and an OTLP/HTTP logs receiver (decoding with the
 * OpenTelemetry protobuf definitions). Both count what they accepted by event id.
 */
import Koa from 'koa';
import { verifyWebhook, WebhookVerificationError, type JsonEvent } from '../../lib/index.js';
import { listen, type Running } from './helpers.js';

export type ReceiverMode = { status: 200 } | { status: number; retryAfter?: string };

export interface Attempt {
  at: number;
  status: number;
  events: number;
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
    r.attempts.push({ at: Date.now(), status: mode.status, events: events.length });
    ctx.status = mode.status;
    if ('retryAfter' in mode && mode.retryAfter !== undefined) ctx.set('Retry-After', mode.retryAfter);
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
