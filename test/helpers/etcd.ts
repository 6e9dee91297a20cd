/**
 * A real etcd-server for tests: one member (or several), data in a temporary directory under /run (the
 * sandbox's tmpfs), listening on addresses of the sandbox — its loopback, or an address inside a named
 * test namespace. Killed and removed by stop(). etcdctl is the test oracle.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';

/** Why etcd tests cannot run here, or undefined. */
export function etcdSkipReason(): string | undefined {
  if (spawnSync('etcd', ['--version']).status !== 0)
    return 'etcd-server is not installed (apt-get install etcd-server etcd-client)';
  if (spawnSync('etcdctl', ['version']).status !== 0)
    return 'etcdctl is not installed (apt-get install etcd-client)';
  return undefined;
}

/** Where and how one member runs. */
export interface EtcdMemberSpec {
  name: string;
  /** Address to listen on (client and peer). */
  ip: string;
  clientPort: number;
  peerPort: number;
  /** Run inside this named network namespace (`ip netns exec`); default: the test's own. */
  netns?: string;
}

/** A running etcd (one or more members). */
export interface TestEtcd {
  /** Client URLs, one per member. */
  endpoints: string[];
  /** The data directory root. */
  dir: string;
  /** Kill member `i` (default all) with `signal`, and wait for it to exit. */
  kill(signal?: NodeJS.Signals, i?: number): Promise<void>;
  /** Start member `i` (default all) again on the same data; resolves when it answers. */
  start(i?: number): Promise<void>;
  /** `etcdctl --endpoints … ARGS…` (output as text), in the first member's namespace. */
  ctl(...args: string[]): string;
  /** Kill everything and remove the data. Idempotent. */
  stop(): Promise<void>;
}

function healthy(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(`${url}/health`, { timeout: 500, agent: false }, (res) => {
      let body = '';
      res.on('data', (c) => {
        body += c;
      });
      res.on('end', () => resolve(res.statusCode === 200 && body.includes('true')));
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
  });
}

/** Run etcdctl (in `netns` when given). */
function ctlIn(netns: string | undefined, argv: string[]): string {
  const [file, full] = netns ? ['ip', ['netns', 'exec', netns, 'etcdctl', ...argv]] : ['etcdctl', argv];
  return execFileSync(file, full as string[], {
    encoding: 'utf8',
    env: { ...process.env, ETCDCTL_API: '3' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Whether member `m` answers, asked from where it runs. */
async function memberHealthy(m: EtcdMemberSpec, url: string): Promise<boolean> {
  if (!m.netns) return healthy(url);
  try {
    ctlIn(m.netns, ['--endpoints', url, '--command-timeout=500ms', 'endpoint', 'health']);
    return true;
  } catch {
    return false;
  }
}

/** Start etcd with the given members (a cluster when several) and wait until every member is healthy. */
export async function startEtcd(
  members: EtcdMemberSpec[],
  extraArgs: string[] = [],
  /** Where the data directory goes: default /run (the sandbox's tmpfs); a disk path makes every commit an fsync. */
  dataRoot = '/run',
): Promise<TestEtcd> {
  const dir = mkdtempSync(`${dataRoot}/tapnet-etcd-`);
  const procs: (ChildProcess | undefined)[] = members.map(() => undefined);
  const initialCluster = members.map((m) => `${m.name}=http://${m.ip}:${m.peerPort}`).join(',');
  const endpoints = members.map((m) => `http://${m.ip}:${m.clientPort}`);
  const launch = (i: number): void => {
    const m = members[i]!;
    const args = [
      '--name',
      m.name,
      '--data-dir',
      `${dir}/${m.name}`,
      '--listen-client-urls',
      `http://${m.ip}:${m.clientPort}`,
      '--advertise-client-urls',
      `http://${m.ip}:${m.clientPort}`,
      '--listen-peer-urls',
      `http://${m.ip}:${m.peerPort}`,
      '--initial-advertise-peer-urls',
      `http://${m.ip}:${m.peerPort}`,
      '--initial-cluster',
      initialCluster,
      '--initial-cluster-state',
      'new',
      '--heartbeat-interval',
      '50',
      '--election-timeout',
      '500',
      '--log-level',
      'error',
      ...extraArgs,
    ];
    const [file, argv] = m.netns ? ['ip', ['netns', 'exec', m.netns, 'etcd', ...args]] : ['etcd', args];
    const p = spawn(file, argv as string[], { stdio: ['ignore', 'ignore', 'pipe'] });
    p.stderr!.on('data', () => undefined);
    procs[i] = p;
  };
  const waitHealthy = async (idx: number[]): Promise<void> => {
    const until = Date.now() + 15_000;
    for (const i of idx) {
      while (!(await memberHealthy(members[i]!, endpoints[i]!))) {
        if (Date.now() > until) throw new Error(`etcd member ${members[i]!.name} did not become healthy`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  const all = (i?: number): number[] => (i === undefined ? members.map((_, j) => j) : [i]);
  const kill = async (signal: NodeJS.Signals = 'SIGKILL', i?: number): Promise<void> => {
    await Promise.all(
      all(i).map(async (j) => {
        const p = procs[j];
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        const exited = new Promise((r) => p.once('exit', r));
        p.kill(signal);
        await exited;
        procs[j] = undefined;
      }),
    );
  };
  for (const i of all()) launch(i);
  let stopped = false;
  const etcd: TestEtcd = {
    endpoints,
    dir,
    kill,
    async start(i?: number) {
      for (const j of all(i)) if (!procs[j]) launch(j);
      await waitHealthy(all(i));
    },
    ctl: (...args: string[]) => ctlIn(members[0]!.netns, ['--endpoints', endpoints.join(','), ...args]),
    async stop() {
      if (stopped) return;
      stopped = true;
      await kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitHealthy(all());
  } catch (e) {
    await etcd.stop();
    throw e;
  }
  return etcd;
}
