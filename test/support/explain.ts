/**
 * Index use, as the server reports it. MongoDB's explain names plan stages (IXSCAN, COLLSCAN, SORT) and the
 * index; FerretDB answers with its backend's own plan (`queryPlanner.Plan`) and no stages, so a test that asserts
 * index use skips there, saying why, instead of passing without checking anything.
 */
import type { Query } from 'mongoose';

export interface PlanStage {
  stage: string;
  indexName?: string;
}

export function planStages(plan: unknown, out: PlanStage[] = []): PlanStage[] {
  if (plan === null || typeof plan !== 'object') return out;
  if (Array.isArray(plan)) {
    for (const p of plan) planStages(p, out);
    return out;
  }
  const p = plan as Record<string, unknown>;
  if (typeof p.stage === 'string') out.push({ stage: p.stage, indexName: typeof p.indexName === 'string' ? p.indexName : undefined });
  for (const [k, v] of Object.entries(p)) if (k !== 'stage' && typeof v === 'object') planStages(v, out);
  return out;
}

/** The winning plan's stages, or a reason why this server's explain cannot show them. */
export async function explainStages(query: Query<unknown, unknown>): Promise<{ stages: PlanStage[] } | { skip: string }> {
  const ex = (await query.explain('queryPlanner')) as unknown as { queryPlanner?: { winningPlan?: unknown } };
  const winning = ex.queryPlanner?.winningPlan;
  if (winning === undefined) {
    return { skip: `this server's explain reports no plan stages (it answered ${JSON.stringify(ex.queryPlanner ?? ex).slice(0, 160)}), so index use cannot be asserted here` };
  }
  return { stages: planStages(winning) };
}

/**
 * The winning plan(s) of any explain answer: a find's (`queryPlanner.winningPlan`, its stages under
 * `inputStage`/`inputStages`, or under `queryPlan` on the slot-based engine), an aggregate's (`stages[0].$cursor`,
 * or top-level when the pipeline was pushed down), a sharded one's (`shards[].winningPlan`). Rejected plans are
 * left out: a COLLSCAN the planner considered and dropped says nothing.
 */
export function winningPlans(explain: unknown, out: unknown[] = []): unknown[] {
  if (explain === null || typeof explain !== 'object') return out;
  if (Array.isArray(explain)) {
    for (const e of explain) winningPlans(e, out);
    return out;
  }
  for (const [k, v] of Object.entries(explain as Record<string, unknown>)) {
    if (k === 'rejectedPlans') continue;
    if (k === 'winningPlan') out.push(v);
    else winningPlans(v, out);
  }
  return out;
}

/** The stages of every winning plan of an explain answer; null when it has none (FerretDB's explain). */
export function winningStages(explain: unknown): PlanStage[] | null {
  const plans = winningPlans(explain);
  if (plans.length === 0) return null;
  const stages: PlanStage[] = [];
  for (const p of plans) planStages(p, stages);
  return stages.length === 0 ? null : stages;
}

/** What a catalogued query asks of an index: equality fields, then the sort, then range fields (ESR). */
export interface EsrShape {
  equality: readonly string[];
  sort: Readonly<Record<string, 1 | -1>>;
  range: readonly string[];
  residual: readonly string[];
}

/**
 * Why `key` cannot serve `shape` without a collection scan or an in-memory sort, or null when it can: the
 * equality fields make up the key's prefix (in any order), the sort's fields follow in order, all in the key's
 * directions or all reversed (a sort field that is also an equality is constant and skipped), and every
 * remaining filter field is a later key (a range, bounded in the index) or declared residual.
 */
export function whyNotServed(key: Readonly<Record<string, unknown>>, shape: EsrShape): string | null {
  const fields = Object.keys(key);
  const eq = new Set(shape.equality);
  let i = 0;
  while (i < fields.length && eq.has(fields[i])) i++;
  const missing = shape.equality.filter((f) => !fields.slice(0, i).includes(f));
  if (missing.length > 0) return `equality field(s) ${missing.join(', ')} are not the key's prefix`;
  const sort = Object.entries(shape.sort).filter(([f]) => !eq.has(f));
  let direction: 1 | -1 | 0 = 0;
  for (const [f, dir] of sort) {
    if (fields[i] !== f) return `sort field ${f} is not key ${i} (${fields[i] ?? 'none'})`;
    const d = (Number(key[f]) === dir ? 1 : -1) as 1 | -1;
    if (direction !== 0 && d !== direction) return `sort field ${f} runs against the other sort fields' direction`;
    direction = d;
    i++;
  }
  if (fields.length === 0 || Number.isNaN(Number(key[fields[0]]))) return `not an ordinary index (${JSON.stringify(key)})`;
  const rest = new Set(fields.slice(i));
  const used = new Set(fields.slice(0, i));
  const unbound = shape.range.filter((f) => !rest.has(f) && !used.has(f) && !shape.residual.includes(f));
  if (unbound.length > 0) return `range field(s) ${unbound.join(', ')} are neither in the key nor declared residual`;
  // An index must bound something: an equality, a sort, a range, or (distinct) its first field.
  if (shape.equality.length === 0 && sort.length === 0 && !shape.range.includes(fields[i])) return 'the key bounds nothing of this query';
  return null;
}
