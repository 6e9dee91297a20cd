/**
 * Strict parsing of policy documents. The shape is checked by a zod schema (unknown keys, wrong types,
 * missing fields, too many entries); every value is then parsed by hand into a canonical form. Every
 * failure is one ERR_INVALID_ARGUMENT naming the exact field (`rules[2].ports[0]`) with the offending
 * value quoted and cut short. Nothing from a document ever reaches nftables as text: ports become
 * integers, CIDRs are re-formatted from their parsed bits, names are checked against strict sets. Pure.
 */
import { z } from 'zod';
import { TapnetError } from '../errors.js';
import { formatCidr, formatIp, parseCidr, parseIp } from '../ip.js';
import { validateName, validateVmId } from '../validate.js';
import {
  DEFAULT_PRIORITY,
  MAX_PRIORITY,
  MIN_PRIORITY,
  type ParsedPolicy,
  type ParsedRule,
  POLICY_LIMITS,
  type PolicyDocument,
  type PolicyPeer,
  type PortRange,
} from './types.js';

const ruleSchema = z.strictObject({
  direction: z.enum(['ingress', 'egress']),
  protocol: z.enum(['tcp', 'udp', 'icmp', 'icmpv6', 'any']),
  ports: z
    .array(z.union([z.number(), z.string()]))
    .min(1)
    .max(POLICY_LIMITS.ports)
    .optional(),
  peers: z.array(z.string()).min(1).max(POLICY_LIMITS.peers).optional(),
  action: z.enum(['allow', 'deny', 'reject']),
  priority: z.number().optional(),
});

const documentSchema = z.strictObject({
  default: z.enum(['allow', 'deny']),
  rules: z.array(z.unknown()).max(POLICY_LIMITS.rules).optional(),
});

type Path = ReadonlyArray<string | number | symbol>;

/** `["rules", 2, "ports", 0]` → `rules[2].ports[0]` (the document itself: `policy`). */
export function formatPath(path: Path): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out || 'policy';
}

/** A value quoted for an error message: JSON, at most 60 characters. */
function quote(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = Object.prototype.toString.call(v);
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** The error for one bad field. */
export function policyFieldError(path: Path, message: string, value?: unknown): TapnetError {
  const field = formatPath(path);
  return new TapnetError('ERR_INVALID_ARGUMENT', `policy ${field}: ${message}`, {
    details: { field, ...(value !== undefined ? { value: quote(value) } : {}) },
  });
}

function valueAt(root: unknown, path: Path): unknown {
  let v: unknown = root;
  for (const p of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number | symbol, unknown>)[p as string];
  }
  return v;
}

/** The first zod issue as a policy error (the first is enough: fix it and try again). */
function fromZod(issues: z.core.$ZodIssue[], root: unknown, base: Path): TapnetError {
  const issue = issues[0]!;
  const path = [...base, ...issue.path];
  if (issue.code !== 'unrecognized_keys' && valueAt(root, issue.path) === undefined) {
    return policyFieldError(path, 'is required');
  }
  switch (issue.code) {
    case 'unrecognized_keys':
      return policyFieldError(
        [...path, issue.keys[0]!],
        `unknown field (allowed: ${allowedKeys(path).join(', ')})`,
      );
    case 'invalid_value':
      return policyFieldError(
        path,
        `must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`,
        valueAt(root, issue.path),
      );
    case 'invalid_type': {
      const v = valueAt(root, issue.path);
      return policyFieldError(path, `must be ${article(issue.expected)}, not ${kindOf(v)}`, v);
    }
    case 'invalid_union':
      return policyFieldError(
        path,
        'must be a port number or a "low-high" range string',
        valueAt(root, issue.path),
      );
    case 'too_big':
      return policyFieldError(path, `has more than ${issue.maximum} entries`);
    case 'too_small':
      return policyFieldError(path, 'must not be empty (leave the field out to mean "any")');
    default:
      return policyFieldError(path, issue.message, valueAt(root, issue.path));
  }
}

function allowedKeys(path: Path): string[] {
  return path.length === 0 ? ['default', 'rules'] : Object.keys(ruleSchema.shape);
}

function article(t: string): string {
  return /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`;
}

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `a ${typeof v}`;
}

const PORT_RE = /^([1-9][0-9]{0,4})(?:-([1-9][0-9]{0,4}))?$/;

/** One `ports` entry: an integer 1-65535 or a "low-high" string (or a single port as a string). */
function parsePort(v: number | string, path: Path): PortRange {
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 1 || v > 65535) {
      throw policyFieldError(path, 'a port must be an integer from 1 to 65535', v);
    }
    return [v, v];
  }
  const m = PORT_RE.exec(v);
  if (!m) throw policyFieldError(path, 'must be a port (80) or a range of ports ("1000-2000")', v);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > 65535 || hi > 65535) throw policyFieldError(path, 'ports go from 1 to 65535', v);
  if (lo > hi) throw policyFieldError(path, 'the range starts after it ends', v);
  return [lo, hi];
}

/** Sorted, with overlapping and adjacent ranges merged. */
export function mergeRanges(ranges: readonly PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  const out: PortRange[] = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && lo <= last[1] + 1) last[1] = Math.max(last[1], hi);
    else out.push([lo, hi]);
  }
  return out;
}

const CIDR_CHARS_RE = /^[0-9A-Fa-f:.]+(?:\/[0-9]{1,3})?$/;

/** One `peers` entry: `vm:<id>`, `network:<name>`, a CIDR with no host bits set, or a bare address. */
function parsePeer(v: string, path: Path): PolicyPeer {
  if (v.startsWith('vm:')) {
    try {
      return { kind: 'vm', id: validateVmId(v.slice(3)) };
    } catch {
      throw policyFieldError(path, 'vm:<id> needs a VM id of 1-128 characters of A-Z a-z 0-9 _ . -', v);
    }
  }
  if (v.startsWith('network:')) {
    try {
      return { kind: 'network', name: validateName(v.slice(8), 'network name') };
    } catch {
      throw policyFieldError(
        path,
        'network:<name> needs a network name of 1-63 characters of A-Z a-z 0-9 _ . -',
        v,
      );
    }
  }
  if (!CIDR_CHARS_RE.test(v)) {
    throw policyFieldError(
      path,
      'must be a CIDR (198.18.0.0/24, fd00::/64), an address, vm:<id> or network:<name>',
      v,
    );
  }
  try {
    if (!v.includes('/')) {
      const ip = parseIp(v);
      return {
        kind: 'cidr',
        family: ip.family,
        cidr: `${formatIp(ip.family, ip.value)}/${ip.family === 4 ? 32 : 128}`,
      };
    }
    const c = parseCidr(v);
    if (c.addr !== c.network) {
      throw policyFieldError(path, `host bits are set; the network is ${formatCidr(c)}`, v);
    }
    return { kind: 'cidr', family: c.family, cidr: formatCidr(c) };
  } catch (e) {
    if (e instanceof TapnetError && e.message.startsWith('policy ')) throw e;
    throw policyFieldError(path, 'is not a valid IPv4 or IPv6 address or CIDR', v);
  }
}

function samePeer(a: PolicyPeer, b: PolicyPeer): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

function parseRule(raw: unknown, index: number): ParsedRule {
  const base: Path = ['rules', index];
  const r = ruleSchema.safeParse(raw);
  if (!r.success) throw fromZod(r.error.issues, raw, base);
  const v = r.data;
  const rule: ParsedRule = {
    direction: v.direction,
    protocol: v.protocol,
    action: v.action,
    priority: DEFAULT_PRIORITY,
    index,
  };
  if (v.priority !== undefined) {
    if (!Number.isInteger(v.priority) || v.priority < MIN_PRIORITY || v.priority > MAX_PRIORITY) {
      throw policyFieldError(
        [...base, 'priority'],
        `must be an integer from ${MIN_PRIORITY} to ${MAX_PRIORITY}`,
        v.priority,
      );
    }
    rule.priority = v.priority;
  }
  if (v.ports !== undefined) {
    if (v.protocol !== 'tcp' && v.protocol !== 'udp') {
      throw policyFieldError(
        [...base, 'ports'],
        `ports need protocol "tcp" or "udp", not ${JSON.stringify(v.protocol)}`,
      );
    }
    rule.ports = mergeRanges(v.ports.map((p, i) => parsePort(p, [...base, 'ports', i])));
  }
  if (v.peers !== undefined) {
    const peers: PolicyPeer[] = [];
    v.peers.forEach((p, i) => {
      const peer = parsePeer(p, [...base, 'peers', i]);
      if (!peers.some((q) => samePeer(q, peer))) peers.push(peer);
    });
    const literal = peers.filter((p) => p.kind === 'cidr');
    if (literal.length === peers.length) {
      const wanted = v.protocol === 'icmp' ? 4 : v.protocol === 'icmpv6' ? 6 : undefined;
      if (wanted !== undefined && !literal.some((p) => p.family === wanted)) {
        throw policyFieldError(
          [...base, 'peers'],
          `protocol ${v.protocol} is IPv${wanted} only, but every peer is IPv${wanted === 4 ? 6 : 4}`,
        );
      }
    }
    rule.peers = peers;
  }
  return rule;
}

/**
 * Parse a policy document (an already-decoded JSON value). Throws ERR_INVALID_ARGUMENT naming the field:
 * `policy rules[0].ports[1]: must be a port (80) or a range of ports ("1000-2000")`.
 */
export function parsePolicy(input: unknown): ParsedPolicy {
  const d = documentSchema.safeParse(input);
  if (!d.success) throw fromZod(d.error.issues, input, []);
  const rules = (d.data.rules ?? []).map((r, i) => parseRule(r, i));
  return { default: d.data.default, rules };
}

/** Parse a policy given as JSON text (a file, a request body): size-limited, then parsePolicy. */
export function parsePolicyJson(text: unknown): ParsedPolicy {
  if (typeof text !== 'string') throw policyFieldError([], 'must be JSON text');
  if (Buffer.byteLength(text, 'utf8') > POLICY_LIMITS.documentBytes) {
    throw policyFieldError([], `is larger than ${POLICY_LIMITS.documentBytes} bytes`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const why = e instanceof Error ? e.message : String(e);
    throw new TapnetError('ERR_INVALID_ARGUMENT', `policy: not valid JSON (${why.slice(0, 120)})`, {
      cause: e,
      details: { field: 'policy' },
    });
  }
  return parsePolicy(value);
}

/** The document form of a parsed policy (what `tapnet policy get --json` prints). */
export function formatPolicy(p: ParsedPolicy): PolicyDocument {
  return {
    default: p.default,
    rules: p.rules.map((r) => ({
      direction: r.direction,
      protocol: r.protocol,
      ...(r.ports ? { ports: r.ports.map(([lo, hi]) => (lo === hi ? lo : `${lo}-${hi}`)) } : {}),
      ...(r.peers
        ? {
            peers: r.peers.map((p) =>
              p.kind === 'cidr' ? p.cidr : p.kind === 'vm' ? `vm:${p.id}` : `network:${p.name}`,
            ),
          }
        : {}),
      action: r.action,
      priority: r.priority,
    })),
  };
}
