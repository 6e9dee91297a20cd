/**
 * Three "hosts" — network namespaces joined by an underlay bridge on 198.18.100.0/24 — each with its own
 * agent process (NetworkManager over the etcd store + membership + overlay agent), and a real etcd-server
 * in the underlay's namespace. What a user checks: VMs on host A reach VMs on host C by IP through VXLAN
 * (ARP answered locally, never flooded), and through /32 routes on a routed network; 3 × 300 concurrent
 * ensures give 900 distinct addresses; kill -9 of one agent leaves forwarding intact and its lease
 * expired; an etcd restart during churn loses no record and duplicates no address; a host cut off from
 * etcd fails new ensures with ERR_UNAVAILABLE while its VMs keep working; a clean leave withdraws entries.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { deriveVni, vxlanName } from '../../src/cluster/overlay-kernel.js';
import { openTap } from '../../src/net/tap.js';
import { etcdSkipReason, startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';
import type { AgentCommand, AgentConfig } from './cluster-agent.js';
import { type StandIn, startStandIn } from './cluster-vm.js';

const skip = privSkipReason() ?? etcdSkipReason();
const ETCD_IP = '198.18.100.254';
const PREFIX = '/tapnet';
const HOSTS = ['a', 'b', 'c'] as const;
type Host = (typeof HOSTS)[number];
const VTEP: Record<Host, string> = { a: '198.18.100.1', b: '198.18.100.2', c: '198.18.100.3' };
const NETWORKS = {
  c1: { topology: 'bridge' as const, bridge: 'tn-c1', subnet4: '198.18.64.0/20', mtu: 1450 },
  c2: { topology: 'routed' as const, bridge: 'tn-c2', subnet4: '198.18.80.0/20', mtu: 1450 },
};
const VX = vxlanName(deriveVni('c1'));

type Reply = Record<string, unknown> & { ok: boolean; error?: { code: string; message: string } };
interface VmInfo {
  vmId: string;
  ipv4?: string;
  mac: string;
  tap: string;
}

/** One agent process inside a host namespace. */
class Agent {
  private child!: ChildProcess;
  private readonly pending = new Map<number, (r: Reply) => void>();
  private n = 1;
  constructor(
    readonly host: Host,
    readonly ns: TestNetns,
    private readonly cfg: AgentConfig,
  ) {}
  start(): Promise<Reply> {
    const path = fileURLToPath(new URL('./cluster-agent.js', import.meta.url));
    this.child = spawn(
      'ip',
      ['netns', 'exec', this.ns.name, process.execPath, path, JSON.stringify(this.cfg)],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    return new Promise((resolve) => {
      this.pending.set(0, resolve);
      createInterface({ input: this.child.stdout! }).on('line', (line) => {
        const r = JSON.parse(line) as Reply & { id: number };
        this.pending.get(r.id)?.(r);
        this.pending.delete(r.id);
      });
      // An agent that dies answers every open command with an error instead of leaving it hanging.
      this.child.once('exit', (code, signal) => {
        for (const done of this.pending.values())
          done({
            ok: false,
            error: { code: 'AGENT_EXITED', message: `agent ${this.host} exited (${code ?? signal})` },
          });
        this.pending.clear();
      });
    });
  }
  send(c: AgentCommand): Promise<Reply> {
    return new Promise((resolve) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        resolve({ ok: false, error: { code: 'AGENT_EXITED', message: `agent ${this.host} is not running` } });
        return;
      }
      const id = this.n++;
      this.pending.set(id, resolve);
      this.child.stdin!.write(`${JSON.stringify({ ...c, id })}\n`);
    });
  }
  async must(c: AgentCommand): Promise<Reply> {
    const r = await this.send(c);
    assert.ok(r.ok, `${this.host} ${c.op}: ${JSON.stringify(r.error)}`);
    return r;
  }
  async ensure(vms: string[], network?: string): Promise<VmInfo[]> {
    const r = await this.must({ op: 'ensure', vms, ...(network ? { network } : {}) });
    assert.deepEqual(r.failed, [], `${this.host}: ensure failures`);
    return r.ok as unknown as VmInfo[];
  }
  kill(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve();
    const gone = new Promise<void>((r) => this.child.once('exit', () => r()));
    this.child.kill('SIGKILL');
    return gone;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const bare = (cidr: string | undefined) => cidr!.slice(0, cidr!.indexOf('/'));

describe('cluster: three hosts, etcd, VXLAN overlay', { skip, timeout: 120_000 }, () => {
  let ul: TestNetns;
  const ns = {} as Record<Host, TestNetns>;
  const agents = {} as Record<Host, Agent>;
  let etcd: TestEtcd;
  const vms: StandIn[] = [];
  const vm = {} as Record<string, StandIn>;

  const standIn = (h: Host, info: VmInfo): StandIn => {
    const fd = openTap(info.tap, { nsFd: ns[h].ns.fd, vnetHdr: false }).fds[0]!;
    const s = startStandIn(fd, info.mac, bare(info.ipv4));
    closeSync(fd);
    vms.push(s);
    return s;
  };
  /** MACs with a remote (`dst`) entry on host h's VXLAN device: `bridge -j fdb show dev tnvxN`. */
  const remoteMacs = (h: Host): Set<string> =>
    new Set(
      (
        JSON.parse(execBridge(ns[h].name, ['-j', 'fdb', 'show', 'dev', VX])) as Array<{
          mac: string;
          dst?: string;
        }>
      )
        .filter((e) => e.dst)
        .map((e) => e.mac),
    );
  const newAgent = (h: Host): Agent =>
    new Agent(h, ns[h], {
      host: `host-${h}`,
      vtep: VTEP[h],
      underlay: 'eth0',
      endpoints: etcd.endpoints,
      prefix: PREFIX,
      ttl: 3,
      requestTimeoutMs: 1000,
      retryBudgetMs: 2500,
      networks: NETWORKS,
      firewall: 'nftables',
    });
  const status = async (from: Host) =>
    (await agents[from].must({ op: 'status' })).status as {
      hosts: Array<{ name: string; state: string; vms: number; vtep: string }>;
    };

  before(async () => {
    ul = makeTestNetns('ul');
    ul.ip('link', 'add', 'ul0', 'type', 'bridge');
    ul.ip('addr', 'add', `${ETCD_IP}/24`, 'dev', 'ul0');
    ul.ip('link', 'set', 'ul0', 'up');
    for (const h of HOSTS) {
      ns[h] = makeTestNetns(`h${h}`);
      ul.ip('link', 'add', `v${h}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns[h].name);
      ul.ip('link', 'set', `v${h}`, 'master', 'ul0', 'up');
      ns[h].ip('addr', 'add', `${VTEP[h]}/24`, 'dev', 'eth0');
      ns[h].ip('link', 'set', 'eth0', 'up');
    }
    etcd = await startEtcd([{ name: 'e0', ip: ETCD_IP, clientPort: 2379, peerPort: 2380, netns: ul.name }]);
    for (const h of HOSTS) agents[h] = newAgent(h);
    const ready = await Promise.all(HOSTS.map((h) => agents[h].start()));
    for (const r of ready) assert.ok(r.ok, JSON.stringify(r.error));
  });

  after(async () => {
    for (const s of vms) s.kill();
    for (const h of HOSTS) await agents[h]?.kill();
    await etcd?.stop();
    for (const h of HOSTS) ns[h]?.destroy();
    ul?.destroy();
  });

  it('a VM on host A reaches a VM on host C by IP through VXLAN; ARP is answered on A, not flooded', async () => {
    const [a1] = await agents.a.ensure(['vm-a1']);
    const [b1] = await agents.b.ensure(['vm-b1']);
    const [c1] = await agents.c.ensure(['vm-c1']);
    vm.a1 = standIn('a', a1!);
    vm.b1 = standIn('b', b1!);
    vm.c1 = standIn('c', c1!);
    await Promise.all(HOSTS.map((h) => agents[h].must({ op: 'settle' })));
    const arpBefore = await vm.c1.arpRequests();
    const p = await vm.a1.probe(vm.c1.ip);
    assert.equal(p.arp, c1!.mac, 'the bridge on A answered with C1’s MAC');
    assert.ok(p.echo, 'UDP echo from C1 came back through the overlay');
    assert.equal(await vm.c1.arpRequests(), arpBefore, 'the ARP request never reached host C');
    assert.ok((await vm.c1.probe(vm.b1.ip)).echo, 'C reaches B too');
    // The kernel state, read with iproute2 on host A.
    const [vx] = ns.a.ipJson<
      Array<{ mtu: number; linkinfo: { info_data: Record<string, unknown> }; master: string }>
    >('-d', 'link', 'show', 'dev', VX);
    assert.equal(vx!.mtu, 1450);
    assert.equal(vx!.master, 'tn-c1');
    assert.equal(vx!.linkinfo.info_data.id, deriveVni('c1'));
    assert.equal(vx!.linkinfo.info_data.local, VTEP.a);
    assert.equal(vx!.linkinfo.info_data.port, 4789);
    assert.equal(vx!.linkinfo.info_data.learning, false);
    const port = JSON.parse(execBridge(ns.a.name, ['-d', '-j', 'link', 'show', 'dev', VX])) as Array<{
      neigh_suppress: boolean;
      learning: boolean;
    }>;
    assert.equal(port[0]!.neigh_suppress, true);
    assert.equal(port[0]!.learning, false);
    const fdb = JSON.parse(execBridge(ns.a.name, ['-j', 'fdb', 'show', 'dev', VX])) as Array<{
      mac: string;
      dst?: string;
    }>;
    assert.ok(fdb.some((e) => e.mac === c1!.mac && e.dst === VTEP.c));
    assert.ok(fdb.some((e) => e.mac === b1!.mac && e.dst === VTEP.b));
    assert.ok(!fdb.some((e) => e.mac === a1!.mac), 'no entry for the local VM');
    const neigh = ns.a.ipJson<Array<{ dst: string; lladdr: string; state: string[] }>>(
      'neigh',
      'show',
      'dev',
      'tn-c1',
    );
    assert.ok(
      neigh.some((n) => n.dst === vm.c1!.ip && n.lladdr === c1!.mac && n.state.includes('PERMANENT')),
    );
    assert.ok(
      !fdb.some((e) => e.mac === '00:00:00:00:00:00'),
      'no flood list: unknown destinations are dropped, not flooded',
    );
  });

  it('routed network: /32 routes via the owning host', async () => {
    const [ra] = await agents.a.ensure(['vm-ra'], 'c2');
    const [rc] = await agents.c.ensure(['vm-rc'], 'c2');
    vm.ra = standIn('a', ra!);
    vm.rc = standIn('c', rc!);
    await Promise.all(HOSTS.map((h) => agents[h].must({ op: 'settle' })));
    const routes = ns.a.ipJson<Array<{ dst: string; gateway?: string; protocol: string }>>(
      'route',
      'show',
      'proto',
      '84',
    );
    assert.ok(
      routes.some((r) => r.dst === bare(rc!.ipv4) && r.gateway === VTEP.c),
      JSON.stringify(routes),
    );
    const p = await vm.ra.probe(vm.rc.ip);
    assert.ok(p.echo, `routed echo A→C: ${JSON.stringify(p)}`);
  });

  it('3 hosts × 300 concurrent ensures give 900 distinct addresses, programmed on every other host', async () => {
    const t0 = performance.now();
    const results = await Promise.all(
      HOSTS.map((h) => agents[h].ensure(Array.from({ length: 300 }, (_, i) => `bulk-${h}-${i}`))),
    );
    const ms = performance.now() - t0;
    const addrs = results.flat().map((v) => v.ipv4);
    assert.equal(addrs.length, 900);
    assert.equal(new Set(addrs).size, 900, 'no address given twice');
    const keys = etcd
      .ctl('get', '--prefix', '--keys-only', `${PREFIX}/ipam/c1/`)
      .split('\n')
      .filter((l) => l.includes('/leases/'));
    assert.equal(keys.length, 903, 'etcd holds 900 + 3 leases of c1');
    await Promise.all(HOSTS.map((h) => agents[h].must({ op: 'settle' })));
    for (const h of HOSTS)
      assert.equal(remoteMacs(h).size, 602, `host ${h} programs the 600 + 2 remote VMs of c1`);
    process.stderr.write(`# 900 concurrent ensures on 3 hosts: ${ms.toFixed(0)} ms\n`);
    await Promise.all(
      HOSTS.map((h) =>
        agents[h].must({ op: 'release', vms: Array.from({ length: 300 }, (_, i) => `bulk-${h}-${i}`) }),
      ),
    );
    await Promise.all(HOSTS.map((h) => agents[h].must({ op: 'settle' })));
    for (const h of HOSTS) assert.equal(remoteMacs(h).size, 2, `host ${h} removed the released VMs`);
  });

  it('kill -9 of one agent: the others keep forwarding, its lease shows expired; reclaim only when forced', async () => {
    await agents.b.kill();
    assert.ok((await vm.a1!.probe(vm.c1!.ip)).echo, 'A → C still works');
    assert.ok(
      (await vm.a1!.probe(vm.b1!.ip)).echo,
      'A → B’s VM still works: its kernel did not die with the agent',
    );
    let b: { state: string; vms: number } | undefined;
    for (const until = Date.now() + 6_000; Date.now() < until; await sleep(200)) {
      b = (await status('a')).hosts.find((x) => x.name === 'host-b');
      if (b?.state === 'expired') break;
    }
    assert.equal(b?.state, 'expired');
    assert.equal(b?.vms, 1, 'its VM is still counted: it may still run');
    const refused = await agents.a.send({ op: 'reclaim', host: 'host-b' });
    assert.equal(refused.error?.code, 'ERR_CONFLICT', 'not without force');
    // The agent comes back: it takes over its own name (same VTEP) and is alive again.
    agents.b = newAgent('b');
    assert.ok((await agents.b.start()).ok);
    assert.equal((await status('c')).hosts.find((x) => x.name === 'host-b')?.state, 'alive');
    assert.equal(
      (await agents.c.send({ op: 'reclaim', host: 'host-b', force: true })).error?.code,
      'ERR_CONFLICT',
      'never while alive',
    );
  });

  it('etcd restarted during churn: no duplicate address, no lost record', async () => {
    const churn = Promise.all(
      (['a', 'c'] as const).map((h) =>
        agents[h].must({ op: 'churn', ms: 6_000, tag: `churn-${h}`, concurrency: 4 }),
      ),
    );
    await sleep(1_000);
    await etcd.kill('SIGKILL');
    await sleep(3_000); // longer than the agents' retry budget: some calls must fail
    await etcd.start();
    const [ra, rc] = (await churn) as unknown as Array<{
      held: string[];
      unknown: string[];
      errors: Record<string, number>;
      ops: number;
      failures: Array<{ vmId: string; op: string; error: unknown }>;
    }>;
    process.stderr.write(
      `# churn: A ${ra!.ops} ops ${JSON.stringify(ra!.errors)}, C ${rc!.ops} ops ${JSON.stringify(rc!.errors)}\n`,
    );
    const codes = Object.keys({ ...ra!.errors, ...rc!.errors });
    assert.ok(codes.length > 0, 'the outage was seen');
    // Releases report ERR_TEARDOWN listing their failed steps: those must be ERR_UNAVAILABLE too.
    assert.ok(
      codes.every((c) => c === 'ERR_UNAVAILABLE' || c === 'ERR_TEARDOWN>ERR_UNAVAILABLE'),
      `only retryable failures: ${codes}`,
    );
    const all: Array<{ host: Host; vmId: string; ipv4?: string }> = [];
    for (const [h, r] of [
      ['a', ra!],
      ['c', rc!],
    ] as const) {
      const { report } = (await agents[h].must({ op: 'reconcile' })) as unknown as {
        report: { reclaimedLeases: string[]; errors: unknown[] };
      };
      assert.deepEqual(report.errors, [], `${h}: reconcile errors`);
      // A ready VM never loses its lease, even to a write etcd applied and never answered.
      assert.deepEqual(
        report.reclaimedLeases,
        [],
        `${h}: no lease lost; failed calls: ${JSON.stringify(r.failures, null, 1)}`,
      );
      const listed = (
        (await agents[h].must({ op: 'list' })).vms as Array<{ vmId: string; ipv4?: string }>
      ).filter((v) => v.vmId.startsWith('churn-'));
      const names = new Set(listed.map((v) => v.vmId));
      for (const id of r.held) assert.ok(names.has(id), `${h}: ${id} was ensured and is still recorded`);
      for (const id of names)
        assert.ok(
          r.held.includes(id) || r.unknown.includes(id),
          `${h}: ${id} is recorded but was never ensured`,
        );
      all.push(...listed.map((v) => ({ host: h, ...v })));
    }
    const addrs = all.map((v) => v.ipv4);
    assert.equal(new Set(addrs).size, addrs.length, 'no address held twice');
    // Every lease in etcd belongs to a recorded VM (reconcile freed the orphans of failed ensures).
    const lines = etcd
      .ctl('get', '--prefix', `${PREFIX}/ipam/c1/198.18.64.0_20/leases/`)
      .split('\n')
      .filter(Boolean);
    const leases = new Map<string, { owner: string; host: string }>();
    for (let i = 0; i + 1 < lines.length; i += 2)
      leases.set(lines[i]!.slice(lines[i]!.lastIndexOf('/') + 1), JSON.parse(lines[i + 1]!));
    for (const v of all)
      assert.deepEqual(leases.get(bare(v.ipv4)), { owner: v.vmId, host: `host-${v.host}` });
    const churnLeases = [...leases.values()].filter((l) => l.owner.startsWith('churn-'));
    assert.equal(churnLeases.length, all.length, 'no leaked lease');
  });

  it('a host cut off from etcd: new ensures fail with ERR_UNAVAILABLE, its VMs keep working', async () => {
    const nft = (...a: string[]) => execNft(ns.c.name, a);
    nft('add', 'table', 'inet', 'tpart');
    nft('add', 'chain', 'inet', 'tpart', 'out', '{ type filter hook output priority 0; }');
    nft('add', 'rule', 'inet', 'tpart', 'out', 'ip', 'daddr', ETCD_IP, 'tcp', 'dport', '2379', 'drop');
    const t0 = Date.now();
    const r = await agents.c.send({ op: 'ensure', vms: ['vm-cut'] });
    const failed = r.failed as Array<{ code: string }>;
    assert.equal(failed[0]?.code, 'ERR_UNAVAILABLE');
    assert.ok(Date.now() - t0 < 5_000, `failed within ${Date.now() - t0} ms`);
    assert.ok((await vm.a1!.probe(vm.c1!.ip)).echo, 'A → C still works');
    assert.ok((await vm.c1!.probe(vm.b1!.ip)).echo, 'C → B still works');
    let c: { state: string } | undefined;
    for (const until = Date.now() + 6_000; Date.now() < until; await sleep(200)) {
      c = (await status('a')).hosts.find((x) => x.name === 'host-c');
      if (c?.state === 'expired') break;
    }
    assert.equal(c?.state, 'expired', 'the others see its lease expire');
    nft('delete', 'table', 'inet', 'tpart');
    let back: Reply | undefined;
    for (const until = Date.now() + 8_000; Date.now() < until; await sleep(300)) {
      back = await agents.c.send({ op: 'ensure', vms: ['vm-cut'] });
      if ((back.failed as unknown[]).length === 0) break;
    }
    assert.deepEqual(back?.failed, [], 'ensures work again once etcd is reachable');
    for (const until = Date.now() + 6_000; Date.now() < until; await sleep(200)) {
      c = (await status('a')).hosts.find((x) => x.name === 'host-c');
      if (c?.state === 'alive') break;
    }
    assert.equal(c?.state, 'alive', 'it registered again on a new lease');
  });

  it('a host that leaves cleanly withdraws its overlay entries', async () => {
    assert.ok(remoteMacs('c').has(vm.a1!.mac));
    const r = await agents.a.must({ op: 'leave' });
    assert.ok((r.left as { overlayEntries: number }).overlayEntries >= 1);
    await agents.c.must({ op: 'settle' });
    await sleep(200);
    await agents.c.must({ op: 'settle' });
    assert.ok(!remoteMacs('c').has(vm.a1!.mac), 'C removed A’s VMs');
    const a = (await status('c')).hosts.find((x) => x.name === 'host-a');
    assert.equal(a?.state, 'left', 'A still has records, so it stays listed as left');
  });
});

function execBridge(netns: string, args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', netns, 'bridge', ...args], { encoding: 'utf8' });
}

function execNft(netns: string, args: string[]): string {
  return execFileSync('ip', ['netns', 'exec', netns, 'nft', ...args], { encoding: 'utf8' });
}
