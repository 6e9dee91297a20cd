/**
 * The `tap` suite (issue: step 1): create a TAP + attach it to a bridge + up, and delete it, for 1,000
 * TAPs in a private namespace: tapnet (netlink + ioctl from TypeScript) against the `ip` command sequence
 * and one `ip -batch` of the same TAPs (the practical floor), in the same run.
 */
import { deleteLink, deleteLinks, ensureBridge, listLinks } from '../src/net/link.js';
import { createNetns, deleteNetns } from '../src/net/netns.js';
import { createTap } from '../src/net/tap.js';
import { NetlinkSocket } from '../src/netlink/socket.js';
import { type BenchRecord, flatness, fmtMs, makeRecord, timeSync } from './lib/stats.js';
import type { BenchOptions, BenchSuite } from './lib/suite.js';
import { ipBatchTaps, ipSequenceTaps, peerCounts } from './peers.js';

const NAME = 'tap';
const PER_BRIDGE = 1000;

interface TapnetTimings {
  setup: number[];
  teardown: number[];
  groupTeardown: number[];
}

/** tapnet: per TAP one createTap (open + TUNSETIFF + TUNSETPERSIST + one RTM_NEWLINK master/up), then deletes. */
function tapnetTaps(n: number, rounds: number): TapnetTimings {
  const out: TapnetTimings = { setup: [], teardown: [], groupTeardown: [] };
  for (let round = 0; round < rounds; round++) {
    const nsName = `bench-tap-${process.pid}-${round}`;
    const ns = createNetns(nsName);
    const nl = NetlinkSocket.open({ nsFd: ns.fd });
    try {
      const bridges: number[] = [];
      for (let b = 0; b < Math.ceil(n / PER_BRIDGE); b++)
        bridges.push(ensureBridge(nl, { name: `br${b}`, up: true }).index);
      const names = Array.from({ length: n }, (_, i) => `tap${i}`);
      const setup = names.map((name, i) =>
        timeSync(() =>
          createTap({ name, nsFd: ns.fd, master: bridges[Math.floor(i / PER_BRIDGE)]!, up: true }, nl),
        ),
      );
      const made = listLinks(nl, { kind: 'tun' }).length;
      if (made !== n) throw new Error(`expected ${n} TAPs, found ${made}`);
      if (round === 0) {
        out.setup.push(...setup);
        // One by one, as a per-VM release does (the first round only: ~16 ms each).
        for (const name of names) out.teardown.push(timeSync(() => deleteLink(nl, name)));
      } else {
        out.setup.push(...setup);
        const total = timeSync(() => deleteLinks(nl, names, 77));
        out.groupTeardown.push(total / n);
      }
      if (listLinks(nl, { kind: 'tun' }).length !== 0) throw new Error('TAPs left after teardown');
    } finally {
      nl.close();
      ns.close();
      deleteNetns(nsName);
    }
  }
  return out;
}

async function run(opts: BenchOptions): Promise<BenchRecord[]> {
  const { taps, rounds } = peerCounts(opts);
  const log = (m: string): void => void process.stderr.write(`  tap: ${m}\n`);
  const out: BenchRecord[] = [];

  log(`tapnet, ${taps} TAPs × ${rounds + 1} round(s)`);
  const mine = tapnetTaps(taps, rounds + 1);
  const flat = flatness(mine.setup.slice(0, taps));
  out.push(
    makeRecord(NAME, 'tapnet', 'tap setup', mine.setup, {
      note: `createTap: open /dev/net/tun + TUNSETIFF + TUNSETPERSIST + one RTM_NEWLINK (master, up); first-decile ${fmtMs(flat.first)} ms → last-decile ${fmtMs(flat.last)} ms (${flat.growth.toFixed(2)}×)`,
      extra: { flatFirst: flat.first, flatLast: flat.last, flatGrowth: flat.growth },
    }),
    makeRecord(NAME, 'tapnet', 'tap teardown', mine.teardown, { note: 'deleteLink per TAP (RTM_DELLINK)' }),
    makeRecord(NAME, 'tapnet (batched)', 'tap teardown (group)', mine.groupTeardown, {
      note: 'deleteLinks: one batched datagram moves all TAPs to a link group, one RTM_DELLINK deletes the group (per TAP = total/n)',
    }),
  );

  log(`ip -batch, ${taps} TAPs × ${rounds} round(s)`);
  const batch = await ipBatchTaps(taps, { rounds });
  out.push(
    makeRecord(NAME, 'ip -batch', 'tap setup', batch.setup, {
      baseline: true,
      note: 'one ip -batch process for all TAPs (per TAP = total/n)',
    }),
    makeRecord(NAME, 'ip -batch', 'tap teardown', batch.teardown, { baseline: true }),
  );
  const group = await ipBatchTaps(taps, { rounds, teardown: 'group' });
  out.push(makeRecord(NAME, 'ip link del group', 'tap teardown (group)', group.teardown, { baseline: true }));

  log(`ip, one process per command, ${taps} TAPs`);
  const seq = await ipSequenceTaps(taps);
  out.push(
    makeRecord(NAME, 'ip (3 commands/TAP)', 'tap setup', seq.setup),
    makeRecord(NAME, 'ip (3 commands/TAP)', 'tap teardown', seq.teardown),
  );
  return out;
}

export const suite: BenchSuite = {
  name: NAME,
  description: 'TAP create + attach + up, and delete: tapnet vs the ip command sequence vs one ip -batch',
  run,
};
