/**
 * Network and manager configuration: the zod schema, defaults that make zero configuration work, and
 * resolution of derived values (gateway, bridge MAC, pools). Errors name the bad key and value.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { TapnetError } from '../errors.js';
import {
  cidrContains,
  cidrsOverlap,
  formatCidr,
  formatIp,
  parseCidr,
  parseIp,
  prefixSize,
  validateUnicastMac,
} from '../ip.js';
import { parsePolicy } from '../policy/parse.js';
import type { ParsedPolicy } from '../policy/types.js';
import { validateIfname, validateName } from '../validate.js';

const name = z
  .string()
  .refine(
    (s) => safe(() => validateName(s)),
    'must be 1-63 characters of A-Z a-z 0-9 _ . - starting alphanumeric',
  );
const ifname = z
  .string()
  .refine(
    (s) => safe(() => validateIfname(s)),
    'must be a valid interface name (1-15 bytes, no / : or spaces)',
  );
const cidr4 = z
  .string()
  .refine((s) => safe(() => parseCidr(s).family === 4), 'must be an IPv4 CIDR like 198.18.0.0/24');
const cidr6 = z
  .string()
  .refine((s) => safe(() => parseCidr(s).family === 6), 'must be an IPv6 CIDR like fd00:198:18::/64');
const ip = z.string().refine((s) => safe(() => parseIp(s)), 'must be an IP address');
const mac = z
  .string()
  .refine((s) => safe(() => validateUnicastMac(s)), 'must be a unicast MAC like 02:00:00:00:00:01');

function safe(fn: () => unknown): boolean {
  try {
    return fn() !== false;
  } catch {
    return false;
  }
}

/** CNI mode: how to run the network's conflist for each VM. */
export const cniNetworkSchema = z
  .object({
    /** The conflist's `name` (found in confDir as libcni does). Default: the network's name. */
    network: name.optional(),
    confDir: z.string().min(1).default('/etc/cni/net.d'),
    pluginPaths: z.array(z.string().min(1)).min(1).default(['/opt/cni/bin', '/usr/lib/cni']),
    cacheDir: z.string().min(1).default('/var/lib/cni'),
    /** CNI_IFNAME inside the VM's namespace. */
    ifname: ifname.default('eth0'),
    /** VM namespaces are /run/netns/<netnsPrefix>-<vmId>. */
    netnsPrefix: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,31}$/, 'must be 1-32 characters of a-z 0-9 -')
      .default('tapnet'),
    /** Time limit per plugin invocation. */
    timeoutMs: z.number().int().min(100).max(600_000).default(30_000),
  })
  .strict();

export const networkSchema = z
  .object({
    /** direct: tapnet makes the TAP, addresses and firewall itself. cni: a per-VM namespace and a CNI conflist. */
    mode: z.enum(['direct', 'cni']).default('direct'),
    cni: cniNetworkSchema.optional(),
    /** bridge: TAPs are ports of a Linux bridge (L2, ≤ 1,023 VMs). routed: point-to-point TAPs, /32 routes (L3, 10,000+). */
    topology: z.enum(['bridge', 'routed']).default('bridge'),
    /** Bridge name (bridge topology) or the gateway holder's name (routed). Default: `tn-<network>` cut to 15 bytes. */
    bridge: ifname.optional(),
    /** Fixed MAC for the bridge; default derived from the network name (stable, locally administered). */
    bridgeMac: mac.optional(),
    subnet4: cidr4.optional(),
    gateway4: ip.optional(),
    subnet6: cidr6.optional(),
    gateway6: ip.optional(),
    mtu: z.number().int().min(576).max(65535).default(1500),
    dns: z.array(ip).max(8).default([]),
    nat: z.boolean().default(true),
    /** VMs of this network cannot reach other networks' VMs (default true). */
    isolate: z.boolean().default(true),
    /** Default policy of the network's VMs (a policy document, see docs/POLICY.md); a VM's own policy adds to it. */
    policy: z.unknown().optional(),
    /** Prefix of TAP names for this network (≤ 5 bytes; the rest of the 15 is a hash of the VM id). */
    tapPrefix: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,4}$/, 'must be 1-5 characters of a-z 0-9 -')
      .optional(),
    /** local: this host only. cluster: one pool and one L2 network across hosts (needs `cluster`; docs/CLUSTER.md). */
    scope: z.enum(['local', 'cluster']).default('local'),
    /** The VXLAN network identifier of a cluster network. Default: derived from the network's name. */
    vni: z.number().int().min(1).max(0xffffff).optional(),
  })
  .strict();

export const managerConfigSchema = z
  .object({
    stateDir: z.string().min(1).default('/var/lib/tapnet'),
    /**
     * journal (default): one append-only journal, no file created per VM (≈ 0.06 ms per ensure on disk).
     * files: one pretty JSON file per VM and one symlink per lease.
     */
    storeBackend: z.enum(['journal', 'files']).default('journal'),
    /** The network namespace tapnet manages (a name under /run/netns or a path); default: the current one. */
    netns: z.string().optional(),
    defaultNetwork: name.default('default'),
    networks: z.record(name, networkSchema).default({}),
    firewall: z.enum(['nftables', 'none']).default('nftables'),
    /** TAP name prefix for all networks unless a network sets its own. */
    tapPrefix: z
      .string()
      .regex(/^[a-z][a-z0-9-]{0,4}$/)
      .default('tn'),
  })
  .strict();

export type NetworkConfigInput = z.input<typeof networkSchema>;
export type ManagerConfigInput = z.input<typeof managerConfigSchema>;

/** A network with every derived value filled in. */
export type CniNetworkConfig = z.output<typeof cniNetworkSchema> & { network: string };

export interface ResolvedNetwork {
  name: string;
  mode: 'direct' | 'cni';
  /** CNI mode settings (mode 'cni'). */
  cni?: CniNetworkConfig;
  topology: 'bridge' | 'routed';
  /** bridge topology: the bridge; routed: a port-less bridge holding the gateway addresses. */
  bridge: string;
  bridgeMac: string;
  subnet4?: string;
  gateway4?: string;
  prefix4?: number;
  subnet6?: string;
  gateway6?: string;
  prefix6?: number;
  mtu: number;
  dns: string[];
  nat: boolean;
  isolate: boolean;
  tapPrefix: string;
  /** local, or cluster (the overlay spans the hosts of the cluster). */
  scope: 'local' | 'cluster';
  /** A cluster network's VNI, when configured. */
  vni?: number;
  /** The network's default policy (parsed). */
  policy?: ParsedPolicy;
}

export interface ResolvedConfig {
  stateDir: string;
  storeBackend: 'journal' | 'files';
  netns?: string;
  defaultNetwork: string;
  networks: Map<string, ResolvedNetwork>;
  firewall: 'nftables' | 'none';
}

/** The network used when none is configured: a bridge on 198.18.0.0/22 (1,021 VMs, the bridge's port limit). */
export const DEFAULT_NETWORK: NetworkConfigInput = { topology: 'bridge', subnet4: '198.18.0.0/22' };

/** A stable locally administered unicast MAC from a seed: 02:xx:xx:xx:xx:xx. */
export function derivedMac(seed: string, first = 0x02): string {
  const h = createHash('sha256').update(seed).digest();
  const b = Buffer.from([first, h[0]!, h[1]!, h[2]!, h[3]!, h[4]!]);
  b[0] = (b[0]! | 0x02) & 0xfe;
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

function zodMessage(e: z.ZodError, where: string): string {
  return e.issues
    .map((i) => `${where}${i.path.length ? `.${i.path.join('.')}` : ''}: ${i.message}`)
    .join('; ');
}

function resolveNetwork(
  netName: string,
  raw: z.output<typeof networkSchema>,
  globalPrefix: string,
): ResolvedNetwork {
  const where = `networks.${netName}`;
  const bad = (msg: string) =>
    new TapnetError('ERR_CONFIG', `${where}: ${msg}`, { details: { network: netName } });
  if (raw.mode === 'direct' && !raw.subnet4 && !raw.subnet6) throw bad('needs subnet4 or subnet6');
  if (raw.mode === 'direct' && raw.cni) throw bad('cni settings need mode: "cni"');
  const out: ResolvedNetwork = {
    name: netName,
    mode: raw.mode,
    ...(raw.mode === 'cni'
      ? { cni: { ...cniNetworkSchema.parse(raw.cni ?? {}), network: raw.cni?.network ?? netName } }
      : {}),
    topology: raw.topology,
    bridge: raw.bridge ?? `tn-${netName}`.slice(0, 15),
    bridgeMac: raw.bridgeMac ?? derivedMac(`tapnet-bridge:${netName}`),
    mtu: raw.mtu,
    dns: raw.dns,
    nat: raw.nat,
    isolate: raw.isolate,
    tapPrefix: raw.tapPrefix ?? globalPrefix,
    scope: raw.scope,
    ...(raw.vni !== undefined ? { vni: raw.vni } : {}),
  };
  if (raw.scope === 'cluster' && raw.mode !== 'direct') throw bad('scope "cluster" needs mode "direct"');
  if (raw.vni !== undefined && raw.scope !== 'cluster') throw bad('vni needs scope: "cluster"');
  if (raw.policy !== undefined) {
    try {
      out.policy = parsePolicy(raw.policy);
    } catch (e) {
      throw bad(`policy: ${(e as Error).message}`);
    }
  }
  validateIfname(out.bridge, `${where}.bridge`);
  for (const fam of [4, 6] as const) {
    const subnet = fam === 4 ? raw.subnet4 : raw.subnet6;
    if (!subnet) continue;
    const c = parseCidr(subnet);
    const maxPrefix = fam === 4 ? 30 : 126;
    if (c.prefix > maxPrefix) throw bad(`subnet${fam} ${subnet} is too small (at most /${maxPrefix})`);
    const gwText = fam === 4 ? raw.gateway4 : raw.gateway6;
    const gw = gwText ? parseIp(gwText) : { family: fam, value: c.network + 1n };
    if (gw.family !== fam || !cidrContains(c, gw))
      throw bad(`gateway${fam} ${gwText} is not inside ${subnet}`);
    if (gw.value === c.network || (fam === 4 && gw.value === c.network + prefixSize(4, c.prefix) - 1n)) {
      throw bad(`gateway${fam} ${gwText} is the network or broadcast address`);
    }
    if (fam === 4) {
      out.subnet4 = formatCidr(c);
      out.gateway4 = formatIp(4, gw.value);
      out.prefix4 = c.prefix;
    } else {
      out.subnet6 = formatCidr(c);
      out.gateway6 = formatIp(6, gw.value);
      out.prefix6 = c.prefix;
    }
  }
  return out;
}

/**
 * Validate and resolve a manager configuration. Throws ERR_CONFIG naming the bad key and value. With no
 * networks configured, the default network is DEFAULT_NETWORK.
 */
export function resolveConfig(input: ManagerConfigInput = {}): ResolvedConfig {
  const parsed = managerConfigSchema.safeParse(input);
  if (!parsed.success) throw new TapnetError('ERR_CONFIG', zodMessage(parsed.error, 'config'));
  const cfg = parsed.data;
  const rawNets = Object.keys(cfg.networks).length
    ? cfg.networks
    : { [cfg.defaultNetwork]: networkSchema.parse(DEFAULT_NETWORK) };
  const networks = new Map<string, ResolvedNetwork>();
  for (const [n, raw] of Object.entries(rawNets)) networks.set(n, resolveNetwork(n, raw, cfg.tapPrefix));
  if (!networks.has(cfg.defaultNetwork)) {
    throw new TapnetError('ERR_CONFIG', `config.defaultNetwork: no network named ${cfg.defaultNetwork}`);
  }
  const list = [...networks.values()].filter((n) => n.mode === 'direct');
  for (let i = 0; i < list.length; i++) {
    for (let j = i + 1; j < list.length; j++) {
      const a = list[i]!;
      const b = list[j]!;
      if (a.bridge === b.bridge)
        throw new TapnetError(
          'ERR_CONFIG',
          `networks ${a.name} and ${b.name} use the same bridge ${a.bridge}`,
        );
      for (const k of ['subnet4', 'subnet6'] as const) {
        const sa = a[k];
        const sb = b[k];
        if (sa && sb && cidrsOverlap(parseCidr(sa), parseCidr(sb))) {
          throw new TapnetError('ERR_CONFIG', `networks ${a.name} (${sa}) and ${b.name} (${sb}) overlap`);
        }
      }
    }
  }
  return {
    stateDir: cfg.stateDir,
    storeBackend: cfg.storeBackend,
    ...(cfg.netns !== undefined ? { netns: cfg.netns } : {}),
    defaultNetwork: cfg.defaultNetwork,
    networks,
    firewall: cfg.firewall,
  };
}

/** Parse a config object (e.g. from JSON) into the input type, for callers holding `unknown`. */
export function parseConfigInput(v: unknown): ManagerConfigInput {
  const parsed = managerConfigSchema.safeParse(v);
  if (!parsed.success) throw new TapnetError('ERR_CONFIG', zodMessage(parsed.error, 'config'));
  return v as ManagerConfigInput;
}
