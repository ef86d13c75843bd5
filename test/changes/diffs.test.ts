import { expect } from 'chai';
import { mongo, Schema, type Model } from 'mongoose';
import { diffDocuments, pathFilter, sameValue } from '../../lib/changes/diff.js';
import { createRedactor } from '../../lib/core/redact.js';
import { DEFAULT_LIMITS } from '../../lib/core/safe.js';
import { byPath, useChanges } from '../support/changes.js';
import { serverKind } from '../support/helpers.js';

interface Item {
  name: string;
  qty: number;
}

interface Doc {
  _id: mongo.ObjectId;
  title?: string;
  n?: number;
  tags?: string[];
  address?: { city?: string; zip?: string };
  meta?: Record<string, unknown>;
  when?: Date;
  ref?: mongo.ObjectId;
  blob?: Buffer;
  items?: Item[];
}

describe('changes: diffs from real states', () => {
  const fx = useChanges('changes_diffs');
  let M: Model<Doc>;

  beforeEach(() => {
    M = fx.model<Doc>({
      title: String,
      n: Number,
      tags: [String],
      address: { city: String, zip: String },
      meta: Schema.Types.Mixed,
      when: Date,
      ref: Schema.Types.ObjectId,
      blob: Buffer,
      items: [new Schema<Item>({ name: String, qty: Number })],
    });
  });

  /** The changes of the one update event of `id`. */
  async function updateOf(id: mongo.ObjectId): Promise<unknown[]> {
    const events = await fx.events({ model: M.modelName, documentId: id.toHexString(), kind: 'update' });
    expect(events, 'exactly one update event').to.have.length(1);
    return byPath(events[0].changes);
  }

  it('$inc yields the true before and after values', async () => {
    const d = await M.create({ n: 1 });
    await M.updateOne({ _id: d._id }, { $inc: { n: 5 } });
    expect(await updateOf(d._id)).to.deep.equal([{ path: 'n', from: 1, to: 6 }]);
  });

  it('$push on a small array of scalars records the added element, and the arrays before and after', async () => {
    const d = await M.create({ tags: ['a'] });
    await M.updateOne({ _id: d._id }, { $push: { tags: 'b' } });
    expect(await updateOf(d._id)).to.deep.equal([{ path: 'tags', added: ['b'], removed: [], from: ['a'], to: ['a', 'b'] }]);
  });

  it('$unset records the removed value, to null', async () => {
    const d = await M.create({ title: 't', n: 3 });
    await M.updateOne({ _id: d._id }, { $unset: { n: 1 } });
    expect(await updateOf(d._id)).to.deep.equal([{ path: 'n', from: 3, to: null }]);
  });

  it('$set on a nested path lists only that path, dot-joined', async () => {
    const d = await M.create({ address: { city: 'Lyon', zip: '69000' } });
    await M.updateOne({ _id: d._id }, { $set: { 'address.city': 'Paris' } });
    expect(await updateOf(d._id)).to.deep.equal([{ path: 'address.city', from: 'Lyon', to: 'Paris' }]);
  });

  it('deeply nested Mixed values are walked; a new embedded key is listed from null', async () => {
    const d = await M.create({ meta: { a: { b: 1 } } });
    await M.updateOne({ _id: d._id }, { $set: { 'meta.a.b': 2, 'meta.c': 'x' } });
    expect(await updateOf(d._id)).to.deep.equal([
      { path: 'meta.a.b', from: 1, to: 2 },
      { path: 'meta.c', from: null, to: 'x' },
    ]);
  });

  it('an array element update ($inc on items.0.qty) records the element\'s field by its _id', async () => {
    const d = await M.create({ items: [{ name: 'x', qty: 1 }] });
    const itemId = d.items![0] as unknown as { _id: mongo.ObjectId };
    await M.updateOne({ _id: d._id }, { $inc: { 'items.0.qty': 2 } });
    expect(await updateOf(d._id)).to.deep.equal([{ path: `items.${itemId._id.toHexString()}.qty`, from: 1, to: 3 }]);
  });

  it('values equal by value are not changes: a Date, an ObjectId, an embedded document in another key order', async () => {
    const ref = new mongo.ObjectId();
    const when = new Date('2024-05-01T10:00:00Z');
    const d = await M.create({ when, ref, meta: { a: 1, b: { c: 2, d: 3 } } });
    await M.updateOne({ _id: d._id }, { $set: { when: new Date(when.getTime()), ref: ref.toHexString(), meta: { b: { d: 3, c: 2 }, a: 1 } } });
    const loaded = (await M.findById(d._id))!;
    loaded.when = new Date(when.getTime());
    await loaded.save();
    expect(await fx.events({ model: M.modelName, kind: 'update' })).to.have.length(0);
  });

  it('values are stored in their JSON meaning: dates ISO, ObjectIds hex, Buffers base64', async () => {
    const ref = new mongo.ObjectId();
    const ref2 = new mongo.ObjectId();
    const d = await M.create({ when: new Date('2024-01-01T00:00:00Z'), ref, blob: Buffer.from('hello') });
    const [create] = await fx.events({ model: M.modelName, kind: 'create' });
    expect(byPath(create.changes)).to.deep.equal([
      { path: 'blob', from: null, to: Buffer.from('hello').toString('base64') },
      { path: 'items', from: null, to: [] },
      { path: 'ref', from: null, to: ref.toHexString() },
      { path: 'tags', from: null, to: [] },
      { path: 'when', from: null, to: '2024-01-01T00:00:00.000Z' },
    ]);
    await M.updateOne({ _id: d._id }, { $set: { when: new Date('2025-02-03T04:05:06Z'), ref: ref2, blob: Buffer.from('bye') } });
    expect(await updateOf(d._id)).to.deep.equal([
      { path: 'blob', from: Buffer.from('hello').toString('base64'), to: Buffer.from('bye').toString('base64') },
      { path: 'ref', from: ref.toHexString(), to: ref2.toHexString() },
      { path: 'when', from: '2024-01-01T00:00:00.000Z', to: '2025-02-03T04:05:06.000Z' },
    ]);
  });

  it('save diffs against the stored state, not the in-memory one (a change made behind mongoose shows in the pre-image)', async () => {
    const d = await M.create({ title: 'a', n: 1 });
    const loaded = (await M.findById(d._id))!;
    await M.collection.updateOne({ _id: d._id }, { $set: { title: 'changed behind mongoose' } }); // not audited: raw driver
    loaded.title = 'b';
    await loaded.save();
    expect(await updateOf(d._id)).to.deep.equal([{ path: 'title', from: 'changed behind mongoose', to: 'b' }]);
  });

  it('pipeline updates (updatePipeline: true) yield the true values where the server supports them', async function () {
    const probe = fx.conn.db!.collection('pipeline_probe');
    await probe.insertOne({ x: 1 });
    try {
      await probe.updateOne({}, [{ $set: { x: { $add: ['$x', 1] } } }]);
    } catch (err) {
      console.log(`      (skipped: the ${serverKind()} server rejects pipeline updates: ${(err as Error).message})`);
      this.skip();
    }
    const d = await M.create({ n: 2, title: 'a' });
    await M.updateOne({ _id: d._id }, [{ $set: { n: { $multiply: ['$n', 10] }, title: { $concat: ['$title', '!'] } } }], { updatePipeline: true });
    expect(await updateOf(d._id)).to.deep.equal([
      { path: 'n', from: 2, to: 20 },
      { path: 'title', from: 'a', to: 'a!' },
    ]);
  });

  describe('value comparison (the pure diff)', () => {
    const ctx = { audited: pathFilter(null, []), redactor: createRedactor(), limits: DEFAULT_LIMITS };

    it('Decimal128 compares by value and is stored as its string', () => {
      const D = mongo.Decimal128;
      expect(sameValue(D.fromString('1.50'), D.fromString('1.5'))).to.equal(true);
      expect(sameValue(D.fromString('-0.0'), D.fromString('0'))).to.equal(true);
      expect(sameValue(D.fromString('1.5'), D.fromString('1.51'))).to.equal(false);
      expect(diffDocuments({ price: D.fromString('9.90') }, { price: D.fromString('9.9') }, ctx)).to.deep.equal([]);
      expect(diffDocuments({ price: D.fromString('9.90') }, { price: D.fromString('10.5') }, ctx)).to.deep.equal([{ path: 'price', from: '9.90', to: '10.5' }]);
    });

    it('a Date is not its ISO string, and a number is not its string', () => {
      const d = new Date(0);
      expect(sameValue(d, d.toISOString())).to.equal(false);
      expect(sameValue(1, '1')).to.equal(false);
      expect(sameValue(null, undefined)).to.equal(true);
      expect(sameValue([{ a: 1, b: 2 }], [{ b: 2, a: 1 }])).to.equal(true);
      expect(sameValue([1, 2], [2, 1])).to.equal(false);
    });
  });
});
