/** The plugin's `label` option: a readable name of the changed document stored as `documentLabel`. */
import { expect } from 'chai';
import { useChanges } from '../support/changes.js';

describe("change plugin: label (documentLabel)", () => {
  const fx = useChanges('document_label');

  it("label: 'name' stores the document's name on create, save, updateOne, insertMany and delete", async () => {
    const M = fx.model<{ name: string; n?: number }>({ name: String, n: Number }, { label: 'name' });
    const d = await M.create({ name: 'Invoice 42' });
    d.n = 1;
    await d.save();
    await M.updateOne({ _id: d._id }, { $set: { name: 'Invoice 43' } });
    await M.insertMany([{ name: 'Bulk' }]);
    await M.deleteOne({ _id: d._id });
    const events = await fx.events({ model: M.modelName });
    expect(events.map((e) => [e.kind, (e as { documentLabel?: string }).documentLabel])).to.deep.equal([
      ['create', 'Invoice 42'], ['update', 'Invoice 42'], ['update', 'Invoice 43'], ['create', 'Bulk'], ['delete', 'Invoice 43'],
    ]);
  });

  it('a function label; a failing one stores no label and loses no event; a secret path is never stored', async () => {
    const F = fx.model<{ first: string; last: string }>({ first: String, last: String }, { label: (doc) => `${String(doc.first)} ${String(doc.last)}` });
    await F.create({ first: 'Ada', last: 'Lovelace' });
    const Boom = fx.model<{ a: string }>({ a: String }, { label: () => { throw new Error('no label'); } });
    await Boom.create({ a: 'x' });
    const S = fx.model<{ password: string }>({ password: String }, { label: 'password' });
    await S.create({ password: 'hunter2' });
    const [f] = await fx.events({ model: F.modelName });
    const [b] = await fx.events({ model: Boom.modelName });
    const [s] = await fx.events({ model: S.modelName });
    expect((f as { documentLabel?: string }).documentLabel).to.equal('Ada Lovelace');
    expect(b.kind).to.equal('create');
    expect(b).not.to.have.property('documentLabel');
    expect((s as { documentLabel?: string }).documentLabel).to.equal('[REDACTED]');
    expect(() => fx.model({ a: String }, { label: 42 as unknown as string })).to.throw(/label/);
  });
});
