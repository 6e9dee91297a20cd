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
import type { Firewall, FirewallNetwork } from '../firewall/types.js';
import type { ResolvedNetwork } from '../manager/config.js';
import { NetworkManager } from '../manager/manager.js';
import { listAddresses } from '../net/addr.js';
import { findLink } from '../net/link.js';
import { getSysctl, type Netns, openNetns } from '../net/netns.js';
import { NetlinkSocket } from '../netlink/socket.js';
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
  probeDns,
} from './doctor-host.js';
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

/** The firewall's view of a network (as the manager builds it). */
function fwNetwork(n: ResolvedNetwork): FirewallNetwork {
  return {
    name: n.name,
    topology: n.topology,
    bridge: n.bridge,
    tapPrefix: n.tapPrefix,
    ...(n.subnet4 ? { subnet4: n.subnet4 } : {}),
    ...(n.subnet6 ? { subnet6: n.subnet6 } : {}),
    nat: n.nat,
    isolate: n.isolate,
  };
}

interface Kernel {
  ns: Netns | undefined;
  nl: NetlinkSocket;
  firewall: Firewall | undefined;
  firewallError?: string;
  close(): void;
}

function openKernel(opts: DoctorOptions): Kernel {
  const m = opts.manager;
  if (m) return { ns: m.ns, nl: m.nl, firewall: m.firewall, close() {} };
  const cfg = opts.loaded.resolved;
  const ns = cfg.netns ? openNetns(cfg.netns) : undefined;
  const nsOpt = ns ? { nsFd: ns.fd } : {};
  const nl = NetlinkSocket.open(nsOpt);
  let firewall: Firewall | undefined;
  let firewallError: string | undefined;
  try {
    firewall = createFirewall(cfg.firewall, nsOpt);
  } catch (e) {
    firewallError = toTapnetError(e).message;
  }
  return {
    ns,
    nl,
    firewall,
    ...(firewallError ? { firewallError } : {}),
    close() {
      firewall?.close();
      nl.close();
      ns?.close();
    },
  };
}

function networkChecks(k: Kernel, nets: ResolvedNetwork[], vmsByNet: Map<string, number>): DoctorCheck[] {
  const out: DoctorCheck[] = [];
  for (const net of nets) {
    const id = `network.${net.name}`;
    const inUse = (vmsByNet.get(net.name) ?? 0) > 0;
    const br = findLink(k.nl, net.bridge);
    if (!br) {
      out.push({
        id,
        status: inUse ? 'fail' : 'warn',
        message: `bridge ${net.bridge} does not exist${inUse ? ` but ${vmsByNet.get(net.name)} VM(s) use it` : ' yet (made by the first `tapnet up`)'}`,
        fix: 'tapnet gc (or start the daemon: it reconciles)',
      });
      continue;
    }
    const have = new Set(listAddresses(k.nl, { index: br.index }).map((a) => a.address));
    const lack = [net.gateway4, net.gateway6].filter((g): g is string => g !== undefined && !have.has(g));
    if (!br.up || lack.length) {
      out.push({
        id,
        status: 'fail',
        message: `bridge ${net.bridge}${br.up ? '' : ' is down'}${lack.length ? ` lacks ${lack.join(', ')}` : ''}`,
        fix: 'tapnet gc',
      });
    } else {
      out.push({
        id,
        status: 'ok',
        message: `bridge ${net.bridge} is up with ${[net.gateway4, net.gateway6].filter(Boolean).join(', ')}`,
      });
    }
  }
  return out;
}

function forwardingChecks(k: Kernel, nets: ResolvedNetwork[]): DoctorCheck[] {
  const out: DoctorCheck[] = [];
  const want: [string, string, boolean][] = [
    ['net/ipv4/ip_forward', 'net.ipv4.ip_forward', nets.some((n) => n.subnet4)],
    ['net/ipv6/conf/all/forwarding', 'net.ipv6.conf.all.forwarding', nets.some((n) => n.subnet6)],
  ];
  for (const [key, name, needed] of want) {
    if (!needed) continue;
    let v = '?';
    try {
      v = getSysctl(k.ns, key);
    } catch {}
    out.push(
      v === '1'
        ? { id: `sysctl.${name}`, status: 'ok', message: `${name} = 1` }
        : {
            id: `sysctl.${name}`,
            status: 'fail',
            message: `${name} = ${v}: guests cannot reach beyond the host`,
            fix: `tapnet gc (sets it), or sysctl -w ${name}=1; check that nothing (e.g. a network manager) turns it off`,
          },
    );
  }
  return out;
}

function firewallChecks(
  k: Kernel,
  kind: string,
  nets: ResolvedNetwork[],
  vmsByNet: Map<string, number>,
): DoctorCheck[] {
  if (kind === 'none') {
    return [
      {
        id: 'firewall',
        status: 'info',
        message: 'firewall: none — no NAT, no anti-spoofing, no isolation between networks',
      },
    ];
  }
  if (!k.firewall) {
    return [
      {
        id: 'firewall',
        status: 'fail',
        message: `nftables unusable: ${k.firewallError}`,
        fix: 'install libnftables (Debian: libnftables1) and load nf_tables',
      },
    ];
  }
  const st = k.firewall.status(nets.map(fwNetwork));
  const out: DoctorCheck[] = [];
  for (const n of nets) {
    const s = st.networks.find((x) => x.name === n.name);
    const inUse = (vmsByNet.get(n.name) ?? 0) > 0;
    const problems = [
      ...(s?.problems ?? []),
      ...(st.tables.inet && st.tables.bridge ? [] : ['tapnet tables are missing']),
    ];
    if (!problems.length) {
      out.push({
        id: `firewall.${n.name}`,
        status: 'ok',
        message: `${n.nat ? 'NAT (masquerade) rule present' : 'no NAT (as configured)'}, anti-spoofing and ${n.isolate ? 'isolation' : 'no isolation'} in place`,
      });
    } else {
      out.push({
        id: `firewall.${n.name}`,
        status: inUse ? 'fail' : 'warn',
        message: problems.join('; '),
        fix: 'tapnet gc (re-applies the rules)',
      });
    }
  }
  return out;
}

async function dnsChecks(k: Kernel, nets: ResolvedNetwork[], timeoutMs: number): Promise<DoctorCheck[]> {
  const out: DoctorCheck[] = [];
  const probes: Promise<void>[] = [];
  for (const net of nets) {
    if (!net.dns.length) {
      out.push({
        id: `dns.${net.name}`,
        status: 'warn',
        message: `network ${net.name} gives guests no DNS server`,
        fix: `add networks.${net.name}.dns: [ … ] to the configuration`,
      });
      continue;
    }
    for (const server of net.dns) {
      const id = `dns.${net.name}.${server}`;
      probes.push(
        probeDns(server, k.ns?.fd, timeoutMs).then(
          (r) =>
            void out.push(
              r === 'answered'
                ? { id, status: 'ok', message: `${server} answers DNS queries` }
                : {
                    id,
                    status: 'fail',
                    message: `${server} ${r === 'timeout' ? 'did not answer within the timeout' : `is ${r}`}`,
                    fix: `check the route and firewall to ${server}, or change networks.${net.name}.dns`,
                  },
            ),
          (e: unknown) =>
            void out.push({
              id,
              status: 'fail',
              message: `${server}: ${toTapnetError(e).message}`,
              fix: 'check the address',
            }),
        ),
      );
    }
  }
  await Promise.all(probes);
  return out.sort((a, b) => a.id.localeCompare(b.id));
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

/** Run every check. Never throws for a failed check; each failure is a ✗ with its fix. */
export async function runDoctor(opts: DoctorOptions): Promise<DoctorReport> {
  const paths = opts.paths ?? HOST_PATHS;
  const cfg = opts.loaded.resolved;
  const nets = directNetworks(cfg.networks.values());
  const checks: DoctorCheck[] = [
    checkPrivileges(paths),
    ...checkModules(cfg.firewall === 'nftables', paths),
    checkTun(paths),
    checkKvm(paths),
  ];
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
    k = openKernel(opts);
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
      let m = opts.manager;
      let opened = false;
      const vmsByNet = new Map<string, number>();
      if (!m && existsSync(cfg.stateDir)) {
        try {
          m = await NetworkManager.open(managerPart(opts.loaded.config), {
            firewall: k.firewall ?? createFirewall('none'),
          });
          opened = true;
        } catch (e) {
          checks.push({
            id: 'state',
            status: 'fail',
            message: `cannot open the state: ${toTapnetError(e).message}`,
            fix: 'run as root; see the error',
          });
        }
      }
      try {
        if (m) for (const i of await m.list()) vmsByNet.set(i.network, (vmsByNet.get(i.network) ?? 0) + 1);
        checks.push(
          ...forwardingChecks(k, nets),
          ...networkChecks(k, nets, vmsByNet),
          ...firewallChecks(k, cfg.firewall, nets, vmsByNet),
        );
        checks.push(...(await dnsChecks(k, nets, opts.dnsTimeoutMs ?? 1500)));
        if (m) {
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
          checks.push(
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
          );
        }
      } finally {
        // Only close what doctor opened (Firewall.close() is idempotent: the kernel handle closes it too).
        if (opened && m) await m.close();
      }
    } finally {
      k.close();
    }
  }
  const d = daemonCheck(opts.daemon);
  if (d) checks.push(d);
  const counts: Record<CheckStatus, number> = { ok: 0, warn: 0, fail: 0, info: 0 };
  for (const c of checks) counts[c.status]++;
  return { ok: counts.fail === 0, counts, checks };
}
