/**
 * The request middleware: opens the async context of the request, and records one `request` event once the
 * response has finished (or the client went away). It never changes the response or the error handling:
 * errors are observed and rethrown untouched; a fault of the auditor itself is reported, not thrown.
 */
import { randomUUID } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import type { Context, Middleware, Next } from 'koa';
import { userAgentOf, type AuditCore, type EventFields } from '../core/core.js';
import { frameOf, ipOf, kAuthzFailRecorded, storage, type AuditContext } from '../core/context.js';
import { errorInfo } from '../core/error-info.js';
import { bool, checkKnown, fail, fnOption, objectOption, positiveInt, stringList } from '../core/options.js';
import { capString, toStored } from '../core/safe.js';
import { traceOf } from '../core/trace.js';
import type { StoredDoc } from '../core/types.js';
import type { ErrorInfo, HttpInfo, StoredValue } from '../core/types.js';
import { requestSecrets, storedPath } from './secrets.js';

export type PathPattern = string | RegExp;

export interface MiddlewareOptions {
  /** Paths to audit: exact strings, prefixes ending in `/`, or RegExps. Default: all. */
  include?: PathPattern[];
  /** Paths never audited (wins over `include`). The async context is still opened for them. */
  exclude?: PathPattern[];
  /** HTTP methods to audit. Default: all. */
  methods?: string[];
  /** Store the parsed request body (redacted, capped) in `http.requestBody`. Default false. */
  captureBody?: boolean;
  /** Cap of the stored body, in bytes of its JSON form. Default 8 KiB. */
  maxBodyBytes?: number;
  /** Also record every 401/403 answer as the security event `authz_fail` (OWASP vocabulary). Default false. */
  authzFail?: boolean;
  /**
   * Impersonation: whom the authenticated actor acts as in this request (a user-like value, or null), run when
   * each event of the request is built. `actor` stays the accountable principal.
   */
  onBehalfOf?: (ctx: Context) => unknown;
  /** The tenant of the request's events (wins over createAudit's `tenant`). */
  tenant?: (ctx: Context) => string | null | undefined;
  /** Route parameters hidden in `http.path` besides those with a secret name (`:token`, `:resetCode`). */
  redactParams?: string[];
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const MAX_PATH = 2048;
const MAX_PARSED_TEXT = 1024 * 1024;

/** Paths compiled once: a Set for exact paths, a list of prefixes, and the caller's own RegExps. */
interface PathSet {
  exact: Set<string>;
  prefixes: string[];
  regexps: RegExp[];
}

function compilePaths(name: string, list: unknown): PathSet | null {
  if (list === undefined) return null;
  if (!Array.isArray(list)) fail(name, 'an array of strings and RegExps', list);
  const set: PathSet = { exact: new Set(), prefixes: [], regexps: [] };
  for (const p of list) {
    if (typeof p === 'string' && p !== '') {
      if (p.endsWith('/')) set.prefixes.push(p);
      else set.exact.add(p);
    } else if (p instanceof RegExp) {
      // A global or sticky RegExp keeps state between test() calls: take a stateless copy.
      set.regexps.push(p.global || p.sticky ? new RegExp(p.source, p.flags.replace(/[gy]/g, '')) : p);
    } else fail(name, 'an array of non-empty strings and RegExps', p);
  }
  return set;
}

function matches(set: PathSet, path: string): boolean {
  if (set.exact.has(path)) return true;
  for (let i = 0; i < set.prefixes.length; i++) if (path.startsWith(set.prefixes[i])) return true;
  for (let i = 0; i < set.regexps.length; i++) if (set.regexps[i].test(path)) return true;
  return false;
}

/** Reads one part of a thrown value: a getter or Proxy trap that throws gives `fallback`, never an exception. */
function attempt<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch {
    return fallback;
  }
}

/** What one middleware decided at construction, shared by all its requests. */
interface RequestAuditing {
  core: AuditCore;
  captureBody: boolean;
  maxBodyBytes: number;
  authzFail: boolean;
  /** Extra route parameter names to hide (`redactParams`). */
  params: ReadonlySet<string>;
}

/** Per-response state, kept on the response so that the finish listeners can be shared functions. */
interface Pending {
  s: RequestAuditing;
  ctx: Context;
  frame: AuditContext;
  start: number;
  error: ErrorInfo | undefined;
  /** A well-formed `X-Request-Id` of the client, kept apart from the request id. */
  clientRequestId: string | undefined;
}

const kPending = Symbol('koa-audit.pending');
type TrackedResponse = ServerResponse & { [kPending]?: Pending };

function onFinish(this: TrackedResponse): void {
  finishRequest(this, false);
}

function onClose(this: TrackedResponse): void {
  finishRequest(this, !this.writableFinished);
}

function finishRequest(res: TrackedResponse, aborted: boolean): void {
  const p = res[kPending];
  if (p === undefined) return; // settled already
  res[kPending] = undefined;
  res.off('finish', onFinish);
  res.off('close', onClose);
  // This runs in a listener of the response: whatever the app left on `ctx` must not throw out of it.
  try {
    // Once headers are out, the response's status is the truth (an upstream handler may have rewritten it).
    const status = res.headersSent ? res.statusCode : p.error?.status ?? p.ctx.status;
    // The event finds its request through `ctx` (build() reads the frame from it): no context to re-enter.
    // Built and accepted now, without a promise unless the app's resolver or the store's policy needs one.
    const accepted = p.s.core.submit(requestFields(p, status, aborted), { ctx: p.ctx });
    if (accepted !== undefined) accepted.catch(p.s.core.report);
    recordDenied(p, status);
  } catch (err) {
    p.s.core.report(err);
  }
}

/** `authzFail`: a 401/403 the app answered is an `authz_fail`, unless one was recorded for this request already. */
function recordDenied(p: Pending, status: number): void {
  if (!p.s.authzFail || (status !== 401 && status !== 403)) return;
  const ctx = p.ctx as Context & { [kAuthzFailRecorded]?: boolean };
  if (ctx[kAuthzFailRecorded] === true) return;
  ctx[kAuthzFailRecorded] = true;
  const fields: EventFields = {
    kind: 'security',
    outcome: 'failure',
    name: 'authz_fail',
    reason: status === 401 ? 'unauthenticated (401)' : 'forbidden (403)',
    target: { type: 'route', id: capString(ctx.path, MAX_PATH), method: capString(ctx.method, 32) },
  };
  try {
    const accepted = p.s.core.submit(fields, { ctx });
    if (accepted !== undefined) accepted.catch(p.s.core.report);
  } catch (err) {
    p.s.core.report(err); // never thrown into the request (runSync calls this outside any guard)
  }
}

function requestFields(p: Pending, status: number, aborted: boolean): EventFields {
  const { ctx, s } = p;
  const { core } = s;
  const route = (ctx as { _matchedRoute?: unknown })._matchedRoute;
  const http: HttpInfo = {
    method: capString(ctx.method, 32),
    // Scrubbed before it is cut: a secret cut in half would no longer be recognized.
    path: capString(core.redactor.text(storedPath(ctx, core.redactor, s.params).slice(0, MAX_PATH + 512)), MAX_PATH),
    route: route === undefined || route === null ? null : capString(String(route), MAX_PATH),
    query: core.redactor.query(ctx.querystring, core.limits.maxString, p.frame.secretQuery),
    status,
    durationMs: Math.round((performance.now() - p.start) * 1000) / 1000,
  };
  if (aborted) http.aborted = true;
  if (p.frame.auditRead === true) http.auditRead = true;
  if (p.clientRequestId !== undefined) http.clientRequestId = p.clientRequestId;
  if (s.captureBody) {
    // A body the app made hostile (a throwing getter, a Proxy) is recorded as far as it can be read.
    const body = attempt(() => capturedBody(ctx, core, s.maxBodyBytes), '[Unreadable: request body]');
    if (body !== undefined) http.requestBody = body;
  }
  const fields: EventFields = {
    kind: 'request',
    outcome: p.error !== undefined || status >= 400 || aborted ? 'failure' : 'success',
    http,
  };
  if (p.error !== undefined) fields.error = p.error;
  return fields;
}

/** The body an upstream parser left on `ctx.request.body`: redacted and capped; binary as its size only. */
function capturedBody(ctx: Context, core: AuditCore, maxBytes: number): StoredValue | undefined {
  const body = (ctx.request as { body?: unknown }).body;
  if (body === undefined || body === null) return undefined;
  if (Buffer.isBuffer(body) || body instanceof Uint8Array) return { binary: true, bytes: body.byteLength };
  let value: unknown = body;
  if (typeof body === 'string') {
    // A raw body left as text: form-encoded and JSON are redacted as the structures they are, the rest scrubbed.
    // (Only within a bound: a huge text body is kept truncated anyway, and its head is scrubbed as text.)
    value = body.length <= MAX_PARSED_TEXT ? parseText(body, ctx.request.type) : body;
    if (typeof value === 'string') {
      const bytes = Buffer.byteLength(body);
      const text = toStored(body, core.redactor, { ...core.limits, maxString: maxBytes }) as string;
      return bytes <= maxBytes ? text : { truncated: true, bytes, text };
    }
  }
  if (typeof attempt(() => (body as { pipe?: unknown }).pipe, undefined) === 'function') return { binary: true, bytes: null };
  const stored = toStored(value, core.redactor, core.limits);
  const json = JSON.stringify(stored);
  const bytes = Buffer.byteLength(json);
  return bytes <= maxBytes ? stored : { truncated: true, bytes, json: capString(json, maxBytes) };
}

/** A text body in the structure its content type says, or the text itself when it is neither form nor JSON. */
function parseText(body: string, type: string): unknown {
  if (type === 'application/x-www-form-urlencoded') {
    const out: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
    for (const [k, v] of new URLSearchParams(body)) {
      const prev = out[k];
      out[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
    }
    return out;
  }
  if (type === 'application/json' || type.endsWith('+json')) {
    try {
      return JSON.parse(body) as unknown;
    } catch {
      return body;
    }
  }
  return body;
}

export function createMiddleware(core: AuditCore, options: MiddlewareOptions = {}): Middleware {
  objectOption('middleware options', options);
  checkKnown(options, ['include', 'exclude', 'methods', 'captureBody', 'maxBodyBytes', 'authzFail', 'onBehalfOf', 'tenant', 'redactParams'], 'middleware');
  const onBehalfOfOf = fnOption<(ctx: Context) => unknown>('onBehalfOf', options.onBehalfOf, '(ctx) => user | null', false);
  const tenantOf = fnOption<(ctx: Context) => unknown>('tenant', options.tenant, '(ctx) => string | null', false) ?? core.options.tenant;
  const include = compilePaths('include', options.include);
  const exclude = compilePaths('exclude', options.exclude);
  let methods: Set<string> | null = null;
  if (options.methods !== undefined) {
    if (!Array.isArray(options.methods) || options.methods.some((m) => typeof m !== 'string')) fail('methods', 'an array of HTTP method names', options.methods);
    methods = new Set(options.methods.map((m) => m.toUpperCase()));
  }
  const s: RequestAuditing = {
    core,
    captureBody: bool('captureBody', options.captureBody, false),
    maxBodyBytes: positiveInt('maxBodyBytes', options.maxBodyBytes, 8 * 1024),
    authzFail: bool('authzFail', options.authzFail, false),
    params: new Set(stringList('redactParams', options.redactParams)),
  };
  const sync = core.options.mode === 'sync';
  // `durability: 'disk'`: the event is on disk before the response leaves, so an answered request always has one.
  const early = sync || core.options.durability === 'disk';
  const trustRequestId = core.options.trustRequestId;
  const blocking = core.blocking;
  const order = { stackChecked: false, warned: false };

  function audited(ctx: Context): boolean {
    if (methods !== null && !methods.has(ctx.method)) return false;
    if (exclude !== null && matches(exclude, ctx.path)) return false;
    return include === null || matches(include, ctx.path);
  }

  return async function koaAudit(ctx: Context, next: Next): Promise<void> {
    const start = performance.now();
    if (!order.warned) checkOrder(ctx, koaAudit, core, order);
    // The request id is the server's: a client's id could be anyone's (two users sending one id would share a
    // request in the trail). A well-formed one is kept as `http.clientRequestId`, and used only when trusted.
    const incoming = ctx.get('x-request-id');
    const clientRequestId = incoming !== '' && REQUEST_ID.test(incoming) ? incoming : undefined;
    const requestId = trustRequestId && clientRequestId !== undefined ? clientRequestId : randomUUID();
    ctx.set('X-Request-Id', requestId);
    const trace = traceOf(ctx.get('traceparent'));
    const frame: AuditContext = {
      requestId,
      ip: ipOf(ctx),
      userAgent: userAgentOf(ctx, core.redactor),
      ctx,
      explicitActor: null,
      resolve: core.resolveRequestActor,
      tenantOf,
      onBehalfOfOf,
      traceId: trace?.traceId,
      spanId: trace?.spanId,
    };
    frameOf.set(ctx, frame);

    // Changes made while serving an excluded path are still attributed: the context opens for every request.
    if (!audited(ctx)) return storage.run(frame, next);
    // Fail closed before the action happens, not after: under `block`, wait for room first.
    if (blocking) await core.waitForRoom().catch((err: unknown) => Promise.reject(keepRequestId(err, requestId)));

    const p: Pending = { s, ctx, frame, start, error: undefined, clientRequestId };
    if (early) return runSync(p, next);

    const res = ctx.res as TrackedResponse;
    res[kPending] = p;
    // `on`, not `once`: finishRequest() removes both, and `once` would allocate a wrapper per listener per request.
    res.on('finish', onFinish);
    res.on('close', onClose);
    try {
      await storage.run(frame, next);
    } catch (err) {
      p.error = errorOf(err, s, ctx);
      // Koa answers nothing at all to `throw null`/`throw undefined`: no finish will come, so record now.
      if (err === null || err === undefined) finishRequest(res, false);
      throw keepRequestId(err, requestId);
    }
  };
}

/** The error's stored form, without the request's own secret values (its secret parameters and body fields). */
function errorOf(err: unknown, s: RequestAuditing, ctx: Context): ErrorInfo {
  const { core } = s;
  let known: string[] = [];
  try {
    known = requestSecrets(ctx, core.redactor, s.params);
  } catch {
    // a hostile body or parameter object: the error is still described, by its own structure
  }
  return errorInfo(err, core.redactor, core.limits, known);
}

/**
 * `audit()` must come first: after a router, the requests it answers never reach the auditor (no event, and
 * their changes blamed on `system`); after a middleware that set `ctx.body`, the trail misses what it did.
 * One warning naming the fix.
 */
function checkOrder(ctx: Context, self: Middleware, core: AuditCore, order: { stackChecked: boolean; warned: boolean }): void {
  let routerBefore = (ctx as { _matchedRoute?: unknown })._matchedRoute !== undefined;
  if (!order.stackChecked) {
    // The app's middleware list, looked at once: a @koa/router dispatcher carries its router.
    order.stackChecked = true;
    const stack = (ctx.app as { middleware?: unknown[] }).middleware ?? [];
    const at = stack.indexOf(self);
    routerBefore ||= at > 0 && stack.slice(0, at).some((fn) => typeof fn === 'function' && 'router' in fn);
  }
  const bodyBefore = ctx.body !== undefined && ctx.body !== null;
  if (!routerBefore && !bodyBefore) return; // a later request may still show a body set before us
  order.warned = true;
  core.warnOnce(
    'KOA_AUDIT_ORDER',
    `audit() is registered after ${routerBefore ? 'a router' : 'a middleware that set ctx.body'}: requests answered before it get no event, ` +
      "and their changes are attributed to 'system'. Register it first: app.use(audit()) before app.use(router.routes()) and every other middleware.",
  );
}

/**
 * Koa removes every response header when it answers an error, except those listed in `err.headers`: the request
 * id goes there, so that error responses carry it too. Nothing else about the error changes.
 */
function keepRequestId(err: unknown, requestId: string): unknown {
  if (typeof err !== 'object' || err === null) return err;
  const e = err as { headers?: Record<string, unknown> };
  try {
    if (e.headers?.['X-Request-Id'] === undefined) e.headers = { ...e.headers, 'X-Request-Id': requestId };
  } catch {
    // a frozen error keeps its headers as they are
  }
  return err;
}

/** `mode: 'sync'`: the event is stored before Koa sends the response; if it cannot be, the request fails (503). */
async function runSync(p: Pending, next: Next): Promise<void> {
  let thrown: { err: unknown } | null = null;
  try {
    await storage.run(p.frame, next);
  } catch (err) {
    thrown = { err };
    p.error = errorOf(err, p.s, p.ctx);
  }
  const status = p.error !== undefined ? p.error.status ?? 500 : p.ctx.status;
  const doc = await p.s.core.build(requestFields(p, status, false), { ctx: p.ctx });
  const requestId = p.frame.requestId as string;
  if (p.s.core.options.mode !== 'sync') {
    // durability 'disk': accepted (on disk) now; stored off the request path.
    await p.s.core.accept(doc).catch(p.s.core.report);
  } else {
    try {
      await p.s.core.writeNow(doc, failedClosed);
    } catch (err) {
      throw keepRequestId(err, requestId);
    }
  }
  recordDenied(p, status);
  if (thrown !== null) throw keepRequestId(thrown.err, requestId);
}

/** The request event as the client of a failed sync write sees it: a 503 from the auditor. */
function failedClosed(doc: StoredDoc): StoredDoc {
  const http = { ...(doc.http as HttpInfo), status: 503 };
  const error: ErrorInfo = { name: 'AuditUnavailableError', message: 'Audit log unavailable', status: 503, stack: null };
  return { ...doc, outcome: 'failure', http, error: doc.error ?? error };
}

