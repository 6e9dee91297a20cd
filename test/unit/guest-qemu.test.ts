import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { type GuestNetConfig, renderQemuNetArgs, vhostNetAvailable } from '../../src/guest/index.js';

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

describe('renderQemuNetArgs', () => {
  it('TAP by name on q35, no vhost', () => {
    assert.deepEqual(renderQemuNetArgs(base, { machine: 'q35', vhost: false }), [
      '-netdev',
      'tap,id=net0,ifname=tn3f2a9c01,script=no,downscript=no',
      '-device',
      'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56',
    ]);
  });

  it('TAP by fd on microvm, with vhost: no ifname/script/vnet_hdr with fd=', () => {
    assert.deepEqual(
      renderQemuNetArgs({ ...base, tapFd: 3, vnetHdr: true }, { machine: 'microvm', vhost: true }),
      [
        '-netdev',
        'tap,id=net0,fd=3,vhost=on',
        '-device',
        'virtio-net-device,netdev=net0,mac=52:54:00:12:34:56',
      ],
    );
  });

  it('vnet_hdr on and off, by name on pc', () => {
    assert.deepEqual(renderQemuNetArgs({ ...base, vnetHdr: true }, { machine: 'pc', vhost: true }), [
      '-netdev',
      'tap,id=net0,ifname=tn3f2a9c01,script=no,downscript=no,vnet_hdr=on,vhost=on',
      '-device',
      'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56',
    ]);
    assert.equal(
      renderQemuNetArgs({ ...base, vnetHdr: false }, { machine: 'pc', vhost: false })[1],
      'tap,id=net0,ifname=tn3f2a9c01,script=no,downscript=no,vnet_hdr=off',
    );
  });

  it('multi-queue: queues=N on the netdev, mq=on and vectors=2N+2 on PCI', () => {
    assert.deepEqual(renderQemuNetArgs({ ...base, queues: 4 }, { machine: 'q35', vhost: true }), [
      '-netdev',
      'tap,id=net0,ifname=tn3f2a9c01,script=no,downscript=no,queues=4,vhost=on',
      '-device',
      'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,mq=on,vectors=10',
    ]);
    assert.deepEqual(renderQemuNetArgs({ ...base, queues: 2 }, { machine: 'microvm', vhost: false }), [
      '-netdev',
      'tap,id=net0,ifname=tn3f2a9c01,script=no,downscript=no,queues=2',
      '-device',
      'virtio-net-device,netdev=net0,mac=52:54:00:12:34:56,mq=on',
    ]);
    assert.deepEqual(
      renderQemuNetArgs({ ...base, queues: 2, tapFds: [5, 6] }, { machine: 'pc', vhost: false }),
      [
        '-netdev',
        'tap,id=net0,fds=5:6',
        '-device',
        'virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,mq=on,vectors=6',
      ],
    );
    refused(
      () => renderQemuNetArgs({ ...base, queues: 2, tapFd: 3 }, { machine: 'q35', vhost: false }),
      /tapFds/,
    );
  });

  it('custom id and advertised MTU', () => {
    assert.deepEqual(
      renderQemuNetArgs(
        { ...base, mtu: 9000 },
        { machine: 'q35', vhost: false, id: 'nic1', advertiseMtu: true },
      ),
      [
        '-netdev',
        'tap,id=nic1,ifname=tn3f2a9c01,script=no,downscript=no',
        '-device',
        'virtio-net-pci,netdev=nic1,mac=52:54:00:12:34:56,host_mtu=9000',
      ],
    );
  });

  it('refuses hostile values', () => {
    const q = { machine: 'q35', vhost: false } as const;
    refused(() => renderQemuNetArgs({ ...base, ifname: 'tap0,script=x' }, q), /QEMU/);
    refused(() => renderQemuNetArgs({ ...base, ifname: 'tap0\n' }, q));
    refused(() => renderQemuNetArgs({ ...base, ifname: 'tap 0' }, q));
    refused(() => renderQemuNetArgs({ ...base, mac: '52:54:00:12:34:56,x=y' }, q));
    refused(() => renderQemuNetArgs(base, { ...q, id: 'net0,fd=0' }), /id/);
    refused(() => renderQemuNetArgs(base, { ...q, id: '0net' }), /id/);
    refused(() => renderQemuNetArgs(base, { ...q, id: 'net"0' }), /id/);
    refused(() => renderQemuNetArgs(base, { machine: 'virt' as 'q35', vhost: false }), /machine/);
    refused(() => renderQemuNetArgs(base, { machine: 'q35', vhost: 'on' as unknown as boolean }), /vhost/);
  });
});

describe('vhostNetAvailable', () => {
  it('is true only for an existing character device', () => {
    assert.equal(vhostNetAvailable('/dev/null'), true);
    assert.equal(vhostNetAvailable(process.execPath), false);
    assert.equal(vhostNetAvailable('/nonexistent/vhost-net'), false);
    assert.equal(typeof vhostNetAvailable(), 'boolean');
  });
});
