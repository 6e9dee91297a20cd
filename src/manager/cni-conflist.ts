/**
 * The conflist Firecracker users need: `bridge` (with host-local IPAM) → `tc-redirect-tap`, as
 * firecracker-go-sdk's CNI examples use it; written atomically into a conf dir.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TapnetError } from '../errors.js';
import { cidrContains, formatCidr, formatIp, parseCidr, parseIp } from '../ip.js';
import { validateIfname, validateName } from '../validate.js';

export interface FirecrackerConflistOptions {
  /** Network (conflist) name. Default `fcnet`. */
  name?: string;
  /** Bridge name. Default `fcbr0`. */
  bridge?: string;
  /** Subnet. Default 10.168.0.0/24 (firecracker-go-sdk's examples). */
  subnet?: string;
  /** Gateway. Default: the subnet's first address. */
  gateway?: string;
  /** CNI spec version. Default 1.0.0. */
  cniVersion?: string;
  /** host-local's data dir (default: the plugin's own, /var/lib/cni/networks). */
  dataDir?: string;
  /** Masquerade traffic leaving the subnet (bridge's ipMasq). Default true. */
  ipMasq?: boolean;
  mtu?: number;
}

/** Build the conflist document (validated). */
export function firecrackerConflist(o: FirecrackerConflistOptions = {}): Record<string, unknown> {
  const name = validateName(o.name ?? 'fcnet', 'network name');
  const bridge = validateIfname(o.bridge ?? 'fcbr0', 'bridge name');
  const subnet = parseCidr(o.subnet ?? '10.168.0.0/24', 'subnet');
  if (subnet.family !== 4 || subnet.prefix > 30)
    throw new TapnetError('ERR_INVALID_ARGUMENT', 'subnet must be an IPv4 prefix of /30 or larger');
  const gw = o.gateway ? parseIp(o.gateway, 'gateway') : { family: 4 as const, value: subnet.network + 1n };
  if (!cidrContains(subnet, gw))
    throw new TapnetError('ERR_INVALID_ARGUMENT', `gateway ${o.gateway} is not in ${formatCidr(subnet)}`);
  const cniVersion = o.cniVersion ?? '1.0.0';
  if (!/^\d+\.\d+\.\d+$/.test(cniVersion))
    throw new TapnetError('ERR_INVALID_ARGUMENT', `bad cniVersion ${cniVersion}`);
  const ipam: Record<string, unknown> = {
    type: 'host-local',
    subnet: formatCidr(subnet),
    gateway: formatIp(4, gw.value),
    routes: [{ dst: '0.0.0.0/0' }],
  };
  if (o.dataDir) ipam.dataDir = o.dataDir;
  const bridgePlugin: Record<string, unknown> = {
    type: 'bridge',
    bridge,
    isGateway: true,
    ipMasq: o.ipMasq ?? true,
    ipam,
  };
  if (o.mtu !== undefined) bridgePlugin.mtu = o.mtu;
  return { cniVersion, name, plugins: [bridgePlugin, { type: 'tc-redirect-tap' }] };
}

/** Write the conflist as `<dir>/<name>.conflist` atomically (temp file + rename). Returns the path. */
export function writeConflist(dir: string, doc: Record<string, unknown>): string {
  const name = validateName(doc.name, 'network name');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.conflist`);
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(doc, null, 2)}\n`, { mode: 0o644 });
  renameSync(tmp, path);
  return path;
}
