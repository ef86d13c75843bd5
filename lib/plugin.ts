/** Change auditing: the mongoose plugin. (Stub: filled in by the change-audit issue.) */
import type { Schema } from 'mongoose';
import type { AuditCore } from './auditor.js';

export interface PluginOptions {
  /** Field paths to audit (default: every field). */
  include?: string[];
  /** Field paths never audited (default: `__v`). */
  exclude?: string[];
  /** Extra key names redacted in this schema's changes. */
  redact?: string[];
  /** Read the pre-image before updates (default true). */
  fetchBefore?: boolean;
}

export function createPlugin(_core: AuditCore): (schema: Schema, options?: PluginOptions) => void {
  return () => {
    throw new Error('koa-audit: the change plugin is not implemented yet');
  };
}
