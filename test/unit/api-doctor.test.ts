/**
 * Doctor's host checks against a fake /proc, /sys, /dev and /lib/modules: module states (loaded, built in,
 * installable, missing, unknowable), capabilities, CNI directories; every ✗ carries a fix.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  checkCni,
  checkKvm,
  checkModules,
  checkPrivileges,
  checkTun,
  type HostPaths,
  moduleState,
} from '../../src/observe/doctor-host.js';

describe('doctor host checks (fake host files)', () => {
  let root: string;
  let p: HostPaths;
  before(() => {
    root = mkdtempSync(join(tmpdir(), 'tapnet-doctor-'));
    p = {
      proc: join(root, 'proc'),
      sys: join(root, 'sys'),
      dev: join(root, 'dev'),
      modules: join(root, 'modules'),
    };
    for (const d of [p.proc, join(p.proc, 'self'), join(p.sys, 'module', 'bridge'), p.dev, p.modules])
      mkdirSync(d, { recursive: true });
    writeFileSync(
      join(p.proc, 'modules'),
      'tun 61440 2 - Live 0x0000000000000000\nnf_tables 344064 0 - Live 0x0\n',
    );
    writeFileSync(join(p.modules, 'modules.builtin'), 'kernel/net/bridge/bridge.ko\n');
    writeFileSync(
      join(p.modules, 'modules.dep'),
      'kernel/drivers/vhost/vhost_net.ko.zst: kernel/drivers/vhost/vhost.ko.zst\n',
    );
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  it('module states from /proc/modules, modules.builtin, /sys/module and modules.dep', () => {
    assert.equal(moduleState('tun', p), 'loaded');
    assert.equal(moduleState('nf_tables', p), 'loaded');
    assert.equal(moduleState('bridge', p), 'builtin');
    assert.equal(moduleState('vhost_net', p), 'available');
    assert.equal(moduleState('kvm_amd', p), 'missing');
    assert.ok(checkModules(true, {}, p).every((c) => c.status === 'ok'));
  });

  it('a missing module fails with the modprobe fix; optional ones only warn; evidence means built in', () => {
    writeFileSync(join(p.proc, 'modules'), '');
    writeFileSync(join(p.modules, 'modules.dep'), '');
    const by = new Map(checkModules(true, {}, p).map((c) => [c.id, c]));
    assert.equal(by.get('module.tun')!.status, 'fail');
    assert.match(by.get('module.tun')!.fix!, /modprobe tun/);
    assert.equal(by.get('module.vhost_net')!.status, 'warn');
    assert.equal(by.get('module.bridge')!.status, 'ok');
    assert.equal(
      new Map(checkModules(false, {}, p).map((c) => [c.id, c])).get('module.nf_tables')!.status,
      'warn',
      'firewall none',
    );
    assert.equal(
      new Map(checkModules(true, { tun: true }, p).map((c) => [c.id, c])).get('module.tun')!.status,
      'ok',
    );
    const noMeta = { ...p, modules: join(root, 'none') };
    const unknown = new Map(checkModules(true, {}, noMeta).map((c) => [c.id, c]));
    assert.equal(unknown.get('module.tun')!.status, 'warn');
    assert.match(unknown.get('module.tun')!.message, /cannot tell/);
  });

  it('capabilities from CapEff', () => {
    writeFileSync(join(p.proc, 'self', 'status'), 'Name:\tnode\nCapEff:\t000001ffffffffff\n');
    assert.equal(checkPrivileges(p).status, 'ok');
    writeFileSync(join(p.proc, 'self', 'status'), 'Name:\tnode\nCapEff:\t0000000000001000\n');
    const c = checkPrivileges(p);
    assert.equal(c.status, 'fail');
    assert.equal(c.message, 'missing CAP_SYS_ADMIN');
    assert.match(c.fix!, /AmbientCapabilities/);
  });

  it('/dev/net/tun and /dev/kvm: a plain file is not the device; a missing KVM only warns', () => {
    const tun = checkTun(p);
    assert.equal(tun.status, 'fail');
    assert.match(tun.fix!, /mknod \/dev\/net\/tun c 10 200/);
    mkdirSync(join(p.dev, 'net'));
    writeFileSync(join(p.dev, 'net', 'tun'), '');
    assert.match(checkTun(p).message, /not the TUN device/);
    assert.equal(checkKvm(p).status, 'warn');
    writeFileSync(join(p.dev, 'kvm'), '');
    const kvm = checkKvm(p);
    assert.equal(kvm.status, 'warn', 'a node that does not answer KVM_GET_API_VERSION is not a working KVM');
    assert.match(kvm.message, /exists but/);
  });

  it('CNI directories: info outside CNI mode, fail in it', () => {
    const bin = join(root, 'cni-bin');
    mkdirSync(bin);
    for (const f of ['bridge', 'host-local']) writeFileSync(join(bin, f), '');
    const [plugins, conf] = checkCni(false, [bin], join(root, 'net.d'));
    assert.equal(plugins!.status, 'info');
    assert.match(plugins!.message, /lacks loopback/);
    assert.equal(conf!.status, 'info');
    assert.equal(checkCni(true, [bin], join(root, 'net.d'))[0]!.status, 'fail');
    writeFileSync(join(bin, 'loopback'), '');
    mkdirSync(join(root, 'net.d'));
    writeFileSync(join(root, 'net.d', '10-vms.conflist'), '{}');
    const ok = checkCni(true, [bin], join(root, 'net.d'));
    assert.deepEqual(
      ok.map((c) => c.status),
      ['ok', 'ok'],
    );
    assert.match(ok[1]!.message, /holds 1 network configuration/);
  });
});
