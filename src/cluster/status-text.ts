/**
 * `tapnet cluster status` as text for people (the JSON form is ClusterStatus itself). Pure.
 */
import type { ClusterStatus } from './membership.js';

/** A fixed-width table of the hosts, then the networks. */
export function formatClusterStatus(s: ClusterStatus): string {
  const rows = [
    ['HOST', 'VTEP', 'STATE', 'LEASE', 'TTL', 'VMS'],
    ...s.hosts.map((h) => [
      h.name,
      h.vtep,
      h.state,
      h.leaseId || '-',
      h.ttl === undefined ? '-' : `${h.ttl}s`,
      String(h.vms),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  const out = [`etcd ${s.endpoint}${s.prefix} (revision ${s.revision})`, ...rows.map(line)];
  if (s.networks.length > 0) {
    out.push('');
    for (const n of s.networks) {
      const subnets = [n.subnet4, n.subnet6].filter((x) => typeof x === 'string').join(' ');
      out.push(
        `network ${n.name}: vni ${String(n.vni ?? '?')}, ${String(n.topology ?? '?')}, mtu ${String(n.mtu ?? '?')}${subnets ? `, ${subnets}` : ''}`,
      );
    }
  }
  return `${out.join('\n')}\n`;
}
