/**
 * The kernel side of the overlay, per host and network: the VXLAN device on the network's bridge, and
 * for each remote VM its entries — batched into one netlink datagram per change set.
 *
 * bridge topology, per remote VM (MAC M, addresses A, on the host with underlay address V):
 *   bridge fdb replace M dev vx self dst V permanent     the VXLAN device sends M's frames to V
 *   bridge fdb replace M dev vx master static           the bridge sends M's frames to the VXLAN port
 *   ip neigh replace A lladdr M dev br nud permanent    with neigh_suppress on the VXLAN port, the
 *                                                       bridge answers ARP/ND for A itself: no flooding
 * routed topology: `ip route replace A/32 via V proto 84` (each host routes its own VMs' /32s to their
 * TAPs already). Only addresses of the underlay's family are routed (IPv6 VMs over an IPv4 underlay
 * need the bridge topology).
 */
import { createHash } from 'node:crypto';
import { isTapnetError, TapnetError } from '../errors.js';
import { cidrContains, parseCidr, parseIp } from '../ip.js';
import { listRoutes } from '../net/addr.js';
import { getBridgePort, setBridgePort } from '../net/bridge-port.js';
import { deleteLink, findLink, getLink, type Link, listLinks } from '../net/link.js';
import { listFdb, listNeighbours } from '../net/neigh.js';
import {
  AF_BRIDGE,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NTF_MASTER,
  NTF_SELF,
  NUD_NOARP,
  NUD_PERMANENT,
  NUD_REACHABLE,
  RTM_DELNEIGH,
  RTM_DELROUTE,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
} from '../netlink/constants.js';
import { encodeLinkRequest, vxlanInfoData } from '../netlink/link.js';
import { encodeNeighRequest } from '../netlink/neigh.js';
import { encodeRouteRequest } from '../netlink/route.js';
import type { NetlinkSocket } from '../netlink/socket.js';
import { validateInt } from '../validate.js';

/** The IANA VXLAN port. */
export const VXLAN_PORT = 4789;
/** Route protocol of tapnet's overlay routes (`ip route show proto 84`), so they can be told apart. */
export const RTPROT_TAPNET = 84;

/** VXLAN overhead: outer Ethernet 14 + IPv4 20 (IPv6 40) + UDP 8 + VXLAN 8. */
export function overlayMtu(underlayMtu: number, underlayFamily: 4 | 6 = 4): number {
  validateInt(underlayMtu, 'underlay MTU', 1280, 65535);
  return underlayMtu - (underlayFamily === 4 ? 50 : 70);
}

/** The VNI of a network without an explicit one: from its name, in 1…16,777,215. */
export function deriveVni(network: string): number {
  return (createHash('sha256').update(`tapnet-vni:${network}`).digest().readUInt32BE(0) % 0xfffffe) + 1;
}

/** The VXLAN device name of a VNI (`tnvx<vni>`, at most 12 bytes). */
export function vxlanName(vni: number): string {
  return `tnvx${validateInt(vni, 'VNI', 1, 0xffffff)}`;
}

/** What the VXLAN device of a network looks like. */
export interface VxlanDeviceSpec {
  vni: number;
  /** This host's underlay address (VXLAN local). */
  local: string;
  /** Underlay device index (VXLAN `dev`), optional. */
  underlayIndex?: number;
  port?: number;
  mtu: number;
  /** The network's bridge. */
  bridgeIndex: number;
}

/**
 * `ip link add tnvxN type vxlan id N local V dstport 4789 nolearning [dev U]; ip link set tnvxN master BR
 * mtu M up; bridge link set dev tnvxN neigh_suppress on learning off` — idempotent; a device of that name
 * with another VNI, local address or port is replaced. Returns the device.
 */
export function ensureVxlanDevice(nl: NetlinkSocket, spec: VxlanDeviceSpec): Link {
  const name = vxlanName(spec.vni);
  const port = spec.port ?? VXLAN_PORT;
  parseIp(spec.local, 'VTEP address');
  let dev = findLink(nl, name);
  if (dev && dev.kind !== 'vxlan') {
    throw new TapnetError('ERR_CONFLICT', `link ${name} exists and is a ${dev.kind ?? 'device'}, not VXLAN`, {
      details: { link: name },
    });
  }
  if (
    dev &&
    (dev.vxlan?.id !== spec.vni ||
      dev.vxlan?.port !== port ||
      dev.vxlan?.local !== spec.local ||
      dev.vxlan?.learning !== false)
  ) {
    deleteLink(nl, dev.index);
    dev = undefined;
  }
  if (!dev) {
    const req = {
      name,
      kind: 'vxlan',
      mtu: spec.mtu,
      infoData: vxlanInfoData({
        id: spec.vni,
        local: spec.local,
        port,
        learning: false,
        ...(spec.underlayIndex !== undefined ? { link: spec.underlayIndex } : {}),
      }),
    };
    nl.request(encodeLinkRequest(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, req), name);
    dev = getLink(nl, name);
  }
  if (dev.master !== spec.bridgeIndex || dev.mtu !== spec.mtu || !dev.up) {
    nl.request(
      encodeLinkRequest(RTM_NEWLINK, 0, {
        index: dev.index,
        master: spec.bridgeIndex,
        mtu: spec.mtu,
        up: true,
      }),
      name,
    );
  }
  const flags = getBridgePort(nl, dev.index);
  if (!flags.neighSuppress || flags.learning)
    setBridgePort(nl, dev.index, { neighSuppress: true, learning: false });
  return getLink(nl, dev.index);
}

/** `ip link del tnvxN`; already gone is success. */
export function deleteVxlanDevice(nl: NetlinkSocket, vni: number): void {
  deleteLink(nl, vxlanName(vni));
}

/** A remote VM as this host programs it. */
export interface RemoteVm {
  mac: string;
  ipv4?: string;
  ipv6?: string;
  /** Underlay address of its host. */
  vtep: string;
}

/** Where a network's entries go. */
export interface OverlayTarget {
  topology: 'bridge' | 'routed';
  /** bridge topology: the VXLAN device and the bridge. */
  vxIndex?: number;
  bridgeIndex?: number;
}

function neighMsgs(t: OverlayTarget, vm: RemoteVm, add: boolean): Buffer[] {
  const type = add ? RTM_NEWNEIGH : RTM_DELNEIGH;
  const flags = add ? NLM_F_CREATE | NLM_F_REPLACE : 0;
  const out: Buffer[] = [];
  const vx = t.vxIndex!;
  if (add)
    out.push(
      encodeNeighRequest(type, flags, {
        family: AF_BRIDGE,
        ifindex: vx,
        lladdr: vm.mac,
        dst: vm.vtep,
        flags: NTF_SELF,
        state: NUD_NOARP | NUD_PERMANENT,
      }),
    );
  else
    out.push(
      encodeNeighRequest(type, flags, {
        family: AF_BRIDGE,
        ifindex: vx,
        lladdr: vm.mac,
        flags: NTF_SELF,
        state: NUD_NOARP | NUD_PERMANENT,
      }),
    );
  out.push(
    encodeNeighRequest(type, flags, {
      family: AF_BRIDGE,
      ifindex: vx,
      lladdr: vm.mac,
      flags: NTF_MASTER,
      state: NUD_NOARP | NUD_REACHABLE,
    }),
  );
  for (const a of [vm.ipv4, vm.ipv6]) {
    if (a)
      out.push(
        encodeNeighRequest(type, flags, {
          ifindex: t.bridgeIndex!,
          dst: a,
          lladdr: vm.mac,
          state: NUD_PERMANENT,
        }),
      );
  }
  return out;
}

function routeMsgs(vm: RemoteVm, add: boolean): Buffer[] {
  const fam = parseIp(vm.vtep).family;
  const out: Buffer[] = [];
  for (const a of [vm.ipv4, vm.ipv6]) {
    if (!a || parseIp(a).family !== fam) continue;
    const dst = `${a}/${fam === 4 ? 32 : 128}`;
    if (add)
      out.push(
        encodeRouteRequest(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, {
          dst,
          gateway: vm.vtep,
          protocol: RTPROT_TAPNET,
        }),
      );
    else out.push(encodeRouteRequest(RTM_DELROUTE, 0, { dst, protocol: RTPROT_TAPNET }));
  }
  return out;
}

const gone = (e: TapnetError | undefined): boolean =>
  e === undefined ||
  (isTapnetError(e) &&
    (e.errno === 'ENOENT' || e.errno === 'ESRCH' || e.errno === 'ENODEV' || e.errno === 'EADDRNOTAVAIL'));

/**
 * Install (`add`) or remove remote VMs' entries, in one batched datagram. Removal of what is already
 * gone is success. Returns the failures (the rest was applied).
 */
export function programRemotes(
  nl: NetlinkSocket,
  t: OverlayTarget,
  vms: RemoteVm[],
  add: boolean,
): TapnetError[] {
  if (vms.length === 0) return [];
  const msgs = vms.flatMap((vm) => (t.topology === 'routed' ? routeMsgs(vm, add) : neighMsgs(t, vm, add)));
  if (msgs.length === 0) return [];
  const results = nl.batch(msgs, (i) => `overlay entry #${i}`);
  return results.filter((e): e is TapnetError => e !== undefined && (add || !gone(e)));
}

/** What programRemotes() left in the kernel, read back (for removing leftovers of an earlier agent). */
export interface KernelOverlayState {
  /** MACs with a `self` entry on the VXLAN device. */
  fdbSelf: Set<string>;
  /** MACs with a static `master` entry on the VXLAN port. */
  fdbMaster: Set<string>;
  /** Permanent neighbours on the bridge, inside the network's subnets: address → MAC. */
  neighbours: Map<string, string>;
  /** Routes of protocol 84 inside the network's subnets (addresses without prefix). */
  routes: Set<string>;
}

/** Read the overlay entries of one network from the kernel. */
export function readOverlayState(nl: NetlinkSocket, t: OverlayTarget, subnets: string[]): KernelOverlayState {
  const cidrs = subnets.map((s) => parseCidr(s));
  const inNet = (a: string): boolean => cidrs.some((c) => cidrContains(c, parseIp(a)));
  const st: KernelOverlayState = {
    fdbSelf: new Set(),
    fdbMaster: new Set(),
    neighbours: new Map(),
    routes: new Set(),
  };
  if (t.topology === 'bridge') {
    for (const e of listFdb(nl, { ifindex: t.vxIndex! })) {
      if (!e.lladdr || e.lladdr === '00:00:00:00:00:00') continue;
      if (e.flags & NTF_SELF && e.dst) st.fdbSelf.add(e.lladdr);
      if (e.flags & NTF_MASTER && e.state & NUD_NOARP && !(e.state & NUD_PERMANENT))
        st.fdbMaster.add(e.lladdr);
    }
    for (const n of listNeighbours(nl, { ifindex: t.bridgeIndex! })) {
      if (n.dst && n.lladdr && n.state & NUD_PERMANENT && inNet(n.dst)) st.neighbours.set(n.dst, n.lladdr);
    }
  } else {
    for (const fam of [4, 6] as const) {
      for (const r of listRoutes(nl, fam)) {
        if (r.protocol === RTPROT_TAPNET) {
          const a = r.dst.slice(0, r.dst.indexOf('/'));
          if (inNet(a)) st.routes.add(a);
        }
      }
    }
  }
  return st;
}

/** The VXLAN devices tapnet made (`tnvx*`), for status and cleanup. */
export function listVxlanDevices(nl: NetlinkSocket): Link[] {
  return listLinks(nl, { kind: 'vxlan' }).filter((l) => /^tnvx\d+$/.test(l.name));
}
