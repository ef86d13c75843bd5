/**
 * `auditRouter()`: a read-only HTTP API over the audit trail, and the viewer page, as a @koa/router Router.
 *
 *   GET {prefix}/                                   the viewer (HTML)
 *   GET {prefix}/api/events?kind=&actor=&...        { items, next }, newest first
 *   GET {prefix}/api/events/:id                     one event, 404 when unknown, 400 when :id is not an ObjectId
 *   GET {prefix}/api/history/:model/:documentId     { model, documentId, items }, oldest first
 *   GET {prefix}/api/config                         { revert, tenant }: what the viewer may offer
 *   POST {prefix}/api/events/:id/revert             only with `authorizeWrite`: undoes a change event
 *   GET {prefix}/api/verify?from=&to=&chainId=       verify() over that range: { ok, chains, events, problems, omitted }
 *   GET {prefix}/api/dashboard?from=&to=&bucket=&tenant=  the dashboard's numbers (auditor.dashboard)
 *   GET {prefix}/api/count?<filters>                 { count, capped }: how many events match (capped at 100,000)
 *   GET {prefix}/api/related?requestId=...           { counts: { [requestId]: { [kind]: n } } }: what each request caused
 *   GET {prefix}/api/export?format=csv|ndjson&<filters>  the matching events, oldest first, streamed (export.ts)
 *   GET {prefix}/assets/<file>                       uPlot, from the package's own dependencies
 *
 * Every route asks `authorize(ctx)` first (the revert route `authorizeWrite`); anything but `true` or
 * `{ tenant }` answers 403 before the database is touched. `{ tenant }` confines every read to that tenant:
 * each handler gets the grant (ReadAccess) and passes its filters through `scoped()`, the one scoping point.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import { mongo, type Model } from 'mongoose';
import { checkKnown, fail, fnOption, routePrefix } from '../core/options.js';
import { PassThrough } from 'node:stream';
import { markAuditRead } from '../core/context.js';
import { BOOLEAN_KEYS, countByRequest, FILTER_KEYS, ISO_DATE_HINT, parseIsoDate, planQuery, QueryFilterError, textSearch, type QueryFilter, type QueryPage } from './query.js';
import { eventToJson } from '../core/json.js';
import type { AuditEvent } from '../core/types.js';
import type { VerifyResult } from '../integrity/verify.js';
import type { VerifyOptions } from '../integrity/verify-options.js';
import { DASHBOARD_BUCKETS, type DashboardAnswer, type DashboardBucket, type DashboardQuery } from '../rollup/dashboard.js';
import { exportEvents, type ExportFilter } from './export.js';
import { viewerPage } from './viewer.js';

/** What the router reads through: an auditor (`audit`, or one made by `createAudit`) has all of it. */
export interface AuditReader {
  readonly model: Model<AuditEvent>;
  query(filter?: QueryFilter): Promise<QueryPage>;
  history(model: string, documentId: unknown, scope?: { tenant?: string }): Promise<AuditEvent[]>;
  /** When present (an auditor has it), a refused request is recorded as the security event `authz_fail`. */
  security?(name: 'authz_fail', input: { ctx: Context; target: { type: string; id: string }; reason: string }): Promise<void>;
  revert?(eventId: string, options?: { reason?: string; force?: boolean }): Promise<unknown>;
  /** Serves `/api/verify` (the viewer's "Verify this range"); without it that route answers 501. */
  verify?(options?: VerifyOptions): Promise<VerifyResult>;
  /** The dashboard's numbers; an auditor without it (an older reader) serves no dashboard. */
  dashboard?(query: DashboardQuery): Promise<DashboardAnswer>;
  stats?(): { degraded: boolean };
}

/** What `authorize` may answer: `true` (every event), `{ tenant }` (that tenant's only), anything else: 403. */
export type Authorization = boolean | { tenant: string };

/** What a request was granted. Handlers get it, and pass every filter they read with through `scoped()`. */
export interface ReadAccess {
  /** null: every tenant; otherwise reads are confined to this one. */
  readonly tenant: string | null;
}

/**
 * THE tenant scoping point: every read the router serves (list, event by id, history, revert, and any endpoint
 * added to it: dashboard, export, verify) filters with `scoped(access, filter)`. For a tenant-scoped grant the
 * tenant is forced into the filter, replacing whatever tenant a client asked for.
 */
export function scoped<F extends object>(access: ReadAccess, filter: F): F & { tenant?: string } {
  return access.tenant === null ? filter : { ...filter, tenant: access.tenant };
}

/** The grant of an `authorize` answer; null: refused. */
function accessOf(answer: unknown): ReadAccess | null {
  if (answer === true) return { tenant: null };
  const t = (answer as { tenant?: unknown } | null)?.tenant;
  if (answer !== null && typeof answer === 'object' && typeof t === 'string' && t !== '') return { tenant: t };
  return null;
}

const MAX_COUNT = 100_000;
const MAX_RELATED = 200;

export interface AuditRouterOptions {
  /** The auditor whose collection is read (`audit` or one made by `createAudit`). */
  auditor: AuditReader;
  /** Where the routes live. Default `'/audit'`; `''` mounts them at the root. */
  prefix?: string;
  /**
   * Required. Resolve to `true` to let the request read the audit trail, or to `{ tenant }` to let it read that
   * tenant's events only; anything else answers 403.
   */
  authorize: (ctx: Context) => Authorization | Promise<Authorization>;
  /**
   * Enables `POST {prefix}/api/events/:id/revert` (and the viewer's revert button): resolve to `true` or
   * `{ tenant }` to let the request revert (that tenant's) change events. Absent: no write route at all.
   */
  authorizeWrite?: (ctx: Context) => Authorization | Promise<Authorization>;
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
    } else if (name === 'limit' || name === 'status') {
      // Digits become a number; anything else stays text, which planQuery refuses (`1e2` is not a page size).
      f[key] = DIGITS.test(value) && value.length <= 6 ? Number(value) : value;
    } else {
      f[key] = value;
    }
  }
  // The parameter each key was given as (an alias, say): planQuery's messages name keys, a client knows parameters.
  return { filter: f as QueryFilter, paramOf: names };
}

function validate(options: unknown): { auditor: AuditReader; prefix: string; authorize: AuditRouterOptions['authorize']; authorizeWrite: AuditRouterOptions['authorizeWrite'] } {
  if (options === null || typeof options !== 'object') fail('auditRouter options', 'an object { auditor, authorize, prefix? }', options);
  const o = options as Record<string, unknown>;
  checkKnown(o, ['auditor', 'prefix', 'authorize', 'authorizeWrite'], 'auditRouter');
  const auditor = o.auditor;
  const reader = auditor as { query?: unknown; history?: unknown };
  if (typeof auditor !== 'function' || typeof reader.query !== 'function' || typeof reader.history !== 'function') {
    fail('auditor', 'an auditor (audit, or one made by createAudit)', auditor);
  }
  const authorize = fnOption<AuditRouterOptions['authorize']>('authorize', o.authorize, '(ctx) => boolean deciding who may read the audit trail', true);
  const authorizeWrite = fnOption<NonNullable<AuditRouterOptions['authorizeWrite']>>('authorizeWrite', o.authorizeWrite, '(ctx) => boolean | { tenant } deciding who may revert changes', false);
  if (authorizeWrite !== undefined && typeof (reader as { revert?: unknown }).revert !== 'function') fail('auditor', 'an auditor with revert() when authorizeWrite is given', auditor);
  return { auditor: reader as AuditReader, prefix: routePrefix('prefix', o.prefix, '/audit', true), authorize: authorize as AuditRouterOptions['authorize'], authorizeWrite };
}

const MAX_BODY = 16 * 1024;

/** The JSON object body of a request: a body parser's result when one ran, else read here (capped). */
async function jsonBody(ctx: Context): Promise<Record<string, unknown>> {
  let body = (ctx.request as { body?: unknown }).body;
  if (body === undefined) {
    let text = '';
    for await (const chunk of ctx.req) {
      text += String(chunk);
      if (text.length > MAX_BODY) throw new BadRequest(`the body must be at most ${MAX_BODY} bytes`);
    }
    try {
      body = text === '' ? {} : JSON.parse(text);
    } catch {
      throw new BadRequest('the body is not valid JSON');
    }
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new BadRequest('the body must be a JSON object { reason, force? }');
  return body as Record<string, unknown>;
}

function send(ctx: Context, status: number, body: unknown): void {
  ctx.status = status;
  ctx.body = body;
  // Audit data is sensitive: never cached by a browser or a proxy.
  ctx.set('Cache-Control', 'no-store');
  ctx.set('X-Content-Type-Options', 'nosniff');
}

export function auditRouter(options: AuditRouterOptions): Router {
  const { auditor, prefix, authorize, authorizeWrite } = validate(options);
  const router = new Router();

  /**
   * Runs `handler` only for an authorized request, with what was granted (pass its filters through `scoped`);
   * maps a BadRequest (or a filter TypeError) to 400.
   */
  const guarded = (handler: (ctx: Context, access: ReadAccess) => Promise<void> | void, decide = authorize, what = 'read the audit trail') => async (ctx: Context): Promise<void> => {
    markAuditRead(ctx); // refused attempts too: they are accesses to the trail
    const access = accessOf(await decide(ctx));
    if (access === null) {
      // Reading the audit trail without the right is itself an event an auditor looks for (OWASP authz_fail).
      await auditor.security?.('authz_fail', { ctx, target: { type: 'audit_trail', id: ctx.path }, reason: `auditRouter ${decide === authorize ? 'authorize' : 'authorizeWrite'} refused` })
        .catch(() => {}); // the refusal stands whether or not it could be recorded
      send(ctx, 403, { error: `not allowed to ${what}` });
      return;
    }
    try {
      await handler(ctx, access);
    } catch (err) {
      // Our own validation errors only (a TypeError from a bug stays a 500, its message unexposed).
      if (err instanceof BadRequest) send(ctx, 400, { error: err.message });
      else if (err instanceof TypeError && err.message.startsWith(OWN_ERROR)) send(ctx, 400, { error: err.message.slice(OWN_ERROR.length) });
      else throw err;
    }
  };

  router.get(`${prefix}/api/events`, guarded(async (ctx, access) => {
    const { filter, paramOf } = filterFromQuery(ctx.querystring);
    const page = await auditor.query(scoped(access, filter)).catch((err: unknown) => {
      throw err instanceof QueryFilterError ? new BadRequest(`parameter "${paramOf[err.key] ?? err.key}" ${err.problem}`) : err;
    });
    send(ctx, 200, { items: page.items.map(eventToJson), next: page.next, ...(page.notice === undefined ? {} : { notice: page.notice }) });
  }));

  /** A filter from the query string, planQuery's refusals answered as 400 naming the parameter. */
  const checkedFilter = (querystring: string): QueryFilter => {
    const { filter, paramOf } = filterFromQuery(querystring);
    try {
      planQuery(filter);
    } catch (err) {
      if (err instanceof QueryFilterError) throw new BadRequest(`parameter "${paramOf[err.key] ?? err.key}" ${err.problem}`);
      throw err;
    }
    return filter;
  };
  const without = (querystring: string, names: string[]): { rest: string; taken: URLSearchParams } => {
    const all = new URLSearchParams(querystring);
    const taken = new URLSearchParams();
    for (const n of names) {
      for (const v of all.getAll(n)) taken.append(n, v);
      all.delete(n);
    }
    return { rest: all.toString(), taken };
  };

  router.get(`${prefix}/api/dashboard`, guarded(async (ctx, access) => {
    if (auditor.dashboard === undefined) throw new BadRequest('this auditor has no dashboard');
    const p = new URLSearchParams(ctx.querystring);
    for (const name of p.keys()) if (!['from', 'to', 'bucket', 'tenant'].includes(name)) throw new BadRequest(`unknown parameter "${name}" (known: from, to, bucket, tenant)`);
    const date = (name: string): Date => {
      const v = p.get(name);
      if (v === null) throw new BadRequest(`parameter "${name}" is required`);
      return parseIsoDate(v) ?? badParam(name, ISO_DATE_HINT, v);
    };
    const q: DashboardQuery = { from: date('from'), to: date('to') };
    const bucket = p.get('bucket');
    if (bucket !== null) {
      if (!(DASHBOARD_BUCKETS as string[]).includes(bucket)) badParam('bucket', `one of ${DASHBOARD_BUCKETS.join(', ')}`, bucket);
      q.bucket = bucket as DashboardBucket;
    }
    // A tenant-scoped grant sees its own tenant's numbers, whatever it asks for.
    const tenant = access.tenant ?? p.get('tenant');
    if (tenant !== null) q.tenant = tenant;
    send(ctx, 200, await auditor.dashboard(q).catch((err: unknown) => {
      throw err instanceof TypeError && err.message.startsWith(`${OWN_ERROR}dashboard `) ? new BadRequest(err.message.slice(OWN_ERROR.length + 10)) : err;
    }));
  }));

  router.get(`${prefix}/api/count`, guarded(async (ctx, access) => {
    const filter = scoped(access, checkedFilter(ctx.querystring));
    if (filter.limit !== undefined || filter.after !== undefined) throw new BadRequest('parameters "limit" and "after" do not apply to a count');
    const text = filter.q === undefined ? 'index' : (await textSearch(auditor.model.collection)).mode;
    const count = await auditor.model.collection.countDocuments(planQuery(filter, text).filter, { limit: MAX_COUNT + 1 });
    send(ctx, 200, { count: Math.min(count, MAX_COUNT), capped: count > MAX_COUNT });
  }));

  router.get(`${prefix}/api/related`, guarded(async (ctx, access) => {
    const p = new URLSearchParams(ctx.querystring);
    for (const name of p.keys()) if (name !== 'requestId') throw new BadRequest(`unknown parameter "${name}" (known: requestId)`);
    const ids = [...new Set(p.getAll('requestId'))];
    if (ids.length > MAX_RELATED || ids.some((v) => v === '' || v.length > MAX_VALUE)) badParam('requestId', `at most ${MAX_RELATED} non-empty ids`, ids.join(','));
    send(ctx, 200, { counts: await countByRequest(auditor.model.collection, ids, access.tenant) });
  }));

  router.get(`${prefix}/api/export`, guarded(async (ctx, access) => {
    const { rest, taken } = without(ctx.querystring, ['format']);
    const format = taken.get('format') ?? 'ndjson';
    if (format !== 'csv' && format !== 'ndjson') badParam('format', 'csv or ndjson', format);
    const filter = scoped(access, checkedFilter(rest));
    if (filter.limit !== undefined || filter.after !== undefined) throw new BadRequest('parameters "limit" and "after" do not apply to a download');
    const text = filter.q === undefined ? 'index' : (await textSearch(auditor.model.collection)).mode;
    const out = new PassThrough();
    exportEvents(auditor.model.collection, out, { format, filter: filter as ExportFilter, textSearch: text }).then(
      () => out.end(),
      (err: unknown) => out.destroy(err as Error),
    );
    send(ctx, 200, out);
    ctx.type = format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8';
    ctx.set('Content-Disposition', `attachment; filename="audit-events.${format}"`);
  }));

  const page = viewerPage();
  router.get(`${prefix}/assets/:file`, guarded((ctx) => {
    const asset = page.assets.get(String((ctx as Context & { params: Record<string, string> }).params.file));
    if (asset === undefined) {
      send(ctx, 404, { error: 'no such asset' });
      return;
    }
    ctx.type = asset.type;
    ctx.body = asset.body;
    // Named by version: the same name is always the same bytes.
    ctx.set('Cache-Control', 'private, max-age=86400, immutable');
    ctx.set('X-Content-Type-Options', 'nosniff');
  }));

  /** The event `:id` as this grant may see it, or null (absent, or another tenant's: the same 404). */
  const eventById = async (ctx: Context, access: ReadAccess): Promise<{ id: string; doc: AuditEvent | null }> => {
    const id = String((ctx as Context & { params: Record<string, string> }).params.id);
    if (!OBJECT_ID.test(id)) throw new BadRequest(`parameter "id" must be a 24-character hex ObjectId, got ${JSON.stringify(id.slice(0, 80))}`);
    const doc = await auditor.model.findOne(scoped(access, { _id: new mongo.ObjectId(id) })).setOptions({ strictQuery: false }).lean<AuditEvent>();
    return { id, doc };
  };

  router.get(`${prefix}/api/events/:id`, guarded(async (ctx, access) => {
    const { id, doc } = await eventById(ctx, access);
    if (doc === null) send(ctx, 404, { error: `no event with id ${id}` });
    else send(ctx, 200, eventToJson(doc));
  }));

  router.get(`${prefix}/api/config`, guarded((ctx, access) => {
    send(ctx, 200, { revert: authorizeWrite !== undefined, tenant: access.tenant });
  }));

  if (authorizeWrite !== undefined) {
    router.post(`${prefix}/api/events/:id/revert`, guarded(async (ctx, access) => {
      // JSON only: a cross-site form cannot send it without the browser asking this server first (CORS).
      if (!ctx.is('application/json')) throw new BadRequest('the body must be JSON (Content-Type: application/json): { reason, force? }');
      const body = await jsonBody(ctx);
      const reason = body.reason;
      if (reason !== undefined && typeof reason !== 'string') throw new BadRequest('"reason" must be a string');
      if (body.force !== undefined && typeof body.force !== 'boolean') throw new BadRequest('"force" must be a boolean');
      const { id, doc } = await eventById(ctx, access);
      if (doc === null) {
        send(ctx, 404, { error: `no event with id ${id}` });
        return;
      }
      try {
        const result = await (auditor.revert as NonNullable<AuditReader['revert']>)(id, { reason: reason === '' ? undefined : reason, force: body.force === true });
        send(ctx, 200, result);
      } catch (err) {
        const e = err as { name?: string; message?: string; paths?: string[]; status?: number };
        if (e.name === 'RevertConflictError' || e.name === 'RevertRefusedError') send(ctx, e.status ?? 409, { error: String(e.message).replace(OWN_ERROR, ''), paths: e.paths ?? [] });
        else throw err;
      }
    }, authorizeWrite, 'revert changes'));
  }

  router.get(`${prefix}/api/history/:model/:documentId`, guarded(async (ctx, access) => {
    const { model, documentId } = (ctx as Context & { params: Record<string, string> }).params;
    for (const [name, v] of [['model', model], ['documentId', documentId]] as const) {
      if (v === '' || v.length > MAX_VALUE) badParam(name, `a non-empty string of at most ${MAX_VALUE} characters`, v);
    }
    const items = await auditor.history(model, documentId, scoped(access, {}));
    send(ctx, 200, { model, documentId, items: items.map(eventToJson) });
  }));

  // One verify at a time per router: it reads the whole range, and a second click must not double the load.
  let verifying = false;
  router.get(`${prefix}/api/verify`, guarded(async (ctx, access) => {
    // A chain interleaves every tenant's events, and its problems name their ids: only a grant over every
    // tenant may verify.
    if (access.tenant !== null) {
      send(ctx, 403, { error: 'verify reads every tenant\'s events: a tenant-scoped grant cannot run it' });
      return;
    }
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
    ctx.body = page.html;
    ctx.set('Content-Security-Policy', page.csp);
    ctx.set('Cache-Control', 'no-store');
    ctx.set('X-Content-Type-Options', 'nosniff');
    ctx.set('X-Frame-Options', 'DENY');
    ctx.set('Referrer-Policy', 'no-referrer');
  }));

  return router;
}
