import { expect } from 'chai';
import { byPath, useChanges } from '../support/changes.js';

const R = '[REDACTED]';

describe('redacted diffs say what happened to a secret (issue 11, item 14)', () => {
  const fx = useChanges('changes_redacted_diffs');

  it('set the first time: null → [REDACTED]; changed: [REDACTED] → [REDACTED] with changed: true; removed: [REDACTED] → null', async () => {
    const M = fx.model<{ name: string; password?: string | null }>({ name: String, password: String });
    const a = await M.create({ name: 'n' });
    await M.updateOne({ _id: a._id }, { $set: { password: 'hunter2' } });
    await M.updateOne({ _id: a._id }, { $set: { password: 'hunter3' } });
    await M.updateOne({ _id: a._id }, { $set: { password: 'hunter3' } }); // unchanged: no event
    await M.updateOne({ _id: a._id }, { $unset: { password: 1 } });
    const events = await fx.events({ model: M.modelName, kind: 'update' });
    expect(events.map((e) => byPath(e.changes))).to.deep.equal([
      [{ path: 'password', from: null, to: R }],
      [{ path: 'password', from: R, to: R, changed: true }],
      [{ path: 'password', from: R, to: null }],
    ]);
    const raw = JSON.stringify(await fx.auditor.model.find({ model: M.modelName }).lean());
    expect(raw).to.not.include('hunter');
  });

  it('a create lists a secret as null → [REDACTED], a delete as [REDACTED] → null', async () => {
    const M = fx.model<{ name: string; token?: string }>({ name: String, token: String });
    const a = await M.create({ name: 'n', token: 't-123' });
    await M.deleteOne({ _id: a._id });
    const [create, del] = await fx.events({ model: M.modelName });
    expect(byPath(create.changes)).to.deep.equal([{ path: 'name', from: null, to: 'n' }, { path: 'token', from: null, to: R }]);
    expect(byPath(del.changes)).to.deep.equal([{ path: 'name', from: 'n', to: null }, { path: 'token', from: R, to: null }]);
  });
});
