/**
 * Overhead of change auditing: the same writes on a plain model and on an audited one, in one run, as ratios.
 *
 *   npx tsx bench/mongoose.ts            # starts the test database (or uses MONGODB_URI) and prints a table
 *   BENCH_MONGOOSE_ONLY=updateOne,save   # only the cases whose name starts with one of these
 *
 * Each case is timed over several rounds and the median kept. Only the application's write path is timed
 * (what a request waits for: the pre/post-image reads and accepting the events); the audit inserts run in
 * the background and are flushed between rounds, outside the timing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mongoose, { Schema, type Connection, type Model } from 'mongoose';
import { createAudit, type Auditor } from '../lib/index.js';
import { databaseUri } from '../test/support/database.js';

export interface BenchRow {
  name: string;
  plainMs: number;
  auditedMs: number;
  ratio: number;
}

interface Item {
  title: string;
  n: number;
  grp: string;
  tags: string[];
  address: { city: string; zip: string };
}

const ROUNDS = 5;
const SEQUENTIAL = 200;
const MANY = 1000;
const BULK = 40;

function item(i: number, grp: string): Item {
  return { title: `item ${i}`, n: i, grp, tags: ['a', 'b'], address: { city: 'Lyon', zip: '69000' } };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

interface Case {
  name: string;
  /** Untimed preparation of one round. */
  setup(model: Model<Item>): Promise<unknown>;
  /** The timed part. */
  run(model: Model<Item>, prepared: unknown): Promise<void>;
}

const CASES: Case[] = [
  {
    name: `save (new document) x${SEQUENTIAL}`,
    setup: async () => null,
    run: async (M) => {
      for (let i = 0; i < SEQUENTIAL; i++) await new M(item(i, 'save')).save();
    },
  },
  {
    name: `updateOne by _id x${SEQUENTIAL}`,
    setup: async (M) => (await M.insertMany(Array.from({ length: SEQUENTIAL }, (_, i) => item(i, 'u1')), { lean: true })).map((d) => d._id),
    run: async (M, ids) => {
      for (const id of ids as unknown[]) await M.updateOne({ _id: id }, { $inc: { n: 1 }, $set: { 'address.city': 'Paris' } });
    },
  },
  {
    name: `updateMany of ${MANY} documents`,
    setup: async (M) => M.insertMany(Array.from({ length: MANY }, (_, i) => item(i, 'um')), { lean: true }),
    run: async (M) => {
      await M.updateMany({ grp: 'um' }, { $inc: { n: 1 } });
    },
  },
  {
    // Calls of BULK operations: FerretDB v1 stalls on one update command of 100 statements or more.
    name: `bulkWrite of ${BULK} updateOne by _id x${SEQUENTIAL / BULK}`,
    setup: async (M) => (await M.insertMany(Array.from({ length: SEQUENTIAL }, (_, i) => item(i, 'bw')), { lean: true })).map((d) => d._id),
    run: async (M, ids) => {
      const all = ids as unknown[];
      for (let i = 0; i < all.length; i += BULK) {
        await M.bulkWrite(all.slice(i, i + BULK).map((id) => ({ updateOne: { filter: { _id: id }, update: { $inc: { n: 1 }, $set: { 'address.city': 'Paris' } } } })));
      }
    },
  },
  {
    name: `insertMany of ${MANY} documents`,
    setup: async () => null,
    run: async (M) => {
      await M.insertMany(Array.from({ length: MANY }, (_, i) => item(i, 'im')));
    },
  },
];

function schema(): Schema<Item> {
  return new Schema<Item>({ title: String, n: Number, grp: String, tags: [String], address: { city: String, zip: String } });
}

async function timeRound(c: Case, M: Model<Item>, auditor: Auditor | null): Promise<number> {
  await M.deleteMany({});
  const prepared = await c.setup(M);
  if (auditor !== null) await auditor.flush();
  const t0 = performance.now();
  await c.run(M, prepared);
  const ms = performance.now() - t0;
  if (auditor !== null) await auditor.flush();
  return ms;
}

/** Runs every case on a plain and an audited model; medians over ROUNDS rounds, plain and audited interleaved. */
export async function runMongooseBench(uri: string): Promise<BenchRow[]> {
  const conn: Connection = await mongoose.createConnection(databaseUri(uri, 'koa_audit_bench_mongoose'), { serverSelectionTimeoutMS: 10_000 }).asPromise();
  const spoolDir = mkdtempSync(join(tmpdir(), 'ka-bench-'));
  // BENCH_FLUSH_MS (diagnostic only): a long flush interval keeps the event inserts out of the timed rounds.
  const flushMs = Number(process.env.BENCH_FLUSH_MS ?? 0);
  const auditor = createAudit({ connection: conn, collection: 'bench_audit', spoolDir, ...(flushMs > 0 ? { flushIntervalMs: flushMs } : {}) });
  try {
    await conn.dropDatabase();
    const plainSchema = schema();
    const auditedSchema = schema();
    auditedSchema.plugin(auditor.plugin);
    const Plain = conn.model<Item>('BenchPlain', plainSchema);
    const Audited = conn.model<Item>('BenchAudited', auditedSchema);
    await Promise.all([Plain.init(), Audited.init(), auditor.ready()]);

    const rows: BenchRow[] = [];
    const only = process.env.BENCH_MONGOOSE_ONLY?.split(',') ?? null;
    for (const c of CASES.filter((x) => only === null || only.some((o) => x.name.startsWith(o)))) {
      // One warm-up round each (connection pool, JIT), then the measured rounds.
      await timeRound(c, Plain, null);
      await timeRound(c, Audited, auditor);
      const plain: number[] = [];
      const audited: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        plain.push(await timeRound(c, Plain, null));
        audited.push(await timeRound(c, Audited, auditor));
      }
      if (process.env.BENCH_VERBOSE === '1') process.stderr.write(`${c.name}: plain ${plain.map((x) => x.toFixed(0)).join(' ')} / audited ${audited.map((x) => x.toFixed(0)).join(' ')} ms\n`);
      const plainMs = median(plain);
      const auditedMs = median(audited);
      rows.push({ name: c.name, plainMs: round(plainMs), auditedMs: round(auditedMs), ratio: round(auditedMs / plainMs) });
    }
    return rows;
  } finally {
    await auditor.close({ timeoutMs: 5000 });
    await conn.dropDatabase().catch(() => {});
    await conn.close();
    rmSync(spoolDir, { recursive: true, force: true });
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

export function formatTable(rows: BenchRow[]): string {
  const head = ['case', 'plain ms', 'audited ms', 'ratio'];
  const body = rows.map((r) => [r.name, r.plainMs.toFixed(1), r.auditedMs.toFixed(1), `${r.ratio.toFixed(2)}x`]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

if (require.main === module) {
  (async () => {
    const { startDatabase, stopDatabase } = await import('../test/support/database.js');
    const db = await startDatabase();
    try {
      const rows = await runMongooseBench(db.uri);
      process.stdout.write(`change auditing overhead (${db.kind}, median of ${ROUNDS} rounds)\n${formatTable(rows)}\n`);
    } finally {
      await stopDatabase();
    }
  })().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
