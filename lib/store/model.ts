/**
 * The mongoose model of the audit collection. Writes go through the driver with already-safe values (the
 * writer); the model serves reads, index creation and users who want mongoose queries of their own.
 */
import { Schema, type Connection, type Model, type SchemaOptions } from 'mongoose';
import type { AuditEvent } from '../core/types.js';

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
  // Newest-first keyset pagination sorts on (ts, _id): every index ends with both.
  schema.index({ ts: -1, _id: -1 });
  schema.index({ 'actor.id': 1, ts: -1, _id: -1 });
  schema.index({ model: 1, documentId: 1, ts: -1, _id: -1 });
  // A documentId alone (the contract allows it) cannot use the index above (model comes first).
  schema.index({ documentId: 1, ts: -1, _id: -1 });
  // A model alone cannot sort on the index above (documentId sits between model and ts).
  schema.index({ model: 1, ts: -1, _id: -1 });
  schema.index({ requestId: 1, ts: -1, _id: -1 });
  schema.index({ kind: 1, ts: -1, _id: -1 });
  schema.index({ outcome: 1, ts: -1, _id: -1 });
  schema.index({ ip: 1, ts: -1, _id: -1 });
  // Security events are read by their vocabulary name (`authz_fail` across all users, say).
  schema.index({ name: 1, ts: -1, _id: -1 });
  // Change context (issue 15): a tenant-scoped viewer filters every read by tenant; traces and impersonation
  // are looked up by id; a reason by its prefix (an anchored regex walks this index's range).
  schema.index({ tenant: 1, ts: -1, _id: -1 });
  schema.index({ traceId: 1, ts: -1, _id: -1 });
  schema.index({ 'onBehalfOf.id': 1, ts: -1, _id: -1 });
  schema.index({ reason: 1, ts: -1, _id: -1 });
  // verify reads the hash chains in one pass, in this order.
  schema.index({ 'chain.id': 1, 'chain.seq': 1, _id: 1 });
  // What a client said its request id was (the server's own is `requestId`): `query({ clientRequestId })`.
  schema.index({ 'http.clientRequestId': 1, ts: -1, _id: -1 });
  // The investigation filters: route and path (exact or prefix), login identifier.
  schema.index({ 'http.route': 1, ts: -1, _id: -1 });
  schema.index({ 'http.path': 1, ts: -1, _id: -1 });
  schema.index({ identifier: 1, ts: -1, _id: -1 });
  return schema;
}

/**
 * The text index of free-text search (path, route, identifier, error message, document label). Not part of
 * the schema: a server without text indexes (FerretDB) would fail every other index with it. Resolves with
 * why it could not be made, or null.
 */
export async function ensureTextIndex(model: Model<AuditEvent>): Promise<string | null> {
  try {
    await model.collection.createIndex(
      { 'http.path': 'text', 'http.route': 'text', identifier: 'text', 'error.message': 'text', documentLabel: 'text' },
      { name: 'koa_audit_text', default_language: 'none' },
    );
    return null;
  } catch (err) {
    const e = err as { name?: unknown };
    if (typeof e.name === 'string' && /^Mongo(Network|NetworkTimeout|ServerSelection)Error$/.test(e.name)) throw err;
    return (err as Error).message;
  }
}

/** The model for `collection` on `connection`, created once per connection and collection. */
export function eventModel(connection: Connection, collection: string): Model<AuditEvent> {
  const name = `KoaAuditEvent:${collection}`;
  const existing = connection.models[name] as Model<AuditEvent> | undefined;
  return existing ?? (connection.model(name, eventSchema(collection)) as unknown as Model<AuditEvent>);
}
