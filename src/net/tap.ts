/**
 * TAP devices through /dev/net/tun ioctls: created inside a given namespace, persistent (for VMMs that
 * open them by name, like Firecracker) or held as open file descriptors (for QEMU's `fd=N`), with vnet
 * header, multi-queue and owner/group. Attaching to a bridge, MTU, MAC and up are one netlink message.
 */
import { close as closeAsync, closeSync, openSync, writeSync } from 'node:fs';
import { isTapnetError, TapnetError } from '../errors.js';
import { parseMac } from '../ip.js';
import { RTM_NEWLINK } from '../netlink/constants.js';
import { encodeLinkRequest, type LinkRequest } from '../netlink/link.js';
import type { NetlinkSocket } from '../netlink/socket.js';
import { close, ioctl, ioctlInt, O_CLOEXEC, O_RDWR, open } from '../sys/libc.js';
import { withNetns } from '../sys/ns.js';
import { validateIfname, validateInt } from '../validate.js';
import { deleteLink } from './link.js';

/** linux/if_tun.h */
export const IFF_TUN = 0x0001;
export const IFF_TAP = 0x0002;
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const IFF_TUN_EXCL = 0x8000;
export const TUNSETIFF = 0x400454ca;
export const TUNSETPERSIST = 0x400454cb;
export const TUNSETOWNER = 0x400454cc;
export const TUNSETGROUP = 0x400454ce;
export const TUNGETIFF = 0x800454d2;

export const TUN_DEVICE = '/dev/net/tun';
const IFREQ_SIZE = 40;

export interface TapOptions {
  name: string;
  /** Create the TAP in the namespace behind this fd (default: the current one). */
  nsFd?: number;
  /**
   * true (default): the device outlives our fds (TUNSETPERSIST), to be opened by name.
   * false: it exists while the returned fds are open, and vanishes when they close: leak-proof.
   */
  persistent?: boolean;
  /** Keep the fds open and return them even for a persistent TAP (default: only when not persistent). */
  keepFds?: boolean;
  /** IFF_VNET_HDR (default true: offloads, ~2× throughput under QEMU). */
  vnetHdr?: boolean;
  /** Queue count; > 1 sets IFF_MULTI_QUEUE and returns one fd per queue. Default 1. */
  queues?: number;
  /** uid/gid allowed to open the persistent device (non-root VMMs, jailers). */
  owner?: number;
  group?: number;
  /** Fail with ERR_CONFLICT if a device of this name exists (default false: reattach to it). */
  exclusive?: boolean;
  // Link settings applied in the same netlink message (needs `nl`, a socket in the same namespace):
  /** Bridge ifindex to attach to. */
  master?: number;
  up?: boolean;
  mtu?: number;
  mac?: string;
  /** Link group (IFLA_GROUP), e.g. to delete many TAPs with one request later. */
  linkGroup?: number;
  /** Interface alias (IFLA_IFALIAS), e.g. who owns the TAP. */
  alias?: string;
  /** No automatic IPv6 link-local address on the host side (a bridge port needs none). */
  noIpv6LinkLocal?: boolean;
  /**
   * Disable IPv6 on the host side of the TAP before it goes up (net.ipv6.conf.<tap>.disable_ipv6): a bridge
   * port or an IPv4-only routed TAP needs none, and it keeps the kernel's per-device IPv6 routes away.
   */
  disableIpv6?: boolean;
}

export interface Tap {
  name: string;
  /** Open queue fds (O_CLOEXEC; `spawn` stdio mapping hands them to a child as fd 3, 4, …). */
  fds: number[];
}

function tapFlags(o: Pick<TapOptions, 'vnetHdr' | 'queues' | 'exclusive'>): number {
  let flags = IFF_TAP | IFF_NO_PI;
  if (o.vnetHdr ?? true) flags |= IFF_VNET_HDR;
  if ((o.queues ?? 1) > 1) flags |= IFF_MULTI_QUEUE;
  if (o.exclusive) flags |= IFF_TUN_EXCL;
  return flags;
}

function ifreq(name: string, flags: number): Buffer {
  const b = Buffer.alloc(IFREQ_SIZE);
  b.write(name, 0, 15, 'utf8');
  b.writeUInt16LE(flags, 16);
  return b;
}

/** Open /dev/net/tun queues bound to `name` inside the namespace. Synchronous. */
function openQueues(
  name: string,
  flags: number,
  count: number,
  nsFd: number | undefined,
  disableIpv6 = false,
): number[] {
  const fds: number[] = [];
  try {
    withNetns(nsFd, () => {
      for (let i = 0; i < count; i++) {
        const fd = open(TUN_DEVICE, O_RDWR | O_CLOEXEC);
        fds.push(fd);
        ioctl(fd, TUNSETIFF, ifreq(name, flags), `TUNSETIFF ${name}`);
      }
      // Before the link goes up: no IPv6 on it at all, so no per-device ff00::/8 and fe80::/64 routes,
      // whose lists the kernel walks on every insertion (the 10,000th TAP would cost ~30× the first).
      if (disableIpv6) {
        let sysctl: number | undefined;
        try {
          sysctl = openSync(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`, 'w');
          writeSync(sysctl, '1');
        } catch (e) {
          // A kernel without IPv6 has nothing to disable.
          if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
        } finally {
          if (sysctl !== undefined) closeSync(sysctl);
        }
      }
    });
    return fds;
  } catch (e) {
    for (const fd of fds) close(fd);
    if (isTapnetError(e) && e.errno === 'ENOENT') {
      throw new TapnetError('ERR_UNSUPPORTED_PLATFORM', `${TUN_DEVICE} is missing: load the tun module`, {
        cause: e,
      });
    }
    if (isTapnetError(e) && e.errno === 'EBUSY') {
      throw new TapnetError('ERR_CONFLICT', `a device named ${name} already exists`, {
        cause: e,
        errno: 'EBUSY',
        details: { link: name },
      });
    }
    if (isTapnetError(e) && e.errno === 'EINVAL') {
      throw new TapnetError('ERR_CONFLICT', `${name} exists but is not a TAP with the requested flags`, {
        cause: e,
        errno: 'EINVAL',
        details: { link: name },
      });
    }
    throw e;
  }
}

/**
 * Create (or reattach to) a TAP: `ip tuntap add dev NAME mode tap [vnet_hdr] [multi_queue] [user U] [group G]`
 * then `ip link set NAME [master BR] [mtu N] [address MAC] [group G] up` as one netlink message.
 * On any failure the device is removed again (if we created it) before the error is thrown.
 */
export function createTap(o: TapOptions, nl?: NetlinkSocket): Tap {
  const name = validateIfname(o.name, 'TAP name');
  const queues = validateInt(o.queues ?? 1, 'queue count', 1, 256);
  const persistent = o.persistent ?? true;
  const mac = o.mac !== undefined ? parseMac(o.mac, 'TAP MAC') : undefined;
  const wantLink =
    o.master !== undefined ||
    o.up !== undefined ||
    o.mtu !== undefined ||
    mac ||
    o.linkGroup !== undefined ||
    o.alias !== undefined ||
    o.noIpv6LinkLocal;
  if (wantLink && !nl)
    throw new TapnetError('ERR_INTERNAL', 'createTap needs a netlink socket to set link attributes');

  const fds = openQueues(name, tapFlags(o), queues, o.nsFd, o.disableIpv6 ?? false);
  const first = fds[0]!;
  try {
    if (o.owner !== undefined)
      ioctlInt(first, TUNSETOWNER, validateInt(o.owner, 'owner uid', 0, 0xfffffffe), 'TUNSETOWNER');
    if (o.group !== undefined)
      ioctlInt(first, TUNSETGROUP, validateInt(o.group, 'group gid', 0, 0xfffffffe), 'TUNSETGROUP');
    // Not persistent: also when the name was a persistent TAP a crash left, which TUNSETIFF attached to;
    // it becomes the fd TAP asked for, gone with its last fd (else it would outlive its VMM).
    ioctlInt(first, TUNSETPERSIST, persistent ? 1 : 0, 'TUNSETPERSIST');
    if (wantLink) {
      const req: LinkRequest = { name };
      if (o.master !== undefined) req.master = o.master;
      if (o.up !== undefined) req.up = o.up;
      if (o.mtu !== undefined) req.mtu = validateInt(o.mtu, 'MTU', 68, 65535);
      if (mac) req.mac = mac;
      if (o.linkGroup !== undefined) req.group = o.linkGroup;
      if (o.alias !== undefined) req.alias = o.alias;
      if (o.noIpv6LinkLocal) req.noIpv6LinkLocal = true;
      try {
        nl!.request(encodeLinkRequest(RTM_NEWLINK, 0, req), name);
      } catch (e) {
        if (isTapnetError(e) && e.errno === 'EXFULL') {
          throw new TapnetError(
            'ERR_CAPACITY',
            `cannot attach ${name}: the bridge is full (a Linux bridge takes at most 1,023 ports)`,
            {
              cause: e,
              errno: 'EXFULL',
              details: { link: name },
            },
          );
        }
        throw e;
      }
    }
  } catch (e) {
    if (persistent) {
      try {
        ioctlInt(first, TUNSETPERSIST, 0, 'TUNSETPERSIST');
      } catch {}
    }
    for (const fd of fds) close(fd);
    throw e;
  }
  if (persistent && !o.keepFds) {
    for (const fd of fds) close(fd);
    return { name, fds: [] };
  }
  return { name, fds };
}

/** Open fds on an existing persistent TAP (what a VMM does when given the name). */
export function openTap(name: string, o: Pick<TapOptions, 'nsFd' | 'vnetHdr' | 'queues'> = {}): Tap {
  validateIfname(name, 'TAP name');
  const queues = validateInt(o.queues ?? 1, 'queue count', 1, 256);
  return { name, fds: openQueues(name, tapFlags(o), queues, o.nsFd) };
}

/**
 * Close a TAP's fds without blocking the event loop: closing the last fd of a non-persistent TAP
 * unregisters the device, and the kernel then waits for an RCU grace period (~16 ms).
 */
export function closeTapFds(fds: number[]): Promise<void> {
  return Promise.all(fds.map((fd) => new Promise<void>((resolve) => closeAsync(fd, () => resolve())))).then(
    () => undefined,
  );
}

/** `ip tuntap del dev NAME mode tap` (as `ip link del NAME`). Already gone is success. */
export function deleteTap(nl: NetlinkSocket, name: string): void {
  deleteLink(nl, validateIfname(name, 'TAP name'));
}
