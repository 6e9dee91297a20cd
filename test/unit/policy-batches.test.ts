/**
 * The nftables batches of policies, as data: a VM only ever adds or deletes elements (never a chain, a
 * rule or a verdict element), moves between classes check what they believe, and the shared structure is
 * written once.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import type { NetworkSpec, VmSpec } from '../../src/firewall/model.js';
import { NoFirewall } from '../../src/firewall/none.js';
import {
  classCommands,
  membershipCommands,
  NO_CLASS_COUNTER,
  POLICY_BASE_CHAINS,
  policyBaseCommands,
  removeClassCommands,
} from '../../src/firewall/policy-batches.js';
import { classNames, POLICY, parseClassName, policyPort } from '../../src/firewall/policy-model.js';
import { compilePolicy, parsePolicy } from '../../src/policy/index.js';
import type { NftObject } from '../../src/sys/nftables.js';

const BRIDGE: NetworkSpec = {
  name: 'n',
  topology: 'bridge',
  bridge: 'br0',
  tapPrefix: 'tn',
  subnet4: '198.18.0.0/24',
  subnet6: 'fd00::/64',
  nat: false,
  isolate: false,
};
const ROUTED: NetworkSpec = {
  name: 'r',
  topology: 'routed',
  tapPrefix: 'tr',
  subnet4: '198.18.8.0/24',
  nat: false,
  isolate: false,
};
const VM: VmSpec = {
  network: 'n',
  ifname: 'tn01',
  mac: '02:00:00:00:00:01',
  ipv4: '198.18.0.5',
  ipv6: 'fd00::5',
};
const port = policyPort(VM, BRIDGE);
const A = 'aaaaaaaaaaaa';
const B = 'bbbbbbbbbbbb';

/** `verb element name key [: data]` lines, for readable assertions. */
function elements(cmds: NftObject[]): string[] {
  return cmds.map((c) => {
    const [verb, body] = Object.entries(c)[0]!;
    const e = (body as { element?: { name: string; elem: unknown[] } }).element;
    assert.ok(e, `only element commands, got ${JSON.stringify(c)}`);
    return `${verb} ${e.name} ${JSON.stringify(e.elem[0])}`;
  });
}

const EG = JSON.stringify({ concat: ['br0', '02:00:00:00:00:01'] });

describe('policy identity', () => {
  it('keys a bridged VM by bridge and MAC, a routed one by its TAP', () => {
    assert.deepEqual(port, {
      tap: 'tn01',
      ifname: 'br0',
      mac: '02:00:00:00:00:01',
      bridged: true,
      ipv4: '198.18.0.5',
      ipv6: 'fd00::5',
    });
    const r = policyPort(
      { network: 'r', ifname: 'tr01', mac: '02:00:00:00:00:02', ipv4: '198.18.8.2' },
      ROUTED,
    );
    assert.equal(r.ifname, 'tr01');
    assert.equal(r.bridged, false);
    assert.throws(
      () => policyPort(VM, { ...BRIDGE, bridge: undefined }),
      (e: unknown) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });

  it('names class objects and parses them back', () => {
    assert.deepEqual(classNames('egress', A), { chain: `pe_${A}`, counter: `pce_${A}`, sets: [`pme_${A}`] });
    assert.deepEqual(classNames('ingress', A).sets, [`pmi4_${A}`, `pmi6_${A}`]);
    assert.deepEqual(parseClassName(`pci_${B}`), { direction: 'ingress', hash: B });
    assert.equal(parseClassName('pol_eg'), undefined);
    assert.equal(parseClassName(`pe_${A}x`), undefined);
    assert.throws(
      () => classNames('egress', 'x"; flush ruleset'),
      (e: unknown) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });
});

describe('membershipCommands', () => {
  it('joins: member, reference to the class counter, drop counter, link-local guard', () => {
    assert.deepEqual(elements(membershipCommands(port, {}, { egress: A, ingress: B })), [
      `add pme_${A} ${EG}`,
      `add pol_ref_eg [${EG},"pce_${A}"]`,
      `add pol_drop_eg ${EG}`,
      `add pmi4_${B} "198.18.0.5"`,
      `add pol_ref_in4 ["198.18.0.5","pci_${B}"]`,
      `add pol_drop_in4 "198.18.0.5"`,
      `add pmi6_${B} "fd00::5"`,
      `add pol_ref_in6 ["fd00::5","pci_${B}"]`,
      `add pol_drop_in6 "fd00::5"`,
      `add pol_ll ${EG}`,
    ]);
  });

  it('moves: deletes from the old class first (fails if it was not there), keeps drop counters', () => {
    const cmds = elements(membershipCommands(port, { egress: A }, { egress: B }));
    assert.deepEqual(cmds.slice(0, 2), [`delete pme_${A} ${EG}`, `delete pol_ref_eg ${EG}`]);
    assert.ok(cmds.includes(`add pol_ref_eg [${EG},"pce_${B}"]`));
    assert.ok(!cmds.some((c) => c.startsWith('delete pol_drop')));
  });

  it('asserts "no policy" for directions it believes have none', () => {
    const cmds = elements(membershipCommands(port, {}, { ingress: B }));
    assert.deepEqual(cmds.slice(0, 2), [
      `add pol_ref_eg [${EG},"${NO_CLASS_COUNTER}"]`,
      `delete pol_ref_eg ${EG}`,
    ]);
  });

  it('leaves: every element of the VM goes', () => {
    const cmds = elements(membershipCommands(port, { egress: A, ingress: B }, {}));
    for (const set of [
      'pol_ref_eg',
      'pol_drop_eg',
      `pme_${A}`,
      'pol_ref_in4',
      'pol_drop_in6',
      `pmi6_${B}`,
      'pol_ll',
    ]) {
      assert.ok(
        cmds.some((c) => c.startsWith(`delete ${set} `)),
        set,
      );
    }
    assert.ok(!cmds.some((c) => c.startsWith('add') && !c.includes(NO_CLASS_COUNTER)));
  });
});

describe('shared structure and classes', () => {
  it('writes dispatch chains only when they are missing', () => {
    const fresh = policyBaseCommands(new Set());
    const present = policyBaseCommands(new Set(POLICY_BASE_CHAINS));
    const dispatchAdds = (cmds: NftObject[]) =>
      cmds.filter(
        (c) => (c.add as { rule?: { chain: string } } | undefined)?.rule?.chain === POLICY.egressDispatch,
      ).length;
    assert.equal(dispatchAdds(fresh), 1, 'the fail-closed rule');
    assert.equal(dispatchAdds(present), 0, 'an existing dispatch chain keeps its class rules');
    const hooks = fresh
      .map((c) => (c.add as { chain?: { hook?: string; prio?: number } } | undefined)?.chain)
      .filter((c) => c?.hook)
      .map((c) => `${c!.hook}/${c!.prio}`);
    assert.deepEqual(hooks, ['forward/10', 'input/10', 'output/10']);
  });

  it('creates a class with its dispatch rule at the head, and removes it whole', () => {
    const cmds = classCommands({ direction: 'ingress', hash: A, rules: [[{ return: null }]] });
    const inserts = cmds
      .filter((c) => c.insert)
      .map((c) => (c.insert as { rule: { chain: string } }).rule.chain);
    assert.deepEqual(inserts, [POLICY.ingress4Dispatch, POLICY.ingress6Dispatch]);
    const rm = removeClassCommands('ingress', A, [{ chain: POLICY.ingress4Dispatch, handle: 7 }]);
    assert.deepEqual(
      rm.map((c) => `${Object.keys(c)[0]!} ${Object.keys(Object.values(c)[0]!)[0]}`),
      ['delete rule', 'flush chain', 'delete chain', 'delete set', 'delete set', 'delete counter'],
    );
  });
});

describe('the "none" firewall and policies', () => {
  it('accepts policies that deny nothing and refuses the others: it cannot enforce them', () => {
    const fw = new NoFirewall();
    fw.ensureNetwork({ ...BRIDGE, subnet4: '198.18.0.0/24' });
    const vm = { network: 'n', ifname: 'tn01', mac: '02:00:00:00:00:01', ipv4: '198.18.0.5' };
    const open = compilePolicy({
      vm: parsePolicy({
        default: 'allow',
        rules: [{ direction: 'ingress', protocol: 'tcp', action: 'allow' }],
      }),
    });
    assert.deepEqual(fw.setPolicy(vm, open), { unresolved: [] });
    const deny = compilePolicy({ vm: parsePolicy({ default: 'deny' }) });
    assert.throws(
      () => fw.setPolicy(vm, deny),
      (e: unknown) => isTapnetError(e, 'ERR_CONFIG'),
    );
    assert.throws(
      () => fw.setPolicy(vm, { ...deny, version: 2 } as never),
      (e: unknown) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
    fw.removePolicy(vm);
    assert.deepEqual(fw.policyCounters(vm), {
      egress: { packets: 0, bytes: 0 },
      ingress: { packets: 0, bytes: 0 },
    });
    assert.deepEqual(fw.listPolicies(), []);
  });
});
