/**
 * The options of `auditor.verify()`, checked at the call (a typo must not turn a check off), with the auditor's
 * own keys and retention as defaults.
 */
import type { KeyObject } from 'node:crypto';
import { ed25519Key, hmacKey, type CheckpointSigner } from '../core/integrity-options.js';
import { checkKnown, fail, objectOption } from '../core/options.js';
import type { Checkpoint } from '../core/types.js';
import type { VerifyRun } from './verify.js';

export interface VerifyOptions {
  /** Only events at or after this time (the first event in range is taken as the chain's anchor). */
  from?: Date;
  /** Only events before this time (chain ends are then not judged). */
  to?: Date;
  /** Only this chain. */
  chainId?: string;
  /** HMAC key the checkpoints were signed with. Default: the auditor's `integrity.key`. */
  key?: string | Buffer;
  /** Ed25519 public key (KeyObject or PEM). Default: the public half of the auditor's `integrity.privateKey`. */
  publicKey?: KeyObject | string | Buffer;
  /** Checkpoints kept elsewhere (`onCheckpoint` copies): the chains must still reach them, with the same hashes. */
  witness?: Iterable<Checkpoint>;
  /** The time retention and staleness are judged at (verifying a backup as of its date). Default: now. */
  at?: Date;
  /** Problems listed at most; further ones are counted in `omitted`. Default 1,000. */
  maxProblems?: number;
  /** Called with the number of events read so far, every 10,000 events and at the end. */
  onProgress?: (events: number) => void;
}

const KNOWN = ['from', 'to', 'chainId', 'key', 'publicKey', 'witness', 'at', 'maxProblems', 'onProgress'] as const;

function date(name: string, v: unknown): Date | undefined {
  if (v === undefined) return undefined;
  if (!(v instanceof Date) || Number.isNaN(v.getTime())) fail(`verify.${name}`, 'a valid Date', v);
  return v;
}

export function verifyRun(input: unknown, signer: CheckpointSigner, retentionDays: number | undefined): VerifyRun {
  const o = objectOption('verify', input);
  checkKnown(o, KNOWN, 'verify');
  const run: VerifyRun = { from: date('from', o.from), to: date('to', o.to), at: date('at', o.at), retentionDays };
  if (o.chainId !== undefined) {
    if (typeof o.chainId !== 'string' || o.chainId === '') fail('verify.chainId', 'a non-empty string', o.chainId);
    run.chainId = o.chainId;
  }
  if (o.key !== undefined) run.key = hmacKey('verify.key', o.key);
  else if (signer.alg === 'hmac-sha256') run.key = signer.key;
  if (o.publicKey !== undefined) run.publicKey = ed25519Key('verify.publicKey', o.publicKey, 'public');
  else if (signer.alg === 'ed25519') run.publicKey = signer.publicKey;
  if (o.witness !== undefined) {
    if (o.witness === null || typeof (o.witness as Iterable<unknown>)[Symbol.iterator] !== 'function') fail('verify.witness', 'an array of checkpoints', o.witness);
    run.witness = o.witness as Iterable<Checkpoint>;
  }
  if (o.maxProblems !== undefined) {
    if (typeof o.maxProblems !== 'number' || !Number.isInteger(o.maxProblems) || o.maxProblems < 0) fail('verify.maxProblems', 'a non-negative integer', o.maxProblems);
    run.maxProblems = o.maxProblems;
  }
  if (o.onProgress !== undefined) {
    if (typeof o.onProgress !== 'function') fail('verify.onProgress', 'a function', o.onProgress);
    run.onProgress = o.onProgress as (events: number) => void;
  }
  return run;
}
