/**
 * The `koa-audit` command line.
 *
 *   koa-audit export --uri <mongodb-uri> [--collection auditevents] [--kind K]... [--from ISO] [--to ISO] [--actorId A] ...
 *                    [--format ndjson|csv] [--out FILE [--force]] [--timeout-ms 5000]
 *   koa-audit --version
 *
 * Exit status: 0 success; 2 bad arguments (with a message and the usage); 1 the database cannot be reached, the
 * database or collection does not exist, or the export failed midway. With `--out`, the file appears only once
 * complete (written to `FILE.partial` first), and an existing file is replaced only with `--force`.
 */
import { createWriteStream, existsSync, readFileSync, renameSync, rmSync, type WriteStream } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { mongo } from 'mongoose';
import { runIntegrityCommand } from './cli-integrity.js';
import { exportEvents, type ExportFilter, type ExportFormat } from './export.js';
import { AUDIT_KINDS, BOOLEAN_KEYS, FILTER_ALIASES, FILTER_KEYS, ISO_DATE_HINT, parseIsoDate, planQuery, QueryFilterError, textSearch } from './query.js';
import { ROLLUP_USAGE, runRollup } from './cli-rollup.js';

/** The filter flags of `export`: the query API's keys (one vocabulary for JS, HTTP and CLI), without paging. */
const FILTER_FLAGS = FILTER_KEYS.filter((k) => k !== 'limit' && k !== 'after');

export const USAGE = `Usage: koa-audit export --uri <mongodb-uri> [options]

Streams audit events, oldest first, to stdout or a file.

Options:
  --uri <uri>           MongoDB connection string, with the database name (required)
  --collection <name>   audit collection (default: auditevents)
  --kind <kind>         only this kind; repeat for several (${AUDIT_KINDS.join(', ')})
  --from <ISO date>     events at or after this instant (e.g. 2026-01-01 or 2026-01-01T00:00:00Z); alias --since
  --to <ISO date>       events strictly before this instant; alias --until
  --actorId <id>        events of this actor (actor.id); alias --actor
  --model <name>        change events of this mongoose model
  --documentId <id>     change events of this document
  --requestId <id>      events of this request
  --clientRequestId <id> request events whose client sent this X-Request-Id
  --outcome <outcome>   success or failure
  --ip <address>        events from this client address
  --name <name>         security events of this OWASP vocabulary name (e.g. authz_fail)
  --auditRead <bool>    false: leave out reads of the audit trail itself; true: only those
  --tenant <tenant>     events of this tenant
  --traceId <id>        events of this W3C trace (32 hex)
  --onBehalfOfId <id>   events done as this user (impersonation)
  --reason <text>       events whose reason starts with this text
  --path <path>         requests to this path (a prefix when it ends with *); --route likewise for the matched route
  --method <method>     requests with this HTTP method; --status <code>, --statusClass <4xx> likewise
  --identifier <name>   login events of this identifier; --provider <name> likewise
  --q <text>            free text over path, route, identifier, error message and document label
  --format <format>     ndjson (default) or csv
  --out <file>          write to this file (progress on stderr) instead of stdout
  --force               replace the --out file if it exists
  --timeout-ms <ms>     how long to wait for the database (default: 5000)
  -h, --help            this help

koa-audit --version     the version of koa-audit

The filters are those of the query API and the HTTP API, with the same names and rules.
Exit status: 0 done, 2 bad arguments, 1 database unreachable, database or collection
missing, or export failed.

Other commands: koa-audit verify --help, koa-audit roles --help.
${ROLLUP_USAGE}`;

/** The package's version, from the package.json above this file (lib/read/ in a checkout, dist/cjs/read/ installed). */
export function version(): string {
  for (let dir = __dirname, i = 0; i < 5; dir = dirname(dir), i++) {
    const file = join(dir, 'package.json');
    if (!existsSync(file)) continue;
    const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
    if (pkg.name === 'koa-audit' && typeof pkg.version === 'string') return pkg.version;
  }
  return 'unknown';
}

/**
 * The database a connection string names (the path after the host list), or '' when it names none. Parsed by hand:
 * `new URL` cannot read a host list (`mongodb://a,b,c/db`).
 */
export function databaseOf(uri: string): string {
  const rest = uri.replace(/^mongodb(\+srv)?:\/\//, '');
  const slash = rest.indexOf('/');
  if (slash === -1) return '';
  const path = rest.slice(slash + 1);
  const end = path.search(/[?#]/);
  return decodeURIComponent(end === -1 ? path : path.slice(0, end));
}

export interface CliIO {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
}

class UsageError extends Error {}

interface ExportArgs {
  uri: string;
  collection: string;
  filter: ExportFilter;
  format: ExportFormat;
  out?: string;
  force: boolean;
  timeoutMs: number;
}

function parseExport(args: string[]): ExportArgs | 'help' {
  const filterOptions: Record<string, { type: 'string'; multiple?: boolean }> = {};
  for (const key of FILTER_FLAGS) filterOptions[key] = key === 'kind' ? { type: 'string', multiple: true } : { type: 'string' };
  for (const alias of Object.keys(FILTER_ALIASES)) filterOptions[alias] = { type: 'string' };
  let parsed;
  try {
    parsed = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        ...filterOptions,
        uri: { type: 'string' },
        collection: { type: 'string', default: 'auditevents' },
        format: { type: 'string', default: 'ndjson' },
        out: { type: 'string' },
        force: { type: 'boolean', default: false },
        'timeout-ms': { type: 'string', default: '5000' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values as Record<string, string | string[] | boolean | undefined>;
  if (v.help === true) return 'help';
  const uri = v.uri as string | undefined;
  if (uri === undefined || uri === '') throw new UsageError('--uri is required');
  if (!/^mongodb(\+srv)?:\/\//.test(uri)) throw new UsageError('--uri must be a mongodb:// or mongodb+srv:// connection string');
  const collection = v.collection as string;
  if (collection === '') throw new UsageError('--collection must not be empty');
  const format = v.format as string;
  if (format !== 'ndjson' && format !== 'csv') throw new UsageError(`--format must be ndjson or csv, got ${JSON.stringify(format)}`);
  const timeoutText = v['timeout-ms'] as string;
  const timeoutMs = /^\d{1,7}$/.test(timeoutText) ? Number(timeoutText) : NaN;
  if (!(timeoutMs >= 1)) throw new UsageError(`--timeout-ms must be a positive integer, got ${JSON.stringify(timeoutText)}`);
  const out = v.out as string | undefined;
  if (out === '') throw new UsageError('--out must not be empty');
  const force = v.force === true;
  if (force && out === undefined) throw new UsageError('--force only applies with --out');
  if (out !== undefined && !force && existsSync(out)) throw new UsageError(`--out ${JSON.stringify(out)} exists; give --force to replace it`);
  return { uri, collection, filter: exportFilter(v), format, out, force, timeoutMs };
}

/** The filter flags as a query filter, each value checked by the query API's own rules (planQuery). */
function exportFilter(v: Record<string, unknown>): ExportFilter {
  const filter: Record<string, unknown> = {};
  const flagOf: Record<string, string> = {};
  const set = (flag: string, key: string, value: unknown): void => {
    if (filter[key] !== undefined) throw new UsageError(`--${flag} and --${flagOf[key]} say the same thing; give one`);
    flagOf[key] = flag;
    if (key === 'status' && typeof value === 'string' && /^\d{1,3}$/.test(value)) {
      filter[key] = Number(value);
    } else if (key === 'from' || key === 'to') {
      const d = parseIsoDate(value as string);
      if (d === undefined) throw new UsageError(`--${flag} must be ${ISO_DATE_HINT}, got ${JSON.stringify(value)}`);
      filter[key] = d;
    } else if (BOOLEAN_KEYS.includes(key)) {
      filter[key] = value === 'true' ? true : value === 'false' ? false : value;
    } else filter[key] = value;
  };
  for (const key of FILTER_FLAGS) if (v[key] !== undefined) set(key, key, v[key]);
  for (const [alias, key] of Object.entries(FILTER_ALIASES)) if (v[alias] !== undefined) set(alias, key, v[alias]);
  try {
    planQuery(filter);
  } catch (err) {
    if (err instanceof QueryFilterError) throw new UsageError(`--${flagOf[err.key] ?? err.key} ${err.problem}`);
    throw err;
  }
  // An empty range is a mistake (the dates swapped), not a request for nothing.
  const { from, to } = filter as { from?: Date; to?: Date };
  if (from !== undefined && to !== undefined && from.getTime() >= to.getTime()) {
    throw new UsageError(`--${flagOf.from} (${from.toISOString()}) must be before --${flagOf.to} (${to.toISOString()})`);
  }
  return filter as ExportFilter;
}

function openFile(path: string): Promise<WriteStream> {
  return new Promise((resolve, reject) => {
    const s = createWriteStream(path, { flags: 'w' });
    s.once('open', () => resolve(s)).once('error', reject);
  });
}

function closeFile(s: WriteStream): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.end(() => resolve());
  });
}

async function runExport(a: ExportArgs, io: CliIO): Promise<number> {
  const say = (line: string): void => void io.stderr.write(`koa-audit export: ${line}\n`);
  let client: mongo.MongoClient;
  try {
    client = new mongo.MongoClient(a.uri, { serverSelectionTimeoutMS: a.timeoutMs, connectTimeoutMS: a.timeoutMs });
  } catch (err) {
    throw new UsageError(`--uri is not a valid connection string: ${(err as Error).message}`);
  }
  if (databaseOf(a.uri) === '') {
    await client.close().catch(() => {});
    throw new UsageError('--uri must name the database (mongodb://host:27017/mydb): without one, the driver reads "test"');
  }

  // The output is opened first: a bad path is the caller's mistake (2), and no database round trip is wasted.
  const partial = a.out === undefined ? undefined : `${a.out}.partial`;
  let file: WriteStream | undefined;
  if (partial !== undefined) {
    try {
      file = await openFile(partial);
    } catch (err) {
      throw new UsageError(`cannot write --out ${JSON.stringify(a.out)}: ${(err as Error).message}`);
    }
  }
  const out: Writable = file ?? io.stdout;
  let outError: unknown;
  const onOutError = (err: unknown): void => {
    outError ??= err;
  };
  out.on('error', onOutError);

  try {
    try {
      await client.connect();
      await client.db().command({ ping: 1 });
    } catch (err) {
      say(`cannot reach the database: ${(err as Error).message}`);
      return 1;
    }
    const db = client.db();
    // A misspelt database or collection exports nothing: that is a failure, not an empty success. A role without
    // the listCollections privilege may still read the collection: then the export is tried.
    const names = await db.listCollections({}, { nameOnly: true }).toArray().then((found) => found.map((c) => c.name), () => null);
    if (names !== null && names.length === 0) {
      say(`database "${db.databaseName}" does not exist (it has no collections)`);
      return 1;
    }
    if (names !== null && !names.includes(a.collection)) {
      say(`database "${db.databaseName}" has no collection "${a.collection}" (it has: ${names.slice(0, 20).join(', ')}${names.length > 20 ? ', …' : ''})`);
      return 1;
    }

    const model = a.filter.model;
    if (model !== undefined && (await db.collection(a.collection).countDocuments({ model }, { limit: 1 })) === 0) {
      // Model names as the user types them: `post` finds the events of `Post` (as the query API does).
      const lower = model.toLowerCase();
      const stored = (await db.collection(a.collection).distinct('model')).filter((n): n is string => typeof n === 'string' && n.toLowerCase() === lower);
      if (stored.length === 1) {
        say(`--model ${JSON.stringify(model)}: exporting the events of "${stored[0]}"`);
        a.filter.model = stored[0];
      } else if (stored.length > 1) {
        say(`--model ${JSON.stringify(model)} is ambiguous: give one of ${stored.map((n) => JSON.stringify(n)).join(', ')}`);
        return 2;
      }
    }

    const started = Date.now();
    const tty = io.stderr.isTTY === true;
    const progress = file === undefined ? undefined : (n: number): void => {
      const rate = Math.round(n / Math.max(0.001, (Date.now() - started) / 1000));
      io.stderr.write(`${tty ? '\r' : ''}koa-audit export: ${n} events (${rate}/s)${tty ? '' : '\n'}`);
    };
    let count: number;
    try {
      const coll = db.collection(a.collection);
      const text = a.filter.q === undefined ? { mode: 'index' as const, reason: null } : await textSearch(coll);
      if (text.reason !== null) say(`note: ${text.reason}`);
      count = await exportEvents(coll, out, { format: a.format, filter: a.filter, onProgress: progress, textSearch: text.mode });
      if (file !== undefined) await closeFile(file);
    } catch (err) {
      // A reader that went away (`| head`) is not a failure of the export.
      if ((outError as { code?: string } | undefined)?.code === 'EPIPE' || (err as { code?: string }).code === 'EPIPE') return 0;
      if (tty && file !== undefined) io.stderr.write('\n');
      say(`failed after ${Math.round((Date.now() - started) / 100) / 10} s: ${(outError as Error | undefined)?.message ?? (err as Error).message}`);
      return 1;
    }
    if (file !== undefined && partial !== undefined && a.out !== undefined) {
      renameSync(partial, a.out);
      const maxRssMb = Math.round(process.resourceUsage().maxRSS / 1024);
      // On a terminal the progress line has no newline yet: clear it, then write the message in its place.
      if (tty) io.stderr.write('\r\x1b[K');
      say(`wrote ${count} events to ${a.out} in ${((Date.now() - started) / 1000).toFixed(1)} s (peak memory ${maxRssMb} MB)`);
    }
    return 0;
  } finally {
    // The listener stays on stdout: a late EPIPE must not become an uncaught error.
    if (file !== undefined) out.off('error', onOutError);
    if (file !== undefined && !file.closed) file.destroy();
    if (partial !== undefined) rmSync(partial, { force: true });
    await client.close().catch(() => {});
  }
}

/** Runs the command line; resolves with the exit status (it never calls process.exit). */
export async function main(argv: string[], io: CliIO = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === '--version' || command === '-v' || command === 'version') {
      io.stdout.write(`${version()}\n`);
      return 0;
    }
    if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
      (command === undefined ? io.stderr : io.stdout).write(USAGE);
      return command === undefined ? 2 : 0;
    }
    if (command === 'verify' || command === 'roles') return await runIntegrityCommand(command, rest, io);
    if (command === 'rollup') return await runRollup(rest, io);
    if (command !== 'export') throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    const args = parseExport(rest);
    if (args === 'help') {
      io.stdout.write(USAGE);
      return 0;
    }
    return await runExport(args, io);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`koa-audit: ${err.message}\n\n${USAGE}`);
    return 2;
  }
}

/** The process entry: runs main on this process's arguments and sets the exit status (bin/koa-audit.js calls it). */
export function run(argv: string[] = process.argv.slice(2)): Promise<void> {
  return main(argv).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`koa-audit: ${(err as Error)?.stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}

// Executed directly (`node --import tsx lib/cli.ts`, as the tests do, or `node dist/cjs/cli.js`).
if (typeof require !== 'undefined' && require.main === module) void run();
