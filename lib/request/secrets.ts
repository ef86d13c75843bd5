/**
 * What the request itself says is secret: its route parameters with a secret name (`/reset/:token`), and the
 * secret values it carries (those parameters, secret query parameters, secret body fields), which an error
 * message may repeat (`throw new Error('bad token ' + ctx.params.token)`).
 */
import type { Context } from 'koa';
import { REDACTED, type Redactor } from '../core/redact.js';

const MAX_TEXT_BODY = 256 * 1024;

/** A route pattern's parameters (`:name`, `*name`), remembered per pattern: routes are few, requests many. */
const routeParams = new Map<string, string[]>();
const PARAM = /[:*]([A-Za-z_$][\w$]*)/g;

function paramsOf(route: string): string[] {
  let names = routeParams.get(route);
  if (names === undefined) {
    names = [...route.matchAll(PARAM)].map((m) => m[1]);
    if (routeParams.size < 10_000) routeParams.set(route, names);
  }
  return names;
}

function secretParam(name: string, redactor: Redactor, extra: ReadonlySet<string>): boolean {
  return extra.has(name) || redactor.isSecretParam(name);
}

function decoded(segment: string): string {
  if (!segment.includes('%')) return segment;
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}

/**
 * `ctx.path` with each segment matched by a secret route parameter replaced by `[REDACTED]`: by position, where
 * the pattern and the path have as many segments, and by value (the router's `ctx.params`) everywhere.
 */
export function storedPath(ctx: Context, redactor: Redactor, extra: ReadonlySet<string>): string {
  const path = ctx.path;
  const route = (ctx as { _matchedRoute?: unknown })._matchedRoute;
  if (typeof route !== 'string' || (!route.includes(':') && !route.includes('*'))) return path;
  const secret = paramsOf(route).filter((n) => secretParam(n, redactor, extra));
  if (secret.length === 0) return path;

  const segments = path.split('/');
  const pattern = route.split('/');
  if (pattern.length === segments.length) {
    for (let i = 0; i < pattern.length; i++) {
      if (secret.some((n) => pattern[i].includes(`:${n}`) || pattern[i].includes(`*${n}`))) segments[i] = REDACTED;
    }
  }
  const params = (ctx as { params?: Record<string, unknown> }).params;
  let out = segments.join('/');
  if (params !== null && typeof params === 'object') {
    for (const name of secret) {
      const v = params[name];
      if (typeof v !== 'string' || v === '') continue;
      const parts = out.split('/');
      for (let i = 0; i < parts.length; i++) if (parts[i] === v || decoded(parts[i]) === v) parts[i] = REDACTED;
      out = parts.join('/');
      // A value spanning segments (`*path`), or a segment that only contains it (`:token.json`).
      for (const form of [v, encodeURI(v), encodeURIComponent(v)]) if (form.length >= 3 && out.includes(form)) out = out.replaceAll(form, REDACTED);
    }
  }
  return out;
}

function collect(value: unknown, out: string[], depth: number): void {
  if (out.length > 100) return;
  if (typeof value === 'string' || typeof value === 'number') {
    out.push(String(value));
    return;
  }
  if (value === null || typeof value !== 'object' || depth > 4) return;
  for (const v of Array.isArray(value) ? value : Object.values(value)) collect(v, out, depth + 1);
}

function secretFields(value: unknown, redactor: Redactor, out: string[], depth: number): void {
  if (value === null || typeof value !== 'object' || depth > 4 || out.length > 100) return;
  if (Array.isArray(value)) {
    for (const v of value) secretFields(v, redactor, out, depth + 1);
    return;
  }
  for (const [k, v] of Object.entries(value)) {
    if (redactor.isSecret(k)) collect(v, out, depth + 1);
    else secretFields(v, redactor, out, depth + 1);
  }
}

/** The secret values this request carries (see the module comment). Read only when an error is recorded. */
export function requestSecrets(ctx: Context, redactor: Redactor, extra: ReadonlySet<string>): string[] {
  const out: string[] = [];
  const params = (ctx as { params?: Record<string, unknown> }).params;
  if (params !== null && typeof params === 'object') {
    for (const [k, v] of Object.entries(params)) if (secretParam(k, redactor, extra)) collect(v, out, 0);
  }
  if (ctx.querystring !== '') {
    for (const [k, v] of new URLSearchParams(ctx.querystring)) if (redactor.isSecretParam(k)) out.push(v);
  }
  const body = (ctx.request as { body?: unknown }).body;
  // A text body is read for its secret fields only within a bound: this runs on the error path, not for free.
  if (typeof body === 'string' && body.length <= MAX_TEXT_BODY) {
    if (body.trimStart().startsWith('{')) {
      try {
        secretFields(JSON.parse(body), redactor, out, 0);
      } catch {
        // not JSON after all
      }
    } else if (body.includes('=')) for (const [k, v] of new URLSearchParams(body)) if (redactor.isSecret(k)) out.push(v);
  } else if (body !== null && typeof body === 'object' && !Buffer.isBuffer(body) && !(body instanceof Uint8Array)) {
    secretFields(body, redactor, out, 0);
  }
  return out;
}
