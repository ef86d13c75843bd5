import { expect } from 'chai';
import { mongo } from 'mongoose';
import { spawn } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createAudit, type Auditor } from '../lib/index.js';
import type { StoredDoc } from '../lib/core/types.js';
import { Spool } from '../lib/store/spool.js';
import { defaultSpoolBase, defaultSpoolDir, headerLine, type Destination } from '../lib/store/spool-files.js';
import { APP_EVENTS, useFixture } from './support/helpers.js';

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
    expect(await a.model.countDocuments(APP_EVENTS)).to.equal(3);
    expect((await a.model.find(APP_EVENTS).sort({ ts: 1 }).lean()).map((e) => (e as { n?: number }).n)).to.deep.equal([0, 1, 2]);
    expect(a.stats().stored).to.equal(2, 'the duplicate was counted by whoever stored it first');
    expect(readdirSync(dir)).to.deep.equal([]);
  });

  it('binary records: a record torn mid-write is skipped, the records before it and any appended after it are replayed', async () => {
    const dir = tmp();
    const s = new Spool(dir);
    s.append([doc(0), doc(1)]);
    const file = s.files()[0];
    expect(file).to.match(/\.bson$/);
    // A crash cut the third record short; the same file was then appended to again (its fd still open).
    const whole = readFileSync(file);
    s.append([doc(2)]);
    const withThird = readFileSync(file);
    writeFileSync(file, Buffer.concat([whole, withThird.subarray(whole.length, whole.length + 20)]), { mode: 0o600 });
    appendFileSync(file, withThird.subarray(whole.length)); // doc(2) whole, after the torn copy
    s.append([doc(3)]);
    expect(s.count()).to.equal(4, 'the torn record is not counted');
    const seen: unknown[] = [];
    expect(await s.replay(10, async (batch) => void seen.push(...batch.map((d) => d.n)))).to.equal(4);
    expect(seen).to.deep.equal([0, 1, 2, 3]);
    expect(readdirSync(dir)).to.deep.equal([]);
  });

  it('binary records: a file cut at any byte replays exactly the records that were whole', async () => {
    const dir = tmp();
    const s = new Spool(dir);
    s.append([doc(0), { ...doc(1), meta: { text: 'x'.repeat(3000), list: [1, 2.5, null, 'é'] } }, doc(2)]);
    const file = s.files()[0];
    s.close();
    const full = readFileSync(file);
    const header = full.indexOf(0x0a) + 1;
    const ends: number[] = [];
    let p = header;
    while (p < full.length) {
      p += 4 + full.readInt32LE(p + 4);
      ends.push(p);
    }
    expect(ends).to.have.length(3);
    for (const cut of [header, header + 3, header + 9, ends[0], ends[0] + 1, ends[1] - 1, ends[1], ends[2] - 1, ends[2]]) {
      writeFileSync(file, full.subarray(0, cut), { mode: 0o600 });
      const r = new Spool(dir);
      const seen: StoredDoc[] = [];
      await r.replay(10, async (batch) => void seen.push(...batch));
      expect(seen.map((d) => d.n), `cut at byte ${cut}`).to.deep.equal([0, 1, 2].slice(0, ends.filter((e) => e <= cut).length));
      if (seen.length >= 2) expect((seen[1].meta as { list: unknown[] }).list).to.deep.equal([1, 2.5, null, 'é']);
      r.close();
    }
  });

  it('binary records: an event bigger than the BSON serializer\'s buffer (17 MiB) is kept whole', async () => {
    const dir = tmp();
    const s = new Spool(dir);
    const blob = `${'z'.repeat(17 * 1024 * 1024)}-end`;
    s.append([doc(0), { ...doc(1), meta: { blob } }, doc(2)]);
    const seen: StoredDoc[] = [];
    await s.replay(10, async (batch) => void seen.push(...batch));
    expect(seen.map((d) => d.n)).to.deep.equal([0, 1, 2]);
    expect((seen[1].meta as { blob: string }).blob === blob).to.equal(true, 'every byte of it');
  });

  it('the Extended JSON files of an earlier version are still replayed, in order with the binary ones, types intact', async () => {
    const dir = tmp();
    const destination = (): Destination => ({ db: fx.conn.name, collection: 'spool_v1' });
    const docs = [doc(0), doc(1), doc(2)];
    // What an earlier version left: its header (v 1) and canonical Extended JSON lines, under its own name.
    const old = join(dir, `spool-${Date.now().toString().padStart(15, '0')}-000000-01df11e5-999999999.ndjson`);
    writeFileSync(old, headerLine('spool', destination()) + docs.slice(0, 2).map((d) => `${mongo.BSON.EJSON.stringify(d, { relaxed: false })}\n`).join(''), { mode: 0o600 });
    await new Promise((r) => setTimeout(r, 5));
    const later = new Spool(dir, destination);
    later.append(docs.slice(2));
    later.close();
    const a = fx.auditor({ collection: 'spool_v1', spoolDir: dir });
    await a.flush();
    const stored = await a.model.find(APP_EVENTS).sort({ ts: 1 }).lean();
    expect(stored.map((e) => (e as { n?: number }).n)).to.deep.equal([0, 1, 2]);
    expect(stored.map((e) => String(e._id))).to.deep.equal(docs.map((d) => String(d._id)));
    expect(stored[0].ts).to.be.instanceOf(Date);
    expect(readdirSync(dir)).to.deep.equal([]);
  });

  it("the overflow of one turn of the event loop is appended together at its end, counted at once; with durability 'disk', before accept() returns", async () => {
    const dir = tmp();
    const a = fx.auditor({ collection: 'spool_burst', spoolDir: dir, batchSize: 10_000, flushIntervalMs: 600_000, maxQueue: 1 });
    const burst = Array.from({ length: 50 }, (_, i) => a.loginFailed({ identifier: `burst-${i}`, provider: 'local', reason: 'x' }));
    await Promise.all(burst);
    expect(a.stats().spooled).to.equal(49, 'one in the queue, the rest spooled');
    await new Promise((r) => setImmediate(r));
    expect(readdirSync(dir).filter((f) => f.startsWith('spool-'))).to.have.length(1);
    await a.flush();
    expect((await a.model.find(APP_EVENTS).lean()).map((e) => e.identifier).sort()).to.deep.equal(Array.from({ length: 50 }, (_, i) => `burst-${i}`).sort());

    const diskDir = tmp();
    const d = fx.auditor({ collection: 'spool_burst_disk', spoolDir: diskDir, batchSize: 10_000, flushIntervalMs: 600_000, maxQueue: 1, durability: 'disk' });
    await d.loginFailed({ identifier: 'd-0', provider: 'local', reason: 'x' });
    await d.loginFailed({ identifier: 'd-1', provider: 'local', reason: 'x' });
    expect(d.stats().spooled).to.equal(1);
    expect(readdirSync(diskDir).filter((f) => f.startsWith('spool-')), 'on disk already').to.have.length(1);
    await d.flush();
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

describe('spool isolation and trust', () => {
  const fx = useFixture('spool_trust');
  const tmp = fx.tmp;
  const stalled = { batchSize: 10_000, flushIntervalMs: 600_000, maxQueue: 1 } as const;
  const event = (n: number): StoredDoc => ({ _id: new mongo.ObjectId(), ts: new Date(0), kind: 'login', outcome: 'success', actor: { id: 'mallory', via: 'explicit' }, n });

  /** Collects process warnings of one code while `fn` runs (and a turn after it). */
  async function warningsOf(code: string, fn: () => Promise<void> | void): Promise<string[]> {
    const seen: string[] = [];
    const on = (w: Error): void => {
      if ((w as { code?: string }).code === code) seen.push(w.message);
    };
    process.on('warning', on);
    try {
      await fn();
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', on);
    }
    return seen;
  }

  it('two apps, same collection name, two databases, default spool directories: each replays only its own events', async () => {
    const other = await fx.database('spool_trust_b');
    const collection = `iso_${new mongo.ObjectId().toHexString()}`; // unique: the default base directory is shared by every run on this host
    const a = fx.auditor({ connection: fx.conn, collection, spoolDir: undefined, ...stalled });
    const b = fx.auditor({ connection: other, collection, spoolDir: undefined, ...stalled });
    await a.loginFailed({ identifier: 'a-0', provider: 'local', reason: 'x' });
    await a.loginFailed({ identifier: 'a-1', provider: 'local', reason: 'x' });
    await b.loginFailed({ identifier: 'b-0', provider: 'local', reason: 'x' });
    await b.loginFailed({ identifier: 'b-1', provider: 'local', reason: 'x' });
    expect(a.stats().spooled).to.equal(1);
    expect(b.stats().spooled).to.equal(1);
    const dirA = defaultSpoolDir({ db: fx.conn.name, collection });
    const dirB = defaultSpoolDir({ db: other.name, collection });
    expect(dirA).to.not.equal(dirB);
    await new Promise((r) => setImmediate(r)); // the overflow of one turn of the event loop is appended at its end
    expect(readdirSync(dirA)).to.have.length(1);
    expect(statSync(dirA).mode & 0o777).to.equal(0o700, 'directories 0700');
    expect(statSync(join(dirA, readdirSync(dirA)[0])).mode & 0o777).to.equal(0o600, 'files 0600');
    expect(statSync(defaultSpoolBase()).mode & 0o777).to.equal(0o700);
    await a.flush();
    await b.flush();
    expect((await a.model.find(APP_EVENTS).lean()).map((e) => e.identifier).sort()).to.deep.equal(['a-0', 'a-1']);
    expect((await b.model.find(APP_EVENTS).lean()).map((e) => e.identifier).sort()).to.deep.equal(['b-0', 'b-1']);
  });

  it('a spool file of another destination in the directory is left alone and reported once', async () => {
    const dir = tmp();
    const foreign = new Spool(dir, () => ({ db: 'someone_else', collection: 'auditevents' }));
    foreign.append([event(1)]);
    foreign.close();
    const [file] = readdirSync(dir);
    let a: Auditor | undefined;
    const warned = await warningsOf('KOA_AUDIT_SPOOL_REFUSED', async () => {
      a = fx.auditor({ collection: 'foreign_file', spoolDir: dir });
      await a.flush();
      await a.loginFailed({ identifier: 'own', provider: 'local', reason: 'x' });
      await a.flush();
    });
    expect(warned).to.have.length(1, 'reported once');
    expect(warned[0]).to.contain(file).and.contain('someone_else');
    expect(readdirSync(dir)).to.deep.equal([file], 'left alone');
    expect((await (a as Auditor).model.find(APP_EVENTS).lean()).map((e) => e.identifier)).to.deep.equal(['own'], 'never replayed here');
  });

  it('a spool directory other users can write is refused with a clear warning; the file planted there is not replayed', async () => {
    const dir = join(tmp(), 'shared');
    mkdirSync(dir);
    chmodSync(dir, 0o777);
    const planted = join(dir, `spool-${'1'.padStart(15, '0')}-000000-0badc0de-999999.ndjson`);
    writeFileSync(planted, `${headerLine('spool', { db: fx.conn.name, collection: 'planted' })}${JSON.stringify({ _id: { $oid: new mongo.ObjectId().toHexString() }, ts: { $date: '2020-01-01T00:00:00Z' }, kind: 'login', outcome: 'success', actor: { id: 'admin', via: 'explicit' } })}\n`);
    let a: Auditor | undefined;
    const warned = await warningsOf('KOA_AUDIT_SPOOL', () => {
      a = fx.auditor({ collection: 'planted', spoolDir: dir });
    });
    expect(warned).to.have.length(1);
    expect(warned[0]).to.contain(dir).and.contain('can be written by other users').and.contain('777');
    await (a as Auditor).flush();
    expect(await (a as Auditor).model.countDocuments(APP_EVENTS)).to.equal(0, 'the planted login was not replayed');
    expect(existsSync(planted)).to.equal(true);
    expect(() => createAudit({ connection: fx.conn, collection: 'planted', spoolDir: dir, durability: 'disk' })).to.throw(/durability 'disk' needs a spool directory it can trust.*other users/);
  });

  it('a spool file other users can write, or that another user owns, is refused (reported, not replayed)', async function () {
    const dir = tmp();
    const own = (name: string): Spool => {
      const s = new Spool(dir, () => ({ db: fx.conn.name, collection: 'bad_files' }));
      s.append([{ ...event(0), name }]);
      s.close();
      return s;
    };
    own('writable');
    const [writable] = readdirSync(dir);
    chmodSync(join(dir, writable), 0o666);
    let foreignOwned: string | null = null;
    if (process.getuid?.() === 0) {
      await new Promise((r) => setTimeout(r, 2));
      own('chowned');
      foreignOwned = readdirSync(dir).find((f) => f !== writable) as string;
      chownSync(join(dir, foreignOwned), 65534, 65534);
    } else {
      console.log('      (not root: the file owned by another user is not tried; the mode check is)');
    }
    let a: Auditor | undefined;
    const warned = await warningsOf('KOA_AUDIT_SPOOL_REFUSED', async () => {
      a = fx.auditor({ collection: 'bad_files', spoolDir: dir });
      await a.flush();
    });
    expect(await (a as Auditor).model.countDocuments(APP_EVENTS)).to.equal(0);
    expect(warned.some((w) => w.includes(writable) && w.includes('can be written by other users'))).to.equal(true);
    if (foreignOwned !== null) expect(warned.some((w) => w.includes(foreignOwned as string) && w.includes('owned by uid 65534'))).to.equal(true);
    expect(readdirSync(dir)).to.have.length(foreignOwned === null ? 1 : 2);
  });

  it('a spool directory owned by another user is refused', async function () {
    if (process.getuid?.() !== 0) {
      console.log('      (skipped: only root can give a directory to another user)');
      this.skip();
    }
    const dir = join(tmp(), 'theirs');
    mkdirSync(dir, { mode: 0o700 });
    chownSync(dir, 65534, 65534);
    const warned = await warningsOf('KOA_AUDIT_SPOOL', () => {
      fx.auditor({ collection: 'theirs', spoolDir: dir });
    });
    expect(warned).to.have.length(1);
    expect(warned[0]).to.contain('owned by uid 65534');
  });
});
