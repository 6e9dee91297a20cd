/**
 * Doctor's checks of the managed namespace: forwarding, every network's bridge and gateway addresses,
 * the firewall (NAT, anti-spoofing, isolation) and the configured DNS servers.
 */
import { toTapnetError } from '../errors.js';
import { createFirewall } from '../firewall/index.js';
import type { Firewall, FirewallNetwork } from '../firewall/types.js';
import type { ResolvedConfig, ResolvedNetwork } from '../manager/config.js';
import { listAddresses } from '../net/addr.js';
import { findLink } from '../net/link.js';
import { getSysctl, type Netns, openNetns } from '../net/netns.js';
import { NetlinkSocket } from '../netlink/socket.js';
import { type DoctorCheck, probeDns } from './doctor-host.js';

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

/** Handles in the managed namespace: the manager's, or doctor's own. */
export interface Kernel {
  ns: Netns | undefined;
  nl: NetlinkSocket;
  firewall: Firewall | undefined;
  firewallError?: string;
  close(): void;
}

/** Open what the checks need in the managed namespace (or borrow the running manager's). */
export function openKernel(
  cfg: ResolvedConfig,
  m?: { ns: Netns | undefined; nl: NetlinkSocket; firewall: Firewall },
): Kernel {
  if (m) return { ns: m.ns, nl: m.nl, firewall: m.firewall, close() {} };
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

export function networkChecks(
  k: Kernel,
  nets: ResolvedNetwork[],
  vmsByNet: Map<string, number>,
): DoctorCheck[] {
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

export function forwardingChecks(k: Kernel, nets: ResolvedNetwork[]): DoctorCheck[] {
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

export function firewallChecks(
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

export async function dnsChecks(
  k: Kernel,
  nets: ResolvedNetwork[],
  timeoutMs: number,
): Promise<DoctorCheck[]> {
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
