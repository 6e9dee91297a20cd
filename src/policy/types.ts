/**
 * Network policy types: the document users write (JSON, `ensure` options, `PUT /v1/vms/{vmId}/policy`),
 * its parsed form, the resolver that turns `vm:` and `network:` peers into addresses, and the compiled
 * form the firewall installs. Pure; imports nothing.
 *
 * Semantics (see docs/POLICY.md): rules are evaluated in priority order (lower first); the first rule
 * matching a packet decides; `default` decides when none matches. Policies are stateful: packets of a
 * connection in its reply direction, and ICMP errors related to it, always pass, so "deny everything
 * else" never breaks the answers to allowed traffic. Every packet in a connection's original direction
 * is checked, so a live update cuts flows the new policy no longer allows and leaves the others alone.
 */

export type PolicyDefault = 'allow' | 'deny';
export type PolicyAction = 'allow' | 'deny' | 'reject';
export type PolicyDirection = 'ingress' | 'egress';
export type PolicyProtocol = 'tcp' | 'udp' | 'icmp' | 'icmpv6' | 'any';

/** One rule as written. */
export interface PolicyRuleInput {
  direction: PolicyDirection;
  protocol: PolicyProtocol;
  /** tcp/udp only: destination ports, `80` or `"1000-2000"`. Absent: every port. */
  ports?: Array<number | string>;
  /** CIDRs (`198.18.0.0/24`, `fd00::/64`, a bare address), `vm:<id>` or `network:<name>`. Absent: anywhere. */
  peers?: string[];
  action: PolicyAction;
  /** 0-65535, lower first; default DEFAULT_PRIORITY. */
  priority?: number;
}

/** A policy document as written. */
export interface PolicyDocument {
  default: PolicyDefault;
  rules?: PolicyRuleInput[];
}

/** An inclusive port range. */
export type PortRange = [number, number];

/** A peer after parsing: literal CIDRs, or a reference resolved at compile time. */
export type PolicyPeer =
  | { kind: 'cidr'; family: 4 | 6; cidr: string }
  | { kind: 'vm'; id: string }
  | { kind: 'network'; name: string };

/** A rule after parsing: canonical and sorted ports, typed peers, priority filled in. */
export interface ParsedRule {
  direction: PolicyDirection;
  protocol: PolicyProtocol;
  ports?: PortRange[];
  peers?: PolicyPeer[];
  action: PolicyAction;
  priority: number;
  /** Position in the document's `rules` (for error messages and stable ordering). */
  index: number;
}

/** A policy after parsing (parsePolicy): valid and canonical, peers not yet resolved. */
export interface ParsedPolicy {
  default: PolicyDefault;
  rules: ParsedRule[];
}

/** Addresses a `vm:<id>` peer stands for (host addresses, no prefix). */
export interface ResolvedVm {
  ipv4?: string;
  ipv6?: string;
}

/** Subnets a `network:<name>` peer stands for. */
export interface ResolvedNetwork {
  subnet4?: string;
  subnet6?: string;
}

/**
 * Turns `vm:` and `network:` peers into addresses when a policy is compiled. Return undefined for an
 * unknown VM or network: the peer then matches nothing (an allow rule allows nothing more, a deny rule
 * denies nothing more) and is listed in CompiledPolicy.unresolved.
 */
export interface PeerResolver {
  vm(id: string): ResolvedVm | undefined;
  network(name: string): ResolvedNetwork | undefined;
}

/** One rule as the firewall installs it: peers are CIDR lists (undefined: anywhere). */
export interface CompiledRule {
  protocol: PolicyProtocol;
  ports?: PortRange[];
  /** Canonical CIDRs per family. Present means "only these"; an empty family list matches nothing there. */
  peers?: { v4: string[]; v6: string[] };
  action: PolicyAction;
  priority: number;
  /** Where it came from: the VM's own policy or its network's default policy, and its index there. */
  origin: 'vm' | 'network';
  index: number;
}

/** One direction's ordered rules and default. */
export interface CompiledDirection {
  default: PolicyDefault;
  rules: CompiledRule[];
}

/** A VM's effective policy: its own merged with its network's, ordered, peers resolved. */
export interface CompiledPolicy {
  version: 1;
  egress: CompiledDirection;
  ingress: CompiledDirection;
  /** Peers that resolved to nothing, as `vm:<id>` / `network:<name>`. */
  unresolved: string[];
}

/** Lowest and highest priority; the default when a rule gives none. */
export const MIN_PRIORITY = 0;
export const MAX_PRIORITY = 65535;
export const DEFAULT_PRIORITY = 1000;

/** Limits that keep one document's rules, sets and batches small (ERR_INVALID_ARGUMENT beyond). */
export const POLICY_LIMITS = {
  /** Rules in one document. */
  rules: 1024,
  /** Entries of one rule's `ports`. */
  ports: 128,
  /** Entries of one rule's `peers` (and CIDRs after resolution). */
  peers: 256,
  /** Bytes of a policy document given as JSON text. */
  documentBytes: 1 << 20,
} as const;
