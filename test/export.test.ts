import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { createReadStream, existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';
import { mongo } from 'mongoose';
import { main } from '../lib/read/cli.js';
import { CSV_COLUMNS, csvCell, exportEvents } from '../lib/read/export.js';
import { runCli } from './support/cli.js';
import { useFixture } from './support/helpers.js';

const ROOT = resolve(__dirname, '..');
/**
 * How many events the large export writes and checks. On FerretDB (SQLite backend) an export reads about 1,300
 * to 3,000 events a second on a busy 2-core machine, so the timeouts allow for minutes.
 */
const BIG = 100_000;
const BROWSER = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.70 '.repeat(4);
const SMALL = 3000;
/**
 * Old-space limit of the exporting process, so it must stream to fit: its output must be larger than this for the
 * memory claim to mean anything. The export's live heap stays near 20 MB throughout (seen with --trace-gc); 40 MB was
 * too tight: V8 counts committed old-space pages, fragmentation included, against the limit, and a slow CI machine
 * was killed with 25 MB live.
 */
const HEAP_MB = 64;
const KINDS = ['request', 'create', 'update', 'delete', 'login', 'login_failed', 'logout'] as const;
const NASTY = ['=HYPERLINK("http://x","y")', '+1+2', '-3', '@SUM(A1)', '\tTAB', '\rCR', 'a,b', 'say "hi"', 'line\nbreak', 'ünïcödé ✓', '', ' =1+2', '\n=1+2', '＝1+2'];
/** A cell a spreadsheet could read as a formula (it skips leading whitespace and reads full-width signs). */
const FORMULA = /^[=+\-@\s\p{Cc}\p{Cf}\uFF1D\uFF0B\uFF0D\uFF20]/u;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function cli(args: string[], timeoutMs = 400_000, nodeArgs: string[] = []): Promise<Run> {
  const started = Date.now();
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'lib/read/cli.ts', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolveRun({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

const inProcess = runCli;

/** Event `i` of the big set: every kind, and strings a spreadsheet would run as formulas or a naive CSV would split. */
function event(i: number, start: number): Record<string, unknown> {
  const kind = KINDS[i % KINDS.length];
  const nasty = NASTY[i % NASTY.length];
  const e: Record<string, unknown> = {
    _id: new mongo.ObjectId(),
    ts: new Date(start + Math.floor(i / 3)),
    kind,
    outcome: i % 9 === 0 ? 'failure' : 'success',
    actor: i % 10 === 0 ? null : { id: `u${i % 50}`, name: nasty, via: 'state' },
    requestId: i % 13 === 0 ? null : `r${Math.floor(i / 4)}`,
    ip: `10.1.${i % 256}.${i % 7}`,
    // A real browser's user agent is a few hundred characters: it makes the output well larger than the export's heap.
    userAgent: `${nasty} ${BROWSER}`,
  };
  if (kind === 'request') e.http = { method: 'GET', path: `/p/${i}/${nasty}`, route: null, query: 'a=1', status: 200, durationMs: i % 100 };
  else if (kind === 'create' || kind === 'update' || kind === 'delete') {
    Object.assign(e, { model: 'Post', collectionName: 'posts', documentId: `d${i % 1000}`, operation: 'save', changes: [{ path: 'title', from: null, to: nasty }] });
  } else Object.assign(e, { provider: 'local', identifier: nasty, ...(kind === 'login_failed' ? { reason: nasty } : {}) });
  if (i % 17 === 0) e.meta = { note: nasty, n: i };
  return e;
}

/** A minimal RFC 4180 reader: records of fields, quotes and embedded line breaks handled. */
function* csvRecords(text: string): Generator<string[]> {
  let field = '';
  let record: string[] = [];
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i += 2; continue; }
      if (c === '"') { quoted = false; i++; continue; }
      field += c; i++; continue;
    }
    if (c === '"' && field === '') { quoted = true; i++; continue; }
    if (c === ',') { record.push(field); field = ''; i++; continue; }
    if (c === '\r' && text[i + 1] === '\n') { record.push(field); yield record; record = []; field = ''; i += 2; continue; }
    field += c; i++;
  }
  if (field !== '' || record.length > 0) throw new Error('the CSV does not end with CRLF');
}

/** What a CSV cell must hold for a stored value (strings as-is, numbers in JSON), before the injection guard. */
function cellText(v: unknown): string {
  if (v === null || v === undefined) return '';
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** The documented flat columns of one stored event, built independently of lib/read/export.ts. */
function flatOf(doc: Record<string, unknown>): Record<string, unknown> {
  const actor = (doc.actor ?? {}) as Record<string, unknown>;
  const http = (doc.http ?? {}) as Record<string, unknown>;
  const changes = doc.changes as { path: string }[] | undefined;
  return {
    ts: (doc.ts as Date).toISOString(), kind: doc.kind, outcome: doc.outcome, actor_id: actor.id, actor_name: actor.name,
    request_id: doc.requestId, ip: doc.ip, method: http.method, path: http.path, route: http.route, status: http.status,
    duration_ms: http.durationMs, model: doc.model, document_id: doc.documentId, operation: doc.operation,
    changed_paths: changes?.map((c) => c.path).join(';'), provider: doc.provider, identifier: doc.identifier, reason: doc.reason,
    name: doc.name,
  };
}

describe('koa-audit export (command line)', function () {
  this.timeout(900_000);
  const fx = useFixture('export');
  let uri: string;
  let dir: string;
  const start = Date.UTC(2025, 0, 1);

  before(async () => {
    uri = fx.uri;
    dir = fx.tmp();
    fx.cleanup(() => rmSync(dir, { recursive: true, force: true })); // tens of MB of exports
    const coll = fx.conn.collection('x_events');
    const t = Date.now();
    for (let i = 0; i < BIG; i += 5000) {
      const batch = [];
      for (let j = i; j < Math.min(BIG, i + 5000); j++) batch.push(event(j, start));
      // Inserted out of order on purpose: the export must sort, not echo insertion order.
      await coll.insertMany(batch.reverse(), { ordered: false });
    }
    console.log(`      (inserted ${BIG} events in ${Date.now() - t} ms)`);
    const small = [];
    for (let j = 0; j < SMALL; j++) small.push(event(j, start));
    await fx.conn.collection('y_events').insertMany(small.reverse());
  });

  
  /** Peak memory of an export process, in MB, from its summary line. */
  const peakMb = (run: Run): number => Number(/peak memory (\d+) MB/.exec(run.stderr)?.[1] ?? NaN);

  it('exports 100,000 events as NDJSON and as CSV, oldest first, checked line by line against the collection', async () => {
    const nd = join(dir, 'all.ndjson');
    const csv = join(dir, 'all.csv');
    // Both at once: the database reads are what take time (on FerretDB especially).
    // Memory stays flat: a JavaScript heap far smaller than the data (tens of MB of output) is enough.
    const heap = [`--max-old-space-size=${HEAP_MB}`];
    const [ndRun, csvRun] = await Promise.all([
      cli(['export', '--uri', uri, '--collection', 'x_events', '--out', nd], 300_000, heap),
      cli(['export', '--uri', uri, '--collection', 'x_events', '--format', 'csv', '--out', csv], 300_000, heap),
    ]);
    for (const run of [ndRun, csvRun]) expect(run.code, run.stderr).to.equal(0);
    console.log(`      (ndjson: ${ndRun.ms} ms, ${ndRun.stderr.trim().split('\n').pop()})`);
    console.log(`      (csv:    ${csvRun.ms} ms, ${csvRun.stderr.trim().split('\n').pop()})`);
    expect(ndRun.stdout).to.equal('');
    expect(ndRun.stderr).to.match(new RegExp(`wrote ${BIG} events to .*all\\.ndjson`));
    expect(csvRun.stderr).to.match(new RegExp(`wrote ${BIG} events to .*all\\.csv`));
    expect(ndRun.stderr, 'progress on stderr when writing to a file').to.match(new RegExp(`koa-audit export: ${BIG} events \\(\\d+/s\\)`));
    expect(existsSync(`${nd}.partial`)).to.equal(false);
    console.log(`      (output: ${(statSync(nd).size / 2 ** 20).toFixed(1)} MiB of NDJSON, ${(statSync(csv).size / 2 ** 20).toFixed(1)} MiB of CSV, made in a ${HEAP_MB} MiB heap)`);
    // NDJSON carries every field: its output is larger than the heap it was made in, so it was streamed. The CSV's
    // flat columns (issue 11, item 12) are a fraction of the event, and go through the same streaming path.
    expect(statSync(nd).size, `${nd} is larger than the heap it was made in`).to.be.greaterThan(HEAP_MB * 2 ** 20);
    expect(statSync(csv).size).to.be.greaterThan(BIG * 60);
    expect(peakMb(ndRun)).to.be.greaterThan(0);

    const lines = createInterface({ input: createReadStream(nd, 'utf8'), crlfDelay: Infinity })[Symbol.asyncIterator]();
    const records = csvRecords(readFileSync(csv, 'utf8'));
    expect(records.next().value).to.deep.equal([...CSV_COLUMNS]);
    let n = 0;
    let guarded = 0;
    for await (const doc of fx.conn.collection('x_events').find({}, { sort: { ts: 1, _id: 1 }, batchSize: 2000 })) {
      n++;
      const { _id, ts, ...rest } = doc;
      const line = await lines.next();
      expect(line.done, `line ${n} missing`).to.not.equal(true);
      // The documented format, built independently: _id hex, ts ISO, then every stored field in stored order.
      const want = JSON.stringify({ _id: _id.toHexString(), ts: (ts as Date).toISOString(), ...rest });
      if (line.value !== want) expect(line.value, `line ${n}`).to.equal(want);

      const rec = records.next();
      expect(rec.done, `row ${n} missing`).to.not.equal(true);
      const row = rec.value as string[];
      expect(row).to.have.length(CSV_COLUMNS.length);
      const stored = flatOf(doc);
      for (let k = 0; k < CSV_COLUMNS.length; k++) {
        const text = cellText(stored[CSV_COLUMNS[k]]);
        const formula = typeof stored[CSV_COLUMNS[k]] === 'string' && FORMULA.test(text);
        if (formula) guarded++;
        const cell = row[k];
        if (cell !== (formula ? `'${text}` : text)) expect(cell, `${CSV_COLUMNS[k]} of row ${n}`).to.equal(formula ? `'${text}` : text);
        if (FORMULA.test(cell)) expect.fail(`row ${n} ${CSV_COLUMNS[k]} starts a formula: ${JSON.stringify(cell)}`);
      }
    }
    expect((await lines.next()).done, 'no extra lines').to.equal(true);
    expect(records.next().done, 'no extra rows').to.equal(true);
    expect(n).to.equal(BIG);
    expect(guarded).to.be.greaterThan(BIG / 10);
  });

  it('filters by --kind (repeatable), --since and --until, to stdout without progress', async () => {
    const since = new Date(start + 200);
    const until = new Date(start + 700);
    const run = await cli(['export', '--uri', uri, '--collection', 'y_events', '--kind', 'login', '--kind', 'logout', '--since', since.toISOString(), '--until', until.toISOString()]);
    expect(run.code, run.stderr).to.equal(0);
    expect(run.stderr).to.equal('');
    const want = await fx.conn.collection('y_events').find({ kind: { $in: ['login', 'logout'] }, ts: { $gte: since, $lt: until } }, { sort: { ts: 1, _id: 1 } }).toArray();
    expect(want.length).to.be.greaterThan(50);
    const got = run.stdout.trimEnd().split('\n').map((l) => JSON.parse(l) as { _id: string; kind: string; ts: string });
    expect(got.map((e) => e._id)).to.deep.equal(want.map((d) => d._id.toHexString()));
    expect(run.stdout.endsWith('\n')).to.equal(true);
    // --from/--to are the names (one vocabulary with the query API): the same events as --since/--until.
    const named = await inProcess(['export', '--uri', uri, '--collection', 'y_events', '--kind', 'login', '--kind', 'logout', '--from', since.toISOString(), '--to', until.toISOString()]);
    expect(named.code, named.stderr).to.equal(0);
    expect(named.stdout).to.equal(run.stdout);
    // Every filter of the query API: --actorId (alias --actor), --model, --outcome..., by the same rules.
    for (const [args, want] of [
      [['--actorId', 'u7', '--model', 'Post'], { 'actor.id': 'u7', model: 'Post' }],
      [['--actor', 'u7', '--outcome', 'failure'], { 'actor.id': 'u7', outcome: 'failure' }],
      [['--documentId', 'd3', '--ip', '10.1.3.3'], { documentId: 'd3', ip: '10.1.3.3' }],
    ] as const) {
      const r = await inProcess(['export', '--uri', uri, '--collection', 'y_events', ...args]);
      expect(r.code, r.stderr).to.equal(0);
      const ids = r.stdout === '' ? [] : r.stdout.trimEnd().split('\n').map((l) => (JSON.parse(l) as { _id: string })._id);
      const expected = await fx.conn.collection('y_events').find(want, { sort: { ts: 1, _id: 1 } }).toArray();
      expect(ids, args.join(' ')).to.deep.equal(expected.map((d) => d._id.toHexString()));
      expect(ids.length, `${args.join(' ')} matches something`).to.be.greaterThan(0);
    }
    const empty = await cli(['export', '--uri', uri, '--collection', 'y_events', '--since', '2030-01-01']);
    expect(empty.code).to.equal(0);
    expect(empty.stdout).to.equal('');
  });

  it('respects backpressure: a slow output never holds more than a chunk or two', async () => {
    let maxBuffered = 0;
    let bytes = 0;
    const slow = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _enc, cb) {
        maxBuffered = Math.max(maxBuffered, slow.writableLength);
        bytes += chunk.length;
        setTimeout(cb, 2);
      },
    });
    const progress: number[] = [];
    const n = await exportEvents(fx.conn.collection('y_events') as unknown as mongo.Collection, slow, {
      format: 'ndjson',
            onProgress: (w) => progress.push(w),
    });
    expect(n).to.equal(SMALL);
    expect(bytes).to.be.greaterThan(10 * 64 * 1024);
    // Without waiting for 'drain' the whole export (megabytes) would pile up in the stream's buffer.
    expect(maxBuffered).to.be.at.most(2 * 64 * 1024 + 16 * 1024);
    expect(progress[progress.length - 1]).to.equal(n);
  });

  it('filters with the query API\'s own rules: a kind or date the query API refuses is refused, not exported as nothing', async () => {
    const coll = fx.conn.collection('y_events') as unknown as mongo.Collection;
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    const refused = async (options: Parameters<typeof exportEvents>[2]): Promise<unknown> => exportEvents(coll, sink, options).then(() => undefined, (err: unknown) => err);
    const badKind = await refused({ format: 'ndjson', filter: { kind: ['upsert' as never] } });
    expect(badKind).to.be.instanceOf(TypeError);
    expect((badKind as Error).message).to.match(/"kind"/);
    expect(await refused({ format: 'ndjson', filter: { from: new Date('nope') } })).to.be.instanceOf(TypeError);
    const matched = await exportEvents(coll, sink, { format: 'ndjson', filter: { kind: ['login', 'login'], from: new Date(start + 200), to: new Date(start + 700) } });
    expect(matched).to.equal(await fx.conn.collection('y_events').countDocuments({ kind: 'login', ts: { $gte: new Date(start + 200), $lt: new Date(start + 700) } }));
    expect(matched).to.be.greaterThan(0);
  });

  it('escapes CSV cells that a spreadsheet would run as formulas', () => {
    expect(csvCell('=1+1')).to.equal("'=1+1");
    expect(csvCell('+1')).to.equal("'+1");
    expect(csvCell('-1')).to.equal("'-1");
    expect(csvCell('@x')).to.equal("'@x");
    expect(csvCell('\tx')).to.equal("'\tx");
    expect(csvCell('\rx')).to.equal(`"'\rx"`);
    expect(csvCell('=a,"b"')).to.equal(`"'=a,""b"""`);
    expect(csvCell({ a: '=x' })).to.equal('"{""a"":""=x""}"');
    expect(csvCell(null)).to.equal('');
    expect(csvCell('plain')).to.equal('plain');
    // Leading whitespace is skipped by spreadsheets, and full-width signs are read as their ASCII forms.
    expect(csvCell(' =1+1')).to.equal("' =1+1");
    expect(csvCell('\n=1+1')).to.equal(`"'\n=1+1"`);
    expect(csvCell('＝1+1')).to.equal("'＝1+1");
    expect(csvCell('＋1')).to.equal("'＋1");
    expect(csvCell('\u00a0=1')).to.equal("'\u00a0=1");
    expect(csvCell('\u3000=1')).to.equal("'\u3000=1");
    expect(csvCell(-1)).to.equal('-1'); // a number is not a formula, and stays a number
    expect(csvCell(200)).to.equal('200');
  });

  it('CSV has flat columns a spreadsheet can use: one value per cell', async () => {
    const coll = fx.conn.collection('flat_events');
    const ts = new Date(start);
    await coll.insertMany([
      { _id: new mongo.ObjectId(), ts, kind: 'request', outcome: 'failure', actor: { id: 'u1', name: 'alice', via: 'state' }, requestId: 'r1', ip: '10.0.0.1', userAgent: 'ua',
        http: { method: 'POST', path: '/posts', route: '/posts', query: '', status: 500, durationMs: 12.5 }, error: { name: 'Error', message: 'boom', status: 500, stack: null } },
      { _id: new mongo.ObjectId(), ts: new Date(start + 1), kind: 'update', outcome: 'success', actor: null, requestId: null, ip: null, userAgent: null,
        model: 'Post', collectionName: 'posts', documentId: 'd1', operation: 'updateOne', changes: [{ path: 'title', from: 'a', to: 'b' }, { path: 'address.city', from: null, to: 'x' }] },
      { _id: new mongo.ObjectId(), ts: new Date(start + 2), kind: 'login_failed', outcome: 'failure', actor: null, requestId: 'r2', ip: '10.0.0.2', userAgent: null,
        provider: 'local', identifier: ' =cmd|x', reason: 'bad_credentials' },
    ]);
    const out = join(dir, 'flat.csv');
    const run = await inProcess(['export', '--uri', uri, '--collection', 'flat_events', '--format', 'csv', '--out', out]);
    expect(run.code, run.stderr).to.equal(0);
    expect([...csvRecords(readFileSync(out, 'utf8'))]).to.deep.equal([
      ['ts', 'kind', 'outcome', 'actor_id', 'actor_name', 'request_id', 'ip', 'method', 'path', 'route', 'status', 'duration_ms', 'model', 'document_id', 'operation', 'changed_paths', 'provider', 'identifier', 'reason', 'name', 'on_behalf_of_id', 'tenant', 'trace_id'],
      [ts.toISOString(), 'request', 'failure', 'u1', 'alice', 'r1', '10.0.0.1', 'POST', '/posts', '/posts', '500', '12.5', '', '', '', '', '', '', '', '', '', '', ''],
      [new Date(start + 1).toISOString(), 'update', 'success', '', '', '', '', '', '', '', '', '', 'Post', 'd1', 'updateOne', 'title;address.city', '', '', '', '', '', '', ''],
      [new Date(start + 2).toISOString(), 'login_failed', 'failure', '', '', 'r2', '10.0.0.2', '', '', '', '', '', '', '', '', '', 'local', "' =cmd|x", 'bad_credentials', '', '', '', ''],
    ]);
  });

  it('on a terminal, clears the progress line before the final message', async () => {
    let err = '';
    const stderr = Object.assign(new Writable({ write(chunk: Buffer, _e, cb) { err += chunk.toString(); cb(); } }), { isTTY: true });
    const stdout = new Writable({ write: (_c, _e, cb) => cb() });
    const out = join(dir, 'tty.ndjson');
    const code = await main(['export', '--uri', uri, '--collection', 'y_events', '--out', out], { stdout, stderr });
    expect(code, err).to.equal(0);
    expect(err).to.match(/\r\x1b\[Kkoa-audit export: wrote 3000 events to /);
    expect(err, 'no prefix left before a carriage return').to.not.match(/koa-audit export: \r/);
    expect(err.endsWith('\n')).to.equal(true);
  });

  it('exits 2 with a message on bad arguments', async () => {
    const cases: [string[], RegExp][] = [
      [[], /Usage: koa-audit export/],
      [['import'], /unknown command "import"/],
      [['export'], /--uri is required/],
      [['export', '--uri', 'http://x'], /--uri must be a mongodb/],
      [['export', '--uri', uri, '--kind', 'nope'], /--kind must be one of/],
      [['export', '--uri', uri, '--since', 'yesterday'], /--since must be an ISO 8601/],
      [['export', '--uri', uri, '--until', '2026-01-01T10:00'], /--until must be an ISO 8601/],
      [['export', '--uri', uri, '--since', '2026-02-30'], /--since must be an ISO 8601/],
      [['export', '--uri', uri, '--until', '2026-04-31T00:00:00Z'], /--until must be an ISO 8601/],
      [['export', '--uri', uri, '--format', 'xml'], /--format must be ndjson or csv/],
      [['export', '--uri', uri, '--from', '2026-01-01', '--since', '2026-01-02'], /--since and --from say the same thing/],
      [['export', '--uri', uri, '--outcome', 'maybe'], /--outcome must be 'success' or 'failure'/],
      [['export', '--uri', uri, '--actorId', ''], /--actorId must be a non-empty string/],
      [['export', '--uri', uri, '--colection', 'x'], /Unknown option '--colection'/],
      [['export', '--uri', uri, 'extra'], /positional/i],
      [['export', '--uri', uri, '--out', join(dir, 'no/such/dir/file.ndjson')], /cannot write --out/],
      [['export', '--uri', uri, '--timeout-ms', '0'], /--timeout-ms/],
      [['export', '--uri', 'mongodb://'], /--uri is not a valid connection string/],
    ];
    // In-process through main() (the same code the binary runs), then two as real processes for the exit status.
    for (const [args, message] of cases) {
      const run = await inProcess(args);
      expect(run.code, args.join(' ')).to.equal(2);
      expect(run.stderr, args.join(' ')).to.match(message);
      expect(run.stdout).to.equal('');
    }
    const [real, badKind, help] = await Promise.all([cli(['export'], 30_000), cli(['export', '--uri', uri, '--kind', 'nope'], 30_000), cli(['export', '--help'], 30_000)]);
    expect(real.code).to.equal(2);
    expect(real.stderr).to.match(/--uri is required/);
    expect(badKind.code).to.equal(2);
    expect(badKind.stderr).to.match(/--kind must be one of/);
    expect(help.code).to.equal(0);
    expect(help.stdout).to.match(/--format <format>/);
  });

  it('exits 1 when the database cannot be reached, within the short timeout', async () => {
    const run = await cli(['export', '--uri', 'mongodb://127.0.0.1:9/nowhere', '--timeout-ms', '1500', '--out', join(dir, 'never.ndjson')], 30_000);
    expect(run.code).to.equal(1);
    expect(run.stderr).to.match(/cannot reach the database/);
    expect(run.ms).to.be.below(15_000);
    expect(existsSync(join(dir, 'never.ndjson'))).to.equal(false);
    expect(existsSync(join(dir, 'never.ndjson.partial'))).to.equal(false);
  });
});
