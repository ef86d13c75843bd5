/** Array element diffs, revert and restore (issue 15), against the real test database. */
import { expect } from 'chai';
import { mongo, type Model } from 'mongoose';
import { RevertConflictError, RevertRefusedError } from '../lib/index.js';
import type { AuditEvent } from '../lib/core/types.js';
import { changeFixture, type ChangeFixture } from './support/changes.js';
import { useFixture } from './support/helpers.js';

interface Item {
  _id?: mongo.ObjectId;
  name: string;
  qty: number;
}
interface Doc {
  _id: mongo.ObjectId;
  title?: string;
  tags?: string[];
  refs?: mongo.ObjectId[];
  items?: Item[];
  password?: string;
  address?: { city?: string };
}

describe('array element diffs, revert and restore', () => {
  const f = useFixture('revert');
  let fx: ChangeFixture;
  let M: Model<Doc>;
  before(() => {
    fx = changeFixture(f, { collection: 'rev_events' });
  });
  beforeEach(() => {
    M = fx.model<Doc>({ title: String, tags: [String], refs: [mongo.ObjectId], items: [{ name: String, qty: Number }], password: String, address: { city: String } });
  });
  const lastUpdate = async (): Promise<AuditEvent> => (await fx.events({ model: M.modelName, kind: 'update' })).at(-1) as AuditEvent;

  describe('arrays element by element', () => {
    it('adding one tag to a 500-element array stores one element, not the array twice; versionAt rebuilds it', async () => {
      const tags = Array.from({ length: 500 }, (_, i) => `t${i}`);
      const d = await M.create({ tags });
      const t1 = new Date();
      await new Promise((r) => setTimeout(r, 5));
      await M.updateOne({ _id: d._id }, { $push: { tags: 'new' } });
      await M.updateOne({ _id: d._id }, { $pull: { tags: 't7' } });
      const events = await fx.events({ model: M.modelName, kind: 'update' });
      expect(events[0].changes).to.deep.equal([{ path: 'tags', added: ['new'], removed: [] }]);
      expect(events[1].changes).to.deep.equal([{ path: 'tags', added: [], removed: ['t7'] }]);
      expect(JSON.stringify(events[0]).length).to.be.below(2000);
      const now = await fx.auditor.versionAt(M.modelName, d._id, new Date(Date.now() + 1000));
      expect(now?.tags).to.deep.equal((await M.findById(d._id).lean())!.tags);
      expect((await fx.auditor.versionAt(M.modelName, d._id, t1))?.tags).to.deep.equal(tags);
    });

    it('ObjectId arrays carry hex elements; a reorder of a long array keeps from/to so the rebuild is exact', async () => {
      const refs = Array.from({ length: 30 }, () => new mongo.ObjectId());
      const d = await M.create({ refs });
      const extra = new mongo.ObjectId();
      await M.updateOne({ _id: d._id }, { $addToSet: { refs: extra } });
      expect((await lastUpdate()).changes).to.deep.equal([{ path: 'refs', added: [extra.toHexString()], removed: [] }]);
      await M.updateOne({ _id: d._id }, { $set: { refs: [...refs].reverse() } });
      const c = (await lastUpdate()).changes![0];
      expect(c).to.include.keys('from', 'to');
      expect((await fx.auditor.versionAt(M.modelName, d._id, new Date(Date.now() + 1000)))?.refs).to.deep.equal([...refs].reverse().map((r) => r.toHexString()));
    });

    it('subdocuments with _id diff per element: items.<id>.qty, added and removed elements; versionAt rebuilds', async () => {
      const d = await M.create({ items: [{ name: 'a', qty: 1 }, { name: 'b', qty: 2 }] });
      const [a, b] = d.items!.map((i) => i._id!.toHexString());
      await M.updateOne({ _id: d._id }, { $set: { 'items.1.qty': 5 } });
      expect((await lastUpdate()).changes).to.deep.equal([{ path: `items.${b}.qty`, from: 2, to: 5 }]);
      // (a $set of the kept elements: FerretDB does not apply $pull with a condition)
      await M.updateOne({ _id: d._id }, { $set: { items: [{ _id: new mongo.ObjectId(b), name: 'b', qty: 5 }] } });
      expect((await lastUpdate()).changes).to.deep.equal([{ path: `items.${a}`, from: { name: 'a', qty: 1, _id: a }, to: null }]);
      await M.updateOne({ _id: d._id }, { $push: { items: { name: 'c', qty: 3 } } });
      const added = (await lastUpdate()).changes!;
      expect(added).to.have.length(1);
      expect(added[0].path).to.match(/^items\.[0-9a-f]{24}$/);
      const rebuilt = await fx.auditor.versionAt(M.modelName, d._id, new Date(Date.now() + 1000));
      const stored = JSON.parse(JSON.stringify((await M.findById(d._id).lean())!.items));
      expect(rebuilt?.items).to.deep.equal(stored);
    });
  });

  describe('revert', () => {
    it('an update: puts back the from values, through the model, audited with meta.revertOf and the reason', async () => {
      const d = await M.create({ title: 'one', address: { city: 'Lyon' }, tags: ['a'] });
      await M.updateOne({ _id: d._id }, { $set: { title: 'two', 'address.city': 'Paris' }, $push: { tags: 'b' } });
      const ev = await lastUpdate();
      const res = await fx.auditor.revert(String(ev._id), { reason: 'undo ticket 9' });
      expect(res.action).to.equal('update');
      const now = (await M.findById(d._id).lean())!;
      expect([now.title, now.address?.city, now.tags]).to.deep.equal(['one', 'Lyon', ['a']]);
      const undo = await lastUpdate();
      expect(undo.reason).to.equal('undo ticket 9');
      expect(undo.meta).to.deep.equal({ revertOf: String(ev._id) });
      expect(undo.changes?.map((c) => c.path).sort()).to.deep.equal(['address.city', 'tags', 'title']);
    });

    it('a subdocument element field and a long array are reverted element by element', async () => {
      const d = await M.create({ items: [{ name: 'a', qty: 1 }], tags: Array.from({ length: 40 }, (_, i) => `t${i}`) });
      await M.updateOne({ _id: d._id }, { $set: { 'items.0.qty': 7 }, $push: { tags: 'x' } });
      await fx.auditor.revert(String((await lastUpdate())._id));
      const now = (await M.findById(d._id).lean())!;
      expect(now.items![0].qty).to.equal(1);
      expect(now.tags).to.have.length(40).and.not.include('x');
    });

    it('a delete: re-inserts the removed document; a create: deletes it', async () => {
      const d = await M.create({ title: 'gone', tags: ['k'] });
      await M.deleteOne({ _id: d._id });
      const del = (await fx.events({ model: M.modelName, kind: 'delete' })).at(-1)!;
      expect((await fx.auditor.revert(String(del._id), { reason: 'restore' })).action).to.equal('create');
      const back = (await M.findById(d._id).lean())!;
      expect([back.title, back.tags]).to.deep.equal(['gone', ['k']]);
      const recreated = (await fx.events({ model: M.modelName, kind: 'create' })).at(-1)!;
      expect(recreated.meta).to.deep.equal({ revertOf: String(del._id) });

      const c = await M.create({ title: 'mistake' });
      const created = (await fx.events({ model: M.modelName, kind: 'create', documentId: String(c._id) }))[0];
      expect((await fx.auditor.revert(String(created._id))).action).to.equal('delete');
      expect(await M.findById(c._id)).to.equal(null);
      const deleted = (await fx.events({ model: M.modelName, kind: 'delete', documentId: String(c._id) }))[0];
      expect(deleted.meta).to.deep.equal({ revertOf: String(created._id) });
    });

    it('a conflict: paths changed since are named; force reverts anyway', async () => {
      const d = await M.create({ title: 'one', address: { city: 'Lyon' } });
      await M.updateOne({ _id: d._id }, { $set: { title: 'two', 'address.city': 'Paris' } });
      const ev = await lastUpdate();
      await M.updateOne({ _id: d._id }, { $set: { title: 'three' } });
      const err = await fx.auditor.revert(String(ev._id)).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(RevertConflictError);
      expect((err as RevertConflictError).paths).to.deep.equal(['title']);
      expect((await M.findById(d._id).lean())!.title).to.equal('three');
      await fx.auditor.revert(String(ev._id), { force: true });
      expect((await M.findById(d._id).lean())!.address?.city).to.equal('Lyon');
    });

    it('redacted paths are refused by name; events that are no change are refused', async () => {
      const d = await M.create({ title: 'x', password: 'old' });
      await M.updateOne({ _id: d._id }, { $set: { password: 'new', title: 'y' } });
      const err = await fx.auditor.revert(String((await lastUpdate())._id)).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(RevertRefusedError);
      expect((err as RevertRefusedError).paths).to.deep.equal(['password']);
      expect((await M.findById(d._id).lean())!.title).to.equal('y');
      await fx.auditor.loginFailed({ identifier: 'z', reason: 'bad password' });
      await fx.auditor.flush();
      const login = (await fx.auditor.query({ kind: 'login_failed' })).items[0];
      expect(await fx.auditor.revert(String(login._id)).catch((e: unknown) => e)).to.be.instanceOf(RevertRefusedError);
      expect(await fx.auditor.revert('nope').catch((e: unknown) => e)).to.be.instanceOf(TypeError);
    });
  });

  it('an update recorded without a pre-image (fetchBefore: false) is refused, not turned into unsets', async () => {
    const N = fx.model<{ title?: string }>({ title: String }, { fetchBefore: false });
    const d = await N.create({ title: 'kept' });
    await N.updateOne({ _id: d._id }, { $set: { title: 'changed' } });
    const ev = (await fx.events({ model: N.modelName, kind: 'update' }))[0];
    expect(ev.changes).to.deep.equal([{ path: 'title', from: null, to: 'changed' }]);
    const err = await fx.auditor.revert(String(ev._id)).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(RevertRefusedError);
    expect(String(err)).to.include('fetchBefore: false');
    expect((await N.findById(d._id).lean())!.title).to.equal('changed');
  });

  describe('restore', () => {
    it('writes back the version versionAt rebuilds, audited with meta.restoredTo', async () => {
      const d = await M.create({ title: 'v1', tags: ['a'], address: { city: 'Lyon' } });
      await new Promise((r) => setTimeout(r, 5));
      const at = new Date();
      await new Promise((r) => setTimeout(r, 5));
      await M.updateOne({ _id: d._id }, { $set: { title: 'v2', 'address.city': 'Paris' }, $push: { tags: 'b' } });
      await M.updateOne({ _id: d._id }, { $set: { title: 'v3' } });
      const res = await fx.auditor.restore(M.modelName, d._id, at, { reason: 'roll back' });
      expect(res.action).to.equal('update');
      const now = (await M.findById(d._id).lean())!;
      expect([now.title, now.address?.city, now.tags]).to.deep.equal(['v1', 'Lyon', ['a']]);
      const ev = await lastUpdate();
      expect(ev.reason).to.equal('roll back');
      expect(ev.meta).to.deep.equal({ restoredTo: at.toISOString() });
    });
  });
});
