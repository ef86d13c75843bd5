/**
 * A process that dies with events in its spool (test/faults.test.ts): its store is unreachable, so after the
 * first few events fill its tiny queue, the rest go to the spool. It prints "spooled <n>" and waits for SIGKILL.
 * argv: <spoolDir> <collection> <events> <database: the destination recorded in the spool>
 */
import Koa from 'koa';
import mongoose from 'mongoose';
import type { AddressInfo } from 'node:net';
import { createAudit } from '../../lib/index.js';

async function main(): Promise<void> {
  const [spoolDir, collection, count, db] = process.argv.slice(2);
  // Nothing listens on port 9: every write fails, as during an outage.
  const conn = mongoose.createConnection(`mongodb://127.0.0.1:9/${db}`, { serverSelectionTimeoutMS: 60_000 });
  conn.on('error', () => {});
  const audit = createAudit({ connection: conn, collection, spoolDir, maxQueue: 5, flushIntervalMs: 10 });
  audit.on('error', () => {});
  const app = new Koa();
  app.use(audit());
  app.use((ctx) => {
    ctx.body = 'ok';
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  const { port } = server.address() as AddressInfo;
  for (let i = 0; i < Number(count); i++) await (await fetch(`http://127.0.0.1:${port}/child/${i}`)).text();
  await new Promise((r) => setTimeout(r, 50)); // the last response's finish listener has recorded its event
  process.stdout.write(`spooled ${audit.stats().spooled}\n`);
  setInterval(() => {}, 1000); // wait for the kill
}

void main();
