/**
 * `koa-audit rollup --rebuild --uri <mongodb-uri> [--collection auditevents]`: recounts the dashboard's rollups
 * from the events (after an upgrade from a version without rollups, or to repair them). Exit status as `export`.
 */
import { parseArgs } from 'node:util';
import mongoose from 'mongoose';
import { rollupStoreFor } from '../rollup/store.js';
import type { Writable } from 'node:stream';

export const ROLLUP_USAGE = `Usage: koa-audit rollup --rebuild --uri <mongodb-uri> [--collection auditevents] [--timeout-ms 5000]

Recounts the dashboard's rollups ({collection}_rollups) from the events.
`;

export async function runRollup(args: string[], io: { stdout: Writable; stderr: Writable }): Promise<number> {
  const usage = (message: string): number => {
    io.stderr.write(`koa-audit rollup: ${message}\n\n${ROLLUP_USAGE}`);
    return 2;
  };
  let v: Record<string, string | boolean | undefined>;
  try {
    v = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        rebuild: { type: 'boolean' },
        uri: { type: 'string' },
        collection: { type: 'string', default: 'auditevents' },
        'timeout-ms': { type: 'string', default: '5000' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (err) {
    return usage((err as Error).message);
  }
  if (v.help === true) {
    io.stdout.write(ROLLUP_USAGE);
    return 0;
  }
  if (v.rebuild !== true) return usage('--rebuild is required (the only rollup action)');
  const uri = v.uri;
  if (typeof uri !== 'string' || !/^mongodb(\+srv)?:\/\//.test(uri)) return usage('--uri must be a mongodb:// or mongodb+srv:// connection string');
  const collection = v.collection as string;
  if (collection === '') return usage('--collection must not be empty');
  const timeoutMs = /^\d{1,7}$/.test(v['timeout-ms'] as string) ? Number(v['timeout-ms']) : NaN;
  if (!(timeoutMs >= 1)) return usage('--timeout-ms must be a positive integer');

  let connection: mongoose.Connection;
  try {
    connection = await mongoose.createConnection(uri, { serverSelectionTimeoutMS: timeoutMs, connectTimeoutMS: timeoutMs }).asPromise();
  } catch (err) {
    io.stderr.write(`koa-audit rollup: cannot reach the database: ${(err as Error).message}\n`);
    return 1;
  }
  try {
    const started = Date.now();
    const count = await rollupStoreFor(connection, collection).rebuild((n) => io.stderr.write(`koa-audit rollup: ${n} events counted\n`));
    io.stderr.write(`koa-audit rollup: rebuilt the rollups of ${count} events in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    return 0;
  } catch (err) {
    io.stderr.write(`koa-audit rollup: failed: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await connection.close().catch(() => {});
  }
}
