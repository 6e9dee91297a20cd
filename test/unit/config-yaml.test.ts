import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseYaml } from '../../src/config/yaml.js';
import { isTapnetError } from '../../src/errors.js';

const fails = (text: string, re: RegExp) =>
  assert.throws(
    () => parseYaml(text, 'c.yaml'),
    (e: unknown) => isTapnetError(e, 'ERR_CONFIG') && re.test(e.message),
  );

describe('YAML subset', () => {
  it('parses a typical configuration', () => {
    const text = `# tapnet
---
stateDir: /var/lib/tapnet   # comment
defaultNetwork: vms
firewall: nftables
networks:
  vms:
    subnet4: 198.18.0.0/22
    subnet6: "fd00:198:18::/64"
    bridgeMac: 02:00:00:00:00:01
    mtu: 1500
    nat: true
    dns: [198.18.0.53, 'fd00::53']
    tapPrefix: vm-
  routed:
    topology: routed
    subnet4: 198.19.0.0/16
    dns:
      - 198.19.0.53
      - 198.19.0.54
api:
  tcp: "127.0.0.1:7070"
  tokenFile: /etc/tapnet/token
log: {level: debug}
`;
    assert.deepEqual(parseYaml(text), {
      stateDir: '/var/lib/tapnet',
      defaultNetwork: 'vms',
      firewall: 'nftables',
      networks: {
        vms: {
          subnet4: '198.18.0.0/22',
          subnet6: 'fd00:198:18::/64',
          bridgeMac: '02:00:00:00:00:01',
          mtu: 1500,
          nat: true,
          dns: ['198.18.0.53', 'fd00::53'],
          tapPrefix: 'vm-',
        },
        routed: { topology: 'routed', subnet4: '198.19.0.0/16', dns: ['198.19.0.53', '198.19.0.54'] },
      },
      api: { tcp: '127.0.0.1:7070', tokenFile: '/etc/tapnet/token' },
      log: { level: 'debug' },
    });
  });

  it('resolves scalars by the YAML 1.2 core schema', () => {
    assert.deepEqual(
      parseYaml(
        'a: yes\nb: no\nc: ~\nd: null\ne: 0x1F\nf: -12\ng: 1.5e3\nh: True\ni: "007"\nj: 007\nk: on\nl: a # b\nm: a#b\nn:\n',
      ),
      {
        a: 'yes',
        b: 'no',
        c: null,
        d: null,
        e: 31,
        f: -12,
        g: 1500,
        h: true,
        i: '007',
        j: 7,
        k: 'on',
        l: 'a',
        m: 'a#b',
        n: null,
      },
    );
    assert.deepEqual(parseYaml(`s: "tab\\there \\"q\\" \\u00e9"\nt: 'it''s'`), {
      s: 'tab\there "q" é',
      t: "it's",
    });
  });

  it('sequences of mappings, nested sequences, sequences at the key’s indentation', () => {
    assert.deepEqual(parseYaml('list:\n- name: a\n  x: 1\n- name: b\n-\n  - 1\n  - 2\n- - 3\n  - 4\n'), {
      list: [{ name: 'a', x: 1 }, { name: 'b' }, [1, 2], [3, 4]],
    });
    assert.deepEqual(parseYaml('- {a: [1, {b: c}], d: []}\n- []\n- {}'), [
      { a: [1, { b: 'c' }], d: [] },
      [],
      {},
    ]);
    assert.equal(parseYaml(''), null);
    assert.equal(parseYaml('# only a comment\n'), null);
  });

  it('keeps __proto__ as a plain key', () => {
    const v = parseYaml('__proto__: {polluted: 1}\n') as Record<string, unknown>;
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.deepEqual(Object.keys(v), ['__proto__']);
  });

  it('refuses what it does not support, with the line number', () => {
    fails('a: 1\n\tb: 2\n', /c\.yaml:2: tabs/);
    fails('a: &x 1\nb: *x\n', /c\.yaml:1: .*anchors/);
    fails('a: !!str 1\n', /c\.yaml:1: .*tags/);
    fails('a: |\n  text\n', /c\.yaml:1: .*block scalars/);
    fails('a: b\n  continued\n', /c\.yaml:2: bad indentation/);
    fails('a: 1\na: 2\n', /c\.yaml:2: duplicate key "a"/);
    fails('a: b: c\n', /c\.yaml:1: a mapping cannot start on the same line/);
    fails('a: [1, 2\n', /c\.yaml:1: expected/);
    fails('a: "open\n', /c\.yaml:1: unterminated/);
    fails('---\na: 1\n---\nb: 2\n', /c\.yaml:3: only one document/);
    fails('%YAML 1.2\na: 1\n', /c\.yaml:1: directives/);
    fails('? complex\n', /c\.yaml:1: complex keys/);
    fails('a:\n  b: 1\n c: 2\n', /c\.yaml:3: bad indentation/);
  });
});
