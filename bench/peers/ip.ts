/**
 * iproute2 as the peer for TAP setup and teardown, each run in a fresh namespace with Linux bridges:
 * - the sequence a user types per TAP: `ip tuntap add dev X mode tap`, `ip link set X master BR`,
 *   `ip link set X up`, and `ip link del X` (one process per command);
 * - one `ip -batch -` process for all TAPs: the practical floor of iproute2 (per TAP = total / n);
 * - the same batch with every TAP in one link group, torn down by a single `ip link del group G`.
 */
import { TapnetError } from '../../src/errors.js';
import { validateInt } from '../../src/validate.js';
import { timeSync } from '../lib/stats.js';
import { execPeer, requirePeer, type Scratch, withScratch } from './exec.js';

/** Per-item milliseconds of a peer, in the order the items were handled. */
export interface PeerTimings {
  setup: number[];
  teardown: number[];
}

/** Batch runs: per-TAP milliseconds of each round (total / n), and the round totals. */
export interface BatchTimings extends PeerTimings {
  setupTotal: number[];
  teardownTotal: number[];
}

const IP = '/usr/sbin/ip';
/** A Linux bridge takes at most 1,023 ports; we put 1,000 TAPs on each. */
export const TAPS_PER_BRIDGE = 1000;
/** The link group of the group-delete variant (never 0: that is every link's default group). */
const BENCH_GROUP = 77;
/** Upper bound of TAPs per run, to keep a run finite. */
const MAX_TAPS = 20_000;

const tapName = (i: number): string => `tap${i}`;
const bridgeName = (i: number): string => `br${Math.floor(i / TAPS_PER_BRIDGE)}`;

/** `ip -n NS link add brK type bridge` + up, for as many bridges as n TAPs need (not timed). */
function addBridges(s: Scratch, n: number): void {
  const bridges = Math.max(1, Math.ceil(n / TAPS_PER_BRIDGE));
  const lines: string[] = [];
  for (let b = 0; b < bridges; b++) lines.push(`link add br${b} type bridge`, `link set br${b} up`);
  execPeer(IP, ['-n', s.name, '-batch', '-'], { input: `${lines.join('\n')}\n` });
}

function checkN(n: number): number {
  requirePeer(IP, 'iproute2');
  return validateInt(n, 'TAP count', 1, MAX_TAPS);
}

/**
 * One process per command, as a user or a shell script would do it: per TAP, setup is the time of
 * `ip tuntap add dev X mode tap`, `ip link set X master BR` and `ip link set X up`; teardown is
 * `ip link del X`. Runs in its own namespace; returns per-TAP milliseconds.
 */
export async function ipSequenceTaps(n: number): Promise<PeerTimings> {
  checkN(n);
  return withScratch('bipseq', (s) => {
    addBridges(s, n);
    const ip = (...args: string[]): void => void execPeer(IP, ['-n', s.name, ...args]);
    const setup: number[] = [];
    const teardown: number[] = [];
    for (let i = 0; i < n; i++) {
      const tap = tapName(i);
      setup.push(
        timeSync(() => {
          ip('tuntap', 'add', 'dev', tap, 'mode', 'tap');
          ip('link', 'set', tap, 'master', bridgeName(i));
          ip('link', 'set', tap, 'up');
        }),
      );
    }
    expectTaps(s, n);
    for (let i = 0; i < n; i++) teardown.push(timeSync(() => ip('link', 'del', tapName(i))));
    expectTaps(s, 0);
    return { setup, teardown };
  });
}

export interface IpBatchOptions {
  /** Fresh namespaces to repeat the whole run in (default 1). */
  rounds?: number;
  /** `each`: one `link del X` line per TAP (default); `group`: all TAPs in one link group, one `link del group G`. */
  teardown?: 'each' | 'group';
}

/**
 * One `ip -n NS -batch -` process sets up all n TAPs (the same three commands per TAP) and one tears
 * them down, per round, each round in a fresh namespace. Per-TAP cost = round total / n.
 */
export async function ipBatchTaps(n: number, opts: IpBatchOptions = {}): Promise<BatchTimings> {
  checkN(n);
  const rounds = validateInt(opts.rounds ?? 1, 'rounds', 1, 100);
  const group = opts.teardown === 'group';
  const out: BatchTimings = { setup: [], teardown: [], setupTotal: [], teardownTotal: [] };
  for (let r = 0; r < rounds; r++) {
    await withScratch('bipbat', (s) => {
      addBridges(s, n);
      const up: string[] = [];
      const down: string[] = [];
      for (let i = 0; i < n; i++) {
        const tap = tapName(i);
        up.push(
          `tuntap add dev ${tap} mode tap`,
          `link set ${tap} master ${bridgeName(i)}`,
          group ? `link set ${tap} group ${BENCH_GROUP} up` : `link set ${tap} up`,
        );
        if (!group) down.push(`link del ${tap}`);
      }
      const batch = (lines: string[]) => () =>
        execPeer(IP, ['-n', s.name, '-batch', '-'], { input: `${lines.join('\n')}\n` });
      const setupMs = timeSync(batch(up));
      expectTaps(s, n);
      const teardownMs = group
        ? timeSync(() => execPeer(IP, ['-n', s.name, 'link', 'del', 'group', String(BENCH_GROUP)]))
        : timeSync(batch(down));
      expectTaps(s, 0);
      out.setupTotal.push(setupMs);
      out.teardownTotal.push(teardownMs);
      out.setup.push(setupMs / n);
      out.teardown.push(teardownMs / n);
    });
  }
  return out;
}

/** The TAPs of a namespace attached to a bridge and up (`ip -n NS -j link show type tun`). */
export function countTaps(nsName: string): number {
  const links = JSON.parse(
    execPeer(IP, ['-n', nsName, '-j', 'link', 'show', 'type', 'tun']).stdout || '[]',
  ) as {
    ifname?: string;
    master?: string;
    flags?: string[];
  }[];
  return links.filter((l) => l.ifname?.startsWith('tap') && l.master && l.flags?.includes('UP')).length;
}

/** A benchmark that did not do its work must not report a time: check the TAP count (not timed). */
function expectTaps(s: Scratch, n: number): void {
  const got = countTaps(s.name);
  if (got !== n) {
    throw new TapnetError('ERR_INTERNAL', `expected ${n} TAPs on bridges in ${s.name}, found ${got}`, {
      details: { netns: s.name, expected: n, found: got },
    });
  }
}
