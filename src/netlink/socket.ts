/**
 * A NETLINK_ROUTE socket bound to one network namespace: requests with ACK, dumps, and batches of
 * requests in one datagram. Synchronous (the kernel answers rtnetlink requests in microseconds), with a
 * receive timeout so a missing answer is an error, never a hang. Sequence numbers are checked: stale
 * answers to earlier requests are dropped.
 */
import { TapnetError } from '../errors.js';
import {
  AF_NETLINK,
  bind,
  close,
  getsockname,
  NETLINK_CAP_ACK,
  NETLINK_EXT_ACK,
  recv,
  recvAsync,
  SO_RCVBUF,
  SO_RCVTIMEO,
  SO_SNDBUF,
  SOCK_CLOEXEC,
  SOCK_RAW,
  SOL_NETLINK,
  SOL_SOCKET,
  send,
  sendAsync,
  setsockoptBuf,
  setsockoptInt,
  socket,
} from '../sys/libc.js';
import { withNetns } from '../sys/ns.js';
import {
  NETLINK_ROUTE,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
} from './constants.js';
import { type NlMessage, netlinkError, parseErrorPayload, parseMessages, setSeq } from './message.js';

export interface NetlinkSocketOptions {
  /** Open the socket inside this network namespace (an open fd); the current one if absent. */
  nsFd?: number;
  /** Netlink protocol: NETLINK_ROUTE (default) or e.g. NETLINK_NETFILTER (12). */
  protocol?: number;
  /** Give up waiting for the kernel after this long. Default 30 s. */
  timeoutMs?: number;
}

const RECV_BUF = 1 << 18;
/** Largest datagram we build for a batch; the kernel handles each message in it in order. */
const MAX_BATCH_BYTES = 1 << 16;
const DUMP_RETRIES = 5;

/** One rtnetlink socket. Close it explicitly; it holds an fd. */
export class NetlinkSocket {
  readonly fd: number;
  /** The port id the kernel assigned us. */
  readonly portId: number;
  private seq: number;
  private readonly rbuf = Buffer.allocUnsafe(RECV_BUF);
  private closed = false;

  private constructor(fd: number, portId: number) {
    this.fd = fd;
    this.portId = portId;
    this.seq = (Date.now() & 0x7fffffff) >>> 0;
  }

  /** Open a socket, inside `nsFd`'s namespace when given (the socket stays bound there). */
  static open(opts: NetlinkSocketOptions = {}): NetlinkSocket {
    const fd = withNetns(opts.nsFd, () =>
      socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, opts.protocol ?? NETLINK_ROUTE),
    );
    try {
      setsockoptInt(fd, SOL_SOCKET, SO_SNDBUF, 1 << 20);
      setsockoptInt(fd, SOL_SOCKET, SO_RCVBUF, 1 << 20);
      setsockoptInt(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
      setsockoptInt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
      const ms = opts.timeoutMs ?? 30_000;
      const tv = Buffer.alloc(16);
      tv.writeBigInt64LE(BigInt(Math.floor(ms / 1000)), 0);
      tv.writeBigInt64LE(BigInt((ms % 1000) * 1000), 8);
      setsockoptBuf(fd, SOL_SOCKET, SO_RCVTIMEO, tv);
      const sa = Buffer.alloc(12);
      sa.writeUInt16LE(AF_NETLINK, 0);
      bind(fd, sa);
      const local = getsockname(fd, 12);
      return new NetlinkSocket(fd, local.readUInt32LE(4));
    } catch (e) {
      close(fd);
      throw e;
    }
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) >>> 0 || 1;
    return this.seq;
  }

  private sendRaw(buf: Buffer): void {
    if (this.closed) throw new TapnetError('ERR_INTERNAL', 'netlink socket used after close');
    const n = send(this.fd, buf);
    if (n !== buf.length)
      throw new TapnetError('ERR_NETLINK', `short netlink send: ${n} of ${buf.length} bytes`);
  }

  private recvMessages(): NlMessage[] {
    let n: number;
    try {
      n = recv(this.fd, this.rbuf);
    } catch (e) {
      if (e instanceof TapnetError && e.errno === 'EAGAIN') {
        throw new TapnetError('ERR_TIMEOUT', 'the kernel did not answer a netlink request in time', {
          cause: e,
        });
      }
      throw e;
    }
    // Copy the datagram: callers keep messages across further receives into the shared buffer.
    return parseMessages(Buffer.from(this.rbuf.subarray(0, n)));
  }

  /**
   * Send one request and wait for its ACK. `msg` is a complete message (see beginMessage); its seq and
   * NLM_F_REQUEST|NLM_F_ACK are set here. Returns the messages the kernel sent before the ACK (NLM_F_ECHO).
   * Throws the kernel's error as a TapnetError with errno and extack.
   */
  request(msg: Buffer, what?: string): NlMessage[] {
    const seq = this.nextSeq();
    setSeq(msg, seq);
    msg.writeUInt16LE(msg.readUInt16LE(6) | NLM_F_REQUEST | NLM_F_ACK, 6);
    this.sendRaw(msg);
    const replies: NlMessage[] = [];
    for (;;) {
      for (const m of this.recvMessages()) {
        if (m.seq !== seq) continue;
        if (m.type === NLMSG_ERROR) {
          const e = parseErrorPayload(m);
          if (e.errno !== 0) throw netlinkError(e, what);
          return replies;
        }
        replies.push(m);
      }
    }
  }

  /**
   * Like request(), but the send and the wait happen on a worker thread, so the event loop keeps running
   * while the kernel works (a link deletion waits ~16 ms for an RCU grace period). Async requests on one
   * socket run one at a time; do not mix them with synchronous calls on the same socket.
   */
  requestAsync(msg: Buffer, what?: string): Promise<NlMessage[]> {
    const run = async (): Promise<NlMessage[]> => {
      const seq = this.nextSeq();
      setSeq(msg, seq);
      msg.writeUInt16LE(msg.readUInt16LE(6) | NLM_F_REQUEST | NLM_F_ACK, 6);
      if (this.closed) throw new TapnetError('ERR_INTERNAL', 'netlink socket used after close');
      await sendAsync(this.fd, msg);
      const buf = Buffer.allocUnsafe(1 << 16);
      const replies: NlMessage[] = [];
      for (;;) {
        const n = await recvAsync(this.fd, buf).catch((e: unknown) => {
          throw new TapnetError('ERR_TIMEOUT', 'the kernel did not answer a netlink request in time', {
            cause: e,
          });
        });
        for (const m of parseMessages(Buffer.from(buf.subarray(0, n)))) {
          if (m.seq !== seq) continue;
          if (m.type === NLMSG_ERROR) {
            const e = parseErrorPayload(m);
            if (e.errno !== 0) throw netlinkError(e, what);
            return replies;
          }
          replies.push(m);
        }
      }
    };
    const next = this.asyncTail.then(run, run);
    this.asyncTail = next.catch(() => undefined);
    return next;
  }

  private asyncTail: Promise<unknown> = Promise.resolve();

  /**
   * Send many requests in as few datagrams as possible and collect every ACK. Returns one entry per
   * request: undefined for success, the TapnetError otherwise. Requests are applied in order; a failing one
   * does not stop the others.
   */
  batch(msgs: Buffer[], what?: (i: number) => string): (TapnetError | undefined)[] {
    const results: (TapnetError | undefined)[] = new Array(msgs.length).fill(undefined);
    let i = 0;
    while (i < msgs.length) {
      const bySeq = new Map<number, number>();
      const parts: Buffer[] = [];
      let size = 0;
      while (i < msgs.length && (parts.length === 0 || size + msgs[i]!.length <= MAX_BATCH_BYTES)) {
        const m = msgs[i]!;
        const seq = this.nextSeq();
        setSeq(m, seq);
        m.writeUInt16LE(m.readUInt16LE(6) | NLM_F_REQUEST | NLM_F_ACK, 6);
        bySeq.set(seq, i);
        parts.push(m);
        size += m.length;
        i++;
      }
      this.sendRaw(parts.length === 1 ? parts[0]! : Buffer.concat(parts, size));
      let pending = bySeq.size;
      while (pending > 0) {
        for (const m of this.recvMessages()) {
          if (m.type !== NLMSG_ERROR) continue;
          const idx = bySeq.get(m.seq);
          if (idx === undefined) continue;
          bySeq.delete(m.seq);
          pending--;
          const e = parseErrorPayload(m);
          if (e.errno !== 0) results[idx] = netlinkError(e, what?.(idx));
        }
      }
    }
    return results;
  }

  /**
   * Send messages as ONE datagram (e.g. an nfnetlink transaction: BATCH_BEGIN, requests, BATCH_END) and
   * collect the ACKs of those marked `ack`. Returns one entry per message: undefined for success (or not
   * acknowledged), the kernel's error otherwise.
   */
  transaction(msgs: { msg: Buffer; ack: boolean }[], what?: string): (TapnetError | undefined)[] {
    const results: (TapnetError | undefined)[] = new Array(msgs.length).fill(undefined);
    const bySeq = new Map<number, number>();
    msgs.forEach(({ msg, ack }, i) => {
      const seq = this.nextSeq();
      setSeq(msg, seq);
      msg.writeUInt16LE(msg.readUInt16LE(6) | NLM_F_REQUEST | (ack ? NLM_F_ACK : 0), 6);
      if (ack) bySeq.set(seq, i);
    });
    this.sendRaw(Buffer.concat(msgs.map((m) => m.msg)));
    while (bySeq.size > 0) {
      for (const m of this.recvMessages()) {
        if (m.type !== NLMSG_ERROR) continue;
        const idx = bySeq.get(m.seq);
        if (idx === undefined) continue;
        bySeq.delete(m.seq);
        const e = parseErrorPayload(m);
        if (e.errno !== 0) results[idx] = netlinkError(e, what);
      }
    }
    return results;
  }

  /**
   * A dump request: returns every message of the multi-part answer. `msg`'s seq and NLM_F_DUMP are set
   * here. Retried when the kernel reports the dump was interrupted by a concurrent change.
   */
  dump(msg: Buffer, what?: string): NlMessage[] {
    for (let attempt = 0; ; attempt++) {
      const seq = this.nextSeq();
      setSeq(msg, seq);
      msg.writeUInt16LE(msg.readUInt16LE(6) | NLM_F_REQUEST | NLM_F_DUMP, 6);
      this.sendRaw(msg);
      const out: NlMessage[] = [];
      let interrupted = false;
      let done = false;
      while (!done) {
        for (const m of this.recvMessages()) {
          if (m.seq !== seq) continue;
          if (m.flags & NLM_F_DUMP_INTR) interrupted = true;
          if (m.type === NLMSG_DONE) {
            if (m.payload.length >= 4) {
              const err = m.payload.readInt32LE(0);
              if (err < 0) {
                throw netlinkError({ errno: -err, requestType: msg.readUInt16LE(4), requestSeq: seq }, what);
              }
            }
            done = true;
            break;
          }
          if (m.type === NLMSG_ERROR) {
            const e = parseErrorPayload(m);
            if (e.errno !== 0) throw netlinkError(e, what);
            done = true;
            break;
          }
          out.push(m);
        }
      }
      if (!interrupted || attempt >= DUMP_RETRIES) return out;
    }
  }

  /** Close the fd. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    close(this.fd);
  }
}
