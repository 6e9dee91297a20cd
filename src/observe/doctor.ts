/**
 * `tapnet doctor`: everything users trip over, each as ✓/✗ with the fix — privileges, kernel modules,
 * /dev/net/tun, /dev/kvm, forwarding, every network's bridge and addresses, the NAT rules, CNI plugins,
 * configured DNS servers, leftovers of a crash, the daemon. Read-only: it opens sockets and reads the
 * store, and changes nothing (it never creates the state directory either).
 */
import { accessSync, constants, existsSync } from 'node:fs';
import type { LoadedConfig } from '../config/load.js';
import { managerPart } from '../config/schema.js';
import { toTapnetError } from '../errors.js';
import { createFirewall } from '../firewall/index.js';
import type { ResolvedNetwork } from '../manager/config.js';
import { NetworkManager } from '../manager/manager.js';
import { findLink } from '../net/link.js';
import {
  type CheckStatus,
  checkCni,
  checkKvm,
  checkModules,
  checkPrivileges,
  checkTun,
  type DoctorCheck,
  HOST_PATHS,
  type HostPaths,
  type ModuleEvidence,
} from './doctor-host.js';
import {
  dnsChecks,
  firewallChecks,
  forwardingChecks,
  type Kernel,
  networkChecks,
  openKernel,
} from './doctor-network.js';
import { directNetworks, isLeftover, verify } from './verify.js';

export type { CheckStatus, DoctorCheck };

export interface DoctorReport {
  /** No check failed (warnings allowed). */
  ok: boolean;
  counts: Record<CheckStatus, number>;
  checks: DoctorCheck[];
}

export interface DoctorOptions {
  loaded: LoadedConfig;
  /** A running manager to inspect (the daemon's); otherwise doctor opens what it needs itself. */
  manager?: NetworkManager;
  /** What the CLI found at the API socket. */
  daemon?: { socket: string; state: 'answering' | 'stale' | 'absent' };
  paths?: HostPaths;
  cniBinDirs?: readonly string[];
  cniConfDir?: string;
  dnsTimeoutMs?: number;
}

function stateDirCheck(dir: string): DoctorCheck {
  if (!existsSync(dir))
    return {
      id: 'state',
      status: 'info',
      message: `state directory ${dir} does not exist yet (created on first use)`,
    };
  try {
    accessSync(dir, constants.W_OK);
    return { id: 'state', status: 'ok', message: `state directory ${dir} is writable` };
  } catch {
    return {
      id: 'state',
      status: 'fail',
      message: `state directory ${dir} is not writable`,
      fix: `run as root, or fix the permissions of ${dir}`,
    };
  }
}

function daemonCheck(d: DoctorOptions['daemon']): DoctorCheck | undefined {
  if (!d) return undefined;
  if (d.state === 'answering')
    return { id: 'daemon', status: 'ok', message: `tapnet serve answers on ${d.socket}` };
  if (d.state === 'stale') {
    return {
      id: 'daemon',
      status: 'warn',
      message: `${d.socket} exists but nobody answers (a crashed daemon?)`,
      fix: 'systemctl restart tapnet, or remove the socket file',
    };
  }
  return { id: 'daemon', status: 'info', message: `no daemon on ${d.socket}: the CLI works in-process` };
}

/** Leftovers of a crash and VM problems, from verify(). */
async function stateChecks(m: NetworkManager): Promise<DoctorCheck[]> {
  const report = await verify(m);
  const left = report.problems.filter(isLeftover);
  const other = report.problems.filter(
    (p) => !isLeftover(p) && p.kind !== 'network' && p.kind !== 'firewall',
  );
  const list = (ps: typeof left) =>
    ps
      .slice(0, 5)
      .map((p) => p.message)
      .join('; ') + (ps.length > 5 ? `; … (${ps.length - 5} more)` : '');
  return [
    left.length
      ? {
          id: 'leftovers',
          status: 'fail',
          message: `${left.length} leftover(s) of a crash: ${list(left)}`,
          fix: 'tapnet gc',
        }
      : {
          id: 'leftovers',
          status: 'ok',
          message: 'no orphan TAPs, leases, firewall elements or half-done records',
        },
    other.length
      ? {
          id: 'vms',
          status: 'fail',
          message: `${other.length} problem(s) with VMs: ${list(other)}`,
          fix: 'tapnet verify --json for details; tapnet gc',
        }
      : {
          id: 'vms',
          status: 'ok',
          message: `${report.vms} VM(s), all consistent with the kernel and the firewall`,
        },
  ];
}

/** Everything that needs the managed namespace (and the state, when it exists). */
async function namespaceChecks(
  opts: DoctorOptions,
  k: Kernel,
  nets: ResolvedNetwork[],
  evidence: ModuleEvidence,
): Promise<DoctorCheck[]> {
  const cfg = opts.loaded.resolved;
  const out: DoctorCheck[] = [];
  let m = opts.manager;
  let opened = false;
  if (!m && existsSync(cfg.stateDir)) {
    try {
      m = await NetworkManager.open(managerPart(opts.loaded.config), {
        firewall: k.firewall ?? createFirewall('none'),
      });
      opened = true;
    } catch (e) {
      out.push({
        id: 'state',
        status: 'fail',
        message: `cannot open the state: ${toTapnetError(e).message}`,
        fix: 'run as root; see the error',
      });
    }
  }
  try {
    const vmsByNet = new Map<string, number>();
    if (m) for (const i of await m.list()) vmsByNet.set(i.network, (vmsByNet.get(i.network) ?? 0) + 1);
    out.push(...forwardingChecks(k, nets), ...networkChecks(k, nets, vmsByNet));
    evidence.bridge = nets.some((n) => findLink(k.nl, n.bridge)?.kind === 'bridge');
    try {
      out.push(...firewallChecks(k, cfg.firewall, nets, vmsByNet));
      evidence.nf_tables = cfg.firewall === 'nftables' && k.firewall !== undefined;
    } catch (e) {
      out.push({
        id: 'firewall',
        status: 'fail',
        message: `nftables: ${toTapnetError(e).message}`,
        fix: 'load nf_tables (modprobe nf_tables) and check libnftables',
      });
    }
    out.push(...(await dnsChecks(k, nets, opts.dnsTimeoutMs ?? 1500)));
    if (m) out.push(...(await stateChecks(m)));
  } finally {
    // Only close what doctor opened (Firewall.close() is idempotent: the kernel handle closes it too).
    if (opened && m) await m.close();
  }
  return out;
}

/** Run every check. Never throws for a failed check; each failure is a ✗ with its fix. */
export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const paths = opts.paths ?? HOST_PATHS;
  const cfg = opts.loaded.resolved;
  const nets = directNetworks(cfg.networks.values());
  const tun = checkTun(paths);
  const evidence: ModuleEvidence = {
    tun: tun.status === 'ok',
    vhost_net: existsSync(`${paths.dev}/vhost-net`),
  };
  const checks: DoctorCheck[] = [tun, checkKvm(paths)];
  // CNI mode: the plugin and conf directories of the first CNI network (or the usual places).
  const cniNet = [...cfg.networks.values()].find((n) => (n as { mode?: string }).mode === 'cni') as
    | { cni?: { confDir?: string; pluginPaths?: string[] } }
    | undefined;
  checks.push(
    ...checkCni(
      cniNet !== undefined,
      cniNet?.cni?.pluginPaths ?? opts.cniBinDirs,
      cniNet?.cni?.confDir ?? opts.cniConfDir,
    ),
  );
  checks.push(stateDirCheck(cfg.stateDir));
  let k: Kernel | undefined;
  try {
    k = openKernel(cfg, opts.manager);
  } catch (e) {
    checks.push({
      id: 'namespace',
      status: 'fail',
      message: `cannot open tapnet's network namespace: ${toTapnetError(e).message}`,
      fix: 'check `netns` in the configuration, and run as root',
    });
  }
  if (k) {
    try {
      checks.push(...(await namespaceChecks(opts, k, nets, evidence)));
    } finally {
      k.close();
    }
  }
  const d = daemonCheck(opts.daemon);
  if (d) checks.push(d);
  // Privileges and modules first: they explain most of what follows.
  checks.unshift(checkPrivileges(paths), ...checkModules(cfg.firewall === 'nftables', evidence, paths));
  const counts: Record<CheckStatus, number> = { ok: 0, warn: 0, fail: 0, info: 0 };
  for (const c of checks) counts[c.status]++;
  return { ok: counts.fail === 0, counts, checks };
}
