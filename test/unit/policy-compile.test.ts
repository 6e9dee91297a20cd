/**
 * Compiling policies (merge with the network's, priority order, defaults, peer resolution) and rendering
 * them to nftables JSON: exact rules for known policies, and proof that nothing but numbers, canonical
 * addresses and tapnet's own names reaches the rules.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  type CompiledPolicy,
  classHash,
  compilePolicy,
  directionRules,
  isOpen,
  type PeerResolver,
  parsePolicy,
  policyReferences,
  validateCompiledPolicy,
} from '../../src/policy/index.js';

const resolver: PeerResolver = {
  vm: (id) =>
    id === 'db'
      ? { ipv4: '198.18.0.20', ipv6: 'fd00::20' }
      : id === 'v4only'
        ? { ipv4: '198.18.0.21' }
        : undefined,
  network: (name) => (name === 'default' ? { subnet4: '198.18.0.0/22', subnet6: 'fd00::/64' } : undefined),
};
const T = { deny: 'pol_deny_in', reject: 'pol_rej_in' };

describe('compilePolicy', () => {
  it('merges the VM policy with the network one by priority, VM first on ties', () => {
    const vm = parsePolicy({
      default: 'deny',
      rules: [
        { direction: 'ingress', protocol: 'tcp', ports: [22], action: 'allow', priority: 500 },
        { direction: 'ingress', protocol: 'tcp', ports: [80], action: 'allow' },
        { direction: 'egress', protocol: 'any', action: 'allow' },
      ],
    });
    const network = parsePolicy({
      default: 'allow',
      rules: [
        { direction: 'ingress', protocol: 'tcp', ports: [22], action: 'deny', priority: 100 },
        { direction: 'ingress', protocol: 'tcp', ports: [8080], action: 'allow', priority: 1000 },
      ],
    });
    const c = compilePolicy({ vm, network });
    assert.deepEqual(
      c.ingress.rules.map((r) => [r.origin, r.index, r.priority]),
      [
        ['network', 0, 100],
        ['vm', 0, 500],
        ['vm', 1, 1000],
        ['network', 1, 1000],
      ],
    );
    assert.equal(c.ingress.default, 'deny', "the VM's default wins");
    assert.equal(compilePolicy({ network }).ingress.default, 'allow', "else the network's");
    assert.equal(compilePolicy({}).egress.default, 'allow');
    assert.deepEqual(compilePolicy({}).ingress.rules, []);
  });

  it('resolves vm: and network: peers; unknown ones match nothing and are reported', () => {
    const c = compilePolicy({
      vm: parsePolicy({
        default: 'allow',
        rules: [
          {
            direction: 'egress',
            protocol: 'tcp',
            peers: ['vm:db', 'network:default', '198.18.9.0/24'],
            action: 'deny',
          },
          { direction: 'egress', protocol: 'tcp', peers: ['vm:ghost'], action: 'deny' },
          { direction: 'egress', protocol: 'icmpv6', peers: ['vm:v4only'], action: 'deny' },
          {
            direction: 'ingress',
            protocol: 'any',
            peers: ['vm:ghost', 'network:nope', 'vm:db'],
            action: 'deny',
          },
        ],
      }),
      resolver,
    });
    assert.deepEqual(c.egress.rules.length, 1, 'rules that can match nothing are dropped');
    assert.deepEqual(c.egress.rules[0]!.peers, {
      v4: ['198.18.0.20/32', '198.18.0.0/22', '198.18.9.0/24'],
      v6: ['fd00::20/128', 'fd00::/64'],
    });
    assert.deepEqual(c.ingress.rules[0]!.peers, { v4: ['198.18.0.20/32'], v6: ['fd00::20/128'] });
    assert.deepEqual(c.unresolved, ['network:nope', 'vm:ghost']);
    assert.deepEqual(
      compilePolicy({
        vm: parsePolicy({
          default: 'deny',
          rules: [{ direction: 'egress', protocol: 'tcp', peers: ['vm:db'], action: 'allow' }],
        }),
      }).unresolved,
      ['vm:db'],
      'no resolver',
    );
  });

  it('lists references and tells open directions', () => {
    const p = parsePolicy({
      default: 'allow',
      rules: [
        {
          direction: 'egress',
          protocol: 'tcp',
          peers: ['vm:b', 'network:n', 'vm:a', 'vm:b'],
          action: 'allow',
        },
      ],
    });
    assert.deepEqual(policyReferences(p), { vms: ['a', 'b'], networks: ['n'] });
    const c = compilePolicy({ vm: p });
    assert.ok(isOpen(c.ingress) && isOpen(c.egress), 'default allow and only allow rules: open');
    assert.ok(!isOpen(compilePolicy({ vm: parsePolicy({ default: 'deny' }) }).egress));
  });

  it('validateCompiledPolicy refuses anything not built by compilePolicy', () => {
    const good = compilePolicy({
      vm: parsePolicy({
        default: 'deny',
        rules: [
          { direction: 'ingress', protocol: 'udp', ports: [53], peers: ['198.18.0.0/24'], action: 'allow' },
        ],
      }),
    });
    assert.deepEqual(validateCompiledPolicy(good), good);
    const mutate = (f: (c: CompiledPolicy) => void) => {
      const c = structuredClone(good);
      f(c);
      return c;
    };
    for (const [bad, field] of [
      [mutate((c) => (c.ingress.rules[0]!.peers!.v4 = ['198.18.0.1/24'])), 'ingress.rules[0].peers.v4[0]'],
      [
        mutate((c) => (c.ingress.rules[0]!.peers!.v4 = ['198.18.0.0/24"; flush ruleset'])),
        'ingress.rules[0].peers.v4[0]',
      ],
      [mutate((c) => (c.ingress.rules[0]!.peers!.v4 = ['fd00::/64'])), 'ingress.rules[0].peers.v4[0]'],
      [mutate((c) => (c.ingress.rules[0]!.ports = [[0, 80]])), 'ingress.rules[0].ports[0][0]'],
      [mutate((c) => (c.ingress.rules[0]!.ports = [[90, 80]])), 'ingress.rules[0].ports[0]'],
      [
        mutate((c) => ((c.ingress.rules[0] as unknown as Record<string, unknown>).action = 'accept')),
        'ingress.rules[0].action',
      ],
      [mutate((c) => ((c as unknown as Record<string, unknown>).version = 2)), 'version'],
      [mutate((c) => ((c.egress as unknown as Record<string, unknown>).extra = 1)), 'egress'],
      [mutate((c) => (c.ingress.rules[0]!.protocol = 'icmp')), 'ingress.rules[0].ports'],
    ] as const) {
      assert.throws(
        () => validateCompiledPolicy(bad),
        (e: unknown) => isTapnetError(e, 'ERR_INVALID_ARGUMENT') && e.details.field === field,
        field,
      );
    }
  });
});

describe('directionRules: nftables JSON', () => {
  it('renders the web example exactly', () => {
    const c = compilePolicy({
      vm: parsePolicy({
        default: 'deny',
        rules: [{ direction: 'ingress', protocol: 'tcp', ports: [80, 443], action: 'allow' }],
      }),
    });
    assert.deepEqual(directionRules(c.ingress, 'ingress', T), [
      [{ match: { op: '==', left: { ct: { key: 'direction' } }, right: 'reply' } }, { return: null }],
      [{ match: { op: 'in', left: { ct: { key: 'state' } }, right: 'related' } }, { return: null }],
      [
        { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'tcp' } },
        {
          match: {
            op: '==',
            left: { payload: { protocol: 'th', field: 'dport' } },
            right: { set: [80, 443] },
          },
        },
        { return: null },
      ],
      [{ goto: { target: 'pol_deny_in' } }],
    ]);
  });

  it('splits families, guards ICMP, matches the peer on the right side, maps actions', () => {
    const c = compilePolicy({
      vm: parsePolicy({
        default: 'allow',
        rules: [
          {
            direction: 'egress',
            protocol: 'udp',
            ports: ['1000-2000', 53],
            peers: ['198.18.9.0/24', 'fd00::1', '0.0.0.0/0'],
            action: 'reject',
          },
          { direction: 'egress', protocol: 'icmp', action: 'deny' },
          { direction: 'ingress', protocol: 'icmpv6', peers: ['fd00::/64', '198.18.0.0/24'], action: 'deny' },
        ],
      }),
    });
    const eg = directionRules(c.egress, 'egress', { deny: 'de', reject: 're' }).slice(2);
    assert.deepEqual(
      eg[0],
      [
        { match: { op: '==', left: { meta: { key: 'nfproto' } }, right: 'ipv4' } },
        { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'udp' } },
        {
          match: {
            op: '==',
            left: { payload: { protocol: 'th', field: 'dport' } },
            right: { set: [53, { range: [1000, 2000] }] },
          },
        },
        { goto: { target: 're' } },
      ],
      '0.0.0.0/0 means any IPv4',
    );
    assert.deepEqual(eg[1], [
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'udp' } },
      {
        match: {
          op: '==',
          left: { payload: { protocol: 'th', field: 'dport' } },
          right: { set: [53, { range: [1000, 2000] }] },
        },
      },
      { match: { op: '==', left: { payload: { protocol: 'ip6', field: 'daddr' } }, right: 'fd00::1' } },
      { goto: { target: 're' } },
    ]);
    assert.deepEqual(eg[2], [
      { match: { op: '==', left: { meta: { key: 'nfproto' } }, right: 'ipv4' } },
      { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'icmp' } },
      { goto: { target: 'de' } },
    ]);
    assert.deepEqual(eg[3], [{ return: null }], 'default allow');
    const ing = directionRules(c.ingress, 'ingress', T).slice(2);
    assert.deepEqual(
      ing[0],
      [
        { match: { op: '==', left: { meta: { key: 'nfproto' } }, right: 'ipv6' } },
        { match: { op: '==', left: { meta: { key: 'l4proto' } }, right: 'ipv6-icmp' } },
        {
          match: {
            op: '==',
            left: { payload: { protocol: 'ip6', field: 'saddr' } },
            right: { prefix: { addr: 'fd00::', len: 64 } },
          },
        },
        { goto: { target: 'pol_deny_in' } },
      ],
      'icmpv6 keeps only its IPv6 peers; the ingress peer is the source',
    );
    assert.equal(ing.length, 2);
  });

  it('puts only numbers, canonical addresses and fixed words into the rules', () => {
    const c = compilePolicy({
      vm: parsePolicy({
        default: 'deny',
        rules: [
          {
            direction: 'ingress',
            protocol: 'tcp',
            ports: [80, '1-65535'],
            peers: ['198.18.0.0/24', 'FD00:0:0::/64', '::ffff:198.18.0.1', 'vm:db', 'network:default'],
            action: 'reject',
          },
          { direction: 'egress', protocol: 'any', peers: ['198.18.9.7'], action: 'allow', priority: 0 },
        ],
      }),
      resolver,
    });
    const strings: string[] = [];
    const walk = (v: unknown) => {
      if (typeof v === 'string') strings.push(v);
      else if (Array.isArray(v)) v.forEach(walk);
      else if (v && typeof v === 'object') Object.values(v).forEach(walk);
    };
    walk([directionRules(c.ingress, 'ingress', T), directionRules(c.egress, 'egress', T)]);
    const allowed =
      /^(==|in|direction|state|l4proto|nfproto|th|dport|ip|ip6|saddr|daddr|reply|related|tcp|udp|icmp|ipv6-icmp|ipv4|ipv6|[0-9.]+|[0-9a-f:]+|pol_deny_in|pol_rej_in)$/;
    for (const s of strings) assert.match(s, allowed);
  });

  it('hashes equal bodies equally and different bodies differently', () => {
    const a = compilePolicy({
      vm: parsePolicy({
        default: 'deny',
        rules: [{ direction: 'ingress', protocol: 'tcp', ports: [80], action: 'allow' }],
      }),
    });
    const b = compilePolicy({
      vm: parsePolicy({
        default: 'deny',
        rules: [{ direction: 'ingress', protocol: 'tcp', ports: [80], action: 'allow', priority: 7 }],
      }),
    });
    const c = compilePolicy({
      vm: parsePolicy({
        default: 'deny',
        rules: [{ direction: 'ingress', protocol: 'tcp', ports: [81], action: 'allow' }],
      }),
    });
    const h = (p: CompiledPolicy) => classHash('ingress', directionRules(p.ingress, 'ingress', T));
    assert.match(h(a), /^[0-9a-f]{12}$/);
    assert.equal(h(a), h(b), 'same rules, same class (priority only orders)');
    assert.notEqual(h(a), h(c));
    assert.notEqual(classHash('egress', directionRules(a.ingress, 'ingress', T)), h(a));
  });
});
