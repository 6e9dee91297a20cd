import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { type GuestNetConfig, validateGuestNetConfig, validateHostname } from '../../src/guest/index.js';

const base: GuestNetConfig = {
  vmId: 'vm1',
  ifname: 'tn3f2a9c01',
  mac: '52:54:00:12:34:56',
  ipv4: '198.18.0.5/24',
  gateway4: '198.18.0.1',
  dns: ['198.18.0.1'],
  mtu: 1500,
};

function refused(fn: () => unknown, what?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isTapnetError(e, 'ERR_INVALID_ARGUMENT'), `expected ERR_INVALID_ARGUMENT, got ${String(e)}`);
    if (what) assert.match(e.message, what);
    return true;
  });
}

describe('validateGuestNetConfig', () => {
  it('fills defaults and returns canonical text', () => {
    const v = validateGuestNetConfig({
      ...base,
      mac: '52:54:00:AB:CD:EF',
      ipv6: 'FD00:0:0::5/64',
      gateway6: 'FD00::1',
      dns: ['198.18.0.1', '2001:4860:4860:0:0:0:0:8888'],
    });
    assert.deepEqual(v, {
      vmId: 'vm1',
      ifname: 'tn3f2a9c01',
      mac: '52:54:00:ab:cd:ef',
      ipv4: { address: '198.18.0.5', prefix: 24, cidr: '198.18.0.5/24' },
      netmask4: '255.255.255.0',
      gateway4: '198.18.0.1',
      ipv6: { address: 'fd00::5', prefix: 64, cidr: 'fd00::5/64' },
      gateway6: 'fd00::1',
      dns: ['198.18.0.1', '2001:4860:4860::8888'],
      mtu: 1500,
      guestIfname: 'eth0',
      queues: 1,
    });
  });

  it('accepts /31 and /32, a link-local IPv6 gateway, and MTU 576 without IPv6', () => {
    assert.equal(
      validateGuestNetConfig({ ...base, ipv4: '198.18.0.0/31', gateway4: '198.18.0.1' }).netmask4,
      '255.255.255.254',
    );
    assert.equal(
      validateGuestNetConfig({ ...base, ipv4: '198.18.0.7/32', gateway4: undefined }).netmask4,
      '255.255.255.255',
    );
    assert.equal(
      validateGuestNetConfig({ ...base, ipv6: 'fd00::5/64', gateway6: 'fe80::1' }).gateway6,
      'fe80::1',
    );
    assert.equal(validateGuestNetConfig({ ...base, mtu: 576 }).mtu, 576);
  });

  it('refuses malformed identities and addresses', () => {
    refused(() => validateGuestNetConfig({ ...base, vmId: '../etc' }), /VM id/);
    refused(() => validateGuestNetConfig({ ...base, ifname: 'a-name-that-is-too-long' }), /15/);
    refused(() => validateGuestNetConfig({ ...base, ifname: 'tap\n0' }));
    refused(() => validateGuestNetConfig({ ...base, mac: '01:00:5e:00:00:01' }), /multicast/);
    refused(() => validateGuestNetConfig({ ...base, mac: '52:54:00:12:34:56\n' }));
    refused(() => validateGuestNetConfig({ ...base, ipv4: 'fd00::5/64' }), /IPv4/);
    refused(() => validateGuestNetConfig({ ...base, ipv4: '198.18.0.5' }), /prefix/);
    refused(
      () => validateGuestNetConfig({ ...base, ipv4: '198.18.0.0/24', gateway4: undefined }),
      /network or broadcast/,
    );
    refused(
      () => validateGuestNetConfig({ ...base, ipv4: '198.18.0.255/24', gateway4: undefined }),
      /network or broadcast/,
    );
    refused(
      () => validateGuestNetConfig({ ...base, ipv4: '0.0.0.0/0', gateway4: undefined }),
      /prefix length 0/,
    );
  });

  it('refuses gateways the guest could not use', () => {
    refused(() => validateGuestNetConfig({ ...base, ipv4: undefined }), /no IPv4 address/);
    refused(() => validateGuestNetConfig({ ...base, gateway4: '198.18.0.5' }), /own address/);
    refused(() => validateGuestNetConfig({ ...base, gateway4: '198.18.1.1' }), /not inside/);
    refused(() => validateGuestNetConfig({ ...base, gateway4: 'fd00::1' }), /IPv4/);
    refused(() => validateGuestNetConfig({ ...base, gateway6: 'fd00::1' }), /no IPv6 address/);
    refused(() => validateGuestNetConfig({ ...base, ipv6: 'fd00::5/64', gateway6: 'fd01::1' }), /not inside/);
  });

  it('refuses bad DNS, MTU, queues, fds and flags', () => {
    refused(() => validateGuestNetConfig({ ...base, dns: ['198.18.0.1\nnameserver 6.6.6.6'] }));
    refused(() => validateGuestNetConfig({ ...base, dns: ['dns.example'] }));
    refused(() => validateGuestNetConfig({ ...base, dns: Array(9).fill('198.18.0.1') }), /at most 8/);
    refused(() => validateGuestNetConfig({ ...base, dns: '198.18.0.1' as unknown as string[] }));
    refused(() => validateGuestNetConfig({ ...base, ipv6: 'fd00::5/64', mtu: 1279 }), /1280/);
    refused(() => validateGuestNetConfig({ ...base, mtu: 1500.5 }));
    refused(() => validateGuestNetConfig({ ...base, queues: 0 }));
    refused(() => validateGuestNetConfig({ ...base, queues: 257 }));
    refused(() => validateGuestNetConfig({ ...base, tapFd: -1 }));
    refused(() => validateGuestNetConfig({ ...base, tapFd: 3, tapFds: [3] }), /not both/);
    refused(() => validateGuestNetConfig({ ...base, tapFds: [3, 4] }), /one fd per queue/);
    refused(() => validateGuestNetConfig({ ...base, queues: 2, tapFds: [3, 3] }), /twice/);
    refused(() => validateGuestNetConfig({ ...base, vnetHdr: 'on' as unknown as boolean }));
  });

  it('refuses malformed rate limits', () => {
    refused(() => validateGuestNetConfig({ ...base, rateLimit: { rx: {} } }), /bytesPerSec or opsPerSec/);
    refused(() => validateGuestNetConfig({ ...base, rateLimit: { rx: { bytesPerSec: 0 } } }));
    refused(() => validateGuestNetConfig({ ...base, rateLimit: { rx: { bytesPerSec: 1.5 } } }));
    refused(
      () => validateGuestNetConfig({ ...base, rateLimit: { rx: { opsPerSec: 10, burstBytes: 5 } } }),
      /needs bytesPerSec/,
    );
    refused(
      () => validateGuestNetConfig({ ...base, rateLimit: { rx: { bytesPerSec: 10, burstOps: 5 } } }),
      /needs opsPerSec/,
    );
    refused(
      () => validateGuestNetConfig({ ...base, rateLimit: { rx: { bytesPerSec: 10, bps: 5 } as object } }),
      /unknown field/,
    );
    refused(
      () => validateGuestNetConfig({ ...base, rateLimit: { up: { bytesPerSec: 10 } } as object }),
      /unknown direction/,
    );
  });
});

describe('validateHostname', () => {
  it('accepts RFC 1123 names up to 64 characters', () => {
    assert.equal(validateHostname('vm-1.example'), 'vm-1.example');
    assert.equal(validateHostname('a'.repeat(63)), 'a'.repeat(63));
  });
  it('refuses everything else', () => {
    for (const bad of [
      '',
      '-a',
      'a-',
      'a..b',
      'a b',
      'a\nb',
      'a:b',
      'a"b',
      'a,b',
      `${'a'.repeat(60)}.bbbb`,
      'é',
    ]) {
      refused(() => validateHostname(bad));
    }
  });
});
