#!/usr/bin/env node
// Runs a command inside a private network + mount namespace, so nothing it does touches this
// machine's own network: a fresh netns (only `lo`, brought up), and tmpfs over /run so that named
// namespaces (/run/netns), sockets and locks vanish with it.
//   node scripts/sandbox.mjs <command> [args…]
// Not root, or no unshare: runs the command as it is, with TAPNET_SANDBOX unset, so privileged
// tests skip themselves with the reason.
import { spawnSync } from 'node:child_process';

const [cmd, ...args] = process.argv.slice(2);
if (!cmd) {
  process.stderr.write('usage: sandbox.mjs <command> [args…]\n');
  process.exit(2);
}

function run(file, argv, env) {
  const r = spawnSync(file, argv, { stdio: 'inherit', env });
  if (r.error) throw r.error;
  process.exit(r.status ?? (r.signal ? 128 + 15 : 1));
}

if (process.env.TAPNET_SANDBOX === '1') run(cmd, args, process.env); // already inside

const root = process.getuid?.() === 0;
const haveUnshare = spawnSync('unshare', ['--version']).status === 0;
if (!root || !haveUnshare) {
  process.stderr.write(
    `sandbox: ${root ? 'unshare(1) not found' : 'not root'}: running without a private network namespace; privileged tests will skip\n`,
  );
  run(cmd, args, { ...process.env, TAPNET_SANDBOX: '0' });
}

const inner = [
  'set -e',
  'mount -t tmpfs -o mode=0755 tapnet-sandbox-run /run',
  'mkdir -p /run/netns /run/lock',
  'ip link set lo up',
  'exec "$@"',
].join('\n');
run(
  'unshare',
  ['--net', '--mount', '--propagation', 'private', '--', 'sh', '-c', inner, 'sh', cmd, ...args],
  { ...process.env, TAPNET_SANDBOX: '1' },
);
