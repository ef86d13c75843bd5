/**
 * The mongoose model of the audit collection. Writes go through the driver with already-safe values (the
 * writer); the model serves reads, index creation and users who want mongoose queries of their own.
 */
import { Schema, type Connection, type Model, type SchemaOptions } from 'mongoose';
import type { AuditEvent } from '../core/types.js';
import { AUDIT_INDEXES } from './indexes.js';

const { Mixed } = Schema.Types;

/**
 * Our filters name a path inside Mixed `actor`: an app's global `strictQuery: 'throw'` must not refuse them.
 * (Against a global `sanitizeFilter`, which wins over query options, our operators are marked `trusted`.)
 */
export const OWN_FILTER = { strictQuery: false } as const;

/**
 * Marks the audit collection's own schemas: the change plugin, even when registered globally, leaves them
 * alone. A schema option, not a set of schemas: mongoose hands global plugins a clone, which keeps its options.
 */
export const AUDIT_SCHEMA_OPTION = 'koaAuditEvents';

export function isAuditSchema(schema: Schema): boolean {
  return schema.get(AUDIT_SCHEMA_OPTION as keyof SchemaOptions) === true;
}

function eventSchema(collection: string): Schema {
  // Untyped on purpose: mongoose's inferred types for a schema this wide exceed the compiler's depth limit.
  const schema = new Schema(
    {
      ts: { type: Date, required: true },
      kind: { type: String, required: true },
      outcome: { type: String, required: true },
      actor: { type: Mixed, default: null },
      requestId: { type: String, default: null },
      ip: { type: String, default: null },
      userAgent: { type: String, default: null },
      http: { type: Mixed },
      error: { type: Mixed },
      model: { type: String },
      collectionName: { type: String },
      documentId: { type: String },
      operation: { type: String },
      changes: { type: Mixed },
      summary: { type: Mixed },
      provider: { type: String },
      identifier: { type: String },
      reason: { type: String },
      name: { type: String },
      target: { type: Mixed },
      meta: { type: Mixed },
      onBehalfOf: { type: Mixed },
      tenant: { type: String },
      traceId: { type: String },
      spanId: { type: String },
    },
    { collection, versionKey: false, autoIndex: false, autoCreate: false, strict: false, minimize: false, [AUDIT_SCHEMA_OPTION]: true },
  );
  // Only the indexes a catalogued query needs (lib/store/indexes.ts): each one costs every stored event a B-tree update.
  for (const { key, name } of AUDIT_INDEXES) schema.index(key, { name });
  return schema;
}

/** The model for `collection` on `connection`, created once per connection and collection. */
export function eventModel(connection: Connection, collection: string): Model<AuditEvent> {
  const name = `KoaAuditEvent:${collection}`;
  const existing = connection.models[name] as Model<AuditEvent> | undefined;
  return existing ?? (connection.model(name, eventSchema(collection)) as unknown as Model<AuditEvent>);
}
