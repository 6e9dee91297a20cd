import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { portElementKeys } from '../../src/firewall/fastpath.js';

describe('nftables fast path: element keys as nft encodes them', () => {
  it('pads the interface name to 16 bytes and each field to 4 bytes', () => {
    const keys = portElementKeys({
      family: 'bridge',
      ifname: 'tn0123456789',
      network: 'vms',
      macs: ['02:aa:bb:cc:dd:ee'],
      ipv4: ['198.18.0.5'],
      ipv6: ['fd00::5'],
    });
    const name = Buffer.concat([Buffer.from('tn0123456789'), Buffer.alloc(4)]).toString('hex');
    assert.equal(keys.get('vm_mac')![0]!.key.toString('hex'), `${name}02aabbccddee0000`);
    assert.equal(keys.get('vm_ip4')![0]!.key.toString('hex'), `${name}c6120005`);
    assert.equal(keys.get('vm_ip6')![0]!.key.toString('hex'), `${name}fd000000000000000000000000000005`);
    assert.deepEqual(keys.get('vm_counter'), [{ key: Buffer.from(name, 'hex'), objref: 'spoof_vms' }]);
  });

  it('a port without a network has no counter entry', () => {
    const keys = portElementKeys({
      family: 'inet',
      ifname: 'tn1',
      network: undefined,
      macs: [],
      ipv4: ['198.18.0.6'],
      ipv6: [],
    });
    assert.deepEqual([...keys.keys()], ['vm_ip4']);
  });
});
