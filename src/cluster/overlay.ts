/**
 * The VXLAN overlay of networks with `scope: cluster`. Each host publishes, for every ready VM of such a
 * network, `overlay/<network>/<host>/<vmId>` → {mac, ipv4?, ipv6?, vtep} — written in the same etcd
 * transaction as the VM's record (see vmOverlayPublisher) — and every host's OverlayAgent watches
 * `overlay/<network>/` and programs the other hosts' VMs into its kernel (overlay-kernel.ts).
 *
 * One VNI per network, registered once for the cluster (`networks/<name>`, `vnis/<vni>`), so every host
 * agrees on the VNI, subnets, topology and MTU or refuses to start (ERR_CONFIG). The overlay MTU is the
 * underlay's − 50 (IPv4 underlay; − 70 over IPv6): the network's MTU — given to TAPs, the bridge and
 * guests — must not exceed it.
 *
 * Entries are not tied to any lease: a host whose agent is dead or cut off from etcd keeps its VMs
 * reachable from the others. They go when their VM is released, when the host leaves cleanly, or when
 * an operator reclaims the host.
 */
import { isTapnetError, TapnetError } from '../errors.js';
import { parseIp } from '../ip.js';
import { getLink } from '../net/link.js';
import type { NetlinkSocket } from '../netlink/socket.js';
import { validateInt, validateName } from '../validate.js';
import type { EtcdClient } from './etcd-client.js';
import type { EtcdWatch, WatchEvent } from './etcd-watch.js';
import { ClusterKeys, validateHostName } from './keys.js';
import { parseOverlayEntry } from './overlay-entry.js';
import {
  deriveVni,
  ensureVxlanDevice,
  type OverlayTarget,
  overlayMtu,
  programRemotes,
  type RemoteVm,
  readOverlayState,
  VXLAN_PORT,
} from './overlay-kernel.js';

/** A network that spans the cluster. */
export interface ClusterNetwork {
  name: string;
  topology: 'bridge' | 'routed';
  /** The network's bridge (bridge topology); it must exist (NetworkManager.ensureNetwork). */
  bridge: string;
  subnet4?: string;
  subnet6?: string;
  /** The network's MTU (TAPs, bridge, guests): at most the overlay MTU. */
  mtu: number;
  /** Default: derived from the name (deriveVni). */
  vni?: number;
}

/** Options of an OverlayAgent. */
export interface OverlayOptions {
  client: EtcdClient;
  /** A netlink socket in the host's namespace. */
  nl: NetlinkSocket;
  host: string;
  /** This host's underlay address. */
  vtep: string;
  /** The underlay device (VXLAN `dev`, and its MTU bounds the overlay's). */
  underlay: string;
  prefix?: string;
  /** VXLAN UDP port. Default 4789. */
  port?: number;
}

export {
  type OverlayEntry,
  type OverlayVmRecord,
  parseOverlayEntry,
  vmOverlayPublisher,
} from './overlay-entry.js';

/** Per-network state of an agent. */
export interface OverlayNetworkStatus {
  network: string;
  vni: number;
  topology: 'bridge' | 'routed';
  device?: string;
  mtu: number;
  /** Remote VMs programmed now. */
  remotes: number;
  /** Hosts those VMs are on. */
  remoteHosts: string[];
  /** Revision of etcd applied so far. */
  revision: number;
  connected: boolean;
  /** Kernel operations that failed since start. */
  failures: number;
  lastError?: string;
}

interface NetState {
  net: ClusterNetwork;
  vni: number;
  target: OverlayTarget;
  dir: string;
  /** Programmed remote VMs, by `<host>/<vmId>`. */
  applied: Map<string, RemoteVm>;
  watch?: EtcdWatch;
  revision: number;
  connected: boolean;
  failures: number;
  lastError?: string;
}

/** Keeps this host's kernel in step with the other hosts' VMs, for each cluster network. */
export class OverlayAgent {
  private readonly keys: ClusterKeys;
  private readonly nets = new Map<string, NetState>();
  private closed = false;

  private constructor(private readonly o: OverlayOptions) {
    this.keys = new ClusterKeys(o.prefix);
  }

  /**
   * Register the networks cluster-wide (or check they match the registration), create their VXLAN
   * devices, program every remote VM and start watching. ERR_CONFIG on a mismatch with other hosts or an
   * MTU above the overlay's; ERR_UNAVAILABLE when etcd cannot be reached.
   */
  static async start(o: OverlayOptions, networks: ClusterNetwork[]): Promise<OverlayAgent> {
    validateHostName(o.host);
    const vtepFamily = parseIp(o.vtep, 'VTEP address').family;
    const underlay = getLink(o.nl, o.underlay);
    const maxMtu = overlayMtu(underlay.mtu ?? 1500, vtepFamily);
    const agent = new OverlayAgent(o);
    try {
      for (const net of networks) {
        validateName(net.name, 'network name');
        const vni = validateInt(net.vni ?? deriveVni(net.name), 'VNI', 1, 0xffffff);
        if (net.mtu > maxMtu) {
          throw new TapnetError(
            'ERR_CONFIG',
            `network ${net.name}: MTU ${net.mtu} exceeds the overlay MTU ${maxMtu} (underlay ${o.underlay} MTU ${underlay.mtu} − VXLAN overhead)`,
            {
              details: { network: net.name, mtu: net.mtu, overlayMtu: maxMtu },
            },
          );
        }
        await agent.register(net, vni);
        const target = agent.attach(net, vni, underlay.index);
        const st: NetState = {
          net,
          vni,
          target,
          dir: agent.keys.overlayDir(net.name),
          applied: new Map(),
          revision: 0,
          connected: false,
          failures: 0,
        };
        agent.nets.set(net.name, st);
        st.revision = await agent.resync(st);
        agent.watch(st);
      }
      // Watches confirmed by etcd, or ERR_UNAVAILABLE after the client's retry budget.
      let timer: NodeJS.Timeout | undefined;
      const gone = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new TapnetError('ERR_UNAVAILABLE', 'etcd did not confirm the overlay watches; retry later'),
            ),
          o.client.retryBudgetMs,
        );
      });
      try {
        await Promise.race([Promise.all([...agent.nets.values()].map((s) => s.watch?.ready)), gone]);
      } finally {
        clearTimeout(timer);
      }
    } catch (e) {
      agent.close();
      throw e;
    }
    return agent;
  }

  /** The kernel side of a network: its VXLAN device on its bridge (bridge topology). */
  private attach(net: ClusterNetwork, vni: number, underlayIndex: number): OverlayTarget {
    const target: OverlayTarget = { topology: net.topology };
    if (net.topology === 'bridge') {
      const br = getLink(this.o.nl, net.bridge);
      const vx = ensureVxlanDevice(this.o.nl, {
        vni,
        local: this.o.vtep,
        underlayIndex,
        port: this.o.port ?? VXLAN_PORT,
        mtu: net.mtu,
        bridgeIndex: br.index,
      });
      target.vxIndex = vx.index;
      target.bridgeIndex = br.index;
    }
    return target;
  }

  /**
   * Put the kernel side back after something removed it (a bridge re-created by reconcile, a deleted
   * VXLAN device, flushed neighbours): re-attach every network and converge its entries to etcd. Call
   * after NetworkManager.reconcile().
   */
  async repair(): Promise<void> {
    const underlay = getLink(this.o.nl, this.o.underlay);
    for (const st of this.nets.values()) {
      await st.watch?.drain();
      st.target = this.attach(st.net, st.vni, underlay.index);
      st.revision = Math.max(st.revision, await this.resync(st));
    }
  }

  /** Make `networks/<name>` and `vnis/<vni>` say this network, or check they already do. */
  private async register(net: ClusterNetwork, vni: number): Promise<void> {
    const def = {
      vni,
      topology: net.topology,
      mtu: net.mtu,
      ...(net.subnet4 ? { subnet4: net.subnet4 } : {}),
      ...(net.subnet6 ? { subnet6: net.subnet6 } : {}),
    };
    const nkey = this.keys.network(net.name);
    const vkey = this.keys.vni(vni);
    const r = await this.o.client.txn(
      {
        compare: [
          { key: nkey, target: 'CREATE', number: 0 },
          { key: vkey, target: 'CREATE', number: 0 },
        ],
        success: [
          { put: { key: nkey, value: JSON.stringify(def) } },
          { put: { key: vkey, value: net.name } },
        ],
        failure: [{ range: { key: nkey } }, { range: { key: vkey } }],
      },
      { idempotent: true },
    );
    if (r.succeeded) return;
    const existing = r.responses[0]?.range?.kvs[0]?.value;
    const vniOwner = r.responses[1]?.range?.kvs[0]?.value;
    if (vniOwner !== undefined && vniOwner !== net.name) {
      throw new TapnetError(
        'ERR_CONFIG',
        `network ${net.name}: VNI ${vni} is already used by network ${vniOwner}; set an explicit vni`,
        {
          details: { network: net.name, vni, usedBy: vniOwner },
        },
      );
    }
    if (existing !== undefined && existing !== JSON.stringify(def)) {
      throw new TapnetError(
        'ERR_CONFIG',
        `network ${net.name} is defined differently in the cluster: ${existing}; here: ${JSON.stringify(def)}`,
        {
          details: { network: net.name, cluster: existing, local: def },
        },
      );
    }
    if (existing === undefined || vniOwner === undefined) {
      // One of the two keys is missing (a half-removed network): write both again.
      await this.o.client.txn({
        compare: [],
        success: [
          { put: { key: nkey, value: JSON.stringify(def) } },
          { put: { key: vkey, value: net.name } },
        ],
      });
    }
  }

  /** Read every entry of the network, converge the kernel to it (removing leftovers), return the revision. */
  private async resync(st: NetState): Promise<number> {
    const r = await this.o.client.range(st.dir, { prefix: true });
    const desired = new Map<string, RemoteVm>();
    for (const kv of r.kvs) {
      const [host, vmId] = kv.key.slice(st.dir.length).split('/');
      if (!host || !vmId || host === this.o.host) continue;
      const e = parseOverlayEntry(kv.value);
      if (e) desired.set(`${host}/${vmId}`, e);
    }
    const subnets = [st.net.subnet4, st.net.subnet6].filter((s): s is string => s !== undefined);
    const k = readOverlayState(this.o.nl, st.target, subnets);
    const macs = new Set([...desired.values()].map((v) => v.mac));
    const addrs = new Set([...desired.values()].flatMap((v) => [v.ipv4, v.ipv6].filter(Boolean) as string[]));
    const stale: RemoteVm[] = [];
    for (const m of new Set([...k.fdbSelf, ...k.fdbMaster]))
      if (!macs.has(m)) stale.push({ mac: m, vtep: this.o.vtep });
    for (const [a, m] of k.neighbours)
      if (!addrs.has(a))
        stale.push({ mac: m, vtep: this.o.vtep, ...(a.includes(':') ? { ipv6: a } : { ipv4: a }) });
    for (const a of k.routes)
      if (!addrs.has(a))
        stale.push({
          mac: '02:00:00:00:00:00',
          vtep: this.o.vtep,
          ...(a.includes(':') ? { ipv6: a } : { ipv4: a }),
        });
    this.apply(st, programRemotes(this.o.nl, st.target, stale, false));
    this.apply(st, programRemotes(this.o.nl, st.target, [...desired.values()], true));
    st.applied = desired;
    return r.revision;
  }

  private apply(st: NetState, failures: TapnetError[]): void {
    if (failures.length === 0) return;
    st.failures += failures.length;
    st.lastError = failures[0]!.message;
  }

  private watch(st: NetState): void {
    st.watch = this.o.client.watch(st.dir, {
      prefix: true,
      startRevision: st.revision + 1,
      onEvents: (events, revision) => {
        this.onEvents(st, events);
        st.revision = Math.max(st.revision, revision);
      },
      onResync: async () => {
        st.revision = await this.resync(st);
        return st.revision;
      },
      onState: (state, error) => {
        st.connected = state === 'connected';
        if (error) st.lastError = error.message;
      },
    });
  }

  /** Apply a batch of watch events: removals first, then additions, each in one netlink batch. */
  private onEvents(st: NetState, events: WatchEvent[]): void {
    if (this.closed) return;
    const removed: RemoteVm[] = [];
    const added = new Map<string, RemoteVm>();
    for (const ev of events) {
      const [host, vmId] = ev.kv.key.slice(st.dir.length).split('/');
      if (!host || !vmId || host === this.o.host) continue;
      const id = `${host}/${vmId}`;
      const old = st.applied.get(id);
      const now = ev.type === 'put' ? parseOverlayEntry(ev.kv.value) : undefined;
      if (old && now && sameVm(old, now)) continue;
      if (old) {
        removed.push(old);
        st.applied.delete(id);
        added.delete(id);
      }
      if (now) {
        st.applied.set(id, now);
        added.set(id, now);
      }
    }
    if (removed.length === 0 && added.size === 0) return;
    // What a removal took away but another entry still claims (same MAC or address) is put back.
    const touched = new Set(removed.flatMap((r) => [r.mac, r.ipv4, r.ipv6].filter(Boolean) as string[]));
    for (const [id, vm] of st.applied)
      if ([vm.mac, vm.ipv4, vm.ipv6].some((x) => x && touched.has(x))) added.set(id, vm);
    this.apply(st, programRemotes(this.o.nl, st.target, removed, false));
    this.apply(st, programRemotes(this.o.nl, st.target, [...added.values()], true));
  }

  /** Wait until every event received so far is programmed. */
  async settle(): Promise<void> {
    await Promise.all([...this.nets.values()].map((s) => s.watch?.drain()));
  }

  /** What each network looks like from here. */
  status(): OverlayNetworkStatus[] {
    return [...this.nets.values()].map((st) => ({
      network: st.net.name,
      vni: st.vni,
      topology: st.net.topology,
      ...(st.net.topology === 'bridge' ? { device: `tnvx${st.vni}` } : {}),
      mtu: st.net.mtu,
      remotes: st.applied.size,
      remoteHosts: [...new Set([...st.applied.keys()].map((k) => k.slice(0, k.indexOf('/'))))].sort(),
      revision: st.revision,
      connected: st.connected,
      failures: st.failures,
      ...(st.lastError ? { lastError: st.lastError } : {}),
    }));
  }

  /**
   * Stop watching. The kernel entries stay: VMs keep reaching each other while the agent is away (a
   * restarted agent converges them again).
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const st of this.nets.values()) st.watch?.close();
  }
}

function sameVm(a: RemoteVm, b: RemoteVm): boolean {
  return a.mac === b.mac && a.vtep === b.vtep && a.ipv4 === b.ipv4 && a.ipv6 === b.ipv6;
}

/** True when `e` means "etcd cannot be reached right now" (retry later). */
export function isRetryable(e: unknown): boolean {
  return isTapnetError(e, 'ERR_UNAVAILABLE');
}
