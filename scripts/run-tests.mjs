#!/usr/bin/env node
// The test command (`npm test`, after bootstrap has built dist/): every suite under dist/test with
// node's test runner, inside a private network namespace (scripts/sandbox.mjs).
//   node scripts/run-tests.mjs [unit|priv|e2e] [extra node --test args]
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const layers = ['unit', 'priv', 'e2e'];
const only = argv.filter((a) => layers.includes(a));
const extra = argv.filter((a) => !layers.includes(a));
const dirs = (only.length ? only : layers).map((l) => join('dist', 'test', l));

const r = spawnSync(
  process.execPath,
  [
    join(root, 'scripts', 'sandbox.mjs'),
    process.execPath,
    '--test',
    '--test-reporter=spec',
    ...extra,
    ...dirs,
  ],
  { stdio: 'inherit', cwd: root },
);
process.exit(r.status ?? 1);
