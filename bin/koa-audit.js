#!/usr/bin/env node
'use strict';
// The `koa-audit` command: a launcher for the compiled CLI (lib/cli.ts), whose run() does the work.
require('../dist/cjs/read/cli.js').run();
