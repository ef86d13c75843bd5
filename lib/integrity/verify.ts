/**
 * `verify`: reads the collection chain by chain, each in `seq` order, and reports what does not add up.
 *
 * A first query reads the prune and checkpoint records (one in `checkpointEvery` events); then one pass, sorted on
 * the `{ chain.id, chain.seq, _id }` index. Memory is bounded whatever the collection's size: one cursor (batches
 * of 1,000), the hashes at the positions checkpoints and witnesses name (one per checkpoint, so no checkpoint
 * costs a lookup however far back it points), one group of events sharing a `seq` (a forgery), and at most
 * `maxProblems` problems (the rest are counted).
 *
 * Problem types:
 * - `modified`: the event's hash does not match its content (or a witness knows another hash for it);
 * - `missing`: a gap in `seq`, or `prev` is not the previous event's hash;
 * - `inserted`: an event claiming a position it does not have (a duplicate `seq`, a chain not opened by
 *   `audit_start`, an event after a chain's `audit_stop`), or an event without chain fields among chained ones;
 * - `bad_signature`: a checkpoint whose signature does not verify, or whose signed hash is not the chain's;
 * - `truncated`: a witness names a position the chain no longer reaches (or a chain it no longer has); a
 *   chain that ends without `audit_stop` after its last checkpoint, and stopped writing long ago;
 * - `unsealed_tail` (a warning): events after the last checkpoint of a chain that is still open;
 * - `expired` (not tampering): a gap that retention explains.
 */
import type { mongo } from 'mongoose';
import type { Checkpoint, ChainFields } from '../core/types.js';
import { eventHash } from './canonical.js';
import { checkSignature, type VerifyKeys } from './signature.js';

export type ProblemType = 'modified' | 'missing' | 'inserted' | 'bad_signature' | 'truncated' | 'unsealed_tail' | 'expired';

export interface VerifyProblem {
  type: ProblemType;
  chainId: string | null;
  seq: number | null;
  eventId?: string;
  detail: string;
}

export interface VerifyResult {
  /** True when no problem other than `unsealed_tail` and `expired` was found. */
  ok: boolean;
  chains: number;
  events: number;
  problems: VerifyProblem[];
  /** Problems found beyond `maxProblems` (not listed). */
  omitted: number;
}

/** Types that are not tampering. */
export const NOT_TAMPERING: ReadonlySet<ProblemType> = new Set(['unsealed_tail', 'expired']);

export interface VerifyRun extends VerifyKeys {
  from?: Date;
  to?: Date;
  chainId?: string;
  witness?: Iterable<Checkpoint>;
  /** The time retention and staleness are judged at. Default: now. */
  at?: Date;
  /** The retention period: gaps it explains are `expired`, not `missing`. */
  retentionDays?: number;
  /** Chains known to be open (the verifying auditor's own): a tail after their last checkpoint is a warning. */
  openChains?: ReadonlySet<string>;
  maxProblems?: number;
  onProgress?: (events: number) => void;
}

const BATCH = 1_000;
const PROGRESS_EVERY = 10_000;
/** A chain without audit_stop whose unsealed tail is older than this (plus twice its checkpoint period) is dead. */
const STALE_GRACE_MS = 60_000;
/** How much younger than the retention horizon the event after an expired gap may be (sparse chains). */
const EXPIRY_SLACK_MS = 3_600_000;
const DEFAULT_CHECKPOINT_MS = 60_000;

type Collection = mongo.Collection;
type Document = mongo.Document;
type Filter<T extends Document> = mongo.Filter<T>;

type Doc = Document & { _id: unknown; ts?: unknown; kind?: unknown; chain?: ChainFields; checkpoint?: Checkpoint };

function idOf(doc: Doc): string {
  const id = doc._id as { toHexString?: () => string } | null;
  return typeof id?.toHexString === 'function' ? id.toHexString() : String(id);
}

function tsOf(doc: Doc): number {
  return doc.ts instanceof Date ? doc.ts.getTime() : Number.NaN;
}

function isChain(c: unknown): c is ChainFields {
  const x = c as Partial<ChainFields> | null;
  return typeof x === 'object' && x !== null && typeof x.id === 'string' && typeof x.seq === 'number' && Number.isInteger(x.seq) && x.seq >= 0 &&
    typeof x.hash === 'string' && (x.prev === null || typeof x.prev === 'string');
}

function isCheckpoint(c: unknown): c is Checkpoint {
  const x = c as Partial<Checkpoint> | null;
  return typeof x === 'object' && x !== null && typeof x.chainId === 'string' && typeof x.seq === 'number' && typeof x.hash === 'string' &&
    typeof x.ts === 'string' && typeof x.alg === 'string';
}

class Problems {
  readonly list: VerifyProblem[] = [];
  omitted = 0;
  constructor(private readonly max: number) {}
  add(p: VerifyProblem): void {
    if (this.list.length < this.max) this.list.push(p);
    else this.omitted++;
  }
}

export async function verifyTrail(coll: Collection, run: VerifyRun = {}): Promise<VerifyResult> {
  const problems = new Problems(run.maxProblems ?? 1_000);
  const at = (run.at ?? new Date()).getTime();
  const range: Record<string, Date> = {};
  if (run.from !== undefined) range.$gte = run.from;
  if (run.to !== undefined) range.$lt = run.to;
  const tsFilter: Filter<Document> = Object.keys(range).length > 0 ? { ts: range } : {};
  let events = 0;
  const progress = (): void => {
    events++;
    if (events % PROGRESS_EVERY === 0) run.onProgress?.(events);
  };

  // Where prunes cut each chain (the last deleted position, from which the remaining chain is verified), and the
  // positions checkpoints name: their hashes are kept as the pass goes by, so no checkpoint costs a lookup, however
  // far back it points (checkpoints sealed in one burst all name positions thousands of events back).
  const anchors = new Map<string, { seq: number; hash: string }>();
  const named = new Map<string, Set<number>>();
  const records = coll.find({ kind: { $in: ['prune', 'checkpoint'] } }, { projection: { kind: 1, prune: 1, 'checkpoint.chainId': 1, 'checkpoint.seq': 1 } });
  for await (const p of records) {
    if (p.kind === 'checkpoint') {
      const cp = p.checkpoint as { chainId?: unknown; seq?: unknown } | undefined;
      if (typeof cp?.chainId !== 'string' || typeof cp.seq !== 'number') continue;
      const seqs = named.get(cp.chainId) ?? new Set<number>();
      seqs.add(cp.seq);
      named.set(cp.chainId, seqs);
      continue;
    }
    const chains = (p.prune as { chains?: unknown } | undefined)?.chains;
    if (!Array.isArray(chains)) continue;
    for (const c of chains as { id?: unknown; seq?: unknown; hash?: unknown }[]) {
      if (typeof c.id !== 'string' || typeof c.seq !== 'number' || typeof c.hash !== 'string') continue;
      const known = anchors.get(c.id);
      if (known === undefined || known.seq < c.seq) anchors.set(c.id, { seq: c.seq, hash: c.hash });
    }
  }

  const witnesses = new Map<string, Checkpoint[]>();
  for (const w of run.witness ?? []) {
    if (!isCheckpoint(w)) {
      problems.add({ type: 'bad_signature', chainId: null, seq: null, detail: `a witness entry is not a checkpoint: ${JSON.stringify(w).slice(0, 200)}` });
      continue;
    }
    if (run.chainId !== undefined && w.chainId !== run.chainId) continue;
    const t = Date.parse(w.ts);
    if ((run.from !== undefined && t < run.from.getTime()) || (run.to !== undefined && t >= run.to.getTime())) continue;
    if (checkSignature(w, run) === 'bad') {
      problems.add({ type: 'bad_signature', chainId: w.chainId, seq: w.seq, detail: 'a witness checkpoint does not verify with the given key' });
      continue;
    }
    const list = witnesses.get(w.chainId) ?? [];
    list.push(w);
    witnesses.set(w.chainId, list);
  }

  // Events without chain fields are tampering from the time chains began (older ones predate them).
  const first = await coll.find({ kind: 'audit_start', 'chain.seq': 0 }, { projection: { ts: 1 } }).sort({ ts: 1 }).limit(1).next();
  const chainsSince = first !== null && first.ts instanceof Date ? first.ts.getTime() : Number.POSITIVE_INFINITY;

  // One pass over the range, in (chain, seq) order: events without a chain sort first, then chain after chain.
  const filter: Filter<Document> = run.chainId === undefined ? tsFilter : { ...tsFilter, 'chain.id': run.chainId };
  const cursor = coll.find(filter).sort({ 'chain.id': 1, 'chain.seq': 1, _id: 1 }).batchSize(BATCH);
  let chains = 0;
  let current: ChainVerifier | null = null;
  for await (const raw of cursor) {
    const doc = raw as Doc;
    progress();
    const id = (doc.chain as { id?: unknown } | undefined)?.id;
    if (typeof id !== 'string') {
      if (doc.chain !== undefined && doc.chain !== null) {
        problems.add({ type: 'inserted', chainId: null, seq: null, eventId: idOf(doc), detail: 'malformed chain fields' });
      } else if (tsOf(doc) >= chainsSince) {
        problems.add({ type: 'inserted', chainId: null, seq: null, eventId: idOf(doc), detail: `a ${String(doc.kind)} event without chain fields, stored after chains began` });
      }
      continue;
    }
    if (current === null || current.id !== id) {
      await current?.end();
      chains++;
      current = chainVerifier(coll, id, {
        run, at, problems, anchor: anchors.get(id), witness: (witnesses.get(id) ?? []).sort((a, b) => a.seq - b.seq),
        named: new Set([...(named.get(id) ?? []), ...(witnesses.get(id) ?? []).map((w) => w.seq)]),
      });
      witnesses.delete(id);
      named.delete(id);
    }
    await current.push(doc);
  }
  await current?.end();
  for (const [chainId, list] of witnesses) {
    const last = list[list.length - 1];
    problems.add({ type: 'truncated', chainId, seq: last.seq, detail: `the witness knows this chain up to seq ${last.seq}; the collection has none of it` });
  }

  run.onProgress?.(events);
  const ok = !problems.list.some((p) => !NOT_TAMPERING.has(p.type)) && problems.omitted === 0;
  return { ok, chains, events, problems: problems.list, omitted: problems.omitted };
}

interface ChainRun {
  run: VerifyRun;
  at: number;
  problems: Problems;
  anchor: { seq: number; hash: string } | undefined;
  witness: Checkpoint[];
  /** Positions the chain's checkpoints and witnesses name. */
  named: ReadonlySet<number>;
}

interface ChainVerifier {
  readonly id: string;
  /** The chain's next event, in (seq, _id) order. */
  push(doc: Doc): Promise<void>;
  /** The chain's last event was pushed. */
  end(): Promise<void>;
}

function chainVerifier(coll: Collection, id: string, c: ChainRun): ChainVerifier {
  const { problems, run } = c;
  const add = (type: ProblemType, seq: number | null, detail: string, doc?: Doc): void =>
    problems.add({ type, chainId: id, seq, ...(doc === undefined ? {} : { eventId: idOf(doc) }), detail });
  /** Hashes at the positions checkpoints and witnesses name (c.named), kept as the pass goes by. */
  const kept = new Map<number, string>();
  let expected: number | null = null;
  let lastHash: string | null = null;
  let lastSeq = -1;
  let stopSeq: number | null = null;
  let checkpointMs = DEFAULT_CHECKPOINT_MS;
  type Tail = { seq: number; ts: number; count: number };
  let tail = null as Tail | null;
  let w = 0; // next witness to check

  /** The stored hash at `seq`: from memory when named in advance, else (a checkpoint written since) looked up. */
  async function hashAt(seq: number): Promise<string | undefined> {
    const known = kept.get(seq);
    if (known !== undefined) return known;
    const d = await coll.findOne({ 'chain.id': id, 'chain.seq': seq }, { projection: { chain: 1 } });
    return isChain(d?.chain) ? d.chain.hash : undefined;
  }

  function gap(fromSeq: number, toSeq: number, next: Doc): void {
    const days = run.retentionDays;
    const span = fromSeq === toSeq ? `seq ${fromSeq}` : `seq ${fromSeq} to ${toSeq}`;
    // Retention deletes by age: the event after the gap must itself be near the retention horizon.
    if (days !== undefined && tsOf(next) < c.at - days * 86_400_000 + EXPIRY_SLACK_MS) {
      add('expired', fromSeq, `${span} removed by retention (older than ${days} days)`);
    } else {
      add('missing', fromSeq, `${span} missing before ${String(next.kind)} event at seq ${toSeq + 1}`, next);
    }
  }

  async function accept(doc: Doc): Promise<void> {
    const chain = doc.chain as ChainFields;
    const k = chain.seq;
    const computed = eventHash(doc);
    if (computed !== chain.hash) {
      const stub = (doc.meta as { storeError?: unknown } | undefined)?.storeError !== undefined;
      add('modified', k, stub ? 'stored as a stub: the server refused the event as written' : `the ${String(doc.kind)} event does not match its hash`, doc);
    }
    if (expected === null) {
      if (k === 0) {
        if (chain.prev !== null) add('inserted', k, 'claims the first position but names a previous event', doc);
        else if (doc.kind !== 'audit_start') add('inserted', k, `a chain must open with audit_start, not ${String(doc.kind)}`, doc);
      } else if (c.anchor !== undefined && c.anchor.seq >= k - 1) {
        if (c.anchor.seq === k - 1 && chain.prev !== c.anchor.hash) add('missing', k, 'prev is not the hash the prune recorded for the last deleted event', doc);
      } else if (run.from === undefined) {
        gap(c.anchor === undefined ? 0 : c.anchor.seq + 1, k - 1, doc);
      }
    } else if (k === expected) {
      if (chain.prev !== lastHash) add('missing', k, 'prev is not the previous event\'s hash (an event replaced or removed here)', doc);
    } else if (c.anchor !== undefined && k - 1 <= c.anchor.seq) {
      // Inside what a prune deleted (by age, not strictly by position).
      if (k - 1 === c.anchor.seq && chain.prev !== c.anchor.hash) add('missing', k, 'prev is not the hash the prune recorded for the last deleted event', doc);
    } else {
      gap(c.anchor !== undefined && c.anchor.seq >= (expected ?? 0) ? c.anchor.seq + 1 : expected, k - 1, doc);
    }
    // Only the closing checkpoints follow audit_stop.
    if (stopSeq !== null && doc.kind !== 'checkpoint') add('inserted', k, `a ${String(doc.kind)} event after the chain's audit_stop`, doc);

    for (; w < c.witness.length && c.witness[w].seq <= k; w++) {
      const wit = c.witness[w];
      const h = wit.seq === k ? chain.hash : await hashAt(wit.seq);
      if (h !== undefined && h !== wit.hash) add('modified', wit.seq, 'the witness knows another hash for this position');
    }

    expected = k + 1;
    lastHash = chain.hash;
    lastSeq = k;
    if (c.named.has(k)) kept.set(k, chain.hash);

    if (doc.kind === 'audit_start') {
      const ms = (doc.meta as { integrity?: { checkpointMs?: unknown } } | undefined)?.integrity?.checkpointMs;
      if (typeof ms === 'number' && ms > 0) checkpointMs = ms;
    }
    if (doc.kind === 'audit_stop' && stopSeq === null) stopSeq = k;
    if (doc.kind === 'checkpoint') {
      await checkCheckpoint(doc, k);
      tail = null;
    } else if (tail === null) tail = { seq: k, ts: tsOf(doc), count: 1 };
    else tail.count++;
  }

  async function checkCheckpoint(doc: Doc, k: number): Promise<void> {
    const cp = doc.checkpoint;
    if (!isCheckpoint(cp)) {
      add('bad_signature', k, 'a checkpoint event without a checkpoint', doc);
      return;
    }
    const sig = checkSignature(cp, run);
    if (sig === 'bad') {
      add('bad_signature', k, `the checkpoint of seq ${cp.seq} does not verify with the given key`, doc);
      return;
    }
    if (cp.chainId !== id || cp.seq >= k) {
      add('bad_signature', k, `the checkpoint names another position (chain ${cp.chainId}, seq ${cp.seq})`, doc);
      return;
    }
    const h = await hashAt(cp.seq);
    if (h === undefined) {
      // Deleted by a prune or by retention (reported as such), or outside the range read.
      if ((c.anchor === undefined || cp.seq > c.anchor.seq) && run.from === undefined && lastSeq < cp.seq) {
        add('truncated', cp.seq, 'the checkpoint names a position the chain no longer reaches', doc);
      }
      return;
    }
    if (h !== cp.hash) add('bad_signature', k, `the chain was rewritten: seq ${cp.seq} no longer has the hash this checkpoint signed`, doc);
  }

  // Events sharing a seq: held until the next position shows which one the chain continues from.
  let group: Doc[] = [];
  async function resolve(nextPrevs: Set<string | null>): Promise<void> {
    if (group.length === 0) return;
    let pick = 0;
    if (group.length > 1) {
      const score = (d: Doc): number => {
        const ch = d.chain as ChainFields;
        return (nextPrevs.has(ch.hash) ? 4 : 0) + (eventHash(d) === ch.hash ? 2 : 0) + (ch.prev === lastHash ? 1 : 0);
      };
      for (let i = 1; i < group.length; i++) if (score(group[i]) > score(group[pick])) pick = i;
    }
    const chosen = group[pick];
    for (let i = 0; i < group.length; i++) {
      if (i !== pick) add('inserted', (group[i].chain as ChainFields).seq, 'another event holds this position', group[i]);
    }
    group = [];
    await accept(chosen);
  }
  async function push(doc: Doc): Promise<void> {
    if (!isChain(doc.chain)) {
      add('inserted', null, 'malformed chain fields', doc);
      return;
    }
    if (group.length > 0 && (group[0].chain as ChainFields).seq !== doc.chain.seq) await resolve(new Set([doc.chain.prev]));
    group.push(doc);
  }

  async function end(): Promise<void> {
    await resolve(new Set());
    for (; w < c.witness.length; w++) {
      const wit = c.witness[w];
      add('truncated', wit.seq, `the witness knows seq ${wit.seq}; the chain ends at seq ${lastSeq}`);
    }
    // With an upper time bound the chain may go on after it: its end is not judged.
    const last = tail as Tail | null; // assigned inside accept(): the compiler sees only the initial null
    if (run.to !== undefined || stopSeq !== null || last === null || lastSeq < 0) return;
    const open = run.openChains?.has(id) === true;
    const stale = !open && last.ts < c.at - 2 * checkpointMs - STALE_GRACE_MS;
    if (stale) {
      add('truncated', lastSeq + 1, `the chain ends without audit_stop; its last ${last.count} events (from seq ${last.seq}) are not covered by a checkpoint and it has written nothing since ${new Date(last.ts).toISOString()} (a process that ended without close(), or a deleted tail)`);
    } else {
      add('unsealed_tail', last.seq, `${last.count} events after the chain's last checkpoint (the chain is still open)`);
    }
  }

  return { id, push, end };
}
