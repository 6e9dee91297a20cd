/**
 * The pure parts of cluster mode: the etcd key layout and its validation, lease values, overlay entries
 * and publisher, VNI and MTU arithmetic, and the bridge port request's bytes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { leaseText, parseLease } from '../../src/cluster/etcd-leases.js';
import type { EtcdStore } from '../../src/cluster/etcd-store.js';
import { ClusterKeys, segmentSubnet, subnetSegment } from '../../src/cluster/keys.js';
import { parseOverlayEntry, vmOverlayPublisher } from '../../src/cluster/overlay.js';
import { deriveVni, overlayMtu, vxlanName } from '../../src/cluster/overlay-kernel.js';
import { RecordCache } from '../../src/cluster/record-cache.js';
import { formatClusterStatus } from '../../src/cluster/status-text.js';
import { isTapnetError } from '../../src/errors.js';
import type { ManagerStore } from '../../src/manager/manager.js';
import type { VmRecord } from '../../src/manager/types.js';
import { encodeBridgePortRequest, IFLA_PROTINFO } from '../../src/net/bridge-port.js';
import { parseAttrs } from '../../src/netlink/attr.js';
import {
  AF_BRIDGE,
  IFLA_BRPORT_LEARNING,
  IFLA_BRPORT_NEIGH_SUPPRESS,
  RTM_SETLINK,
} from '../../src/netlink/constants.js';
import type { StoreBackend } from '../../src/store/index.js';

const bad = (e: unknown) => isTapnetError(e, 'ERR_INVALID_ARGUMENT');

describe('cluster key layout', () => {
  const k = new ClusterKeys();
  const pool = { network: 'c1', subnet: '198.18.64.0/20' };

  it('builds every key under the prefix from validated names', () => {
    assert.equal(k.record('host-a', 'vm1'), '/tapnet/hosts/host-a/vms/vm1');
    assert.equal(k.hostInfo('host-a'), '/tapnet/hosts/host-a/info');
    assert.equal(k.alive('host-a'), '/tapnet/alive/host-a');
    assert.equal(k.lease(pool, '198.18.64.7'), '/tapnet/ipam/c1/198.18.64.0_20/leases/198.18.64.7');
    assert.equal(
      k.lease({ network: 'c1', subnet: 'fd00::/64' }, 'fd00::7'),
      '/tapnet/ipam/c1/fd00::_64/leases/fd00::7',
    );
    assert.equal(k.cursor(pool, 'host-a'), '/tapnet/ipam/c1/198.18.64.0_20/cursor/host-a');
    assert.equal(k.lockDir('host-a', 'vm', 'vm1'), '/tapnet/locks/host-a/vm/vm1/');
    assert.equal(k.overlayEntry('c1', 'host-a', 'vm1'), '/tapnet/overlay/c1/host-a/vm1');
    assert.equal(new ClusterKeys('/prod/tapnet').network('c1'), '/prod/tapnet/networks/c1');
    assert.equal(subnetSegment('198.18.64.0/20'), '198.18.64.0_20');
    assert.equal(segmentSubnet('fd00::_64'), 'fd00::/64');
  });

  it('refuses names that would escape their directory', () => {
    assert.throws(() => k.record('../x', 'vm1'), bad);
    assert.throws(() => k.record('host-a', 'a/b'), bad);
    assert.throws(() => k.record('host a', 'vm1'), bad);
    assert.throws(() => k.lease(pool, '1.2.3.4/../x'), bad);
    assert.throws(() => k.lease({ network: 'c1', subnet: 'nope' }, '1.2.3.4'), bad);
    assert.throws(() => new ClusterKeys('tapnet'), bad);
    assert.throws(() => new ClusterKeys('/tapnet/'), bad);
    assert.throws(() => new ClusterKeys('/a/../b'), bad);
  });
});

describe('cluster values', () => {
  it('lease values are deterministic text and parse back', () => {
    assert.equal(leaseText('vm1', 'host-a'), '{"owner":"vm1","host":"host-a"}');
    assert.deepEqual(parseLease(leaseText('vm1', 'host-a')), { owner: 'vm1', host: 'host-a' });
    assert.equal(parseLease('vm1'), undefined);
    assert.equal(parseLease('{"owner":1}'), undefined);
  });

  it('overlay entries are checked before they are programmed', () => {
    assert.deepEqual(
      parseOverlayEntry('{"mac":"02:00:00:00:00:01","vtep":"198.18.100.1","ipv4":"198.18.64.5"}'),
      {
        mac: '02:00:00:00:00:01',
        vtep: '198.18.100.1',
        ipv4: '198.18.64.5',
      },
    );
    assert.equal(
      parseOverlayEntry('{"mac":"01:00:00:00:00:01","vtep":"198.18.100.1"}'),
      undefined,
      'multicast MAC',
    );
    assert.equal(parseOverlayEntry('{"mac":"02:00:00:00:00:01","vtep":"nope"}'), undefined);
    assert.equal(parseOverlayEntry('not json'), undefined);
    const e = parseOverlayEntry('{"mac":"02:00:00:00:00:01","vtep":"198.18.100.1","ipv4":"fd00::1"}');
    assert.equal(e?.ipv4, undefined, 'an address of the wrong family is dropped');
  });

  it('the publisher publishes VMs of cluster networks only, with this host’s VTEP', () => {
    const pub = vmOverlayPublisher(['c1'], '198.18.100.1');
    const r = { vmId: 'vm1', network: 'c1', mac: '02:00:00:00:00:01', ipv4: '198.18.64.5' };
    assert.deepEqual(pub(r), {
      network: 'c1',
      entry: { mac: '02:00:00:00:00:01', vtep: '198.18.100.1', ipv4: '198.18.64.5' },
    });
    assert.equal(pub({ ...r, network: 'local' }), undefined);
    assert.throws(() => vmOverlayPublisher(['c1'], 'x'), bad);
  });

  it('VNI, device name and MTU arithmetic', () => {
    const v = deriveVni('c1');
    assert.equal(v, deriveVni('c1'));
    assert.ok(v >= 1 && v <= 0xffffff);
    assert.notEqual(deriveVni('c1'), deriveVni('c2'));
    assert.match(vxlanName(v), /^tnvx\d{1,8}$/);
    assert.ok(vxlanName(0xffffff).length <= 15);
    assert.throws(() => vxlanName(0), bad);
    assert.equal(overlayMtu(1500), 1450);
    assert.equal(overlayMtu(9000), 8950);
    assert.equal(overlayMtu(1500, 6), 1430);
    assert.throws(() => overlayMtu(1000), bad);
  });

  it('cluster status as text', () => {
    const text = formatClusterStatus({
      endpoint: 'http://198.18.100.254:2379',
      prefix: '/tapnet',
      revision: 42,
      hosts: [
        {
          name: 'host-a',
          vtep: '198.18.100.1',
          state: 'alive',
          leaseId: '694d7',
          ttl: 8,
          vms: 300,
          joinedAt: '',
        },
        { name: 'host-b', vtep: '198.18.100.2', state: 'expired', leaseId: '694d9', vms: 1, joinedAt: '' },
      ],
      networks: [{ name: 'c1', vni: 4242, topology: 'bridge', mtu: 1450, subnet4: '198.18.64.0/20' }],
    });
    assert.equal(
      text,
      [
        'etcd http://198.18.100.254:2379/tapnet (revision 42)',
        'HOST    VTEP          STATE    LEASE  TTL  VMS',
        'host-a  198.18.100.1  alive    694d7  8s   300',
        'host-b  198.18.100.2  expired  694d9  -    1',
        '',
        'network c1: vni 4242, bridge, mtu 1450, 198.18.64.0/20',
        '',
      ].join('\n'),
    );
  });

  it('the record cache only keeps copies it was given', () => {
    const c = new RecordCache();
    c.update('vm1', null);
    assert.equal(c.get('vm1'), undefined, 'a write alone does not make a copy');
    c.set('vm1', null);
    assert.equal(c.get('vm1'), null);
    const kv = { key: 'k', value: '{}', createRevision: 3, modRevision: 3, version: 1, lease: '0' };
    c.update('vm1', kv);
    assert.equal(c.get('vm1'), kv);
    c.drop('vm1');
    assert.equal(c.get('vm1'), undefined);
  });
});

/** Compile-time: the etcd store has the shape a NetworkManager and openStore() callers take. */
export function storeShapes(s: EtcdStore<VmRecord>): [ManagerStore, StoreBackend<VmRecord>] {
  return [s, s];
}

describe('bridge port request', () => {
  it('is RTM_SETLINK, AF_BRIDGE, with the flags nested in IFLA_PROTINFO', () => {
    const b = encodeBridgePortRequest(7, { neighSuppress: true, learning: false });
    assert.equal(b.readUInt32LE(0), b.length);
    assert.equal(b.readUInt16LE(4), RTM_SETLINK);
    assert.equal(b[16], AF_BRIDGE);
    assert.equal(b.readInt32LE(20), 7);
    const [protinfo] = parseAttrs(b, 32);
    assert.equal(protinfo!.type, IFLA_PROTINFO);
    assert.equal(protinfo!.nested, true);
    const inner = parseAttrs(protinfo!.data);
    assert.deepEqual(
      inner.map((a) => [a.type, a.data[0]]),
      [
        [IFLA_BRPORT_LEARNING, 0],
        [IFLA_BRPORT_NEIGH_SUPPRESS, 1],
      ],
    );
    assert.equal(b.length, 16 + 16 + 4 + 8 + 8);
    assert.throws(() => encodeBridgePortRequest(0, {}), bad);
  });
});
