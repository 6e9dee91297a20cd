/**
 * Test harness for the daemon: `tapnet serve` as a child process on a socket in a temp dir, managing a
 * test namespace, with a raw HTTP helper over the Unix socket. Used by test/e2e/api*.test.ts and
 * test/e2e/cli*.test.ts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestNetns } from '../helpers/priv.js';

export const CLI = join(dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: test convenience
  json: any;
}

/** One HTTP request over a Unix socket (a fresh connection each time). */
export function request(
  socket: string,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<Reply> {
  const payload =
    body === undefined
      ? undefined
      : typeof body === 'string'
        ? Buffer.from(body)
        : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: socket,
        method,
        path,
        agent: false,
        headers: {
          ...(payload
            ? { 'content-type': 'application/json', 'content-length': String(payload.length) }
            : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : undefined;
          } catch {}
          resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

export interface DaemonHarness {
  dir: string;
  socket: string;
  configFile: string;
  stateDir: string;
  proc: ChildProcess;
  /** Everything the daemon logged so far (JSON lines). */
  logs(): string;
  call(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Reply>;
  /** Send `signal` and wait for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Wait for the exit code (without sending anything). */
  exited: Promise<number | null>;
  /** Remove the temp dir (after stop). */
  cleanup(): void;
}

export interface DaemonSetup {
  tag: string;
  /** The configuration besides netns, stateDir and api.socket (JSON object, written as JSON). */
  config: Record<string, unknown>;
  /** Extra `tapnet serve` arguments. */
  args?: string[];
  env?: NodeJS.ProcessEnv;
}

/** Start `tapnet serve` for namespace `t`; resolves once /readyz answers 200. */
export async function startDaemon(t: TestNetns, setup: DaemonSetup): Promise<DaemonHarness> {
  const dir = mkdtempSync(join(tmpdir(), `tapnet-${setup.tag}-`));
  const socket = join(dir, 'tapnet.sock');
  const stateDir = join(dir, 'state');
  const configFile = join(dir, 'config.json');
  const { api, ...rest } = setup.config as { api?: Record<string, unknown> };
  writeFileSync(
    configFile,
    JSON.stringify({ netns: t.ns.path, stateDir, ...rest, api: { socket, ...(api ?? {}) } }, null, 2),
  );
  // Logs go to a file, not a pipe: a test blocked in spawnSync must not block the daemon's writes.
  const logFile = join(dir, 'daemon.log');
  const logFd = openSync(logFile, 'a');
  const proc = spawn(process.execPath, [CLI, '--config', configFile, 'serve', ...(setup.args ?? [])], {
    stdio: ['ignore', logFd, logFd],
    env: { ...process.env, ...(setup.env ?? {}) },
  });
  closeSync(logFd);
  const log = () => readFileSync(logFile, 'utf8');
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)));
  const h: DaemonHarness = {
    dir,
    socket,
    configFile,
    stateDir,
    proc,
    logs: log,
    exited,
    call: (method, path, body, headers) => request(socket, method, path, body, headers),
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`tapnet serve exited with ${proc.exitCode}: ${log()}`);
    try {
      if ((await h.call('GET', '/readyz')).status === 200) return h;
    } catch {}
    if (Date.now() > deadline) {
      await h.stop('SIGKILL');
      throw new Error(`tapnet serve did not become ready: ${log()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Parse the daemon's JSON log lines. */
export function logLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}
