import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  createNetns,
  deleteNetns,
  getSysctl,
  isNetnsMounted,
  listNetns,
  openNetns,
  setSysctl,
} from '../../src/net/netns.js';
import { privSkipReason } from '../helpers/priv.js';

const skip = privSkipReason();

describe('named network namespaces', { skip }, () => {
  const name = `t${process.pid}-ns`;
  after(() => deleteNetns(name));

  it('creates a namespace that iproute2 sees, idempotently', () => {
    const ns = createNetns(name);
    ns.close();
    const again = createNetns(name);
    again.close();
    assert.ok(listNetns().includes(name));
    const ipList = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
    assert.match(ipList, new RegExp(`^${name}`, 'm'));
    // A fresh namespace holds only lo.
    const links = JSON.parse(execFileSync('ip', ['-n', name, '-j', 'link', 'show'], { encoding: 'utf8' }));
    assert.deepEqual(
      links.map((l: { ifname: string }) => l.ifname),
      ['lo'],
    );
  });

  it('writes sysctls inside the namespace only', () => {
    const ns = openNetns(name);
    try {
      const before = getSysctl(undefined, 'net/ipv4/ip_forward');
      setSysctl(ns, 'net/ipv4/ip_forward', '1');
      assert.equal(getSysctl(ns, 'net/ipv4/ip_forward'), '1');
      assert.equal(getSysctl(undefined, 'net/ipv4/ip_forward'), before);
      const viaIp = execFileSync('ip', ['netns', 'exec', name, 'cat', '/proc/sys/net/ipv4/ip_forward'], {
        encoding: 'utf8',
      });
      assert.equal(viaIp.trim(), '1');
    } finally {
      ns.close();
    }
  });

  it('refuses hostile sysctl keys', () => {
    assert.throws(
      () => setSysctl(undefined, 'net/../../etc/passwd', '1'),
      (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });

  it('tells a mounted namespace from a plain file a crash left, and from nothing', () => {
    assert.equal(isNetnsMounted(name), true);
    const stale = `${name}-stale`;
    writeFileSync(`/run/netns/${stale}`, '');
    try {
      assert.equal(isNetnsMounted(stale), false);
      createNetns(stale).close(); // mounts over the leftover file
      assert.equal(isNetnsMounted(stale), true);
    } finally {
      deleteNetns(stale);
    }
    assert.equal(isNetnsMounted(stale), false);
  });

  it('deletes, and deleting again is a no-op', () => {
    deleteNetns(name);
    deleteNetns(name);
    assert.ok(!listNetns().includes(name));
    assert.throws(
      () => openNetns(name),
      (e) => isTapnetError(e, 'ERR_NETNS_NOT_FOUND'),
    );
  });

  it('rejects bad names before touching anything', () => {
    for (const bad of ['', '../etc', 'a/b', 'x'.repeat(201), 'sp ace', 'nul\0']) {
      assert.throws(
        () => createNetns(bad),
        (e) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
        bad,
      );
    }
  });
});
