import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const root = join(__dirname, '..');
const node = (args: string[]): string => execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8' }).trim();

describe('the built package', function () {
  this.timeout(180_000);

  before(() => {
    execFileSync(process.execPath, [join(root, 'scripts/build.mjs')], { cwd: root, stdio: 'pipe' });
    expect(existsSync(join(root, 'dist/cjs/index.d.ts'))).to.equal(true, 'declarations are emitted');
  });

  it('loads with require()', () => {
    const out = node(['-e', `
      const k = require('koa-audit');
      const { audit, createAudit } = k;
      console.log([typeof audit, typeof createAudit, typeof audit.plugin, typeof audit.flush, k.default === audit].join(','));
    `]);
    expect(out).to.equal('function,function,function,function,true');
  });

  it('loads with import, and both ways share one instance', () => {
    const out = node(['--input-type=module', '-e', `
      import audit, { createAudit, audit as named } from 'koa-audit';
      import { createRequire } from 'node:module';
      const cjs = createRequire(import.meta.url)('koa-audit');
      console.log([typeof audit, typeof createAudit, audit === named, audit === cjs.audit].join(','));
    `]);
    expect(out).to.equal('function,function,true,true');
  });

  it('exports types for import and for require', () => {
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    // Throws (failing the test) with tsc's diagnostics when either entry's types do not resolve or check.
    const out = execFileSync(process.execPath, [tsc, '-p', join(root, 'test/fixtures/package/tsconfig.json')], { cwd: root, encoding: 'utf8' });
    expect(out.trim()).to.equal('');
  });
});
