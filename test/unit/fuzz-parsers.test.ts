/**
 * Fuzzing the parsers that read what others wrote (fast-check properties plus a hostile corpus): the
 * netlink decoders, CNI conflists/results/versions/plugin info, the configuration loader and its YAML
 * subset, and the policy parser. Property for all of them: return a value or throw a TapnetError with a
 * stable code — never another exception, never a hang. `FUZZ_RUNS` scales the number of cases (the
 * torture run uses more).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import fc from 'fast-check';
import { confListFromBytes, pluginConfFromBytes } from '../../src/cni/conf.js';
import { createResult, createResultFromJSON } from '../../src/cni/result.js';
import { convertResult, decodePluginInfo, parseVersion, pickVersion } from '../../src/cni/version.js';
import { loadConfig } from '../../src/config/load.js';
import { parseYaml } from '../../src/config/yaml.js';
import { ERROR_CODES, isTapnetError } from '../../src/errors.js';
import { resolveConfig } from '../../src/manager/config.js';
import { decodeAddress } from '../../src/netlink/addr.js';
import { decodeLink } from '../../src/netlink/link.js';
import { parseMessages } from '../../src/netlink/message.js';
import { decodeNeighbour } from '../../src/netlink/neigh.js';
import { decodeRoute } from '../../src/netlink/route.js';
import { decodeFilter, decodeQdisc } from '../../src/netlink/tc.js';
import { parsePolicy, parsePolicyJson } from '../../src/policy/index.js';
import { deepJson, HOSTILE_IDS, HOSTILE_IFNAMES, WRONG_TYPES } from '../torture/corpus.js';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
const CNI_VERSIONS = ['0.1.0', '0.2.0', '0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'];

/** Call fn; a TapnetError with a known code is fine, anything else fails with the input. */
function typed(what: string, input: unknown, fn: () => unknown): unknown {
  try {
    return fn();
  } catch (e) {
    if (isTapnetError(e) && e.code in ERROR_CODES) return undefined;
    const shown =
      typeof input === 'string'
        ? JSON.stringify(input.slice(0, 200))
        : Buffer.isBuffer(input)
          ? input.toString('hex').slice(0, 400)
          : String(input).slice(0, 200);
    assert.fail(`${what} threw ${(e as Error)?.name}: ${(e as Error)?.message} for ${shown}`);
  }
}

/** A netlink message: a plausible header (length may lie) and random payload, some attributes well formed. */
const nlAttr = fc
  .record({ type: fc.integer({ min: 0, max: 0xffff }), data: fc.uint8Array({ maxLength: 40 }) })
  .map(({ type, data }) => {
    const len = 4 + data.length;
    const b = Buffer.alloc((len + 3) & ~3);
    b.writeUInt16LE(len, 0);
    b.writeUInt16LE(type, 2);
    Buffer.from(data).copy(b, 4);
    return b;
  });
const nlMessage = fc
  .record({
    type: fc.constantFrom(
      2,
      3,
      16,
      17,
      20,
      21,
      24,
      25,
      28,
      29,
      36,
      37,
      44,
      45,
      fc.sample(fc.integer({ min: 0, max: 0xffff }), 1)[0]!,
    ),
    flags: fc.integer({ min: 0, max: 0xffff }),
    fixed: fc.uint8Array({ minLength: 0, maxLength: 24 }),
    attrs: fc.array(nlAttr, { maxLength: 8 }),
    lie: fc.integer({ min: -8, max: 8 }),
  })
  .map(({ type, flags, fixed, attrs, lie }) => {
    const body = Buffer.concat([Buffer.from(fixed), ...attrs]);
    const h = Buffer.alloc(16);
    h.writeUInt32LE(Math.max(0, 16 + body.length + (Math.random() < 0.2 ? lie : 0)), 0);
    h.writeUInt16LE(type, 4);
    h.writeUInt16LE(flags, 6);
    return Buffer.concat([h, body]);
  });

describe('fuzz: netlink decoders', () => {
  const decoders = { decodeLink, decodeAddress, decodeRoute, decodeNeighbour, decodeQdisc, decodeFilter };
  const decodeAll = (buf: Buffer): void => {
    const msgs = typed('parseMessages', buf, () => parseMessages(buf)) as
      | ReturnType<typeof parseMessages>
      | undefined;
    for (const m of msgs ?? [])
      for (const [name, d] of Object.entries(decoders)) typed(name, m.payload, () => d(m));
  };

  it('random bytes', { timeout: 60_000 }, () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (b) => decodeAll(Buffer.from(b))),
      { numRuns: RUNS * 3 },
    );
  });

  it('messages with plausible headers and attributes (lengths that lie, truncated fixed parts)', {
    timeout: 60_000,
  }, () => {
    fc.assert(
      fc.property(fc.array(nlMessage, { minLength: 1, maxLength: 4 }), (ms) => decodeAll(Buffer.concat(ms))),
      { numRuns: RUNS * 3 },
    );
  });

  it('every decoder on every payload directly', { timeout: 60_000 }, () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.uint8Array({ maxLength: 300 }), (type, p) => {
        const m = { type, flags: 0, seq: 0, pid: 0, payload: Buffer.from(p) };
        for (const [name, d] of Object.entries(decoders)) typed(name, m.payload, () => d(m));
      }),
      { numRuns: RUNS * 3 },
    );
  });
});

describe('fuzz: CNI conflists, results, versions', () => {
  const anyJson = fc.jsonValue({ maxDepth: 5 });
  const conflistish = fc.record(
    {
      cniVersion: fc.oneof(fc.constantFrom(...CNI_VERSIONS), fc.string(), anyJson),
      name: fc.oneof(fc.constantFrom(...HOSTILE_IDS, 'net'), anyJson),
      plugins: fc.oneof(
        fc.array(
          fc.dictionary(fc.constantFrom('type', 'name', 'ipam', 'capabilities', 'cniVersion'), anyJson),
          { maxLength: 4 },
        ),
        anyJson,
      ),
      cniVersions: fc.oneof(fc.array(fc.string()), anyJson),
      disableCheck: anyJson,
      type: fc.oneof(fc.constantFrom('bridge', ...HOSTILE_IDS), anyJson),
    },
    { requiredKeys: [] },
  );

  it('conflists and single plugin confs from random JSON, shaped JSON and raw bytes', {
    timeout: 60_000,
  }, () => {
    fc.assert(
      fc.property(fc.oneof(anyJson, conflistish), (v) => {
        const bytes = Buffer.from(JSON.stringify(v) ?? 'null');
        typed('confListFromBytes', bytes, () => confListFromBytes(bytes));
        typed('pluginConfFromBytes', bytes, () => pluginConfFromBytes(bytes));
      }),
      { numRuns: RUNS },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
        typed('confListFromBytes', b, () => confListFromBytes(Buffer.from(b)));
        typed('pluginConfFromBytes', b, () => pluginConfFromBytes(Buffer.from(b)));
      }),
      { numRuns: RUNS },
    );
  });

  const resultish = fc.record(
    {
      cniVersion: fc.constantFrom(...CNI_VERSIONS, '9.9.9', ''),
      interfaces: fc.oneof(
        fc.array(
          fc.record({ name: fc.string(), mac: fc.string(), sandbox: fc.string() }, { requiredKeys: [] }),
        ),
        anyJson,
      ),
      ips: fc.oneof(
        fc.array(
          fc.record(
            {
              address: fc.oneof(
                fc.constantFrom('198.18.0.2/24', 'fd00::2/64', '198.18.0.2', '300.1.1.1/24', 'x/y'),
                fc.string(),
              ),
              gateway: fc.oneof(fc.constantFrom('198.18.0.1', '::1'), fc.string()),
              interface: fc.oneof(fc.integer({ min: -2, max: 5 }), anyJson),
              version: fc.constantFrom('4', '6', 4, 'x'),
            },
            { requiredKeys: [] },
          ),
        ),
        anyJson,
      ),
      routes: fc.oneof(
        fc.array(fc.record({ dst: fc.string(), gw: fc.string() }, { requiredKeys: [] })),
        anyJson,
      ),
      dns: fc.oneof(
        fc.record({ nameservers: fc.array(fc.string()), domain: fc.string() }, { requiredKeys: [] }),
        anyJson,
      ),
      ip4: anyJson,
      ip6: anyJson,
    },
    { requiredKeys: ['cniVersion'] },
  );

  it('results of every version: decoded, converted to every version, or a typed error', {
    timeout: 60_000,
  }, () => {
    fc.assert(
      fc.property(fc.oneof(resultish, anyJson), (v) => {
        const text = JSON.stringify(v) ?? 'null';
        const r = typed('createResultFromJSON', text, () => createResultFromJSON(text)) as
          | ReturnType<typeof createResultFromJSON>
          | undefined;
        if (r)
          for (const to of CNI_VERSIONS) typed(`convertResult → ${to}`, text, () => convertResult(r, to));
        for (const ver of CNI_VERSIONS) typed('createResult', text, () => createResult(ver, v));
      }),
      { numRuns: RUNS },
    );
  });

  it('versions and plugin info', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 30 }),
        fc.array(fc.string({ maxLength: 12 }), { maxLength: 5 }),
        (s, list) => {
          typed('parseVersion', s, () => parseVersion(s));
          typed('pickVersion', s, () => pickVersion(s, list));
          typed('decodePluginInfo', s, () => decodePluginInfo(s));
          typed('decodePluginInfo', s, () =>
            decodePluginInfo(JSON.stringify({ cniVersion: s, supportedVersions: list })),
          );
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('hostile corpus: deep nesting, giant documents, wrong types', { timeout: 60_000 }, () => {
    const docs = [
      deepJson(100_000),
      deepJson(100_000, '{"a":', '}').replace(/\}$/, '1}'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'n',
        plugins: Array.from({ length: 20_000 }, () => ({ type: 'bridge' })),
      }),
      JSON.stringify({ cniVersion: '1.0.0', name: 'x'.repeat(5_000_000), plugins: [] }),
      ...WRONG_TYPES.map((v) => JSON.stringify(v)),
      ...WRONG_TYPES.map((v) => JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: v })),
      ...WRONG_TYPES.map((v) => JSON.stringify({ cniVersion: v, name: v, plugins: [{ type: v }] })),
      '\uFEFF{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}',
      '{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}],"name":"m"}',
    ];
    for (const d of docs) {
      const b = Buffer.from(d);
      typed('confListFromBytes', d, () => confListFromBytes(b));
      typed('pluginConfFromBytes', d, () => pluginConfFromBytes(b));
      typed('createResultFromJSON', d, () => createResultFromJSON(d));
    }
  });
});

describe('fuzz: configuration', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tapnet-fuzz-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  let n = 0;
  const load = (text: string, ext: string, env: Record<string, string> = {}) => {
    const file = join(dir, `c${n++}.${ext}`);
    writeFileSync(file, text);
    return loadConfig({ configFile: file, env, defaultFiles: [] });
  };
  const yamlish = fc
    .array(
      fc.oneof(
        fc.constantFrom(
          'networks:',
          '  a:',
          '    subnet4: 198.18.0.0/24',
          '    topology: routed',
          '- x',
          'key: [a, b]',
          'k: {a: 1}',
          '"q": \'v\'',
          '---',
          '# c',
          '\t x: 1',
          'a: &x 1',
          'b: *x',
          'c: |',
          '  d',
          'stateDir: /tmp/x',
        ),
        fc.string({ maxLength: 30 }),
      ),
      { maxLength: 12 },
    )
    .map((lines) => lines.join('\n'));

  it('YAML subset and JSON files, TAPNET_* variables: a config or ERR_CONFIG', { timeout: 60_000 }, () => {
    fc.assert(
      fc.property(yamlish, (text) => {
        typed('parseYaml', text, () => parseYaml(text, 'fuzz.yaml'));
        typed('loadConfig(yaml)', text, () => load(text, 'yaml'));
      }),
      { numRuns: RUNS },
    );
    fc.assert(
      fc.property(
        fc.jsonValue({ maxDepth: 4 }),
        fc.dictionary(
          fc.constantFrom(
            'TAPNET_STATE_DIR',
            'TAPNET_NETNS',
            'TAPNET_SOCKET',
            'TAPNET_API_TCP',
            'TAPNET_LOG_LEVEL',
            'TAPNET_NETWORKS',
            'TAPNET_FIREWALL',
            'TAPNET_SHUTDOWN_TIMEOUT_MS',
          ),
          fc.string({ maxLength: 40 }),
        ),
        (v, env) => {
          const text = JSON.stringify(v) ?? 'null';
          typed('loadConfig(json)', text, () => load(text, 'json', env));
        },
      ),
      { numRuns: RUNS },
    );
  });

  it('manager configurations: hostile names, overlapping and tiny subnets, wrong types', {
    timeout: 60_000,
  }, () => {
    const net = fc.record(
      {
        mode: fc.constantFrom('direct', 'cni', 'x'),
        topology: fc.constantFrom('bridge', 'routed', 1),
        bridge: fc.constantFrom(...HOSTILE_IFNAMES, 'br0'),
        subnet4: fc.constantFrom(
          '198.18.0.0/24',
          '198.18.0.0/31',
          '198.18.0.0/32',
          '0.0.0.0/0',
          '198.18.0.1/24',
          'x',
          '',
        ),
        gateway4: fc.constantFrom('198.18.0.1', '198.18.0.0', '198.18.0.255', '10.0.0.1', '::1'),
        subnet6: fc.constantFrom('fd00::/64', 'fd00::/127', '::/0', '198.18.0.0/24'),
        tapPrefix: fc.constantFrom('tn', 'toolong', '', 'A'),
        mtu: fc.oneof(fc.integer(), fc.constant('1500')),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.constantFrom(...HOSTILE_IDS, 'a', 'b'),
          fc.oneof(net, fc.jsonValue({ maxDepth: 2 })),
          { maxKeys: 3 },
        ),
        fc.jsonValue({ maxDepth: 2 }),
        (networks, extra) => {
          typed('resolveConfig', networks, () => resolveConfig({ networks } as never));
          typed('resolveConfig', extra, () => resolveConfig(extra as never));
        },
      ),
      { numRuns: RUNS },
    );
  });
});

describe('fuzz: policy parser', () => {
  const rule = fc.record(
    {
      action: fc.constantFrom('allow', 'deny', 'drop', 1),
      direction: fc.constantFrom('ingress', 'egress', 'both', 'x'),
      protocol: fc.constantFrom('tcp', 'udp', 'icmp', 'any', 'sctp', 6),
      ports: fc.oneof(
        fc.array(
          fc.oneof(fc.integer({ min: -1, max: 70000 }), fc.constantFrom('80', '1-65535', '5-1', '0', 'x')),
        ),
        fc.jsonValue(),
      ),
      cidrs: fc.oneof(
        fc.array(fc.constantFrom('198.18.0.0/24', '0.0.0.0/0', 'fd00::/64', 'x', '1.2.3.4/33')),
        fc.jsonValue(),
      ),
      priority: fc.oneof(fc.integer(), fc.jsonValue()),
    },
    { requiredKeys: [] },
  );
  it('random documents and JSON text: a policy or a typed error', { timeout: 60_000 }, () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.anything(),
          fc.record(
            {
              rules: fc.array(rule, { maxLength: 6 }),
              name: fc.constantFrom(...HOSTILE_IDS),
              default: fc.jsonValue(),
            },
            { requiredKeys: [] },
          ),
        ),
        (v) => {
          typed('parsePolicy', v, () => parsePolicy(v));
          const text = (() => {
            try {
              return JSON.stringify(v) ?? 'null';
            } catch {
              return 'null';
            }
          })();
          typed('parsePolicyJson', text, () => parsePolicyJson(text));
        },
      ),
      { numRuns: RUNS },
    );
    for (const d of [
      deepJson(100_000),
      deepJson(50_000, '{"rules":', '}'),
      ...WRONG_TYPES.map((v) => JSON.stringify(v)),
    ]) {
      typed('parsePolicyJson', d, () => parsePolicyJson(d));
    }
  });
});
