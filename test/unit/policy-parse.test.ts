/**
 * Policy documents: valid ones come out canonical; everything else is one ERR_INVALID_ARGUMENT naming the
 * exact field — hostile strings (`80; flush ruleset`, quotes, newlines, NUL), huge ranges, wrong types,
 * unknown keys, deep nesting, oversized documents.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import { formatPolicy, POLICY_LIMITS, parsePolicy, parsePolicyJson } from '../../src/policy/index.js';

/** The field an invalid document is rejected for. */
function rejectedField(doc: unknown): string {
  try {
    parsePolicy(doc);
  } catch (e) {
    assert.ok(isTapnetError(e, 'ERR_INVALID_ARGUMENT'), `typed error, got ${String(e)}`);
    const field = e.details.field as string;
    assert.ok(e.message.startsWith(`policy ${field}:`), `message names the field: ${e.message}`);
    assert.ok(!e.message.includes('\n'), 'no raw newline in the message');
    return field;
  }
  assert.fail(`accepted ${JSON.stringify(doc)}`);
}

const rule = (over: Record<string, unknown>) => ({
  default: 'deny',
  rules: [
    { direction: 'ingress', protocol: 'tcp', action: 'allow' },
    { direction: 'ingress', protocol: 'tcp', action: 'allow', ...over },
  ],
});

describe('parsePolicy: valid documents', () => {
  it('parses the documented shape into a canonical form', () => {
    const p = parsePolicy({
      default: 'deny',
      rules: [
        {
          direction: 'ingress',
          protocol: 'tcp',
          ports: [443, 80, '1000-2000', '1500-2500', 81, '8080'],
          peers: [
            '198.18.0.0/24',
            'vm:web-1',
            'network:default',
            'FD00:0::/64',
            '198.18.9.7',
            '198.18.0.0/24',
          ],
          action: 'allow',
          priority: 100,
        },
        { direction: 'egress', protocol: 'any', action: 'reject' },
      ],
    });
    assert.deepEqual(p.rules[0], {
      direction: 'ingress',
      protocol: 'tcp',
      action: 'allow',
      priority: 100,
      index: 0,
      ports: [
        [80, 81],
        [443, 443],
        [1000, 2500],
        [8080, 8080],
      ],
      peers: [
        { kind: 'cidr', family: 4, cidr: '198.18.0.0/24' },
        { kind: 'vm', id: 'web-1' },
        { kind: 'network', name: 'default' },
        { kind: 'cidr', family: 6, cidr: 'fd00::/64' },
        { kind: 'cidr', family: 4, cidr: '198.18.9.7/32' },
      ],
    });
    assert.equal(p.rules[1]!.priority, 1000, 'default priority');
    assert.deepEqual(parsePolicy({ default: 'allow' }), { default: 'allow', rules: [] });
  });

  it('round-trips through formatPolicy', () => {
    const doc = {
      default: 'deny',
      rules: [
        {
          direction: 'egress',
          protocol: 'udp',
          ports: [53, '1000-2000'],
          peers: ['vm:a'],
          action: 'allow',
          priority: 5,
        },
      ],
    };
    assert.deepEqual(formatPolicy(parsePolicy(doc)), doc);
    assert.deepEqual(parsePolicy(formatPolicy(parsePolicy(doc))), parsePolicy(doc));
  });

  it('accepts the full port range and the limits exactly', () => {
    assert.deepEqual(parsePolicy(rule({ ports: ['1-65535'] })).rules[1]!.ports, [[1, 65535]]);
    const ports = Array.from({ length: POLICY_LIMITS.ports }, (_, i) => i + 1);
    assert.equal(parsePolicy(rule({ ports })).rules[1]!.ports!.length, 1, 'adjacent ports merge');
  });
});

describe('parsePolicy: hostile and malformed input', () => {
  it('refuses injection attempts in ports, naming the entry', () => {
    for (const bad of [
      '80; flush ruleset',
      '80\nflush ruleset',
      '80 ',
      ' 80',
      '"80"',
      "'80'",
      '80}',
      '80,443',
      '0x50',
      '1e3',
      '٨٠',
      '８０',
      '80\u0000',
      '-80',
      '80-',
      '80-90-100',
      '',
      'x'.repeat(100_000),
    ]) {
      assert.equal(
        rejectedField(rule({ ports: [443, bad] })),
        'rules[1].ports[1]',
        JSON.stringify(bad).slice(0, 40),
      );
    }
  });

  it('refuses out-of-range and inverted port ranges and non-integer ports', () => {
    for (const bad of [
      '0',
      '65536',
      '1-99999999',
      '99999999',
      '2000-1000',
      '0-80',
      0,
      65536,
      -1,
      80.5,
      1e21,
    ]) {
      assert.equal(rejectedField(rule({ ports: [bad] })), 'rules[1].ports[0]', String(bad));
    }
    for (const bad of [true, null, {}, [80], ['80']]) {
      assert.equal(rejectedField(rule({ ports: [bad] })), 'rules[1].ports[0]', JSON.stringify(bad));
    }
    assert.equal(rejectedField(rule({ ports: [] })), 'rules[1].ports');
    assert.equal(rejectedField(rule({ ports: 80 })), 'rules[1].ports');
    assert.equal(rejectedField(rule({ ports: Array(POLICY_LIMITS.ports + 1).fill(80) })), 'rules[1].ports');
    assert.equal(
      rejectedField(rule({ protocol: 'icmp', ports: [80] })),
      'rules[1].ports',
      'ports need tcp/udp',
    );
    assert.equal(rejectedField(rule({ protocol: 'any', ports: [80] })), 'rules[1].ports');
  });

  it('refuses bad peers: injection, wildcards, references to nft objects, host bits', () => {
    for (const bad of [
      '198.18.0.0/24; flush ruleset',
      '198.18.0.0/24\n',
      '"198.18.0.0/24"',
      '@vm_mac',
      '$net',
      '*',
      'any',
      '198.18.0.0/33',
      'fd00::/129',
      '198.18.0.1/24',
      '198.018.0.0/24',
      '256.0.0.0/8',
      'vm:',
      'vm:../../etc/passwd',
      'vm:a b',
      'vm:a\nb',
      'network:',
      'network:a;b',
      'VM:a',
      '',
    ]) {
      assert.equal(
        rejectedField(rule({ peers: ['198.19.0.0/16', bad] })),
        'rules[1].peers[1]',
        JSON.stringify(bad),
      );
    }
    assert.equal(rejectedField(rule({ peers: [] })), 'rules[1].peers');
    assert.equal(rejectedField(rule({ peers: [42] })), 'rules[1].peers[0]');
    assert.equal(rejectedField(rule({ peers: '198.18.0.0/24' })), 'rules[1].peers');
    assert.equal(
      rejectedField(rule({ protocol: 'icmp', peers: ['fd00::/64'] })),
      'rules[1].peers',
      'icmp is IPv4 only',
    );
    assert.equal(rejectedField(rule({ protocol: 'icmpv6', peers: ['198.18.0.0/24'] })), 'rules[1].peers');
  });

  it('refuses wrong enums, types and priorities', () => {
    assert.equal(rejectedField(rule({ direction: 'in' })), 'rules[1].direction');
    assert.equal(rejectedField(rule({ protocol: 'TCP' })), 'rules[1].protocol');
    assert.equal(rejectedField(rule({ protocol: 'tcp; flush ruleset' })), 'rules[1].protocol');
    assert.equal(rejectedField(rule({ action: 'accept' })), 'rules[1].action');
    assert.equal(rejectedField(rule({ action: undefined })), 'rules[1].action');
    for (const bad of [-1, 65536, 1.5, '100', null, Number.POSITIVE_INFINITY]) {
      assert.equal(rejectedField(rule({ priority: bad })), 'rules[1].priority', String(bad));
    }
    assert.equal(rejectedField({ default: 'Allow' }), 'default');
    assert.equal(rejectedField({ rules: [] }), 'default');
    assert.equal(rejectedField({ default: 'allow', rules: {} }), 'rules');
    assert.equal(rejectedField({ default: 'allow', rules: [null] }), 'rules[0]');
    assert.equal(rejectedField({ default: 'allow', rules: ['allow all'] }), 'rules[0]');
    for (const bad of [null, 42, 'deny', [], true]) assert.equal(rejectedField(bad), 'policy');
  });

  it('refuses unknown keys, prototype tricks included, and pollutes nothing', () => {
    assert.equal(rejectedField({ default: 'allow', extra: 1 }), 'extra');
    assert.equal(rejectedField(rule({ comment: 'x' })), 'rules[1].comment');
    for (const text of [
      '{"default":"allow","__proto__":{"polluted":1}}',
      '{"default":"allow","constructor":{"prototype":{"polluted":1}}}',
      '{"default":"allow","rules":[{"direction":"ingress","protocol":"tcp","action":"allow","__proto__":{"polluted":1}}]}',
    ]) {
      assert.throws(
        () => parsePolicyJson(text),
        (e: unknown) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
      );
    }
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('refuses too many rules, deep nesting and oversized or broken JSON text', () => {
    const many = {
      default: 'allow',
      rules: Array(POLICY_LIMITS.rules + 1).fill({ direction: 'ingress', protocol: 'any', action: 'allow' }),
    };
    assert.equal(rejectedField(many), 'rules');
    let deep: unknown = 'x';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    assert.equal(rejectedField({ default: 'allow', rules: [deep] }), 'rules[0]');
    assert.equal(rejectedField(rule({ ports: [deep] })), 'rules[1].ports[0]');
    const err = (text: unknown) => {
      try {
        parsePolicyJson(text);
      } catch (e) {
        assert.ok(isTapnetError(e, 'ERR_INVALID_ARGUMENT'));
        return e.details.field;
      }
      assert.fail('accepted');
    };
    assert.equal(err('{"default": "allow", '), 'policy');
    assert.equal(err(`${'['.repeat(200_000)}${']'.repeat(200_000)}`), 'policy');
    assert.equal(err(' '.repeat(POLICY_LIMITS.documentBytes + 1)), 'policy');
    assert.equal(err(Buffer.from('{}')), 'policy');
    assert.equal(
      err(
        '{"default":"allow","rules":[{"direction":"ingress","protocol":"tcp","ports":[1e999],"action":"allow"}]}',
      ),
      'rules[0].ports[0]',
    );
  });
});
