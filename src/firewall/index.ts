/**
 * Firewall drivers, chosen in one place. An explicit choice beats autodetection: `nftables` fails loudly
 * when libnftables is missing; `none` installs nothing.
 */
import { invalidArgument } from '../errors.js';
import { NftablesFirewall } from './nftables.js';
import { NoFirewall } from './none.js';
import type { Firewall, FirewallKind } from './types.js';

export { NftablesFirewall } from './nftables.js';
export { NoFirewall } from './none.js';
export type * from './types.js';

export interface FirewallOptions {
  /** The network namespace to manage (an open fd); default: the calling thread's. */
  nsFd?: number;
}

/** Create the firewall driver of the given kind. Close it when done (the rules stay). */
export function createFirewall(kind: FirewallKind, opts: FirewallOptions = {}): Firewall {
  switch (kind) {
    case 'nftables':
      return new NftablesFirewall(opts);
    case 'none':
      return new NoFirewall();
    default:
      throw invalidArgument(`firewall must be "nftables" or "none", not ${JSON.stringify(kind)}`, {
        value: kind,
      });
  }
}
