import { expect } from 'chai';
import mongoose, { mongo, type Model } from 'mongoose';
import { byPath, useChanges, postModel, userModel, type Account, type Post, type User } from '../support/changes.js';

describe('changes: insertMany', () => {
  const fx = useChanges('changes_insert_many');
  const eventsOf = (m: { modelName: string }, extra: Record<string, unknown> = {}) => fx.events({ model: m.modelName, ...extra });

  describe('creates', () => {
    let Post: Model<Post>;
    beforeEach(() => {
      Post = postModel(fx);
    });
    const mine = (extra: Record<string, unknown> = {}) => fx.events({ model: Post.modelName, ...extra });

    it('insertMany records one create per document', async () => {
      const docs = await Post.insertMany([{ title: 'x' }, { title: 'y' }, { title: 'z' }]);
      const events = await mine({ kind: 'create' });
      expect(events).to.have.length(3);
      expect(events.map((e) => e.documentId).sort()).to.deep.equal(docs.map((d) => d._id.toHexString()).sort());
      expect(events[0].operation).to.equal('insertMany');
      expect(events.find((e) => e.documentId === docs[1]._id.toHexString())!.changes).to.deep.include({ path: 'title', from: null, to: 'y' });
    });

    it('insertMany with rawResult, and Model.bulkSave (through its save middleware, once) are audited too', async () => {
      const raw = await Post.insertMany([{ title: 'r1' }, { title: 'r2' }], { rawResult: true });
      expect(raw.insertedCount).to.equal(2);
      const creates = await mine({ kind: 'create', operation: 'insertMany' });
      expect(creates.map((e) => e.documentId).sort()).to.deep.equal(Object.values(raw.insertedIds).map(String).sort());
      expect(byPath(creates[0].changes).map((c) => c.path)).to.deep.equal(['tags', 'title']);

      const docs = await Post.find({ title: { $in: ['r1', 'r2'] } }).sort({ title: 1 });
      docs[0].n = 1;
      docs[1].title = 'r2b';
      await Post.bulkSave(docs);
      const updates = await mine({ kind: 'update' });
      expect(updates.map((e) => [e.operation, e.documentId, e.changes]).sort()).to.deep.equal([
        ['save', docs[0]._id.toHexString(), [{ path: 'n', from: null, to: 1 }]],
        ['save', docs[1]._id.toHexString(), [{ path: 'title', from: 'r2', to: 'r2b' }]],
      ].sort());
    });

  });

  describe('a failed write records nothing', () => {
    let User: Model<User>;
    beforeEach(async () => {
      User = await userModel(fx);
      fx.resetCommands();
    });
    const mine = (extra: Record<string, unknown> = {}) => fx.events({ model: User.modelName, ...extra });

    it('an ordered insertMany that fails part-way records exactly the documents it inserted', async () => {
      await User.create({ email: 'dup@x' });
      const err = await User.insertMany([{ email: 'i1@x' }, { email: 'dup@x' }, { email: 'i3@x' }]).catch((e: unknown) => e);
      expect((err as { code?: number }).code).to.equal(11000);
      const stored = (await User.find().lean()).map((d) => d.email).sort();
      expect(stored).to.deep.equal(['dup@x', 'i1@x']);
      const created = await mine({ kind: 'create', operation: 'insertMany' });
      expect(created.map((e) => byPath(e.changes).find((c) => c.path === 'email')!.to)).to.deep.equal(['i1@x']);
    });

  });

  describe('paths that skip mongoose post middleware', () => {

    it('with populate, the inserted documents are recorded (references as ids)', async () => {
      const Owner = fx.conn.model(`Owner_${Date.now().toString(36)}`, new mongoose.Schema({ name: String }));
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
      const session = await fx.conn.startSession();
      try {
        const lsid = session.id!.id.toString('hex');
        fx.resetCommands();
        const res = await Account.insertMany([{ email: 'r1@x' }, { email: 'r2@x' }], { rawResult: true, session });
        expect(res.insertedCount).to.equal(2);
        const reads = fx.finds(Account);
        expect(reads.length).to.be.at.least(1);
        for (const r of reads) expect((r.command.lsid as { id: mongo.Binary } | undefined)?.id.toString('hex')).to.equal(lsid);
      } finally {
        await session.endSession();
      }
      const created = await eventsOf(Account, { kind: 'create', operation: 'insertMany' });
      expect(created.map((e) => byPath(e.changes).find((c) => c.path === 'email')!.to).sort()).to.deep.equal(['r1@x', 'r2@x']);
    });

  });

  it("insertMany under onFull: 'block' waits for room before writing, and writes nothing when none comes", async () => {
    const blocking = fx.withOptions({ collection: 'edges_block', onFull: 'block', maxQueue: 1, batchSize: 1000, flushIntervalMs: 600_000, blockTimeoutMs: 200 });
    const M = blocking.model<Account>({ email: String });
    await M.create({ email: 'first@x' }); // its event fills the queue, which is not flushed meanwhile
    const err = await M.insertMany([{ email: 'i1@x' }, { email: 'i2@x' }]).then(() => null, (e: Error) => e);
    expect(err?.name).to.equal('AuditUnavailableError');
    expect(await M.countDocuments()).to.equal(1);
  });

});
