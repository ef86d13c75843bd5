/**
 * The cheap audited `updateOne`: one round trip instead of three. The write is sent as a `findOneAndUpdate`
 * returning the document as it was (the pre-image, limited to the fields the update names), the post-image
 * is computed from it (update-image.ts), and the `UpdateResult` the app receives is rebuilt as the driver
 * would have returned it (`acknowledged`, `modifiedCount`, `upsertedId`, `upsertedCount`, `matchedCount`).
 *
 * The swap happens at the last moment, where mongoose hands the cast filter, update and options to its
 * collection (after every pre hook, casting, timestamps, `runValidators`): the query's collection is replaced,
 * for this query only, by one whose `updateOne` does this. What is sent is then exactly what the app's
 * updateOne would have sent, and it is judged again there: an update a later hook made uncertain (an upsert,
 * a `$currentDate`, ...) takes the usual path instead (read before, update, read after).
 *
 * When only the document's values make the result unsure (update-image.ts), the document is read back once.
 *
 * `modifiedCount` is the server's rule, a modification is a change of the stored bytes, applied to the images
 * as a read returns them. One case is beyond it: a number rewritten with its own value in another BSON type (a
 * double 2.0 written by another client, `$set` to 2 by the app) is a modification to MongoDB and 0 here; the
 * event is the same either way (no field changed). The write is a findAndModify for the server: an error it
 * refuses the write with has that command's message (same code and fields).
 */
import { mongo, type ClientSession } from 'mongoose';
import { isPlainObject } from './diff.js';
import { certainUpdate, postImage, topFields } from './update-image.js';

type Doc = Record<string, unknown>;

/** The parts of mongoose's collection (NativeCollection) used here. */
export interface MongooseCollection {
  collectionName: string;
  /** The driver's collection, once connected. */
  collection?: { bsonOptions?: DriverBson; writeConcern?: { w?: unknown } };
  updateOne(filter: Doc, update: Doc, options: Doc): Promise<unknown>;
  findOneAndUpdate(filter: Doc, update: Doc, options: Doc): Promise<unknown>;
  find(filter: Doc, options: Doc): { toArray(): Promise<Doc[]> } | Promise<{ toArray(): Promise<Doc[]> }>;
}

interface DriverBson {
  raw?: boolean;
  useBigInt64?: boolean;
  promoteLongs?: boolean;
  promoteValues?: boolean;
  promoteBuffers?: boolean;
  bsonRegExp?: boolean;
  ignoreUndefined?: boolean;
  serializeFunctions?: boolean;
  fieldsAsRaw?: unknown;
}

/** The images of a cheap updateOne, in the form a driver read gives (promoted as the collection promotes). */
export interface UpdateImages {
  before: Doc;
  after: Doc;
}

/** What the swapped write leaves for the post hook. */
export interface CheapWrite {
  /** Set when the write went the cheap way and matched a document. */
  images: UpdateImages | null;
  /** What the event reads of the images: the projection of the final update (hooks after ours may change it). */
  projection: Record<string, 0 | 1> | null;
  /** The write was sent the cheap way (matched or not). */
  done: boolean;
  /** Set when the write was judged uncertain at the last moment: the usual path applies, with this pre-image read. */
  fallback: { before: Doc[]; session: ClientSession | null; projection: Record<string, 0 | 1> | null } | null;
}

/** Servers whose findAndModify takes no projection (FerretDB v1): the whole document is returned, and cut here. */
const noProjection = new WeakSet<object>();

/** Collections with no default collation (so string equality is plain), by driver collection. */
const plainStrings = new WeakMap<object, Promise<boolean>>();

interface ListCollections {
  listCollections(filter: Doc, options: Doc): { toArray(): Promise<{ options?: { collation?: unknown } }[]> };
}

function collationFree(driver: object | undefined, db: ListCollections | undefined, name: string): Promise<boolean> {
  if (driver === undefined || db === undefined) return Promise.resolve(false);
  let p = plainStrings.get(driver);
  if (p === undefined) {
    p = db.listCollections({ name }, { nameOnly: false }).toArray().then(
      (infos) => {
        // A collection not made yet is asked again: it may be created with a collation.
        if (infos.length === 0) plainStrings.delete(driver);
        return infos.every((i) => i.options?.collation === undefined);
      },
      () => false,
    );
    plainStrings.set(driver, p);
  }
  return p;
}

/** Can this call go the cheap way, judged before the hooks that follow ours? (Judged again at the write.) */
export function cheapCandidate(update: unknown, options: Doc): boolean {
  if (options.upsert === true || options.arrayFilters !== undefined || options.explain !== undefined) return false;
  // Strings are judged at the write, where the collection's default collation is known.
  return certainUpdate(update, true);
}

function unacknowledged(options: Doc, coll: MongooseCollection): boolean {
  const wc = options.writeConcern as { w?: unknown } | undefined;
  const w = wc?.w ?? options.w ?? coll.collection?.writeConcern?.w;
  return w === 0;
}

const DESERIALIZE_KEYS = ['useBigInt64', 'promoteLongs', 'promoteValues', 'promoteBuffers', 'bsonRegExp'] as const;

/** What the driver sends for `value`, as a read of this collection would give it back. */
export function asRead(value: Doc, bson: DriverBson): Doc {
  const bytes = mongo.BSON.serialize(value, { ignoreUndefined: bson.ignoreUndefined === true, serializeFunctions: bson.serializeFunctions === true });
  const opts: Record<string, unknown> = {};
  for (const k of DESERIALIZE_KEYS) if (bson[k] !== undefined) opts[k] = bson[k];
  return mongo.BSON.deserialize(bytes, opts);
}

/** Fields the collection leaves as raw BSON: their reads are not plain values. */
function rawFields(bson: DriverBson): boolean {
  const f = bson.fieldsAsRaw;
  return f !== undefined && f !== null && typeof f === 'object' && Object.keys(f).length > 0;
}

function sameBytes(a: Doc, b: Doc): boolean {
  return Buffer.from(mongo.BSON.serialize(a)).equals(Buffer.from(mongo.BSON.serialize(b)));
}

function cut(doc: Doc, fields: Record<string, 1>): Doc {
  const out: Doc = {};
  for (const k of Object.keys(doc)) if (fields[k] === 1) out[k] = doc[k];
  return out;
}

interface FindAndModifyResult {
  value?: Doc | null;
  lastErrorObject?: { n?: number; updatedExisting?: boolean };
}

/**
 * A collection standing in for `coll` in one query: its `updateOne` is the cheap write, recorded in `w`.
 * Every other property is `coll`'s own.
 */
export function cheapCollection(coll: MongooseCollection, db: ListCollections | undefined, w: CheapWrite, hooks: CheapHooks): MongooseCollection {
  const stand = Object.create(coll) as MongooseCollection;
  stand.updateOne = async (filter, update, options) => {
    const bson = coll.collection?.bsonOptions ?? {};
    const strings = options.collation === undefined && (await collationFree(coll.collection, db, coll.collectionName));
    const sure = bson.raw !== true && !rawFields(bson) && options.upsert !== true && options.arrayFilters === undefined
      && !unacknowledged(options, coll) && isPlainObject(update) && certainUpdate(update, strings);
    const session = (options.session as ClientSession | undefined) ?? null;
    // The usual path: the pre-image read here (filter, update and options are final), then the app's write.
    const usual = async (): Promise<unknown> => {
      const projection = hooks.projectionOf(update);
      const read: Doc = { limit: 1 };
      if (projection !== null) read.projection = projection;
      if (session !== null) read.session = session;
      if (options.sort !== undefined) read.sort = options.sort;
      if (options.collation !== undefined) read.collation = options.collation;
      const cursor = await coll.find(filter, read);
      w.fallback = { before: await cursor.toArray(), session, projection };
      return coll.updateOne(filter, update, options);
    };
    if (!sure) return usual();

    const fields = topFields(update);
    const write: Doc = { ...options };
    // Options an updateOne ignores and a findOneAndUpdate would act on.
    for (const k of ['new', 'returnOriginal', 'returnDocument', 'projection', 'fields', 'includeResultMetadata']) delete write[k];
    write.returnDocument = 'before';
    write.includeResultMetadata = true;
    let res: FindAndModifyResult;
    try {
      res = await findAndModify(coll, filter, update, write, fields);
    } catch (err) {
      // Refused by the server, nothing written: sent again as the app sent it, so that the app gets the error
      // an updateOne gets (FerretDB reports a duplicate key of findAndModify as code 1; MongoDB prefixes the
      // message). Not in a transaction (the refusal aborted it), nor after a write concern error (written).
      if (!refused(err) || session?.inTransaction() === true) throw err;
      return usual();
    }
    w.done = true;
    w.projection = hooks.projectionOf(update);
    const found = res.value ?? null;
    if (found === null) return updateResult(0, 0);

    const before = cut(found, fields);
    let after = postImage(before, asRead(update, bson));
    if (after === null) {
      // Not certain from the values: the document as it is now. The write is done: a failed read is the
      // auditor's fault, reported, never the app's.
      try {
        const read: Doc = { projection: fields };
        if (session !== null) read.session = session;
        const cursor = await coll.find({ _id: before._id }, read);
        const [now] = await cursor.toArray();
        after = now === undefined ? null : cut(now, fields);
      } catch (err) {
        hooks.report(err);
      }
    }
    const modified = after === null || !sameBytes(before, after);
    w.images = after === null ? null : { before, after };
    return updateResult(1, modified ? 1 : 0);
  };
  return stand;
}

/** What the cheap write needs of the query-write recorder. */
export interface CheapHooks {
  /** The projection of the usual path's reads for the final update (null: whole documents). */
  projectionOf(update: Doc): Record<string, 0 | 1> | null;
  report(err: unknown): void;
}

async function findAndModify(coll: MongooseCollection, filter: Doc, update: Doc, write: Doc, fields: Record<string, 1>): Promise<FindAndModifyResult> {
  if (coll.collection === undefined || noProjection.has(coll.collection)) return (await coll.findOneAndUpdate(filter, update, write)) as FindAndModifyResult;
  try {
    return (await coll.findOneAndUpdate(filter, update, { ...write, projection: fields })) as FindAndModifyResult;
  } catch (err) {
    // Rejected before anything is written: asked again without the projection.
    if ((err as { code?: unknown }).code !== 238 || !String((err as Error).message).includes('fields')) throw err;
    noProjection.add(coll.collection);
    return (await coll.findOneAndUpdate(filter, update, write)) as FindAndModifyResult;
  }
}

/** A command the server refused as a whole (nothing written), not a write concern error nor a retryable one. */
function refused(err: unknown): boolean {
  if (!(err instanceof mongo.MongoServerError) || err instanceof mongo.MongoWriteConcernError) return false;
  if (err.errorLabels.length > 0) return false;
  const wce = (err as { writeConcernError?: unknown; errorResponse?: { writeConcernError?: unknown } });
  return wce.writeConcernError === undefined && wce.errorResponse?.writeConcernError === undefined;
}

/** An acknowledged updateOne's result, as the driver builds it (same keys, same order). */
function updateResult(matched: number, modified: number): Doc {
  return { acknowledged: true, modifiedCount: modified, upsertedId: null, upsertedCount: 0, matchedCount: matched };
}
