/**
 * Change context: why (`reason`, `meta`), on whose behalf (`onBehalfOf`), for which tenant. Three ways in, one
 * frame shape (lib/core/context.ts): `withContext(scope, fn)` runs `fn` in a child frame; a write's
 * `{ audit: { reason, meta } }` option does the same for that write; `annotate(note)` adds to the current
 * frame for the rest of it (inside a request: the request's own frame, so the request event gets it too).
 * Input is checked here, once, with errors naming the field; the event builder only copies.
 */
import { toActor } from './actor.js';
import { frameOf, storage, type AuditContext } from './context.js';
import type { AuditNote, AuditScope } from './types.js';

const MAX_REASON = 1024;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (v === null || typeof v !== 'object') return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}
const MAX_TENANT = 256;

function bad(where: string, key: string, expected: string, got: unknown): never {
  const shown = typeof got === 'string' ? JSON.stringify(got.slice(0, 80)) : got === null ? 'null' : typeof got;
  throw new TypeError(`koa-audit: ${where} "${key}" must be ${expected}, got ${shown}`);
}

export function checkReason(where: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v === '' || v.length > MAX_REASON) bad(where, 'reason', `a non-empty string of at most ${MAX_REASON} characters`, v);
  return v;
}

export function checkMeta(where: string, v: unknown): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  if (!isPlainObject(v)) bad(where, 'meta', 'a plain object', v);
  return v;
}

/** A tenant as stored: a non-empty string (capped), or null for none. */
export function tenantValue(v: unknown): string | null {
  if (typeof v === 'string' && v !== '') return v.length > MAX_TENANT ? v.slice(0, MAX_TENANT) : v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return null;
}

/** `{ reason, meta }` of an `annotate` call or a write's `{ audit }` option, checked. */
export function checkNote(where: string, v: unknown, known: readonly string[] = ['reason', 'meta']): AuditNote {
  if (!isPlainObject(v)) bad(where, 'options', 'an object { reason?, meta? }', v);
  for (const k of Object.keys(v)) if (!known.includes(k)) throw new TypeError(`koa-audit: unknown ${where} key "${k}" (known: ${known.join(', ')})`);
  const note: AuditNote = {};
  const reason = checkReason(where, v.reason);
  const meta = checkMeta(where, v.meta);
  if (reason !== undefined) note.reason = reason;
  if (meta !== undefined) note.meta = meta;
  return note;
}

/** A child of the current frame (or a frame of its own outside any request) carrying `scope`. */
export function scopedFrame(scope: AuditScope, where = 'withContext'): AuditContext {
  const s = checkNote(where, scope, ['actor', 'onBehalfOf', 'tenant', 'reason', 'meta']);
  const input = scope as AuditScope;
  const parent = storage.getStore();
  const frame: AuditContext = parent === undefined
    ? { requestId: null, ip: null, userAgent: null, ctx: null, explicitActor: null, resolve: null }
    : { ...parent };
  if (input.actor !== undefined) {
    const actor = toActor(input.actor, 'explicit');
    if (actor === null) bad(where, 'actor', 'a user with an id', input.actor);
    frame.explicitActor = actor;
  }
  if (input.onBehalfOf !== undefined) {
    const ob = input.onBehalfOf === null ? null : toActor(input.onBehalfOf, 'explicit');
    if (ob === null && input.onBehalfOf !== null) bad(where, 'onBehalfOf', 'a user with an id, or null', input.onBehalfOf);
    frame.onBehalfOf = ob;
  }
  if (input.tenant !== undefined) {
    if (input.tenant !== null && (typeof input.tenant !== 'string' || input.tenant === '')) bad(where, 'tenant', 'a non-empty string, or null', input.tenant);
    frame.tenant = tenantValue(input.tenant);
  }
  if (s.reason !== undefined) frame.reason = s.reason;
  // Meta of nested scopes adds up; the inner one wins key by key.
  if (s.meta !== undefined) frame.meta = parent?.meta === undefined ? s.meta : { ...parent.meta, ...s.meta };
  return frame;
}

/** Runs `fn` in a child frame carrying `scope`. */
export function withContext<T>(scope: AuditScope, fn: () => T): T {
  if (typeof fn !== 'function') throw new TypeError('koa-audit: withContext needs a function to run');
  return storage.run(scopedFrame(scope), fn);
}

/**
 * Adds a reason and meta to the rest of the current request (its later changes and its request event), or to
 * the rest of the current `withContext` scope outside a request. A later reason replaces an earlier one; meta
 * adds up. Outside both there is nothing to annotate: a TypeError says so.
 */
export function annotate(note: AuditNote): void {
  const n = checkNote('annotate', note);
  const current = storage.getStore();
  if (current === undefined) throw new TypeError('koa-audit: annotate() runs inside a request or a withContext scope');
  const target = (current.ctx !== null ? frameOf.get(current.ctx) : undefined) ?? current;
  const prev = target.note;
  target.note = {
    reason: n.reason ?? prev?.reason,
    meta: n.meta === undefined ? prev?.meta : prev?.meta === undefined ? n.meta : { ...prev.meta, ...n.meta },
  };
}
