/**
 * Streaming export of the audit collection, oldest first, as NDJSON or CSV (used by `koa-audit export`).
 *
 * NDJSON: one event per line, `JSON.stringify` of the event's JSON form (lib/core/json.ts: `_id` as 24 hex
 * characters, `ts` as ISO 8601 UTC with milliseconds, every other field as stored), lines ended by `\n`.
 *
 * CSV (RFC 4180, UTF-8, no BOM, `\r\n` line ends): a header row, then one row per event with the flat columns of
 * CSV_COLUMNS, each a single value a spreadsheet or BI tool can filter on (csvFields says where each comes from).
 * Absent or null values are empty cells; numbers in their JSON spelling; `changed_paths` the changed paths joined
 * by `;`. A cell containing `"`, `,`, CR or LF is quoted, `"` doubled. Against formula injection, a text cell that
 * starts with `=`, `+`, `-`, `@`, any whitespace or control character (space, tab, CR, LF, ...) or a full-width
 * `＝＋－＠` gets a leading `'` (so `-1` is written `'-1`); spreadsheets trim leading whitespace before deciding
 * whether a cell is a formula.
 *
 * Memory stays flat whatever the size: the cursor reads in batches, and the next batch is only read once the
 * output has taken the previous one (the stream's backpressure is respected).
 */
import type { Writable } from 'node:stream';
import type { mongo } from 'mongoose';
import { planQuery, type QueryFilter, type TextSearch } from './query.js';
import { eventToJson } from '../core/json.js';

export type ExportFormat = 'ndjson' | 'csv';

export const CSV_COLUMNS = [
  'ts', 'kind', 'outcome', 'actor_id', 'actor_name', 'request_id', 'ip', 'method', 'path', 'route', 'status',
  'duration_ms', 'model', 'document_id', 'operation', 'changed_paths', 'provider', 'identifier', 'reason', 'name',
  'on_behalf_of_id', 'tenant', 'trace_id',
] as const;

export type CsvColumn = (typeof CSV_COLUMNS)[number];

/** What an export selects: the query API's filter, without paging. */
export type ExportFilter = Omit<QueryFilter, 'limit' | 'after'>;

export interface ExportOptions {
  format: ExportFormat;
  filter?: ExportFilter;
  /** Called now and then with the number of events written so far. */
  onProgress?: (written: number) => void;
  /** Events per cursor batch. Default 1000. */
  batchSize?: number;
  /** How free text (`q`) is searched: see `textSearch()` in query.ts. Default `'index'`. */
  textSearch?: TextSearch;
}

const NEEDS_QUOTES = /[",\r\n]/;
// Whitespace and control characters first: a spreadsheet skips them and may then find a formula.
const FORMULA_START = /^[=+\-@\s\p{Cc}\p{Cf}\uFF1D\uFF0B\uFF0D\uFF20]/u;
/** Output is written in chunks of about this many characters: fewer, larger writes. */
const CHUNK = 64 * 1024;

export function csvCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  // A number or boolean cannot be a formula: written as it is, so that it stays a number.
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  let s = typeof value === 'string' ? value : JSON.stringify(value) ?? '';
  if (FORMULA_START.test(s)) s = `'${s}`;
  return NEEDS_QUOTES.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function csvHeader(): string {
  return `${CSV_COLUMNS.join(',')}\r\n`;
}

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});

/** The flat values of one event (its JSON form), by CSV column. */
export function csvFields(doc: Record<string, unknown>): Record<CsvColumn, unknown> {
  const e = eventToJson(doc) as unknown as Obj;
  const actor = obj(e.actor);
  const http = obj(e.http);
  const changes = Array.isArray(e.changes) ? e.changes : [];
  return {
    ts: e.ts,
    kind: e.kind,
    outcome: e.outcome,
    actor_id: actor.id,
    actor_name: actor.name,
    request_id: e.requestId,
    ip: e.ip,
    method: http.method,
    path: http.path,
    route: http.route,
    status: http.status,
    duration_ms: http.durationMs,
    model: e.model,
    document_id: e.documentId,
    operation: e.operation,
    changed_paths: changes.length === 0 ? null : changes.map((c) => String(obj(c).path ?? '')).join(';'),
    provider: e.provider,
    identifier: e.identifier,
    reason: e.reason,
    name: e.name,
    on_behalf_of_id: obj(e.onBehalfOf).id,
    tenant: e.tenant,
    trace_id: e.traceId,
  };
}

export function csvRow(doc: Record<string, unknown>): string {
  const f = csvFields(doc);
  let row = '';
  for (let i = 0; i < CSV_COLUMNS.length; i++) row += (i === 0 ? '' : ',') + csvCell(f[CSV_COLUMNS[i]]);
  return `${row}\r\n`;
}

export function ndjsonLine(doc: Record<string, unknown>): string {
  return `${JSON.stringify(eventToJson(doc))}\n`;
}

/**
 * The query of an export: the query API's own filter and rules (planQuery), read oldest first, served by the
 * index of the filter walked backwards.
 */
export function exportQuery(filter: ExportFilter = {}, text: TextSearch = 'index'): { filter: Record<string, unknown>; sort: { ts: 1; _id: 1 } } {
  for (const key of ['limit', 'after']) {
    if (Object.hasOwn(filter, key)) throw new TypeError(`koa-audit: an export reads every matching event; "${key}" does not apply`);
  }
  return { filter: planQuery(filter, text).filter, sort: { ts: 1, _id: 1 } };
}

function drained(out: Writable): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: unknown): void => {
      out.off('drain', onDrain).off('error', done).off('close', onClose);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onDrain = (): void => done();
    const onClose = (): void => done(out.errored ?? new Error('the output closed before the export finished'));
    out.on('drain', onDrain).on('error', done).on('close', onClose);
  });
}

async function write(out: Writable, chunk: string): Promise<void> {
  if (out.errored) throw out.errored;
  if (out.destroyed) throw new Error('the output closed before the export finished');
  // Backpressure: the next batch is read only once the output has taken this one.
  if (!out.write(chunk)) await drained(out);
}

/** Streams the matching events to `out` (which it does not end). Resolves with the number written. */
export async function exportEvents(collection: mongo.Collection, out: Writable, options: ExportOptions): Promise<number> {
  const { filter, sort } = exportQuery(options.filter, options.textSearch);
  const format = options.format === 'csv' ? csvRow : ndjsonLine;
  const cursor = collection.find(filter, { sort, batchSize: options.batchSize ?? 1000 });
  let written = 0;
  let pending = options.format === 'csv' ? csvHeader() : '';
  let lastReport = Date.now();
  try {
    for await (const doc of cursor) {
      pending += format(doc as Record<string, unknown>);
      written++;
      if (pending.length >= CHUNK) {
        await write(out, pending);
        pending = '';
        if (options.onProgress !== undefined && Date.now() - lastReport >= 1000) {
          lastReport = Date.now();
          options.onProgress(written);
        }
      }
    }
    if (pending !== '') await write(out, pending);
  } finally {
    await cursor.close();
  }
  options.onProgress?.(written);
  return written;
}
