/**
 * The per-VM hot path of the nftables driver, straight over nfnetlink: one transaction of
 * NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM for a port's elements (`vm_mac`, `vm_ip4`, `vm_ip6`, `vm_counter`).
 * libnftables re-reads every table, chain and set definition on each call (≈ 0.2 ms); the kernel needs
 * none of that to add a set element (≈ 0.03 ms). Same elements, same sets, same atomicity (one batch);
 * the driver falls back to libnftables (which also repairs a flushed ruleset) when this fails.
 * Element keys are encoded as nft does: concatenated fields each padded to 4 bytes; an interface name is
 * 16 bytes (IFNAMSIZ), an Ethernet address 6 (+2 padding), IPv4 4 and IPv6 16 bytes, network order.
 */
import { TapnetError } from '../errors.js';
import { ipToBytes, parseIp, parseMac } from '../ip.js';
import { NlWriter } from '../netlink/attr.js';
import { beginMessage, finishMessage } from '../netlink/message.js';
import { NetlinkSocket } from '../netlink/socket.js';
import type { PortElements } from './batches.js';
import { objectName, TABLE, VM_COUNTER_MAP, VM_IP4_SET, VM_IP6_SET, VM_MAC_SET } from './model.js';

const NETLINK_NETFILTER = 12;
const NFNL_SUBSYS_NFTABLES = 10;
const NFNL_MSG_BATCH_BEGIN = 0x10;
const NFNL_MSG_BATCH_END = 0x11;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
const NLM_F_CREATE = 0x400;
const NFPROTO_INET = 1;
const NFPROTO_BRIDGE = 7;
const NFTA_SET_ELEM_LIST_TABLE = 1;
const NFTA_SET_ELEM_LIST_SET = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
const NFTA_LIST_ELEM = 1;
const NFTA_SET_ELEM_KEY = 1;
const NFTA_SET_ELEM_OBJREF = 9;
const NFTA_DATA_VALUE = 1;
const IFNAMSIZ = 16;

/** One element: its key bytes and, for object maps, the referenced object's name. */
interface Elem {
  key: Buffer;
  objref?: string;
}

function ifnameKey(ifname: string): Buffer {
  const b = Buffer.alloc(IFNAMSIZ);
  b.write(ifname, 0, IFNAMSIZ - 1, 'utf8');
  return b;
}

function pad4(b: Buffer): Buffer {
  const n = (b.length + 3) & ~3;
  return n === b.length ? b : Buffer.concat([b, Buffer.alloc(n - b.length)]);
}

/** Keys of one port's elements, per set. */
export function portElementKeys(p: PortElements): Map<string, Elem[]> {
  const out = new Map<string, Elem[]>();
  const name = ifnameKey(p.ifname);
  const add = (set: string, e: Elem) => out.set(set, [...(out.get(set) ?? []), e]);
  for (const mac of p.macs) add(VM_MAC_SET, { key: Buffer.concat([name, pad4(parseMac(mac))]) });
  for (const a of p.ipv4) {
    const ip = parseIp(a);
    add(VM_IP4_SET, { key: Buffer.concat([name, ipToBytes(4, ip.value)]) });
  }
  for (const a of p.ipv6) {
    const ip = parseIp(a);
    add(VM_IP6_SET, { key: Buffer.concat([name, ipToBytes(6, ip.value)]) });
  }
  if (p.network !== undefined) add(VM_COUNTER_MAP, { key: name, objref: objectName('spoof', p.network) });
  return out;
}

function nfgenmsg(w: NlWriter, family: number, resId: number): void {
  w.u8(family).u8(0).u16be(resId);
}

function control(type: number): Buffer {
  const w = new NlWriter(32);
  const at = beginMessage(w, type, 0);
  nfgenmsg(w, 0, NFNL_SUBSYS_NFTABLES);
  finishMessage(w, at);
  return w.toBuffer();
}

function setElemMessage(verb: 'add' | 'delete', family: number, set: string, elems: Elem[]): Buffer {
  const type = (NFNL_SUBSYS_NFTABLES << 8) | (verb === 'add' ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM);
  const w = new NlWriter(256);
  const at = beginMessage(w, type, verb === 'add' ? NLM_F_CREATE : 0);
  nfgenmsg(w, family, 0);
  w.attrStr(NFTA_SET_ELEM_LIST_TABLE, TABLE);
  w.attrStr(NFTA_SET_ELEM_LIST_SET, set);
  w.nest(NFTA_SET_ELEM_LIST_ELEMENTS, () => {
    for (const e of elems) {
      w.nest(NFTA_LIST_ELEM, () => {
        w.nest(NFTA_SET_ELEM_KEY, () => w.attr(NFTA_DATA_VALUE, e.key));
        // A map element is deleted by its key alone.
        if (e.objref !== undefined && verb === 'add') w.attrStr(NFTA_SET_ELEM_OBJREF, e.objref);
      });
    }
  });
  finishMessage(w, at);
  return w.toBuffer();
}

/** Most ports in one fast transaction: bigger batches go through libnftables (their ACKs would not fit). */
export const FAST_PATH_MAX_PORTS = 32;

/** Writes per-VM elements with one nfnetlink transaction per call. */
export class NftElementWriter {
  private nl: NetlinkSocket;

  private constructor(private readonly nsFd: number | undefined) {
    this.nl = this.openSocket();
  }

  private openSocket(): NetlinkSocket {
    return NetlinkSocket.open({
      protocol: NETLINK_NETFILTER,
      ...(this.nsFd !== undefined ? { nsFd: this.nsFd } : {}),
    });
  }

  /** A NETLINK_NETFILTER socket in the namespace behind `nsFd` (the current one if absent). */
  static open(nsFd?: number): NftElementWriter {
    return new NftElementWriter(nsFd);
  }

  /**
   * Add (`add`) or remove (`remove`: add-then-delete, so missing elements are fine) the ports' elements in
   * one atomic transaction. Throws the kernel's error (e.g. ENOENT when a table or set is missing).
   */
  apply(verb: 'add' | 'remove', ports: readonly PortElements[]): void {
    if (ports.length > FAST_PATH_MAX_PORTS) {
      throw new TapnetError(
        'ERR_INTERNAL',
        `more than ${FAST_PATH_MAX_PORTS} ports: use the libnftables path`,
      );
    }
    try {
      this.transact(verb, ports);
    } catch (e) {
      // Never reuse a socket that may hold unread answers of a failed transaction.
      this.nl.close();
      this.nl = this.openSocket();
      throw e;
    }
  }

  private transact(verb: 'add' | 'remove', ports: readonly PortElements[]): void {
    const msgs: { msg: Buffer; ack: boolean }[] = [{ msg: control(NFNL_MSG_BATCH_BEGIN), ack: false }];
    const verbs: ('add' | 'delete')[] = verb === 'add' ? ['add'] : ['add', 'delete'];
    for (const v of verbs) {
      for (const p of ports) {
        const family = p.family === 'bridge' ? NFPROTO_BRIDGE : NFPROTO_INET;
        for (const [set, elems] of portElementKeys(p))
          msgs.push({ msg: setElemMessage(v, family, set, elems), ack: true });
      }
    }
    msgs.push({ msg: control(NFNL_MSG_BATCH_END), ack: false });
    const failures = this.nl.transaction(msgs, `nft ${verb} elements`).filter((e) => e !== undefined);
    if (failures.length) {
      const f = failures[0]!;
      throw new TapnetError(
        'ERR_FIREWALL',
        `nftables rejected the elements of ${ports.map((p) => p.ifname).join(', ')}: ${f.errno}`,
        {
          cause: f,
          ...(f.errno ? { errno: f.errno } : {}),
        },
      );
    }
  }

  close(): void {
    this.nl.close();
  }
}
