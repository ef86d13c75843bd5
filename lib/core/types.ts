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
  | 'loss';

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
  requestBody?: StoredValue;
}

export interface ErrorInfo {
  name: string;
  message: string;
  status: number | null;
  stack: string | null;
}

export interface Change {
  path: string;
  from: StoredValue;
  to: StoredValue;
}

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
  changes?: Change[];
  /** Set on a multi-document write above the per-operation cap: one summary event instead of one per document. */
  summary?: { filter: StoredValue; update: StoredValue; matched: number };
  provider?: string;
  identifier?: string | null;
  reason?: string;
  meta?: { [key: string]: StoredValue };
}
