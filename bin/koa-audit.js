#!/usr/bin/env node
'use strict';
// The `koa-audit` command. In a checkout of the repository (lib/ present, tsx installed by `npm ci`) it runs the
// CLI from source, so it works before any build and never runs a stale dist/; an installed package has no lib/
// and runs the compiled CLI from dist/.
const { existsSync } = require('node:fs');
const { join } = require('node:path');

const source = join(__dirname, '..', 'lib', 'read', 'cli.ts');
const compiled = join(__dirname, '..', 'dist', 'cjs', 'read', 'cli.js');

function tsx() {
  try {
    return require('tsx/cjs/api');
  } catch {
    return null;
  }
}

const api = existsSync(source) ? tsx() : null;
if (api !== null) {
  api.register();
  require(source).run();
} else if (existsSync(compiled)) {
  require(compiled).run();
} else {
  process.stderr.write('koa-audit: the command line is not built; run `npm ci` (a checkout) or `npm run build`\n');
  process.exitCode = 1;
}
