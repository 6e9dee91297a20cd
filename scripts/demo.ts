/**
 * `npm run demo`: tapnet networking real microVMs, inside a private network namespace (scripts/sandbox.mjs
 * makes it; this machine's own network is never touched). With tapnet's defaults (one bridged network,
 * 198.18.0.0/22, NAT, anti-spoofing, isolation) it boots 3 QEMU microVMs in direct mode (TAP passed as an
 * fd), shows a live table, fetches each VM's web page from the host side, shows VM→VM traffic and NAT to
 * a simulated upstream host, tears everything down and shows that nothing is left.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { get } from 'node:http';
import { isTapnetError } from '../src/errors.js';
import { firecrackerConflist, writeConflist } from '../src/manager/cni-conflist.js';
import { DEFAULT_NETWORK } from '../src/manager/config.js';
import { NetworkManager } from '../src/manager/manager.js';
import type { NetworkInfo } from '../src/manager/types.js';
import { ensureAddress } from '../src/net/addr.js';
import { createVeth, deleteLink, findLink, listLinks, setLink } from '../src/net/link.js';
import { createNetns, deleteNetns, listNetns, type Netns, openNetns } from '../src/net/netns.js';
import { NetlinkSocket } from '../src/netlink/socket.js';
import type { LinkStats } from '../src/netlink/stats.js';
import { guestFixtureWorldReadable, loadGuestFixture } from '../src/vm/fixture.js';
import { QemuVm } from '../src/vm/qemu.js';

if (process.env.TAPNET_SANDBOX !== '1') {
  console.error('demo: refusing to run outside a private network namespace; use `npm run demo`');
  process.exit(2);
}

const STATE_DIR = '/run/tapnet-demo'; // tmpfs inside the sandbox: gone with it
const UPSTREAM_NS = 'tapnet-demo-upstream';
const UPSTREAM_IP = '198.19.255.2';
const UPSTREAM_HOST_SIDE = '198.19.255.1/24';
const VM_IDS = ['web-1', 'web-2', 'web-3'];
/** The 4th VM: CNI mode, Debian's bridge plugin (host-local IPAM) → tapnet's tc-redirect-tap, in-process. */
const CNI_VM = 'fc-1';
const CNI_BRIDGE = 'fcbr0';
const CNI_SUBNET = '198.18.64.0/24';
const tty = process.stdout.isTTY === true;
const t0 = performance.now();
const secs = (t: number) => `${((performance.now() - t) / 1000).toFixed(1)} s`;
const c = (code: string, s: string) => (tty ? `\x1b[${code}m${s}\x1b[0m` : s);
const step = (n: number | string, s: string) =>
  console.log(`\n${c('1', `[${n}] ${s}`)}  ${c('2', `(t+${secs(t0)})`)}`);
const ok = (s: string) => console.log(`  ${c('32', '✓')} ${s}`);
const bad = (s: string) => console.log(`  ${c('31', '✗')} ${s}`);

interface Row {
  info: NetworkInfo;
  vm?: QemuVm;
  state: string;
}

function fmtBytes(n: number | undefined): string {
  if (n === undefined) return '-';
  return n < 1024
    ? `${n} B`
    : n < 1024 * 1024
      ? `${(n / 1024).toFixed(1)} KiB`
      : `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** The table: one line per VM; rx/tx from the TAP's IFLA_STATS64, seen from the guest (host TAP tx = guest rx). */
function table(nl: NetlinkSocket, rows: Row[]): string[] {
  const head = ['VM', 'IP', 'MAC', 'TAP', 'STATE', 'RX (guest)', 'TX (guest)'];
  const body = rows.map((r) => {
    const s = (r.info.mode === 'cni' ? statsInNetns(r.info) : findLink(nl, r.info.tap)?.stats) ?? undefined;
    return [
      r.info.vmId,
      r.info.ipv4 ?? '-',
      r.info.mac,
      r.info.tap,
      r.state,
      fmtBytes(s?.txBytes),
      fmtBytes(s?.rxBytes),
    ];
  });
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  return [head, ...body].map((r, j) =>
    `  ${r.map((x, i) => x.padEnd(w[i]!)).join('  ')}`.replace(/^(.*)$/, j === 0 ? c('2', '$1') : '$1'),
  );
}

/** A CNI VM's TAP lives in its own namespace: read its counters with a socket opened there. */
function statsInNetns(info: NetworkInfo): LinkStats | undefined {
  try {
    const ns = openNetns(info.netns!);
    const nl = NetlinkSocket.open({ nsFd: ns.fd });
    try {
      return findLink(nl, info.tap)?.stats;
    } finally {
      nl.close();
      ns.close();
    }
  } catch {
    return undefined;
  }
}

/** Print the table; on a terminal, redraw it in place until stop(). */
function liveTable(nl: NetlinkSocket, rows: Row[]): { stop(): void } {
  if (!tty) return { stop: () => console.log(table(nl, rows).join('\n')) };
  let drawn = 0;
  const draw = () => {
    if (drawn) process.stdout.write(`\x1b[${drawn}A`);
    const lines = table(nl, rows);
    for (const l of lines) process.stdout.write(`\x1b[2K${l}\n`);
    drawn = lines.length;
  };
  draw();
  const timer = setInterval(draw, 200);
  return {
    stop() {
      clearInterval(timer);
      draw();
    },
  };
}

function httpGet(url: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = get(url, { timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        body += d;
      });
      res.on('end', () => resolve(body.trim()));
    });
    req.on('timeout', () => req.destroy(new Error(`timeout after ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** The simulated upstream host: its own namespace behind a veth, an HTTP server that says whom it saw. */
function startUpstream(nl: NetlinkSocket): { ns: Netns; server: ChildProcess; ready: Promise<void> } {
  const ns = createNetns(UPSTREAM_NS);
  createVeth(nl, { name: 'tnup0', peer: 'eth0', peerNsFd: ns.fd, up: true });
  ensureAddress(nl, findLink(nl, 'tnup0')!.index, UPSTREAM_HOST_SIDE);
  const unl = NetlinkSocket.open({ nsFd: ns.fd });
  try {
    setLink(unl, 'lo', { up: true });
    setLink(unl, 'eth0', { up: true });
    ensureAddress(unl, findLink(unl, 'eth0')!.index, `${UPSTREAM_IP}/24`);
  } finally {
    unl.close();
  }
  // No route back to the VMs' subnet up there: replies only come back through tapnet's masquerading.
  const code = `require('http').createServer((q, s) => s.end('hello from upstream; I see you as ' + q.socket.remoteAddress)).listen(8080, '${UPSTREAM_IP}', () => console.log('ready'))`;
  // The child is forked while this thread is inside the upstream namespace: it lives there.
  const server = ns.run(() =>
    spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] }),
  );
  const ready = new Promise<void>((resolve, reject) => {
    server.stdout!.once('data', () => resolve());
    server.once('exit', (code) => reject(new Error(`upstream server exited (${code})`)));
  });
  return { ns, server, ready };
}

async function main(): Promise<number> {
  let failures = 0;
  const check = (cond: boolean, good: string, wrong: string) => {
    if (cond) ok(good);
    else {
      bad(wrong);
      failures++;
    }
  };
  console.log(c('1', 'tapnet demo: real microVMs on a tapnet network, inside a private network namespace'));
  const fixture = loadGuestFixture();
  console.log(c('2', `guest: Debian ${fixture.kernelRelease} kernel + busybox initramfs (${fixture.dir})`));

  step(1, 'start tapnet with its defaults');
  rmSync(STATE_DIR, { recursive: true, force: true });
  // tapnet's defaults, plus a network in CNI mode for the 4th VM.
  const confDir = `${STATE_DIR}/net.d`;
  writeConflist(
    confDir,
    firecrackerConflist({ subnet: CNI_SUBNET, bridge: CNI_BRIDGE, dataDir: `${STATE_DIR}/cni-ipam` }),
  );
  const m = await NetworkManager.open(
    {
      stateDir: STATE_DIR,
      networks: {
        default: DEFAULT_NETWORK,
        fc: { mode: 'cni', cni: { network: 'fcnet', confDir, cacheDir: `${STATE_DIR}/cni-cache` } },
      },
    },
    { reconcile: true },
  );
  const net = m.network();
  m.ensureNetwork(net);
  console.log(
    `  network ${net.name}: ${net.topology} ${net.bridge} (${net.bridgeMac}), ${net.subnet4} via ${net.gateway4}, NAT ${net.nat ? 'on' : 'off'}, anti-spoofing on, firewall ${m.firewall.kind}`,
  );
  const up = startUpstream(m.nl);
  console.log(
    `  simulated upstream host ${UPSTREAM_IP} in namespace ${UPSTREAM_NS} (veth tnup0, no route back to ${net.subnet4})`,
  );

  const rows: Row[] = [];
  try {
    step(2, `give ${VM_IDS.length} VMs a network and boot them (QEMU microvm, TAP passed as fd 3)`);
    for (const id of VM_IDS) {
      const t = performance.now();
      const info = await m.ensure(id, { tap: 'fd' });
      rows.push({ info, state: 'network ready' });
      console.log(`  ensure ${id}: ${info.ipv4} on ${info.tap} in ${(performance.now() - t).toFixed(1)} ms`);
    }
    // The TAP is passed as an fd: QEMU needs no privilege, so it runs as nobody when it can read the guest.
    const runAs = guestFixtureWorldReadable(fixture) ? { uid: 65534, gid: 65534 } : undefined;
    console.log(
      `  QEMU runs as ${runAs ? 'user nobody, without capabilities' : 'root (user nobody cannot read the guest files here)'}`,
    );
    const live = liveTable(m.nl, rows);
    const boots = rows.map(async (r) => {
      r.state = 'booting';
      r.vm = await QemuVm.start({
        name: r.info.vmId,
        network: { mode: 'fd', info: r.info },
        ...(runAs ? { runAs } : {}),
      });
      r.state = `running (${(r.vm.readyMs / 1000).toFixed(1)} s)`;
    });
    const results = await Promise.allSettled(boots);
    live.stop();
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    const accel = rows[0]!.vm!.accel;
    console.log(
      c(
        '2',
        `  accelerator ${accel}${accel === 'tcg' ? ' (no usable KVM here: emulated CPU)' : ''}; boot = QEMU start → guest network up and httpd answering`,
      ),
    );

    step(
      '2b',
      `a 4th VM in CNI mode: namespace + bridge ${CNI_BRIDGE} → tc-redirect-tap (in-process), QEMU inside the namespace`,
    );
    {
      const t = performance.now();
      const info = await m.ensure(CNI_VM, { network: 'fc' });
      console.log(
        `  ensure ${CNI_VM}: ${info.ipv4} on ${info.tap} in ${info.netns} in ${(performance.now() - t).toFixed(1)} ms`,
      );
      const row: Row = { info, state: 'booting' };
      rows.push(row);
      row.vm = await QemuVm.start({
        name: CNI_VM,
        network: {
          mode: 'cni',
          netns: info.netns!,
          guest: {
            vmId: CNI_VM,
            ifname: info.tap,
            mac: info.mac,
            ...(info.ipv4 ? { ipv4: info.ipv4 } : {}),
            ...(info.gateway4 ? { gateway4: info.gateway4 } : {}),
            dns: info.dns,
            mtu: info.mtu,
          },
        },
      });
      row.state = `running (${(row.vm.readyMs / 1000).toFixed(1)} s)`;
      ok(`${CNI_VM} booted in ${(row.vm.readyMs / 1000).toFixed(1)} s`);
    }

    step(3, "fetch each VM's web page from the host side");
    await up.ready;
    for (const r of rows) {
      const ip = r.vm!.ipv4!;
      const body = await httpGet(`http://${ip}/`).catch((e: Error) => `error: ${e.message}`);
      check(body === `tapnet guest ${r.info.vmId}`, `http://${ip}/ → "${body}"`, `http://${ip}/ → ${body}`);
    }

    step(4, 'VM → VM across the bridge (wget inside each guest, via its serial console)');
    for (let i = 0; i < rows.length; i++) {
      const from = rows[i]!;
      const to = rows[(i + 1) % rows.length]!;
      const r = await from.vm!.exec(`timeout 5 wget -q -O - http://${to.vm!.ipv4}/`);
      check(
        r.status === 0,
        `${from.info.vmId} → ${to.info.vmId}: "${r.output.trim()}"`,
        `${from.info.vmId} → ${to.info.vmId} failed: ${r.output.trim()}`,
      );
    }

    step(5, `VM → upstream host through NAT (the upstream sees the host's address, not the VM's)`);
    for (const r of rows) {
      const res = await r.vm!.exec(`timeout 5 wget -q -O - http://${UPSTREAM_IP}:8080/`);
      const seen = res.output.trim();
      check(
        res.status === 0 && seen.endsWith(UPSTREAM_HOST_SIDE.split('/')[0]!),
        `${r.info.vmId} (${r.vm!.ipv4}) → ${UPSTREAM_IP}: "${seen}"`,
        `${r.info.vmId} → upstream failed: ${seen}`,
      );
    }
    const fw = m.firewall.status([m.firewallNetwork(net)]).networks.find((n) => n.name === net.name);
    console.log(
      c(
        '2',
        `  firewall: ${fw?.ports ?? 0} VM ports registered, spoof drops ${fw?.drops.spoof.packets ?? 0}, isolation drops ${fw?.drops.isolate.packets ?? 0}`,
      ),
    );

    step(6, 'the table after the traffic');
    liveTable(m.nl, rows).stop();
  } finally {
    step(7, 'tear everything down');
    await Promise.all(
      rows.map(async (r) => {
        if (!r.vm) return;
        await r.vm.stop();
        r.state = 'stopped';
      }),
    );
    console.log(`  QEMU stopped (${rows.filter((r) => r.vm).length} VMs)`);
    const rel = await m.releaseMany([...VM_IDS, CNI_VM], { wait: true });
    console.log(
      `  released ${rel.released.length} VM networks${rel.failed.length ? `, ${rel.failed.length} failed` : ''}`,
    );
    up.server.kill();
    deleteLink(m.nl, 'tnup0');
    deleteNetns(UPSTREAM_NS);
    up.ns.close();
    // The network itself (bridge, firewall tables) is not per-VM state; remove it too so nothing is left.
    m.firewall.destroy();
    deleteLink(m.nl, net.bridge);
    deleteLink(m.nl, CNI_BRIDGE); // made by the CNI bridge plugin; DEL leaves bridges in place, as it should
    console.log(`  removed the upstream namespace, the bridge ${net.bridge} and tapnet's nftables tables`);
  }

  step(8, 'nothing is left');
  const taps = listLinks(m.nl, { kind: 'tun' }).map((l) => l.name);
  check(taps.length === 0, 'no TAP devices', `TAPs left: ${taps.join(', ')}`);
  const links = listLinks(m.nl)
    .filter((l) => l.name !== 'lo')
    .map((l) => l.name);
  check(links.length === 0, 'no other links (bridge, veth)', `links left: ${links.join(', ')}`);
  const namespaces = listNetns();
  check(namespaces.length === 0, 'no network namespaces', `namespaces left: ${namespaces.join(', ')}`);
  let leases = 0;
  for (const pool of await m.store.leases.pools()) leases += (await m.store.leases.leases(pool)).size;
  check(leases === 0, 'no address leases', `${leases} leases left`);
  const records = (await m.store.records.list()).records.length;
  check(records === 0, 'no VM records', `${records} records left`);
  let elements = -1;
  try {
    elements = m.firewall.listVms().length;
  } catch (e) {
    if (!isTapnetError(e)) throw e;
    elements = 0; // the tables are gone
  }
  check(elements === 0, 'no nftables elements', `${elements} nftables elements left`);
  const tables = m.firewall.status().tables;
  check(
    !tables.inet && !tables.bridge,
    'no tapnet nftables tables',
    `tables left: ${JSON.stringify(tables)}`,
  );
  await m.close();
  rmSync(STATE_DIR, { recursive: true, force: true });
  console.log(
    `\n${failures === 0 ? c('32', 'demo complete') : c('31', `demo finished with ${failures} failure(s)`)} in ${secs(t0)}`,
  );
  return failures === 0 ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(
      `demo failed: ${isTapnetError(e) ? `${e.code}: ${e.message}` : e instanceof Error ? e.stack : String(e)}`,
    );
    process.exit(1);
  },
);
