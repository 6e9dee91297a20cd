/**
 * Where tapnet keeps cluster state in etcd. Every key is built here from validated names, so no key can
 * escape its directory. Layout under the prefix (default `/tapnet`):
 *
 *   hosts/<host>/info                      {name, vtep, joinedAt, leaseId, left?}      persistent
 *   hosts/<host>/vms/<vmId>                the VM record (JSON; generation = etcd version)
 *   alive/<host>                           {leaseId, pid, since}        on the host's lease: gone = dead
 *   quarantine/<host>/<vmId>               an unreadable record, moved aside for a human
 *   pools/<network>/<subnet>               {network, subnet}: the pool has state
 *   ipam/<network>/<subnet>/leases/<addr>  {owner, host}
 *   ipam/<network>/<subnet>/cursor/<host>  the last address this host handed out (a hint)
 *   locks/<host>/<scope>/<name>/<lease>    lock waiters, on each process's session lease
 *   networks/<network>                     {vni, topology, subnet4?, subnet6?}: one definition cluster-wide
 *   vnis/<vni>                             the network that owns a VNI
 *   overlay/<network>/<host>/<vmId>        {mac, ipv4?, ipv6?}: what other hosts program
 *
 * `<subnet>` is the canonical CIDR with `/` as `_` (198.18.0.0_22, fd00::_64).
 */
import { invalidArgument } from '../errors.js';
import { formatCidr, parseCidr } from '../ip.js';
import type { PoolRef } from '../store/types.js';
import { validateName, validateVmId } from '../validate.js';

/** The default key prefix. */
export const DEFAULT_PREFIX = '/tapnet';

const PREFIX_RE = /^(\/[A-Za-z0-9][A-Za-z0-9_.-]{0,62}){1,4}$/;

/** A host name: like a network name (1-63 of A-Z a-z 0-9 _ . -, starting alphanumeric). */
export function validateHostName(host: unknown): string {
  return validateName(host, 'host name');
}

/** The key segment of a pool's subnet. */
export function subnetSegment(subnet: string): string {
  return formatCidr(parseCidr(subnet, 'pool subnet')).replace('/', '_');
}

/** The subnet of a key segment (inverse of subnetSegment). */
export function segmentSubnet(seg: string): string {
  const i = seg.lastIndexOf('_');
  if (i <= 0) throw invalidArgument(`${JSON.stringify(seg)} is not a subnet segment`);
  const subnet = `${seg.slice(0, i)}/${seg.slice(i + 1)}`;
  parseCidr(subnet, 'pool subnet');
  return subnet;
}

/** An address as a key segment (canonical text: IPv6 colons are fine in etcd keys). */
function addrSegment(addr: string): string {
  if (!/^[0-9a-fA-F.:]{2,45}$/.test(addr)) throw invalidArgument(`${JSON.stringify(addr)} is not an address`);
  return addr;
}

/** The key layout under one prefix. */
export class ClusterKeys {
  readonly prefix: string;

  constructor(prefix: string = DEFAULT_PREFIX) {
    if (typeof prefix !== 'string' || !PREFIX_RE.test(prefix) || prefix.includes('..')) {
      throw invalidArgument(
        `etcd key prefix ${JSON.stringify(prefix)} must look like /tapnet (1-4 segments of A-Z a-z 0-9 _ . -)`,
        {
          value: prefix,
        },
      );
    }
    this.prefix = prefix;
  }

  hostsDir(): string {
    return `${this.prefix}/hosts/`;
  }
  hostInfo(host: string): string {
    return `${this.prefix}/hosts/${validateHostName(host)}/info`;
  }
  recordsDir(host: string): string {
    return `${this.prefix}/hosts/${validateHostName(host)}/vms/`;
  }
  record(host: string, vmId: string): string {
    return `${this.recordsDir(host)}${validateVmId(vmId)}`;
  }
  aliveDir(): string {
    return `${this.prefix}/alive/`;
  }
  alive(host: string): string {
    return `${this.prefix}/alive/${validateHostName(host)}`;
  }
  quarantineDir(host: string): string {
    return `${this.prefix}/quarantine/${validateHostName(host)}/`;
  }
  quarantine(host: string, vmId: string): string {
    return `${this.quarantineDir(host)}${validateVmId(vmId)}`;
  }
  poolsDir(): string {
    return `${this.prefix}/pools/`;
  }
  poolMarker(ref: PoolRef): string {
    return `${this.prefix}/pools/${validateName(ref.network, 'network name')}/${subnetSegment(ref.subnet)}`;
  }
  ipamDir(): string {
    return `${this.prefix}/ipam/`;
  }
  poolDir(ref: PoolRef): string {
    return `${this.prefix}/ipam/${validateName(ref.network, 'network name')}/${subnetSegment(ref.subnet)}/`;
  }
  leasesDir(ref: PoolRef): string {
    return `${this.poolDir(ref)}leases/`;
  }
  lease(ref: PoolRef, addr: string): string {
    return `${this.leasesDir(ref)}${addrSegment(addr)}`;
  }
  cursor(ref: PoolRef, host: string): string {
    return `${this.poolDir(ref)}cursor/${validateHostName(host)}`;
  }
  locksDir(host: string): string {
    return `${this.prefix}/locks/${validateHostName(host)}/`;
  }
  lockDir(host: string, scope: string, name: string): string {
    return `${this.locksDir(host)}${scope}/${name}/`;
  }
  networksDir(): string {
    return `${this.prefix}/networks/`;
  }
  network(name: string): string {
    return `${this.prefix}/networks/${validateName(name, 'network name')}`;
  }
  vni(vni: number): string {
    return `${this.prefix}/vnis/${vni}`;
  }
  overlayDir(network: string): string {
    return `${this.prefix}/overlay/${validateName(network, 'network name')}/`;
  }
  overlayHostDir(network: string, host: string): string {
    return `${this.overlayDir(network)}${validateHostName(host)}/`;
  }
  overlayEntry(network: string, host: string, vmId: string): string {
    return `${this.overlayHostDir(network, host)}${validateVmId(vmId)}`;
  }

  /** The segments of `key` after `dir` (which must be a directory key ending in `/`), or undefined. */
  rest(dir: string, key: string): string[] | undefined {
    if (!key.startsWith(dir)) return undefined;
    return key.slice(dir.length).split('/');
  }
}
