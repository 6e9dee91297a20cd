/**
 * Cloud Hypervisor: the value of one `--net` argument (NetConfig::parse in vmm/src/config.rs; docs/networking.md,
 * docs/io_throttling.md). Its option parser splits on ',' and treats '[', ']' and '"' as grouping and '=' as the
 * key separator: we refuse values holding any of them. Pure.
 *
 * NOT rendered from the guest's address: Cloud Hypervisor's `ip=`/`mask=` set an address on the HOST side of the
 * TAP (open_tap() assigns it), not in the guest. Passing the guest's address there would put the guest's IP on
 * the host. tapnet configures the TAP itself; `hostAddress` exists for callers who want Cloud Hypervisor to do it.
 */
import { invalidArgument } from '../errors.js';
import { formatIp, parseCidr, prefixMask } from '../ip.js';
import { toVmmTokenBucket } from './firecracker.js';
import {
  assertNoSyntax,
  type GuestNetConfig,
  type TokenBucketSpec,
  validateGuestNetConfig,
} from './types.js';

export interface CloudHypervisorNetOptions {
  /** `id=` of the device (for hot-unplug via the API). A letter or digit, then A-Z a-z 0-9 _ . - (≤ 64). */
  id?: string;
  /** Add `mtu=<mtu>` (sets the TAP MTU and advertises it to the guest; Cloud Hypervisor versions with `mtu`). */
  advertiseMtu?: boolean;
  /** IPv4 CIDR to put on the HOST end of the TAP via `ip=`/`mask=`. Off by default; see the module comment. */
  hostAddress?: string;
}

const CH_SYNTAX = ',[]"=';
const CH_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

function sameBucket(a: TokenBucketSpec, b: TokenBucketSpec): boolean {
  const keys: (keyof TokenBucketSpec)[] = [
    'bytesPerSec',
    'burstBytes',
    'initialBurstBytes',
    'opsPerSec',
    'burstOps',
    'initialBurstOps',
  ];
  return keys.every((k) => a[k] === b[k]);
}

/**
 * The `--net` value for one interface, e.g. `tap=tn3f2a9c01,mac=52:54:00:12:34:56,num_queues=2`.
 *
 * - TAP by name `tap=<ifname>`, or by fd `fd=[N]` / `fd=[N,M,…]` (one fd per queue pair; then no `tap=`).
 * - `num_queues` counts queues, not pairs: it is always rendered, as 2 × `queues`. A multi-queue TAP must have
 *   been created with IFF_MULTI_QUEUE (and a single-queue one without): Cloud Hypervisor checks.
 * - Rate limits: Cloud Hypervisor takes ONE limiter per device and applies it to rx and tx separately, so
 *   `rateLimit.rx` and `rateLimit.tx` must be given together and be equal; the bucket mapping is Firecracker's
 *   (see toVmmTokenBucket), rendered as `bw_size`/`bw_one_time_burst`/`bw_refill_time` and `ops_*`.
 * - `vnetHdr` is not rendered: Cloud Hypervisor always uses the virtio-net header.
 *
 * Throws ERR_INVALID_ARGUMENT for invalid values or limits Cloud Hypervisor cannot express.
 */
export function renderCloudHypervisorNet(cfg: GuestNetConfig, opts: CloudHypervisorNetOptions = {}): string {
  const v = validateGuestNetConfig(cfg);
  const parts: string[] = [];
  if (v.tapFd !== undefined) {
    if (v.queues > 1) {
      throw invalidArgument(`Cloud Hypervisor takes one fd per queue pair: pass tapFds (${v.queues} fds)`);
    }
    parts.push(`fd=[${v.tapFd}]`);
  } else if (v.tapFds !== undefined) {
    parts.push(`fd=[${v.tapFds.join(',')}]`);
  } else {
    parts.push(`tap=${assertNoSyntax(v.ifname, 'TAP name', CH_SYNTAX, 'Cloud Hypervisor options')}`);
  }
  parts.push(`mac=${v.mac}`);
  if (opts.hostAddress !== undefined) {
    const c = typeof opts.hostAddress === 'string' ? parseCidr(opts.hostAddress, 'hostAddress') : undefined;
    if (c?.family !== 4) {
      throw invalidArgument(`hostAddress ${JSON.stringify(opts.hostAddress)} must be an IPv4 CIDR`);
    }
    parts.push(`ip=${formatIp(4, c.addr)}`, `mask=${formatIp(4, prefixMask(4, c.prefix))}`);
  }
  parts.push(`num_queues=${2 * v.queues}`);
  if (opts.advertiseMtu) parts.push(`mtu=${v.mtu}`);
  if (opts.id !== undefined) {
    if (typeof opts.id !== 'string' || !CH_ID_RE.test(opts.id)) {
      throw invalidArgument(`Cloud Hypervisor device id ${JSON.stringify(opts.id)} is invalid`, {
        value: opts.id,
      });
    }
    parts.push(`id=${opts.id}`);
  }
  const rl = v.rateLimit;
  if (rl && (rl.rx || rl.tx)) {
    if (!rl.rx || !rl.tx || !sameBucket(rl.rx, rl.tx)) {
      throw invalidArgument(
        'Cloud Hypervisor applies one rate limit to both directions: give rateLimit.rx and rateLimit.tx equal',
        { vmId: v.vmId },
      );
    }
    const spec = rl.rx;
    for (const [prefix, rate, burst, initial] of [
      ['bw', spec.bytesPerSec, spec.burstBytes, spec.initialBurstBytes],
      ['ops', spec.opsPerSec, spec.burstOps, spec.initialBurstOps],
    ] as const) {
      if (rate === undefined) continue;
      const b = toVmmTokenBucket(rate, burst, initial);
      parts.push(`${prefix}_size=${b.size}`);
      if (b.one_time_burst !== undefined) parts.push(`${prefix}_one_time_burst=${b.one_time_burst}`);
      parts.push(`${prefix}_refill_time=${b.refill_time}`);
    }
  }
  return parts.join(',');
}
