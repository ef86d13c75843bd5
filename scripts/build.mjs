// Builds dist/: the library compiled once to CommonJS (dist/cjs), plus a thin ES module entry (dist/esm)
// that re-exports it. One copy of the code means one AsyncLocalStorage and one default auditor, whichever
// way an app loads the package (no dual-package hazard).
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
writeFileSync(join(dist, 'cjs/package.json'), '{ "type": "commonjs" }\n');
// The viewer's browser script runs in the page as written: tsc's CommonJS emit (an `exports` line) would break
// it there. The source is copied as it is; viewer.ts reads it beside itself and hashes it for the CSP.
for (const ext of ['.d.ts', '.js.map']) rmSync(join(dist, `cjs/read/viewer-page${ext}`), { force: true });
copyFileSync(join(root, 'lib/read/viewer-page.js'), join(dist, 'cjs/read/viewer-page.js'));

const cjs = createRequire(import.meta.url)(join(dist, 'cjs/index.js'));
const names = Object.keys(cjs).filter((n) => n !== 'default' && n !== '__esModule');
mkdirSync(join(dist, 'esm'), { recursive: true });
writeFileSync(join(dist, 'esm/package.json'), '{ "type": "module" }\n');
writeFileSync(
  join(dist, 'esm/index.js'),
  `import cjs from '../cjs/index.js';\nexport const { ${names.join(', ')} } = cjs;\nexport default cjs.audit;\n`,
);
writeFileSync(
  join(dist, 'esm/index.d.ts'),
  `import { audit } from '../cjs/index.js';\nexport * from '../cjs/index.js';\nexport default audit;\n`,
);
console.log(`built dist/ (exports: ${names.join(', ')})`);
