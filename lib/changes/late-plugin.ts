/**
 * `mongoose.plugin(audit.plugin)` applies to schemas compiled *after* the call: models compiled before it are
 * silently not audited. Reading `audit.plugin` schedules one look, on the next turn of the event loop (the
 * `mongoose.plugin()` call has run by then): if the plugin is registered globally and compiled models lack its
 * hooks, one warning names them.
 */
import mongoose, { type Model, type Schema } from 'mongoose';
import type { AuditCore } from '../core/core.js';
import { isAuditSchema } from '../store/model.js';
import { hookedBy } from './plugin.js';

type PluginFn = (schema: Schema, options?: never) => void;

export function watchLatePlugin(core: AuditCore, plugin: PluginFn): () => void {
  let scheduled = false;
  let warned = false;
  const look = (): void => {
    scheduled = false;
    const globals = (mongoose as unknown as { plugins?: unknown[] }).plugins ?? [];
    if (!globals.some((p) => Array.isArray(p) && p[0] === plugin)) return;
    const models = new Set<Model<unknown>>();
    for (const c of mongoose.connections) for (const m of Object.values(c.models)) models.add(m as Model<unknown>);
    for (const m of Object.values(mongoose.models)) models.add(m as Model<unknown>);
    const missed = [...models].filter((m) => !isAuditSchema(m.schema) && !hookedBy(m.schema, core)).map((m) => m.modelName);
    if (missed.length === 0) return;
    warned = true;
    core.warnOnce(
      'KOA_AUDIT_PLUGIN_LATE',
      `mongoose.plugin(audit.plugin) was called after these models were compiled, so their changes are not audited: ${[...new Set(missed)].sort().join(', ')}. ` +
        'Call mongoose.plugin(audit.plugin) before any mongoose.model() / connection.model(), or apply schema.plugin(audit.plugin) to those schemas.',
    );
  };
  return () => {
    if (scheduled || warned) return;
    scheduled = true;
    setImmediate(look).unref();
  };
}
