/**
 * Validation of attachment parameters exactly as libcni does it (pkg/utils), with the spec's codes:
 * container IDs and network names `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`, interface names as the kernel
 * accepts them (1–15 bytes, not `.`/`..`, no `/`, `:` or white space). Pure.
 */
import { CNI_ERROR, CniError } from './errors.js';

const CNI_NAME_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/** Go's unicode.IsSpace. */
const SPACE_RE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

/** CNI_CONTAINERID: code 3 when empty, 4 when it has characters outside `[a-zA-Z0-9_.-]`. */
export function validateContainerId(containerId: string): string {
  if (typeof containerId !== 'string' || containerId === '') {
    throw new CniError(CNI_ERROR.UNKNOWN_CONTAINER, 'missing containerID');
  }
  if (!CNI_NAME_RE.test(containerId)) {
    throw new CniError(
      CNI_ERROR.INVALID_ENVIRONMENT_VARIABLES,
      'invalid characters in containerID',
      containerId,
    );
  }
  return containerId;
}

/** A network name: code 7 when empty or with characters outside `[a-zA-Z0-9_.-]`. */
export function validateNetworkName(name: string): string {
  if (typeof name !== 'string' || name === '') {
    throw new CniError(CNI_ERROR.INVALID_NETWORK_CONFIG, 'missing network name:');
  }
  if (!CNI_NAME_RE.test(name)) {
    throw new CniError(CNI_ERROR.INVALID_NETWORK_CONFIG, 'invalid characters found in network name', name);
  }
  return name;
}

/** CNI_IFNAME, by the kernel's rules (dev_valid_name): code 4 when invalid. */
export function validateInterfaceName(ifName: string): string {
  if (typeof ifName !== 'string' || ifName.length === 0) {
    throw new CniError(CNI_ERROR.INVALID_ENVIRONMENT_VARIABLES, 'interface name is empty');
  }
  if (Buffer.byteLength(ifName, 'utf8') > 15) {
    throw new CniError(
      CNI_ERROR.INVALID_ENVIRONMENT_VARIABLES,
      'interface name is too long',
      'interface name should be less than 16 characters',
    );
  }
  if (ifName === '.' || ifName === '..') {
    throw new CniError(CNI_ERROR.INVALID_ENVIRONMENT_VARIABLES, 'interface name is . or ..');
  }
  if (/[/:]/.test(ifName) || SPACE_RE.test(ifName)) {
    throw new CniError(
      CNI_ERROR.INVALID_ENVIRONMENT_VARIABLES,
      'interface name contains / or : or whitespace characters',
    );
  }
  return ifName;
}

/**
 * CNI_ARGS pairs: keys and values must not hold `;` or `=` (the wire form is `K1=V1;K2=V2`) nor NUL.
 * libcni passes them unchecked; we refuse what would change the meaning of the joined string.
 */
export function validateCniArgs(args: ReadonlyArray<readonly [string, string]>): void {
  for (const pair of args) {
    if (!Array.isArray(pair) || pair.length !== 2 || pair.some((s) => typeof s !== 'string')) {
      throw new CniError(
        CNI_ERROR.INVALID_ENVIRONMENT_VARIABLES,
        'CNI_ARGS entries must be [key, value] string pairs',
      );
    }
    const [k, v] = pair;
    if (k === '' || /[;=\0]/.test(k) || /[;\0]/.test(v)) {
      throw new CniError(CNI_ERROR.INVALID_ENVIRONMENT_VARIABLES, 'invalid CNI_ARGS pair', `${k}=${v}`);
    }
  }
}

/**
 * Parse CNI_ARGS as cnitool does: `K1=V1;K2=V2`, each pair exactly one `=`, neither side empty.
 */
export function parseCniArgs(s: string): Array<[string, string]> {
  if (s === '') return [];
  return s.split(';').map((pair) => {
    const kv = pair.split('=');
    if (kv.length !== 2 || kv[0] === '' || kv[1] === '') {
      throw new CniError(CNI_ERROR.INVALID_ENVIRONMENT_VARIABLES, `invalid CNI_ARGS pair "${pair}"`);
    }
    return [kv[0]!, kv[1]!];
  });
}
