/**
 * Batched link deletion. Deleting one link costs ~16 ms of kernel time (an RCU grace period), whoever
 * asks; deleting a whole link group costs one grace period for all of them. The reaper collects the TAPs
 * that concurrent releases want gone, moves them into this process's scratch group with one batched
 * datagram, and deletes the group on a worker thread, so the event loop keeps serving other calls.
 */
import { isTapnetError, type TapnetError, toTapnetError } from '../errors.js';
import { deleteGroupRequest, moveToGroup } from '../net/link.js';
import type { NetlinkSocket } from '../netlink/socket.js';

interface Pending {
  names: string[];
  waiters: { resolve: () => void; reject: (e: TapnetError) => void }[];
}

export class LinkReaper {
  private pending: Pending | undefined;
  private running: Promise<void> = Promise.resolve();

  /**
   * @param nl   synchronous socket (for the batched moves)
   * @param slow a socket used only for the asynchronous group deletions
   */
  constructor(
    private readonly nl: NetlinkSocket,
    private readonly slow: NetlinkSocket,
    private readonly group: number,
  ) {}

  /** Delete `name`; resolves when the link is gone. Already gone is success. */
  delete(name: string): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.pending) {
        this.pending = { names: [], waiters: [] };
        // Gather every deletion asked for while the previous flush runs (or until the next turn).
        this.running = this.running.then(() => new Promise<void>((r) => setImmediate(r))).then(() => this.flush());
      }
      this.pending.names.push(name);
      this.pending.waiters.push({ resolve, reject });
    });
  }

  private async flush(): Promise<void> {
    const batch = this.pending;
    this.pending = undefined;
    if (!batch) return;
    let moveFailures = new Map<string, TapnetError>();
    let failure: TapnetError | undefined;
    try {
      moveFailures = moveToGroup(this.nl, batch.names, this.group);
      await this.slow.requestAsync(deleteGroupRequest(this.group), `group ${this.group}`);
    } catch (e) {
      if (!(isTapnetError(e) && (e.errno === 'ENODEV' || e.code === 'ERR_LINK_NOT_FOUND'))) failure = toTapnetError(e, 'ERR_NETLINK');
    }
    batch.waiters.forEach((w, i) => {
      const f = failure ?? moveFailures.get(batch.names[i]!);
      if (f) w.reject(f);
      else w.resolve();
    });
  }
}
