/**
 * `auditor.dashboard({ from, to, bucket?, tenant? })`: the numbers behind the dashboard page.
 *
 * The range is widened to whole buckets (the answer says which range it covers), so that every number is the
 * count of an exact [from, to) of events and a chart's bar can link to the list of exactly those events.
 * Hourly and daily buckets are read from the rollups; finer buckets, a range the rollups do not cover (older
 * than their retention, or than the auditor), or disabled rollups are answered by counting the events of
 * the range (a find over the `ts` index with a narrow projection, which every server supports). `source`
 * and `reason` say which was used and why.
 */
import type { Collection } from 'mongoose';
import type { StoredDoc } from '../core/types.js';
import { DEGRADED_NAME, RECOVERED_NAME, STORE_MONITOR } from '../store/health.js';
import { DAY_MS, floorHour, HOUR_MS, TALLY_PROJECTION, type RollupStore } from './store.js';
import { addEvent, emptyTally, merge, parseDocumentKey, parseRouteKey, quantile, STATUS_CLASSES, type Tally, type TopDimension } from './tally.js';

export type DashboardBucket = 'minute' | '5m' | '15m' | 'hour' | 'day';
const BUCKET_MS: Record<DashboardBucket, number> = { minute: 60_000, '5m': 300_000, '15m': 900_000, hour: HOUR_MS, day: 86_400_000 };
export const DASHBOARD_BUCKETS = Object.keys(BUCKET_MS) as DashboardBucket[];
const MAX_BUCKETS = 2_000;
const TOP_N = 10;
const MAX_LOSSES = 50;
const MAX_PERIODS = 100;

export interface DashboardQuery {
  from: Date;
  to: Date;
  /** Default: 5m up to 2 hours, hour up to 3 days, day beyond. */
  bucket?: DashboardBucket;
  /** Only this tenant's events. */
  tenant?: string;
}

export interface DashboardPoint {
  /** Start of the bucket (ISO); the bucket is [ts, ts + bucketMs). */
  ts: string;
  events: number;
  byKind: Record<string, number>;
  failuresByKind: Record<string, number>;
  failures: number;
  /** Requests per status class. */
  status: Record<string, number>;
  /** Failed-login events, and the attempts they stand for (flood summaries count what they held back). */
  loginFailed: number;
  loginFailedAttempts: number;
  lost: number;
}

export interface DashboardTopRow {
  key: string;
  /** Events counted (what the event list filtered on this key shows). */
  events: number;
  /** Attempts (failed logins: a flood summary stands for what it held back); equal to events elsewhere. */
  attempts: number;
}

export interface DashboardRoute {
  method: string;
  /** The matched route, or null when none matched (then `path` is the request path). */
  route: string | null;
  path: string | null;
  requests: number;
  errors: number;
  errorRate: number;
  /** Upper bounds (ms) of the histogram buckets where p50 and p95 fall; null without durations. */
  p50: number | null;
  p95: number | null;
}

export interface DashboardLoss {
  id: string;
  ts: string;
  lost: number;
  from: string | null;
  to: string | null;
  policy: string | null;
}

/**
 * A period when the store was failing to write (degraded), from the trail's `sys_monitor_disabled` and
 * `sys_monitor_enabled` events of the auditor (lib/store/health.ts).
 */
export interface DashboardDegradedPeriod {
  /** When it was declared degraded; null when that was before the range (only its end is in it). */
  from: string | null;
  /** When writes succeeded again; null when that is after the range, or has not happened yet. */
  to: string | null;
  /** The ids of the two events (null where outside the range). */
  startId: string | null;
  endId: string | null;
  /** The write error that made it degraded. */
  error: string | null;
}

export interface DashboardAnswer {
  source: 'rollups' | 'aggregation';
  /** Why the events were counted instead of the rollups read; null when the rollups answered. */
  reason: string | null;
  from: string;
  to: string;
  bucket: DashboardBucket;
  bucketMs: number;
  tenant: string | null;
  totals: Omit<DashboardPoint, 'ts'>;
  series: DashboardPoint[];
  topFailedIdentifiers: DashboardTopRow[];
  topFailedIps: DashboardTopRow[];
  topActors: DashboardTopRow[];
  topModels: DashboardTopRow[];
  topDocuments: (DashboardTopRow & { model: string; documentId: string })[];
  routes: DashboardRoute[];
  /** Per table, events not counted under a key of their own (the rollup's table was full). */
  overflow: Record<string, number>;
  /** Loss events of the range (newest first, at most 50): they must never hide. */
  losses: DashboardLoss[];
  /** Whether the store is failing to write right now (a degraded period under way). */
  degraded: boolean;
  /** Periods of the range when the store was degraded, oldest first (at most 100): they must never hide. */
  degradedPeriods: DashboardDegradedPeriod[];
}

export interface DashboardDeps {
  events: () => Collection;
  rollups: RollupStore | null;
  degraded: () => boolean;
}

function bad(message: string): never {
  throw new TypeError(`koa-audit: dashboard ${message}`);
}

function validDate(name: string, v: unknown): Date {
  if (!(v instanceof Date) || Number.isNaN(v.getTime())) bad(`option "${name}" must be a valid Date, got ${String(v)}`);
  return v;
}

export function planDashboard(q: DashboardQuery): { from: number; to: number; bucket: DashboardBucket; bucketMs: number; tenant: string | null } {
  if (q === null || typeof q !== 'object') bad('needs { from, to, bucket?, tenant? }');
  for (const key of Object.keys(q)) if (!['from', 'to', 'bucket', 'tenant'].includes(key)) bad(`option "${key}" is unknown (known: from, to, bucket, tenant)`);
  const from = validDate('from', q.from).getTime();
  const to = validDate('to', q.to).getTime();
  if (!(to > from)) bad('option "to" must be after "from"');
  const span = to - from;
  const bucket = q.bucket ?? (span <= 2 * HOUR_MS ? '5m' : span <= 3 * 86_400_000 ? 'hour' : 'day');
  if (!Object.hasOwn(BUCKET_MS, bucket)) bad(`option "bucket" must be one of ${DASHBOARD_BUCKETS.join(', ')}, got ${String(bucket)}`);
  const bucketMs = BUCKET_MS[bucket];
  // Whole buckets (UTC): every number then counts an exact [from, to) that the event list can show.
  const start = Math.floor(from / bucketMs) * bucketMs;
  const end = Math.ceil(to / bucketMs) * bucketMs;
  if ((end - start) / bucketMs > MAX_BUCKETS) bad(`range holds more than ${MAX_BUCKETS} buckets of ${bucket}; choose a larger bucket`);
  if (q.tenant !== undefined && (typeof q.tenant !== 'string' || q.tenant === '' || q.tenant.length > 4096)) bad('option "tenant" must be a non-empty string');
  return { from: start, to: end, bucket, bucketMs, tenant: q.tenant ?? null };
}

export async function dashboard(deps: DashboardDeps, q: DashboardQuery): Promise<DashboardAnswer> {
  const plan = planDashboard(q);
  const buckets = new Map<number, Tally>();
  for (let t = plan.from; t < plan.to; t += plan.bucketMs) buckets.set(t, emptyTally());
  const bucketOf = (ms: number): Tally | undefined => buckets.get(Math.floor(ms / plan.bucketMs) * plan.bucketMs);

  let reason = await whyNotRollups(deps, plan);
  if (reason === null && deps.rollups !== null) {
    // One small document per bucket, read by its _id: a month by days is thirty reads, whatever the events.
    await deps.rollups.flush();
    const grain = plan.bucketMs % DAY_MS === 0 ? 'd' : 'h';
    for (const [start, t] of await deps.rollups.read(plan.from, plan.to, plan.tenant, grain)) {
      const into = bucketOf(start);
      if (into !== undefined) merge(into, t);
    }
  } else {
    reason ??= 'rollups are disabled';
    const filter: Record<string, unknown> = { ts: { $gte: new Date(plan.from), $lt: new Date(plan.to) } };
    if (plan.tenant !== null) filter.tenant = plan.tenant;
    const cursor = deps.events().find(filter, { projection: TALLY_PROJECTION, batchSize: 5000 });
    try {
      for await (const e of cursor) {
        const ts = (e as StoredDoc).ts;
        const into = ts instanceof Date ? bucketOf(ts.getTime()) : undefined;
        if (into !== undefined) addEvent(into, e as StoredDoc);
      }
    } finally {
      await cursor.close();
    }
  }

  const all = emptyTally();
  const series: DashboardPoint[] = [];
  for (const [t, tally] of buckets) {
    merge(all, tally);
    series.push({ ts: new Date(t).toISOString(), ...pointOf(tally) });
  }
  // The loss events themselves are read only when the count says there are some (a server without index
  // pushdown would otherwise scan the range on every visit).
  let losses: StoredDoc[] = [];
  if ((all.k.loss ?? 0) > 0) {
    const lossFilter: Record<string, unknown> = { kind: 'loss', ts: { $gte: new Date(plan.from), $lt: new Date(plan.to) } };
    if (plan.tenant !== null) lossFilter.tenant = plan.tenant;
    losses = (await deps.events().find(lossFilter, { sort: { ts: -1, _id: -1 }, limit: MAX_LOSSES }).toArray()) as StoredDoc[];
  }

  const degradedPeriods = all.dg > 0 ? await readDegraded(deps.events(), plan) : [];

  return {
    source: reason === null ? 'rollups' : 'aggregation',
    reason,
    from: new Date(plan.from).toISOString(),
    to: new Date(plan.to).toISOString(),
    bucket: plan.bucket,
    bucketMs: plan.bucketMs,
    tenant: plan.tenant,
    totals: pointOf(all),
    series,
    topFailedIdentifiers: topRows(all, 'identifier'),
    topFailedIps: topRows(all, 'ip'),
    topActors: topRows(all, 'actor'),
    topModels: topRows(all, 'model'),
    topDocuments: topRows(all, 'document').map((r) => ({ ...r, ...parseDocumentKey(r.key) })),
    routes: Object.entries(all.r)
      .map(([key, r]) => ({ ...parseRouteKey(key), requests: r.n, errors: r.e, errorRate: r.n === 0 ? 0 : r.e / r.n, p50: quantile(r.d, 0.5), p95: quantile(r.d, 0.95) }))
      .sort((a, b) => b.requests - a.requests || (a.route ?? a.path ?? '').localeCompare(b.route ?? b.path ?? '') || a.method.localeCompare(b.method)),
    overflow: { ...all.o },
    losses: losses.map((l) => {
      const m = (l.meta ?? {}) as Record<string, unknown>;
      const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
      return { id: String(l._id), ts: (l.ts as Date).toISOString(), lost: typeof m.lost === 'number' ? m.lost : 0, from: str(m.from), to: str(m.to), policy: str(m.policy) };
    }),
    degraded: deps.degraded(),
    degradedPeriods,
  };
}

/** The degraded periods of the range, paired from their transitions (read only when the counts say there are some). */
async function readDegraded(events: Collection, plan: ReturnType<typeof planDashboard>): Promise<DashboardDegradedPeriod[]> {
  const filter: Record<string, unknown> = {
    kind: 'security', name: { $in: [DEGRADED_NAME, RECOVERED_NAME] }, 'meta.monitor': STORE_MONITOR, ts: { $gte: new Date(plan.from), $lt: new Date(plan.to) },
  };
  if (plan.tenant !== null) filter.tenant = plan.tenant;
  // The newest transitions (a period under way included), then paired oldest first.
  const docs = ((await events.find(filter, { sort: { ts: -1, _id: -1 }, limit: 2 * MAX_PERIODS }).toArray()) as StoredDoc[]).reverse();
  const out: DashboardDegradedPeriod[] = [];
  let open: DashboardDegradedPeriod | null = null;
  for (const d of docs) {
    const ts = (d.ts as Date).toISOString();
    const meta = (d.meta ?? {}) as Record<string, unknown>;
    if (d.name === DEGRADED_NAME) {
      if (open !== null) out.push(open); // two starts in a row: the first one's end was not recorded
      open = { from: ts, to: null, startId: String(d._id), endId: null, error: typeof meta.error === 'string' ? meta.error : null };
    } else {
      out.push(open === null ? { from: null, to: ts, startId: null, endId: String(d._id), error: null } : { ...open, to: ts, endId: String(d._id) });
      open = null;
    }
  }
  if (open !== null) out.push(open);
  return out.slice(-MAX_PERIODS);
}

async function whyNotRollups(deps: DashboardDeps, plan: ReturnType<typeof planDashboard>): Promise<string | null> {
  const r = deps.rollups;
  if (r === null) return 'rollups are disabled';
  if (plan.bucketMs < HOUR_MS) return `buckets of ${plan.bucket} are finer than the hourly rollups`;
  const oldest = floorHour(Date.now() - r.settings.days * 86_400_000) + HOUR_MS;
  if (plan.from < oldest) return `the range starts before the rollups' retention (${r.settings.days} days)`;
  const covered = await r.coveredFrom();
  if (covered === null) return 'the rollups are not set up yet';
  if (plan.from < covered.getTime()) return `the rollups count events from ${covered.toISOString()} on (run koa-audit rollup --rebuild to count older ones)`;
  return null;
}

function pointOf(t: Tally): Omit<DashboardPoint, 'ts'> {
  let failures = 0;
  for (const v of Object.values(t.f)) failures += v;
  const status: Record<string, number> = {};
  for (const c of STATUS_CLASSES) status[c] = t.s[c] ?? 0;
  return { events: t.n, byKind: { ...t.k }, failuresByKind: { ...t.f }, failures, status, loginFailed: t.k.login_failed ?? 0, loginFailedAttempts: t.la, lost: t.lost };
}

function topRows(t: Tally, dim: TopDimension): DashboardTopRow[] {
  return Object.entries(t.t[dim])
    .map(([key, e]) => ({ key, events: e.n, attempts: e.x }))
    .sort((a, b) => b.attempts - a.attempts || b.events - a.events || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
    .slice(0, TOP_N);
}
