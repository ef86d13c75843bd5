/**
 * Change auditing: the mongoose plugin. `schema.plugin(audit.plugin, options)`, or `mongoose.plugin(audit.plugin)`
 * for every schema (the audit collection's own schema is always left alone).
 *
 * Coverage: save (create and update, so `Model.create` too), insertMany, updateOne, updateMany,
 * findOneAndUpdate, replaceOne, findOneAndReplace, deleteOne (query and document), deleteMany,
 * findOneAndDelete and bulkWrite (every operation type). Each family of write paths has its own module here
 * (save.ts, query-writes.ts, insert-many.ts, bulk-write.ts); this one only registers their hooks.
 */
import type { Schema } from 'mongoose';
import type { AuditCore } from '../core/core.js';
import { auditedBulkWrite } from './bulk-write.js';
import { auditedInsertMany, postInsertMany } from './insert-many.js';
import { DELETE_QUERIES, UPDATE_QUERIES, postQuery, preQuery, type AuditedQuery } from './query-writes.js';
import { postSave, preSave, type AuditedDocument } from './save.js';
import { guard, NO_PRE_IMAGE_OPTION, type AuditedModel, type SchemaAudit } from './recorder.js';
import { pathFilter } from './diff.js';
import { bool, checkKnown, fail, objectOption, pathList, positiveInt } from '../core/options.js';
import { REDACTED, type Redactor } from '../core/redact.js';
import { isAuditSchema } from '../store/model.js';

export interface PluginOptions {
  /** Field paths to audit, with everything under them (default: every field). */
  include?: string[];
  /** Field paths never audited, with everything under them (wins over `include`). The version key is always excluded unless included. */
  exclude?: string[];
  /** Extra key names redacted in this schema's changes (a change whose path has such a segment stores `'[REDACTED]'`). */
  redact?: string[];
  /**
   * Read the pre-image before updates (default true). With false, nothing of the documents is read before a
   * write: update events list the fields the write sets, with their new values and `from: null`; delete
   * events have no changes; the ids of the documents a query targets are still read (`_id` only), unless
   * the filter is a plain `{ _id }`.
   */
  fetchBefore?: boolean;
  /** Record an update event with no changes when an update changes nothing (default false). */
  recordNoop?: boolean;
  /** Most documents of one updateMany / deleteMany recorded one by one; above it, one summary event. Default 1,000. */
  maxDocuments?: number;
  /**
   * A readable name of the changed document, stored as `documentLabel` beside its id: a field path
   * (`'name'`, `'profile.email'`) or a function of the document as read. Absent when the read has no such field.
   */
  label?: string | ((doc: Record<string, unknown>) => unknown);
}

const KNOWN = ['include', 'exclude', 'redact', 'fetchBefore', 'recordNoop', 'maxDocuments', 'label'] as const;

/** The `label` option as a function of a document. */
function labelOption(v: unknown, redactor: Redactor): ((doc: Record<string, unknown>) => unknown) | null {
  if (v === undefined) return null;
  if (typeof v === 'function') return v as (doc: Record<string, unknown>) => unknown;
  if (typeof v !== 'string' || v === '' || v.startsWith('$')) fail('label', "a field path such as 'name', or (doc) => string", v);
  const parts = (v as string).split('.');
  // A label read from a secret field would store the secret beside every change.
  if (parts.some((p) => redactor.isSecret(p))) return () => REDACTED;
  return (doc) => {
    let cur: unknown = doc;
    for (const p of parts) cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[p] : undefined;
    return cur;
  };
}

/** Hook registration typed loosely: mongoose's overloads cannot express one handler for many hook names. */
interface Hooks {
  pre(name: string, options: { document: boolean; query: boolean }, fn: (this: never, ...args: never[]) => unknown): void;
  post(name: string, options: { document: boolean; query: boolean }, fn: (this: never, ...args: never[]) => unknown): void;
  post(name: string, fn: (this: never, ...args: never[]) => unknown): void;
  statics: Record<string, unknown>;
  get(key: string): unknown;
}

/** The paths not under another one of the list: a projection naming both `a` and `a.b` is a server error. */
function outermost(paths: readonly string[]): string[] {
  return paths.filter((p) => !paths.some((q) => q !== p && p.startsWith(`${q}.`)));
}

type BulkWrite = (this: unknown, ops: unknown, options?: unknown) => Promise<unknown>;

interface SchemaWalk {
  eachPath(fn: (path: string, type: { options?: { select?: unknown }; schema?: unknown }) => void): void;
}

/** The audited paths declared `select: false`, nested schemas included (mongoose walks them the same way). */
function unselectedPaths(schema: SchemaWalk, audited: (path: string) => boolean, prefix: string, seen: Set<unknown>, out: string[]): string[] {
  if (seen.has(schema)) return out;
  seen.add(schema);
  schema.eachPath((path, type) => {
    const full = prefix === '' ? path : `${prefix}.${path}`;
    if (type.options?.select === false) {
      if (audited(full)) out.push(full);
      return;
    }
    if (type.schema !== undefined && type.schema !== null) unselectedPaths(type.schema as SchemaWalk, audited, full, seen, out);
  });
  return out;
}

/**
 * The projection of whole-document mongoose reads. Computed at the first write, when a schema given to a
 * global `mongoose.plugin` has all its paths. An inclusive projection needs nothing: it names what it reads.
 */
function findProjectionOf(schema: Schema, audited: (path: string) => boolean, projection: Record<string, 0 | 1> | null): () => object {
  let memo: object | null = null;
  return () => {
    if (memo !== null) return memo;
    const base: Record<string, 0 | 1> = { ...(projection ?? {}) };
    const keys = Object.keys(base);
    const inclusive = keys.length > 0 && base[keys[0]] === 1;
    if (!inclusive) for (const p of unselectedPaths(schema as unknown as SchemaWalk, audited, '', new Set(), [])) base[`+${p}`] = 1;
    memo = base;
    return memo;
  };
}

/** Marks the statics this plugin installs, with the auditor they belong to. */
const kAuditor = Symbol('koa-audit.auditor');

/** True when `core`'s plugin has hooked this schema (its own, or the base's of a discriminator). */
export function hookedBy(schema: Schema, core: AuditCore): boolean {
  const statics = (schema as unknown as { statics?: Record<string, unknown> }).statics;
  return (statics?.bulkWrite as { [kAuditor]?: AuditCore } | undefined)?.[kAuditor] === core;
}

export function createPlugin(core: AuditCore): (schema: Schema, options?: PluginOptions) => void {
  const applied = new WeakSet<Schema>();
  const verdicts = new Map<string, boolean>();

  const auditsModel = (name: string): boolean => {
    let v = verdicts.get(name);
    if (v === undefined) {
      v = core.options.auditsModel(name) === true;
      verdicts.set(name, v);
    }
    return v;
  };

  return function auditPlugin(schema: Schema, options?: PluginOptions): void {
    const o = objectOption('plugin options', options);
    checkKnown(o, KNOWN, 'plugin');
    const include = pathList('include', o.include);
    const exclude = pathList('exclude', o.exclude) ?? [];
    const extraRedact = pathList('redact', o.redact) ?? [];
    const fetchBefore = bool('fetchBefore', o.fetchBefore, true);
    const recordNoop = bool('recordNoop', o.recordNoop, false);
    const maxDocuments = positiveInt('maxDocuments', o.maxDocuments, 1000);

    // The audit collection never audits itself; a schema audited explicitly is not hooked twice by a global
    // `mongoose.plugin(audit.plugin)` applied later; a discriminator's schema inherits its base's hooks.
    const hooks = schema as unknown as Hooks;
    const inherited = (hooks.statics.bulkWrite as { [kAuditor]?: AuditCore } | undefined)?.[kAuditor] === core;
    if (isAuditSchema(schema) || applied.has(schema) || inherited) return;
    applied.add(schema);
    if (!fetchBefore) (schema as unknown as { set(key: string, value: unknown): void }).set(NO_PRE_IMAGE_OPTION, true);

    const versionKey = hooks.get('versionKey');
    if (typeof versionKey === 'string' && !(include ?? []).includes(versionKey)) exclude.push(versionKey);
    const audited = pathFilter(include, exclude);
    const redactor = core.redactor.with(extraRedact);
    let projection: Record<string, 0 | 1> | null = null;
    if (include !== null) projection = Object.fromEntries(outermost(include).map((p) => [p, 1 as const]));
    else if (exclude.some((p) => p !== '_id')) projection = Object.fromEntries(outermost(exclude.filter((p) => p !== '_id')).map((p) => [p, 0 as const]));

    const label = labelOption(o.label, redactor);
    const s: SchemaAudit = {
      core,
      change: { audited, redactor, limits: core.limits },
      audited,
      redactor,
      projection,
      findProjection: findProjectionOf(schema, audited, projection),
      fetchBefore,
      recordNoop,
      maxDocuments,
      auditsModel,
      label,
    };

    const doc = { document: true, query: false };
    const query = { document: false, query: true };
    hooks.pre('save', doc, async function (this: AuditedDocument) {
      await preSave(s, this);
    });
    hooks.post('save', doc, async function (this: AuditedDocument) {
      await guard(s, postSave(s, this));
    });
    for (const name of [...UPDATE_QUERIES, ...DELETE_QUERIES]) {
      hooks.pre(name, query, async function (this: AuditedQuery) {
        await preQuery(s, this);
      });
      hooks.post(name, query, async function (this: AuditedQuery, res: unknown) {
        await guard(s, postQuery(s, this, res));
      });
    }
    hooks.post('insertMany', async function (this: AuditedModel, docs: unknown) {
      await guard(s, postInsertMany(s, this, docs));
    });
    // Kareem tells error handlers by arity: (error, docs, next). An ordered or unordered insertMany that
    // failed part-way still inserted `error.insertedDocs`: those happened, and are recorded.
    const handled = new WeakSet<object>();
    hooks.post('insertMany', async function (this: AuditedModel, error: unknown, _docs: unknown, _next: unknown) {
      if (error !== null && typeof error === 'object') handled.add(error);
      const inserted = (error as { insertedDocs?: unknown } | null)?.insertedDocs;
      if (Array.isArray(inserted) && inserted.length > 0) await guard(s, postInsertMany(s, this, inserted));
    });

    // The statics mongoose calls for insertMany and bulkWrite, wrapped (see insert-many.ts and bulk-write.ts).
    const previousInsertMany = hooks.statics.insertMany as BulkWrite | undefined;
    hooks.statics.insertMany = function insertMany(this: AuditedModel & { base: { Model: { insertMany: BulkWrite } } }, docs: unknown, opts?: unknown) {
      return auditedInsertMany(s, this, previousInsertMany ?? this.base.Model.insertMany, docs, opts, handled);
    };

    const previous = hooks.statics.bulkWrite as BulkWrite | undefined;
    hooks.statics.bulkWrite = Object.assign(function bulkWrite(this: AuditedModel & { base: { Model: { bulkWrite: BulkWrite } } }, ops: unknown, opts?: unknown) {
      return auditedBulkWrite(s, this, previous ?? this.base.Model.bulkWrite, ops, opts);
    }, { [kAuditor]: core });
  };
}
