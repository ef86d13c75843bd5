#!/usr/bin/env node
// `prestart` / `pretest`: installs the dependencies when node_modules is missing or does not match
// package-lock.json, so that `npm start` and `npm test` work as the first command typed on a fresh clone. Needs
// nothing but Node. When node_modules is current (after `npm ci`, as in CI) it reads two files and exits.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** Why the installed tree does not match the lockfile, or null when it does. */
export function installNeeded(dir = root) {
  const lockFile = join(dir, 'package-lock.json');
  // npm records what it installed in node_modules/.package-lock.json: the same entries when they match.
  const installedFile = join(dir, 'node_modules', '.package-lock.json');
  if (!existsSync(join(dir, 'node_modules'))) return 'node_modules is missing';
  if (!existsSync(installedFile)) return 'node_modules was not installed by npm';
  let wanted;
  let installed;
  try {
    wanted = JSON.parse(readFileSync(lockFile, 'utf8')).packages ?? {};
    installed = JSON.parse(readFileSync(installedFile, 'utf8')).packages ?? {};
  } catch (err) {
    return `cannot read the lockfiles (${err.message})`;
  }
  for (const [path, entry] of Object.entries(wanted)) {
    if (path === '' || entry.link === true) continue;
    // Optional packages for another platform are never installed: not a reason to reinstall.
    if (entry.optional === true && !(path in installed)) continue;
    const have = installed[path];
    if (have === undefined) return `${path.replace(/^.*node_modules\//, '')} is not installed`;
    if (have.version !== entry.version) return `${path.replace(/^.*node_modules\//, '')} is ${have.version}, the lockfile says ${entry.version}`;
    if (!existsSync(join(dir, path))) return `${path} is missing`;
  }
  return null;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const reason = installNeeded();
  if (reason !== null) {
    console.log(`koa-audit: installing the dependencies first (${reason}): npm ci`);
    const npm = process.env.npm_execpath;
    // Under npm, its own CLI (npm_execpath) with this Node; run directly, the npm on the PATH.
    const r = npm !== undefined && npm.endsWith('.js')
      ? spawnSync(process.execPath, [npm, 'ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit' })
      : spawnSync('npm', ['ci', '--no-audit', '--no-fund'], { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
    if (r.status !== 0) {
      console.error('koa-audit: npm ci failed; run it yourself to see why');
      process.exit(r.status ?? 1);
    }
  }
}
