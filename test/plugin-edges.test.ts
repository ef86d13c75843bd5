import { expect } from 'chai';
import mongoose, { mongo, type Connection, type Model } from 'mongoose';
import type { CommandStartedEvent } from 'mongodb';
import { byPath, changeFixture, type ChangeFixture } from './support/changes.js';
import { databaseUri, startDatabase } from './support/database.js';

interface Account {
  _id: mongo.ObjectId;
  email: string;
  code?: string;
  age?: number;
}

describe('change plugin: edge paths (select: false, insertMany options, partial bulkWrite, reads saved)', () => {
  let conn: Connection;
  let fx: ChangeFixture;
  const commands: CommandStartedEvent[] = [];

  before(async () => {
    const base = process.env.KOA_AUDIT_TEST_URI ?? (await startDatabase()).uri;
    // Command monitoring shows what the plugin reads, and with which session.
    conn = await mongoose.createConnection(databaseUri(base, 't_plugin_edges'), { serverSelectionTimeoutMS: 10_000, monitorCommands: true }).asPromise();
    await conn.dropDatabase();
    conn.getClient().on('commandStarted', (e: CommandStartedEvent) => commands.push(e));
    fx = changeFixture(conn);
  });
  after(async () => {
    await fx.auditor.close({ timeoutMs: 2000 });
    await conn.close();
  });

  const eventsOf = (m: Model<never> | Model<Account>, extra: Record<string, unknown> = {}) => fx.events({ model: m.modelName, ...extra });
  const findsOn = (m: Model<Account>) => commands.filter((c) => c.commandName === 'find' && c.command.find === m.collection.collectionName);

  describe('fields with select: false', () => {
    let Account: Model<Account>;
    beforeEach(() => {
      Account = fx.model<Account>({ email: { type: String, required: true }, code: { type: String, select: false }, age: Number });
    });

    // (findOneAndReplace takes the same path; FerretDB rejects the `fields` mongoose gives its findAndModify here.)
    it('a replaceOne and a bulkWrite update show no false change of the hidden field', async () => {
      const a = await Account.create({ email: 'a@x', code: 'c1', age: 1 });
      await Account.replaceOne({ email: 'a@x' }, { email: 'a@x', code: 'c1', age: 2 });
      await Account.replaceOne({ email: 'a@x' }, { email: 'a@x', code: 'c1', age: 3 });
      await Account.bulkWrite([{ updateOne: { filter: { email: 'a@x' }, update: { $set: { age: 4 } } } }, { replaceOne: { filter: { email: 'a@x' }, replacement: { email: 'a@x', code: 'c2', age: 4 } } }]);
      const updates = await eventsOf(Account, { kind: 'update', documentId: a._id.toHexString() });
      expect(updates.map((e) => [e.operation, byPath(e.changes)])).to.deep.equal([
        ['replaceOne', [{ path: 'age', from: 1, to: 2 }]],
        ['replaceOne', [{ path: 'age', from: 2, to: 3 }]],
        ['bulkWrite', [{ path: 'age', from: 3, to: 4 }, { path: 'code', from: 'c1', to: 'c2' }]],
      ]);
    });

    it('delete events list the hidden field too, and the app still does not see it', async () => {
      const a = await Account.create({ email: 'd@x', code: 'c1', age: 1 });
      const b = await Account.create({ email: 'e@x', code: 'c2', age: 2 });
      await Account.deleteOne({ email: 'd@x' });
      await Account.bulkWrite([{ deleteOne: { filter: { email: 'e@x' } } }]);
      const [da] = await eventsOf(Account, { kind: 'delete', documentId: a._id.toHexString() });
      const [db] = await eventsOf(Account, { kind: 'delete', documentId: b._id.toHexString() });
      expect(byPath(da.changes)).to.deep.equal([{ path: 'age', from: 1, to: null }, { path: 'code', from: 'c1', to: null }, { path: 'email', from: 'd@x', to: null }]);
      expect(byPath(db.changes)).to.deep.equal([{ path: 'age', from: 2, to: null }, { path: 'code', from: 'c2', to: null }, { path: 'email', from: 'e@x', to: null }]);
      const c = await Account.create({ email: 'f@x', code: 'c3' });
      expect((await Account.findById(c._id).lean())!.code).to.equal(undefined);
    });
  });

  describe('insertMany paths that skip mongoose post middleware', () => {
    it('with populate, the inserted documents are recorded (references as ids)', async () => {
      const Owner = conn.model(`Owner_${Date.now().toString(36)}`, new mongoose.Schema({ name: String }));
      const Pet = fx.model<{ name: string; owner: mongo.ObjectId }>({ name: String, owner: { type: mongoose.Schema.Types.ObjectId, ref: Owner.modelName } });
      const o = await Owner.create({ name: 'ann' });
      const docs = await Pet.insertMany([{ name: 'rex', owner: o._id }], { populate: 'owner' });
      expect((docs[0].owner as unknown as { name: string }).name).to.equal('ann');
      const created = await eventsOf(Pet as unknown as Model<never>, { kind: 'create', operation: 'insertMany' });
      expect(created.map((e) => byPath(e.changes).filter((c) => c.path !== '__v'))).to.deep.equal([
        [{ path: 'name', from: null, to: 'rex' }, { path: 'owner', from: null, to: o._id.toHexString() }],
      ]);
    });

    it('with rawResult in a session, the read-back of the inserted documents runs in that session', async () => {
      const Account = fx.model<Account>({ email: String });
      const session = await conn.startSession();
      try {
        const lsid = session.id!.id.toString('hex');
        commands.length = 0;
        const res = await Account.insertMany([{ email: 'r1@x' }, { email: 'r2@x' }], { rawResult: true, session });
        expect(res.insertedCount).to.equal(2);
        const reads = findsOn(Account);
        expect(reads.length).to.be.at.least(1);
        for (const r of reads) expect((r.command.lsid as { id: mongo.Binary } | undefined)?.id.toString('hex')).to.equal(lsid);
      } finally {
        await session.endSession();
      }
      const created = await eventsOf(Account, { kind: 'create', operation: 'insertMany' });
      expect(created.map((e) => byPath(e.changes).find((c) => c.path === 'email')!.to).sort()).to.deep.equal(['r1@x', 'r2@x']);
    });
  });

  describe('a bulkWrite that fails part-way', () => {
    let Account: Model<Account>;
    beforeEach(async () => {
      Account = fx.model<Account>({ email: { type: String, unique: true }, age: Number }, { maxDocuments: 2 });
      await Account.init();
      await Account.insertMany([1, 2, 3].map((i) => ({ email: `s${i}@x`, age: 0 })));
    });
    const ops = (): mongoose.AnyBulkWriteOperation<Account>[] => [
      { updateMany: { filter: { age: { $gte: 0 } }, update: { $inc: { age: 1 } } } },
      { insertOne: { document: { email: 's1@x' } as Account } },
      { deleteMany: { filter: { age: { $gte: 0 } } } },
    ];

    it('ordered: the summary of the operation before the failure is recorded, none after it', async () => {
      const err = await Account.bulkWrite(ops()).catch((e: unknown) => e);
      expect((err as { code?: number }).code).to.equal(11000);
      const summaries = await eventsOf(Account, { operation: 'bulkWrite' });
      expect(summaries.map((e) => [e.kind, e.summary?.matched])).to.deep.equal([['update', 3]]);
      expect(await Account.countDocuments()).to.equal(3);
    });

    it('unordered: the summaries of every operation that ran are recorded', async () => {
      const err = await Account.bulkWrite(ops(), { ordered: false }).catch((e: unknown) => e);
      expect((err as { code?: number }).code).to.equal(11000);
      expect(await Account.countDocuments()).to.equal(0);
      const summaries = await eventsOf(Account, { operation: 'bulkWrite' });
      expect(summaries.map((e) => [e.kind, e.summary?.matched]).sort()).to.deep.equal([['delete', 3], ['update', 3]]);
    });
  });

  describe('reads saved', () => {
    it('a deleteOne by a plain _id that deleted it reads nothing after the write', async () => {
      const Account = fx.model<Account>({ email: String, age: Number });
      const a = await Account.create({ email: 'x@x', age: 1 });
      commands.length = 0;
      await Account.deleteOne({ _id: a._id });
      expect(findsOn(Account)).to.have.length(1); // the pre-image
      const [e] = await eventsOf(Account, { kind: 'delete' });
      expect(e.documentId).to.equal(a._id.toHexString());
      expect(byPath(e.changes)).to.deep.equal([{ path: 'age', from: 1, to: null }, { path: 'email', from: 'x@x', to: null }]);
    });

    it('an upsert with update operators reads the created document once, whole', async () => {
      const Account = fx.model<Account>({ email: String, age: Number });
      commands.length = 0;
      await Account.updateOne({ email: 'u@x' }, { $set: { age: 5 } }, { upsert: true });
      const reads = findsOn(Account);
      expect(reads).to.have.length(2); // the pre-image (none found), then the created document
      expect(reads[1].command.projection).to.deep.equal({ __v: 0 });
      const [e] = await eventsOf(Account, { kind: 'create' });
      expect(byPath(e.changes)).to.deep.equal([{ path: 'age', from: null, to: 5 }, { path: 'email', from: null, to: 'u@x' }]);
    });
  });

  it("insertMany under onFull: 'block' waits for room before writing, and writes nothing when none comes", async () => {
    const blocking = changeFixture(conn, { collection: 'edges_block', onFull: 'block', maxQueue: 1, batchSize: 1000, flushIntervalMs: 600_000, blockTimeoutMs: 200 });
    try {
      const M = blocking.model<Account>({ email: String });
      await M.create({ email: 'first@x' }); // its event fills the queue, which is not flushed meanwhile
      const err = await M.insertMany([{ email: 'i1@x' }, { email: 'i2@x' }]).then(() => null, (e: Error) => e);
      expect(err?.name).to.equal('AuditUnavailableError');
      expect(await M.countDocuments()).to.equal(1);
    } finally {
      await blocking.auditor.close({ timeoutMs: 2000 });
    }
  });
});
