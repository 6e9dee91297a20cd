/**
 * Firecracker: the body of `PUT /network-interfaces/{iface_id}` (definitions NetworkInterface, RateLimiter
 * and TokenBucket of src/firecracker/swagger/firecracker.yaml) and the boot-args fragment. Firecracker opens
 * the TAP itself, by name (`host_dev_name`), always with the virtio-net header, one queue pair. Pure.
 */
import { invalidArgument } from '../errors.js';
import { renderKernelIpArg } from './kernel-ip.js';
import { type GuestNetConfig, type TokenBucketSpec, validateGuestNetConfig } from './types.js';

/** Firecracker's TokenBucket: `size` tokens (bytes or ops) refilled every `refill_time` ms. */
export interface FirecrackerTokenBucket {
  size: number;
  one_time_burst?: number;
  refill_time: number;
}

/** Firecracker's RateLimiter: independent bandwidth (bytes) and ops buckets. */
export interface FirecrackerRateLimiter {
  bandwidth?: FirecrackerTokenBucket;
  ops?: FirecrackerTokenBucket;
}

/** The NetworkInterface body. `rx_rate_limiter` limits traffic TO the guest, `tx_rate_limiter` traffic FROM it. */
export interface FirecrackerNetworkInterface {
  iface_id: string;
  host_dev_name: string;
  guest_mac: string;
  mtu?: number;
  rx_rate_limiter?: FirecrackerRateLimiter;
  tx_rate_limiter?: FirecrackerRateLimiter;
}

export interface FirecrackerNetOptions {
  /** The `{iface_id}` of the request path and body: 1-64 characters of A-Z a-z 0-9 _ (Firecracker's checked_id). */
  ifaceId: string;
  /**
   * Send `mtu` (advertised to the guest via VIRTIO_NET_F_MTU). Only Firecracker versions whose API has the
   * field accept it (the request is rejected otherwise), so it is off by default.
   */
  advertiseMtu?: boolean;
}

/**
 * The VMM refills a bucket it found empty only when its timer fires, 100 ms later (Firecracker's
 * REFILL_TIMER_INTERVAL_MS; Cloud Hypervisor, which uses the same rate limiter, documents the same cool-down).
 * A bucket that holds less than 100 ms of traffic therefore caps the rate below what was asked.
 */
export const MIN_REFILL_MS = 100;

/**
 * Map a rate (tokens per second) and a burst (bucket capacity) onto a VMM token bucket.
 *
 * Firecracker's bucket holds `size` tokens and refills at `size / refill_time` tokens per ms, so the rate
 * is `size × 1000 / refill_time` per second and the burst after an idle period is `size`:
 * - no burst given: `refill_time = 1000`, `size = rate` — exactly the rate, at most one second of burst;
 * - burst given: `refill_time = round(burst × 1000 / rate)`, raised to at least 100 ms (see MIN_REFILL_MS),
 *   then `size = round(rate × refill_time / 1000)`. The rate is kept exact (to within 0.5 token per refill
 *   interval) and the capacity comes out within rate/2000 of the burst asked — or at 100 ms worth of
 *   traffic, when a smaller burst was asked.
 * `initial` becomes `one_time_burst`: extra credit spent once at start, never refilled.
 */
export function toVmmTokenBucket(rate: number, burst?: number, initial?: number): FirecrackerTokenBucket {
  let refill = 1000;
  if (burst !== undefined) refill = Math.max(MIN_REFILL_MS, Math.round((burst * 1000) / rate));
  const size = Math.max(1, Math.round((rate * refill) / 1000));
  // Key order as in Firecracker's own examples: size, one_time_burst, refill_time.
  if (initial !== undefined && initial > 0) return { size, one_time_burst: initial, refill_time: refill };
  return { size, refill_time: refill };
}

/** The Firecracker RateLimiter object for one direction (already-validated spec). */
export function toFirecrackerRateLimiter(spec: TokenBucketSpec): FirecrackerRateLimiter {
  const out: FirecrackerRateLimiter = {};
  if (spec.bytesPerSec !== undefined) {
    out.bandwidth = toVmmTokenBucket(spec.bytesPerSec, spec.burstBytes, spec.initialBurstBytes);
  }
  if (spec.opsPerSec !== undefined) {
    out.ops = toVmmTokenBucket(spec.opsPerSec, spec.burstOps, spec.initialBurstOps);
  }
  return out;
}

const IFACE_ID_RE = /^[A-Za-z0-9_]{1,64}$/;

/**
 * The JSON body of Firecracker's `PUT /network-interfaces/{iface_id}` for this VM interface:
 * `{iface_id, host_dev_name, guest_mac, mtu?, rx_rate_limiter?, tx_rate_limiter?}`.
 * Refuses (ERR_INVALID_ARGUMENT) what Firecracker cannot do: a TAP passed as an fd, or more than one queue.
 * `vnetHdr` is not rendered: Firecracker always opens the TAP with IFF_VNET_HDR.
 */
export function renderFirecrackerNetworkInterface(
  cfg: GuestNetConfig,
  opts: FirecrackerNetOptions,
): FirecrackerNetworkInterface {
  const v = validateGuestNetConfig(cfg);
  if (typeof opts?.ifaceId !== 'string' || !IFACE_ID_RE.test(opts.ifaceId)) {
    throw invalidArgument(
      `Firecracker iface_id ${JSON.stringify(opts?.ifaceId)} must be 1-64 of A-Z a-z 0-9 _`,
      {
        value: opts?.ifaceId,
      },
    );
  }
  if (v.tapFd !== undefined || v.tapFds !== undefined) {
    throw invalidArgument('Firecracker opens the TAP by name; it cannot take a TAP fd', { vmId: v.vmId });
  }
  if (v.queues !== 1) {
    throw invalidArgument(`Firecracker has one queue pair per interface; queues is ${v.queues}`, {
      vmId: v.vmId,
    });
  }
  const body: FirecrackerNetworkInterface = {
    iface_id: opts.ifaceId,
    host_dev_name: v.ifname,
    guest_mac: v.mac,
  };
  if (opts.advertiseMtu) body.mtu = v.mtu;
  if (v.rateLimit?.rx) body.rx_rate_limiter = toFirecrackerRateLimiter(v.rateLimit.rx);
  if (v.rateLimit?.tx) body.tx_rate_limiter = toFirecrackerRateLimiter(v.rateLimit.tx);
  return body;
}

/** The API path for the body above: `/network-interfaces/<ifaceId>`. */
export function firecrackerNetworkInterfacePath(ifaceId: string): string {
  if (typeof ifaceId !== 'string' || !IFACE_ID_RE.test(ifaceId)) {
    throw invalidArgument(`Firecracker iface_id ${JSON.stringify(ifaceId)} must be 1-64 of A-Z a-z 0-9 _`);
  }
  return `/network-interfaces/${ifaceId}`;
}

/**
 * The network part of a Firecracker VM's `boot_args` (PUT /boot-source): the kernel `ip=` argument, which
 * configures the guest's first interface (eth0) at boot, IPv4 only. Append it to the rest of the boot args.
 */
export function renderFirecrackerBootArgs(cfg: GuestNetConfig): string {
  return renderKernelIpArg(cfg);
}
