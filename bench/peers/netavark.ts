/**
 * netavark 1.4.0 (Debian; /usr/lib/podman/netavark) as the peer for per-container setup, driven as the
 * peers README says: `NETAVARK_FW=iptables netavark --config <state dir> setup /run/netns/<ns>` with the
 * options document on stdin, and the same document for `teardown`. The containers share one bridge
 * network with host-local IPAM; each has its own namespace (created and deleted outside the timing),
 * container_id, container_name and static IP. netavark's "host" is a fresh namespace of the run, so its
 * bridge and iptables chains vanish with it.
 */
import { TapnetError } from '../../src/errors.js';
import { formatIp, parseCidr } from '../../src/ip.js';
import { createNetns, deleteNetns, NETNS_RUN_DIR } from '../../src/net/netns.js';
import { validateInt } from '../../src/validate.js';
import { timeSync } from '../lib/stats.js';
import { execPeer, requirePeer, type Scratch, withScratch } from './exec.js';
import type { PeerTimings } from './ip.js';

/** Debian installs netavark for podman, off PATH. */
export const NETAVARK = '/usr/lib/podman/netavark';
const NETWORK = 'tapnetbench';
const BRIDGE = 'nvbr0';
/** Containers get .4.2 onwards; the gateway is .4.1. A bridge takes at most 1,023 ports. */
const SUBNET = parseCidr('198.18.4.0/22');
const MAX_CONTAINERS = 1000;

/** The options document for container `i` (see /work/shared/peers/netavark-example.json). */
export function netavarkOptions(i: number): Record<string, unknown> {
  const hex = (v: number, width: number): string => v.toString(16).padStart(width, '0');
  return {
    container_id: `b2c${hex(i, 61)}`,
    container_name: `bench-c${i}`,
    networks: {
      [NETWORK]: { interface_name: 'eth0', static_ips: [formatIp(4, SUBNET.network + 2n + BigInt(i))] },
    },
    network_info: {
      [NETWORK]: {
        name: NETWORK,
        id: `b2a${hex(1, 61)}`,
        driver: 'bridge',
        network_interface: BRIDGE,
        subnets: [{ subnet: '198.18.4.0/22', gateway: formatIp(4, SUBNET.network + 1n) }],
        ipv6_enabled: false,
        internal: false,
        dns_enabled: false,
        ipam_options: { driver: 'host-local' },
      },
    },
  };
}

function netavark(host: Scratch, command: 'setup' | 'teardown', ns: string, options: string): string {
  return execPeer(NETAVARK, ['--config', host.dir, command, `${NETNS_RUN_DIR}/${ns}`], {
    ns: host.ns,
    input: options,
    env: { NETAVARK_FW: 'iptables' },
  }).stdout;
}

/**
 * n containers, sequentially: per container `netavark setup` (timed), then per container `netavark
 * teardown` (timed). Namespaces are created before and deleted after, untimed, as podman does apart.
 */
export async function netavarkContainers(n: number): Promise<PeerTimings> {
  validateInt(n, 'container count', 1, MAX_CONTAINERS);
  requirePeer(NETAVARK, 'netavark');
  return withScratch('bnv', (host) => {
    const out: PeerTimings = { setup: [], teardown: [] };
    const names = Array.from({ length: n }, (_, i) => `${host.name}-c${i}`);
    const docs = names.map((_, i) => JSON.stringify(netavarkOptions(i)));
    try {
      for (const ns of names) createNetns(ns).close();
      for (let i = 0; i < n; i++) {
        let stdout = '';
        out.setup.push(timeSync(() => (stdout = netavark(host, 'setup', names[i]!, docs[i]!))));
        if (!stdout.includes(formatIp(4, SUBNET.network + 2n + BigInt(i)))) {
          throw new TapnetError(
            'ERR_INTERNAL',
            `netavark setup of container ${i} did not report its address`,
            {
              details: { stdout },
            },
          );
        }
      }
      for (let i = 0; i < n; i++)
        out.teardown.push(timeSync(() => netavark(host, 'teardown', names[i]!, docs[i]!)));
      // netavark removes the bridge with its last container: nothing but lo may remain (not timed).
      const links = JSON.parse(execPeer('ip', ['-n', host.name, '-j', 'link', 'show']).stdout || '[]') as {
        ifname: string;
      }[];
      const left = links.map((l) => l.ifname).filter((name) => name !== 'lo');
      if (left.length > 0) {
        throw new TapnetError('ERR_INTERNAL', `netavark teardown left links behind: ${left.join(', ')}`);
      }
      return out;
    } finally {
      for (const ns of names) deleteNetns(ns);
    }
  });
}
