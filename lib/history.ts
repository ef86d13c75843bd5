/** Document history and `versionAt`. (Stub: filled in by the change-audit issue.) */
import type { Model } from 'mongoose';
import type { AuditCore } from './auditor.js';
import type { AuditEvent } from './types.js';

export async function history(_core: AuditCore, _model: string | Model<never>, _id: unknown): Promise<AuditEvent[]> {
  throw new Error('koa-audit: history is not implemented yet');
}

export async function versionAt(_core: AuditCore, _model: string | Model<never>, _id: unknown, _date: Date): Promise<Record<string, unknown> | null> {
  throw new Error('koa-audit: versionAt is not implemented yet');
}
