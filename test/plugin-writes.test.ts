import { expect } from 'chai';
import mongoose, { mongo, type Connection, type Model } from 'mongoose';
import type { CommandStartedEvent } from 'mongodb';
import { byPath, changeFixture, type ChangeFixture } from './support/changes.js';
import { databaseUri, startDatabase } from './support/database.js';

interface User {
  _id: mongo.ObjectId;
  email: string;
  age?: number;
  grp?: string;
  n?: number;
}

describe('change plugin: only what happened, sessions, bounded reads', () => {
  let conn: Connection;
  let fx: ChangeFixture;
  let User: Model<User>;
  const commands: CommandStartedEvent[] = [];

  before(async () => {
    const base = process.env.KOA_AUDIT_TEST_URI ?? (await startDatabase()).uri;
    // Command monitoring shows what the plugin reads: projections, limits and sessions of its queries.
    conn = await mongoose.createConnection(databaseUri(base, 't_plugin_writes'), { serverSelectionTimeoutMS: 10_000, monitorCommands: true }).asPromise();
    await conn.dropDatabase();
    conn.getClient().on('commandStarted', (e: CommandStartedEvent) => commands.push(e));
    fx = changeFixture(conn);
  });
  beforeEach(async () => {
    User = fx.model<User>({ email: { type: String, required: true, unique: true }, age: { type: Number, min: 0 }, grp: String, n: Number }, { maxDocuments: 5 });
    await User.init();
    commands.length = 0;
  });
  after(async () => {
    await fx.auditor.close({ timeoutMs: 2000 });
    await conn.close();
  });

  const mine = (extra: Record<string, unknown> = {}) => fx.events({ model: User.modelName, ...extra });
  /** The `find` commands sent to the model's collection since the test began. */
  const finds = () => commands.filter((c) => c.commandName === 'find' && c.command.find === User.collection.collectionName);

  describe('a failed write records nothing', () => {
    it('validation error on save and on an update with runValidators', async () => {
      await User.create({ email: 'a@x' });
      const err1 = await new User({ age: 3 }).save().catch((e: unknown) => e);
      expect(err1).to.be.instanceOf(mongoose.Error.ValidationError);
      const err2 = await User.updateOne({ email: 'a@x' }, { $set: { age: -1 } }, { runValidators: true }).catch((e: unknown) => e);
      expect(err2).to.be.instanceOf(mongoose.Error.ValidationError);
      const events = await mine();
      expect(events.map((e) => e.kind)).to.deep.equal(['create']);
    });

    it('duplicate key on create, on an update, and on save', async () => {
      const a = await User.create({ email: 'a@x' });
      await User.create({ email: 'b@x' });
      expect(await User.create({ email: 'a@x' }).catch((e: { code?: number }) => e.code)).to.equal(11000);
      // FerretDB reports a unique violation of an update with code 1, MongoDB with 11000: either way it throws.
      const updateErr = await User.updateOne({ email: 'b@x' }, { $set: { email: 'a@x' } }).then(() => null, (e: Error) => e);
      expect(updateErr?.message).to.match(/duplicate key|UNIQUE constraint/);
      const b = (await User.findOne({ email: 'b@x' }))!;
      b.email = 'a@x';
      expect((await b.save().then(() => null, (e: Error) => e))?.message).to.match(/duplicate key|UNIQUE constraint/);
      const events = await mine();
      expect(events.map((e) => e.kind)).to.deep.equal(['create', 'create']);
      expect(events[0].documentId).to.equal(a._id.toHexString());
      expect((await User.findById(a._id).lean())!.email).to.equal('a@x');
    });

    it('an ordered insertMany that fails part-way records exactly the documents it inserted', async () => {
      await User.create({ email: 'dup@x' });
      const err = await User.insertMany([{ email: 'i1@x' }, { email: 'dup@x' }, { email: 'i3@x' }]).catch((e: unknown) => e);
      expect((err as { code?: number }).code).to.equal(11000);
      const stored = (await User.find().lean()).map((d) => d.email).sort();
      expect(stored).to.deep.equal(['dup@x', 'i1@x']);
      const created = await mine({ kind: 'create', operation: 'insertMany' });
      expect(created.map((e) => byPath(e.changes).find((c) => c.path === 'email')!.to)).to.deep.equal(['i1@x']);
    });

    it('a bulkWrite that fails part-way records exactly what it changed', async () => {
      const a = await User.create({ email: 'a@x', n: 1 });
      await User.create({ email: 'b@x' });
      const err = await User.bulkWrite([
        { updateOne: { filter: { _id: a._id }, update: { $set: { n: 2 } } } },
        { insertOne: { document: { email: 'b@x' } } },
        { updateOne: { filter: { _id: a._id }, update: { $set: { n: 3 } } } },
      ]).catch((e: unknown) => e);
      expect((err as { code?: number }).code).to.equal(11000);
      const events = await mine({ operation: 'bulkWrite' });
      expect(events.map((e) => [e.kind, e.documentId, e.changes])).to.deep.equal([
        ['update', a._id.toHexString(), [{ path: 'n', from: 1, to: 2 }]],
      ]);
    });
  });

  describe('reads', () => {
    it('the pre-image read of an update is limited to the fields the update names', async () => {
      const a = await User.create({ email: 'a@x', age: 1, grp: 'g' });
      commands.length = 0;
      await User.updateOne({ _id: a._id }, { $set: { age: 2 } });
      const [pre, post] = finds();
      expect(pre.command.projection).to.deep.equal({ age: 1 });
      expect(pre.command.limit).to.equal(1);
      expect(post.command.projection).to.deep.equal({ age: 1 });
    });

    it('updateMany reads at most maxDocuments + 1 documents before the write', async () => {
      await User.insertMany([1, 2, 3].map((i) => ({ email: `${i}@x`, grp: 'g' })));
      commands.length = 0;
      await User.updateMany({ grp: 'g' }, { $set: { n: 1 } });
      expect(finds()[0].command.limit).to.equal(6);
      expect(await mine({ kind: 'update' })).to.have.length(3);
    });

    it('a session reaches the pre- and post-image reads', async () => {
      const a = await User.create({ email: 'a@x', n: 1 });
      const session = await conn.startSession();
      try {
        const lsid = session.id!.id.toString('hex');
        const sessionOf = (c: CommandStartedEvent) => (c.command.lsid as { id: mongo.Binary } | undefined)?.id.toString('hex');
        commands.length = 0;
        await User.updateOne({ _id: a._id }, { $inc: { n: 1 } }, { session });
        const loaded = (await User.findById(a._id).session(session))!;
        loaded.n = 10;
        await loaded.save({ session });
        await User.deleteMany({ _id: a._id }, { session });
        const reads = finds();
        expect(reads.length).to.be.at.least(6);
        for (const r of reads) expect(sessionOf(r), JSON.stringify(r.command.filter)).to.equal(lsid);
      } finally {
        await session.endSession();
      }
      expect((await mine()).map((e) => e.kind)).to.deep.equal(['create', 'update', 'update', 'delete']);
    });
  });

  describe('multi-document writes above the cap', () => {
    it('updateMany of maxDocuments documents records each; above it one summary event', async () => {
      await User.insertMany([1, 2, 3, 4, 5].map((i) => ({ email: `five${i}@x`, grp: 'five' })));
      await User.insertMany([1, 2, 3, 4, 5, 6].map((i) => ({ email: `six${i}@x`, grp: 'six' })));
      await User.updateMany({ grp: 'five' }, { $set: { n: 5 } });
      await User.updateMany({ grp: 'six' }, { $set: { n: 6 } });
      const events = await mine({ kind: 'update' });
      expect(events).to.have.length(6);
      expect(events.slice(0, 5).every((e) => e.documentId !== undefined && e.summary === undefined)).to.equal(true);
      const summary = events[5];
      expect(summary.operation).to.equal('updateMany');
      expect(summary).to.not.have.property('documentId');
      expect(summary.changes).to.deep.equal([]);
      expect(summary.summary).to.deep.equal({ filter: { grp: 'six' }, update: { '%24set': { n: 6 } }, matched: 6 });
      expect(await User.countDocuments({ n: 6 })).to.equal(6);
    });

    it('deleteMany above the cap records one summary with the deleted count', async () => {
      await User.insertMany([1, 2, 3, 4, 5, 6, 7].map((i) => ({ email: `d${i}@x`, grp: 'd' })));
      await User.deleteMany({ grp: 'd' });
      const events = await mine({ kind: 'delete' });
      expect(events).to.have.length(1);
      expect(events[0].summary).to.deep.equal({ filter: { grp: 'd' }, update: null, matched: 7 });
    });

    it('bulkWrite updateMany above the cap records one summary', async () => {
      await User.insertMany([1, 2, 3, 4, 5, 6].map((i) => ({ email: `b${i}@x`, grp: 'b' })));
      await User.bulkWrite([{ updateMany: { filter: { grp: 'b' }, update: { $inc: { n: 1 } } } }]);
      const events = await mine({ kind: 'update' });
      expect(events).to.have.length(1);
      expect(events[0]).to.include({ operation: 'bulkWrite' });
      expect(events[0].summary).to.deep.include({ matched: 6, filter: { grp: 'b' } });
    });
  });
});
