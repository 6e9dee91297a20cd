/**
 * Compiled policy → nftables rules, as libnftables JSON expression lists (never text). Pure.
 *
 * One direction of a policy becomes the body of a "class chain" that every VM with the same compiled
 * direction shares (see src/firewall/policy.ts). The body is:
 *
 *   ct direction reply return                    replies of allowed connections pass
 *   ct state related return                      and ICMP errors about them
 *   [meta nfproto …] [meta l4proto …] [th dport {…}] [ip daddr|saddr {…}] return | goto <deny> | goto <reject>
 *   …                                            one rule per compiled rule and address family
 *   return | goto <deny>                         the default
 *
 * `return` allows (the caller goes on, e.g. to the destination VM's ingress check); deny and reject go
 * to shared chains that count the drop for the VM and drop (or reject: TCP reset, else ICMP
 * administratively prohibited). Egress rules match the peer as destination, ingress rules as source;
 * ports are always destination ports. Every value here is a number or an address re-formatted from its
 * parsed bits, so nothing from a policy document can change the rules' structure.
 */
import { createHash } from 'node:crypto';
import { anonSet, type Expr, gotoChain, match, meta, payload, prefix, ret } from '../firewall/nft-json.js';
import { parseCidr } from '../ip.js';
import type { CompiledDirection, CompiledRule, PolicyDirection, PortRange } from './types.js';

/** The chains a class chain sends denied and rejected packets to. */
export interface PolicyTargets {
  deny: string;
  reject: string;
}

const nfproto = (f: 4 | 6): Expr => match(meta('nfproto'), f === 4 ? 'ipv4' : 'ipv6');
const L4: Record<string, string> = { tcp: 'tcp', udp: 'udp', icmp: 'icmp', icmpv6: 'ipv6-icmp' };

function portValue([lo, hi]: PortRange): Expr {
  return lo === hi ? lo : { range: [lo, hi] };
}

/** One CIDR as a match value: a bare address for a host route, a prefix otherwise. */
function cidrValue(cidr: string): Expr {
  const c = parseCidr(cidr);
  if (c.prefix === (c.family === 4 ? 32 : 128)) return cidr.slice(0, cidr.indexOf('/'));
  return prefix(cidr);
}

function verdict(action: CompiledRule['action'], t: PolicyTargets): Expr {
  return action === 'allow' ? ret : gotoChain(action === 'deny' ? t.deny : t.reject);
}

/** The nft rules (expression lists) of one compiled rule: one per address family it applies to. */
export function ruleExpressions(r: CompiledRule, d: PolicyDirection, t: PolicyTargets): Expr[][] {
  const field = d === 'egress' ? 'daddr' : 'saddr';
  const onlyFamily = r.protocol === 'icmp' ? 4 : r.protocol === 'icmpv6' ? 6 : undefined;
  const variants: Array<{ family: 4 | 6 | undefined; cidrs?: string[] }> = [];
  if (!r.peers) {
    variants.push({ family: onlyFamily });
  } else {
    for (const family of [4, 6] as const) {
      const cidrs = family === 4 ? r.peers.v4 : r.peers.v6;
      if (cidrs.length === 0 || (onlyFamily !== undefined && onlyFamily !== family)) continue;
      variants.push({ family, cidrs });
    }
  }
  return variants.map(({ family, cidrs }) => {
    const expr: Expr[] = [];
    const everywhere = cidrs?.some((c) => c.endsWith('/0'));
    if (family !== undefined && (!cidrs || everywhere || onlyFamily !== undefined))
      expr.push(nfproto(family));
    if (r.protocol !== 'any') expr.push(match(meta('l4proto'), L4[r.protocol]!));
    if (r.ports) {
      const values = r.ports.map(portValue);
      expr.push(match(payload('th', 'dport'), values.length === 1 ? values[0]! : anonSet(values)));
    }
    if (cidrs && !everywhere) {
      const values = cidrs.map(cidrValue);
      expr.push(
        match(
          payload(family === 4 ? 'ip' : 'ip6', field),
          values.length === 1 ? values[0]! : anonSet(values),
        ),
      );
    }
    expr.push(verdict(r.action, t));
    return expr;
  });
}

/** The whole body of a class chain for one direction (see the header of this file). */
export function directionRules(dir: CompiledDirection, d: PolicyDirection, t: PolicyTargets): Expr[][] {
  return [
    [match({ ct: { key: 'direction' } }, 'reply'), ret],
    [{ match: { op: 'in', left: { ct: { key: 'state' } }, right: 'related' } }, ret],
    ...dir.rules.flatMap((r) => ruleExpressions(r, d, t)),
    [dir.default === 'allow' ? ret : gotoChain(t.deny)],
  ];
}

/** A short content hash of a class chain's body: VMs whose bodies are equal share one chain. */
export function classHash(d: PolicyDirection, rules: Expr[][]): string {
  return createHash('sha256')
    .update(JSON.stringify([d, rules]))
    .digest('hex')
    .slice(0, 12);
}
