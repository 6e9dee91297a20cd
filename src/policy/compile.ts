/**
 * Compiling policies: a VM's own policy merged with its network's default policy, ordered by priority,
 * `vm:` and `network:` peers resolved to CIDRs through a PeerResolver. The result (CompiledPolicy) is
 * what the firewall installs; validateCompiledPolicy() checks one again at the firewall's boundary.
 * Pure.
 */
import { z } from 'zod';
import { TapnetError } from '../errors.js';
import { formatCidr, parseCidr, parseIp } from '../ip.js';
import { formatPath } from './parse.js';
import {
  type CompiledDirection,
  type CompiledPolicy,
  type CompiledRule,
  MAX_PRIORITY,
  type ParsedPolicy,
  type ParsedRule,
  type PeerResolver,
  POLICY_LIMITS,
  type PolicyDirection,
  type PolicyPeer,
} from './types.js';

export interface CompileInput {
  /** The VM's own policy (parsePolicy output). */
  vm?: ParsedPolicy;
  /** Its network's default policy. */
  network?: ParsedPolicy;
  /** Resolves `vm:` and `network:` peers; without it, such peers are unresolved (match nothing). */
  resolver?: PeerResolver;
}

/** A host address as the resolver returned it, as a /32 or /128 CIDR. */
function hostCidr(v: unknown, family: 4 | 6, what: string): string {
  if (typeof v !== 'string')
    throw new TapnetError('ERR_INTERNAL', `resolver returned a non-string for ${what}`);
  const ip = parseIp(v.includes('/') ? v.slice(0, v.indexOf('/')) : v, what);
  if (ip.family !== family) throw new TapnetError('ERR_INVALID_ARGUMENT', `${what} ${v} is not IPv${family}`);
  return formatCidr({ family, addr: ip.value, network: ip.value, prefix: family === 4 ? 32 : 128 });
}

function subnetCidr(v: unknown, family: 4 | 6, what: string): string {
  if (typeof v !== 'string')
    throw new TapnetError('ERR_INTERNAL', `resolver returned a non-string for ${what}`);
  const c = parseCidr(v, what);
  if (c.family !== family) throw new TapnetError('ERR_INVALID_ARGUMENT', `${what} ${v} is not IPv${family}`);
  return formatCidr(c);
}

interface Resolved {
  v4: string[];
  v6: string[];
  unresolved: string[];
}

function resolvePeers(peers: readonly PolicyPeer[], resolver: PeerResolver | undefined): Resolved {
  const out: Resolved = { v4: [], v6: [], unresolved: [] };
  const push = (family: 4 | 6, cidr: string) => {
    const list = family === 4 ? out.v4 : out.v6;
    if (!list.includes(cidr)) list.push(cidr);
  };
  for (const p of peers) {
    if (p.kind === 'cidr') {
      push(p.family, p.cidr);
    } else if (p.kind === 'vm') {
      const r = resolver?.vm(p.id);
      if (!r || (r.ipv4 === undefined && r.ipv6 === undefined)) out.unresolved.push(`vm:${p.id}`);
      if (r?.ipv4 !== undefined) push(4, hostCidr(r.ipv4, 4, `vm:${p.id} IPv4 address`));
      if (r?.ipv6 !== undefined) push(6, hostCidr(r.ipv6, 6, `vm:${p.id} IPv6 address`));
    } else {
      const r = resolver?.network(p.name);
      if (!r || (r.subnet4 === undefined && r.subnet6 === undefined))
        out.unresolved.push(`network:${p.name}`);
      if (r?.subnet4 !== undefined) push(4, subnetCidr(r.subnet4, 4, `network:${p.name} subnet`));
      if (r?.subnet6 !== undefined) push(6, subnetCidr(r.subnet6, 6, `network:${p.name} subnet`));
    }
  }
  if (out.v4.length + out.v6.length > POLICY_LIMITS.peers) {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      `a rule's peers resolve to more than ${POLICY_LIMITS.peers} CIDRs`,
    );
  }
  return out;
}

function compileRule(
  r: ParsedRule,
  origin: 'vm' | 'network',
  resolver: PeerResolver | undefined,
  unresolved: Set<string>,
) {
  const out: CompiledRule = {
    protocol: r.protocol,
    action: r.action,
    priority: r.priority,
    origin,
    index: r.index,
  };
  if (r.ports) out.ports = r.ports.map(([lo, hi]) => [lo, hi]);
  if (r.peers) {
    const res = resolvePeers(r.peers, resolver);
    for (const u of res.unresolved) unresolved.add(u);
    out.peers = { v4: res.v4, v6: res.v6 };
  }
  return out;
}

/** A rule that can never match (every peer unresolved, or only peers of the other family). */
function matchesNothing(r: CompiledRule): boolean {
  if (!r.peers) return false;
  const v4 = r.protocol !== 'icmpv6' && r.peers.v4.length > 0;
  const v6 = r.protocol !== 'icmp' && r.peers.v6.length > 0;
  return !v4 && !v6;
}

function direction(input: CompileInput, d: PolicyDirection, unresolved: Set<string>): CompiledDirection {
  const rules: CompiledRule[] = [];
  for (const [origin, policy] of [
    ['vm', input.vm],
    ['network', input.network],
  ] as const) {
    for (const r of policy?.rules ?? []) {
      if (r.direction === d) rules.push(compileRule(r, origin, input.resolver, unresolved));
    }
  }
  // Lower priority first; on a tie the VM's own rule first, then document order.
  rules.sort(
    (a, b) =>
      a.priority - b.priority ||
      (a.origin === b.origin ? 0 : a.origin === 'vm' ? -1 : 1) ||
      a.index - b.index,
  );
  return {
    default: input.vm?.default ?? input.network?.default ?? 'allow',
    rules: rules.filter((r) => !matchesNothing(r)),
  };
}

/**
 * The effective policy of a VM: its own rules and its network's, ordered by priority (ties: the VM's
 * first), the VM's default (else the network's, else allow), peers resolved. Rules whose peers all
 * resolve to nothing are dropped; the peers are listed in `unresolved`.
 */
export function compilePolicy(input: CompileInput): CompiledPolicy {
  const unresolved = new Set<string>();
  const egress = direction(input, 'egress', unresolved);
  const ingress = direction(input, 'ingress', unresolved);
  return { version: 1, egress, ingress, unresolved: [...unresolved].sort() };
}

/** True when a direction lets everything through (no rule can deny): the firewall skips it. */
export function isOpen(d: CompiledDirection): boolean {
  return d.default === 'allow' && d.rules.every((r) => r.action === 'allow');
}

/** The VMs and networks a policy's peers name (to recompile it when they change). */
export function policyReferences(p: ParsedPolicy): { vms: string[]; networks: string[] } {
  const vms = new Set<string>();
  const networks = new Set<string>();
  for (const r of p.rules) {
    for (const peer of r.peers ?? []) {
      if (peer.kind === 'vm') vms.add(peer.id);
      else if (peer.kind === 'network') networks.add(peer.name);
    }
  }
  return { vms: [...vms].sort(), networks: [...networks].sort() };
}

// ---- the firewall's boundary check ----

const port = z.number().int().min(1).max(65535);
const canonicalCidr = (family: 4 | 6) =>
  z.string().refine((s) => {
    try {
      const c = parseCidr(s);
      return c.family === family && c.addr === c.network && formatCidr(c) === s;
    } catch {
      return false;
    }
  }, `not a canonical IPv${family} CIDR`);

const compiledRuleSchema = z.strictObject({
  protocol: z.enum(['tcp', 'udp', 'icmp', 'icmpv6', 'any']),
  ports: z
    .array(z.tuple([port, port]).refine(([lo, hi]) => lo <= hi, 'range starts after it ends'))
    .min(1)
    .max(POLICY_LIMITS.ports)
    .optional(),
  peers: z
    .strictObject({
      v4: z.array(canonicalCidr(4)).max(POLICY_LIMITS.peers),
      v6: z.array(canonicalCidr(6)).max(POLICY_LIMITS.peers),
    })
    .optional(),
  action: z.enum(['allow', 'deny', 'reject']),
  priority: z.number().int().min(0).max(MAX_PRIORITY),
  origin: z.enum(['vm', 'network']),
  index: z.number().int().min(0),
});

const compiledDirectionSchema = z.strictObject({
  default: z.enum(['allow', 'deny']),
  rules: z.array(compiledRuleSchema).max(2 * POLICY_LIMITS.rules),
});

const compiledSchema = z.strictObject({
  version: z.literal(1),
  egress: compiledDirectionSchema,
  ingress: compiledDirectionSchema,
  unresolved: z.array(z.string()),
});

/** Check a CompiledPolicy handed to the firewall (ERR_INVALID_ARGUMENT naming the field). */
export function validateCompiledPolicy(p: unknown): CompiledPolicy {
  const r = compiledSchema.safeParse(p);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const field = formatPath(issue.path);
    throw new TapnetError('ERR_INVALID_ARGUMENT', `compiled policy ${field}: ${issue.message}`, {
      details: { field },
    });
  }
  for (const d of ['egress', 'ingress'] as const) {
    r.data[d].rules.forEach((rule, i) => {
      if (rule.ports && rule.protocol !== 'tcp' && rule.protocol !== 'udp') {
        throw new TapnetError(
          'ERR_INVALID_ARGUMENT',
          `compiled policy ${d}.rules[${i}].ports: need tcp or udp`,
          {
            details: { field: `${d}.rules[${i}].ports` },
          },
        );
      }
    });
  }
  return r.data as CompiledPolicy;
}
