import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { mongo } from 'mongoose';
import { databaseUri } from './support/database.js';
import { runCli } from './support/cli.js';
import { useFixture } from './support/helpers.js';

const ROOT = resolve(__dirname, '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };

/** Runs a command in the repository, as a user types it; resolves with its exit status and output. */
function sh(file: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(file, args, { cwd: ROOT, timeout: 60_000 }, (err, stdout, stderr) => {
      done({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
  });
}

const inProcess = runCli;

describe('koa-audit command line: first use (issue 11, item 11)', function () {
  this.timeout(120_000);
  const fx = useFixture('cli_usage');
  let uri: string;
  let dir: string;

  before(async () => {
    uri = fx.uri;
    dir = fx.tmp();
    await fx.conn.collection('events').insertMany([
      { _id: new mongo.ObjectId(), ts: new Date('2026-01-01T00:00:00Z'), kind: 'login', outcome: 'success', actor: { id: 'u1', via: 'explicit' }, requestId: null, ip: null, userAgent: null },
      { _id: new mongo.ObjectId(), ts: new Date('2026-01-02T00:00:00Z'), kind: 'create', outcome: 'success', actor: null, requestId: null, ip: null, userAgent: null, model: 'BlogPost', documentId: 'd1', changes: [] },
    ]);
  });

  it('`npx koa-audit --help` and `--version` work in a checkout without a build (from source)', async () => {
    const help = await sh('npx', ['--no-install', 'koa-audit', '--help']);
    expect(help.code, help.stderr).to.equal(0);
    expect(help.stdout).to.match(/Usage: koa-audit export/);
    expect(help.stdout).to.match(/--version/);
    const v = await sh('npx', ['--no-install', 'koa-audit', '--version']);
    expect(v.code, v.stderr).to.equal(0);
    expect(v.stdout.trim()).to.equal(pkg.version);
  });

  it('usage errors exit 2: an inverted or empty time range, a URI without a database, an existing --out without --force', async () => {
    const existing = join(dir, 'there.ndjson');
    writeFileSync(existing, 'keep me\n');
    const cases: [string[], RegExp][] = [
      [['export', '--uri', uri, '--from', '2026-02-01', '--to', '2026-01-01'], /--from \(2026-02-01T00:00:00.000Z\) must be before --to/],
      [['export', '--uri', uri, '--since', '2026-01-01', '--until', '2026-01-01'], /--since .* must be before --until/],
      [['export', '--uri', 'mongodb://127.0.0.1:9'], /--uri must name the database/],
      [['export', '--uri', 'mongodb://127.0.0.1:9/'], /--uri must name the database/],
      [['export', '--uri', 'mongodb://127.0.0.1:9/?directConnection=true'], /--uri must name the database/],
      [['export', '--uri', uri, '--collection', 'events', '--out', existing], /exists; give --force/],
      [['export', '--uri', uri, '--force'], /--force only applies with --out/],
    ];
    for (const [args, message] of cases) {
      const run = await inProcess(args);
      expect(run.code, args.join(' ')).to.equal(2);
      expect(run.stderr, args.join(' ')).to.match(message);
    }
    expect(readFileSync(existing, 'utf8')).to.equal('keep me\n');
    const forced = await inProcess(['export', '--uri', uri, '--collection', 'events', '--out', existing, '--force']);
    expect(forced.code, forced.stderr).to.equal(0);
    expect(readFileSync(existing, 'utf8')).to.match(/"kind":"login"/);
  });

  it('a database or collection that does not exist exits 1 with a message, not 0 with nothing', async () => {
    const noCollection = await inProcess(['export', '--uri', uri, '--collection', 'evnets']);
    expect(noCollection.code).to.equal(1);
    expect(noCollection.stderr).to.match(/has no collection "evnets" \(it has: events\)/);
    const noDatabase = await inProcess(['export', '--uri', databaseUri(process.env.KOA_AUDIT_TEST_URI as string, 't_no_such_db_here')]);
    expect(noDatabase.code).to.equal(1);
    expect(noDatabase.stderr).to.match(/database "t_no_such_db_here" does not exist/);
  });

  it('--actorId and --model filter the export', async () => {
    const hit = await inProcess(['export', '--uri', uri, '--collection', 'events', '--actorId', 'u1']);
    expect(hit.code, hit.stderr).to.equal(0);
    expect(hit.stdout.trim().split('\n')).to.have.length(1);
    expect(hit.stdout).to.match(/"id":"u1"/);
    const miss = await inProcess(['export', '--uri', uri, '--collection', 'events', '--actorId', 'u2']);
    expect(miss.stdout).to.equal('');
    const model = await inProcess(['export', '--uri', uri, '--collection', 'events', '--model', 'Post']);
    expect(model.code).to.equal(0);
    expect(model.stdout).to.equal('');
    // A model name in another case finds the stored one, and says so.
    const typed = await inProcess(['export', '--uri', uri, '--collection', 'events', '--model', 'blogpost']);
    expect(typed.code, typed.stderr).to.equal(0);
    expect(typed.stdout).to.match(/"model":"BlogPost"/);
    expect(typed.stderr).to.match(/exporting the events of "BlogPost"/);
  });
});
