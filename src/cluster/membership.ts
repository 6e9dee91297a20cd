/**
 * Cluster membership: each host's agent registers `hosts/<host>/info` ({name, vtep, joinedAt, leaseId};
 * persistent) and `alive/<host>` (on its session lease). A host whose agent dies or is cut off for longer
 * than the TTL loses its `alive` key: `tapnet cluster status` shows it expired, with its VMs still
 * counted — they may still run, and their addresses stay taken. A host that leaves cleanly withdraws its
 * overlay entries and its `alive` key.
 *
 * Reclaim policy: a dead host's records, leases and overlay entries are removed only by reclaimHost(),
 * only when its lease has expired AND the operator says its VMs are gone (`force`). Every deletion is
 * guarded by "the host is still not alive", so a host that comes back mid-reclaim keeps the rest.
 */
import { TapnetError } from '../errors.js';
import { parseIp } from '../ip.js';
import { validateName } from '../validate.js';
import type { Compare, EtcdClient, TxnOp } from './etcd-client.js';
import { parseLease } from './etcd-leases.js';
import { ClusterKeys, segmentSubnet, validateHostName } from './keys.js';
import type { EtcdSession } from './session.js';

/** The persistent description of a host. */
export interface HostInfo {
  name: string;
  /** Its underlay (VTEP) address. */
  vtep: string;
  joinedAt: string;
  /** The lease of its last session (hex). */
  leaseId: string;
  /** Set when the host left cleanly but still has records. */
  leftAt?: string;
}

/** A host's liveness as the cluster sees it. */
export type HostState = 'alive' | 'expired' | 'left';

/** One line of `tapnet cluster status`. */
export interface HostStatus {
  name: string;
  vtep: string;
  state: HostState;
  leaseId: string;
  /** Seconds left on the lease (alive hosts). */
  ttl?: number;
  /** VM records the host has in the store. */
  vms: number;
  joinedAt: string;
  leftAt?: string;
}

/** What `tapnet cluster status` prints. */
export interface ClusterStatus {
  endpoint: string;
  prefix: string;
  revision: number;
  hosts: HostStatus[];
  networks: Array<Record<string, unknown> & { name: string }>;
}

/** Options of join(). */
export interface JoinOptions {
  client: EtcdClient;
  session: EtcdSession;
  host: string;
  /** This host's underlay address (VXLAN local address, next hop of routed networks). */
  vtep: string;
  prefix?: string;
}

/** This host's membership. Keeps its `alive` key on the session lease, across lease renewals. */
export class ClusterMember {
  private readonly unsubscribe: () => void;
  private left = false;

  private constructor(
    private readonly o: JoinOptions,
    readonly keys: ClusterKeys,
  ) {
    this.unsubscribe = o.session.onRenew(() => this.register());
  }

  /**
   * Register this host. An `alive` key of the same name from another VTEP is ERR_CONFLICT (two machines
   * configured with one name); from the same VTEP it is this host's previous agent, and is taken over.
   */
  static async join(o: JoinOptions): Promise<ClusterMember> {
    validateHostName(o.host);
    parseIp(o.vtep, 'VTEP address');
    const m = new ClusterMember(o, new ClusterKeys(o.prefix));
    try {
      await m.register();
    } catch (e) {
      m.unsubscribe();
      throw e;
    }
    return m;
  }

  get host(): string {
    return this.o.host;
  }

  get vtep(): string {
    return this.o.vtep;
  }

  private async register(): Promise<void> {
    if (this.left) return;
    const { client, session, host, vtep } = this.o;
    const alive = this.keys.alive(host);
    const aliveValue = JSON.stringify({
      leaseId: session.leaseHex,
      vtep,
      pid: process.pid,
      since: new Date().toISOString(),
    });
    const info: HostInfo = {
      name: host,
      vtep,
      joinedAt: new Date().toISOString(),
      leaseId: session.leaseHex,
    };
    const ops: TxnOp[] = [
      { put: { key: alive, value: aliveValue, lease: session.leaseId } },
      { put: { key: this.keys.hostInfo(host), value: JSON.stringify(info) } },
    ];
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await client.txn({
        compare: [{ key: alive, target: 'CREATE', number: 0 }],
        success: ops,
        failure: [{ range: { key: alive } }],
      });
      if (r.succeeded) return;
      const kv = r.responses[0]?.range?.kvs[0];
      if (!kv) continue;
      let other: { vtep?: string; leaseId?: string } = {};
      try {
        other = JSON.parse(kv.value) as typeof other;
      } catch {
        // unreadable: take it over
      }
      if (other.leaseId === session.leaseHex) return;
      if (other.vtep !== undefined && other.vtep !== vtep) {
        throw new TapnetError(
          'ERR_CONFLICT',
          `host name ${host} is in use by a live agent at ${other.vtep} (lease ${other.leaseId}); this agent is at ${vtep}`,
          {
            details: { host, vtep, otherVtep: other.vtep, otherLease: other.leaseId },
          },
        );
      }
      // Our own previous agent (same VTEP): replace its key.
      const t = await client.txn({
        compare: [{ key: alive, target: 'MOD', number: kv.modRevision }],
        success: ops,
      });
      if (t.succeeded) return;
    }
    throw new TapnetError('ERR_CONFLICT', `could not register host ${host}: its alive key kept changing`, {
      details: { host },
    });
  }

  /**
   * Leave cleanly: withdraw this host's overlay entries in every registered network and its `alive` key.
   * The info key goes too when the host has no records left; otherwise it stays, marked left, so its
   * VMs stay visible. The caller then closes the session (revoking the lease).
   */
  async leave(): Promise<{ overlayEntries: number; records: number }> {
    this.left = true;
    this.unsubscribe();
    const { client, host } = this.o;
    let overlayEntries = 0;
    for (const net of await overlayNetworks(client, this.keys, host)) {
      overlayEntries += await client.delete(this.keys.overlayHostDir(net, host), { prefix: true });
    }
    const records = (await client.range(this.keys.recordsDir(host), { prefix: true, countOnly: true })).count;
    await client.delete(this.keys.alive(host));
    const infoKey = this.keys.hostInfo(host);
    if (records === 0) await client.delete(infoKey);
    else {
      const info = (await client.range(infoKey)).kvs[0];
      const v = info
        ? (JSON.parse(info.value) as HostInfo)
        : { name: host, vtep: this.o.vtep, joinedAt: '', leaseId: '' };
      await client.put(infoKey, JSON.stringify({ ...v, leftAt: new Date().toISOString() }));
    }
    return { overlayEntries, records };
  }
}

/**
 * The networks `host` may have overlay entries in: every registered cluster network, and every network
 * its records name (a network whose registration is gone still has its entries withdrawn).
 */
async function overlayNetworks(client: EtcdClient, keys: ClusterKeys, host: string): Promise<string[]> {
  const nets = new Set<string>();
  const dir = keys.networksDir();
  for (const kv of (await client.range(dir, { prefix: true, keysOnly: true })).kvs)
    nets.add(kv.key.slice(dir.length));
  for (const kv of (await client.range(keys.recordsDir(host), { prefix: true })).kvs) {
    try {
      const n = (JSON.parse(kv.value) as { network?: unknown }).network;
      if (typeof n === 'string') nets.add(validateName(n, 'network name'));
    } catch {
      // unreadable record: its network is unknown
    }
  }
  return [...nets];
}

/** Read the membership: every registered host with its lease state and VM count, and the networks. */
export async function clusterStatus(
  client: EtcdClient,
  options: { prefix?: string } = {},
): Promise<ClusterStatus> {
  const keys = new ClusterKeys(options.prefix);
  const hostsDir = keys.hostsDir();
  const infos = await client.range(hostsDir, { prefix: true });
  const aliveDir = keys.aliveDir();
  const alive = new Map<string, { leaseId: string; lease: string }>();
  for (const kv of (await client.range(aliveDir, { prefix: true })).kvs) {
    let leaseId = '';
    try {
      leaseId = String((JSON.parse(kv.value) as { leaseId?: string }).leaseId ?? '');
    } catch {
      // unreadable value: still alive
    }
    alive.set(kv.key.slice(aliveDir.length), { leaseId, lease: kv.lease });
  }
  const hosts: HostStatus[] = [];
  for (const kv of infos.kvs) {
    const [name, leaf] = kv.key.slice(hostsDir.length).split('/');
    if (!name || leaf !== 'info') continue;
    let info: HostInfo;
    try {
      info = JSON.parse(kv.value) as HostInfo;
    } catch {
      info = { name, vtep: '?', joinedAt: '', leaseId: '' };
    }
    const a = alive.get(name);
    const vms = (await client.range(keys.recordsDir(name), { prefix: true, countOnly: true })).count;
    const h: HostStatus = {
      name,
      vtep: info.vtep,
      state: a ? 'alive' : info.leftAt ? 'left' : 'expired',
      leaseId: a?.leaseId || info.leaseId,
      vms,
      joinedAt: info.joinedAt,
      ...(info.leftAt ? { leftAt: info.leftAt } : {}),
    };
    if (a && a.lease !== '0') {
      const t = await client.leaseTimeToLive(a.lease);
      if (t.ttl >= 0) h.ttl = t.ttl;
    }
    hosts.push(h);
  }
  const netDir = keys.networksDir();
  const networks = (await client.range(netDir, { prefix: true })).kvs.map((kv) => {
    try {
      return { ...(JSON.parse(kv.value) as Record<string, unknown>), name: kv.key.slice(netDir.length) };
    } catch {
      return { name: kv.key.slice(netDir.length), unreadable: true };
    }
  });
  return { endpoint: client.endpoint.origin, prefix: keys.prefix, revision: infos.revision, hosts, networks };
}

/** What reclaimHost() removed. */
export interface ReclaimReport {
  host: string;
  records: string[];
  leases: Array<{ network: string; subnet: string; address: string; owner: string }>;
  overlayEntries: number;
  otherKeys: number;
}

/**
 * Free everything a dead host held: its records, address leases, overlay entries, cursors, locks and
 * info. Refused (ERR_CONFLICT) while the host is alive, and unless `force` says its VMs are gone (they
 * were stopped, or the machine is known dead): freeing the addresses of VMs that still run would give
 * them to new VMs elsewhere. Stops (ERR_CONFLICT, with what was done so far) if the host comes back.
 */
export async function reclaimHost(
  client: EtcdClient,
  host: string,
  options: { force?: boolean; prefix?: string } = {},
): Promise<ReclaimReport> {
  const keys = new ClusterKeys(options.prefix);
  validateHostName(host);
  const alive = keys.alive(host);
  const now = (await client.range(alive)).kvs[0];
  if (now) {
    throw new TapnetError(
      'ERR_CONFLICT',
      `host ${host} is alive (its lease is being kept); a live host's addresses are never reclaimed`,
      {
        details: { host, lease: now.lease },
      },
    );
  }
  if (!options.force) {
    throw new TapnetError(
      'ERR_CONFLICT',
      `host ${host} has expired, but its VMs may still run; reclaim only after making sure they are gone, with force`,
      { details: { host, policy: 'lease expired AND force' } },
    );
  }
  const report: ReclaimReport = { host, records: [], leases: [], overlayEntries: 0, otherKeys: 0 };
  const stillDead: Compare = { key: alive, target: 'CREATE', number: 0 };
  const run = async (ops: Array<{ op: TxnOp; guard?: Compare; done: () => void }>): Promise<void> => {
    for (let i = 0; i < ops.length; i += 64) {
      const batch = ops.slice(i, i + 64);
      const r = await client.txn({
        compare: [stillDead, ...batch.flatMap((b) => (b.guard ? [b.guard] : []))],
        success: batch.map((b) => b.op),
      });
      if (r.succeeded) {
        for (const b of batch) b.done();
        continue;
      }
      if ((await client.range(alive)).kvs.length > 0) {
        throw new TapnetError('ERR_CONFLICT', `host ${host} came back while being reclaimed; stopped`, {
          details: { host, partial: report },
        });
      }
      // A guarded key changed since we read it: redo this batch key by key, skipping what moved.
      for (const b of batch) {
        const one = await client.txn({
          compare: [stillDead, ...(b.guard ? [b.guard] : [])],
          success: [b.op],
        });
        if (one.succeeded) b.done();
      }
    }
  };
  const ops: Array<{ op: TxnOp; guard?: Compare; done: () => void }> = [];
  const recDir = keys.recordsDir(host);
  for (const kv of (await client.range(recDir, { prefix: true, keysOnly: true })).kvs) {
    const vmId = kv.key.slice(recDir.length);
    ops.push({
      op: { delete: { key: kv.key } },
      guard: { key: kv.key, target: 'MOD', number: kv.modRevision },
      done: () => void report.records.push(vmId),
    });
  }
  const poolsDir = keys.poolsDir();
  for (const p of (await client.range(poolsDir, { prefix: true, keysOnly: true })).kvs) {
    const [network, seg] = p.key.slice(poolsDir.length).split('/');
    if (!network || !seg) continue;
    let subnet: string;
    try {
      subnet = segmentSubnet(seg);
    } catch {
      continue;
    }
    const ref = { network, subnet };
    const dir = keys.leasesDir(ref);
    for (const kv of (await client.range(dir, { prefix: true })).kvs) {
      const v = parseLease(kv.value);
      if (v?.host !== host) continue;
      const address = kv.key.slice(dir.length);
      ops.push({
        op: { delete: { key: kv.key } },
        guard: { key: kv.key, target: 'MOD', number: kv.modRevision },
        done: () => void report.leases.push({ network, subnet, address, owner: v.owner }),
      });
    }
    ops.push({ op: { delete: { key: keys.cursor(ref, host) } }, done: () => void report.otherKeys++ });
  }
  for (const net of await overlayNetworks(client, keys, host)) {
    const n = (await client.range(keys.overlayHostDir(net, host), { prefix: true, countOnly: true })).count;
    ops.push({
      op: { delete: { key: keys.overlayHostDir(net, host), prefix: true } },
      done: () => {
        report.overlayEntries += n;
      },
    });
  }
  for (const dir of [keys.quarantineDir(host), keys.locksDir(host)])
    ops.push({ op: { delete: { key: dir, prefix: true } }, done: () => void report.otherKeys++ });
  ops.push({ op: { delete: { key: keys.hostInfo(host) } }, done: () => void report.otherKeys++ });
  await run(ops);
  return report;
}
