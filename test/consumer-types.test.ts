import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { useFixture } from './support/helpers.js';

const root = join(__dirname, '..');
const repoModules = join(root, 'node_modules');

interface Manifest {
  name: string;
  version: string;
  license?: string;
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  optionalDependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

const manifest = (dir: string): Manifest => JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Manifest;

/**
 * What `npm install` would put in a consumer's node_modules, without the network: `names` and everything they
 * need (dependencies and required peers, recursively, as Node resolves them from the repository's node_modules),
 * the top-level ones linked from the repository's node_modules (nested ones come with the package they sit in).
 */
function linkClosure(consumerModules: string, names: string[]): Set<string> {
  const linked = new Set<string>();
  const visited = new Set<string>();
  const required = (m: Manifest): string[] => [
    ...Object.keys(m.dependencies ?? {}),
    ...Object.keys(m.peerDependencies ?? {}).filter((p) => m.peerDependenciesMeta?.[p]?.optional !== true),
  ];
  // npm installs optional dependencies too, where they install (another platform's binaries do not).
  const optional = (m: Manifest): string[] => Object.keys(m.optionalDependencies ?? {});
  /** Where `name` resolves from the package in `dir`: its own node_modules, then each enclosing one. */
  const resolveFrom = (dir: string, name: string): string | null => {
    for (let d = dir; d.startsWith(root); d = dirname(d)) {
      const candidate = join(d, 'node_modules', name);
      if (existsSync(join(candidate, 'package.json'))) return candidate;
      if (d === root) break;
    }
    return null;
  };
  const visit = (dir: string): void => {
    if (visited.has(dir)) return;
    visited.add(dir);
    const m = manifest(dir);
    const maybe = new Set(optional(m));
    for (const dep of [...required(m), ...maybe]) {
      if (dep === 'koa-audit') continue;
      const found = resolveFrom(dir, dep);
      if (found === null && maybe.has(dep)) continue;
      if (found === null) throw new Error(`${dep} (needed by ${dir}) is not installed in the repository`);
      if (found === join(repoModules, dep) && !linked.has(dep)) {
        const to = join(consumerModules, dep);
        mkdirSync(dirname(to), { recursive: true });
        symlinkSync(found, to, 'dir');
        linked.add(dep);
      }
      visit(found);
    }
  };
  for (const name of names) {
    const from = join(repoModules, name);
    if (!linked.has(name)) {
      mkdirSync(dirname(join(consumerModules, name)), { recursive: true });
      symlinkSync(from, join(consumerModules, name), 'dir');
      linked.add(name);
    }
    visit(from);
  }
  return linked;
}

describe('the packed package, as a consumer installs it (issue 11, items 13 and 18)', function () {
  this.timeout(240_000);
  const fx = useFixture('consumer_types', { database: false });
  let work: string;
  let consumer: string;
  let files: string[];
  let linked: Set<string>;

  before(() => {
    work = fx.tmp();
    fx.cleanup(() => rmSync(work, { recursive: true, force: true })); // a packed tarball and a linked node_modules
    // `npm pack` builds first (prepack): what is packed is what the sources say now.
    const out = execFileSync('npm', ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const [packed] = JSON.parse(out.slice(out.indexOf('['))) as { filename: string; files: { path: string }[] }[];
    files = packed.files.map((f) => f.path);
    consumer = join(work, 'consumer');
    const installed = join(consumer, 'node_modules', 'koa-audit');
    mkdirSync(installed, { recursive: true });
    execFileSync('tar', ['-xzf', join(work, packed.filename), '-C', installed, '--strip-components=1']);
    const own = manifest(installed);
    const peers = Object.keys(own.peerDependencies ?? {}).filter((p) => own.peerDependenciesMeta?.[p]?.optional !== true);
    // The consumer installed koa-audit, koa and mongoose; npm brings koa-audit's dependencies and peers.
    const optionals = Object.keys(own.optionalDependencies ?? {}).filter((d) => existsSync(join(repoModules, d, 'package.json')));
    linked = linkClosure(join(consumer, 'node_modules'), ['koa', 'mongoose', ...Object.keys(own.dependencies ?? {}), ...peers, ...optionals]);
    for (const f of ['consumer.mts', 'tsconfig.json']) copyFileSync(join(root, 'test/fixtures/consumer', f), join(consumer, f));
  });

  it('type-checks a consumer file with skipLibCheck: false, without @types/jsonwebtoken of its own', () => {
    expect(linked.has('@types/jsonwebtoken'), 'the consumer has no @types/jsonwebtoken').to.equal(false);
    const tsc = join(repoModules, 'typescript/bin/tsc');
    let output = '';
    try {
      output = execFileSync(process.execPath, [tsc, '-p', join(consumer, 'tsconfig.json')], { cwd: consumer, encoding: 'utf8' });
    } catch (err) {
      output = String((err as { stdout?: string }).stdout ?? err);
    }
    expect(output.trim(), 'tsc diagnostics').to.equal('');
  });

  it('runs the command line from dist (an installed package has no sources)', () => {
    expect(existsSync(join(consumer, 'node_modules/koa-audit/lib')), 'no lib/ in the tarball').to.equal(false);
    const v = execFileSync(process.execPath, [join(consumer, 'node_modules/koa-audit/bin/koa-audit.js'), '--version'], { cwd: consumer, encoding: 'utf8' });
    expect(v.trim()).to.equal(manifest(root).version);
  });

  it('ships an MIT LICENSE, and no source map pointing at a file it does not ship', () => {
    expect(files).to.include('LICENSE');
    expect(readFileSync(join(consumer, 'node_modules/koa-audit/LICENSE'), 'utf8')).to.match(/MIT License/);
    expect(manifest(join(consumer, 'node_modules/koa-audit')).license).to.equal('MIT');
    const base = join(consumer, 'node_modules/koa-audit');
    for (const map of files.filter((f) => f.endsWith('.map'))) {
      const { sources } = JSON.parse(readFileSync(join(base, map), 'utf8')) as { sources: string[] };
      for (const src of sources) expect(existsSync(join(base, dirname(map), src)), `${map} → ${src}`).to.equal(true);
    }
    for (const js of files.filter((f) => f.endsWith('.js'))) {
      const text = readFileSync(join(base, js), 'utf8');
      const m = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(text);
      if (m !== null) expect(files, `${js} → ${m[1]}`).to.include(join(dirname(js), m[1]));
    }
  });

  it('@koa/router is a peer dependency (one copy in the app), still installed for the tests', () => {
    const m = manifest(root);
    expect(m.peerDependencies).to.have.property('@koa/router');
    expect(m.dependencies ?? {}).to.not.have.property('@koa/router');
    expect(m.devDependencies).to.have.property('@koa/router');
    expect(readdirSync(join(consumer, 'node_modules/koa-audit'))).to.not.include('node_modules');
  });
});
