import { expect } from 'chai';
import { mongo, type Model } from 'mongoose';
import { byPath, useChanges } from '../support/changes.js';
import type { AuditEvent } from '../../lib/core/types.js';

interface Item {
  _id: mongo.ObjectId;
  code: string;
  n?: number;
  title?: string;
}

interface BulkLike {
  insertedCount: number;
  matchedCount: number;
  modifiedCount: number;
  deletedCount: number;
  upsertedCount: number;
  insertedIds: Record<string, unknown>;
  upsertedIds: Record<string, unknown>;
}

interface BulkErrorLike extends BulkLike {
  code?: number;
  writeErrors: { index: number; code: number }[];
  result: BulkLike;
}

/** kind, documentId and changes (sorted by path) of each event: what the assertions compare. */
const shape = (events: AuditEvent[]): [string, string | undefined, unknown][] => events.map((e) => [e.kind, e.documentId, byPath(e.changes)]);

describe('bulkWrite records each operation, not the net effect (issue 11, item 10)', () => {
  const fx = useChanges('changes_bulk_write_ops');
  let M: Model<Item>;

  beforeEach(async () => {
    M = fx.model<Item>({ code: { type: String, unique: true }, n: Number, title: String });
    await M.init();
  });

  const events = (): Promise<AuditEvent[]> => fx.events({ model: M.modelName, operation: 'bulkWrite' });

  for (const ordered of [true, false]) {
    describe(ordered ? 'ordered' : 'unordered', () => {
      it('insertOne + updateOne + deleteOne of one new document: a create, an update and a delete, each with its own states', async () => {
        const id = new mongo.ObjectId();
        const res = (await M.bulkWrite([
          { insertOne: { document: { _id: id, code: 'a', n: 1 } } },
          { updateOne: { filter: { _id: id }, update: { $set: { n: 2 } } } },
          { deleteOne: { filter: { _id: id } } },
        ], { ordered })) as unknown as BulkLike;
        expect([res.insertedCount, res.matchedCount, res.modifiedCount, res.deletedCount]).to.deep.equal([1, 1, 1, 1]);
        expect(Object.keys(res.insertedIds)).to.deep.equal(['0']);
        const hex = id.toHexString();
        expect(shape(await events())).to.deep.equal([
          ['create', hex, [{ path: 'code', from: null, to: 'a' }, { path: 'n', from: null, to: 1 }]],
          ['update', hex, [{ path: 'n', from: 1, to: 2 }]],
          ['delete', hex, [{ path: 'code', from: 'a', to: null }, { path: 'n', from: 2, to: null }]],
        ]);
      });

      it('insertOne (no _id) + updateOne by a filter: a create with the inserted state, then an update', async () => {
        await M.bulkWrite([
          { insertOne: { document: { code: 'b', n: 1 } } },
          { updateOne: { filter: { code: 'b' }, update: { $inc: { n: 5 } } } },
        ], { ordered });
        const stored = await M.findOne({ code: 'b' }).lean();
        const hex = stored!._id.toHexString();
        expect(shape(await events())).to.deep.equal([
          ['create', hex, [{ path: 'code', from: null, to: 'b' }, { path: 'n', from: null, to: 1 }]],
          ['update', hex, [{ path: 'n', from: 1, to: 6 }]],
        ]);
      });

      it('an upsert then an update of the upserted document, and an update of another document in between', async () => {
        const other = await M.create({ code: 'o', n: 0 });
        const res = (await M.bulkWrite([
          { updateOne: { filter: { code: 'u' }, update: { $set: { n: 1 } }, upsert: true } },
          { updateOne: { filter: { _id: other._id }, update: { $set: { n: 7 } } } },
          { updateOne: { filter: { code: 'u' }, update: { $set: { title: 't' } } } },
        ], { ordered })) as unknown as BulkLike;
        expect([res.upsertedCount, res.matchedCount, res.modifiedCount]).to.deep.equal([1, 2, 2]);
        const u = await M.findOne({ code: 'u' }).lean();
        expect(Object.keys(res.upsertedIds)).to.deep.equal(['0']);
        expect(String(res.upsertedIds[0])).to.equal(u!._id.toHexString());
        expect(shape(await events())).to.deep.equal([
          ['create', u!._id.toHexString(), [{ path: 'code', from: null, to: 'u' }, { path: 'n', from: null, to: 1 }]],
          ['update', other._id.toHexString(), [{ path: 'n', from: 0, to: 7 }]],
          ['update', u!._id.toHexString(), [{ path: 'title', from: null, to: 't' }]],
        ]);
      });

      it('a call failing part-way records what each operation that ran did, and the error reports the whole call', async () => {
        await M.create({ code: 'taken' });
        const id = new mongo.ObjectId();
        const err = (await M.bulkWrite([
          { insertOne: { document: { _id: id, code: 'c', n: 1 } } },
          { updateOne: { filter: { _id: id }, update: { $set: { n: 2 } } } },
          { insertOne: { document: { code: 'taken' } } },
          { deleteOne: { filter: { _id: id } } },
        ], { ordered }).catch((e: unknown) => e)) as BulkErrorLike;
        expect(err.code).to.equal(11000);
        expect(err.writeErrors.map((w) => [w.index, w.code])).to.deep.equal([[2, 11000]]);
        expect(err.result.insertedCount).to.equal(1);
        expect(err.result.modifiedCount).to.equal(1);
        expect(err.result.deletedCount).to.equal(ordered ? 0 : 1);
        const hex = id.toHexString();
        const expected: [string, string | undefined, unknown][] = [
          ['create', hex, [{ path: 'code', from: null, to: 'c' }, { path: 'n', from: null, to: 1 }]],
          ['update', hex, [{ path: 'n', from: 1, to: 2 }]],
        ];
        if (!ordered) expected.push(['delete', hex, [{ path: 'code', from: 'c', to: null }, { path: 'n', from: 2, to: null }]]);
        expect(shape(await events())).to.deep.equal(expected);
        expect(await M.countDocuments({ _id: id })).to.equal(ordered ? 1 : 0);
      });
    });
  }

  it('unordered, with an operation that fails to cast: the others are recorded, and mongoose\'s per-operation results span the call', async () => {
    const id = new mongo.ObjectId();
    const res = (await M.bulkWrite([
      { insertOne: { document: { code: 'v', n: 'not a number' as unknown as number } } },
      { insertOne: { document: { _id: id, code: 'w', n: 1 } } },
      { updateOne: { filter: { _id: id }, update: { $set: { n: 2 } } } },
    ], { ordered: false })) as unknown as BulkLike & { mongoose?: { validationErrors: unknown[]; results: unknown[] } };
    expect(res.insertedCount).to.equal(1);
    expect(res.modifiedCount).to.equal(1);
    expect(Object.keys(res.insertedIds)).to.deep.equal(['1']);
    expect(res.mongoose?.validationErrors).to.have.length(1);
    expect(res.mongoose?.results.map((r) => (r === null ? null : 'error'))).to.deep.equal(['error', null, null]);
    expect(shape(await events()).map(([kind, doc]) => [kind, doc])).to.deep.equal([['create', id.toHexString()], ['update', id.toHexString()]]);
  });

  describe('what is sent as one call', () => {
    /** The write commands sent to M's collection while `fn` runs. */
    const writes = async (fn: () => Promise<unknown>): Promise<string[]> =>
      (await fx.sent(M, ['insert', 'update', 'delete'], fn)).map((e) => e.commandName);

    it('upserts by a natural key (each filter on its own value) are independent: one command, one event each', async () => {
      const sent = await writes(() => M.bulkWrite(['k1', 'k2', 'k3'].map((code, i) => ({ updateOne: { filter: { code }, update: { $set: { n: i } }, upsert: true } }))));
      expect(sent).to.deep.equal(['update']);
      const events = await fx.events({ model: M.modelName, operation: 'bulkWrite' });
      expect(events.map((e) => [e.kind, byPath(e.changes).find((c) => c.path === 'code')?.to])).to.deep.equal([['create', 'k1'], ['create', 'k2'], ['create', 'k3']]);
    });

    it('an update that makes a document match a later filter is sent before that filter is looked up', async () => {
      const doc = await M.create({ code: 'x', n: 0 });
      const sent = await writes(() => M.bulkWrite([
        { updateOne: { filter: { code: 'x' }, update: { $set: { code: 'y' } } } },
        { updateOne: { filter: { code: 'y' }, update: { $set: { n: 1 } } } },
      ]));
      expect(sent).to.deep.equal(['update', 'update']);
      const hex = doc._id.toHexString();
      expect(shape(await events())).to.deep.equal([
        ['update', hex, [{ path: 'code', from: 'x', to: 'y' }]],
        ['update', hex, [{ path: 'n', from: 0, to: 1 }]],
      ]);
    });
  });

  it('independent operations are still recorded in operation order', async () => {
    const [a, b] = await M.create([{ code: 'x', n: 1 }, { code: 'y', n: 1 }]);
    await M.bulkWrite([
      { updateOne: { filter: { _id: b._id }, update: { $set: { n: 2 } } } },
      { updateOne: { filter: { _id: a._id }, update: { $set: { n: 3 } } } },
      { deleteOne: { filter: { _id: b._id, n: 99 } } }, // matches nothing
    ]);
    expect(shape(await events())).to.deep.equal([
      ['update', b._id.toHexString(), [{ path: 'n', from: 1, to: 2 }]],
      ['update', a._id.toHexString(), [{ path: 'n', from: 1, to: 3 }]],
    ]);
  });
});
