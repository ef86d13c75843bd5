/**
 * The integrity commands of the `koa-audit` command line (lib/read/cli.ts dispatches to them):
 *
 *   koa-audit verify --uri <uri> [--collection C] [--key-file F | --public-key F] [--witness F] [--from ISO]
 *                    [--to ISO] [--chain ID] [--retention-days N] [--json]
 *   koa-audit roles --collection C [--db NAME] [--apply --uri <uri>]
 *
 * verify: exit 0 intact (warnings allowed), 1 tampering found or the database unreachable, 2 usage error;
 * progress on stderr, the report (or `--json`) on stdout.
 * roles: prints the commands; `--apply` runs them, and exits 1 with a message where the server has no user
 * management (FerretDB, for one).
 */
import { readFileSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { mongo } from 'mongoose';
import { ed25519Key, hmacKey } from '../core/integrity-options.js';
import type { Checkpoint } from '../core/types.js';
import { verifyTrail, type VerifyRun } from '../integrity/verify.js';
import { ISO_DATE_HINT, parseIsoDate } from './query.js';

export interface IntegrityIO {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
}

export const VERIFY_USAGE = `Usage: koa-audit verify --uri <mongodb-uri> [options]

Checks the hash chains, checkpoints and witnesses of an audit collection.

Options:
  --uri <uri>             MongoDB connection string, with the database name (required)
  --collection <name>     audit collection (default: auditevents)
  --key-file <file>       the HMAC key the checkpoints were signed with
  --public-key <file>     the Ed25519 public key (PEM) the checkpoints were signed with
  --witness <file>        checkpoints kept elsewhere (onCheckpoint copies), one JSON object per line
  --from <ISO date>       events at or after this instant
  --to <ISO date>         events strictly before this instant
  --chain <id>            only this chain
  --retention-days <n>    the collection's retention: gaps it explains are expired, not missing
  --json                  the result as JSON on stdout
  --timeout-ms <ms>       how long to wait for the database (default: 5000)
  -h, --help              this help

Exit status: 0 intact, 1 tampering found (or the database unreachable), 2 bad arguments.
`;

export const ROLES_USAGE = `Usage: koa-audit roles --collection <name> [--db <name>] [--apply --uri <mongodb-uri>]

Prints the MongoDB commands for least-privilege roles: koaAuditWriter (insert, find, createIndex, listIndexes on
the audit collection only: the application cannot edit or delete its trail) and koaAuditReader (find,
listIndexes: the viewer and verify). With --apply, runs the createRole commands on the server, and createUser
for koa_audit_writer / koa_audit_reader when KOA_AUDIT_WRITER_PASSWORD / KOA_AUDIT_READER_PASSWORD are set.

Exit status: 0 done, 1 the server refused (or has no user management), 2 bad arguments.
`;

class UsageError extends Error {}

/** Runs a parseArgs call; its errors are usage errors. */
function parsed<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function uriOf(v: unknown): string {
  if (typeof v !== 'string' || v === '') throw new UsageError('--uri is required');
  if (!/^mongodb(\+srv)?:\/\//.test(v)) throw new UsageError('--uri must be a mongodb:// or mongodb+srv:// connection string');
  return v;
}

function timeoutOf(v: unknown): number {
  const n = typeof v === 'string' && /^\d{1,7}$/.test(v) ? Number(v) : NaN;
  if (!(n >= 1)) throw new UsageError(`--timeout-ms must be a positive integer, got ${JSON.stringify(v)}`);
  return n;
}

function readText(name: string, file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`--${name}: cannot read ${file} (${(err as Error).message})`);
  }
}

function isoDate(name: string, v: unknown): Date | undefined {
  if (v === undefined) return undefined;
  const d = typeof v === 'string' ? parseIsoDate(v) : undefined;
  if (d === undefined) throw new UsageError(`--${name} must be ${ISO_DATE_HINT}, got ${JSON.stringify(v)}`);
  return d;
}

/** A witness file: one checkpoint per line (JSON), blank lines ignored. */
function readWitness(file: string): Checkpoint[] {
  const out: Checkpoint[] = [];
  readText('witness', file).split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      out.push(JSON.parse(line) as Checkpoint);
    } catch {
      throw new UsageError(`--witness: line ${i + 1} of ${file} is not JSON`);
    }
  });
  return out;
}

async function connect(uri: string, timeoutMs: number): Promise<mongo.MongoClient> {
  let client: mongo.MongoClient;
  try {
    client = new mongo.MongoClient(uri, { serverSelectionTimeoutMS: timeoutMs, connectTimeoutMS: timeoutMs });
  } catch (err) {
    throw new UsageError(`--uri is not a valid connection string: ${(err as Error).message}`);
  }
  await client.connect();
  return client;
}

async function runVerify(args: string[], io: IntegrityIO): Promise<number> {
  const { values: v } = parsed(() => parseArgs({ args, strict: true, allowPositionals: false, options: {
    uri: { type: 'string' },
    collection: { type: 'string', default: 'auditevents' },
    'key-file': { type: 'string' },
    'public-key': { type: 'string' },
    witness: { type: 'string' },
    from: { type: 'string' },
    to: { type: 'string' },
    chain: { type: 'string' },
    'retention-days': { type: 'string' },
    json: { type: 'boolean', default: false },
    'timeout-ms': { type: 'string', default: '5000' },
    help: { type: 'boolean', short: 'h' },
  } }));
  if (v.help === true) {
    io.stdout.write(VERIFY_USAGE);
    return 0;
  }
  const uri = uriOf(v.uri);
  if (v.collection === '') throw new UsageError('--collection must not be empty');
  if (v['key-file'] !== undefined && v['public-key'] !== undefined) throw new UsageError('give --key-file or --public-key, not both');
  const run: VerifyRun = { from: isoDate('from', v.from), to: isoDate('to', v.to) };
  try {
    // A key file holds the secret as written (a trailing newline from an editor is not part of it).
    if (v['key-file'] !== undefined) run.key = hmacKey('--key-file', readText('key-file', v['key-file']).replace(/\r?\n$/, ''));
    if (v['public-key'] !== undefined) run.publicKey = ed25519Key('--public-key', readText('public-key', v['public-key']), 'public');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError((err as Error).message.replace(/^koa-audit: option /, ''));
  }
  if (v.witness !== undefined) run.witness = readWitness(v.witness);
  if (v.chain !== undefined) run.chainId = v.chain;
  if (v['retention-days'] !== undefined) {
    const d = Number(v['retention-days']);
    if (!(d > 0)) throw new UsageError(`--retention-days must be a positive number, got ${JSON.stringify(v['retention-days'])}`);
    run.retentionDays = d;
  }
  const timeoutMs = timeoutOf(v['timeout-ms']);
  const say = (line: string): void => void io.stderr.write(`koa-audit verify: ${line}\n`);
  const tty = io.stderr.isTTY === true;
  let client: mongo.MongoClient;
  try {
    client = await connect(uri, timeoutMs);
  } catch (err) {
    if (err instanceof UsageError) throw err;
    say(`cannot reach the database: ${(err as Error).message}`);
    return 1;
  }
  try {
    const started = Date.now();
    run.onProgress = (n) => {
      const rate = Math.round(n / Math.max(0.001, (Date.now() - started) / 1000));
      io.stderr.write(`${tty ? '\r' : ''}koa-audit verify: ${n} events (${rate}/s)${tty ? '' : '\n'}`);
    };
    const result = await verifyTrail(client.db().collection(v.collection), run);
    if (tty) io.stderr.write('\n');
    if (v.json === true) io.stdout.write(`${JSON.stringify(result)}\n`);
    else {
      for (const p of result.problems) {
        io.stdout.write(`${p.type}\tchain ${p.chainId ?? '-'}\tseq ${p.seq ?? '-'}${p.eventId === undefined ? '' : `\tevent ${p.eventId}`}\t${p.detail}\n`);
      }
      if (result.omitted > 0) io.stdout.write(`... and ${result.omitted} more problems\n`);
      io.stdout.write(`${result.ok ? 'intact' : 'TAMPERING FOUND'}: ${result.events} events in ${result.chains} chains, ${result.problems.length + result.omitted} problems\n`);
    }
    return result.ok ? 0 : 1;
  } catch (err) {
    say(`verify failed: ${(err as Error).message}`);
    return 1;
  } finally {
    await client.close().catch(() => {});
  }
}

/** The roles and users, as commands for the database that holds the audit collection. */
export function roleCommands(db: string, collection: string): { roles: mongo.Document[]; users: { name: string; role: string; env: string }[] } {
  const resource = { db, collection };
  return {
    roles: [
      { createRole: 'koaAuditWriter', privileges: [{ resource, actions: ['insert', 'find', 'createIndex', 'listIndexes'] }], roles: [] },
      { createRole: 'koaAuditReader', privileges: [{ resource, actions: ['find', 'listIndexes'] }], roles: [] },
    ],
    users: [
      { name: 'koa_audit_writer', role: 'koaAuditWriter', env: 'KOA_AUDIT_WRITER_PASSWORD' },
      { name: 'koa_audit_reader', role: 'koaAuditReader', env: 'KOA_AUDIT_READER_PASSWORD' },
    ],
  };
}

async function runRoles(args: string[], io: IntegrityIO, env: NodeJS.ProcessEnv): Promise<number> {
  const { values: v } = parsed(() => parseArgs({ args, strict: true, allowPositionals: false, options: {
    collection: { type: 'string' },
    db: { type: 'string' },
    apply: { type: 'boolean', default: false },
    uri: { type: 'string' },
    'timeout-ms': { type: 'string', default: '5000' },
    help: { type: 'boolean', short: 'h' },
  } }));
  if (v.help === true) {
    io.stdout.write(ROLES_USAGE);
    return 0;
  }
  if (v.collection === undefined || v.collection === '') throw new UsageError('--collection is required');
  if (v.apply === true && v.uri === undefined) throw new UsageError('--apply needs --uri');
  const uri = v.uri === undefined ? undefined : uriOf(v.uri);
  const dbName = v.db ?? (uri === undefined ? undefined : new URL(uri.replace(/^mongodb(\+srv)?:/, 'http:')).pathname.slice(1)) ?? '';
  const db = dbName === '' ? 'test' : decodeURIComponent(dbName);
  const { roles, users } = roleCommands(db, v.collection);
  if (v.apply !== true) {
    io.stdout.write(`// mongosh, on database ${JSON.stringify(db)}: least-privilege roles for koa-audit\n`);
    io.stdout.write(`use ${db}\n`);
    for (const r of roles) io.stdout.write(`db.runCommand(${JSON.stringify(r, null, 2)})\n`);
    for (const u of users) {
      io.stdout.write(`db.createUser({ user: ${JSON.stringify(u.name)}, pwd: passwordPrompt(), roles: [{ role: ${JSON.stringify(u.role)}, db: ${JSON.stringify(db)} }] })\n`);
    }
    io.stdout.write(`// The app connects as koa_audit_writer: it can add events, never change or delete them.\n`);
    return 0;
  }
  const say = (line: string): void => void io.stderr.write(`koa-audit roles: ${line}\n`);
  let client: mongo.MongoClient;
  try {
    client = await connect(uri as string, timeoutOf(v['timeout-ms']));
  } catch (err) {
    if (err instanceof UsageError) throw err;
    say(`cannot reach the database: ${(err as Error).message}`);
    return 1;
  }
  try {
    const d = client.db(db);
    for (const r of roles) {
      try {
        await d.command(r);
        say(`created role ${String(r.createRole)}`);
      } catch (err) {
        const e = err as { code?: unknown; codeName?: unknown; message?: string };
        if (e.code === 51002 || e.codeName === 'DuplicateKey' || /already exists/i.test(e.message ?? '')) {
          await d.command({ updateRole: r.createRole, privileges: r.privileges, roles: [] });
          say(`updated role ${String(r.createRole)}`);
          continue;
        }
        say(`this server does not support user management (${e.message ?? String(err)}); nothing was changed. ` +
          'Create the roles with the commands `koa-audit roles --collection C` prints, on a server that has them.');
        return 1;
      }
    }
    for (const u of users) {
      const pwd = env[u.env];
      if (pwd === undefined || pwd === '') {
        say(`user ${u.name} not created: set ${u.env} to create it`);
        continue;
      }
      await d.command({ createUser: u.name, pwd, roles: [{ role: u.role, db }] });
      say(`created user ${u.name}`);
    }
    return 0;
  } catch (err) {
    say(`the server refused: ${(err as Error).message}`);
    return 1;
  } finally {
    await client.close().catch(() => {});
  }
}

/** Runs `verify` or `roles`; resolves with the exit status. */
export async function runIntegrityCommand(command: 'verify' | 'roles', args: string[], io: IntegrityIO, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    return command === 'verify' ? await runVerify(args, io) : await runRoles(args, io, env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`koa-audit ${command}: ${err.message}\n\n${command === 'verify' ? VERIFY_USAGE : ROLES_USAGE}`);
    return 2;
  }
}
