/** The query API and pruning. (Stub: filled in by the query issue.) */
import type { AuditCore } from './auditor.js';
import type { AuditEvent, AuditKind, AuditOutcome } from './types.js';

export interface QueryFilter {
  kind?: AuditKind | AuditKind[];
  actorId?: string;
  model?: string;
  documentId?: string;
  requestId?: string;
  outcome?: AuditOutcome;
  ip?: string;
  from?: Date;
  to?: Date;
  limit?: number;
  after?: string;
}

export interface QueryPage {
  items: AuditEvent[];
  next: string | null;
}

export async function query(_core: AuditCore, _filter?: QueryFilter): Promise<QueryPage> {
  throw new Error('koa-audit: query is not implemented yet');
}

export async function prune(_core: AuditCore, _options: { before: Date }): Promise<number> {
  throw new Error('koa-audit: prune is not implemented yet');
}
