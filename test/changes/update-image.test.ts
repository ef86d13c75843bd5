/**
 * The cheap audited updateOne (lib/changes/update-one.ts) against the server, over random documents and random
 * updates (a seeded generator: a failure names its case and replays).
 *
 * Each case writes the same document twice, then applies the same update to one copy with `updateOne` (the
 * cheap path: the write returns the pre-image, the post-image is computed) and to the other with `updateMany`
 * filtered by `_id` (the usual path: read before, write, read after). Asserted for every case:
 *   - the computed post-image (update-image.ts) is the document read back from the server, field order included;
 *   - the app's result is the one the server gives (`acknowledged`, `matchedCount`, `modifiedCount`, ...), and
 *     a refused write fails both ways with the same code;
 *   - the event is the read-back path's: same kind, changes and label.
 */
import { expect } from 'chai';
import { mongo, Schema, type Model } from 'mongoose';
import { asRead } from '../../lib/changes/update-one.js';
import { certainUpdate, postImage, topFields } from '../../lib/changes/update-image.js';
import type { AuditEvent } from '../../lib/core/types.js';
import { useChanges } from '../support/changes.js';

type Doc = Record<string, unknown>;

/** mulberry32: small, fast, and the same sequence for the same seed. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const SEED = Number(process.env.UPDATE_IMAGE_SEED ?? 20261129);
const CASES = 250;

function gen(rand: () => number) {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)];
  const maybe = (p = 0.5): boolean => rand() < p;
  const num = (): number => (maybe() ? Math.floor(rand() * 11) - 5 : (Math.floor(rand() * 8) - 4) / 2 + 0.25);
  const scalar = (): unknown => pick([() => num(), () => pick(['a', 'b', 'c']), () => null, () => maybe(), () => new Date(Date.UTC(2026, 0, 1 + Math.floor(rand() * 3)))])();
  const elem = (): unknown => pick([1, 2, 3, 'a', 'b', null, 2.5]);

  function doc(): Doc {
    const d: Doc = {};
    if (maybe(0.8)) d.n = num();
    if (maybe(0.6)) d.m = maybe(0.9) ? num() : 'text';
    if (maybe(0.8)) d.s = pick(['a', 'b', 'c']);
    if (maybe(0.8)) d.arr = Array.from({ length: Math.floor(rand() * 5) }, elem);
    if (maybe(0.7)) d.obj = maybe(0.9) ? (maybe(0.8) ? { p: num(), q: pick(['x', 'y']) } : {}) : 5;
    if (maybe(0.5)) d.d = new Date(Date.UTC(2026, 0, 1));
    if (maybe(0.5)) d.f = maybe();
    return d;
  }

  /** One operator's path and value, keyed by the top-level field it touches (one operator per field). */
  const makers: Record<string, () => [string, string, unknown]> = {
    set: () => {
      const path = pick(['n', 's', 'newA', 'newB', 'obj.p', 'obj.r', 'obj.deep.z', 'd', 'f', 'arr', 'm']);
      const value = maybe(0.8) ? scalar() : maybe() ? { y: num(), x: pick(['u', 'v']) } : [elem(), elem()];
      return ['$set', path, value];
    },
    unset: () => ['$unset', pick(['n', 's', 'obj.p', 'obj.zz', 'gone', 'f']), ''],
    inc: () => ['$inc', pick(['n', 'm', 'obj.p', 'newC']), pick([1, -2, 3, 0.5, 2.25, -1.5])],
    push: () => ['$push', pick(['arr', 'newArr']), maybe() ? elem() : { $each: [elem(), elem()] }],
    addToSet: () => ['$addToSet', pick(['arr', 'newSet']), maybe() ? elem() : { $each: [elem(), elem(), elem()] }],
    pull: () => ['$pull', 'arr', elem()],
  };

  function update(): Doc {
    const u: Doc = {};
    const used = new Set<string>();
    const count = 1 + Math.floor(rand() * 3);
    for (let i = 0; i < count * 3 && used.size < count; i++) {
      const [op, path, value] = makers[pick(Object.keys(makers))]();
      const top = path.split('.')[0];
      if (used.has(top)) continue;
      used.add(top);
      ((u[op] ??= {}) as Doc)[path] = value;
    }
    if (maybe(0.2)) u.$setOnInsert = { created: 1 };
    return u;
  }
  return { doc, update };
}

/** The same bytes, field order included. */
function same(a: Doc, b: Doc): boolean {
  return Buffer.from(mongo.BSON.serialize(a)).equals(Buffer.from(mongo.BSON.serialize(b)));
}

function cut(doc: Doc, fields: Record<string, 1>): Doc {
  const out: Doc = {};
  for (const k of Object.keys(doc)) if (fields[k] === 1) out[k] = doc[k];
  return out;
}

interface Outcome {
  result?: unknown;
  code?: unknown;
}

async function outcome(fn: () => Promise<unknown>): Promise<Outcome> {
  try {
    return { result: await fn() };
  } catch (err) {
    return { code: (err as { code?: unknown }).code ?? (err as Error).name };
  }
}

describe('changes: the cheap updateOne against the server (property test)', () => {
  const fx = useChanges('changes_update_image');

  /** What an event says, without what tells the two paths apart (ids, times, operation). */
  const gist = (e: AuditEvent | undefined) => (e === undefined ? null : { kind: e.kind, changes: e.changes, label: e.documentLabel ?? null });

  async function run(M: Model<Doc>, seed: number, cases: number): Promise<{ computed: number; readBack: number; refused: number; uncertain: number }> {
    const g = gen(prng(seed));
    const raw = M.collection;
    const bson = (raw as unknown as { collection: { bsonOptions: Record<string, unknown> } }).collection.bsonOptions;
    const stats = { computed: 0, readBack: 0, refused: 0, uncertain: 0 };
    const pairs: [string, string, string][] = [];
    const one = async (i: number, doc: Doc, update: Doc): Promise<void> => {
      const where = `seed ${seed}, case ${i}: ${JSON.stringify(doc)} ${JSON.stringify(update)}`;
      const [a, b] = [new mongo.ObjectId(), new mongo.ObjectId()];
      // What a read of it returns: the generator's values are all read back as they are written.
      const pre: Doc = { _id: a, ...doc };
      await raw.insertMany([pre, { _id: b, ...doc }]);

      const cheap = await outcome(() => M.updateOne({ _id: a }, update));
      const usual = await outcome(() => M.updateMany({ _id: b }, update));
      expect(cheap.code, where).to.deep.equal(usual.code);
      if (cheap.code !== undefined) {
        stats.refused++;
        return;
      }
      expect(cheap.result, where).to.deep.equal(usual.result);

      const both = (await raw.find({ _id: { $in: [a, b] } }).toArray()) as Doc[];
      const after = both.find((d) => a.equals(d._id as mongo.ObjectId)) as Doc;
      const twin = both.find((d) => b.equals(d._id as mongo.ObjectId)) as Doc;
      // (The two writes ran at two moments: their `updatedAt` differ.)
      expect(same({ ...after, _id: 0, updatedAt: 0 }, { ...twin, _id: 0, updatedAt: 0 }), where).to.equal(true);
      if (!certainUpdate(update, true)) {
        stats.uncertain++;
      } else {
        const fields = topFields(update);
        const computed = postImage(cut(pre, fields), asRead(update, bson));
        if (computed === null) stats.readBack++;
        else {
          stats.computed++;
          expect(computed, `${where}: computed`).to.deep.equal(cut(after, fields));
          expect(same(computed, cut(after, fields)), `${where}: field order`).to.equal(true);
        }
      }
      pairs.push([String(a), String(b), where]);
    };
    // Cases are independent (their own documents): a few at a time, the server's latency overlapped.
    const all = Array.from({ length: cases }, (_, i) => [i, g.doc(), g.update()] as const);
    for (let i = 0; i < all.length; i += 8) await Promise.all(all.slice(i, i + 8).map(([n, d, u]) => one(n, d, u)));
    const events = await fx.events({ model: M.modelName, kind: 'update' });
    const byId = new Map(events.map((e) => [e.documentId, e]));
    for (const [a, b, where] of pairs) expect(gist(byId.get(a)), where).to.deep.equal(gist(byId.get(b)));
    return stats;
  }

  function report(name: string, s: { computed: number; readBack: number; refused: number; uncertain: number }): void {
    console.log(`      (${name}: ${s.computed} computed, ${s.readBack} read back, ${s.uncertain} sent the usual way, ${s.refused} refused by the server)`);
  }

  it(`${CASES} random updates: computed post-image = read-back, same result, same event`, async () => {
    const M = fx.model<Doc>({}, { label: 's' }, { strict: false, versionKey: false });
    const s = await run(M, SEED, CASES);
    report('no options', s);
    // The generator must mostly exercise the computed path, or this test proves little.
    expect(s.computed).to.be.greaterThan(CASES / 3);
    expect(s.refused).to.be.greaterThan(0);
  });

  it('with exclude, a label and timestamps (updatedAt set by mongoose in the same write)', async () => {
    const M = fx.model<Doc>({}, { exclude: ['obj.q', 'updatedAt', 'createdAt'], label: (d) => d.obj }, { strict: false, versionKey: false, timestamps: true });
    const s = await run(M, SEED + 1, 100);
    report('exclude + timestamps', s);
    expect(s.computed).to.be.greaterThan(20);
  });
});
