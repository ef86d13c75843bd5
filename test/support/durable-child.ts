/**
 * A server killed with SIGKILL at a random moment under load (test/durability.test.ts): an app audited with
 * the given durability, writing to a live database. Prints "port <n>" once listening, then serves until killed.
 * argv: <mongodb uri with database> <collection> <spoolDir> <durability> <flushIntervalMs>
 */
import Koa from 'koa';
import mongoose from 'mongoose';
import type { AddressInfo } from 'node:net';
import { createAudit } from '../../lib/index.js';

async function main(): Promise<void> {
  const [uri, collection, spoolDir, durability, flushIntervalMs] = process.argv.slice(2);
  const conn = await mongoose.createConnection(uri, { serverSelectionTimeoutMS: 5000 }).asPromise();
  const audit = createAudit({
    connection: conn,
    collection,
    spoolDir,
    durability: durability as 'memory' | 'disk',
    flushIntervalMs: Number(flushIntervalMs),
    batchSize: Number(flushIntervalMs) > 1000 ? 100_000 : 50,
  });
  audit.on('error', () => {});
  const app = new Koa();
  app.use(audit());
  app.use((ctx) => {
    ctx.body = 'ok';
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  process.stdout.write(`port ${(server.address() as AddressInfo).port}\n`);
}

void main();
