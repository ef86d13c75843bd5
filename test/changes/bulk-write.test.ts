import { expect } from 'chai';
import mongoose, { mongo, type Model } from 'mongoose';
import { byPath, useChanges, postModel, userModel, type Account, type Post, type User } from '../support/changes.js';

describe('changes: bulkWrite', () => {
  const fx = useChanges('changes_bulk_write');
  const eventsOf = (m: { modelName: string }, extra: Record<string, unknown> = {}) => fx.events({ model: m.modelName, ...extra });

  describe('each operation type', () => {
    let Post: Model<Post>;
    beforeEach(() => {
      Post = postModel(fx);
    });
    const mine = (extra: Record<string, unknown> = {}) => fx.events({ model: Post.modelName, ...extra });

    it('bulkWrite records each operation type: insertOne, updateOne, updateMany, replaceOne, deleteOne, deleteMany', async () => {
      const [a, b, c, d, e] = await Post.create([{ title: 'a' }, { title: 'm', n: 1 }, { title: 'm', n: 2 }, { title: 'r' }, { title: 'x' }]);
      const res = await Post.bulkWrite([
        { insertOne: { document: { title: 'new' } } },
        { updateOne: { filter: { _id: a._id }, update: { $set: { title: 'a2' } } } },
        { updateMany: { filter: { title: 'm' }, update: { $inc: { n: 10 } } } },
        { replaceOne: { filter: { title: 'r' }, replacement: { title: 'r2' } } },
        { deleteOne: { filter: { _id: e._id } } },
        { deleteMany: { filter: { title: 'gone' } } },
        { updateOne: { filter: { title: 'up' }, update: { $set: { n: 9 } }, upsert: true } },
      ]);
      expect(res.insertedCount).to.equal(1);
      const events = (await mine()).slice(5);
      const of = (id: unknown) => events.find((x) => x.documentId === String(id));
      expect(events.every((x) => x.operation === 'bulkWrite')).to.equal(true);
      expect(events).to.have.length(7);
      expect(of(a._id)!.changes).to.deep.equal([{ path: 'title', from: 'a', to: 'a2' }]);
      expect(of(b._id)!.changes).to.deep.equal([{ path: 'n', from: 1, to: 11 }]);
      expect(of(c._id)!.changes).to.deep.equal([{ path: 'n', from: 2, to: 12 }]);
      expect(of(d._id)!.kind).to.equal('update');
      expect(of(d._id)!.changes).to.deep.equal([{ path: 'title', from: 'r', to: 'r2' }]);
      expect(of(e._id)!.kind).to.equal('delete');
      const inserted = await Post.findOne({ title: 'new' }).lean();
      expect(of(inserted!._id)!.kind).to.equal('create');
      const upserted = await Post.findOne({ title: 'up' }).lean();
      expect(of(upserted!._id)!.kind).to.equal('create');
      expect(byPath(of(upserted!._id)!.changes)).to.deep.equal([
        { path: 'n', from: null, to: 9 },
        { path: 'title', from: null, to: 'up' },
      ]);
    });

    it('bulkWrite deleteMany records each removed document', async () => {
      const docs = await Post.create([{ title: 'g' }, { title: 'g' }]);
      await Post.bulkWrite([{ deleteMany: { filter: { title: 'g' } } }]);
      const events = await mine({ kind: 'delete' });
      expect(events.map((e) => e.documentId).sort()).to.deep.equal(docs.map((d) => d._id.toHexString()).sort());
      expect(events[0].changes).to.deep.include({ path: 'title', from: 'g', to: null });
    });

  });

  describe('failures and the per-operation cap', () => {
    let User: Model<User>;
    beforeEach(async () => {
      User = await userModel(fx);
      fx.resetCommands();
    });
    const mine = (extra: Record<string, unknown> = {}) => fx.events({ model: User.modelName, ...extra });

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

    it('bulkWrite updateMany above the cap records one summary', async () => {
      await User.insertMany([1, 2, 3, 4, 5, 6].map((i) => ({ email: `b${i}@x`, grp: 'b' })));
      await User.bulkWrite([{ updateMany: { filter: { grp: 'b' }, update: { $inc: { n: 1 } } } }]);
      const events = await mine({ kind: 'update' });
      expect(events).to.have.length(1);
      expect(events[0]).to.include({ operation: 'bulkWrite' });
      expect(events[0].summary).to.deep.include({ matched: 6, filter: { grp: 'b' } });
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

});
