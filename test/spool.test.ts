import { expect } from 'chai';
import { mongo } from 'mongoose';
import { spawn } from 'node:child_process';
import { appendFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Auditor } from '../lib/index.js';
import type { StoredDoc } from '../lib/core/types.js';
import { Spool } from '../lib/store/spool.js';
import { headerLine, type Destination } from '../lib/store/spool-files.js';
import { useFixture } from './support/helpers.js';

const doc = (n: number): StoredDoc => ({ _id: new mongo.ObjectId(), ts: new Date(1_700_000_000_000 + n), kind: 'request', outcome: 'success', n });

describe('spool', () => {
  const fx = useFixture('spool');
  const tmp = fx.tmp;

  it('replays every event in order across files, types intact, and removes the files', async () => {
    const dir = tmp();
    const first = new Spool(dir);
    first.append([doc(0), doc(1)]);
    first.append([doc(2)]);
    const second = new Spool(dir); // a second writer (or process) on the same directory: a file of its own
    await new Promise((r) => setTimeout(r, 5)); // a later file name
    second.append([doc(3), doc(4)]);
    expect(first.files()).to.have.length(1, "a live auditor's file is its own");
    second.close(); // gone: its file is anyone's to replay
    expect(first.files()).to.have.length(2);
    expect(first.count()).to.equal(5);
    const seen: StoredDoc[] = [];
    const n = await first.replay(2, async (batch) => {
      expect(batch.length).to.be.at.most(2);
      seen.push(...batch);
    });
    expect(n).to.equal(5);
    expect(seen.map((d) => d.n)).to.deep.equal([0, 1, 2, 3, 4]);
    expect(seen[0]._id).to.be.instanceOf(mongo.ObjectId);
    expect(seen[0].ts).to.be.instanceOf(Date);
    expect(readdirSync(dir)).to.deep.equal([]);
    expect(first.count()).to.equal(0);
  });

  it('skips a line torn by a crash mid-append and keeps the rest of the file', async () => {
    const dir = tmp();
    const s = new Spool(dir);
    s.append([doc(0), doc(1)]);
    appendFileSync(s.files()[0], '{"_id":{"$oid":"65');
    const seen: unknown[] = [];
    await s.replay(10, async (batch) => {
      seen.push(...batch.map((d) => d.n));
    });
    expect(seen).to.deep.equal([0, 1]);
  });

  it('a failing write keeps the file; the next replay delivers all of it, nothing twice in the store', async () => {
    const dir = tmp();
    const s = new Spool(dir);
    s.append([doc(0), doc(1), doc(2), doc(3)]);
    const coll = fx.conn.collection('spool_retry');
    let calls = 0;
    const write = async (batch: StoredDoc[]): Promise<void> => {
      calls++;
      if (calls === 2) throw new Error('store went away');
      await coll.insertMany(batch, { ordered: false }).catch((err: unknown) => {
        if ((err as { code?: number }).code !== 11000) throw err;
      });
    };
    let failed: unknown = null;
    await s.replay(2, write).catch((err: unknown) => {
      failed = err;
    });
    expect(String(failed)).to.contain('store went away');
    expect(s.files()).to.have.length(1, 'kept for the next replay');
    expect(s.files()[0]).to.match(/\.replaying$/, 'claimed while being replayed');
    expect(await s.replay(2, write)).to.equal(4);
    expect(await coll.countDocuments()).to.equal(4);
    expect(s.files()).to.deep.equal([]);
  });

  it('appends that happen during a replay go to a new file, replayed next time', async () => {
    const dir = tmp();
    const s = new Spool(dir);
    s.append([doc(0)]);
    const seen: unknown[] = [];
    await s.replay(10, async (batch) => {
      seen.push(...batch.map((d) => d.n));
      s.append([doc(1)]);
    });
    expect(seen).to.deep.equal([0]);
    expect(s.count()).to.equal(1);
    await s.replay(10, async (batch) => {
      seen.push(...batch.map((d) => d.n));
    });
    expect(seen).to.deep.equal([0, 1]);
  });

  it("leaves alone the file of another process that is still running, and takes it once that process is gone", async () => {
    const dir = tmp();
    const other = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    const gone = new Promise((r) => other.once('exit', r));
    try {
      const name = join(dir, `spool-${Date.now().toString().padStart(15, '0')}-000000-0badc0de-${other.pid}.ndjson`);
      writeFileSync(name, `${headerLine('spool', { db: null, collection: '' })}${JSON.stringify({ _id: { $oid: new mongo.ObjectId().toHexString() }, n: 1 })}\n`, { mode: 0o600 });
      const s = new Spool(dir);
      expect(s.files()).to.deep.equal([], 'it may still be appending');
      other.kill('SIGKILL');
      await gone;
      expect(s.files()).to.deep.equal([name]);
      expect(s.count()).to.equal(1);
    } finally {
      other.kill('SIGKILL');
    }
  });

  it('a new auditor replays what an earlier one left (a claimed file too), each event once', async () => {
    const dir = tmp();
    const destination = (): Destination => ({ db: fx.conn.name, collection: 'spool_leftover' });
    const left = new Spool(dir, destination);
    const docs = [doc(0), doc(1), doc(2)];
    left.append(docs.slice(0, 2));
    renameSync(left.files()[0], `${left.files()[0]}.replaying`); // a replay that crashed half-way
    left.close();
    await new Promise((r) => setTimeout(r, 5));
    const later = new Spool(dir, destination);
    later.append(docs.slice(2));
    later.close();
    // The crashed replay had stored the first event already.
    await fx.conn.collection('spool_leftover').insertOne({ ...docs[0] });
    const a = fx.auditor({ collection: 'spool_leftover', spoolDir: dir });
    await a.flush();
    expect(await a.model.countDocuments()).to.equal(3);
    expect((await a.model.find().sort({ ts: 1 }).lean()).map((e) => (e as { n?: number }).n)).to.deep.equal([0, 1, 2]);
    expect(a.stats().stored).to.equal(2, 'the duplicate was counted by whoever stored it first');
    expect(readdirSync(dir)).to.deep.equal([]);
  });

  it("a spool directory that cannot be written: warns once at start and uses 'block'", async () => {
    const file = join(tmp(), 'not-a-dir');
    writeFileSync(file, 'x');
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w);
    };
    process.on('warning', onWarning);
    let a: Auditor;
    try {
      a = fx.auditor({ collection: 'spool_unwritable', spoolDir: join(file, 'spool'), maxQueue: 1, batchSize: 100, flushIntervalMs: 600_000, blockTimeoutMs: 200 });
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    const ours = warnings.filter((w) => (w as { code?: string }).code === 'KOA_AUDIT_SPOOL');
    expect(ours).to.have.length(1);
    expect(ours[0].message).to.contain('not writable');
    expect(ours[0].message).to.contain("using onFull: 'block'");
    const r = await fx.serve(a);
    expect((await fetch(`${r.url}/one`)).status).to.equal(200);
    expect((await fetch(`${r.url}/two`)).status).to.equal(503, 'queue full, no spool: the request fails closed');
    await a.flush();
    expect((await fetch(`${r.url}/three`)).status).to.equal(200);
  });
});
