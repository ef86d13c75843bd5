import { expect } from 'chai';
import mongoose, { mongo, type Model } from 'mongoose';
import { byPath, useChanges, postModel, userModel, type Post, type User } from '../support/changes.js';

describe('changes: save (document saves, Model.create, Model.bulkSave)', () => {
  const fx = useChanges('changes_save');

  describe('creates and updates', () => {
    let Post: Model<Post>;
    beforeEach(() => {
      Post = postModel(fx);
    });
    const mine = (extra: Record<string, unknown> = {}) => fx.events({ model: Post.modelName, ...extra });

    it('save of a new document records a create with every stored field, from null', async () => {
      const p = await new Post({ title: 'a', n: 1 }).save();
      const [e, ...rest] = await mine();
      expect(rest).to.have.length(0);
      expect(e).to.include({ kind: 'create', outcome: 'success', model: Post.modelName, collectionName: Post.collection.collectionName, documentId: p._id.toHexString(), operation: 'save' });
      expect(byPath(e.changes)).to.deep.equal([
        { path: 'n', from: null, to: 1 },
        { path: 'tags', from: null, to: [] },
        { path: 'title', from: null, to: 'a' },
      ]);
      expect(e.actor).to.deep.equal({ id: 'system', via: 'system' });
    });

    it('save of a loaded document records an update of the changed fields only', async () => {
      const p = await Post.create({ title: 'a', n: 1 });
      const loaded = (await Post.findById(p._id))!;
      loaded.title = 'b';
      loaded.n = 1; // same value: not a change
      await loaded.save();
      const events = await mine({ kind: 'update' });
      expect(events).to.have.length(1);
      expect(events[0]).to.include({ operation: 'save', documentId: p._id.toHexString() });
      expect(events[0].changes).to.deep.equal([{ path: 'title', from: 'a', to: 'b' }]);
    });

    it('Model.create records one create per document', async () => {
      const docs = await Post.create([{ title: 'x' }, { title: 'y' }]);
      const events = await mine({ kind: 'create' });
      expect(events.map((e) => e.documentId).sort()).to.deep.equal(docs.map((d) => d._id.toHexString()).sort());
      expect(events.every((e) => e.operation === 'save')).to.equal(true);
    });

    it('timestamps are changes like any other field', async () => {
      const T = fx.model<Post & { createdAt: Date; updatedAt: Date }>({ title: String }, {}, { timestamps: true });
      const a = await T.create({ title: 'a' });
      await new Promise((r) => setTimeout(r, 5));
      await T.updateOne({ _id: a._id }, { $set: { title: 'b' } });
      const after = (await T.findById(a._id).lean())!;
      const [create, update] = await fx.events({ model: T.modelName });
      expect(byPath(create.changes)).to.deep.equal([
        { path: 'createdAt', from: null, to: a.createdAt.toISOString() },
        { path: 'title', from: null, to: 'a' },
        { path: 'updatedAt', from: null, to: a.updatedAt.toISOString() },
      ]);
      expect(byPath(update.changes)).to.deep.equal([
        { path: 'title', from: 'a', to: 'b' },
        { path: 'updatedAt', from: a.updatedAt.toISOString(), to: after.updatedAt.toISOString() },
      ]);
    });

  });

  describe('a failed write records nothing', () => {
    let User: Model<User>;
    beforeEach(async () => {
      User = await userModel(fx);
      fx.resetCommands();
    });
    const mine = (extra: Record<string, unknown> = {}) => fx.events({ model: User.modelName, ...extra });

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

  });

});
