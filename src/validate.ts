/**
 * Boundary validation of the names and IDs users give tapnet. Every check throws ERR_INVALID_ARGUMENT
 * with the offending value before anything touches the kernel or the disk. Pure.
 */
import { invalidArgument } from './errors.js';

/** Linux IFNAMSIZ less the NUL: an interface name has at most 15 bytes. */
export const IFNAME_MAX = 15;

/**
 * An interface name as the kernel accepts it (dev_valid_name): 1–15 bytes, not `.` or `..`, no `/`, `:`,
 * NUL or white space. We also refuse non-ASCII so names stay typeable and unambiguous.
 */
export function validateIfname(name: unknown, what = 'interface name'): string {
  if (typeof name !== 'string' || name.length === 0)
    throw invalidArgument(`${what} must be a non-empty string`);
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes > IFNAME_MAX) {
    throw invalidArgument(
      `${what} ${JSON.stringify(name)} is ${bytes} bytes; the kernel allows at most ${IFNAME_MAX}`,
      {
        value: name,
      },
    );
  }
  if (name === '.' || name === '..') throw invalidArgument(`${what} ${JSON.stringify(name)} is reserved`);
  if (!/^[\x21-\x7e]+$/.test(name) || /[/:]/.test(name)) {
    throw invalidArgument(
      `${what} ${JSON.stringify(name)} may only hold printable ASCII without '/', ':' or spaces`,
      { value: name },
    );
  }
  return name;
}

/** VM IDs: safe as file names and in nft comments; like CNI container IDs. */
const VM_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

/** A VM ID: 1–128 characters of `A-Z a-z 0-9 _ . -`, starting alphanumeric. Never a path. */
export function validateVmId(id: unknown): string {
  if (typeof id !== 'string' || !VM_ID_RE.test(id) || id.includes('..')) {
    throw invalidArgument(
      `VM id ${JSON.stringify(id)} is invalid: use 1-128 characters of A-Z a-z 0-9 _ . - starting with a letter or digit`,
      { value: id },
    );
  }
  return id;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** A network or namespace name: 1–63 characters of `A-Z a-z 0-9 _ . -`, starting alphanumeric. */
export function validateName(name: unknown, what = 'name'): string {
  if (typeof name !== 'string' || !NAME_RE.test(name) || name.includes('..')) {
    throw invalidArgument(
      `${what} ${JSON.stringify(name)} is invalid: use 1-63 characters of A-Z a-z 0-9 _ . - starting with a letter or digit`,
      { value: name },
    );
  }
  return name;
}

const NETNS_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/;

/** A network namespace name under /run/netns: 1–200 characters of `A-Z a-z 0-9 _ . -`, starting alphanumeric. */
export function validateNetnsName(name: unknown): string {
  if (typeof name !== 'string' || !NETNS_RE.test(name) || name.includes('..')) {
    throw invalidArgument(
      `namespace name ${JSON.stringify(name)} is invalid: use 1-200 characters of A-Z a-z 0-9 _ . - starting with a letter or digit`,
      { value: name },
    );
  }
  return name;
}

/** An integer in [min, max]. */
export function validateInt(v: unknown, what: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalidArgument(`${what} must be an integer from ${min} to ${max}, got ${JSON.stringify(v)}`, {
      value: v,
    });
  }
  return v;
}
