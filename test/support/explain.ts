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
