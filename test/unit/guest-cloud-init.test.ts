import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  type GuestNetConfig,
  renderCloudInitNetworkConfig,
  toYaml,
  yamlQuote,
} from '../../src/guest/index.js';

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

describe('renderCloudInitNetworkConfig', () => {
  it('dual-stack with two DNS servers', () => {
    const out = renderCloudInitNetworkConfig({
      ...base,
      ipv6: 'fd00::5/64',
      gateway6: 'fd00::1',
      dns: ['198.18.0.1', '2001:4860:4860::8888'],
    });
    assert.deepEqual(out.config, {
      version: 2,
      ethernets: {
        eth0: {
          match: { macaddress: '52:54:00:12:34:56' },
          'set-name': 'eth0',
          addresses: ['198.18.0.5/24', 'fd00::5/64'],
          routes: [
            { to: '0.0.0.0/0', via: '198.18.0.1' },
            { to: '::/0', via: 'fd00::1' },
          ],
          nameservers: { addresses: ['198.18.0.1', '2001:4860:4860::8888'] },
          mtu: 1500,
        },
      },
    });
    assert.equal(
      out.yaml,
      `version: 2
ethernets:
  eth0:
    match:
      macaddress: "52:54:00:12:34:56"
    set-name: "eth0"
    addresses:
      - "198.18.0.5/24"
      - "fd00::5/64"
    routes:
      - to: "0.0.0.0/0"
        via: "198.18.0.1"
      - to: "::/0"
        via: "fd00::1"
    nameservers:
      addresses:
        - "198.18.0.1"
        - "2001:4860:4860::8888"
    mtu: 1500
`,
    );
  });

  it('IPv6-only, no gateway, no DNS: no routes, no nameservers', () => {
    const out = renderCloudInitNetworkConfig({
      ...base,
      ipv4: undefined,
      gateway4: undefined,
      ipv6: 'FD00:0::5/64',
      dns: [],
      mtu: 1280,
      guestIfname: 'ens3',
      mac: '52:54:00:AB:CD:EF',
    });
    assert.equal(
      out.yaml,
      `version: 2
ethernets:
  ens3:
    match:
      macaddress: "52:54:00:ab:cd:ef"
    set-name: "ens3"
    addresses:
      - "fd00::5/64"
    mtu: 1280
`,
    );
  });

  it("IPv4 with one DNS server, Netplan's `to: default`, wrapped in `network:`", () => {
    const out = renderCloudInitNetworkConfig(base, { defaultRoute: 'default', topLevelKey: true });
    assert.deepEqual(out.config.ethernets.eth0?.routes, [{ to: 'default', via: '198.18.0.1' }]);
    assert.equal(
      out.yaml,
      `network:
  version: 2
  ethernets:
    eth0:
      match:
        macaddress: "52:54:00:12:34:56"
      set-name: "eth0"
      addresses:
        - "198.18.0.5/24"
      routes:
        - to: "default"
          via: "198.18.0.1"
      nameservers:
        addresses:
          - "198.18.0.1"
      mtu: 1500
`,
    );
  });

  it('no address at all: just the match, the name and the MTU', () => {
    const out = renderCloudInitNetworkConfig({ ...base, ipv4: undefined, gateway4: undefined, dns: [] });
    assert.equal(
      out.yaml,
      'version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: "52:54:00:12:34:56"\n    set-name: "eth0"\n    mtu: 1500\n',
    );
  });

  it('an odd but legal guest interface name stays one quoted scalar', () => {
    const name = 'e"#\\x'; // e " # \ x: printable ASCII, legal for the kernel
    const out = renderCloudInitNetworkConfig({ ...base, dns: [], gateway4: undefined, guestIfname: name });
    assert.deepEqual(Object.keys(out.config.ethernets), [name]);
    assert.equal(
      out.yaml,
      `version: 2
ethernets:
  "e\\"#\\\\x":
    match:
      macaddress: "52:54:00:12:34:56"
    set-name: "e\\"#\\\\x"
    addresses:
      - "198.18.0.5/24"
    mtu: 1500
`,
    );
  });

  it('refuses hostile values', () => {
    refused(() => renderCloudInitNetworkConfig({ ...base, guestIfname: 'eth0\n  evil: 1' }));
    refused(() => renderCloudInitNetworkConfig({ ...base, dns: ['198.18.0.1\n    - 6.6.6.6'] }));
    refused(() => renderCloudInitNetworkConfig({ ...base, mac: '52:54:00:12:34:56"' }));
    refused(() => renderCloudInitNetworkConfig({ ...base, ipv4: '198.18.0.5/24\nx' }));
    refused(() => renderCloudInitNetworkConfig(base, { defaultRoute: 'any' as 'cidr' }), /defaultRoute/);
  });
});

describe('YAML emitter', () => {
  it('quotes every string and escapes all but printable ASCII', () => {
    assert.equal(yamlQuote('plain'), '"plain"');
    assert.equal(yamlQuote('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(yamlQuote('l1\nl2\t\u0000'), '"l1\\u000al2\\u0009\\u0000"');
    assert.equal(yamlQuote('é\u2028😀'), '"\\u00e9\\u2028\\U0001f600"');
  });

  it('writes maps, lists of scalars and maps, empties, numbers and booleans', () => {
    assert.equal(
      toYaml({ a: 1, 'odd key': true, 'x"y': false, list: [1, 'two', { k: 'v', n: [] }], m: {}, l: [] }),
      `a: 1
"odd key": true
"x\\"y": false
list:
  - 1
  - "two"
  - k: "v"
    n: []
m: {}
l: []
`,
    );
  });

  it('refuses what it cannot write', () => {
    refused(() => toYaml({ n: Number.NaN }));
  });
});
