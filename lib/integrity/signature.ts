/**
 * Checkpoint signatures. The signed bytes are the canonical form (canonical.ts) of `{ chainId, seq, hash, ts }`:
 * HMAC-SHA256 in lowercase hex, or Ed25519 (node:crypto) in base64.
 */
import { createHmac, sign, timingSafeEqual, verify, type KeyObject } from 'node:crypto';
import type { CheckpointSigner } from '../core/integrity-options.js';
import type { Checkpoint } from '../core/types.js';
import { canonical } from './canonical.js';

export type CheckpointHead = Pick<Checkpoint, 'chainId' | 'seq' | 'hash' | 'ts'>;

function payload(head: CheckpointHead): Buffer {
  return Buffer.from(canonical({ chainId: head.chainId, seq: head.seq, hash: head.hash, ts: head.ts }), 'utf8');
}

export function signCheckpoint(signer: CheckpointSigner, head: CheckpointHead): Checkpoint {
  const base = { chainId: head.chainId, seq: head.seq, hash: head.hash, ts: head.ts };
  switch (signer.alg) {
    case 'hmac-sha256':
      return { ...base, alg: signer.alg, sig: createHmac('sha256', signer.key).update(payload(head)).digest('hex') };
    case 'ed25519':
      return { ...base, alg: signer.alg, sig: sign(null, payload(head), signer.privateKey).toString('base64') };
    case 'none':
      return { ...base, alg: 'none', sig: null };
  }
}

/** The keys a verifier holds. */
export interface VerifyKeys {
  key?: Buffer;
  publicKey?: KeyObject;
}

/**
 * `'ok'`, `'bad'`, or `'unchecked'` when the verifier holds no key of the checkpoint's kind (an unsigned
 * checkpoint is unchecked too: it still pins the chain's hash, but anyone could have written it).
 */
export function checkSignature(cp: Checkpoint, keys: VerifyKeys): 'ok' | 'bad' | 'unchecked' {
  try {
    if (cp.alg === 'hmac-sha256') {
      if (keys.key === undefined) return 'unchecked';
      if (typeof cp.sig !== 'string') return 'bad';
      const want = createHmac('sha256', keys.key).update(payload(cp)).digest();
      const got = Buffer.from(cp.sig, 'hex');
      return got.length === want.length && timingSafeEqual(got, want) ? 'ok' : 'bad';
    }
    if (cp.alg === 'ed25519') {
      if (keys.publicKey === undefined) return 'unchecked';
      if (typeof cp.sig !== 'string') return 'bad';
      return verify(null, payload(cp), keys.publicKey, Buffer.from(cp.sig, 'base64')) ? 'ok' : 'bad';
    }
    // An unsigned checkpoint where the verifier expects signatures is what an attacker would write.
    if (cp.alg === 'none') return keys.key !== undefined || keys.publicKey !== undefined ? 'bad' : 'unchecked';
    return 'bad';
  } catch {
    return 'bad';
  }
}
