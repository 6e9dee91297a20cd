/**
 * The standalone tc-redirect-tap executable, for runtimes that exec CNI plugins (containerd, cnitool,
 * firecracker-go-sdk): CNI_COMMAND and the CNI_* variables from the environment, the network config on
 * stdin, the result or the spec's error JSON on stdout, exit code 0 or 1. It runs the same code as the
 * in-process plugin and loads nothing else (no CLI, logging or validation libraries): Node's start-up is
 * most of its cost. Built into the single file dist/cni/tc-redirect-tap by scripts/build-plugin.mjs.
 */
import { readFileSync, readSync, writeSync } from 'node:fs';
import { runTcRedirectTap, TC_REDIRECT_TAP_VERSIONS } from './tc-redirect-tap.js';

const ABOUT = 'CNI plugin tc-redirect-tap (tapnet)';

/** All of stdin (a pipe, a file or a terminal), synchronously. */
function readStdin(): Buffer {
  try {
    return readFileSync(0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
  }
  // A non-blocking pipe: poll it.
  const chunks: Buffer[] = [];
  const buf = Buffer.allocUnsafe(1 << 16);
  for (;;) {
    try {
      const n = readSync(0, buf);
      if (n === 0) return Buffer.concat(chunks);
      chunks.push(Buffer.from(buf.subarray(0, n)));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

function writeAll(fd: number, b: Buffer): void {
  let off = 0;
  while (off < b.length) off += writeSync(fd, b, off);
}

async function main(): Promise<number> {
  const command = process.env.CNI_COMMAND ?? '';
  if (command === '') {
    // skel: no command is a person asking what this is.
    writeAll(
      2,
      Buffer.from(`${ABOUT}\nCNI protocol versions supported: ${TC_REDIRECT_TAP_VERSIONS.join(', ')}\n`),
    );
    return 0;
  }
  let stdin: Buffer;
  try {
    stdin = command === 'VERSION' ? Buffer.alloc(0) : readStdin();
  } catch (e) {
    stdin = Buffer.alloc(0);
    const msg = `error reading from stdin: ${(e as Error).message}`;
    writeAll(1, Buffer.from(JSON.stringify({ cniVersion: '1.1.0', code: 5, msg }, null, 4)));
    return 1;
  }
  const out = await runTcRedirectTap(command, process.env, stdin);
  writeAll(1, out.stdout);
  return out.exitCode;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    writeAll(1, Buffer.from(JSON.stringify({ cniVersion: '1.1.0', code: 999, msg: String(e) }, null, 4)));
    process.exit(1);
  },
);
