/**
 * Bridge port flags (`bridge link set dev X neigh_suppress on learning off`): RTM_SETLINK with
 * ifi_family AF_BRIDGE and the flags in IFLA_PROTINFO, handled by the port's bridge. Read back from the
 * AF_BRIDGE link dump (`bridge -d link show`).
 */
import { TapnetError } from '../errors.js';
import { AttrMap, NlWriter } from '../netlink/attr.js';
import {
  AF_BRIDGE,
  IFLA_BRPORT_ISOLATED,
  IFLA_BRPORT_LEARNING,
  IFLA_BRPORT_NEIGH_SUPPRESS,
  RTM_GETLINK,
  RTM_NEWLINK,
  RTM_SETLINK,
} from '../netlink/constants.js';
import { beginMessage, finishMessage } from '../netlink/message.js';
import type { NetlinkSocket } from '../netlink/socket.js';
import { validateInt } from '../validate.js';

/** IFLA_PROTINFO: the bridge port attributes of an AF_BRIDGE link message. */
export const IFLA_PROTINFO = 12;
const IFINFOMSG_LEN = 16;

/** Flags of a bridge port; undefined leaves a flag as it is. */
export interface BridgePortFlags {
  /** Answer ARP/ND from the bridge's neighbour table instead of flooding to this port (VXLAN ports). */
  neighSuppress?: boolean;
  /** Learn source MACs arriving on this port. */
  learning?: boolean;
  /** Isolated ports cannot talk to each other, only to non-isolated ones. */
  isolated?: boolean;
}

/** Encode the RTM_SETLINK that sets `flags` on bridge port `ifindex`. Pure. */
export function encodeBridgePortRequest(ifindex: number, flags: BridgePortFlags): Buffer {
  validateInt(ifindex, 'ifindex', 1, 0x7fffffff);
  const w = new NlWriter(64);
  const at = beginMessage(w, RTM_SETLINK, 0);
  w.u8(AF_BRIDGE).u8(0).u16(0).i32(ifindex).u32(0).u32(0);
  w.nest(IFLA_PROTINFO, () => {
    if (flags.learning !== undefined) w.attrU8(IFLA_BRPORT_LEARNING, flags.learning ? 1 : 0);
    if (flags.neighSuppress !== undefined) w.attrU8(IFLA_BRPORT_NEIGH_SUPPRESS, flags.neighSuppress ? 1 : 0);
    if (flags.isolated !== undefined) w.attrU8(IFLA_BRPORT_ISOLATED, flags.isolated ? 1 : 0);
  });
  finishMessage(w, at);
  return w.toBuffer();
}

/** `bridge link set dev IFINDEX [neigh_suppress on|off] [learning on|off] [isolated on|off]`. */
export function setBridgePort(nl: NetlinkSocket, ifindex: number, flags: BridgePortFlags): void {
  if (flags.learning === undefined && flags.neighSuppress === undefined && flags.isolated === undefined)
    return;
  nl.request(encodeBridgePortRequest(ifindex, flags), `bridge port ifindex ${ifindex}`);
}

/** The flags of bridge port `ifindex` (`bridge -d link show dev X`). ERR_LINK_NOT_FOUND if it is not a port. */
export function getBridgePort(nl: NetlinkSocket, ifindex: number): Required<BridgePortFlags> {
  const w = new NlWriter(32);
  const at = beginMessage(w, RTM_GETLINK, 0);
  w.u8(AF_BRIDGE).u8(0).u16(0).i32(0).u32(0).u32(0);
  finishMessage(w, at);
  for (const m of nl.dump(w.toBuffer(), 'bridge port dump')) {
    if (m.type !== RTM_NEWLINK || m.payload.length < IFINFOMSG_LEN || m.payload.readInt32LE(4) !== ifindex)
      continue;
    const info = AttrMap.parse(m.payload, IFINFOMSG_LEN).nested(IFLA_PROTINFO);
    if (!info) break;
    return {
      neighSuppress: info.u8(IFLA_BRPORT_NEIGH_SUPPRESS) === 1,
      learning: info.u8(IFLA_BRPORT_LEARNING) === 1,
      isolated: info.u8(IFLA_BRPORT_ISOLATED) === 1,
    };
  }
  throw new TapnetError('ERR_LINK_NOT_FOUND', `ifindex ${ifindex} is not a bridge port`, {
    details: { link: ifindex },
  });
}
