/**
 * Bandwidth limits: the choice between tc and Firecracker's own rate limiters, the validation, and — in a
 * private namespace — throughput measured within ±15% of the limit in both directions through a veth
 * stand-in for a TAP (tbf towards the guest; IFB + tbf from the guest) — read from the kernel's byte
 * counters behind the shaper, so a busy machine's scheduling cannot skew it — a live change, removal, and the
 * same objects on a real TAP checked with `tc -j` and `ip -j` as oracles.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { isTapnetError } from '../../src/errors.js';
import {
  applyBandwidth,
  defaultBurst,
  firecrackerLimits,
  ifbName,
  removeBandwidth,
  validateBandwidth,
} from '../../src/manager/limits.js';
import { createTap } from '../../src/net/tap.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();

describe('bandwidth limits: validation and the Firecracker form', () => {
  it('fills in bursts and names bad fields', () => {
    assert.deepEqual(validateBandwidth({ rx: { rateBps: 12_500_000 } }), {
      rx: { rateBps: 12_500_000, burstBytes: 125_000 },
    });
    assert.equal(defaultBurst(1000), 65_536, 'at least one GSO packet');
    for (const [bad, field] of [
      [{ rx: { rateBps: 0 } }, 'bandwidth.rx.rateBps'],
      [{ rx: { rateBps: 1.5 } }, 'bandwidth.rx.rateBps'],
      [{ tx: { rateBps: 1000, burstBytes: 100 } }, 'bandwidth.tx.burstBytes'],
      [{ tx: { rateBps: '1000' } }, 'bandwidth.tx.rateBps'],
      [{ tx: { rateBps: 1000, ceil: 5 } }, 'bandwidth.tx.ceil'],
      [{ up: { rateBps: 1000 } }, 'bandwidth.up'],
      [{ rx: 1000 }, 'bandwidth.rx'],
    ] as const) {
      assert.throws(
        () => validateBandwidth(bad),
        (e: unknown) => isTapnetError(e, 'ERR_INVALID_ARGUMENT') && e.message.includes(field),
        field,
      );
    }
  });

  it('renders Firecracker token buckets for both directions', () => {
    const { firecracker, rateLimit } = firecrackerLimits(
      validateBandwidth({ rx: { rateBps: 1_000_000, burstBytes: 200_000 }, tx: { rateBps: 500_000 } }),
    );
    assert.deepEqual(rateLimit, {
      rx: { bytesPerSec: 1_000_000, burstBytes: 200_000 },
      tx: { bytesPerSec: 500_000, burstBytes: 65_536 },
    });
    assert.deepEqual(firecracker.rx_rate_limiter, { bandwidth: { size: 200_000, refill_time: 200 } });
    assert.deepEqual(firecracker.tx_rate_limiter, { bandwidth: { size: 65_500, refill_time: 131 } });
  });

  it('names the IFB after the TAP, within 15 bytes', () => {
    assert.match(ifbName('tn3f2a9c01ab'), /^ifb[0-9a-f]{12}$/);
    assert.notEqual(ifbName('tn1'), ifbName('tn2'));
    assert.throws(
      () => ifbName('a b'),
      (e: unknown) => isTapnetError(e, 'ERR_INVALID_ARGUMENT'),
    );
  });
});

/** A TCP sink that reads everything on `port`, and a source that sends as fast as it can. */
const SINK = `
require('net').createServer((s) => { s.on('data', () => {}); s.on('error', () => {}); }).listen(Number(process.argv[1]), () => console.log('ready'));
`;
const SOURCE = `
const [host, port] = [process.argv[1], Number(process.argv[2])];
const chunk = Buffer.alloc(65536);
const s = require('net').connect(port, host, () => { const pump = () => { while (s.write(chunk)); }; s.on('drain', pump); pump(); });
s.on('error', () => process.exit(0));
`;

/** A link's byte counter in a namespace (`ip -s link`), the measuring point of the kernel. */
function linkBytes(ns: TestNetns, dev: string, dir: 'rx' | 'tx'): number {
  const l = ns.ipJson<Array<{ stats64: Record<'rx' | 'tx', { bytes: number }> }>>(
    '-s',
    'link',
    'show',
    'dev',
    dev,
  );
  return l[0]!.stats64[dir].bytes;
}

/**
 * Bulk TCP from `from` to `toAddr` (a sink in `to`); the rate is read from a link counter on the far side
 * of the shaper (`at`), from 1 s after the start (past the bucket's burst and TCP's ramp) to 2.5 s.
 */
async function throughput(
  from: TestNetns,
  to: TestNetns,
  toAddr: string,
  at: { ns: TestNetns; dev: string; dir: 'rx' | 'tx' },
): Promise<number> {
  const port = 5001 + Math.floor(Math.random() * 1000);
  const sink = spawn('ip', ['netns', 'exec', to.name, process.execPath, '-e', SINK, String(port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let source: ReturnType<typeof spawn> | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      sink.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      sink.on('error', reject);
    });
    source = spawn('ip', ['netns', 'exec', from.name, process.execPath, '-e', SOURCE, toAddr, String(port)], {
      stdio: 'ignore',
    });
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await sleep(1000);
    const t1 = performance.now();
    const b1 = linkBytes(at.ns, at.dev, at.dir);
    await sleep(1500);
    const b2 = linkBytes(at.ns, at.dev, at.dir);
    const t2 = performance.now();
    return (b2 - b1) / ((t2 - t1) / 1000);
  } finally {
    source?.kill('SIGKILL');
    sink.kill('SIGKILL');
  }
}

/** Assert ±15% and report the figure as a test diagnostic. */
function near(t: { diagnostic(m: string): void }, measured: number, limit: number, what: string): void {
  const ratio = measured / limit;
  const msg = `${what}: ${(measured / 1e6).toFixed(3)} MB/s for a ${limit / 1e6} MB/s limit (×${ratio.toFixed(3)})`;
  t.diagnostic(msg);
  assert.ok(ratio > 0.85 && ratio < 1.15, msg);
}

describe('bandwidth limits in the kernel', { skip }, () => {
  let host: TestNetns;
  let guest: TestNetns;
  let vh = 0;

  before(() => {
    host = makeTestNetns('bwh');
    guest = makeTestNetns('bwg');
    host.ip('link', 'add', 'tnveth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', guest.name);
    host.ip('addr', 'add', '198.18.7.1/24', 'dev', 'tnveth0');
    host.ip('link', 'set', 'tnveth0', 'up');
    guest.ip('addr', 'add', '198.18.7.2/24', 'dev', 'eth0');
    guest.ip('link', 'set', 'eth0', 'up');
    vh = host.ipJson<Array<{ ifindex: number }>>('link', 'show', 'tnveth0')[0]!.ifindex;
  });

  after(() => {
    guest?.destroy();
    host?.destroy();
  });

  it('shapes traffic to the guest (tbf) and from it (IFB) within ±15%', async (t) => {
    const applied = applyBandwidth(
      host.nl,
      vh,
      { rx: { rateBps: 2_000_000, burstBytes: 32_768 }, tx: { rateBps: 1_000_000, burstBytes: 32_768 } },
      'qemu',
    );
    assert.equal(applied.via, 'tc');
    assert.equal(applied.ifb, ifbName('tnveth0'));
    near(
      t,
      await throughput(host, guest, '198.18.7.2', { ns: guest, dev: 'eth0', dir: 'rx' }),
      2_000_000,
      'to the guest',
    );
    near(
      t,
      await throughput(guest, host, '198.18.7.1', { ns: host, dev: ifbName('tnveth0'), dir: 'tx' }),
      1_000_000,
      'from the guest',
    );
  });

  it('changes a limit live, and lifts one direction', async (t) => {
    applyBandwidth(host.nl, vh, { tx: { rateBps: 3_000_000, burstBytes: 32_768 } }, 'cloud-hypervisor');
    const root = JSON.parse(
      execFileSync('tc', ['-n', host.name, '-j', 'qdisc', 'show', 'dev', 'tnveth0'], { encoding: 'utf8' }),
    ) as Array<{ kind: string; root?: boolean }>;
    assert.ok(!root.some((q) => q.kind === 'tbf'), 'no limit towards the guest any more');
    near(
      t,
      await throughput(guest, host, '198.18.7.1', { ns: host, dev: ifbName('tnveth0'), dir: 'tx' }),
      3_000_000,
      'from the guest, raised',
    );
  });

  it('removes everything, the IFB included', () => {
    assert.deepEqual(removeBandwidth(host.nl, 'tnveth0').removed, ['tnveth0 limits', ifbName('tnveth0')]);
    const ifb = JSON.parse(
      execFileSync('ip', ['-n', host.name, '-j', 'link', 'show', 'type', 'ifb'], { encoding: 'utf8' }) ||
        '[]',
    ) as unknown[];
    assert.deepEqual(ifb, []);
    const filters = execFileSync('tc', ['-n', host.name, 'filter', 'show', 'dev', 'tnveth0', 'ingress'], {
      encoding: 'utf8',
    });
    assert.equal(filters.trim(), '');
    assert.deepEqual(
      removeBandwidth(host.nl, 'tnveth0').removed,
      ['tnveth0 limits'],
      'again: nothing left to remove',
    );
    assert.deepEqual(removeBandwidth(host.nl, 'gone0').removed, [], 'a TAP already deleted');
  });

  it('puts the same objects on a real TAP; Firecracker gets its buckets and tc gets nothing', () => {
    const tap = createTap({ name: 'tnlimit0', nsFd: host.ns.fd, persistent: false, up: true }, host.nl);
    const index = host.ipJson<Array<{ ifindex: number }>>('link', 'show', 'tnlimit0')[0]!.ifindex;
    try {
      applyBandwidth(host.nl, index, { rx: { rateBps: 12_500_000 }, tx: { rateBps: 6_250_000 } }, 'qemu');
      const tc = (...args: string[]) =>
        JSON.parse(
          execFileSync('tc', ['-n', host.name, '-j', ...args], { encoding: 'utf8' }) || '[]',
        ) as Array<Record<string, unknown>>;
      const rootTbf = tc('qdisc', 'show', 'dev', 'tnlimit0').find((q) => q.kind === 'tbf');
      assert.equal((rootTbf?.options as { rate?: number } | undefined)?.rate, 12_500_000);
      const ifb = ifbName('tnlimit0');
      assert.equal(
        (
          tc('qdisc', 'show', 'dev', ifb).find((q) => q.kind === 'tbf')?.options as
            | { rate?: number }
            | undefined
        )?.rate,
        6_250_000,
      );
      const redirect = execFileSync('tc', ['-n', host.name, 'filter', 'show', 'dev', 'tnlimit0', 'ingress'], {
        encoding: 'utf8',
      });
      assert.match(redirect, /pref 10 u32/);
      assert.match(redirect, new RegExp(`mirred \\(Egress Redirect to device ${ifb}\\)`));
      const fc = applyBandwidth(host.nl, index, { rx: { rateBps: 12_500_000 } }, 'firecracker');
      assert.equal(fc.via, 'firecracker');
      assert.deepEqual(fc.firecracker, {
        rx_rate_limiter: { bandwidth: { size: 1_250_000, refill_time: 100 } },
      });
      assert.ok(!tc('qdisc', 'show', 'dev', 'tnlimit0').some((q) => q.kind === 'tbf'), 'never both');
      assert.deepEqual(host.ipJson('link', 'show', 'type', 'ifb'), [], 'IFB gone');
    } finally {
      for (const fd of tap.fds) closeSync(fd);
    }
  });
});
