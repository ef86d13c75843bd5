/**
 * First-use mistakes with the default `audit` instance, in a process of its own (they change the global
 * mongoose: its plugins, its models). Prints one JSON line with what happened.
 * argv: <scenario> <mongodb uri with database>
 *   default-close: the app opens its own createConnection() and uses the default `audit` (whose
 *                  mongoose.connection is never opened): the first event's error, and close({ timeoutMs }).
 *   plugin-late:   mongoose.plugin(audit.plugin) after a model was compiled: the warning.
 */
import Koa from 'koa';
import mongoose, { Schema } from 'mongoose';
import type { AddressInfo } from 'node:net';
import audit from '../../lib/index.js';

async function main(): Promise<void> {
  const [scenario, uri] = process.argv.slice(2);
  const warnings: { code?: string; message: string }[] = [];
  process.on('warning', (w) => warnings.push({ code: (w as { code?: string }).code, message: w.message }));
  const errors: string[] = [];
  if (scenario === 'default-close') {
    const own = await mongoose.createConnection(uri).asPromise();
    audit.on('error', (e) => errors.push(e.message));
    const app = new Koa();
    app.use(audit());
    app.use((ctx) => {
      ctx.body = 'ok';
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as AddressInfo;
    for (let i = 0; i < 3; i++) await (await fetch(`http://127.0.0.1:${port}/x/${i}`)).text();
    await new Promise((r) => setTimeout(r, 50));
    const started = Date.now();
    const result = await audit.close({ timeoutMs: 500 });
    const elapsed = Date.now() - started;
    server.close();
    await own.close();
    process.stdout.write(`${JSON.stringify({ errors, result, elapsed, stats: audit.stats() })}\n`);
  } else if (scenario === 'plugin-late') {
    mongoose.model('EarlyBird', new Schema({ name: String }));
    mongoose.model('EarlyWorm', new Schema({ name: String }));
    mongoose.plugin(audit.plugin);
    mongoose.model('LateComer', new Schema({ name: String }));
    await new Promise((r) => setTimeout(r, 50));
    process.stdout.write(`${JSON.stringify({ warnings: warnings.filter((w) => w.code?.startsWith('KOA_AUDIT')) })}\n`);
  }
  process.exit(0);
}

void main();
