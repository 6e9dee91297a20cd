/**
 * Per-VM bandwidth limits: where they are enforced and how, for the manager to call at ensure, on a live
 * change and at release. Directions follow src/guest: `rx` is traffic TO the guest, `tx` traffic FROM it.
 *
 * - Firecracker: its own rx/tx rate limiters (token buckets in the VMM, src/guest/firecracker.ts), and
 *   nothing in tc — never both, or the guest would see the lower of two limits plus two sets of bursts.
 * - QEMU, Cloud Hypervisor: tc on the TAP. rx: a tbf root qdisc on the TAP (its egress is what the guest
 *   receives). tx: what the guest sends arrives on the TAP's ingress, where only policing is possible
 *   (drop above the rate, no queue), and this kernel has no police action (CONFIG_NET_ACT_POLICE) and no
 *   matchall classifier anyway. So the TAP's ingress is redirected to an IFB device (u32 `match u32 0 0`
 *   + mirred, prio FILTER_PRIO.police) whose root is a tbf: real shaping, with a queue, so TCP settles at
 *   the rate instead of sawing on drops. The IFB is named after the TAP (ifbName) and lives as long as
 *   the limit; the TAP's ingress filter goes with the TAP, the IFB does not: removeBandwidth() at release.
 *
 * Each missing kernel piece is reported by name (ERR_NETLINK with details.missing = the CONFIG_ option).
 */
import { createHash } from 'node:crypto';
import { isTapnetError, TapnetError } from '../errors.js';
import { type FirecrackerRateLimiter, toFirecrackerRateLimiter } from '../guest/firecracker.js';
import type { GuestRateLimit, TokenBucketSpec } from '../guest/types.js';
import { deleteLink, findLink, getLink } from '../net/link.js';
import {
  FILTER_PRIO,
  MIN_BURST_BYTES,
  redirectIngress,
  removeEgressRate,
  removeRedirectIngress,
  setEgressRate,
} from '../net/tc.js';
import { NLM_F_CREATE, NLM_F_EXCL, RTM_NEWLINK } from '../netlink/constants.js';
import { encodeLinkRequest } from '../netlink/link.js';
import type { NetlinkSocket } from '../netlink/socket.js';
import { validateIfname, validateInt } from '../validate.js';

/** The VM monitor, which decides where limits are enforced. */
export type Vmm = 'firecracker' | 'qemu' | 'cloud-hypervisor';

/** One direction's limit: a sustained rate and the bucket (default: defaultBurst(rate)). */
export interface RateSpec {
  /** Bytes per second (100 Mbit/s is 12_500_000). */
  rateBps: number;
  /** Bytes that may pass at line rate after an idle period; at least MIN_BURST_BYTES. */
  burstBytes?: number;
}

/** `rx`: to the guest; `tx`: from the guest. A direction left out is unlimited. */
export interface BandwidthLimits {
  rx?: RateSpec;
  tx?: RateSpec;
}

/** What applyBandwidth put in place. */
export interface AppliedBandwidth {
  /** 'tc': on the TAP (and its IFB); 'firecracker': in the VMM, nothing in tc. */
  via: 'tc' | 'firecracker';
  rx?: Required<RateSpec>;
  tx?: Required<RateSpec>;
  /** tc: the IFB shaping what the guest sends (present when tx is limited). */
  ifb?: string;
  /**
   * firecracker: the rate limiters for `PUT /network-interfaces/{id}` (before boot) or `PATCH` (live);
   * `rx_rate_limiter` limits what the guest receives, `tx_rate_limiter` what it sends.
   */
  firecracker?: { rx_rate_limiter?: FirecrackerRateLimiter; tx_rate_limiter?: FirecrackerRateLimiter };
  /** firecracker: the same limits as GuestNetConfig.rateLimit, for renderFirecrackerNetworkInterface(). */
  rateLimit?: GuestRateLimit;
}

/** Highest rate accepted: 100 Gbit/s. */
export const MAX_RATE_BPS = 12_500_000_000;
/** Largest bucket: what tbf's 32-bit burst can say. */
export const MAX_BURST_BYTES = 0xffffffff;

/** 10 ms at the rate, at least 64 KiB (so a full GSO packet passes unsplit), at most MAX_BURST_BYTES. */
export function defaultBurst(rateBps: number): number {
  return Math.min(MAX_BURST_BYTES, Math.max(65_536, Math.round(rateBps / 100)));
}

const VMMS: readonly Vmm[] = ['firecracker', 'qemu', 'cloud-hypervisor'];

function rateSpec(v: unknown, what: string): Required<RateSpec> {
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    throw new TapnetError('ERR_INVALID_ARGUMENT', `${what} must be an object {rateBps, burstBytes?}`, {
      details: { field: what },
    });
  }
  const r = v as Record<string, unknown>;
  for (const k of Object.keys(r)) {
    if (k !== 'rateBps' && k !== 'burstBytes') {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `${what}.${k}: unknown field (allowed: rateBps, burstBytes)`,
        {
          details: { field: `${what}.${k}` },
        },
      );
    }
  }
  const rateBps = validateInt(r.rateBps, `${what}.rateBps`, 1, MAX_RATE_BPS);
  const burstBytes =
    r.burstBytes === undefined
      ? defaultBurst(rateBps)
      : validateInt(r.burstBytes, `${what}.burstBytes`, MIN_BURST_BYTES, MAX_BURST_BYTES);
  return { rateBps, burstBytes };
}

/** Check `{rx?, tx?}` (ERR_INVALID_ARGUMENT naming the field) and fill in default bursts. */
export function validateBandwidth(
  v: unknown,
  what = 'bandwidth',
): { rx?: Required<RateSpec>; tx?: Required<RateSpec> } {
  if (!v || typeof v !== 'object' || Array.isArray(v)) {
    throw new TapnetError('ERR_INVALID_ARGUMENT', `${what} must be an object {rx?, tx?}`, {
      details: { field: what },
    });
  }
  const out: { rx?: Required<RateSpec>; tx?: Required<RateSpec> } = {};
  for (const [k, val] of Object.entries(v as Record<string, unknown>)) {
    if (k !== 'rx' && k !== 'tx') {
      throw new TapnetError('ERR_INVALID_ARGUMENT', `${what}.${k}: unknown field (allowed: rx, tx)`, {
        details: { field: `${what}.${k}` },
      });
    }
    if (val !== undefined) out[k] = rateSpec(val, `${what}.${k}`);
  }
  return out;
}

/** The IFB of a TAP: `ifb` + 12 hex digits of sha256(tap name), 15 bytes. */
export function ifbName(tap: string): string {
  validateIfname(tap, 'TAP name');
  return `ifb${createHash('sha256').update(tap).digest('hex').slice(0, 12)}`;
}

/** The Firecracker form of limits (and the GuestRateLimit it comes from). */
export function firecrackerLimits(limits: { rx?: Required<RateSpec>; tx?: Required<RateSpec> }): {
  firecracker: NonNullable<AppliedBandwidth['firecracker']>;
  rateLimit: GuestRateLimit;
} {
  const rateLimit: GuestRateLimit = {};
  const firecracker: NonNullable<AppliedBandwidth['firecracker']> = {};
  for (const d of ['rx', 'tx'] as const) {
    const l = limits[d];
    if (!l) continue;
    const bucket: TokenBucketSpec = { bytesPerSec: l.rateBps, burstBytes: l.burstBytes };
    rateLimit[d] = bucket;
    firecracker[d === 'rx' ? 'rx_rate_limiter' : 'tx_rate_limiter'] = toFirecrackerRateLimiter(bucket);
  }
  return { firecracker, rateLimit };
}

/** Turn "the kernel has no such thing" into an error that names the missing kernel option. */
function kernelLacks(e: unknown, missing: string, what: string): unknown {
  if (!isTapnetError(e) || e.code === 'ERR_INVALID_ARGUMENT') return e;
  if (e.errno !== 'EOPNOTSUPP' && e.errno !== 'ENOENT' && e.errno !== 'EINVAL') return e;
  const text = `${e.message} ${e.extack ?? ''}`;
  if (!/unknown|not found|Failed to load|not supported/i.test(text)) return e;
  return new TapnetError('ERR_NETLINK', `${what}: the kernel lacks ${missing}`, {
    cause: e,
    ...(e.errno ? { errno: e.errno } : {}),
    ...(e.extack ? { extack: e.extack } : {}),
    details: { missing },
  });
}

/** `ip link add IFB type ifb; ip link set IFB up` (kept when it exists). Returns its index. */
function ensureIfb(nl: NetlinkSocket, name: string, tap: string): number {
  const existing = findLink(nl, name);
  if (existing) {
    if (existing.kind !== 'ifb') {
      throw new TapnetError('ERR_CONFLICT', `${name} exists and is not an IFB device`, {
        details: { link: name },
      });
    }
    return existing.index;
  }
  try {
    nl.request(
      encodeLinkRequest(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, {
        name,
        kind: 'ifb',
        up: true,
        alias: `tapnet-ifb:${tap}`,
      }),
      `create IFB ${name}`,
    );
  } catch (e) {
    throw kernelLacks(e, 'IFB devices (CONFIG_IFB)', `limit traffic from the guest on ${tap}`);
  }
  return getLink(nl, name).index;
}

/**
 * Put `limits` in place for the VM behind the TAP at `tapIndex`, replacing whatever limits were there
 * (a direction left out becomes unlimited), so the same call serves ensure and live changes.
 * tc (QEMU, Cloud Hypervisor): `tc qdisc replace dev TAP root tbf …`; `ip link add IFB type ifb`,
 * `tc qdisc replace dev IFB root tbf …`, `tc filter add dev TAP ingress prio 10 u32 match u32 0 0 action
 * mirred egress redirect dev IFB`. Firecracker: removes those, returns the VMM's rate limiters.
 */
export function applyBandwidth(
  nl: NetlinkSocket,
  tapIndex: number,
  limits: BandwidthLimits,
  vmm: Vmm,
): AppliedBandwidth {
  validateInt(tapIndex, 'TAP ifindex', 1, 0x7fffffff);
  if (!VMMS.includes(vmm)) {
    throw new TapnetError(
      'ERR_INVALID_ARGUMENT',
      `vmm must be one of ${VMMS.join(', ')}, not ${JSON.stringify(vmm)}`,
    );
  }
  const l = validateBandwidth(limits);
  const tap = getLink(nl, tapIndex).name;
  if (vmm === 'firecracker') {
    removeBandwidth(nl, tap);
    return { via: 'firecracker', ...l, ...firecrackerLimits(l) };
  }
  const out: AppliedBandwidth = { via: 'tc', ...l };
  try {
    if (l.rx) setEgressRate(nl, tapIndex, l.rx);
    else removeEgressRate(nl, tapIndex);
  } catch (e) {
    throw kernelLacks(e, 'the tbf qdisc (CONFIG_NET_SCH_TBF)', `limit traffic to the guest on ${tap}`);
  }
  const ifb = ifbName(tap);
  if (l.tx) {
    const ifbIndex = ensureIfb(nl, ifb, tap);
    try {
      setEgressRate(nl, ifbIndex, l.tx);
    } catch (e) {
      throw kernelLacks(e, 'the tbf qdisc (CONFIG_NET_SCH_TBF)', `limit traffic from the guest on ${tap}`);
    }
    try {
      redirectIngress(nl, tapIndex, ifbIndex, { prio: FILTER_PRIO.police });
    } catch (e) {
      throw kernelLacks(
        e,
        'the ingress qdisc, u32 classifier or mirred action (CONFIG_NET_SCH_INGRESS, CONFIG_NET_CLS_U32, CONFIG_NET_ACT_MIRRED)',
        `redirect ${tap} to ${ifb}`,
      );
    }
    out.ifb = ifb;
  } else {
    removeRedirectIngress(nl, tapIndex, { prio: FILTER_PRIO.police });
    deleteLink(nl, ifb);
  }
  return out;
}

/**
 * Remove every tc limit of a TAP (by name: the TAP may already be gone at release) and its IFB.
 * `tc qdisc del dev TAP root tbf; tc filter del dev TAP ingress prio 10; ip link del IFB`. Absent is
 * success. Returns what was there.
 */
export function removeBandwidth(nl: NetlinkSocket, tap: string): { removed: string[] } {
  const ifb = ifbName(tap);
  const removed: string[] = [];
  const link = findLink(nl, tap);
  if (link) {
    removeEgressRate(nl, link.index);
    removeRedirectIngress(nl, link.index, { prio: FILTER_PRIO.police });
    removed.push(`${tap} limits`);
  }
  if (findLink(nl, ifb)) {
    deleteLink(nl, ifb);
    removed.push(ifb);
  }
  return { removed };
}
