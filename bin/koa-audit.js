#!/usr/bin/env node
'use strict';
// The `koa-audit` command: a launcher for the compiled CLI (lib/cli.ts), which does the work.
const { main } = require('../dist/cjs/cli.js');

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(`koa-audit: ${(err && err.stack) || String(err)}\n`);
    process.exitCode = 1;
  },
);
