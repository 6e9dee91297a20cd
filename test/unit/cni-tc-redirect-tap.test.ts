import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { inProcessPlugins, tcRedirectTapPlugin } from '../../src/cni/plugins/index.js';
import { encodeResult, parsePrevResult, resultAsVersion } from '../../src/cni/plugins/result.js';
import { CNI_ERR, dispatch, toCniError, versionAtLeast } from '../../src/cni/plugins/skel.js';
import {
  buildAddResult,
  DEFAULT_TAP_TEMPLATE,
  parseCniArgs,
  parseTapArgs,
  pickTapName,
  vmTapPair,
} from '../../src/cni/plugins/tc-redirect-tap-conf.js';
import { TapnetError } from '../../src/errors.js';

const run = tcRedirectTapPlugin.run;
const NS = '/run/netns/tapnet-unit-does-not-exist';

function env(over: Record<string, string | undefined> = {}): Record<string, string> {
  const e: Record<string, string | undefined> = {
    CNI_CONTAINERID: 'vm-1',
    CNI_NETNS: NS,
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/usr/lib/cni',
    ...over,
  };
  return Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)) as Record<string, string>;
}

function conf(o: Record<string, unknown> = {}): Buffer {
  return Buffer.from(JSON.stringify({ cniVersion: '1.0.0', name: 'fcnet', type: 'tc-redirect-tap', ...o }));
}

interface ErrJson {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

async function fails(
  p: Promise<{ stdout: Buffer; exitCode: number }>,
  code: number,
  msg?: RegExp,
): Promise<ErrJson> {
  const r = await p;
  assert.equal(r.exitCode, 1, `expected a failure, got ${r.stdout.toString()}`);
  const e = JSON.parse(r.stdout.toString()) as ErrJson;
  assert.equal(e.code, code, `code of ${r.stdout.toString()}`);
  assert.equal(typeof e.cniVersion, 'string');
  if (msg) assert.match(e.msg, msg);
  return e;
}

/** The prevResult the bridge plugin gives (1.0.0): bridge, host veth, eth0 in the netns with one IP. */
const bridgePrev = {
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'fcbr0', mac: '02:aa:00:00:00:01' },
    { name: 'veth1234', mac: '02:aa:00:00:00:02' },
    { name: 'eth0', mac: '02:aa:00:00:00:03', sandbox: NS },
  ],
  ips: [{ interface: 2, address: '198.18.7.2/24', gateway: '198.18.7.1' }],
  routes: [{ dst: '0.0.0.0/0', gw: '198.18.7.1' }],
  dns: { nameservers: ['198.18.7.1'], search: ['example'] },
};

describe('tc-redirect-tap: the in-process plugin object', () => {
  it('is registered under its type and alias with every chaining version', () => {
    assert.equal(tcRedirectTapPlugin.type, 'tc-redirect-tap');
    assert.deepEqual(tcRedirectTapPlugin.aliases, ['tapnet-tc-redirect-tap']);
    assert.deepEqual(tcRedirectTapPlugin.supportedVersions, ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0']);
    assert.ok(inProcessPlugins.includes(tcRedirectTapPlugin));
  });

  it('VERSION prints the version info without reading stdin or needing other variables', async () => {
    const r = await run('VERSION', {}, Buffer.from('not json'));
    assert.equal(r.exitCode, 0);
    assert.equal(
      r.stdout.toString(),
      '{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}\n',
    );
  });
});

describe('tc-redirect-tap: environment and config validation (as Go skel)', () => {
  it('lists every missing variable, in skel order, with code 4', async () => {
    const e = await fails(run('ADD', env({ CNI_NETNS: undefined, CNI_PATH: undefined }), conf()), 4);
    assert.equal(e.msg, 'required env variables [CNI_NETNS,CNI_PATH] missing');
    assert.equal(e.cniVersion, '1.0.0', 'the error carries the config version');
    await fails(run('CHECK', env({ CNI_IFNAME: undefined }), conf()), 4, /\[CNI_IFNAME\]/);
    await fails(run('DEL', env({ CNI_CONTAINERID: undefined }), conf()), 4, /\[CNI_CONTAINERID\]/);
    await fails(run('GC', env({ CNI_PATH: undefined }), conf({ cniVersion: '1.1.0' })), 4, /\[CNI_PATH\]/);
  });

  it('validates the container ID and interface name', async () => {
    const e = await fails(run('ADD', env({ CNI_CONTAINERID: '../etc' }), conf()), 4);
    assert.equal(e.msg, 'invalid characters in containerID');
    assert.equal(e.details, '../etc');
    await fails(run('ADD', env({ CNI_IFNAME: 'a-very-long-name0' }), conf()), 4, /too long/);
    await fails(run('ADD', env({ CNI_IFNAME: 'eth/0' }), conf()), 4, /contains \/ or :/);
    await fails(run('DEL', env({ CNI_IFNAME: 'eth 0' }), conf()), 4, /whitespace/);
    await fails(run('ADD', env({ CNI_IFNAME: '..' }), conf()), 4, /\. or \.\./);
  });

  it('rejects unknown commands, bad JSON, and missing or bad network names', async () => {
    await fails(run('FROB' as 'ADD', env(), conf()), 4, /unknown CNI_COMMAND: FROB/);
    await fails(run('ADD', env(), Buffer.from('{')), 6, /error unmarshall network config/);
    await fails(run('ADD', env(), Buffer.from('[1]')), 6);
    await fails(run('ADD', env(), conf({ name: 5 })), 6);
    await fails(run('ADD', env(), conf({ name: undefined })), 7, /missing network name/);
    const e = await fails(run('ADD', env(), conf({ name: 'bad name' })), 7);
    assert.equal(e.details, 'bad name');
  });

  it('checks versions: unsupported is 1 with skel’s details; CHECK from 0.4.0; STATUS and GC from 1.1.0', async () => {
    const e = await fails(run('ADD', env(), conf({ cniVersion: '0.2.0' })), 1, /^incompatible CNI versions$/);
    assert.equal(e.details, 'config is "0.2.0", plugin supports ["0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]');
    await fails(run('ADD', env(), conf({ cniVersion: undefined })), 1); // absent is 0.1.0
    await fails(run('CHECK', env(), conf({ cniVersion: '0.3.1' })), 1, /config version does not allow CHECK/);
    await fails(run('CHECK', env(), conf({ cniVersion: 'x.y' })), 6);
    await fails(run('STATUS', env(), conf({ cniVersion: '1.0.0' })), 1, /does not allow STATUS/);
    await fails(run('GC', env(), conf({ cniVersion: '1.0.0' })), 1, /does not allow GC/);
    await fails(
      run('STATUS', env(), conf({ cniVersion: '2.0.0' })),
      1,
      /plugin version does not allow STATUS/,
    );
    const gc = await run('GC', { CNI_PATH: '/x' }, conf({ cniVersion: '1.1.0' }));
    assert.deepEqual([gc.exitCode, gc.stdout.toString()], [0, ''], 'GC has nothing to collect');
    const status = run('STATUS', { CNI_PATH: '/x' }, conf({ cniVersion: '1.1.0' }));
    if (existsSync('/dev/net/tun'))
      assert.deepEqual([(await status).exitCode, (await status).stdout.toString()], [0, '']);
    else await fails(status, 50, /\/dev\/net\/tun/);
    assert.ok(versionAtLeast('1.0', '0.4.0'));
    assert.ok(!versionAtLeast('0.3.1', '0.4.0'));
  });

  it('refuses to work on its own network namespace (code 8) unless CNI_NETNS_OVERRIDE', async () => {
    await fails(run('ADD', env({ CNI_NETNS: '/proc/self/ns/net' }), conf()), 8, /should not be the same/);
    await fails(run('DEL', env({ CNI_NETNS: '/proc/self/ns/net' }), conf()), 8);
  });

  it('validates CNI_ARGS strictly (code 4), even for DEL', async () => {
    await fails(
      run('DEL', env({ CNI_ARGS: 'IgnoreUnknown=1;oops' }), conf()),
      4,
      /Invalid cni arguments format, "oops"/,
    );
    await fails(run('DEL', env({ CNI_ARGS: 'TC_REDIRECT_TAP_UID=-1' }), conf()), 4, /TC_REDIRECT_TAP_UID/);
    await fails(
      run('DEL', env({ CNI_ARGS: 'TC_REDIRECT_TAP_GID=4294967295' }), conf()),
      4,
      /TC_REDIRECT_TAP_GID/,
    );
    await fails(
      run('DEL', env({ CNI_ARGS: 'TC_REDIRECT_TAP_NAME=a/b' }), conf()),
      4,
      /not a valid interface name/,
    );
    await fails(run('DEL', env({ CNI_ARGS: 'TC_REDIRECT_TAP_NAME=t%d%d' }), conf()), 4);
  });

  it('DEL succeeds when the namespace is gone or not given; ADD and CHECK need it', async () => {
    for (const netns of [NS, undefined]) {
      const r = await run('DEL', env({ CNI_NETNS: netns }), conf({ prevResult: bridgePrev }));
      assert.deepEqual([r.exitCode, r.stdout.toString()], [0, ''], String(netns));
    }
    await fails(run('ADD', env(), conf({ prevResult: bridgePrev })), 4, /does not exist/);
    await fails(run('CHECK', env(), conf({ prevResult: bridgePrev })), 4, /does not exist/);
  });

  it('a malformed prevResult is a decoding failure (6)', async () => {
    await fails(run('DEL', env(), conf({ prevResult: [] })), 6);
    await fails(
      run('DEL', env(), conf({ prevResult: { ...bridgePrev, cniVersion: '0.4.0' } })),
      6,
      /supports \[1\.0\.0 1\.1\.0\]/,
    );
    await fails(
      run('DEL', env(), conf({ prevResult: { ...bridgePrev, ips: [{ address: '198.18.7.2' }] } })),
      6,
    );
    await fails(
      run(
        'DEL',
        env(),
        conf({ prevResult: { ...bridgePrev, ips: [{ interface: 7, address: '1.2.3.4/8' }] } }),
      ),
      6,
    );
  });
});

describe('tc-redirect-tap: arguments', () => {
  it('parses CNI_ARGS as tc-redirect-tap: K=V pairs, value after the first =, later wins', () => {
    assert.deepEqual([...parseCniArgs('')], []);
    assert.deepEqual(
      [...parseCniArgs('a=1;b=x=y;a=2')],
      [
        ['a', '2'],
        ['b', 'x=y'],
      ],
    );
    assert.throws(
      () => parseCniArgs('a=1;'),
      (e: unknown) => toCniError(e).code === 4,
    );
  });

  it('takes name and owner from CNI_ARGS, then the environment, then the defaults', () => {
    const d = { uid: 7, gid: 8 };
    assert.deepEqual(parseTapArgs('', {}, d), { tapName: DEFAULT_TAP_TEMPLATE, uid: 7, gid: 8 });
    assert.deepEqual(
      parseTapArgs(
        'IgnoreUnknown=1;TC_REDIRECT_TAP_NAME=fc0;TC_REDIRECT_TAP_UID=123;TC_REDIRECT_TAP_GID=0',
        {},
        d,
      ),
      { tapName: 'fc0', uid: 123, gid: 0 },
    );
    const e = { TC_REDIRECT_TAP_NAME: 'envtap', TC_REDIRECT_TAP_UID: '1000' };
    assert.deepEqual(parseTapArgs('TC_REDIRECT_TAP_NAME=argtap', e, d), {
      tapName: 'argtap',
      uid: 1000,
      gid: 8,
    });
    assert.deepEqual(parseTapArgs('', { TC_REDIRECT_TAP_NAME: 'vm%d' }, d).tapName, 'vm%d');
  });

  it('picks the lowest free tapN, like the kernel', () => {
    assert.equal(pickTapName('tap%d', new Set()), 'tap0');
    assert.equal(pickTapName('tap%d', new Set(['tap0', 'tap1', 'tap3'])), 'tap2');
    assert.equal(pickTapName('fixed', new Set(['fixed'])), 'fixed');
  });
});

describe('tc-redirect-tap: results', () => {
  it('ADD appends the TAP and the VM interface (veth MAC), and copies the veth IPs to the VM', () => {
    const prev = parsePrevResult(bridgePrev, '1.0.0');
    const before = structuredClone(prev);
    const r = buildAddResult(prev, {
      tapName: 'tap0',
      tapMac: '02:bb:00:00:00:09',
      vethName: 'eth0',
      vethMac: '02:aa:00:00:00:03',
      netns: NS,
      containerId: 'vm-1',
    });
    assert.deepEqual(prev, before, 'the previous result is not modified');
    assert.equal(r.interfaces.length, 5);
    assert.deepEqual(r.interfaces.slice(0, 3), prev.interfaces);
    assert.deepEqual(r.interfaces[3], { name: 'tap0', mac: '02:bb:00:00:00:09', sandbox: NS });
    assert.deepEqual(r.interfaces[4], { name: 'tap0', mac: '02:aa:00:00:00:03', sandbox: 'vm-1' });
    assert.deepEqual(r.ips, [
      { interface: 2, address: '198.18.7.2/24', gateway: '198.18.7.1' },
      { interface: 4, address: '198.18.7.2/24', gateway: '198.18.7.1' },
    ]);
    assert.deepEqual(r.routes, prev.routes);
    assert.deepEqual(r.dns, prev.dns);
    const pair = vmTapPair(r, 'vm-1');
    assert.equal(pair.tap.sandbox, NS);
    assert.equal(pair.vm.mac, '02:aa:00:00:00:03');
    assert.throws(
      () => vmTapPair(prev, 'vm-1'),
      (e: unknown) => toCniError(e).code === CNI_ERR.invalidNetworkConfig,
    );
  });

  it('only IPs of CNI_IFNAME inside CNI_NETNS are handed to the VM', () => {
    const prev = parsePrevResult(
      {
        ...bridgePrev,
        ips: [
          { interface: 0, address: '198.18.7.1/24' },
          { interface: 2, address: 'fd00::0002/64', gateway: 'fd00:0::1' },
          { address: '198.18.9.9/32' },
        ],
      },
      '1.1.0',
    );
    const r = buildAddResult(prev, { tapName: 't', vethName: 'eth0', netns: NS, containerId: 'vm-1' });
    assert.deepEqual(r.ips.slice(3), [{ address: 'fd00::2/64', interface: 4, gateway: 'fd00::1' }]);
    assert.deepEqual(r.interfaces[4], { name: 't', sandbox: 'vm-1' });
  });

  it('reads a 0.4.0 prevResult and prints 0.4.0 as Go does (IP versions, dns always present)', () => {
    const prev040 = {
      cniVersion: '0.4.0',
      interfaces: [{ name: 'eth0', mac: '02:aa:00:00:00:03', sandbox: NS, mtu: 1400 }],
      ips: [{ version: '4', interface: 0, address: '198.18.7.2/24', gateway: '198.18.7.1' }],
    };
    const prev = parsePrevResult(prev040, '0.4.0');
    assert.deepEqual(
      prev.interfaces[0],
      { name: 'eth0', mac: '02:aa:00:00:00:03', sandbox: NS },
      'no mtu in 0.4.0',
    );
    const r = buildAddResult(prev, {
      tapName: 'tap0',
      vethName: 'eth0',
      vethMac: '02:aa:00:00:00:03',
      netns: NS,
      containerId: 'c',
    });
    const text = encodeResult(r, '0.4.0');
    assert.equal(
      text,
      JSON.stringify(
        {
          cniVersion: '0.4.0',
          interfaces: [
            { name: 'eth0', mac: '02:aa:00:00:00:03', sandbox: NS },
            { name: 'tap0', sandbox: NS },
            { name: 'tap0', mac: '02:aa:00:00:00:03', sandbox: 'c' },
          ],
          ips: [
            { version: '4', interface: 0, address: '198.18.7.2/24', gateway: '198.18.7.1' },
            { version: '4', interface: 2, address: '198.18.7.2/24', gateway: '198.18.7.1' },
          ],
          dns: {},
        },
        null,
        4,
      ),
    );
    // A prevResult without cniVersion takes the config's; one of another family is refused.
    assert.equal(parsePrevResult({ ips: [] }, '0.3.1').ips.length, 0);
    assert.throws(() => parsePrevResult({ cniVersion: '1.0.0' }, '0.4.0'));
  });

  it('prints 1.x with sorted keys and no empty dns, keeping the 1.1.0 interface fields', () => {
    const prev = parsePrevResult(
      {
        cniVersion: '1.1.0',
        interfaces: [{ name: 'eth0', mtu: 1400, pciID: '0000:00:01.0', sandbox: NS, bogus: 1 }],
      },
      '1.1.0',
    );
    const o = resultAsVersion(prev, '1.1.0');
    assert.deepEqual(Object.keys(o), ['cniVersion', 'interfaces']);
    assert.deepEqual(Object.keys((o.interfaces as object[])[0]!), ['mtu', 'name', 'pciID', 'sandbox']);
    assert.equal(resultAsVersion(prev, '1.0.0').cniVersion, '1.0.0');
    assert.equal(encodeResult(prev, '1.1.0').split('\n')[1], '    "cniVersion": "1.1.0",');
  });
});

describe('tc-redirect-tap: error JSON', () => {
  it('internal failures are code 999 with the errno and kernel text in details', async () => {
    const e = new TapnetError('ERR_NETLINK', 'RTM_NEWTFILTER failed', { errno: 'EPERM', extack: 'nope' });
    assert.deepEqual(toCniError(e), {
      code: 999,
      msg: 'RTM_NEWTFILTER failed',
      details: 'ERR_NETLINK; errno EPERM; kernel: nope',
    });
    const r = await dispatch(
      'ADD',
      env(),
      conf(),
      {
        add: () => {
          throw e;
        },
        del: () => {},
        check: () => {},
      },
      { supportedVersions: ['1.0.0'] },
    );
    assert.equal(r.exitCode, 1);
    assert.equal(
      r.stdout.toString(),
      '{\n    "cniVersion": "1.0.0",\n    "code": 999,\n    "msg": "RTM_NEWTFILTER failed",\n    "details": "ERR_NETLINK; errno EPERM; kernel: nope"\n}',
    );
  });
});
