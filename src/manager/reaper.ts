/**
 * Batched, background link deletion. Deleting one link costs ~16 ms of kernel time (RCU grace periods,
 * under the RTNL lock every other link change waits for), whoever asks; deleting a whole link group costs
 * that once for all of them. The reaper collects the TAPs that concurrent releases want gone, moves them
 * into this process's scratch link group with one batched datagram (cheap: no grace period), and deletes
 * the group on a worker thread, one request at a time, so the event loop keeps serving and deletions of
 * many releases share one grace period.
 *
 * `detach(name)` resolves once the link is in the doomed group (a release can answer then: its firewall
 * elements are gone, so the TAP sends nothing); `whenGone(name)` resolves when it no longer exists (an
 * ensure that wants the same name waits for it). A crash in between leaves a TAP without a record, which
 * reconcile removes.
 */
import { isTapnetError, type TapnetError, toTapnetError } from '../errors.js';
import { deleteGroupRequest, moveToGroup } from '../net/link.js';
import type { NetlinkSocket } from '../netlink/socket.js';

interface Waiter {
  resolve: () => void;
  reject: (e: TapnetError) => void;
}

interface Batch {
  names: string[];
  detached: Waiter[];
}

export class LinkReaper {
  private pending: Batch | undefined;
  /** Names moved into the group and not yet confirmed gone, with their "gone" promise. */
  private readonly dying = new Map<string, Promise<void>>();
  /** Callers of the next group deletion (all links moved before it starts go with it). */
  private waiting: Waiter[] = [];
  private deleting = false;

  /**
   * @param nl   synchronous socket (for the batched moves)
   * @param slow a socket used only for the asynchronous group deletions
   */
  constructor(
    private readonly nl: NetlinkSocket,
    private readonly slow: NetlinkSocket,
    private readonly group: number,
  ) {}

  /** Doom `name`: resolves when it is in the scratch group (deletion follows in the background). */
  detach(name: string): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.pending) {
        this.pending = { names: [], detached: [] };
        setImmediate(() => this.flush());
      }
      this.pending.names.push(name);
      this.pending.detached.push({ resolve, reject });
    });
  }

  /** Delete `name` and wait until it is gone. Already gone is success. */
  async delete(name: string): Promise<void> {
    await this.detach(name);
    await this.whenGone(name);
  }

  /** Resolves when a doomed link is gone (at once when `name` is not being deleted). */
  whenGone(name: string): Promise<void> {
    return this.dying.get(name) ?? Promise.resolve();
  }

  /** Resolves when every deletion asked for so far has finished (for close and tests). */
  async idle(): Promise<void> {
    while (this.pending || this.dying.size) {
      await new Promise<void>((r) => setImmediate(r));
      await Promise.all([...this.dying.values()].map((p) => p.catch(() => undefined)));
    }
  }

  private flush(): void {
    const batch = this.pending;
    this.pending = undefined;
    if (!batch) return;
    let moved: Map<string, TapnetError>;
    try {
      moved = moveToGroup(this.nl, batch.names, this.group);
    } catch (e) {
      const err = toTapnetError(e, 'ERR_NETLINK', 'move links to the deletion group');
      for (const w of batch.detached) w.reject(err);
      return;
    }
    const doomed = batch.names.filter((n) => !moved.has(n));
    const gone = this.nextDeletion();
    for (const n of doomed) {
      const p = gone.finally(() => {
        if (this.dying.get(n) === p) this.dying.delete(n);
      });
      p.catch(() => undefined);
      this.dying.set(n, p);
    }
    batch.detached.forEach((w, i) => {
      const f = moved.get(batch.names[i]!);
      if (f) w.reject(f);
      else w.resolve();
    });
  }

  /**
   * Resolves when a group deletion that starts after this call has finished. One deletion at a time, and
   * however many links are moved while one runs, they all go with the next single one: deletions keep
   * up with any rate of releases (one per grace period, whatever the batch), and nothing queues up.
   */
  private nextDeletion(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      if (!this.deleting) void this.pump();
    });
  }

  private async pump(): Promise<void> {
    this.deleting = true;
    try {
      while (this.waiting.length) {
        const batch = this.waiting.splice(0);
        try {
          await this.deleteGroup();
          for (const w of batch) w.resolve();
        } catch (e) {
          const err = toTapnetError(e, 'ERR_NETLINK', 'delete the link group');
          for (const w of batch) w.reject(err);
        }
      }
    } finally {
      this.deleting = false;
    }
  }

  private async deleteGroup(): Promise<void> {
    try {
      await this.slow.requestAsync(deleteGroupRequest(this.group), `group ${this.group}`);
    } catch (e) {
      if (!(isTapnetError(e) && (e.errno === 'ENODEV' || e.code === 'ERR_LINK_NOT_FOUND')))
        throw toTapnetError(e, 'ERR_NETLINK');
    }
  }
}
