/**
 * tapnet's one error type and the table of its stable codes. Callers match on `code`, never on text.
 * This module imports nothing.
 */

/** Every code tapnet throws, with what it means. Documented in docs/ERRORS.md; never renamed. */
export const ERROR_CODES = {
  ERR_INVALID_ARGUMENT: 'a name, ID, address, CIDR, option or document is malformed',
  ERR_NOT_FOUND: 'the named object (VM, network, namespace, link) does not exist',
  ERR_CONFLICT: 'a resource with that name or address already exists and is not ours (e.g. a leftover)',
  ERR_CAPACITY: 'a kernel or configured limit was reached (e.g. 1,023 ports on a bridge)',
  ERR_IPAM_EXHAUSTED: 'no free address is left in the pool',
  ERR_IPAM_CONFLICT: 'the requested static address is taken or outside the pool',
  ERR_IPAM_LEAK: 'an address could not be verified as released',
  ERR_PERMISSION_DENIED: 'the operation needs privileges (CAP_NET_ADMIN/CAP_SYS_ADMIN) tapnet does not have',
  ERR_UNSUPPORTED_PLATFORM: 'tapnet needs Linux (netlink, /dev/net/tun, network namespaces)',
  ERR_SYSCALL: 'a system call failed; see errno and syscall',
  ERR_NETLINK: 'the kernel rejected a netlink request; see errno and extack',
  ERR_NETLINK_DECODE:
    'bytes received from the kernel (or given to the codec) are not a valid netlink message',
  ERR_LINK_NOT_FOUND: 'no network interface with that name or index',
  ERR_NETNS_NOT_FOUND: 'no network namespace with that name or path',
  ERR_FIREWALL: 'nftables rejected tapnet’s batch',
  ERR_STORE: 'the state store could not be read or written',
  ERR_STORE_CORRUPT: 'a state record is unreadable; it is quarantined and reported',
  ERR_TEARDOWN: 'some teardown steps failed; every failure is listed in details.failures',
  ERR_ABORTED: 'the caller aborted the operation (AbortSignal)',
  ERR_TIMEOUT: 'the operation did not finish in time',
  ERR_UNAVAILABLE: 'the cluster store cannot be reached right now; retry',
  ERR_VMM: 'a VM monitor (QEMU) could not start, exited early or its guest did not answer; see details',
  ERR_CONFIG: 'the configuration file, environment or flags are invalid',
  ERR_CNI: 'a CNI plugin or the CNI protocol failed; details.cniCode holds the spec’s error code',
  ERR_INTERNAL: 'a bug in tapnet: please report it',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface TapnetErrorOptions {
  /** The lower-level error this one wraps. */
  cause?: unknown;
  /** errno name (EEXIST, ENODEV, …) when a system call or the kernel answered with one. */
  errno?: string;
  /** The system call (`ioctl`, `setns`) or netlink operation (`RTM_NEWLINK`) that failed. */
  syscall?: string;
  /** The kernel's extended ACK message, when it gave one. */
  extack?: string;
  /** Structured context: the names and values involved. */
  details?: Record<string, unknown>;
}

/** The only error class tapnet throws. */
export class TapnetError extends Error {
  override readonly name = 'TapnetError';
  readonly code: ErrorCode;
  readonly errno: string | undefined;
  readonly syscall: string | undefined;
  readonly extack: string | undefined;
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options: TapnetErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.errno = options.errno;
    this.syscall = options.syscall;
    this.extack = options.extack;
    this.details = options.details ?? {};
  }

  /** A plain object for JSON output: `{code, message, errno?, syscall?, extack?, details?}`. */
  toJSON(): Record<string, unknown> {
    const out: Record<string, unknown> = { code: this.code, message: this.message };
    if (this.errno) out.errno = this.errno;
    if (this.syscall) out.syscall = this.syscall;
    if (this.extack) out.extack = this.extack;
    if (Object.keys(this.details).length > 0) out.details = this.details;
    return out;
  }
}

/** True when `e` is a TapnetError, and (if given) has one of `codes`. */
export function isTapnetError(e: unknown, ...codes: ErrorCode[]): e is TapnetError {
  return e instanceof TapnetError && (codes.length === 0 || codes.includes(e.code));
}

/** Shorthand for the most common error: bad input caught at the boundary. */
export function invalidArgument(message: string, details?: Record<string, unknown>): TapnetError {
  return new TapnetError('ERR_INVALID_ARGUMENT', message, details ? { details } : {});
}

/** Wrap any thrown value as a TapnetError, keeping TapnetErrors as they are. */
export function toTapnetError(e: unknown, code: ErrorCode = 'ERR_INTERNAL', context?: string): TapnetError {
  if (e instanceof TapnetError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  return new TapnetError(code, context ? `${context}: ${msg}` : msg, { cause: e });
}

/**
 * "Already gone" for teardown: the object to delete does not exist any more. Teardown treats this as success.
 */
export function isAlreadyGone(e: unknown): boolean {
  if (!(e instanceof TapnetError)) return false;
  if (e.code === 'ERR_LINK_NOT_FOUND' || e.code === 'ERR_NETNS_NOT_FOUND' || e.code === 'ERR_NOT_FOUND')
    return true;
  return e.errno === 'ENODEV' || e.errno === 'ENOENT' || e.errno === 'ESRCH' || e.errno === 'EADDRNOTAVAIL';
}

/** Aggregate of teardown failures: teardown keeps going and reports every failure together. */
export function teardownError(what: string, failures: TapnetError[]): TapnetError {
  return new TapnetError(
    'ERR_TEARDOWN',
    `${what}: ${failures.length} step(s) failed: ${failures.map((f) => f.message).join('; ')}`,
    { details: { failures: failures.map((f) => f.toJSON()) } },
  );
}
