/**
 * The NetworkManager: one call gives a VM its whole network (TAP, addresses, firewall elements, record);
 * one call takes it back. The only module that combines net, ipam, store, firewall and guest.
 *
 * Crash safety without an fsync per VM: everything `ensure` creates before the VM's record is written is
 * attributable to the VM by itself — the lease's owner is the VM id, the TAP's name is derived from it and
 * its alias says `tapnet:<vmId>`, firewall elements are keyed by the TAP — so reconcile removes what a
 * crash left without a record. The record is written last ('ready'); release first marks it 'releasing'
 * and deletes it last, so a crashed release is finished by reconcile (never resurrected).
 */

import { existsSync } from 'node:fs';
import { isTapnetError, TapnetError, teardownError, toTapnetError } from '../errors.js';
import { createFirewall } from '../firewall/index.js';
import type { Firewall, FirewallNetwork, FirewallVm } from '../firewall/types.js';
import { validateUnicastMac } from '../ip.js';
import { Ipam, type PoolRequest } from '../ipam/ipam.js';
import type { PoolSpec } from '../ipam/layout.js';
import { deleteLink, findLink } from '../net/link.js';
import { type Netns, openNetns } from '../net/netns.js';
import { closeTapFds, createTap, openTap } from '../net/tap.js';
import { NetlinkSocket } from '../netlink/socket.js';
import { channels } from '../observe/channels.js';
import { openStore } from '../store/index.js';
import type { HeldLock, LeaseStore, LockService, RecordSchema, VmRecordStore } from '../store/types.js';
import { validateInt, validateVmId } from '../validate.js';
import { CniModes, cniAdd, cniDel } from './cni-mode.js';
import {
  type ManagerConfigInput,
  type ResolvedConfig,
  type ResolvedNetwork,
  resolveConfig,
} from './config.js';
import { faultPoint } from './faults.js';
import { toNetworkInfo } from './info.js';
import type { BandwidthLimits, Vmm } from './limits.js';
import { guestMac, scratchGroup, tapAlias, tapName } from './names.js';
import { attachRouted, ensureNetworkKernel, unknownNetwork } from './network.js';
import { LinkReaper } from './reaper.js';
import { reconcile } from './reconcile.js';
import { repairCount, repairsByKind } from './report.js';
import type {
  EnsureOptions,
  ManagerMetrics,
  NetworkInfo,
  ReconcileReport,
  ReleaseOptions,
  VmRecord,
} from './types.js';
import {
  checkVmLimits,
  installBandwidth,
  installPolicy,
  storedPolicy,
  uninstallBandwidth,
  uninstallPolicy,
} from './vm-policy.js';

export const VM_RECORD_SCHEMA: RecordSchema<VmRecord> = {
  version: 1,
  validate: (raw) => {
    for (const k of ['network', 'tap', 'mac', 'topology', 'tapMode', 'createdAt'] as const) {
      if (typeof raw[k] !== 'string') throw new Error(`field ${k} missing`);
    }
    return raw as unknown as VmRecord;
  },
};

/**
 * Where a manager keeps its records, leases and locks: the local store by default; a cluster backend
 * (etcd) or another local backend can be injected through ManagerOptions.store.
 */
export interface ManagerStore {
  records: VmRecordStore<VmRecord>;
  leases: LeaseStore;
  locks: LockService;
  close?(): void | Promise<void>;
}

/** Options for opening a manager beyond the configuration. */
export interface ManagerOptions {
  /**
   * Use this store (built with VM_RECORD_SCHEMA) instead of the local one in config.stateDir. The manager
   * does not close an injected store.
   */
  store?: ManagerStore;
  /** Use this firewall driver instead of the configured one (tests, embedding). */
  firewall?: Firewall;
  /** Run reconcile() while opening (the daemon and CLI `gc` do; library users choose). Default false. */
  reconcile?: boolean;
}

interface Step {
  name: string;
  undo: () => void | Promise<void>;
}

export class NetworkManager {
  private readonly networkReady = new Set<string>();
  private readonly bridgeIndex = new Map<string, number>();
  private readonly counters: ManagerMetrics = {
    ensures: { ok: 0, failed: 0, existing: 0 },
    releases: { ok: 0, failed: 0, unknown: 0 },
    activeVms: 0,
    reconciles: 0,
    repairs: 0,
  };
  private closed = false;
  /** CNI runtimes for networks in CNI mode; exec'd plugins start in the managed namespace (their host). */
  readonly cni = new CniModes(() => this.ns?.fd);

  private constructor(
    readonly config: ResolvedConfig,
    /** The namespace tapnet manages (undefined: the process's own). */
    readonly ns: Netns | undefined,
    /** Synchronous netlink socket in that namespace. */
    readonly nl: NetlinkSocket,
    private readonly slowNl: NetlinkSocket,
    readonly store: ManagerStore,
    private readonly ownsStore: boolean,
    readonly ipam: Ipam,
    readonly firewall: Firewall,
    private readonly reaper: LinkReaper,
  ) {}

  /** Open a manager over a configuration (validated; ERR_CONFIG names the bad key). */
  static async open(input: ManagerConfigInput = {}, options: ManagerOptions = {}): Promise<NetworkManager> {
    const config = resolveConfig(input);
    const ns = config.netns ? openNetns(config.netns) : undefined;
    const nsFd = ns?.fd;
    let nl: NetlinkSocket | undefined;
    let slow: NetlinkSocket | undefined;
    let firewall: Firewall | undefined;
    try {
      nl = NetlinkSocket.open(nsFd !== undefined ? { nsFd } : {});
      slow = NetlinkSocket.open(nsFd !== undefined ? { nsFd } : {});
      const store: ManagerStore =
        options.store ??
        (await openStore<VmRecord>({
          backend: config.storeBackend,
          dir: config.stateDir,
          schema: VM_RECORD_SCHEMA,
        }));
      firewall = options.firewall ?? createFirewall(config.firewall, nsFd !== undefined ? { nsFd } : {});
      const reaper = new LinkReaper(nl, slow, scratchGroup());
      const m = new NetworkManager(
        config,
        ns,
        nl,
        slow,
        store,
        !options.store,
        new Ipam(store.leases),
        firewall,
        reaper,
      );
      if (options.reconcile) await m.reconcile();
      return m;
    } catch (e) {
      firewall?.close();
      slow?.close();
      nl?.close();
      ns?.close();
      throw e;
    }
  }

  /** The resolved network `name` (default network when undefined). ERR_NOT_FOUND when unknown. */
  network(name?: string): ResolvedNetwork {
    const n = name ?? this.config.defaultNetwork;
    const net = this.config.networks.get(n);
    if (!net) throw unknownNetwork(n, [...this.config.networks.keys()]);
    return net;
  }

  /** Pools of a network for the IPAM. */
  pools(net: ResolvedNetwork): { v4?: PoolSpec; v6?: PoolSpec } {
    return {
      ...(net.subnet4 ? { v4: { network: net.name, subnet: net.subnet4, gateway: net.gateway4! } } : {}),
      ...(net.subnet6 ? { v6: { network: net.name, subnet: net.subnet6, gateway: net.gateway6! } } : {}),
    };
  }

  /** The firewall's view of a network. */
  firewallNetwork(net: ResolvedNetwork): FirewallNetwork {
    return {
      name: net.name,
      topology: net.topology,
      bridge: net.bridge,
      tapPrefix: net.tapPrefix,
      ...(net.subnet4 ? { subnet4: net.subnet4 } : {}),
      ...(net.subnet6 ? { subnet6: net.subnet6 } : {}),
      nat: net.nat,
      isolate: net.isolate,
    };
  }

  /** The firewall's view of a VM. */
  firewallVm(r: VmRecord): FirewallVm {
    return {
      network: r.network,
      ifname: r.tap,
      mac: r.mac,
      ...(r.ipv4 ? { ipv4: r.ipv4 } : {}),
      ...(r.ipv6 ? { ipv6: r.ipv6 } : {}),
    };
  }

  /** Make a network's bridge, addresses, sysctls and firewall base exist (once per process, or forced). */
  ensureNetwork(net: ResolvedNetwork, force = false): number {
    if (net.mode === 'cni') return 0; // the conflist's plugins own the host side
    if (!force && this.networkReady.has(net.name)) return this.bridgeIndex.get(net.name)!;
    const index = ensureNetworkKernel(this.nl, this.ns, net);
    this.firewall.ensureNetwork(this.firewallNetwork(net), { force });
    this.bridgeIndex.set(net.name, index);
    this.networkReady.add(net.name);
    return index;
  }

  private check(): void {
    if (this.closed) throw new TapnetError('ERR_INTERNAL', 'the NetworkManager is closed');
  }

  /**
   * Give `vmId` its network, or return the one it has (idempotent). On failure everything this call did
   * is undone before the error is thrown.
   */
  async ensure(vmId: string, opts: EnsureOptions = {}): Promise<NetworkInfo> {
    this.check();
    const t0 = performance.now();
    validateVmId(vmId);
    const net = this.network(opts.network);
    const mac = opts.mac !== undefined ? validateUnicastMac(opts.mac, 'mac') : guestMac(net.name, vmId);
    const queues = validateInt(opts.queues ?? 1, 'queues', 1, 256);
    if (opts.tapUid !== undefined) validateInt(opts.tapUid, 'tapUid', 0, 0xfffffffe);
    if (opts.tapGid !== undefined) validateInt(opts.tapGid, 'tapGid', 0, 0xfffffffe);
    const tapMode = opts.tap ?? 'persistent';
    if (tapMode !== 'persistent' && tapMode !== 'fd') {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `tap must be "persistent" or "fd", not ${JSON.stringify(tapMode)}`,
      );
    }
    const limits = checkVmLimits(opts);
    if (net.mode === 'cni' && (limits.policy || limits.bandwidth)) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `network ${net.name} is in CNI mode: policies and limits come from its conflist's plugins (firewall, bandwidth)`,
      );
    }
    const lock = await this.store.locks.acquire('vm', vmId, opts.signal ? { signal: opts.signal } : {});
    let failed = false;
    try {
      faultPoint('ensure:locked'); // test builds only: TAPNET_FAULTS (faults.ts)
      const existing = await this.store.records.get(vmId);
      if (existing && existing.state === 'ready') {
        if (existing.network !== net.name && opts.network !== undefined) {
          throw new TapnetError('ERR_CONFLICT', `VM ${vmId} already has a network on ${existing.network}`, {
            details: { vmId, network: existing.network },
          });
        }
        const info = await this.adoptExisting(existing, opts);
        this.counters.ensures.existing++;
        if (channels.ensure.hasSubscribers) {
          channels.ensure.publish({
            vmId,
            network: info.network,
            mode: info.mode,
            outcome: 'existing',
            durationMs: performance.now() - t0,
          });
        }
        return info;
      }
      if (existing) await this.finishRelease(existing); // a crashed release: finish it first
      const info =
        net.mode === 'cni'
          ? await this.createCni(vmId, net, { ...opts, tap: tapMode })
          : await this.create(vmId, net, { ...opts, mac, queues, tap: tapMode });
      this.counters.ensures.ok++;
      this.counters.lastEnsureMs = performance.now() - t0;
      if (channels.ensure.hasSubscribers) {
        channels.ensure.publish({
          vmId,
          network: info.network,
          mode: info.mode,
          outcome: 'created',
          durationMs: this.counters.lastEnsureMs,
        });
      }
      return info;
    } catch (e) {
      this.counters.ensures.failed++;
      if (channels.ensure.hasSubscribers) {
        channels.ensure.publish({
          vmId,
          network: net.name,
          mode: net.mode,
          outcome: 'error',
          code: toTapnetError(e).code,
          durationMs: performance.now() - t0,
        });
      }
      failed = true;
      throw e;
    } finally {
      // A failed ensure leaves no record: its lock file can go (ids change with every VM).
      lock.release({ forget: failed });
    }
  }

  /** Existing VM: verify its TAP (re-create a vanished persistent one), hand out fds when asked. */
  private async adoptExisting(r: VmRecord, opts: EnsureOptions): Promise<NetworkInfo> {
    const net = this.network(r.network);
    if (r.mode === 'cni') {
      if (!r.netns || !existsSync(r.netns) || !this.cniTapExists(r)) {
        // Its namespace or TAP is gone: start over cleanly.
        await this.finishRelease(r);
        return this.createCni(r.vmId, net, { ...opts, tap: opts.tap ?? r.tapMode });
      }
      const info = toNetworkInfo(r, net);
      if (opts.tap === 'fd') info.tapFds = this.openCniTap(r);
      return info;
    }
    const info = toNetworkInfo(r, net, this.ns?.path);
    const link = findLink(this.nl, r.tap);
    if (!link) {
      if (r.tapMode === 'fd') {
        // The VMM holding the fds is gone: this VM's network is dead. Start over cleanly.
        await this.finishRelease(r);
        return this.create(r.vmId, net, {
          ...opts,
          mac: r.mac,
          queues: r.queues,
          tap: 'fd',
          ...(r.ipv4 ? { ipv4: r.ipv4 } : {}),
          ...(r.ipv6 ? { ipv6: r.ipv6 } : {}),
        });
      }
      await this.repairTap(r);
      this.counters.repairs++;
    }
    if (opts.tap === 'fd' && r.tapMode === 'persistent') {
      info.tapFds = openTap(r.tap, {
        ...(this.ns ? { nsFd: this.ns.fd } : {}),
        vnetHdr: r.vnetHdr,
        queues: r.queues,
      }).fds;
    }
    return info;
  }

  /** Add the firewall elements of every ready direct-mode VM again (one batch; adding what exists is a no-op). */
  async readdFirewallElements(): Promise<void> {
    const { records } = await this.store.records.list();
    const ready = records.filter(
      (r) => r.state === 'ready' && r.mode !== 'cni' && this.config.networks.has(r.network),
    );
    if (ready.length) this.firewall.addVms(ready.map((r) => this.firewallVm(r)));
  }

  /** Re-create a ready VM's persistent TAP and its attachments (after a reboot or a deletion behind our back). */
  async repairTap(r: VmRecord): Promise<void> {
    const net = this.network(r.network);
    const bridgeIndex = this.ensureNetwork(net);
    this.makeTap(r, net, bridgeIndex);
    faultPoint('repair:after-tap'); // test builds only: TAPNET_FAULTS (faults.ts)
    this.firewall.addVm(this.firewallVm(r));
  }

  private makeTap(r: VmRecord, net: ResolvedNetwork, bridgeIndex: number): number[] {
    const routed = net.topology === 'routed';
    const tap = createTap(
      {
        name: r.tap,
        ...(this.ns ? { nsFd: this.ns.fd } : {}),
        persistent: r.tapMode === 'persistent',
        vnetHdr: r.vnetHdr,
        queues: r.queues,
        ...(r.tapUid !== undefined ? { owner: r.tapUid } : {}),
        ...(r.tapGid !== undefined ? { group: r.tapGid } : {}),
        ...(routed ? {} : { master: bridgeIndex }),
        mtu: net.mtu,
        up: true,
        alias: tapAlias(r.vmId),
        // Out of any reaper's group: a TAP of this name that a crashed process had doomed (and left) is
        // taken over here, and must not go with that group if its number comes round again.
        linkGroup: 0,
        // Bridge ports and IPv4-only routed TAPs need no IPv6 on the host side (routed IPv6 uses fe80::1).
        disableIpv6: !routed || !r.ipv6,
      },
      this.nl,
    );
    if (routed) {
      try {
        const index = findLink(this.nl, r.tap)?.index;
        if (!index) throw new TapnetError('ERR_LINK_NOT_FOUND', `TAP ${r.tap} vanished while being set up`);
        attachRouted(this.nl, this.ns, r.tap, index, {
          ...(r.ipv4 ? { ipv4: `${r.ipv4}/32` } : {}),
          ...(r.ipv6 ? { ipv6: `${r.ipv6}/128` } : {}),
        });
      } catch (e) {
        if (tap.fds.length) void closeTapFds(tap.fds);
        // A persistent TAP outlives its fds: delete it, or it leaks.
        if (r.tapMode === 'persistent') {
          try {
            deleteLink(this.nl, r.tap);
          } catch {
            // reconcile removes it (it has no record)
          }
        }
        throw e;
      }
    }
    return tap.fds;
  }

  /**
   * makeTap, re-resolving the network once when the cached bridge is gone (deleted behind our back: its
   * ifindex is stale); the network is then re-applied (bridge, addresses, firewall base).
   */
  private makeTapOnNetwork(r: VmRecord, net: ResolvedNetwork, bridgeIndex: number): number[] {
    try {
      return this.makeTap(r, net, bridgeIndex);
    } catch (e) {
      const staleBridge =
        net.topology === 'bridge' &&
        isTapnetError(e) &&
        (e.errno === 'EINVAL' || e.errno === 'ENODEV') &&
        !findLink(this.nl, bridgeIndex);
      if (!staleBridge) throw e;
      findLink(this.nl, r.tap) && deleteLink(this.nl, r.tap);
      return this.makeTap(r, net, this.ensureNetwork(net, true));
    }
  }

  /** CNI mode: namespace + conflist ADD, then the record (DEL + namespace removal if the record fails). */
  private async createCni(
    vmId: string,
    net: ResolvedNetwork,
    o: EnsureOptions & { tap: 'persistent' | 'fd' },
  ): Promise<NetworkInfo> {
    if (o.ipv4 || o.ipv6 || o.mac) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `network ${net.name} is in CNI mode: addresses and MACs come from its conflist`,
      );
    }
    const fields = await cniAdd(this.cni, net, vmId, o.signal);
    const record: VmRecord = {
      vmId,
      version: VM_RECORD_SCHEMA.version,
      generation: 0,
      state: 'ready',
      network: net.name,
      topology: 'bridge',
      tapMode: o.tap,
      queues: 1,
      vnetHdr: true,
      createdAt: new Date().toISOString(),
      ...fields,
    };
    let stored: VmRecord;
    try {
      faultPoint('ensure:cni-before-record'); // test builds only: TAPNET_FAULTS (faults.ts)
      stored = await this.store.records.put(record, { expectedGeneration: 0 });
    } catch (e) {
      await cniDel(this.cni, net, vmId).catch(() => undefined);
      throw e;
    }
    faultPoint('ensure:after-record'); // test builds only: TAPNET_FAULTS (faults.ts)
    const info = toNetworkInfo(stored, net);
    if (o.tap === 'fd') info.tapFds = this.openCniTap(stored);
    this.counters.activeVms++;
    return info;
  }

  private openCniTap(r: VmRecord): number[] {
    const ns = openNetns(r.netns!);
    try {
      return openTap(r.tap, { nsFd: ns.fd, vnetHdr: r.vnetHdr }).fds;
    } finally {
      ns.close();
    }
  }

  private cniTapExists(r: VmRecord): boolean {
    try {
      const ns = openNetns(r.netns!);
      try {
        const nl = NetlinkSocket.open({ nsFd: ns.fd });
        try {
          return findLink(nl, r.tap) !== undefined;
        } finally {
          nl.close();
        }
      } finally {
        ns.close();
      }
    } catch {
      return false;
    }
  }

  private async create(
    vmId: string,
    net: ResolvedNetwork,
    o: EnsureOptions & { mac: string; queues: number; tap: 'persistent' | 'fd' },
  ): Promise<NetworkInfo> {
    const applied: Step[] = [];
    const pools = this.pools(net);
    try {
      if (o.signal?.aborted) throw new TapnetError('ERR_ABORTED', `ensure ${vmId} aborted`);
      const bridgeIndex = this.ensureNetwork(net);
      // 1. Addresses (the lease's owner is the VM id: a crash leaves an attributable orphan).
      const requests: PoolRequest[] = [];
      if (pools.v4) requests.push({ pool: pools.v4, ...(o.ipv4 ? { address: stripPrefix(o.ipv4) } : {}) });
      if (pools.v6) requests.push({ pool: pools.v6, ...(o.ipv6 ? { address: stripPrefix(o.ipv6) } : {}) });
      if (o.ipv4 && !pools.v4)
        throw new TapnetError('ERR_INVALID_ARGUMENT', `network ${net.name} has no IPv4 subnet`);
      if (o.ipv6 && !pools.v6)
        throw new TapnetError('ERR_INVALID_ARGUMENT', `network ${net.name} has no IPv6 subnet`);
      const leases = await this.ipam.allocateAll(vmId, requests);
      applied.push({
        name: 'release addresses',
        undo: async () =>
          void (await this.ipam.releaseAll(
            vmId,
            requests.map((r) => r.pool),
          )),
      });
      faultPoint('ensure:after-leases'); // test builds only: TAPNET_FAULTS (faults.ts)
      const record: VmRecord = {
        vmId,
        version: VM_RECORD_SCHEMA.version,
        generation: 0,
        state: 'ready',
        network: net.name,
        topology: net.topology,
        tap: tapName(net.tapPrefix, net.name, vmId),
        mac: o.mac,
        tapMode: o.tap,
        queues: o.queues,
        vnetHdr: o.vnetHdr ?? true,
        createdAt: new Date().toISOString(),
        ...(o.tapUid !== undefined ? { tapUid: o.tapUid } : {}),
        ...(o.tapGid !== undefined ? { tapGid: o.tapGid } : {}),
        ...(o.policy !== undefined && o.policy !== null
          ? { policy: storedPolicy(checkVmLimits({ policy: o.policy }).policy)! }
          : {}),
        ...(o.bandwidth
          ? { bandwidth: checkVmLimits({ bandwidth: o.bandwidth }).bandwidth!, vmm: o.vmm ?? 'qemu' }
          : {}),
      };
      for (const l of leases) {
        if (l.family === 4) record.ipv4 = l.address;
        else record.ipv6 = l.address;
      }
      if (o.signal?.aborted) throw new TapnetError('ERR_ABORTED', `ensure ${vmId} aborted`);
      // 2. The TAP (and for routed networks its routes and sysctls). A TAP of the same name still being
      // deleted (this VM was released a moment ago) must be gone first.
      await this.reaper.whenGone(record.tap);
      const fds = this.makeTapOnNetwork({ ...record }, net, bridgeIndex);
      applied.push({
        name: 'delete TAP',
        undo: async () => {
          if (fds.length) await closeTapFds(fds);
          await this.reaper.delete(record.tap);
        },
      });
      faultPoint('ensure:after-tap'); // test builds only: TAPNET_FAULTS (faults.ts)
      // 3. Firewall elements (anti-spoofing: this port may send only from this MAC and these IPs).
      const rebuilds = this.firewall.rebuilds ?? 0;
      this.firewall.addVm(this.firewallVm(record));
      // The firewall had to rebuild its tables (someone ran `nft flush ruleset`): every other VM's elements
      // are gone too; put them back now rather than at the next reconcile.
      if ((this.firewall.rebuilds ?? 0) !== rebuilds) await this.readdFirewallElements();
      applied.push({
        name: 'remove firewall elements',
        undo: () => this.firewall.removeVm(this.firewallVm(record)),
      });
      // 3b. Policy (its own + its network's) and bandwidth limits.
      if (record.policy || net.policy) {
        await installPolicy(this, record, net);
        applied.push({ name: 'remove policy', undo: () => uninstallPolicy(this, record) });
      }
      const bw = installBandwidth(this, record);
      if (bw) applied.push({ name: 'remove bandwidth limits', undo: () => uninstallBandwidth(this, record) });
      faultPoint('ensure:after-firewall'); // test builds only: TAPNET_FAULTS (faults.ts)
      // 4. The record, last.
      const stored = await this.store.records
        .put(record, { expectedGeneration: 0 })
        .catch(async (e: unknown) => {
          if (isTapnetError(e, 'ERR_CONFLICT')) {
            throw new TapnetError('ERR_CONFLICT', `VM ${vmId} was created concurrently by another process`, {
              cause: e,
            });
          }
          // A write sent but unanswered (etcd went away) may have been applied. Rolling back under a record
          // that exists would leave a ready VM without its lease, whose address the next ensure hands out
          // again. Make sure there is no record first; when that cannot be known either, roll nothing
          // back: both outcomes are then whole, and reconcile (or a retried ensure/release) settles it.
          if (isTapnetError(e, 'ERR_UNAVAILABLE') && e.details.ambiguous) {
            try {
              await this.store.records.delete(vmId);
            } catch (d) {
              applied.length = 0;
              e.details.outcome = 'unknown';
              e.details.recordDeleteError = toTapnetError(d, 'ERR_STORE', 'delete record').toJSON();
            }
          }
          throw e;
        });
      faultPoint('ensure:after-record'); // test builds only: TAPNET_FAULTS (faults.ts)
      const info = toNetworkInfo(stored, net, this.ns?.path);
      if (fds.length) info.tapFds = fds;
      if (bw?.firecracker) info.firecrackerRateLimiters = bw.firecracker as Record<string, unknown>;
      this.counters.activeVms++;
      return info;
    } catch (e) {
      const failures: TapnetError[] = [];
      for (const step of applied.toReversed()) {
        try {
          await step.undo();
        } catch (undoError) {
          failures.push(toTapnetError(undoError, 'ERR_INTERNAL', step.name));
        }
      }
      const err = toTapnetError(e, 'ERR_INTERNAL', `ensure ${vmId}`);
      if (failures.length) err.details.rollbackFailures = failures.map((f) => f.toJSON());
      throw err;
    }
  }

  /**
   * Take back `vmId`'s network. Unknown or already released: a no-op. Teardown keeps going past failures
   * and reports them together (ERR_TEARDOWN); the record then stays 'releasing' so a retry or reconcile
   * finishes the job.
   */
  async release(vmId: string, opts: ReleaseOptions = {}): Promise<void> {
    this.check();
    const t0 = performance.now();
    validateVmId(vmId);
    const lock = await this.store.locks.acquire('vm', vmId, opts.signal ? { signal: opts.signal } : {});
    let released = false;
    /** The TAP's deletion, when it is still under way: the VM's lock is kept until it is done. */
    let gone: Promise<void> | undefined;
    try {
      const r = await this.store.records.get(vmId);
      if (!r) {
        this.counters.releases.unknown++;
        if (channels.release.hasSubscribers)
          channels.release.publish({ vmId, outcome: 'unknown', durationMs: performance.now() - t0 });
        return;
      }
      await this.finishRelease(r, opts.wait ? { wait: true } : {});
      released = true;
      if (r.mode !== 'cni') gone = this.reaper.whenGone(r.tap);
      this.counters.releases.ok++;
      this.counters.lastReleaseMs = performance.now() - t0;
      if (channels.release.hasSubscribers) {
        channels.release.publish({
          vmId,
          network: r.network,
          mode: r.mode ?? 'direct',
          outcome: 'released',
          durationMs: this.counters.lastReleaseMs,
        });
      }
    } catch (e) {
      this.counters.releases.failed++;
      if (channels.release.hasSubscribers) {
        channels.release.publish({
          vmId,
          outcome: 'error',
          code: toTapnetError(e).code,
          durationMs: performance.now() - t0,
        });
      }
      throw e;
    } finally {
      // The VM is gone: its lock file can go too (ids change with every VM; they would pile up). While its
      // TAP is still being deleted, the lock stays held, so another process's ensure of the same VM waits
      // for the name to be free (this process's ensures wait on the reaper).
      const unlock = (): void => lock.release({ forget: released });
      if (gone) gone.then(unlock, unlock);
      else unlock();
    }
  }

  /** Release many VMs at once; link deletions are batched (one RCU grace period per batch). */
  async releaseMany(
    vmIds: string[],
    opts: Pick<ReleaseOptions, 'wait'> = {},
  ): Promise<{ released: string[]; failed: { vmId: string; error: TapnetError }[] }> {
    for (const id of vmIds) validateVmId(id);
    const results = await Promise.allSettled(vmIds.map((id) => this.release(id, opts)));
    const released: string[] = [];
    const failed: { vmId: string; error: TapnetError }[] = [];
    results.forEach((r, i) => {
      if (r.status === 'fulfilled') released.push(vmIds[i]!);
      else failed.push({ vmId: vmIds[i]!, error: toTapnetError(r.reason) });
    });
    return { released, failed };
  }

  /** Tear down a record's resources (caller holds the VM's lock) and delete the record. */
  async finishRelease(r: VmRecord, opts: Pick<ReleaseOptions, 'wait'> = {}): Promise<void> {
    let rec = r;
    if (rec.state !== 'releasing')
      rec = await this.store.records.put(
        { ...rec, state: 'releasing' },
        { expectedGeneration: rec.generation },
      );
    faultPoint('release:marked'); // test builds only: TAPNET_FAULTS (faults.ts)
    const failures: TapnetError[] = [];
    const attempt = async (name: string, fn: () => unknown): Promise<void> => {
      try {
        await fn();
      } catch (e) {
        failures.push(toTapnetError(e, 'ERR_INTERNAL', name));
      }
    };
    const net = this.config.networks.get(rec.network);
    if (rec.mode === 'cni') {
      if (net?.mode === 'cni') await attempt('CNI DEL', () => cniDel(this.cni, net, rec.vmId));
      else
        failures.push(
          new TapnetError(
            'ERR_CONFIG',
            `network ${rec.network} of VM ${rec.vmId} is no longer configured for CNI`,
          ),
        );
      if (failures.length) throw teardownError(`release ${rec.vmId}`, failures);
      await this.store.records.delete(rec.vmId);
      faultPoint('release:after-record'); // test builds only: TAPNET_FAULTS (faults.ts)
      this.counters.activeVms = Math.max(0, this.counters.activeVms - 1);
      return;
    }
    if (rec.policy || net?.policy) await attempt('remove policy', () => uninstallPolicy(this, rec));
    if (rec.bandwidth) await attempt('remove bandwidth limits', () => uninstallBandwidth(this, rec));
    await attempt('remove firewall elements', () => this.firewall.removeVm(this.firewallVm(rec)));
    faultPoint('release:after-firewall'); // test builds only: TAPNET_FAULTS (faults.ts)
    // Doomed: moved into the reaper's group (its firewall elements are gone, so it can send nothing) and
    // deleted in the background together with other releases' TAPs, one RCU grace period for the batch.
    await attempt('delete TAP', () =>
      opts.wait ? this.reaper.delete(rec.tap) : this.reaper.detach(rec.tap),
    );
    faultPoint('release:after-tap'); // test builds only: TAPNET_FAULTS (faults.ts)
    if (net) {
      const pools = this.pools(net);
      const requests: PoolRequest[] = [];
      if (pools.v4) requests.push({ pool: pools.v4, ...(rec.ipv4 ? { address: rec.ipv4 } : {}) });
      if (pools.v6) requests.push({ pool: pools.v6, ...(rec.ipv6 ? { address: rec.ipv6 } : {}) });
      await attempt('release addresses', () => this.ipam.releaseAll(rec.vmId, requests));
    }
    faultPoint('release:after-leases'); // test builds only: TAPNET_FAULTS (faults.ts)
    if (failures.length) throw teardownError(`release ${rec.vmId}`, failures);
    await this.store.records.delete(rec.vmId);
    faultPoint('release:after-record'); // test builds only: TAPNET_FAULTS (faults.ts)
    this.counters.activeVms = Math.max(0, this.counters.activeVms - 1);
  }

  /**
   * Set (or with `null`, remove) a VM's own policy, live: allowed established flows keep going.
   * `tapnet policy set|rm`, `PUT|DELETE /v1/vms/{id}/policy`.
   */
  async setPolicy(vmId: string, policy: unknown): Promise<NetworkInfo> {
    return this.updateVm(
      vmId,
      (r) => {
        const parsed = policy === null || policy === undefined ? undefined : checkVmLimits({ policy }).policy;
        const next: VmRecord = { ...r };
        if (parsed) next.policy = storedPolicy(parsed)!;
        else delete next.policy;
        return next;
      },
      async (before, after, net) => {
        if (after.policy || net.policy) await installPolicy(this, after, net);
        else if (before.policy) uninstallPolicy(this, before);
      },
    );
  }

  /** The VM's own policy document, or undefined. */
  async getPolicy(vmId: string): Promise<unknown> {
    validateVmId(vmId);
    const r = await this.store.records.get(vmId);
    if (r?.state !== 'ready')
      throw new TapnetError('ERR_NOT_FOUND', `VM ${vmId} has no network`, { details: { vmId } });
    return r.policy;
  }

  /** Set (or with `null`, remove) a VM's bandwidth limits, live. */
  async setBandwidth(vmId: string, bandwidth: BandwidthLimits | null, vmm?: Vmm): Promise<NetworkInfo> {
    return this.updateVm(
      vmId,
      (r) => {
        const next: VmRecord = { ...r };
        if (bandwidth) {
          next.bandwidth = checkVmLimits({ bandwidth }).bandwidth!;
          next.vmm = vmm ?? r.vmm ?? 'qemu';
        } else delete next.bandwidth;
        return next;
      },
      async (before, after) => {
        if (after.bandwidth) installBandwidth(this, after);
        else uninstallBandwidth(this, before);
      },
    );
  }

  private async updateVm(
    vmId: string,
    change: (r: VmRecord) => VmRecord,
    apply: (before: VmRecord, after: VmRecord, net: ResolvedNetwork) => Promise<void>,
  ): Promise<NetworkInfo> {
    this.check();
    validateVmId(vmId);
    const lock = await this.store.locks.acquire('vm', vmId);
    try {
      const r = await this.store.records.get(vmId);
      if (r?.state !== 'ready')
        throw new TapnetError('ERR_NOT_FOUND', `VM ${vmId} has no network`, { details: { vmId } });
      if (r.mode === 'cni')
        throw new TapnetError(
          'ERR_INVALID_ARGUMENT',
          `VM ${vmId} is in CNI mode: policies and limits come from its conflist`,
        );
      const net = this.network(r.network);
      this.ensureNetwork(net); // a fresh process (a CLI) has not applied the network's firewall yet
      const next = change(r);
      await apply(r, next, net);
      const stored = await this.store.records.put(next, { expectedGeneration: r.generation });
      return toNetworkInfo(stored, net, this.ns?.path);
    } finally {
      lock.release();
    }
  }

  /** The network of `vmId`, or undefined. */
  async get(vmId: string): Promise<NetworkInfo | undefined> {
    validateVmId(vmId);
    const r = await this.store.records.get(vmId);
    if (r?.state !== 'ready') return undefined;
    return toNetworkInfo(r, this.network(r.network), this.ns?.path);
  }

  /** Every VM with a network. */
  async list(): Promise<NetworkInfo[]> {
    const { records } = await this.store.records.list();
    return records
      .filter((r) => r.state === 'ready' && this.config.networks.has(r.network))
      .map((r) => toNetworkInfo(r, this.network(r.network), this.ns?.path))
      .sort((a, b) => a.vmId.localeCompare(b.vmId));
  }

  /** Compare the store with the kernel and the firewall, and repair (see reconcile.ts). */
  async reconcile(opts: { signal?: AbortSignal } = {}): Promise<ReconcileReport> {
    this.check();
    const t0 = performance.now();
    const report = await reconcile(this, opts);
    this.counters.reconciles++;
    this.counters.repairs += repairCount(report);
    this.counters.activeVms = (await this.store.records.list()).records.length;
    if (channels.reconcile.hasSubscribers) {
      channels.reconcile.publish({
        outcome: report.errors.length ? 'error' : 'ok',
        repairs: repairsByKind(report),
        errors: report.errors.length,
        durationMs: performance.now() - t0,
      });
    }
    return report;
  }

  /** Acquire a VM's lock (for reconcile). */
  lockVm(vmId: string, signal?: AbortSignal): Promise<HeldLock> {
    return this.store.locks.acquire('vm', vmId, signal ? { signal } : {});
  }

  /** Delete a TAP through the batched reaper and wait until it is gone. */
  reapTap(name: string): Promise<void> {
    return this.reaper.delete(name);
  }

  /** Resolves when every TAP deletion asked for so far has finished. */
  settled(): Promise<void> {
    return this.reaper.idle();
  }

  /** Counters since open. */
  metrics(): ManagerMetrics {
    return structuredClone(this.counters);
  }

  /** Close sockets and drivers. VMs' networks stay. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.reaper.idle().catch(() => undefined);
    this.firewall.close();
    if (this.ownsStore) await this.store.close?.();
    this.slowNl.close();
    this.nl.close();
    this.ns?.close();
  }
}

function stripPrefix(a: string): string {
  const i = a.indexOf('/');
  return i < 0 ? a : a.slice(0, i);
}
