/**
 * `npm run demo`: runs inside a private network namespace (scripts/sandbox.mjs). Shows what tapnet's
 * kernel layer does without shelling out: a bridge with a fixed MAC and a gateway address, TAP devices
 * attached to it, a table of them read back over netlink, and a clean removal.
 */
import { ensureAddress } from '../src/net/addr.js';
import { deleteLink, deleteLinks, ensureBridge, getLink, listLinks } from '../src/net/link.js';
import { createNetns, deleteNetns } from '../src/net/netns.js';
import { createTap } from '../src/net/tap.js';
import { NetlinkSocket } from '../src/netlink/socket.js';

if (process.env.TAPNET_SANDBOX !== '1') {
  console.error('demo: refusing to run outside a private network namespace; use `npm run demo`');
  process.exit(2);
}

const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
const ns = createNetns('tapnet-demo');
const nl = NetlinkSocket.open({ nsFd: ns.fd });
try {
  let t0 = process.hrtime.bigint();
  const br = ensureBridge(nl, { name: 'tndemo0', mac: '02:74:6e:00:00:01', up: true });
  ensureAddress(nl, br.index, '198.18.0.1/24');
  console.log(`bridge ${br.name} (${br.mac}) with 198.18.0.1/24 in namespace tapnet-demo: ${ms(t0).toFixed(2)} ms`);
  const names = Array.from({ length: 8 }, (_, i) => `tndemo-tap${i}`);
  t0 = process.hrtime.bigint();
  for (const name of names) createTap({ name, nsFd: ns.fd, master: br.index, up: true }, nl);
  console.log(`${names.length} persistent TAPs (vnet_hdr, attached, up): ${(ms(t0) / names.length).toFixed(3)} ms per TAP\n`);
  const rows = listLinks(nl, { master: br.index }).map((l) => {
    const full = getLink(nl, l.index);
    return [full.name, String(full.index), full.mac ?? '', full.kind ?? '', full.tun?.vnetHdr ? 'yes' : 'no', full.operstate ?? '', br.name];
  });
  const head = ['TAP', 'IFINDEX', 'MAC', 'KIND', 'VNET_HDR', 'STATE', 'BRIDGE'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  '));
  t0 = process.hrtime.bigint();
  deleteLinks(nl, names, 77);
  deleteLink(nl, br.name);
  console.log(`\nremoved ${names.length} TAPs (one group delete) and the bridge: ${ms(t0).toFixed(2)} ms`);
  const left = listLinks(nl).filter((l) => l.name !== 'lo');
  console.log(left.length === 0 ? 'nothing left behind ✓' : `left behind: ${left.map((l) => l.name).join(', ')}`);
} finally {
  nl.close();
  ns.close();
  deleteNetns('tapnet-demo');
}
