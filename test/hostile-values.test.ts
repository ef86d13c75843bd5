import { expect } from 'chai';
import Koa from 'koa';
import type { Auditor } from '../lib/index.js';
import { eventually, useFixture, type Fixture } from './support/helpers.js';

/** What the app's own code, upstream of the auditor, and `app.on('error')` saw of a thrown value. */
interface Seen {
  caught: unknown[];
  appErrors: unknown[];
}

/**
 * An app served by `fx`, with `outer` (the app's catch-all, before the auditor), the auditor (when given), and `handler`. The
 * control app without an auditor shows what Koa does on its own.
 */
async function run(fx: Fixture, a: Auditor | null, handler: Koa.Middleware, path: string, setup?: (app: Koa) => void): Promise<{ status: number; seen: Seen }> {
  const seen: Seen = { caught: [], appErrors: [] };
  const app = new Koa();
  app.silent = true;
  app.on('error', (err: unknown) => seen.appErrors.push(err));
  setup?.(app);
  app.use(async (_ctx, next) => {
    try {
      await next();
    } catch (err) {
      seen.caught.push(err);
      throw err;
    }
  });
  if (a !== null) app.use(a({ captureBody: true }));
  app.use(handler);
  const r = await fx.listen(app);
  const res = await fetch(`${r.url}${path}`, { method: 'POST' });
  await res.arrayBuffer();
  return { status: res.status, seen };
}

describe('hostile values the app hands the auditor (issue 11, items 2 and 3)', () => {
  const fx = useFixture('hostile_values');
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => void uncaught.push(err);
  before(() => {
    process.prependListener('uncaughtException', onUncaught);
    fx.cleanup(() => process.off('uncaughtException', onUncaught));
  });
  beforeEach(() => (uncaught.length = 0));

  const eventOf = async (a: Auditor, path: string): Promise<Record<string, unknown>> => {
    const found = await eventually(async () => {
      await a.flush();
      return a.model.findOne({ 'http.path': path }).lean();
    });
    return found as unknown as Record<string, unknown>;
  };

  describe('item 2: nothing thrown out of a listener', () => {
    it('a body whose `pipe` getter throws: the request event is stored with what could be read, nothing crashes', async () => {
      const a = fx.auditor({ flushIntervalMs: 20 });
      const { status } = await run(fx, a, (ctx) => {
        const body = { title: 'readable', get pipe(): unknown { throw new Error('pipe getter says no'); } };
        (ctx.request as { body?: unknown }).body = body;
        ctx.body = 'ok';
      }, '/pipe-getter');
      expect(status).to.equal(200);
      const e = await eventOf(a, '/pipe-getter');
      expect((e.http as { requestBody?: unknown }).requestBody).to.deep.equal({ title: 'readable', pipe: '[Unreadable: pipe getter says no]' });
      expect(uncaught).to.deep.equal([]);
    });

    it('a body that is a Proxy throwing on every trap, and a user whose every getter throws: the event is still stored', async () => {
      const a = fx.auditor({ flushIntervalMs: 20 });
      const hostile = new Proxy({}, {
        get() { throw new Error('get trap'); },
        getPrototypeOf() { throw new Error('prototype trap'); },
        ownKeys() { throw new Error('keys trap'); },
        has() { throw new Error('has trap'); },
        getOwnPropertyDescriptor() { throw new Error('descriptor trap'); },
      });
      const { status } = await run(fx, a, (ctx) => {
        (ctx.request as { body?: unknown }).body = hostile;
        ctx.state.user = hostile;
        ctx.body = 'ok';
      }, '/proxy-body');
      expect(status).to.equal(200);
      const e = await eventOf(a, '/proxy-body');
      expect(e.actor).to.equal(null);
      expect((e.http as { requestBody?: unknown }).requestBody).to.be.a('string').that.matches(/^\[Unreadable/);
      expect(uncaught).to.deep.equal([]);
    });

    it('a user whose id is an object without a prototype: anonymous, not a lost event', async () => {
      const a = fx.auditor({ flushIntervalMs: 20 });
      const id = Object.create(null) as object;
      await run(fx, a, (ctx) => {
        ctx.state.user = { id, get username(): string { throw new Error('no name'); } };
        ctx.body = 'ok';
      }, '/odd-user');
      const e = await eventOf(a, '/odd-user');
      expect(e.actor).to.equal(null);
    });

    it('an auditor without an error listener reports a fault of an unprintable value as a warning, not a crash', async () => {
      const a = fx.auditor();
      const warnings: Error[] = [];
      const onWarning = (w: Error): void => void warnings.push(w);
      process.on('warning', onWarning);
      try {
        // A signal whose input cannot even be printed: recorded as an error of the auditor.
        const input = Object.create(null) as Record<string, unknown>;
        Object.defineProperty(input, 'user', { get() { throw Object.create(null); }, enumerable: true });
        a.signals.emit('login', input as never);
        await a.flush();
        await eventually(() => warnings.some((w) => /koa-audit/.test(w.message)), 2000);
        expect(uncaught).to.deep.equal([]);
      } finally {
        process.off('warning', onWarning);
      }
    });
  });

  describe('item 3: the app sees exactly the error it threw', () => {
    it('an Error whose `message` getter throws reaches the app and app.on("error") untouched; the event keeps what could be read', async () => {
      const a = fx.auditor({ flushIntervalMs: 20 });
      const thrown = new TypeError('original');
      Object.defineProperty(thrown, 'message', { get() { throw new Error('message getter says no'); } });
      (thrown as { status?: number }).status = 418;
      const { status, seen } = await run(fx, a, () => {
        throw thrown;
      }, '/message-getter');
      expect(seen.caught).to.have.length(1);
      expect(seen.caught[0]).to.equal(thrown);
      expect(seen.appErrors[0]).to.equal(thrown);
      expect(status).to.equal(418);
      const e = await eventOf(a, '/message-getter');
      const error = e.error as Record<string, unknown>;
      expect(error).to.include({ name: 'TypeError', status: 418 });
      expect(error.message).to.match(/^\[Unreadable/);
      // V8 builds `stack` lazily from `message`: whatever could be read is kept, a string or nothing.
      if (error.stack !== null) expect(error.stack).to.be.a('string');
      expect(e.outcome).to.equal('failure');
    });

    it('a thrown null-prototype cyclic object reaches the app untouched, as Koa alone would see it, and the event records it', async () => {
      const make = (): Record<string, unknown> => {
        const o = Object.create(null) as Record<string, unknown>;
        o.code = 'E_ODD';
        o.self = o;
        return o;
      };
      const control = await run(fx, null, () => {
        throw make();
      }, '/cyclic');
      const a = fx.auditor({ flushIntervalMs: 20 });
      const thrown = make();
      const { status, seen } = await run(fx, a, () => {
        throw thrown;
      }, '/cyclic');
      expect(seen.caught).to.have.length(1);
      expect(seen.caught[0]).to.equal(thrown);
      expect(status).to.equal(control.status);
      expect(seen.appErrors).to.have.length(1);
      expect(String((seen.appErrors[0] as Error).message)).to.equal(String((control.seen.appErrors[0] as Error).message));
      const e = await eventOf(a, '/cyclic');
      const error = e.error as Record<string, unknown>;
      expect(error).to.include({ name: 'NonError', status: 500 });
      expect(JSON.parse(error.message as string)).to.deep.equal({ code: 'E_ODD', self: '[Circular]' });
    });
  });
});
