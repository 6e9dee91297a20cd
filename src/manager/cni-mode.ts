/**
 * CNI mode: a VM's network is a named namespace (`/run/netns/<prefix>-<vmId>`) set up by a CNI conflist
 * (e.g. bridge → tc-redirect-tap) through tapnet's libcni, with tapnet's own plugins run in-process. The
 * result becomes the same NetworkInfo as direct mode. DEL runs on release even when ADD failed half-way,
 * then the namespace goes. Also the CRI-style `setUpPod`/`tearDownPod` for container runtimes that bring
 * their own namespace.
 */
import { CniRuntime } from '../cni/api.js';
import { loadNetworkConf } from '../cni/conf.js';
import { inProcessPlugins } from '../cni/plugins/index.js';
import { vmTapPair } from '../cni/plugins/tc-redirect-tap-conf.js';
import type { CallTiming } from '../cni/runtime-base.js';
import { defaultPluginExecutor } from '../cni/spawn-executor.js';
import type { CniResult, NetworkConfigList, Result100, RuntimeConf } from '../cni/types.js';
import { toCurrentResult } from '../cni/version.js';
import { isTapnetError, TapnetError, teardownError, toTapnetError } from '../errors.js';
import { parseCidr } from '../ip.js';
import { getLink } from '../net/link.js';
import { createNetns, deleteNetns, isNetnsMounted, listNetns, NETNS_RUN_DIR } from '../net/netns.js';
import { NetlinkSocket } from '../netlink/socket.js';
import { validateVmId } from '../validate.js';
import type { CniNetworkConfig, ResolvedNetwork } from './config.js';
import { faultPoint } from './faults.js';
import type { CniRecordInfo, VmRecord } from './types.js';

/** One CniRuntime per (plugin paths, cache dir): tapnet's plugins in-process, everything else exec'd. */
export class CniModes {
  private readonly runtimes = new Map<string, CniRuntime>();
  /** Timing of the last ADD/DEL (where the time went: tapnet vs plugins). */
  lastTiming: CallTiming | undefined;

  /** `hostNsFd`: the namespace exec'd plugins start in (their "host"), asked at each call; default ours. */
  constructor(private readonly hostNsFd?: () => number | undefined) {}

  runtime(c: CniNetworkConfig): CniRuntime {
    const key = `${c.pluginPaths.join(':')}|${c.cacheDir}`;
    let rt = this.runtimes.get(key);
    if (!rt) {
      const executor = this.hostNsFd ? defaultPluginExecutor({ hostNsFd: this.hostNsFd }) : undefined;
      rt = new CniRuntime({
        pluginPaths: c.pluginPaths,
        cacheDir: c.cacheDir,
        inProcessPlugins,
        timeoutMs: c.timeoutMs,
        ...(executor ? { executor } : {}),
      });
      this.runtimes.set(key, rt);
    }
    return rt;
  }

  /** The conflist of a CNI network (read afresh, as libcni does). */
  conflist(c: CniNetworkConfig): NetworkConfigList {
    return loadNetworkConf(c.confDir, c.network);
  }
}

/** The namespace name of a VM in CNI mode. */
export function vmNetnsName(c: CniNetworkConfig, vmId: string): string {
  return `${c.netnsPrefix}-${validateVmId(vmId)}`;
}

/** The VM ids whose namespaces (with this prefix) exist under /run/netns. */
export function vmNetnsIds(c: CniNetworkConfig): string[] {
  const p = `${c.netnsPrefix}-`;
  return listNetns()
    .filter((n) => n.startsWith(p))
    .map((n) => n.slice(p.length))
    .filter((id) => {
      try {
        validateVmId(id);
        return true;
      } catch {
        return false;
      }
    });
}

function runtimeConf(c: CniNetworkConfig, vmId: string, netns: string): RuntimeConf {
  return { containerId: vmId, netns, ifName: c.ifname };
}

/** Turn an ADD result into what the record keeps (the VM's pseudo-interface, its addresses, the TAP's MTU). */
export function cniRecordInfo(
  result: CniResult,
  c: CniNetworkConfig,
  vmId: string,
  mtu: number,
): { tap: string; mac: string; info: CniRecordInfo } {
  const r: Result100 = toCurrentResult(result);
  const interfaces = r.interfaces ?? [];
  let pair: { vm: { name: string; mac?: string }; tap: { name: string } };
  try {
    pair = vmTapPair(
      { ...r, interfaces, ips: r.ips ?? [], routes: r.routes ?? [], dns: r.dns ?? {} } as never,
      vmId,
    );
  } catch (e) {
    throw new TapnetError(
      'ERR_CNI',
      `the conflist ${c.network} gave VM ${vmId} no TAP: chain tc-redirect-tap after the plugin that creates ${c.ifname}`,
      { cause: e, details: { network: c.network } },
    );
  }
  const vmIndex = interfaces.findIndex((i) => i.sandbox === vmId);
  const info: CniRecordInfo = { network: c.network, ifname: c.ifname, dns: r.dns?.nameservers ?? [], mtu };
  for (const ip of r.ips ?? []) {
    if (ip.interface !== undefined && ip.interface !== vmIndex) continue;
    const fam = parseCidr(ip.address, 'CNI result address').family;
    if (fam === 4 && !info.ipv4) {
      info.ipv4 = ip.address;
      if (ip.gateway) info.gateway4 = ip.gateway;
    } else if (fam === 6 && !info.ipv6) {
      info.ipv6 = ip.address;
      if (ip.gateway) info.gateway6 = ip.gateway;
    }
  }
  if (!pair.vm.mac) throw new TapnetError('ERR_CNI', `the CNI result has no MAC for VM ${vmId}'s interface`);
  return { tap: pair.tap.name, mac: pair.vm.mac, info };
}

/**
 * ADD for one VM: create its namespace, run the conflist, read the TAP's MTU. On failure, DEL runs and the
 * namespace goes before the error is thrown. Returns the record fields.
 */
export async function cniAdd(
  modes: CniModes,
  net: ResolvedNetwork,
  vmId: string,
  signal?: AbortSignal,
): Promise<Pick<VmRecord, 'mode' | 'netns' | 'cni' | 'tap' | 'mac'>> {
  const c = net.cni!;
  const name = vmNetnsName(c, vmId);
  const list = modes.conflist(c);
  const rt = modes.runtime(c);
  // The caller holds the VM's lock and it has no record: a namespace of that name is a crash's leftover
  // (ADD half-done). Take it down properly first, so ADD starts clean.
  if (listNetns().includes(name)) await cniDel(modes, net, vmId).catch(() => deleteNetns(name));
  const ns = createNetns(name);
  const netns = ns.path;
  try {
    faultPoint('cni-add:after-netns'); // test builds only: TAPNET_FAULTS (faults.ts)
    const timing = {} as CallTiming;
    const result = await rt.addNetworkList(list, runtimeConf(c, vmId, netns), {
      timing,
      ...(signal ? { signal } : {}),
    });
    modes.lastTiming = timing;
    faultPoint('cni-add:after-add'); // test builds only: TAPNET_FAULTS (faults.ts)
    const tapName = cniRecordInfo(result, c, vmId, 0).tap;
    const nl = NetlinkSocket.open({ nsFd: ns.fd });
    let mtu: number;
    try {
      mtu = getLink(nl, tapName).mtu ?? 1500;
    } finally {
      nl.close();
    }
    const { tap, mac, info } = cniRecordInfo(result, c, vmId, mtu);
    return { mode: 'cni', netns, cni: info, tap, mac };
  } catch (e) {
    const failures: TapnetError[] = [];
    try {
      await rt.delNetworkList(list, runtimeConf(c, vmId, netns));
    } catch (d) {
      failures.push(toTapnetError(d, 'ERR_CNI', 'DEL after a failed ADD'));
    }
    try {
      deleteNetns(name);
    } catch (d) {
      failures.push(toTapnetError(d, 'ERR_SYSCALL', 'delete the namespace'));
    }
    const err = toTapnetError(e, 'ERR_CNI', `CNI ADD for ${vmId}`);
    if (failures.length) err.details.rollbackFailures = failures.map((f) => f.toJSON());
    throw err;
  } finally {
    ns.close();
  }
}

/**
 * DEL for one VM (also when ADD failed half-way or the namespace is already gone: plugins clean up their
 * host side, e.g. host-local leases), then remove its namespace. Keeps going; reports every failure.
 */
export async function cniDel(modes: CniModes, net: ResolvedNetwork, vmId: string): Promise<void> {
  const c = net.cni!;
  const name = vmNetnsName(c, vmId);
  const rt = modes.runtime(c);
  const failures: TapnetError[] = [];
  let list: NetworkConfigList | undefined;
  try {
    list = modes.conflist(c);
  } catch (e) {
    failures.push(toTapnetError(e, 'ERR_CNI', `load conflist ${c.network}`));
  }
  // A namespace file left unmounted by a crash inside createNetns is no namespace: remove it first, so
  // the plugins see the namespace as gone (and clean up their host side) instead of failing on the path.
  if (!isNetnsMounted(name)) {
    try {
      deleteNetns(name);
    } catch (e) {
      failures.push(toTapnetError(e, 'ERR_SYSCALL', `remove the stale namespace file ${name}`));
    }
  }
  if (list) {
    try {
      const timing = {} as CallTiming;
      await rt.delNetworkList(list, runtimeConf(c, vmId, `${NETNS_RUN_DIR}/${name}`), { timing });
      modes.lastTiming = timing;
    } catch (e) {
      failures.push(toTapnetError(e, 'ERR_CNI', `CNI DEL for ${vmId}`));
    }
  }
  faultPoint('cni-del:after-del'); // test builds only: TAPNET_FAULTS (faults.ts)
  try {
    deleteNetns(name);
  } catch (e) {
    if (!isTapnetError(e, 'ERR_NETNS_NOT_FOUND'))
      failures.push(toTapnetError(e, 'ERR_SYSCALL', `delete namespace ${name}`));
  }
  if (failures.length) throw teardownError(`release ${vmId} (CNI)`, failures);
}

/**
 * CRI-style API for container runtimes that bring their own namespace: ADD/DEL of a named conflist for a
 * pod, no namespace created or removed here.
 */
export class PodNetwork {
  private readonly modes = new CniModes();

  constructor(private readonly cni: CniNetworkConfig) {}

  /** ADD the conflist for `podId` in `netnsPath`; returns the result in the conflist's version. */
  setUpPod(
    podId: string,
    netnsPath: string,
    opts: {
      args?: Array<[string, string]>;
      capabilityArgs?: Record<string, unknown>;
      signal?: AbortSignal;
    } = {},
  ): Promise<CniResult> {
    const rt: RuntimeConf = {
      ...runtimeConf(this.cni, podId, netnsPath),
      ...(opts.args ? { args: opts.args } : {}),
      ...(opts.capabilityArgs ? { capabilityArgs: opts.capabilityArgs } : {}),
    };
    return this.modes
      .runtime(this.cni)
      .addNetworkList(this.modes.conflist(this.cni), rt, opts.signal ? { signal: opts.signal } : {});
  }

  /** DEL the conflist for `podId` (succeeds when things are already gone). */
  tearDownPod(podId: string, netnsPath: string, opts: { signal?: AbortSignal } = {}): Promise<void> {
    return this.modes
      .runtime(this.cni)
      .delNetworkList(
        this.modes.conflist(this.cni),
        runtimeConf(this.cni, podId, netnsPath),
        opts.signal ? { signal: opts.signal } : {},
      );
  }
}
