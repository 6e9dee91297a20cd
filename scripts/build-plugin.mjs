#!/usr/bin/env node
// Builds the standalone tc-redirect-tap CNI plugin: dist/cni/tc-redirect-tap, one executable file with a
// `#!/usr/bin/env node` line, for runtimes that exec plugins (containerd, cnitool, firecracker-go-sdk).
//   node scripts/build-plugin.mjs [--bundle | --launcher] [--out FILE]
// With esbuild installed (a dev dependency), src/cni/plugins/main.ts and everything it imports become one
// ES module (koffi, a native addon, stays external and is found in node_modules beside dist/). Without
// it, a two-line launcher that imports dist/src/cni/plugins/main.js (run `tsc` first) is written instead.
// --bundle fails when esbuild is missing; --launcher never bundles.
// Install by symlink (`ln -s $PWD/dist/cni/tc-redirect-tap /opt/cni/bin/`): Node follows it to find
// node_modules (and, for the launcher, dist/src).
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const outIdx = argv.indexOf('--out');
const out = outIdx >= 0 ? argv[outIdx + 1] : join(root, 'dist', 'cni', 'tc-redirect-tap');
if (!out) {
  process.stderr.write('build-plugin: --out needs a file name\n');
  process.exit(2);
}
const mode = argv.includes('--launcher') ? 'launcher' : argv.includes('--bundle') ? 'bundle' : 'auto';
const SHEBANG = '#!/usr/bin/env node';

async function loadEsbuild() {
  try {
    return await import('esbuild');
  } catch {
    return undefined;
  }
}

mkdirSync(dirname(out), { recursive: true });
const esbuild = mode === 'launcher' ? undefined : await loadEsbuild();
if (esbuild) {
  await esbuild.build({
    entryPoints: [join(root, 'src', 'cni', 'plugins', 'main.ts')],
    outfile: out,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['koffi'],
    banner: { js: SHEBANG },
    legalComments: 'none',
    minify: true,
    logLevel: 'warning',
  });
  chmodSync(out, 0o755);
  process.stdout.write(`build-plugin: bundled ${relative(root, out)} with esbuild\n`);
} else {
  if (mode === 'bundle') {
    process.stderr.write('build-plugin: --bundle needs esbuild (npm install --save-dev esbuild)\n');
    process.exit(1);
  }
  const target = join(root, 'dist', 'src', 'cni', 'plugins', 'main.js');
  if (!existsSync(target)) {
    process.stderr.write(`build-plugin: ${relative(root, target)} is missing: run tsc first\n`);
    process.exit(1);
  }
  let spec = relative(dirname(out), target).split('\\').join('/');
  if (!spec.startsWith('.')) spec = `./${spec}`;
  writeFileSync(out, `${SHEBANG}\nimport ${JSON.stringify(spec)};\n`);
  chmodSync(out, 0o755);
  process.stdout.write(
    `build-plugin: wrote launcher ${relative(root, out)} -> ${spec} (esbuild not installed)\n`,
  );
}
