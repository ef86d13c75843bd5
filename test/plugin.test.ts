import { expect } from 'chai';
import type { Connection, Model } from 'mongoose';
import { mongo } from 'mongoose';
import { byPath, changeFixture, type ChangeFixture } from './support/changes.js';
import { connectTestDb } from './support/helpers.js';

interface Post {
  _id: mongo.ObjectId;
  title: string;
  n?: number;
  tags?: string[];
}

describe('change plugin: every write path', () => {
  let conn: Connection;
  let fx: ChangeFixture;
  let Post: Model<Post>;

  before(async () => {
    conn = await connectTestDb('plugin_ops');
    fx = changeFixture(conn);
  });
  beforeEach(() => {
    Post = fx.model<Post>({ title: { type: String, required: true }, n: Number, tags: [String] });
  });
  after(async () => {
    await fx.auditor.close({ timeoutMs: 2000 });
    await conn.close();
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

  it('insertMany records one create per document', async () => {
    const docs = await Post.insertMany([{ title: 'x' }, { title: 'y' }, { title: 'z' }]);
    const events = await mine({ kind: 'create' });
    expect(events).to.have.length(3);
    expect(events.map((e) => e.documentId).sort()).to.deep.equal(docs.map((d) => d._id.toHexString()).sort());
    expect(events[0].operation).to.equal('insertMany');
    expect(events.find((e) => e.documentId === docs[1]._id.toHexString())!.changes).to.deep.include({ path: 'title', from: null, to: 'y' });
  });

  it('updateOne records the one updated document', async () => {
    const [a] = await Post.create([{ title: 'a', n: 1 }, { title: 'a', n: 2 }]);
    const res = await Post.updateOne({ _id: a._id }, { $set: { title: 'b' } });
    expect(res.modifiedCount).to.equal(1);
    const events = await mine({ kind: 'update' });
    expect(events).to.have.length(1);
    expect(events[0]).to.include({ operation: 'updateOne', documentId: a._id.toHexString() });
    expect(events[0].changes).to.deep.equal([{ path: 'title', from: 'a', to: 'b' }]);
  });

  it('updateMany records every affected document, even when the filter no longer matches after the update', async () => {
    const docs = await Post.create([{ title: 'draft', n: 1 }, { title: 'draft', n: 2 }, { title: 'other', n: 3 }]);
    await Post.updateMany({ title: 'draft' }, { $set: { title: 'published' } });
    const events = await mine({ kind: 'update' });
    expect(events.map((e) => e.documentId).sort()).to.deep.equal([docs[0], docs[1]].map((d) => d._id.toHexString()).sort());
    for (const e of events) {
      expect(e.operation).to.equal('updateMany');
      expect(e.changes).to.deep.equal([{ path: 'title', from: 'draft', to: 'published' }]);
    }
  });

  it('findOneAndUpdate records the update (new or old document returned)', async () => {
    const a = await Post.create({ title: 'a', n: 1 });
    await Post.findOneAndUpdate({ _id: a._id }, { $inc: { n: 5 } });
    await Post.findByIdAndUpdate(a._id, { title: 'c' }, { returnDocument: 'after' });
    const events = await mine({ kind: 'update' });
    expect(events.map((e) => [e.operation, e.changes])).to.deep.equal([
      ['findOneAndUpdate', [{ path: 'n', from: 1, to: 6 }]],
      ['findOneAndUpdate', [{ path: 'title', from: 'a', to: 'c' }]],
    ]);
  });

  it('replaceOne and findOneAndReplace diff the whole document', async () => {
    const a = await Post.create({ title: 'a', n: 1, tags: ['t'] });
    await Post.replaceOne({ _id: a._id }, { title: 'r', n: 1 });
    await Post.findOneAndReplace({ _id: a._id }, { title: 's', n: 2 });
    const events = await mine({ kind: 'update' });
    expect(events).to.have.length(2);
    expect(events[0].operation).to.equal('replaceOne');
    expect(byPath(events[0].changes)).to.deep.equal([
      { path: 'tags', from: ['t'], to: [] },
      { path: 'title', from: 'a', to: 'r' },
    ]);
    expect(events[1].operation).to.equal('findOneAndReplace');
    expect(byPath(events[1].changes)).to.deep.equal([
      { path: 'n', from: 1, to: 2 },
      { path: 'title', from: 'r', to: 's' },
    ]);
  });

  it('deleteOne (query and document), deleteMany and findOneAndDelete record every field, to null', async () => {
    const [a, b, c, d, e] = await Post.create([{ title: 'a', n: 1 }, { title: 'b' }, { title: 'm' }, { title: 'm' }, { title: 'f' }]);
    await Post.deleteOne({ _id: a._id });
    await b.deleteOne();
    await Post.deleteMany({ title: 'm' });
    await Post.findOneAndDelete({ title: 'f' });
    await Post.deleteOne({ title: 'nothing matches' });
    const events = await mine({ kind: 'delete' });
    expect(events.map((x) => x.operation)).to.deep.equal(['deleteOne', 'deleteOne', 'deleteMany', 'deleteMany', 'findOneAndDelete']);
    const ids = events.map((x) => x.documentId);
    const hex = (x: { _id: mongo.ObjectId }) => x._id.toHexString();
    expect(ids.slice(0, 2)).to.deep.equal([hex(a), hex(b)]);
    expect(ids.slice(2, 4).sort()).to.deep.equal([hex(c), hex(d)].sort());
    expect(ids[4]).to.equal(hex(e));
    expect(byPath(events[0].changes)).to.deep.equal([
      { path: 'n', from: 1, to: null },
      { path: 'tags', from: [], to: null },
      { path: 'title', from: 'a', to: null },
    ]);
  });

  it('upserts that insert are creates (updateOne, updateMany, findOneAndUpdate, replaceOne, findOneAndReplace)', async () => {
    const r1 = await Post.updateOne({ title: 'u1' }, { $set: { n: 1 } }, { upsert: true });
    await Post.updateMany({ title: 'u2' }, { $set: { n: 2 } }, { upsert: true });
    const old = await Post.findOneAndUpdate({ title: 'u3' }, { $set: { n: 3 } }, { upsert: true });
    expect(old).to.equal(null);
    await Post.replaceOne({ title: 'u4' }, { title: 'u4', n: 4 }, { upsert: true });
    const replaced = await Post.findOneAndReplace({ title: 'u5' }, { title: 'u5', n: 5 }, { upsert: true, returnDocument: 'after' });
    const events = await mine();
    expect(events.map((e) => [e.kind, e.operation])).to.deep.equal([
      ['create', 'updateOne'], ['create', 'updateMany'], ['create', 'findOneAndUpdate'], ['create', 'replaceOne'], ['create', 'findOneAndReplace'],
    ]);
    expect(events[0].documentId).to.equal(String(r1.upsertedId));
    expect(events[4].documentId).to.equal(replaced!._id.toHexString());
    const stored = await Post.find().lean();
    expect(events.map((e) => e.documentId).sort()).to.deep.equal(stored.map((d) => d._id.toHexString()).sort());
    expect(byPath(events[2].changes)).to.deep.equal([
      { path: 'n', from: null, to: 3 },
      { path: 'title', from: null, to: 'u3' },
    ]);
  });

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

  it('an update that changes nothing records nothing', async () => {
    const a = await Post.create({ title: 'a', n: 1 });
    await Post.updateOne({ _id: a._id }, { $set: { title: 'a', n: 1 } });
    await Post.updateMany({ title: 'nothing' }, { $set: { n: 2 } });
    expect(await mine({ kind: 'update' })).to.have.length(0);
  });

  it('recordNoop: true records an update without changes', async () => {
    const M = fx.model<Post>({ title: String }, { recordNoop: true });
    const a = await M.create({ title: 'a' });
    await M.updateOne({ _id: a._id }, { $set: { title: 'a' } });
    const events = await fx.events({ model: M.modelName, kind: 'update' });
    expect(events).to.have.length(1);
    expect(events[0].changes).to.deep.equal([]);
  });
  it('document updateOne and lean insertMany are audited too', async () => {
    const a = await Post.create({ title: 'a' });
    await a.updateOne({ $set: { title: 'b' } });
    const lean = await Post.insertMany([{ title: 'l1' }, { title: 'l2' }], { lean: true });
    const updates = await mine({ kind: 'update' });
    expect(updates.map((e) => [e.operation, e.documentId, e.changes])).to.deep.equal([
      ['updateOne', a._id.toHexString(), [{ path: 'title', from: 'a', to: 'b' }]],
    ]);
    const creates = await mine({ kind: 'create', operation: 'insertMany' });
    expect(creates.map((e) => e.documentId).sort()).to.deep.equal(lean.map((d) => String(d._id)).sort());
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
  it('a findOneAndUpdate upsert leaves the caller\'s update object as it was', async () => {
    const update = { $set: { n: 7 } };
    await Post.findOneAndUpdate({ title: 'x1' }, update, { upsert: true });
    await Post.findOneAndUpdate({ title: 'x2' }, update, { upsert: true });
    expect(update).to.deep.equal({ $set: { n: 7 } });
    const events = await mine({ kind: 'create' });
    expect(events).to.have.length(2);
    expect(new Set(events.map((e) => e.documentId)).size).to.equal(2);
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
