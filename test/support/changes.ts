/** Helpers of the change-auditing tests: an auditor on a test database, and its events read back. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Schema, type Connection, type Model, type SchemaDefinition } from 'mongoose';
import { createAudit, type Auditor, type AuditOptions, type PluginOptions } from '../../lib/index.js';
import type { AuditEvent, Change } from '../../lib/core/types.js';

export interface ChangeFixture {
  auditor: Auditor;
  /** A fresh model on the test connection with the plugin applied (a unique name per call). */
  model<T = Record<string, unknown>>(definition: SchemaDefinition, options?: PluginOptions, schemaOptions?: object): Model<T>;
  /** The stored change events, oldest first, after a flush. */
  events(filter?: Record<string, unknown>): Promise<AuditEvent[]>;
}

let counter = 0;

export function changeFixture(conn: Connection, auditOptions: AuditOptions = {}): ChangeFixture {
  const auditor = createAudit({ connection: conn, spoolDir: mkdtempSync(join(tmpdir(), 'ka-plugin-')), flushIntervalMs: 20, ...auditOptions });
  return {
    auditor,
    model<T>(definition: SchemaDefinition, options?: PluginOptions, schemaOptions?: object): Model<T> {
      const schema = new Schema(definition, schemaOptions);
      schema.plugin(auditor.plugin, options);
      const name = `M${++counter}_${Date.now().toString(36)}`;
      return conn.model(name, schema) as unknown as Model<T>;
    },
    async events(filter: Record<string, unknown> = {}): Promise<AuditEvent[]> {
      await auditor.flush();
      return (await auditor.model.find(filter).sort({ ts: 1, _id: 1 }).lean()) as unknown as AuditEvent[];
    },
  };
}

/** Changes sorted by path: servers may order fields differently, the tests compare sets of changes. */
export function byPath(changes: Change[] | undefined): Change[] {
  return [...(changes ?? [])].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
