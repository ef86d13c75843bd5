/** Builds audit events in the stored shape of the contract, for inserting straight into the collection. */
import { mongo } from 'mongoose';
import type { AuditKind } from '../../lib/core/types.js';

export interface RawEvent {
  _id: mongo.ObjectId;
  ts: Date;
  kind: AuditKind;
  outcome: 'success' | 'failure';
  actor: { id: string; name?: string; via: string } | null;
  requestId: string | null;
  ip: string | null;
  userAgent: string | null;
  [key: string]: unknown;
}

const KINDS: AuditKind[] = ['request', 'create', 'update', 'delete', 'login', 'login_failed', 'logout'];

/**
 * `n` varied events: every kind, five actors and anonymous ones, two models, several requests, both outcomes,
 * four IPs; two events share each millisecond so that the `_id` tie-break is exercised. Oldest first.
 */
export function sampleEvents(n: number, start = Date.UTC(2026, 0, 1), stepMs = 1000): RawEvent[] {
  const out: RawEvent[] = [];
  for (let i = 0; i < n; i++) {
    const kind = KINDS[i % KINDS.length];
    const ts = new Date(start + Math.floor(i / 2) * stepMs);
    const e: RawEvent = {
      _id: new mongo.ObjectId(),
      ts,
      kind,
      outcome: kind === 'login_failed' || i % 5 === 0 ? 'failure' : 'success',
      actor: i % 6 === 5 ? null : { id: `u${i % 5}`, name: `User ${i % 5}`, via: 'state' },
      requestId: `r${Math.floor(i / 3)}`,
      ip: `10.0.0.${i % 4}`,
      userAgent: 'test-agent',
    };
    if (kind === 'request') {
      e.http = { method: i % 2 ? 'GET' : 'POST', path: `/p/${i}`, route: '/p/:id', query: '', status: e.outcome === 'failure' ? 500 : 200, durationMs: 3 };
      // Some clients send their own X-Request-Id, and several send the same one.
      if (i % 3 !== 0) (e.http as Record<string, unknown>).clientRequestId = `client-${i % 5}`;
      if (e.outcome === 'failure') e.error = { name: 'Error', message: `boom ${i}`, status: 500, stack: `Error: boom ${i}\n    at x` };
    } else if (kind === 'create' || kind === 'update' || kind === 'delete') {
      e.model = i % 2 ? 'Post' : 'User';
      e.collectionName = i % 2 ? 'posts' : 'users';
      e.documentId = `d${i % 10}`;
      e.operation = kind === 'create' ? 'save' : kind === 'update' ? 'updateOne' : 'deleteOne';
      e.changes = [{ path: 'title', from: kind === 'create' ? null : `old ${i}`, to: kind === 'delete' ? null : `new ${i}` }];
    } else {
      e.provider = 'local';
      e.identifier = `user${i % 5}`;
      if (kind === 'login_failed') e.reason = 'bad password';
    }
    out.push(e);
  }
  return out;
}

/** Newest first, ties broken by `_id`: the order of the query API. */
export function newestFirst(a: RawEvent, b: RawEvent): number {
  return b.ts.getTime() - a.ts.getTime() || (b._id.toHexString() < a._id.toHexString() ? -1 : b._id.toHexString() > a._id.toHexString() ? 1 : 0);
}

export function ids(list: { _id: { toString(): string } }[]): string[] {
  return list.map((e) => e._id.toString());
}
