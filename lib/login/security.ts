/**
 * Security events beyond logins, named with the OWASP Logging Vocabulary (`authz_fail`, `authn_token_revoked`,
 * `user_created`, ...): `auditor.security(name, { ctx, user, target, reason, meta })` stores one event of kind
 * `security` with its `name`. The vocabulary is a TypeScript interface so that an app can add its own names by
 * declaration merging; at run time any name of the vocabulary's shape (lower-case words joined by `_`) is accepted.
 *
 * The acting user is the request's actor unless `user` names one. `target` is reduced to `{ id, type, name }` (a whole
 * user document passed as the target must not drag its password hash into the trail), and `from`/`to` (a role
 * change) become the event's `changes`, so the viewer shows them as a diff.
 */
import type { Context } from 'koa';
import { toActor } from '../core/actor.js';
import type { AuditCore, EventFields } from '../core/core.js';
import { frameFor, kAuthzFailRecorded } from '../core/context.js';
import { capString } from '../core/safe.js';
import type { AuditOutcome, StoredValue } from '../core/types.js';

/**
 * The known names: the OWASP Logging Vocabulary (https://cheatsheetseries.owasp.org/cheatsheets/Logging_Vocabulary_Cheat_Sheet.html)
 * plus the MFA events it leaves to applications. Add your own with declaration merging:
 *
 *   declare module 'koa-audit' { interface SecurityEventNames { report_exported: true } }
 */
export interface SecurityEventNames {
  authn_login_success: true;
  authn_login_successafterfail: true;
  authn_login_fail: true;
  authn_login_fail_max: true;
  authn_login_lock: true;
  authn_password_change: true;
  authn_password_change_fail: true;
  authn_impossible_travel: true;
  authn_token_created: true;
  authn_token_revoked: true;
  authn_token_reuse: true;
  authn_token_delete: true;
  authn_mfa_enabled: true;
  authn_mfa_disabled: true;
  authn_mfa_success: true;
  authn_mfa_fail: true;
  authn_mfa_recovery_used: true;
  authz_fail: true;
  authz_change: true;
  authz_admin: true;
  excess_rate_limit_exceeded: true;
  upload_complete: true;
  upload_stored: true;
  upload_validation: true;
  upload_delete: true;
  input_validation_fail: true;
  malicious_excess_404: true;
  malicious_extraneous: true;
  malicious_attack_tool: true;
  malicious_cors: true;
  malicious_direct_reference: true;
  privilege_permissions_changed: true;
  sensitive_create: true;
  sensitive_read: true;
  sensitive_update: true;
  sensitive_delete: true;
  sequence_fail: true;
  session_created: true;
  session_renewed: true;
  session_expired: true;
  session_use_after_expire: true;
  sys_startup: true;
  sys_shutdown: true;
  sys_restart: true;
  sys_crash: true;
  sys_monitor_disabled: true;
  sys_monitor_enabled: true;
  user_created: true;
  user_updated: true;
  user_archived: true;
  user_deleted: true;
}

export type SecurityEventName = keyof SecurityEventNames & string;

/** The names whose events are failures unless `outcome` says otherwise: denials, attacks, failed attempts. */
const FAILURES = new Set<string>([
  'authn_login_fail', 'authn_login_fail_max', 'authn_login_lock', 'authn_password_change_fail', 'authn_impossible_travel',
  'authn_token_reuse', 'authn_mfa_fail', 'authz_fail', 'excess_rate_limit_exceeded', 'upload_validation',
  'input_validation_fail', 'sequence_fail', 'session_use_after_expire', 'sys_crash',
]);

export const KNOWN_SECURITY_NAMES: readonly SecurityEventName[] = Object.freeze([
  'authn_login_success', 'authn_login_successafterfail', 'authn_login_fail', 'authn_login_fail_max', 'authn_login_lock',
  'authn_password_change', 'authn_password_change_fail', 'authn_impossible_travel', 'authn_token_created',
  'authn_token_revoked', 'authn_token_reuse', 'authn_token_delete', 'authn_mfa_enabled', 'authn_mfa_disabled',
  'authn_mfa_success', 'authn_mfa_fail', 'authn_mfa_recovery_used', 'authz_fail', 'authz_change', 'authz_admin',
  'excess_rate_limit_exceeded', 'upload_complete', 'upload_stored', 'upload_validation', 'upload_delete',
  'input_validation_fail', 'malicious_excess_404', 'malicious_extraneous', 'malicious_attack_tool', 'malicious_cors',
  'malicious_direct_reference', 'privilege_permissions_changed', 'sensitive_create', 'sensitive_read', 'sensitive_update',
  'sensitive_delete', 'sequence_fail', 'session_created', 'session_renewed', 'session_expired', 'session_use_after_expire',
  'sys_startup', 'sys_shutdown', 'sys_restart', 'sys_crash', 'sys_monitor_disabled', 'sys_monitor_enabled',
  'user_created', 'user_updated', 'user_archived', 'user_deleted',
] satisfies SecurityEventName[]);

export interface SecurityInput {
  /** The request; optional inside the request's async context. */
  ctx?: Context;
  /** Who acted (an object with `id`/`_id`/`sub`, or an id). Default: the request's actor. */
  user?: unknown;
  /** What the event is about: a user, a token id, a route. Objects are reduced to `{ id, type, name }`. */
  target?: unknown;
  reason?: string;
  /** `authz_change` and the like: the value before and after (a role, a permission list). */
  from?: unknown;
  to?: unknown;
  /** The path of `from`/`to` in the event's `changes`. Default `'privileges'`. */
  path?: string;
  /** Default: `'failure'` for denials, attacks and failed attempts (`authz_fail`, `*_fail`, ...), else `'success'`. */
  outcome?: AuditOutcome;
  meta?: Record<string, unknown>;
}

const NAME_SHAPE = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$/;
const MAX_NAME = 64;
const MAX_TEXT = 512;

function text(v: unknown, max: number): string | undefined {
  if (typeof v === 'string') return v === '' ? undefined : capString(v, max);
  if (typeof v === 'number' || typeof v === 'bigint') return String(v);
  if (v !== null && typeof v === 'object' && typeof (v as { toHexString?: unknown }).toHexString === 'function') {
    return (v as { toHexString: () => string }).toHexString();
  }
  return undefined;
}

/** `{ id, type, name }` of a target: never the whole object (a user document carries its password hash). */
export function targetOf(v: unknown): StoredValue | undefined {
  if (v === undefined || v === null) return undefined;
  const plain = text(v, MAX_TEXT);
  if (plain !== undefined) return plain;
  if (typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  const out: Record<string, string> = {};
  const id = text(o.id ?? o._id ?? o.sub, MAX_TEXT);
  if (id !== undefined) out.id = id;
  const ctor = (o.constructor as { modelName?: unknown } | undefined)?.modelName;
  const type = text(o.type, MAX_TEXT) ?? text(ctor, MAX_TEXT);
  if (type !== undefined) out.type = type;
  const name = text(o.username ?? o.name ?? o.email, MAX_TEXT);
  if (name !== undefined) out.name = name;
  return Object.keys(out).length === 0 ? undefined : out;
}

export function createSecurity(core: AuditCore) {
  return function security(name: SecurityEventName, input: SecurityInput = {}): Promise<void> {
    try {
      if (typeof name !== 'string' || name.length > MAX_NAME || !NAME_SHAPE.test(name)) {
        throw new TypeError(`koa-audit: security event name must be lower-case words joined by _ (at most ${MAX_NAME} characters, e.g. 'authz_fail'), got ${JSON.stringify(String(name).slice(0, 80))}`);
      }
      if (input === null || typeof input !== 'object') throw new TypeError('koa-audit: security needs an input object (or none)');
      const i = input;
      if (i.outcome !== undefined && i.outcome !== 'success' && i.outcome !== 'failure') {
        throw new TypeError(`koa-audit: security option "outcome" must be 'success' or 'failure', got ${String(i.outcome)}`);
      }
      const fields: EventFields = { kind: 'security', outcome: i.outcome ?? (FAILURES.has(name) ? 'failure' : 'success'), name };
      const target = targetOf(i.target);
      if (target !== undefined) fields.target = target;
      const reason = text(i.reason, MAX_TEXT);
      if (reason !== undefined) fields.reason = reason;
      if (i.from !== undefined || i.to !== undefined) {
        const path = text(i.path, 256) ?? 'privileges';
        fields.changes = [{ path, from: (i.from ?? null) as StoredValue, to: (i.to ?? null) as StoredValue }];
      }
      if (i.meta !== null && typeof i.meta === 'object' && !Array.isArray(i.meta)) fields.meta = i.meta as EventFields['meta'];
      let actor;
      if (i.user !== undefined && i.user !== null) {
        actor = toActor(i.user, 'explicit');
        if (actor === null) throw new TypeError('koa-audit: security option "user" needs an id (id, _id or sub)');
      }
      if (name === 'authz_fail') {
        const ctx = i.ctx ?? frameFor(undefined)?.ctx ?? undefined;
        if (ctx != null) (ctx as unknown as Record<symbol, unknown>)[kAuthzFailRecorded] = true;
      }
      return core.record(fields, actor === undefined ? { ctx: i.ctx } : { ctx: i.ctx, actor });
    } catch (err) {
      return Promise.reject(err);
    }
  };
}

export type Security = ReturnType<typeof createSecurity>;
