import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { type GuestNetConfig, parseKernelIpArg, renderKernelIpArg } from '../../src/guest/index.js';

const base: GuestNetConfig = {
  vmId: 'vm1',
  ifname: 'tn3f2a9c01',
  mac: '52:54:00:12:34:56',
  ipv4: '198.18.0.5/24',
  gateway4: '198.18.0.1',
  dns: [],
  mtu: 1500,
};

function refused(fn: () => unknown, what?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isTapnetError(e, 'ERR_INVALID_ARGUMENT'), `expected ERR_INVALID_ARGUMENT, got ${String(e)}`);
    if (what) assert.match(e.message, what);
    return true;
  });
}

describe('renderKernelIpArg', () => {
  it('dual-stack with a hostname and one IPv4 + one IPv6 DNS server: IPv4 only goes in', () => {
    const arg = renderKernelIpArg({
      ...base,
      hostname: 'vm1',
      ipv6: 'fd00::5/64',
      gateway6: 'fd00::1',
      dns: ['198.18.0.1', '2001:4860:4860::8888'],
    });
    assert.equal(arg, 'ip=198.18.0.5::198.18.0.1:255.255.255.0:vm1:eth0:off:198.18.0.1');
  });

  it('no DNS, no hostname: the trailing fields are left off', () => {
    assert.equal(renderKernelIpArg(base), 'ip=198.18.0.5::198.18.0.1:255.255.255.0::eth0:off');
  });

  it('a fully qualified hostname: only its first label (the rest would become the NIS domain)', () => {
    assert.equal(
      renderKernelIpArg({ ...base, hostname: 'vm1.lab.example' }),
      'ip=198.18.0.5::198.18.0.1:255.255.255.0:vm1:eth0:off',
    );
  });

  it('two and three DNS servers: dns0 and dns1 only', () => {
    assert.equal(
      renderKernelIpArg({ ...base, dns: ['198.18.0.1', '198.18.0.2'] }),
      'ip=198.18.0.5::198.18.0.1:255.255.255.0::eth0:off:198.18.0.1:198.18.0.2',
    );
    assert.equal(
      renderKernelIpArg({ ...base, dns: ['2001:db8::53', '198.18.0.2', '198.18.0.3', '198.18.0.4'] }),
      'ip=198.18.0.5::198.18.0.1:255.255.255.0::eth0:off:198.18.0.2:198.18.0.3',
    );
  });

  it('no gateway, another prefix length and guest interface name', () => {
    assert.equal(
      renderKernelIpArg({ ...base, ipv4: '198.19.1.2/15', gateway4: undefined, guestIfname: 'ens3' }),
      'ip=198.19.1.2:::255.254.0.0::ens3:off',
    );
  });

  it('IPv6-only: refused, ip= cannot carry it', () => {
    refused(
      () =>
        renderKernelIpArg({
          ...base,
          ipv4: undefined,
          gateway4: undefined,
          ipv6: 'fd00::5/64',
          gateway6: 'fd00::1',
        }),
      /IPv4 only/,
    );
  });

  it('refuses hostile values', () => {
    refused(() => renderKernelIpArg({ ...base, guestIfname: 'et"h0' }), /kernel command line/);
    refused(() => renderKernelIpArg({ ...base, guestIfname: 'eth0 init=/bin/sh' }));
    refused(() => renderKernelIpArg({ ...base, guestIfname: 'eth:0' }));
    refused(() => renderKernelIpArg({ ...base, hostname: 'vm1 init=/bin/sh' }));
    refused(() => renderKernelIpArg({ ...base, hostname: 'vm1:eth1' }));
    refused(() => renderKernelIpArg({ ...base, hostname: 'vm1\n' }));
    refused(() => renderKernelIpArg({ ...base, hostname: 'vm"1' }));
    refused(() => renderKernelIpArg({ ...base, dns: ['198.18.0.1:off'] }));
  });
});

describe('parseKernelIpArg', () => {
  it('reads back what renderKernelIpArg writes', () => {
    const arg = renderKernelIpArg({ ...base, hostname: 'vm1', dns: ['198.18.0.1', '198.18.0.2'] });
    assert.deepEqual(parseKernelIpArg(arg), {
      clientIp: '198.18.0.5',
      gatewayIp: '198.18.0.1',
      netmask: '255.255.255.0',
      prefix: 24,
      address: '198.18.0.5/24',
      hostname: 'vm1',
      device: 'eth0',
      autoconf: 'off',
      dns: ['198.18.0.1', '198.18.0.2'],
    });
  });

  it('reads the forms of nfsroot.rst', () => {
    // Trailing fields omitted, no autoconf field.
    assert.deepEqual(parseKernelIpArg('ip=192.168.7.4::192.168.7.1:255.255.255.0::eth0'), {
      clientIp: '192.168.7.4',
      gatewayIp: '192.168.7.1',
      netmask: '255.255.255.0',
      prefix: 24,
      address: '192.168.7.4/24',
      device: 'eth0',
      dns: [],
    });
    // All ten fields, 0.0.0.0 meaning "not given", hostname with NIS domain, without the ip= prefix.
    assert.deepEqual(
      parseKernelIpArg(
        '198.18.0.9:198.18.0.2:0.0.0.0:255.255.240.0:box.lab:eth1:none:198.18.0.3:0.0.0.0:198.18.0.4',
      ),
      {
        clientIp: '198.18.0.9',
        serverIp: '198.18.0.2',
        netmask: '255.255.240.0',
        prefix: 20,
        address: '198.18.0.9/20',
        hostname: 'box.lab',
        device: 'eth1',
        autoconf: 'none',
        dns: ['198.18.0.3'],
        ntp: '198.18.0.4',
      },
    );
    assert.deepEqual(parseKernelIpArg('ip=dhcp'), { autoconf: 'dhcp', dns: [] });
    assert.deepEqual(parseKernelIpArg('ip=dhcp,1,client-a'), { autoconf: 'dhcp', dns: [] });
    assert.deepEqual(parseKernelIpArg('ip=off'), { autoconf: 'off', dns: [] });
    assert.deepEqual(parseKernelIpArg('ip='), { autoconf: 'off', dns: [] });
    assert.deepEqual(parseKernelIpArg(':::::eth0:dhcp'), { device: 'eth0', autoconf: 'dhcp', dns: [] });
  });

  it('refuses what the kernel would silently misread', () => {
    refused(() => parseKernelIpArg('ip=198.18.0.5::198.18.0.1:255.0.255.0::eth0:off'), /contiguous/);
    refused(() => parseKernelIpArg('ip=198.18.0.256::::::off'));
    refused(() => parseKernelIpArg('ip=fd00::5'));
    refused(() => parseKernelIpArg('ip=198.18.0.5::::::sometimes'), /autoconf/);
    refused(() => parseKernelIpArg('ip=198.18.0.5::::::off:::::'), /10/);
    refused(() => parseKernelIpArg('ip=198.18.0.5::::: eth0:off'), /blanks/);
    refused(() => parseKernelIpArg('ip=198.18.0.5:::::"eth0":off'));
  });
});
