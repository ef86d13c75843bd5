/**
 * Crash durability: `durability: 'disk'` appends every accepted event to a write-ahead file before accept()
 * returns; a process killed with SIGKILL at any moment loses nothing that it answered, and the next process on
 * the same directory stores what was not stored yet, each event once. `'memory'` (the default) loses what was
 * queued: that is what the test of the default shows, and what the README says.
 */
import { expect } from 'chai';
import { mongo } from 'mongoose';
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { databaseUri } from './support/database.js';
import { sleep, useFixture } from './support/helpers.js';
import { Spool, spooledEvents } from '../lib/store/spool.js';
import { WriteAheadLog } from '../lib/store/wal.js';
import { Writer } from '../lib/store/writer.js';
import type { StoredDoc } from '../lib/core/types.js';

interface Child {
  proc: ChildProcess;
  url: string;
  exited: Promise<NodeJS.Signals | null>;
}

async function startChild(collection: string, spoolDir: string, durability: string, flushIntervalMs: number): Promise<Child> {
  const uri = databaseUri(process.env.KOA_AUDIT_TEST_URI as string, 't_durability');
  const proc = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'support/durable-child.ts'), uri, collection, spoolDir, durability, String(flushIntervalMs)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise<NodeJS.Signals | null>((res) => proc.once('exit', (_code, signal) => res(signal)));
  let out = '';
  const port = await new Promise<number>((resolve, reject) => {
    proc.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /port (\d+)\n/.exec(out);
      if (m !== null) resolve(Number(m[1]));
    });
    proc.once('exit', () => reject(new Error(`child exited early: ${out}`)));
  });
  return { proc, url: `http://127.0.0.1:${port}`, exited };
}

/** Requests from 6 clients until the server dies; resolves with the request ids of the answered ones. */
async function loadUntilKilled(c: Child, prefix: string, killAfterMs: number): Promise<string[]> {
  const answered: string[] = [];
  let n = 0;
  let alive = true;
  const client = async (): Promise<void> => {
    while (alive) {
      const id = `${prefix}-${n++}`;
      try {
        const res = await fetch(`${c.url}/d/${id}`, { headers: { 'x-request-id': id } });
        const body = await res.text();
        if (res.status === 200 && body === 'ok') answered.push(id);
      } catch {
        return; // the server is gone
      }
    }
  };
  const clients = Array.from({ length: 6 }, client);
  await sleep(killAfterMs);
  c.proc.kill('SIGKILL');
  expect(await c.exited).to.equal('SIGKILL');
  alive = false;
  await Promise.all(clients);
  return answered;
}

describe('durability: kill -9 under load', function () {
  this.timeout(120_000);
  const fx = useFixture('durability');

  it("'disk': every event of every answered request is stored exactly once, across two kills at random moments", async () => {
    const dir = fx.tmp();
    const collection = 'disk_kill';
    const answered: string[] = [];
    for (let round = 0; round < 2; round++) {
      // A restart on the same directory: the new process replays what the dead one had not stored.
      const child = await startChild(collection, dir, 'disk', 50);
      answered.push(...(await loadUntilKilled(child, `r${round}`, 500 + Math.floor(Math.random() * 1000))));
    }
    expect(answered.length).to.be.above(10, 'the load reached the server');
    const a = fx.auditor({ collection, spoolDir: dir });
    await a.flush();
    // Each client sent its own X-Request-Id, kept as http.clientRequestId (the request id is the server's).
    const counts = await a.model.aggregate<{ _id: string; n: number }>([{ $match: { kind: 'request' } }, { $group: { _id: '$http.clientRequestId', n: { $sum: 1 } } }]);
    const seen = new Map(counts.map((c) => [c._id, c.n]));
    const missing = answered.filter((id) => !seen.has(id));
    const twice = counts.filter((c) => c.n > 1);
    expect(missing, 'every answered request has its event').to.deep.equal([]);
    expect(twice, 'no event stored twice').to.deep.equal([]);
    expect(readdirSync(dir), 'the write-ahead files were replayed and removed').to.deep.equal([]);
  });

  it("'memory' (the default): a kill -9 loses the events not yet stored (the README's guarantee, shown)", async () => {
    const dir = fx.tmp();
    const collection = 'memory_kill';
    // A long flush interval: the answered requests' events are all still in memory when the process dies.
    const child = await startChild(collection, dir, 'memory', 600_000);
    const answered = await loadUntilKilled(child, 'm', 600);
    expect(answered.length).to.be.above(10);
    const a = fx.auditor({ collection, spoolDir: dir });
    await a.flush();
    expect(await a.model.countDocuments({ kind: 'request' })).to.equal(0, 'all of them lost');
  });

  it('what a dead auditor left in its write-ahead file is replayed by the next one with every field as accepted', async () => {
    const dir = fx.tmp();
    const destination = () => ({ db: fx.conn.name, collection: 'wal_replay' });
    const dead = new Spool(dir, destination);
    const wal = new WriteAheadLog(dead);
    const doc: StoredDoc = {
      _id: new mongo.ObjectId(), ts: new Date(), kind: 'update', outcome: 'success', actor: { id: 'u1', via: 'state' },
      chain: { id: 'chain-9', seq: 3, prev: 'c'.repeat(64), hash: 'd'.repeat(64) }, changes: [{ path: 'a.b', from: 1, to: 2.5 }], meta: { big: 2 ** 40, n: null },
    };
    wal.append(doc);
    const next = new Spool(dir, destination);
    expect(next.files(), 'not while its auditor runs').to.deep.equal([]);
    dead.close(); // the auditor is gone (as after a crash: its process is dead)
    const replayed: StoredDoc[] = [];
    await next.replay(10, async (batch) => {
      replayed.push(...batch);
    });
    expect(replayed).to.deep.equal([doc]);
    next.close();
  });

  it('the write-ahead file holds an event from accept() until it is stored, every field kept (a hash chain too)', async () => {
    const dir = fx.tmp();
    const coll = fx.conn.collection('wal_unit');
    const spool = new Spool(dir, () => ({ db: fx.conn.name, collection: 'wal_unit' }));
    const wal = new WriteAheadLog(spool);
    const w = new Writer(() => coll, {
      batchSize: 500, flushIntervalMs: 600_000, maxQueue: 1000, maxQueueBytes: 1 << 24, onFull: 'drop', spool, wal,
      blockTimeoutMs: 1000, writeConcern: undefined, degradedAfterMs: 1000, retryMinMs: 20, retryMaxMs: 200,
      lossEvent: () => ({ _id: new mongo.ObjectId(), ts: new Date(), kind: 'loss', outcome: 'failure' }),
    }, new EventEmitter());
    const doc: StoredDoc = {
      _id: new mongo.ObjectId(), ts: new Date(), kind: 'request', outcome: 'success', actor: null,
      chain: { id: 'chain-1', seq: 41, prev: 'a'.repeat(64), hash: 'b'.repeat(64) }, meta: { n: 1.5, big: 2 ** 40 },
    };
    w.accept(doc);
    const files = readdirSync(dir);
    expect(files).to.have.length(1);
    expect(files[0]).to.match(/^wal-.*\.bson$/);
    expect(statSync(join(dir, files[0])).mode & 0o777).to.equal(0o600);
    const header = readFileSync(join(dir, files[0]), 'utf8').split('\n')[0];
    expect(JSON.parse(header)).to.deep.equal({ koaAudit: 'wal', v: 2, db: fx.conn.name, collection: 'wal_unit' });
    // One record, read back as the driver would: every field, numbers' types included.
    expect(await spooledEvents(join(dir, files[0]))).to.deep.equal([doc]);
    await w.flush();
    expect(readdirSync(dir), 'removed once stored').to.deep.equal([]);
    const stored = await coll.findOne({ _id: doc._id as mongo.ObjectId });
    expect(stored).to.deep.equal(doc);
    await w.close(1000);
    spool.close();
  });
});
