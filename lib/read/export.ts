/**
 * Streaming export of the audit collection, oldest first, as NDJSON or CSV (used by `koa-audit export`).
 *
 * NDJSON: one event per line, `JSON.stringify` of the event's JSON form (lib/core/json.ts: `_id` as 24 hex
 * characters, `ts` as ISO 8601 UTC with milliseconds, every other field as stored), lines ended by `\n`.
 *
 * CSV (RFC 4180, UTF-8, no BOM, `\r\n` line ends): a header row, then one row per event with the fixed columns
 * of CSV_COLUMNS. Absent or null values are empty cells; strings are written as they are; numbers and booleans
 * in their JSON spelling; nested values (`actor`, `http`, `error`, `changes`, `summary`, `meta`) as JSON. A cell
 * containing `"`, `,`, CR or LF is quoted, `"` doubled. Against formula injection, a cell whose text starts
 * with `=`, `+`, `-`, `@`, tab or CR gets a leading `'` (so `-1` is written `'-1`).
 *
 * Memory stays flat whatever the size: the cursor reads in batches, and the next batch is only read once the
 * output has taken the previous one (the stream's backpressure is respected).
 */
import type { Writable } from 'node:stream';
import type { mongo } from 'mongoose';
import { planQuery, type QueryFilter } from './query.js';
import { eventToJson } from '../core/json.js';

export type ExportFormat = 'ndjson' | 'csv';

export const CSV_COLUMNS = [
  '_id', 'ts', 'kind', 'outcome', 'actor', 'requestId', 'ip', 'userAgent', 'http', 'error', 'model', 'collectionName',
  'documentId', 'operation', 'changes', 'summary', 'provider', 'identifier', 'reason', 'meta',
  // Security events (appended, so the earlier columns keep their positions).
  'name', 'target',
] as const;

/** What an export selects: the query API's filter, without paging. */
export type ExportFilter = Omit<QueryFilter, 'limit' | 'after'>;

export interface ExportOptions {
  format: ExportFormat;
  filter?: ExportFilter;
  /** Called now and then with the number of events written so far. */
  onProgress?: (written: number) => void;
  /** Events per cursor batch. Default 1000. */
  batchSize?: number;
}

const NEEDS_QUOTES = /[",\r\n]/;
const FORMULA_START = /^[=+\-@\t\r]/;
/** Output is written in chunks of about this many characters: fewer, larger writes. */
const CHUNK = 64 * 1024;

export function csvCell(value: unknown): string {
  if (value === null || value === undefined) return '';
  let s = typeof value === 'string' ? value : JSON.stringify(value) ?? '';
  if (FORMULA_START.test(s)) s = `'${s}`;
  return NEEDS_QUOTES.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

export function csvHeader(): string {
  return `${CSV_COLUMNS.join(',')}\r\n`;
}

export function csvRow(doc: Record<string, unknown>): string {
  const e = eventToJson(doc) as unknown as Record<string, unknown>;
  let row = '';
  for (let i = 0; i < CSV_COLUMNS.length; i++) row += (i === 0 ? '' : ',') + csvCell(e[CSV_COLUMNS[i]]);
  return `${row}\r\n`;
}

export function ndjsonLine(doc: Record<string, unknown>): string {
  return `${JSON.stringify(eventToJson(doc))}\n`;
}

/**
 * The query of an export: the query API's own filter and rules (planQuery), read oldest first, served by the
 * index of the filter walked backwards.
 */
export function exportQuery(filter: ExportFilter = {}): { filter: Record<string, unknown>; sort: { ts: 1; _id: 1 } } {
  for (const key of ['limit', 'after']) {
    if (Object.hasOwn(filter, key)) throw new TypeError(`koa-audit: an export reads every matching event; "${key}" does not apply`);
  }
  return { filter: planQuery(filter).filter, sort: { ts: 1, _id: 1 } };
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
  const { filter, sort } = exportQuery(options.filter);
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
