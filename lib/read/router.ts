/**
 * `auditRouter()`: a read-only HTTP API over the audit trail, and the viewer page, as a @koa/router Router.
 *
 *   GET {prefix}/                                   the viewer (HTML)
 *   GET {prefix}/api/events?kind=&actor=&...        { items, next }, newest first
 *   GET {prefix}/api/events/:id                     one event, 404 when unknown, 400 when :id is not an ObjectId
 *   GET {prefix}/api/history/:model/:documentId     { model, documentId, items }, oldest first
 *   GET {prefix}/api/verify?from=&to=&chainId=       verify() over that range: { ok, chains, events, problems, omitted }
 *
 * Every route asks `authorize(ctx)` first; anything but `true` answers 403 before the database is touched.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type { Model } from 'mongoose';
import { checkKnown, fail, fnOption, routePrefix } from '../core/options.js';
import { markAuditRead } from '../core/context.js';
import { BOOLEAN_KEYS, FILTER_KEYS, ISO_DATE_HINT, parseIsoDate, QueryFilterError, type QueryFilter, type QueryPage } from './query.js';
import { eventToJson } from '../core/json.js';
import type { AuditEvent } from '../core/types.js';
import type { VerifyResult } from '../integrity/verify.js';
import type { VerifyOptions } from '../integrity/verify-options.js';
import { VIEWER_CSP, VIEWER_HTML } from './viewer.js';

/** What the router reads through: an auditor (`audit`, or one made by `createAudit`) has all of it. */
export interface AuditReader {
  readonly model: Model<AuditEvent>;
  query(filter?: QueryFilter): Promise<QueryPage>;
  history(model: string, documentId: unknown): Promise<AuditEvent[]>;
  /** When present (an auditor has it), a refused request is recorded as the security event `authz_fail`. */
  security?(name: 'authz_fail', input: { ctx: Context; target: { type: string; id: string }; reason: string }): Promise<void>;
  /** Serves `/api/verify` (the viewer's "Verify this range"); without it that route answers 501. */
  verify?(options?: VerifyOptions): Promise<VerifyResult>;
}

export interface AuditRouterOptions {
  /** The auditor whose collection is read (`audit` or one made by `createAudit`). */
  auditor: AuditReader;
  /** Where the routes live. Default `'/audit'`; `''` mounts them at the root. */
  prefix?: string;
  /** Required. Resolve to `true` to let the request read the audit trail; anything else answers 403. */
  authorize: (ctx: Context) => boolean | Promise<boolean>;
}

/**
 * Query parameters of `/api/events`, and the filter key each one sets: the filter keys themselves, and `actor`
 * (the first name of `actorId`), kept as an alias.
 */
const PARAMS: Record<string, keyof QueryFilter> = {
  ...Object.fromEntries(FILTER_KEYS.map((k) => [k, k])),
  actor: 'actorId',
};
const MAX_VALUE = 4096;
const DIGITS = /^[0-9]+$/;
const OBJECT_ID = /^[0-9a-fA-F]{24}$/;

const OWN_ERROR = 'koa-audit: ';

class BadRequest extends Error {}

function badParam(name: string, expected: string, got: string): never {
  const shown = got.length > 80 ? `${got.slice(0, 80)}…` : got;
  throw new BadRequest(`parameter "${name}" must be ${expected}, got ${JSON.stringify(shown)}`);
}

/**
 * Turns the query string into a filter: text into values only. Whether the values are acceptable is planQuery's
 * to say (one set of rules for the API and HTTP); its QueryFilterError is answered as 400 naming the parameter.
 */
export function filterFromQuery(querystring: string): { filter: QueryFilter; paramOf: Record<string, string> } {
  const params = new URLSearchParams(querystring);
  const f: Record<string, unknown> = {};
  const names: Record<string, string> = {};
  for (const [name, value] of params) {
    const key = Object.hasOwn(PARAMS, name) ? PARAMS[name] : undefined;
    if (key === undefined) throw new BadRequest(`unknown parameter "${name}" (known: ${Object.keys(PARAMS).join(', ')})`);
    names[key] = name;
    if (name === 'kind') {
      ((f.kind ??= []) as string[]).push(value);
      continue;
    }
    if (Object.hasOwn(f, key)) throw new BadRequest(`parameter "${name}" given more than once`);
    if (name === 'from' || name === 'to') {
      f[key] = parseIsoDate(value) ?? badParam(name, ISO_DATE_HINT, value);
    } else if (BOOLEAN_KEYS.includes(key)) {
      // `true` / `false` become booleans; anything else stays text, which planQuery refuses.
      f[key] = value === 'true' ? true : value === 'false' ? false : value;
    } else if (name === 'limit') {
      // Digits become a number; anything else stays text, which planQuery refuses (`1e2` is not a page size).
      f.limit = DIGITS.test(value) ? Number(value) : value;
    } else {
      f[key] = value;
    }
  }
  // The parameter each key was given as (an alias, say): planQuery's messages name keys, a client knows parameters.
  return { filter: f as QueryFilter, paramOf: names };
}

function validate(options: unknown): { auditor: AuditReader; prefix: string; authorize: AuditRouterOptions['authorize'] } {
  if (options === null || typeof options !== 'object') fail('auditRouter options', 'an object { auditor, authorize, prefix? }', options);
  const o = options as Record<string, unknown>;
  checkKnown(o, ['auditor', 'prefix', 'authorize'], 'auditRouter');
  const auditor = o.auditor;
  const reader = auditor as { query?: unknown; history?: unknown };
  if (typeof auditor !== 'function' || typeof reader.query !== 'function' || typeof reader.history !== 'function') {
    fail('auditor', 'an auditor (audit, or one made by createAudit)', auditor);
  }
  const authorize = fnOption<AuditRouterOptions['authorize']>('authorize', o.authorize, '(ctx) => boolean deciding who may read the audit trail', true);
  return { auditor: reader as AuditReader, prefix: routePrefix('prefix', o.prefix, '/audit', true), authorize: authorize as AuditRouterOptions['authorize'] };
}

function send(ctx: Context, status: number, body: unknown): void {
  ctx.status = status;
  ctx.body = body;
  // Audit data is sensitive: never cached by a browser or a proxy.
  ctx.set('Cache-Control', 'no-store');
  ctx.set('X-Content-Type-Options', 'nosniff');
}

export function auditRouter(options: AuditRouterOptions): Router {
  const { auditor, prefix, authorize } = validate(options);
  const router = new Router();

  /** Runs `handler` only for an authorized request; maps a BadRequest (or a filter TypeError) to 400. */
  const guarded = (handler: (ctx: Context) => Promise<void> | void) => async (ctx: Context): Promise<void> => {
    markAuditRead(ctx); // refused attempts too: they are accesses to the trail
    if ((await authorize(ctx)) !== true) {
      // Reading the audit trail without the right is itself an event an auditor looks for (OWASP authz_fail).
      await auditor.security?.('authz_fail', { ctx, target: { type: 'audit_trail', id: ctx.path }, reason: 'auditRouter authorize refused' })
        .catch(() => {}); // the refusal stands whether or not it could be recorded
      send(ctx, 403, { error: 'not allowed to read the audit trail' });
      return;
    }
    try {
      await handler(ctx);
    } catch (err) {
      // Our own validation errors only (a TypeError from a bug stays a 500, its message unexposed).
      if (err instanceof BadRequest) send(ctx, 400, { error: err.message });
      else if (err instanceof TypeError && err.message.startsWith(OWN_ERROR)) send(ctx, 400, { error: err.message.slice(OWN_ERROR.length) });
      else throw err;
    }
  };

  router.get(`${prefix}/api/events`, guarded(async (ctx) => {
    const { filter, paramOf } = filterFromQuery(ctx.querystring);
    const page = await auditor.query(filter).catch((err: unknown) => {
      throw err instanceof QueryFilterError ? new BadRequest(`parameter "${paramOf[err.key] ?? err.key}" ${err.problem}`) : err;
    });
    send(ctx, 200, { items: page.items.map(eventToJson), next: page.next });
  }));

  router.get(`${prefix}/api/events/:id`, guarded(async (ctx) => {
    const id = String((ctx as Context & { params: Record<string, string> }).params.id);
    if (!OBJECT_ID.test(id)) throw new BadRequest(`parameter "id" must be a 24-character hex ObjectId, got ${JSON.stringify(id.slice(0, 80))}`);
    const doc = await auditor.model.findById(id).lean<AuditEvent>();
    if (doc === null) send(ctx, 404, { error: `no event with id ${id}` });
    else send(ctx, 200, eventToJson(doc));
  }));

  router.get(`${prefix}/api/history/:model/:documentId`, guarded(async (ctx) => {
    const { model, documentId } = (ctx as Context & { params: Record<string, string> }).params;
    for (const [name, v] of [['model', model], ['documentId', documentId]] as const) {
      if (v === '' || v.length > MAX_VALUE) badParam(name, `a non-empty string of at most ${MAX_VALUE} characters`, v);
    }
    const items = await auditor.history(model, documentId);
    send(ctx, 200, { model, documentId, items: items.map(eventToJson) });
  }));

  // One verify at a time per router: it reads the whole range, and a second click must not double the load.
  let verifying = false;
  router.get(`${prefix}/api/verify`, guarded(async (ctx) => {
    if (auditor.verify === undefined) {
      send(ctx, 501, { error: 'this auditor cannot verify' });
      return;
    }
    const options: VerifyOptions = {};
    for (const [name, value] of new URLSearchParams(ctx.querystring)) {
      if (name !== 'from' && name !== 'to' && name !== 'chainId') throw new BadRequest(`unknown parameter "${name}" (known: from, to, chainId)`);
      if (Object.hasOwn(options, name)) throw new BadRequest(`parameter "${name}" given more than once`);
      if (name === 'chainId') {
        if (value === '' || value.length > 128) badParam(name, 'a chain id', value);
        options.chainId = value;
      } else options[name] = parseIsoDate(value) ?? badParam(name, ISO_DATE_HINT, value);
    }
    if (verifying) {
      send(ctx, 429, { error: 'a verification is already running' });
      return;
    }
    verifying = true;
    try {
      send(ctx, 200, await auditor.verify(options));
    } finally {
      verifying = false;
    }
  }));

  // The page's relative links (`api/...`) need the trailing slash: `{prefix}` redirects to `{prefix}/`.
  const viewerPaths = prefix === '' ? ['/'] : [prefix, `${prefix}/`];
  router.get(viewerPaths, guarded((ctx) => {
    if (!ctx.path.endsWith('/')) {
      ctx.redirect(`${ctx.path}/${ctx.querystring === '' ? '' : `?${ctx.querystring}`}`);
      return;
    }
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = VIEWER_HTML;
    ctx.set('Content-Security-Policy', VIEWER_CSP);
    ctx.set('Cache-Control', 'no-store');
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('X-Frame-Options', 'DENY');
    ctx.set('Referrer-Policy', 'no-referrer');
  }));

  return router;
}
