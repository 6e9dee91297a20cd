/**
 * The LinkReaper against the kernel: TAPs doomed one by one, each in its own turn of the event loop (as
 * concurrent releases doom them), go with few group deletions, never one per batch queued behind the
 * others; every caller learns when its TAP is gone.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { LinkReaper } from '../../src/manager/reaper.js';
import { listLinks } from '../../src/net/link.js';
import { createTap } from '../../src/net/tap.js';
import { NetlinkSocket } from '../../src/netlink/socket.js';
import { makeTestNetns, privSkipReason, type TestNetns } from '../helpers/priv.js';

const skip = privSkipReason();
const N = 300;

describe('LinkReaper: batched background deletion', { skip }, () => {
  let t: TestNetns;
  let slow: NetlinkSocket;
  before(() => {
    t = makeTestNetns('reap');
    slow = NetlinkSocket.open({ nsFd: t.ns.fd });
  });
  after(() => {
    slow?.close();
    t?.destroy();
  });

  it(`${N} TAPs doomed in ${N} separate turns go with a few deletions, and all are gone`, async () => {
    for (let i = 0; i < N; i++) createTap({ name: `trp${i}`, nsFd: t.ns.fd });
    let deletions = 0;
    const requestAsync = slow.requestAsync.bind(slow);
    slow.requestAsync = (...a: Parameters<NetlinkSocket['requestAsync']>) => {
      deletions++;
      return requestAsync(...a);
    };
    const reaper = new LinkReaper(t.nl, slow, 0x7400fffe);
    const gone: Promise<void>[] = [];
    for (let i = 0; i < N; i++) {
      await reaper.detach(`trp${i}`); // answers once doomed, before the kernel deletes it
      gone.push(reaper.whenGone(`trp${i}`));
    }
    await Promise.all(gone);
    await reaper.idle();
    assert.equal(listLinks(t.nl, { kind: 'tun' }).length, 0);
    assert.ok(deletions < N / 4, `${deletions} group deletions for ${N} TAPs doomed one at a time`);
  });
});
