import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  checkNoOverlap,
  normalizeNetwork,
  normalizeVm,
  normalizeVmForRemoval,
  objectName,
  pairSubnet,
  parseObjectName,
  subnetPair,
} from '../../src/firewall/model.js';
import type { FirewallNetwork } from '../../src/firewall/types.js';
import { errnoFromNftError, parseNftOutput, validateNftDocument } from '../../src/sys/nftables.js';

const invalid = (fn: () => unknown, what?: string) =>
  assert.throws(fn, (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'), what);

const NET: FirewallNetwork = {
  name: 'default',
  topology: 'bridge',
  bridge: 'tn-default',
  tapPrefix: 'tn',
  subnet4: '198.18.0.0/24',
  subnet6: 'fd00:1::/64',
  nat: true,
  isolate: true,
};

/** Strings an attacker would love to see spliced into nft syntax. */
const HOSTILE = [
  'x"; flush ruleset',
  'x; flush ruleset',
  '; flush ruleset',
  'a\nflush ruleset',
  "x'",
  'x"',
  'x y',
  'x\0',
  '@set',
  '$var',
  'tn*',
  'tn\\*',
  'x{}',
  '',
];

describe('firewall input validation', () => {
  it('accepts a network and makes its subnets canonical', () => {
    const spec = normalizeNetwork({ ...NET, subnet4: '198.18.0.77/24', subnet6: 'FD00:1:0::5/64' });
    assert.equal(spec.subnet4, '198.18.0.0/24');
    assert.equal(spec.subnet6, 'fd00:1::/64');
    assert.equal(normalizeNetwork({ ...NET, topology: 'routed', bridge: undefined }).bridge, undefined);
  });

  it('refuses hostile network names, prefixes and bridges before building anything', () => {
    for (const h of HOSTILE) {
      invalid(() => normalizeNetwork({ ...NET, name: h }), `name ${JSON.stringify(h)}`);
      invalid(() => normalizeNetwork({ ...NET, tapPrefix: h }), `tapPrefix ${JSON.stringify(h)}`);
      invalid(() => normalizeNetwork({ ...NET, bridge: h }), `bridge ${JSON.stringify(h)}`);
    }
    invalid(() => normalizeNetwork({ ...NET, tapPrefix: 'p'.repeat(15) }));
    invalid(() => normalizeNetwork({ ...NET, name: 'a..b' }));
  });

  it('refuses malformed network definitions', () => {
    invalid(() => normalizeNetwork({ ...NET, topology: 'star' as never }));
    invalid(() => normalizeNetwork({ ...NET, subnet4: 'fd00::/64' }));
    invalid(() => normalizeNetwork({ ...NET, subnet6: '198.18.0.0/24' }));
    invalid(() => normalizeNetwork({ ...NET, subnet4: '0.0.0.0/0' }));
    invalid(() => normalizeNetwork({ ...NET, subnet4: '198.18.0.0/24; flush ruleset' }));
    invalid(() => normalizeNetwork({ ...NET, subnet4: undefined, subnet6: undefined }));
    invalid(() => normalizeNetwork({ ...NET, nat: 'yes' as never }));
    invalid(() => normalizeNetwork({ ...NET, isolate: 1 as never }));
    invalid(() => normalizeNetwork(null as never));
  });

  it('refuses subnets that overlap another network', () => {
    const a = normalizeNetwork(NET);
    const b = normalizeNetwork({ ...NET, name: 'other', subnet4: '198.18.0.128/25', subnet6: undefined });
    assert.throws(
      () => checkNoOverlap(b, [a]),
      (e) => isTapnetError(e, 'ERR_CONFLICT'),
    );
    checkNoOverlap(a, [a]); // itself is fine
    checkNoOverlap(
      normalizeNetwork({ ...NET, name: 'c', subnet4: '198.18.1.0/24', subnet6: 'fd00:2::/64' }),
      [a],
    );
  });

  it('accepts a VM, canonical, and checks it against its network', () => {
    const net = normalizeNetwork(NET);
    const vm = normalizeVm(
      {
        network: 'default',
        ifname: 'tn0a1b',
        mac: '02:AA:00:00:00:01',
        ipv4: '198.18.0.5',
        ipv6: 'FD00:1:0::0005',
      },
      net,
    );
    assert.deepEqual(vm, {
      network: 'default',
      ifname: 'tn0a1b',
      mac: '02:aa:00:00:00:01',
      ipv4: '198.18.0.5',
      ipv6: 'fd00:1::5',
    });
    const ok = { network: 'default', ifname: 'tn0a1b', mac: '02:00:00:00:00:01' };
    invalid(() => normalizeVm({ ...ok, ifname: 'xx0a1b' }, net), 'prefix');
    invalid(() => normalizeVm({ ...ok, ifname: 'tn' }, net), 'prefix only');
    invalid(() => normalizeVm({ ...ok, ifname: 'tn0123456789abcd' }, net), '16 bytes');
    invalid(() => normalizeVm({ ...ok, mac: '01:00:5e:00:00:01' }, net), 'multicast');
    invalid(() => normalizeVm({ ...ok, mac: '02:00:00:00:00:01 ' }, net), 'mac space');
    invalid(() => normalizeVm({ ...ok, ipv4: '198.18.1.5' }, net), 'outside subnet4');
    invalid(() => normalizeVm({ ...ok, ipv4: 'fd00:1::5' }, net), 'v6 as v4');
    invalid(() => normalizeVm({ ...ok, ipv6: 'fd00:2::5' }, net), 'outside subnet6');
    const v4only = normalizeNetwork({ ...NET, subnet6: undefined });
    invalid(() => normalizeVm({ ...ok, ipv6: 'fd00:1::5' }, v4only), 'no subnet6');
  });

  it('refuses hostile VM interface names, MACs and addresses', () => {
    const net = normalizeNetwork(NET);
    for (const h of HOSTILE) {
      invalid(() => normalizeVm({ network: 'default', ifname: `tn${h}`, mac: '02:00:00:00:00:01' }, net), h);
      invalid(() => normalizeVm({ network: 'default', ifname: 'tn1', mac: h }, net), h);
      invalid(
        () => normalizeVm({ network: 'default', ifname: 'tn1', mac: '02:00:00:00:00:01', ipv4: h }, net),
        h,
      );
      invalid(() => normalizeVmForRemoval({ network: h, ifname: 'tn1', mac: '02:00:00:00:00:01' }), h);
      if (h)
        invalid(
          () => normalizeVmForRemoval({ network: 'default', ifname: `tn${h}`, mac: '02:00:00:00:00:01' }),
          h,
        );
    }
  });

  it('validates removals without a network definition (syntax only)', () => {
    assert.deepEqual(
      normalizeVmForRemoval({ network: 'gone', ifname: 'zz1', mac: '02:00:00:00:00:0A', ipv4: '10.1.2.3' }),
      {
        network: 'gone',
        ifname: 'zz1',
        mac: '02:00:00:00:00:0a',
        ipv4: '10.1.2.3',
      },
    );
    invalid(() =>
      normalizeVmForRemoval({ network: 'gone', ifname: 'zz1', mac: '02:00:00:00:00:0a', ipv6: '10.1.2.3' }),
    );
  });
});

describe('firewall object names', () => {
  it('round-trips per-network names, underscores included', () => {
    assert.equal(objectName('spoof', 'a_b.c-d'), 'spoof_a_b.c-d');
    assert.deepEqual(parseObjectName('spoof_a_b.c-d'), { kind: 'spoof', network: 'a_b.c-d' });
    assert.deepEqual(parseObjectName('net6_x'), { kind: 'net6', network: 'x' });
    for (const other of [
      'vm_mac',
      'vm_counter',
      'guard_tn',
      'antispoof',
      'subnets4',
      'spoof_',
      'unregistered',
    ]) {
      assert.equal(parseObjectName(other), undefined, other);
    }
  });

  it('records subnets as address . netmask and reads them back', () => {
    assert.deepEqual(subnetPair('198.18.4.0/22'), ['198.18.4.0', '255.255.252.0']);
    assert.deepEqual(subnetPair('fd00:1::/64'), ['fd00:1::', 'ffff:ffff:ffff:ffff::']);
    assert.equal(pairSubnet('198.18.4.0', '255.255.252.0'), '198.18.4.0/22');
    assert.equal(pairSubnet('fd00:1::', 'ffff:ffff:ffff:ffff::'), 'fd00:1::/64');
    assert.equal(pairSubnet('198.18.4.0', '255.0.255.0'), undefined);
    assert.equal(pairSubnet('198.18.4.0', 'ffff::'), undefined);
    assert.equal(pairSubnet('junk', '255.0.0.0'), undefined);
  });
});

describe('libnftables document checks', () => {
  it('accepts plain JSON and refuses what jansson would reject', () => {
    validateNftDocument({ nftables: [{ add: { table: { family: 'inet', name: 'tapnet' } } }] });
    const bad: unknown[] = [
      { nftables: [{ add: { table: { family: 'inet', name: 'a\0b' } } }] },
      { nftables: [{ add: { table: { family: 'inet', name: 'a\uD800' } } }] },
      { nftables: [{ add: { chain: { prio: 2 ** 60 } } }] },
      { nftables: [{ add: { chain: { prio: 1.5 } } }] },
      { nftables: [{ add: { chain: { prio: 10n } } }] },
      { nftables: [{ add: { chain: { x: undefined } } }] },
      { nftables: [{ add: { chain: { x: () => 1 } } }] },
      { nftables: 'add table inet x' },
      { add: {} },
      null,
    ];
    for (const [i, d] of bad.entries()) invalid(() => validateNftDocument(d as never), `case ${i}`);
  });

  it('merges one output document per list command and drops metainfo', () => {
    const meta = { metainfo: { version: '1.0.6', json_schema_version: 1 } };
    const out = parseNftOutput(
      `${JSON.stringify({ nftables: [meta, { table: { family: 'inet', name: 'a' } }] })}\n` +
        `${JSON.stringify({ nftables: [meta, { chain: { family: 'inet', table: 'a', name: 'c' } }] })}\n`,
    );
    assert.deepEqual(out, {
      nftables: [
        { table: { family: 'inet', name: 'a' } },
        { chain: { family: 'inet', table: 'a', name: 'c' } },
      ],
    });
    assert.deepEqual(parseNftOutput(''), { nftables: [] });
    assert.throws(
      () => parseNftOutput('table inet a {'),
      (e) => isTapnetError(e, 'ERR_FIREWALL'),
    );
  });

  it('maps nft error texts back to errno names', () => {
    assert.equal(errnoFromNftError('Error: Could not process rule: No such file or directory'), 'ENOENT');
    assert.equal(errnoFromNftError('Error: Could not process rule: Device or resource busy'), 'EBUSY');
    assert.equal(errnoFromNftError('Error: Operation not permitted (you must be root)'), 'EPERM');
    assert.equal(errnoFromNftError('Error: syntax error'), undefined);
  });
});
