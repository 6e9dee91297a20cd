/**
 * The CNI-mode network the tests use: under `dir`, a Firecracker conflist (bridge → tc-redirect-tap,
 * host-local leases in dir/ipam) in dir/net.d, and the manager's network `fc` that runs it.
 */
import { join } from 'node:path';
import { firecrackerConflist, writeConflist } from '../../src/manager/cni-conflist.js';
import type { NetworkConfigInput } from '../../src/manager/config.js';

export function firecrackerCniNetworks(
  dir: string,
  o: { subnet: string; bridge: string; netnsPrefix: string; ipMasq?: boolean },
): { fc: NetworkConfigInput } {
  writeConflist(
    join(dir, 'net.d'),
    firecrackerConflist({
      subnet: o.subnet,
      bridge: o.bridge,
      dataDir: join(dir, 'ipam'),
      ...(o.ipMasq !== undefined ? { ipMasq: o.ipMasq } : {}),
    }),
  );
  return {
    fc: {
      mode: 'cni',
      cni: {
        network: 'fcnet',
        confDir: join(dir, 'net.d'),
        cacheDir: join(dir, 'cache'),
        netnsPrefix: o.netnsPrefix,
      },
    },
  };
}
