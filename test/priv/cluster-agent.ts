/**
 * A tapnet "host agent" for the cluster tests, run as its own process inside a host's namespace
 * (`ip netns exec hostX node cluster-agent.js CONFIG`): a NetworkManager over the etcd store, the
 * host's membership and its overlay agent — what the daemon does in cluster mode. Commands arrive as
 * JSON lines on stdin ({id, op, …}); answers leave as JSON lines on stdout ({id, ok, …}).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { EtcdClient } from '../../src/cluster/etcd-client.js';
import { EtcdStore } from '../../src/cluster/etcd-store.js';
import { ClusterMember, clusterStatus, reclaimHost } from '../../src/cluster/membership.js';
import { OverlayAgent, vmOverlayPublisher } from '../../src/cluster/overlay.js';
import { EtcdSession } from '../../src/cluster/session.js';
import { toTapnetError } from '../../src/errors.js';
import type { NetworkConfigInput } from '../../src/manager/config.js';
import { NetworkManager, VM_RECORD_SCHEMA } from '../../src/manager/manager.js';
import type { VmRecord } from '../../src/manager/types.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';

/** What the test passes as argv[2]. */
export interface AgentConfig {
  host: string;
  vtep: string;
  underlay: string;
  endpoints: string[];
  prefix: string;
  ttl: number;
  requestTimeoutMs: number;
  retryBudgetMs: number;
  networks: Record<string, NetworkConfigInput>;
  firewall: 'nftables' | 'none';
}

/** A command to an agent. */
export type AgentCommand =
  | { op: 'ensure'; vms: string[]; network?: string }
  | { op: 'release'; vms: string[] }
  | { op: 'list' }
  | { op: 'reconcile' }
  | { op: 'overlay' }
  | { op: 'settle' }
  | { op: 'churn'; ms: number; tag: string; concurrency: number }
  | { op: 'leave' }
  | { op: 'status' }
  | { op: 'reclaim'; host: string; force?: boolean };

const out = (o: unknown): void => void process.stdout.write(`${JSON.stringify(o)}\n`);

/** The code of an error, with the codes inside a teardown error: `ERR_TEARDOWN>ERR_UNAVAILABLE`. */
function codeOf(e: unknown): string {
  const t = toTapnetError(e);
  if (t.code !== 'ERR_TEARDOWN') return t.code;
  const inner = new Set<string>();
  const walk = (f: { code?: string; details?: { failures?: unknown[] } }): void => {
    if (f.code === 'ERR_TEARDOWN' && Array.isArray(f.details?.failures))
      for (const x of f.details.failures) walk(x as typeof f);
    else if (f.code) inner.add(f.code);
  };
  walk(t.toJSON() as { code?: string; details?: { failures?: unknown[] } });
  return `ERR_TEARDOWN>${[...inner].sort().join(',')}`;
}

async function main(): Promise<void> {
  const cfg = JSON.parse(process.argv[2]!) as AgentConfig;
  const client = new EtcdClient({
    endpoints: cfg.endpoints,
    requestTimeoutMs: cfg.requestTimeoutMs,
    retryBudgetMs: cfg.retryBudgetMs,
  });
  const session = await EtcdSession.open(client, { ttl: cfg.ttl });
  const names = Object.keys(cfg.networks);
  const store = new EtcdStore<VmRecord>({
    client,
    session,
    host: cfg.host,
    prefix: cfg.prefix,
    schema: VM_RECORD_SCHEMA,
    publish: vmOverlayPublisher<VmRecord>(names, cfg.vtep),
  });
  const member = await ClusterMember.join({
    client,
    session,
    host: cfg.host,
    vtep: cfg.vtep,
    prefix: cfg.prefix,
  });
  const m = await NetworkManager.open(
    {
      // The sandbox's private tmpfs /run: gone with it, even when the agent is killed with SIGKILL.
      stateDir: mkdtempSync(join(process.env.TAPNET_SANDBOX === '1' ? '/run' : tmpdir(), 'tapnet-agent-')),
      networks: cfg.networks,
      defaultNetwork: names[0]!,
      firewall: cfg.firewall,
    },
    { store, reconcile: true },
  );
  const nl = NetlinkSocket.open();
  for (const n of names) m.ensureNetwork(m.network(n));
  const overlay = await OverlayAgent.start(
    { client, nl, host: cfg.host, vtep: cfg.vtep, underlay: cfg.underlay, prefix: cfg.prefix },
    names.map((n) => {
      const net = m.network(n);
      return {
        name: n,
        topology: net.topology,
        bridge: net.bridge,
        mtu: net.mtu,
        ...(net.subnet4 ? { subnet4: net.subnet4 } : {}),
      };
    }),
  );

  const ensure = async (vms: string[], network?: string) => {
    const ok: Array<{ vmId: string; ipv4?: string; mac: string; tap: string }> = [];
    const failed: Array<{ vmId: string; code: string; message: string }> = [];
    await Promise.all(
      vms.map((vmId) =>
        m.ensure(vmId, { vnetHdr: false, ...(network ? { network } : {}) }).then(
          (i) => void ok.push({ vmId, mac: i.mac, tap: i.tap, ...(i.ipv4 ? { ipv4: i.ipv4 } : {}) }),
          (e: unknown) => {
            const t = toTapnetError(e);
            failed.push({ vmId, code: t.code, message: t.message });
          },
        ),
      ),
    );
    return { ok, failed };
  };

  const churn = async (ms: number, tag: string, concurrency: number) => {
    const held = new Set<string>();
    const unknown = new Set<string>();
    const errors: Record<string, number> = {};
    /** Every failed call, for the test's messages. */
    const failures: Array<{ vmId: string; op: string; error: unknown }> = [];
    let n = 0;
    let ops = 0;
    const until = Date.now() + ms;
    const worker = async () => {
      while (Date.now() < until) {
        ops++;
        const mine = [...held];
        if (mine.length > 4 && Math.random() < 0.4) {
          const vmId = mine[Math.floor(Math.random() * mine.length)]!;
          held.delete(vmId);
          try {
            await m.release(vmId);
          } catch (e) {
            unknown.add(vmId);
            const c = codeOf(e);
            errors[c] = (errors[c] ?? 0) + 1;
            failures.push({ vmId, op: 'release', error: toTapnetError(e).toJSON() });
          }
        } else {
          const vmId = `${tag}-${n++}`;
          try {
            await m.ensure(vmId, { vnetHdr: false });
            held.add(vmId);
          } catch (e) {
            unknown.add(vmId);
            const c = codeOf(e);
            errors[c] = (errors[c] ?? 0) + 1;
            failures.push({ vmId, op: 'ensure', error: toTapnetError(e).toJSON() });
            await new Promise((r) => setTimeout(r, 20));
          }
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    return { held: [...held], unknown: [...unknown], errors, ops, failures };
  };

  const run = async (c: AgentCommand): Promise<Record<string, unknown>> => {
    switch (c.op) {
      case 'ensure':
        return ensure(c.vms, c.network);
      case 'release': {
        const r = await m.releaseMany(c.vms);
        return {
          released: r.released.length,
          failed: r.failed.map((f) => ({ vmId: f.vmId, code: f.error.code })),
        };
      }
      case 'list':
        return {
          vms: (await m.list()).map((i) => ({
            vmId: i.vmId,
            ipv4: i.ipv4,
            mac: i.mac,
            tap: i.tap,
            network: i.network,
          })),
        };
      case 'reconcile':
        return { report: await m.reconcile() };
      case 'overlay':
        await overlay.settle();
        return { status: overlay.status(), session: session.state, renewals: session.renewals };
      case 'settle':
        await overlay.settle();
        return {};
      case 'churn':
        return churn(c.ms, c.tag, c.concurrency);
      case 'leave':
        return { left: await member.leave() };
      case 'status':
        return { status: await clusterStatus(client, { prefix: cfg.prefix }) };
      case 'reclaim':
        return {
          report: await reclaimHost(client, c.host, {
            prefix: cfg.prefix,
            ...(c.force ? { force: true } : {}),
          }),
        };
    }
  };

  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    const c = JSON.parse(line) as AgentCommand & { id: number };
    run(c).then(
      (r) => out({ id: c.id, ok: true, ...r }),
      (e: unknown) => out({ id: c.id, ok: false, error: toTapnetError(e).toJSON() }),
    );
  });
  rl.on('close', () => process.exit(0));
  out({ id: 0, ok: true, ready: true, leaseId: session.leaseHex });
}

main().catch((e: unknown) => {
  out({ id: 0, ok: false, error: toTapnetError(e).toJSON() });
  process.exit(1);
});
