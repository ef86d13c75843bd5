/**
 * What one event adds to the dashboard's numbers, and how numbers of many events add up.
 *
 * One function (`addEvent`) serves both ways of answering: the rollups maintained as events are stored, and
 * the fallback that reads the events of a range. So a rollup and a fresh aggregation of the same events can
 * only differ where the rollups lost or double-counted something, which is what the tests look for.
 */
import type { StoredDoc } from '../core/types.js';
import { DEGRADED_NAME, RECOVERED_NAME, STORE_MONITOR } from '../store/health.js';

/** Upper bounds (ms) of the duration histogram's buckets; a last bucket holds everything slower. */
export const DURATION_BOUNDS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000] as const;
export const STATUS_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;
export type StatusClass = (typeof STATUS_CLASSES)[number];
/** The top-K tables: actors by changes, failed-login identifiers and IPs, models and documents by changes. */
export const TOP_DIMENSIONS = ['actor', 'identifier', 'ip', 'model', 'document'] as const;
export type TopDimension = (typeof TOP_DIMENSIONS)[number];
/** What has a bounded number of keys per bucket: the top tables and the routes. */
export type Bounded = TopDimension | 'route';
/** Keys longer than this are counted in the table's overflow, never as a field name. */
export const MAX_KEY_LENGTH = 512;

export type Counts = Record<string, number>;

export interface RouteTally {
  /** Requests. */
  n: number;
  /** Requests that failed (status >= 400 or the handler threw). */
  e: number;
  /** Histogram of durations: bucket index (`b0`...) to count. */
  d: Counts;
}

/** One top-K entry: events counted, and attempts (a flood summary stands for the failures it held back). */
export interface TopEntry {
  n: number;
  x: number;
}

/** The numbers of one time bucket (of one tenant). */
export interface Tally {
  /** Events. */
  n: number;
  /** Events per kind. */
  k: Counts;
  /** Failed events per kind. */
  f: Counts;
  /** Requests per status class. */
  s: Counts;
  /** Failed login attempts (flood summaries count what they held back). */
  la: number;
  /** Events the store reported lost (`loss` events' `meta.lost`). */
  lost: number;
  /** The store's degraded/recovered transitions (lib/store/health.ts): the dashboard reads them when there are some. */
  dg: number;
  /** Per route key (see routeKey). */
  r: Record<string, RouteTally>;
  /** Top-K tables. */
  t: Record<TopDimension, Record<string, TopEntry>>;
  /** Per table, events not given a key of their own (the table was full, or the key too long). */
  o: Counts;
}

export function emptyTally(): Tally {
  return { n: 0, k: {}, f: {}, s: {}, la: 0, lost: 0, dg: 0, r: {}, t: { actor: {}, identifier: {}, ip: {}, model: {}, document: {} }, o: {} };
}

const CHANGE_KINDS = new Set(['create', 'update', 'delete']);

export function statusClass(status: unknown): StatusClass | null {
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 100 || status > 599) return null;
  return STATUS_CLASSES[Math.floor(status / 100) - 1];
}

export function durationBucket(ms: number): number {
  for (let i = 0; i < DURATION_BOUNDS.length; i++) if (ms <= DURATION_BOUNDS[i]) return i;
  return DURATION_BOUNDS.length;
}

/** A route row: method and matched route, or the path when no route matched (so 404 scans show too). */
export interface RouteId {
  method: string;
  route: string | null;
  path: string | null;
}

export const routeKey = (r: RouteId): string => JSON.stringify([r.method, r.route, r.path]);
export function parseRouteKey(key: string): RouteId {
  const [method, route, path] = JSON.parse(key) as [string, string | null, string | null];
  return { method, route, path };
}
/** A document row's key: model and id, joined by a character neither contains in practice. */
export const documentKey = (model: string, id: string): string => JSON.stringify([model, id]);
export const parseDocumentKey = (key: string): { model: string; documentId: string } => {
  const [model, documentId] = JSON.parse(key) as [string, string];
  return { model, documentId };
};

function inc(c: Counts, key: string, by = 1): void {
  c[key] = (c[key] ?? 0) + by;
}

/** Counts `key` in a top table, unless `room(dim, key)` says the table is full (then in its overflow). */
function top(t: Tally, dim: TopDimension, key: string, attempts: number, room: (dim: Bounded, key: string) => boolean): void {
  if (key.length > MAX_KEY_LENGTH || !room(dim, key)) {
    inc(t.o, dim);
    return;
  }
  const e = (t.t[dim][key] ??= { n: 0, x: 0 });
  e.n++;
  e.x += attempts;
}

const always = (): boolean => true;

/** Adds one stored event to `t`. `room` bounds the top tables (the rollups pass one; a fresh count does not). */
export function addEvent(t: Tally, e: StoredDoc, room: (dim: Bounded, key: string) => boolean = always): void {
  const kind = typeof e.kind === 'string' ? e.kind : 'unknown';
  const failed = e.outcome === 'failure';
  t.n++;
  inc(t.k, kind);
  if (failed) inc(t.f, kind);
  const meta = (e.meta ?? null) as Record<string, unknown> | null;
  if (kind === 'request' && e.http !== null && typeof e.http === 'object') {
    const h = e.http as Record<string, unknown>;
    const cls = statusClass(h.status);
    if (cls !== null) inc(t.s, cls);
    const id: RouteId = {
      method: typeof h.method === 'string' ? h.method : '?',
      route: typeof h.route === 'string' ? h.route : null,
      path: typeof h.route === 'string' ? null : typeof h.path === 'string' ? h.path : null,
    };
    const key = routeKey(id);
    if (key.length > MAX_KEY_LENGTH || !room('route', key)) inc(t.o, 'route');
    else {
      const r = (t.r[key] ??= { n: 0, e: 0, d: {} });
      r.n++;
      if (failed) r.e++;
      if (typeof h.durationMs === 'number' && Number.isFinite(h.durationMs)) inc(r.d, `b${durationBucket(h.durationMs)}`);
    }
  } else if (kind === 'login_failed') {
    // A flood summary is one event standing for the failures it held back.
    const attempts = meta !== null && meta.summary === true && typeof meta.suppressed === 'number' ? meta.suppressed : 1;
    t.la += attempts;
    if (typeof e.identifier === 'string' && e.identifier !== '') top(t, 'identifier', e.identifier, attempts, room);
    if (typeof e.ip === 'string' && e.ip !== '') top(t, 'ip', e.ip, attempts, room);
  } else if (CHANGE_KINDS.has(kind)) {
    const actor = e.actor as { id?: unknown } | null | undefined;
    if (actor !== null && actor !== undefined && typeof actor.id === 'string') top(t, 'actor', actor.id, 1, room);
    if (typeof e.model === 'string') {
      top(t, 'model', e.model, 1, room);
      if (typeof e.documentId === 'string') top(t, 'document', documentKey(e.model, e.documentId), 1, room);
    }
  } else if (kind === 'loss' && meta !== null && typeof meta.lost === 'number') {
    t.lost += meta.lost;
  } else if (kind === 'security' && (e.name === DEGRADED_NAME || e.name === RECOVERED_NAME) && meta !== null && meta.monitor === STORE_MONITOR) {
    t.dg++;
  }
}

/** Adds `b` into `a`. */
export function merge(a: Tally, b: Tally): Tally {
  a.n += b.n;
  a.la += b.la;
  a.lost += b.lost;
  a.dg += b.dg ?? 0;
  for (const [k, v] of Object.entries(b.k)) inc(a.k, k, v);
  for (const [k, v] of Object.entries(b.f)) inc(a.f, k, v);
  for (const [k, v] of Object.entries(b.s)) inc(a.s, k, v);
  for (const [k, v] of Object.entries(b.o)) inc(a.o, k, v);
  for (const [key, r] of Object.entries(b.r)) {
    const into = (a.r[key] ??= { n: 0, e: 0, d: {} });
    into.n += r.n;
    into.e += r.e;
    for (const [i, v] of Object.entries(r.d)) inc(into.d, i, v);
  }
  for (const dim of TOP_DIMENSIONS) {
    for (const [key, e] of Object.entries(b.t[dim] ?? {})) {
      const into = (a.t[dim][key] ??= { n: 0, x: 0 });
      into.n += e.n;
      into.x += e.x;
    }
  }
  return a;
}

/** The upper bound (ms) of the bucket where the `q` quantile falls; null without durations. */
export function quantile(hist: Counts, q: number): number | null {
  let total = 0;
  for (const v of Object.values(hist)) total += v;
  if (total === 0) return null;
  let seen = 0;
  for (let i = 0; i <= DURATION_BOUNDS.length; i++) {
    seen += hist[`b${i}`] ?? 0;
    if (seen >= q * total) return i < DURATION_BOUNDS.length ? DURATION_BOUNDS[i] : Infinity;
  }
  return Infinity;
}
