/**
 * Delivery under faults, against a real server that this file starts, stops and restarts itself (a private
 * FerretDB on its own port: the shared server of the run is never interrupted).
 */
import { expect } from 'chai';
import mongoose from 'mongoose';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { Auditor, AuditOptions } from '../lib/index.js';
import { spooledEvents } from '../lib/store/spool.js';
import { sleep, useFixture, type Running } from './support/helpers.js';
import { startPrivateServer, type Database } from './support/database.js';

describe('faults: delivery through outages, crashes and shutdown', function () {
  this.timeout(60_000);
  let server: Database;
  // A short server-selection timeout: writes during the outage fail within a second and are retried, instead of
  // hanging for the driver's default 30 s; a heartbeat every half second, so that the driver sees the server go and
  // come back within a second instead of ten.
  const fx = useFixture('faults', {
    connect: async () => {
      server = await startPrivateServer();
      fx.cleanup(() => server.destroy()); // registered first, so run last: after the auditors and the connection
      const conn = await mongoose.createConnection(`${server.uri}faults`, { serverSelectionTimeoutMS: 1000, heartbeatFrequencyMS: 500 }).asPromise();
      await conn.dropDatabase();
      return conn;
    },
  });
  const tmp = fx.tmp;
  const make = (opts: AuditOptions): Auditor => {
    const a = fx.auditor(opts);
    a.on('error', () => {}); // failed writes during the outages are expected; they are retried
    return a;
  };
  const serve = (a: Auditor): Promise<Running> => fx.serve(a);

  afterEach(async () => {
    await server.restart().catch(() => {}); // a failed test must not leave the server down for the next one
  });

  it('a 10 s outage under continuous requests: every request answered, every event stored once, memory bounded', async function () {
    this.timeout(120_000); // 12 s of traffic, then the spool's replay, on a machine that may be busy
    const maxQueue = 100;
    const spoolDir = tmp();
    const a = make({ collection: 'outage', maxQueue, spoolDir, flushIntervalMs: 50, degradedAfterMs: 1000 });
    const signals: string[] = [];
    a.on('degraded', () => signals.push('degraded'));
    a.on('recovered', () => signals.push('recovered'));
    await a.ready();
    const r = await serve(a);

    let sent = 0;
    const failed: number[] = [];
    let maxQueued = 0;
    let running = true;
    const client = async (): Promise<void> => {
      while (running) {
        const res = await fetch(`${r.url}/o/${sent++}`);
        await res.text();
        if (res.status !== 200) failed.push(res.status);
        maxQueued = Math.max(maxQueued, a.stats().queued);
        await sleep(2);
      }
    };
    const clients = [client(), client()];
    await sleep(1000);
    await server.stop();
    const stoppedAt = sent;
    await sleep(10_000);
    const duringOutage = sent - stoppedAt;
    const midStats = a.stats();
    await server.restart();
    await sleep(1000);
    running = false;
    await Promise.all(clients);
    await a.flush();

    const stats = a.stats();
    const events = await a.model.find({ kind: 'request' }, { requestId: 1 }).lean();
    const requestIds = new Set(events.map((e) => e.requestId));
    expect(failed).to.deep.equal([], 'no request failed');
    expect(duringOutage).to.be.above(200, 'requests kept coming during the outage');
    expect(events.length).to.equal(sent, '0 lost');
    expect(requestIds.size).to.equal(sent, '0 duplicates');
    expect(await a.model.countDocuments({ kind: 'loss' })).to.equal(0);
    expect(maxQueued).to.be.at.most(maxQueue, 'memory stayed under the bound');
    expect(midStats.spooled).to.be.above(0, 'the spool took the overflow');
    expect(midStats.degraded).to.equal(true);
    // The outage itself is in the trail too: sys_monitor_disabled and sys_monitor_enabled, one each.
    expect(await a.model.countDocuments({ kind: 'security', 'meta.monitor': 'koa-audit store' })).to.equal(2);
    expect(stats).to.include({ accepted: sent + 2, stored: sent + 2, queued: 0, dropped: 0, degraded: false });
    expect(stats.retried).to.be.above(0);
    expect(signals).to.deep.equal(['degraded', 'recovered']);
    expect(readdirSync(spoolDir)).to.deep.equal([], 'the spool was replayed and emptied');
  });

  it('a process killed with events in its spool: a new auditor on the same directory stores them all, once', async () => {
    const spoolDir = tmp();
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'support/spool-child.ts'), spoolDir, 'crashed', '200', 'faults'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<NodeJS.Signals | null>((res) => child.once('exit', (_code, signal) => res(signal)));
    let out = '';
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve();
      });
      child.once('exit', () => reject(new Error(`child exited early: ${out}`)));
    });
    const spooled = Number(/spooled (\d+)/.exec(out)?.[1]);
    expect(spooled).to.be.at.least(190);
    child.kill('SIGKILL');
    expect(await exited).to.equal('SIGKILL');

    // What the dead process left: the spooled events, by _id.
    const files = readdirSync(spoolDir);
    const ids = (await Promise.all(files.map((f) => spooledEvents(join(spoolDir, f))))).flat().map((d) => String(d._id));
    expect(ids).to.have.length(spooled);

    const a = make({ collection: 'crashed', spoolDir });
    await a.flush();
    const stored = await a.model.find({}, { _id: 1 }).lean();
    expect(stored.map((e) => String(e._id)).sort()).to.deep.equal([...ids].sort(), 'all of them, each once');
    expect(a.stats().stored).to.equal(spooled);
    expect(readdirSync(spoolDir)).to.deep.equal([]);
  });

  it('close() with 5,000 queued events stores all 5,000', async () => {
    const a = make({ collection: 'close_5000', maxQueue: 10_000, spoolDir: tmp(), batchSize: 500 });
    await a.ready();
    const r = await serve(a);
    await server.stop(); // nothing can be written: the events wait in memory
    let next = 0;
    const client = async (): Promise<void> => {
      while (next < 5000) expect((await fetch(`${r.url}/c/${next++}`)).status).to.equal(200);
    };
    await Promise.all(Array.from({ length: 8 }, client));
    await sleep(20);
    expect(a.stats()).to.include({ accepted: 5000, queued: 5000, spooled: 0 });
    await server.restart();
    const result = await a.close({ timeoutMs: 30_000 });
    expect(result).to.deep.equal({ unwritten: 0 });
    expect(await a.model.countDocuments({ kind: 'request' })).to.equal(5000);
    expect(a.stats()).to.include({ stored: 5000, queued: 0 });
    // Held through the outage and retried, the chain is intact, its checkpoints included.
    const verified = await a.verify();
    expect(verified.problems).to.deep.equal([]);
    expect(await a.model.countDocuments({ kind: 'checkpoint' })).to.be.at.least(5);
  });

  it('close() that times out spools what it could not write and says how many; a later auditor stores them', async () => {
    const spoolDir = tmp();
    const a = make({ collection: 'close_timeout', spoolDir, flushIntervalMs: 10 });
    await a.ready();
    const r = await serve(a);
    await server.stop();
    for (let i = 0; i < 30; i++) expect((await fetch(`${r.url}/t/${i}`)).status).to.equal(200);
    await sleep(20);
    const t = Date.now();
    const result = await a.close({ timeoutMs: 500 });
    expect(Date.now() - t).to.be.below(3000);
    expect(result).to.deep.equal({ unwritten: 30 });
    // An event that arrives after close() goes to the spool too.
    expect((await fetch(`${r.url}/late`)).status).to.equal(200);
    await sleep(20);
    // A new auditor made while the store is still away: its flush() waits for the spool it cannot look at yet
    // (it once resolved at once, before the connection came back and the spool was replayed).
    for (let i = 0; i < 150 && fx.conn.readyState === 1; i++) await sleep(100); // the driver's heartbeat notices
    expect(fx.conn.readyState).to.not.equal(1, 'the connection knows the server is gone');
    const b = make({ collection: 'close_timeout', spoolDir });
    const flushed = b.flush();
    await server.restart();
    await flushed;
    const paths = (await b.model.find({ kind: 'request' }).lean()).map((e) => e.http?.path);
    expect(paths).to.have.length(31);
    expect(new Set(paths).size).to.equal(31);
  });
});
