/**
 * The shape of lib/: no import cycle (type-only imports count: they are design dependencies), and each folder
 * depends only on the folders below it: core ← store ← request, changes, login, read, sinks ← audit.ts, index.ts.
 */
import { expect } from 'chai';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';

const LIB = resolve(__dirname, '../lib');
/** The folders each folder may import from (itself included). Top-level files may import anything. */
const MAY_IMPORT: Record<string, readonly string[]> = {
  core: ['core'],
  integrity: ['core', 'integrity'],
  store: ['core', 'integrity', 'store'],
  request: ['core', 'integrity', 'store', 'request'],
  changes: ['core', 'integrity', 'store', 'changes'],
  login: ['core', 'integrity', 'store', 'login'],
  rollup: ['core', 'integrity', 'store', 'rollup'],
  read: ['core', 'integrity', 'store', 'rollup', 'read'],
  sinks: ['core', 'integrity', 'store', 'sinks'],
};

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|import\(\s*'(\.[^']+)'\s*\)/g;

/** lib-relative module → the lib-relative modules it imports (type-only imports included). */
export function importGraph(): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of sources(LIB)) {
    const from = relative(LIB, file).split('\\').join('/');
    const text = readFileSync(file, 'utf8');
    const deps: string[] = [];
    for (const m of text.matchAll(IMPORT)) {
      const spec = (m[1] ?? m[2]).replace(/\.js$/, '.ts');
      deps.push(posix.normalize(posix.join(posix.dirname(from), spec)));
    }
    graph.set(from, deps);
  }
  return graph;
}

/** Every cycle found by a depth-first walk, each as the list of modules on it. */
export function cycles(graph: Map<string, string[]>): string[][] {
  const found: string[][] = [];
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (node: string): void => {
    state.set(node, 'open');
    stack.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === 'open') found.push([...stack.slice(stack.indexOf(next)), next]);
      else if (!state.has(next)) visit(next);
    }
    stack.pop();
    state.set(node, 'done');
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  return found;
}

const folderOf = (module: string): string | null => (module.includes('/') ? module.slice(0, module.indexOf('/')) : null);

describe('lib/ layout', () => {
  const graph = importGraph();

  it('reads every module and resolves every relative import to a module that exists', () => {
    expect(graph.size).to.be.above(30);
    for (const [from, deps] of graph) {
      for (const d of deps) expect(graph.has(d), `${from} imports ${d}, which is not a module of lib/`).to.equal(true);
    }
  });

  it('has no import cycle, type-only imports included', () => {
    expect(cycles(graph).map((c) => c.join(' → '))).to.deep.equal([]);
  });

  it('finds a cycle when there is one (the check itself can fail)', () => {
    const planted = new Map(graph);
    planted.set('core/types.ts', [...(graph.get('core/types.ts') ?? []), 'audit.ts']);
    expect(cycles(planted).length).to.be.above(0);
  });

  it('each folder imports only from the folders below it', () => {
    const wrong: string[] = [];
    for (const [from, deps] of graph) {
      const folder = folderOf(from);
      if (folder === null) continue;
      const allowed = MAY_IMPORT[folder];
      expect(allowed, `lib/${folder}/ is not in the layering table of this test`).to.not.equal(undefined);
      for (const d of deps) {
        const target = folderOf(d);
        if (target === null || !allowed.includes(target)) wrong.push(`${from} → ${d}`);
      }
    }
    expect(wrong).to.deep.equal([]);
  });

  it('keeps lib/ to the folders the README map names', () => {
    const readme = readFileSync(join(dirname(LIB), 'README.md'), 'utf8');
    const folders = readdirSync(LIB, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
    expect(folders.sort()).to.deep.equal(Object.keys(MAY_IMPORT).sort());
    for (const f of folders) expect(readme, `README's map of lib/ names lib/${f}/`).to.include(`lib/${f}/`);
  });
});
