/**
 * The `integrity` and `onCheckpoint` options of createAudit, validated and turned into keys once, at
 * construction. The chain itself is always on (lib/integrity/); a key only adds signatures to its checkpoints.
 */
import { createPrivateKey, createPublicKey, KeyObject } from 'node:crypto';
import { checkKnown, fail, objectOption, positiveInt } from './options.js';
import type { Checkpoint } from './types.js';

export type CheckpointSigner =
  | { alg: 'hmac-sha256'; key: Buffer }
  | { alg: 'ed25519'; privateKey: KeyObject; publicKey: KeyObject }
  | { alg: 'none' };

export interface ResolvedIntegrity {
  signer: CheckpointSigner;
  checkpointEvery: number;
  checkpointMs: number;
  onCheckpoint: ((checkpoint: Checkpoint) => unknown) | undefined;
}

const MIN_HMAC_BYTES = 16;

export function hmacKey(name: string, v: unknown): Buffer {
  const key = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.isBuffer(v) ? v : fail(name, 'a string or Buffer', v);
  if (key.length < MIN_HMAC_BYTES) fail(name, `at least ${MIN_HMAC_BYTES} bytes`, `${key.length} bytes`);
  return Buffer.from(key);
}

export function ed25519Key(name: string, v: unknown, type: 'private' | 'public'): KeyObject {
  let key: KeyObject;
  try {
    if (v instanceof KeyObject) key = v;
    else if (typeof v === 'string' || Buffer.isBuffer(v)) key = type === 'private' ? createPrivateKey(v) : createPublicKey(v);
    else fail(name, `an Ed25519 ${type} KeyObject or PEM`, v);
  } catch (err) {
    if (err instanceof TypeError && err.message.startsWith('koa-audit:')) throw err;
    fail(name, `an Ed25519 ${type} key (${(err as Error).message})`, '[key]');
  }
  if (key.asymmetricKeyType !== 'ed25519') fail(name, `an Ed25519 key`, `a ${String(key.asymmetricKeyType ?? key.type)} key`);
  if (type === 'private' && key.type !== 'private') fail(name, 'a private key', `a ${key.type} key`);
  return key;
}

export function resolveIntegrity(integrity: unknown, onCheckpoint: unknown): ResolvedIntegrity {
  const i = objectOption('integrity', integrity);
  checkKnown(i, ['key', 'privateKey', 'checkpointEvery', 'checkpointMs'], 'integrity');
  if (i.key !== undefined && i.privateKey !== undefined) fail('integrity', 'an object with one of key or privateKey', 'both');
  let signer: CheckpointSigner = { alg: 'none' };
  if (i.key !== undefined) signer = { alg: 'hmac-sha256', key: hmacKey('integrity.key', i.key) };
  if (i.privateKey !== undefined) {
    const privateKey = ed25519Key('integrity.privateKey', i.privateKey, 'private');
    signer = { alg: 'ed25519', privateKey, publicKey: createPublicKey(privateKey) };
  }
  if (onCheckpoint !== undefined && typeof onCheckpoint !== 'function') fail('onCheckpoint', 'a function', onCheckpoint);
  return {
    signer,
    checkpointEvery: positiveInt('integrity.checkpointEvery', i.checkpointEvery, 1_000),
    checkpointMs: positiveInt('integrity.checkpointMs', i.checkpointMs, 60_000),
    onCheckpoint: onCheckpoint as ResolvedIntegrity['onCheckpoint'],
  };
}
