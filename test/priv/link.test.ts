import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isTapnetError } from '../../src/errors.js';
import {
  deleteAddress,
  deleteRoute,
  ensureAddress,
  ensureRoute,
  listAddresses,
  listRoutes,
} from '../../src/net/addr.js';
import {
  createVeth,
  deleteLink,
  deleteLinks,
  ensureBridge,
  findLink,
  getLink,
  listLinks,
  setLink,
} from '../../src/net/link.js';
import { createNetns, deleteNetns } from '../../src/net/netns.js';
import { closeTapFds, createTap, deleteTap, openTap } from '../../src/net/tap.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();
const here = dirname(fileURLToPath(import.meta.url));

interface IpLink {
  ifname: string;
  ifindex: number;
  mtu: number;
  address: string;
  master?: string;
  flags: string[];
  linkinfo?: { info_kind?: string; info_slave_kind?: string; info_data?: Record<string, unknown> };
  group?: string;
}

describe('links, TAPs, addresses and routes against the kernel', { skip }, () => {
  let t: TestNetns;
  before(() => {
    t = makeTestNetns('link');
  });
  after(() => t?.destroy());

  it('creates a bridge with a fixed MAC and MTU, idempotently, as ip reports it', () => {
    const br = ensureBridge(t.nl, { name: 'tbr0', mac: '02:00:00:aa:00:01', mtu: 1400, up: true });
    assert.equal(br.kind, 'bridge');
    const again = ensureBridge(t.nl, { name: 'tbr0', mac: '02:00:00:aa:00:01', mtu: 1400, up: true });
    assert.equal(again.index, br.index);
    const [ip] = t.ipJson<IpLink[]>('-d', 'link', 'show', 'tbr0');
    assert.equal(ip!.address, '02:00:00:aa:00:01');
    assert.equal(ip!.mtu, 1400);
    assert.equal(ip!.linkinfo?.info_kind, 'bridge');
    assert.ok(ip!.flags.includes('UP'));
  });

  it('refuses to adopt a non-bridge of the same name', () => {
    t.ip('link', 'add', 'tdummy0', 'type', 'veth', 'peer', 'name', 'tdummy0p');
    assert.throws(
      () => ensureBridge(t.nl, { name: 'tdummy0' }),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
    );
    deleteLink(t.nl, 'tdummy0');
  });

  it('creates a persistent TAP attached to the bridge, up, with vnet header and owner', () => {
    const br = getLink(t.nl, 'tbr0');
    const tap = createTap(
      { name: 'ttap0', nsFd: t.ns.fd, master: br.index, up: true, mtu: 1400, owner: 1234, group: 99 },
      t.nl,
    );
    assert.deepEqual(tap.fds, []);
    const [ip] = t.ipJson<IpLink[]>('-d', 'link', 'show', 'ttap0');
    assert.equal(ip!.master, 'tbr0');
    assert.equal(ip!.mtu, 1400);
    assert.ok(ip!.flags.includes('UP'));
    assert.equal(ip!.linkinfo?.info_kind, 'tun');
    const info = ip!.linkinfo?.info_data as {
      type: string;
      pi: boolean;
      vnet_hdr: boolean;
      persist: boolean;
      user?: number;
    };
    assert.equal(info.type, 'tap');
    assert.equal(info.pi, false);
    assert.equal(info.vnet_hdr, true);
    assert.equal(info.persist, true);
    const mine = getLink(t.nl, 'ttap0');
    assert.equal(mine.tun?.owner, 1234);
    assert.equal(mine.tun?.group, 99);
    assert.equal(mine.tun?.vnetHdr, true);
    assert.equal(mine.master, br.index);
    // The TAP is in the test namespace, not in ours.
    assert.equal(findLink(t.nl, 'ttap0')?.name, 'ttap0');
  });

  it('a persistent TAP can be reopened by name and deleted; deleting again is success', () => {
    const q = openTap('ttap0', { nsFd: t.ns.fd });
    assert.equal(q.fds.length, 1);
    for (const fd of q.fds) closeSync(fd);
    assert.ok(findLink(t.nl, 'ttap0'), 'closing a queue of a persistent TAP leaves the device');
    deleteTap(t.nl, 'ttap0');
    deleteTap(t.nl, 'ttap0');
    assert.equal(findLink(t.nl, 'ttap0'), undefined);
  });

  it('a non-persistent multi-queue TAP lives exactly as long as its fds', async () => {
    const tap = createTap({ name: 'ttapmq', nsFd: t.ns.fd, persistent: false, queues: 4 }, t.nl);
    assert.equal(tap.fds.length, 4);
    const l = getLink(t.nl, 'ttapmq');
    assert.equal(l.tun?.multiQueue, true);
    assert.equal(l.tun?.numQueues, 4);
    await closeTapFds(tap.fds);
    assert.equal(findLink(t.nl, 'ttapmq'), undefined);
  });

  it('an fd TAP made over a persistent one a crash left is not persistent: it goes with its fds', async () => {
    createTap({ name: 'ttapleft', nsFd: t.ns.fd }); // the leftover: persistent, no fd
    const tap = createTap({ name: 'ttapleft', nsFd: t.ns.fd, persistent: false }, t.nl);
    assert.equal(tap.fds.length, 1);
    assert.equal(getLink(t.nl, 'ttapleft').tun?.persist, false);
    await closeTapFds(tap.fds);
    assert.equal(findLink(t.nl, 'ttapleft'), undefined);
  });

  it('exclusive create refuses an existing device with ERR_CONFLICT', () => {
    createTap({ name: 'ttapx', nsFd: t.ns.fd }, t.nl);
    assert.throws(
      () => createTap({ name: 'ttapx', nsFd: t.ns.fd, exclusive: true }, t.nl),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
    );
    deleteTap(t.nl, 'ttapx');
  });

  it('rejects bad names, MACs and CIDRs before touching the kernel', () => {
    const bad = ['', 'x'.repeat(16), 'a/b', 'sp ace', 'nul\0x', '..', 'é'];
    for (const name of bad) {
      assert.throws(
        () => createTap({ name, nsFd: t.ns.fd }, t.nl),
        (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
        JSON.stringify(name),
      );
      assert.throws(
        () => ensureBridge(t.nl, { name }),
        (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
      );
    }
    assert.throws(
      () => ensureBridge(t.nl, { name: 'tbrbad', mac: '02:00:00:00:00' }),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => ensureAddress(t.nl, 1, '198.18.0.1/33'),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => ensureAddress(t.nl, 1, '198.18.0/24'),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.throws(
      () => createNetns('no/such'),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    assert.equal(findLink(t.nl, 'tbrbad'), undefined);
  });

  it('unknown links are ERR_LINK_NOT_FOUND', () => {
    assert.throws(
      () => getLink(t.nl, 'nosuch0'),
      (e) => isTapnetError(e, 'ERR_LINK_NOT_FOUND'),
    );
    assert.throws(
      () => setLink(t.nl, 'nosuch0', { up: true }),
      (e) => isTapnetError(e, 'ERR_LINK_NOT_FOUND'),
    );
    deleteLink(t.nl, 'nosuch0');
  });

  it('adds IPv4 and IPv6 addresses and routes, idempotently, as ip reports them', () => {
    const br = getLink(t.nl, 'tbr0');
    ensureAddress(t.nl, br.index, '198.18.0.1/24');
    ensureAddress(t.nl, br.index, '198.18.0.1/24');
    ensureAddress(t.nl, br.index, 'fd00:198:18::1/64', { flags: 0x02 /* nodad */ });
    const mine = listAddresses(t.nl, { index: br.index })
      .map((a) => a.cidr)
      .sort();
    assert.deepEqual(
      mine.filter((c) => !c.startsWith('fe80')),
      ['198.18.0.1/24', 'fd00:198:18::1/64'],
    );
    const ip = t.ipJson<{ addr_info: { local: string; prefixlen: number; broadcast?: string }[] }[]>(
      'addr',
      'show',
      'tbr0',
    );
    const v4 = ip[0]!.addr_info.find((a) => a.local === '198.18.0.1');
    assert.equal(v4?.prefixlen, 24);
    assert.equal(v4?.broadcast, '198.18.0.255');
    ensureRoute(t.nl, { dst: '198.18.9.0/24', gateway: '198.18.0.9' });
    ensureRoute(t.nl, { dst: 'default', family: 4, gateway: '198.18.0.254' });
    ensureRoute(t.nl, { dst: '198.18.9.0/24', gateway: '198.18.0.9' });
    const routes = listRoutes(t.nl, 4);
    assert.ok(routes.some((r) => r.dst === '198.18.9.0/24' && r.gateway === '198.18.0.9'));
    assert.ok(routes.some((r) => r.dst === '0.0.0.0/0' && r.gateway === '198.18.0.254'));
    const ipRoutes = t.ipJson<{ dst: string; gateway?: string }[]>('route', 'show');
    assert.ok(ipRoutes.some((r) => r.dst === '198.18.9.0/24' && r.gateway === '198.18.0.9'));
    assert.ok(ipRoutes.some((r) => r.dst === 'default' && r.gateway === '198.18.0.254'));
    deleteRoute(t.nl, { dst: '198.18.9.0/24', gateway: '198.18.0.9' });
    deleteRoute(t.nl, { dst: '198.18.9.0/24', gateway: '198.18.0.9' });
    deleteAddress(t.nl, br.index, 'fd00:198:18::1/64');
    deleteAddress(t.nl, br.index, 'fd00:198:18::1/64');
    assert.ok(!listRoutes(t.nl, 4).some((r) => r.dst === '198.18.9.0/24'));
  });

  it('creates veth pairs across namespaces; sets MTU, MAC, master, rename, down', () => {
    const other = createNetns(`t${process.pid}-vethpeer`);
    try {
      createVeth(t.nl, { name: 'tveth0', peer: 'tveth0p', peerNsFd: other.fd, mtu: 1450 });
      const l = getLink(t.nl, 'tveth0');
      assert.equal(l.kind, 'veth');
      assert.equal(l.mtu, 1450);
      assert.equal(findLink(t.nl, 'tveth0p'), undefined, 'the peer lives in the other namespace');
      setLink(t.nl, 'tveth0', { mac: '02:00:00:bb:00:01', master: 'tbr0', up: true, group: 7 });
      let ip = t.ipJson<IpLink[]>('-d', 'link', 'show', 'tveth0')[0]!;
      assert.equal(ip.address, '02:00:00:bb:00:01');
      assert.equal(ip.master, 'tbr0');
      assert.equal(getLink(t.nl, 'tveth0').group, 7);
      setLink(t.nl, 'tveth0', { master: null, up: false, rename: 'tveth1' });
      ip = t.ipJson<IpLink[]>('-d', 'link', 'show', 'tveth1')[0]!;
      assert.equal(ip.master, undefined);
      assert.ok(!ip.flags.includes('UP'));
      deleteLink(t.nl, 'tveth1');
    } finally {
      other.close();
      deleteNetns(`t${process.pid}-vethpeer`);
    }
  });

  it('deletes many TAPs with one group delete', () => {
    const br = getLink(t.nl, 'tbr0');
    const names = Array.from({ length: 50 }, (_, i) => `tgrp${i}`);
    for (const name of names) createTap({ name, nsFd: t.ns.fd, master: br.index, up: true }, t.nl);
    assert.equal(listLinks(t.nl, { master: br.index }).filter((l) => l.name.startsWith('tgrp')).length, 50);
    const failures = deleteLinks(t.nl, [...names, 'tgrpgone'], 4242);
    assert.deepEqual(failures, []);
    assert.equal(listLinks(t.nl).filter((l) => l.name.startsWith('tgrp')).length, 0);
  });

  it('reads link statistics (IFLA_STATS64) matching ip -s', () => {
    const l = getLink(t.nl, 'lo');
    assert.ok(l.stats);
    const ip = t.ipJson<{ stats64: { rx: { bytes: number } } }[]>('-s', 'link', 'show', 'lo')[0]!;
    assert.ok(Math.abs(ip.stats64.rx.bytes - l.stats!.rxBytes) < 10_000);
  });

  it('hands a TAP fd to a child process that exchanges frames with the bridge', async () => {
    const br = getLink(t.nl, 'tbr0');
    const tap = createTap(
      { name: 'ttapfd', nsFd: t.ns.fd, persistent: false, master: br.index, up: true },
      t.nl,
    );
    try {
      const child = spawn(
        process.execPath,
        [join(here, '../fixtures/tap-arp-child.js'), '02:00:00:cc:00:02', '198.18.0.2', '198.18.0.1'],
        { stdio: ['ignore', 'pipe', 'inherit', tap.fds[0]!] },
      );
      let out = '';
      child.stdout!.on('data', (d) => {
        out += d;
      });
      const code = await new Promise<number | null>((r) => child.on('exit', r));
      assert.equal(
        out.trim(),
        'reply 02:00:00:aa:00:01',
        'the bridge answered the ARP request the child wrote',
      );
      assert.equal(code, 0);
      const stats = getLink(t.nl, 'ttapfd').stats!;
      assert.ok(stats.rxPackets >= 1 && stats.txPackets >= 1);
    } finally {
      await closeTapFds(tap.fds);
    }
    assert.equal(findLink(t.nl, 'ttapfd'), undefined);
  });
});
