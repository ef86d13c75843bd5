import type { KeyObject } from 'node:crypto';
import type { Types } from 'mongoose';

/** What happened. `loss` records events the library could not keep (queue full with `onFull: 'drop'`). */
export type AuditKind =
  | 'request'
  | 'create'
  | 'update'
  | 'delete'
  | 'login'
  | 'login_failed'
  | 'logout'
  | 'security'
  | 'loss'
  | 'audit_start'
  | 'audit_stop'
  | 'checkpoint'
  | 'prune';

export type AuditOutcome = 'success' | 'failure';

/** How an actor's identity was established. */
export type ActorVia = 'state' | 'jwt' | 'resolver' | 'explicit' | 'system';

export interface Actor {
  id: string;
  name?: string;
  via: ActorVia;
}

/** What callers may pass as an actor: `via` is filled in by the library. */
export interface ActorInput {
  id: unknown;
  name?: unknown;
}

/** A JSON-like value as stored in the audit collection (see lib/safe.ts). */
export type StoredValue =
  | string
  | number
  | boolean
  | null
  | StoredValue[]
  | { [key: string]: StoredValue };

export interface HttpInfo {
  method: string;
  path: string;
  route: string | null;
  query: string;
  status: number;
  durationMs: number;
  aborted?: boolean;
  /** A well-formed `X-Request-Id` the client sent (searchable; the request id only with `trustRequestId`). */
  clientRequestId?: string;
  requestBody?: StoredValue;
  /** The request read the audit trail (auditRouter): recorded like any request, hidden by the viewer by default. */
  auditRead?: boolean;
}

export interface ErrorInfo {
  name: string;
  message: string;
  status: number | null;
  stack: string | null;
  /** The driver's or the error's own code (`11000` for a duplicate key). */
  code?: number | string;
  /** Validation, cast and duplicate-key errors: each path involved and its validator kind; never its value. */
  errors?: { path: string; kind: string | null; name: string }[];
}

/** A field's change: its value before and after (null: absent). */
export interface ValueChange {
  path: string;
  from: StoredValue;
  to: StoredValue;
  /** Set on a redacted change whose secret had a value before and after (both sides read `'[REDACTED]'`). */
  changed?: true;
  added?: undefined;
  removed?: undefined;
}

/**
 * An array of scalars or ObjectIds that changed: the elements added and removed (set semantics). `from`/`to`
 * are kept too while both arrays are small (ARRAY_FULL_CAP elements), or when the new order cannot be told from
 * the elements alone (a reorder, duplicates), so that `versionAt` always rebuilds the array as it was.
 */
export interface ArrayChange {
  path: string;
  added: StoredValue[];
  removed: StoredValue[];
  from?: StoredValue;
  to?: StoredValue;
  changed?: undefined;
}

/** One entry of `changes`: every key of both shapes can be read (absent ones are undefined). */
export type Change = ValueChange | ArrayChange;

/** One audit event, as stored and as returned by the query API. */
export interface AuditEvent {
  _id: Types.ObjectId;
  ts: Date;
  kind: AuditKind;
  outcome: AuditOutcome;
  actor: Actor | null;
  requestId: string | null;
  ip: string | null;
  userAgent: string | null;
  http?: HttpInfo;
  error?: ErrorInfo;
  model?: string;
  collectionName?: string;
  documentId?: string;
  operation?: string;
  /** A readable name of the changed document (plugin option `label`). */
  documentLabel?: string;
  changes?: Change[];
  /** Set on a multi-document write above the per-operation cap: one summary event instead of one per document. */
  summary?: { filter: StoredValue; update: StoredValue; matched: number };
  provider?: string;
  identifier?: string | null;
  reason?: string;
  /** kind `security`: the OWASP Logging Vocabulary name (`authz_fail`, `authn_token_revoked`, ...). */
  name?: string;
  /** kind `security`: what the event was about (a user, a token, a route), as `{ id?, type?, name? }` or a string. */
  target?: StoredValue;
  meta?: { [key: string]: StoredValue };
  /** Impersonation: whom the accountable `actor` acted as. */
  onBehalfOf?: Actor;
  tenant?: string;
  /** W3C trace context: from a valid `traceparent`, or the active OpenTelemetry span. */
  traceId?: string;
  spanId?: string;
  /** Tamper evidence (lib/integrity/): this event's position in its auditor's hash chain. */
  chain?: ChainFields;
  /** kind `checkpoint`: the signed statement of a chain's head. */
  checkpoint?: Checkpoint;
  /** kind `prune`: what a prune deleted, and where each chain it cut now starts. */
  prune?: PruneRecord;
}

/** `createAudit({ integrity })`. */
export interface IntegrityOptions {
  /** HMAC-SHA256 secret (at least 16 bytes) that signs checkpoints. */
  key?: string | Buffer;
  /** Ed25519 private key (KeyObject or PEM) that signs checkpoints; verifiers need only its public key. */
  privateKey?: KeyObject | string | Buffer;
  /** A checkpoint after this many events of the chain. Default 1,000. */
  checkpointEvery?: number;
  /** A checkpoint at least this often while events flow, in ms. Default 60,000. */
  checkpointMs?: number;
}

/** An event's position in a hash chain: one chain per auditor per process run. */
export interface ChainFields {
  id: string;
  seq: number;
  /** The previous event's `hash`; null at seq 0. */
  prev: string | null;
  /** SHA-256 (hex) of the canonical event without `chain.hash` (lib/integrity/canonical.ts). */
  hash: string;
}

/** A signed statement "chain `chainId` had reached `seq`, whose hash is `hash`, at `ts`". */
export interface Checkpoint {
  chainId: string;
  seq: number;
  hash: string;
  /** ISO 8601. */
  ts: string;
  alg: 'hmac-sha256' | 'ed25519' | 'none';
  /** hex (HMAC) or base64 (Ed25519) over the canonical `{ chainId, seq, hash, ts }`; null with alg 'none'. */
  sig: string | null;
}

export interface PruneRecord {
  /** ISO 8601: events older than this were deleted. */
  before: string;
  deleted: number;
  /** True when `before` was later than the retention period allows (`prune({ before, force: true })`). */
  force: boolean;
  /** For each chain the prune cut: the last deleted position, where the remaining chain is verified from. */
  chains: { id: string; seq: number; hash: string }[];
}

/** Why a change is made, and what else to record with it: `{ audit: { reason, meta } }`, withContext, annotate. */
export interface AuditNote {
  reason?: string;
  meta?: Record<string, unknown>;
}

/** What `withContext` sets for everything `fn` does. */
export interface AuditScope extends AuditNote {
  actor?: ActorInput;
  /** Whom the actor acts as; null clears an outer one. */
  onBehalfOf?: ActorInput | null;
  /** The tenant of the scope; null clears an outer one. */
  tenant?: string | null;
}

/** An event in its stored form, as built by the core and handed to the store. */
export type StoredDoc = Record<string, unknown>;

/** What happens when the in-memory queue is full. */
export type OnFull = 'spool' | 'block' | 'drop';

export interface AuditStats {
  /** Events handed to the writer. */
  accepted: number;
  /** Events confirmed stored (including duplicates of an earlier attempt). */
  stored: number;
  /** Batch write attempts that failed and were retried. */
  retried: number;
  /** Events lost because the queue was full with `onFull: 'drop'` (or the spool could not be written). */
  dropped: number;
  /** Events written to the spool. */
  spooled: number;
  /** Events in memory now. */
  queued: number;
  /** True while writes have been failing for longer than the degraded threshold. */
  degraded: boolean;
  /** One entry per sink (option `sinks`), by name. */
  sinks?: Record<string, SinkStats>;
}

/** How one sink is doing. Every count is of events. */
export interface SinkStats {
  /** Handed to the sink after the store took them. */
  accepted: number;
  /** Confirmed by the destination. */
  delivered: number;
  /** Failed attempts (each retried after a backoff). */
  retried: number;
  /** Lost to this sink (refused by the destination, or neither queue nor spool could hold them); each loss is recorded as a `loss` event. */
  dropped: number;
  /** Written to the sink's spool. */
  spooled: number;
  /** In memory now. */
  queued: number;
  /** True while the destination is failing. */
  failing: boolean;
}

export interface CloseResult {
  /** Events that could not be stored before the timeout (moved to the spool when there is one). */
  unwritten: number;
}

export interface AuditorEvents {
  /** A write failed (it is retried); never thrown into the code that recorded the event. */
  error: [err: Error];
  /** Writes have been failing for longer than `degradedAfterMs`. */
  degraded: [err: Error];
  /** Writes succeed again after `degraded`. */
  recovered: [];
}
