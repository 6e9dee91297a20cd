/**
 * Deterministic names tapnet gives things: TAP names, guest MACs, link groups. Deterministic so that a
 * retry after a crash lands on the same names, and reconcile can recognise what is tapnet's.
 */
import { createHash } from 'node:crypto';
import { derivedMac } from './config.js';

/** Hex characters of the VM-id hash in a TAP name. 40 bits: collisions are refused, never silent. */
const TAP_HASH_LEN = 10;

/** `<prefix><10 hex of sha256(network/vmId)>`, at most 15 bytes. */
export function tapName(prefix: string, network: string, vmId: string): string {
  const h = createHash('sha256').update(`${network}/${vmId}`).digest('hex');
  return `${prefix}${h.slice(0, TAP_HASH_LEN)}`;
}

/** True when `name` has the shape of a TAP tapnet made with `prefix`. */
export function isTapnetTapName(prefix: string, name: string): boolean {
  return (
    name.length === prefix.length + TAP_HASH_LEN &&
    name.startsWith(prefix) &&
    /^[0-9a-f]+$/.test(name.slice(prefix.length))
  );
}

/** The guest MAC of a VM: locally administered, unicast, stable for (network, vmId). */
export function guestMac(network: string, vmId: string): string {
  return derivedMac(`tapnet-vm:${network}/${vmId}`);
}

/** IFLA_IFALIAS tapnet puts on its TAPs: who owns it, readable with `ip -d link`. */
export function tapAlias(vmId: string): string {
  return `tapnet:${vmId}`;
}

/** Link group used for batched deletions (`ip link del group N`): one per manager process. */
export function scratchGroup(pid = process.pid): number {
  return 0x74000000 + (pid & 0xffffff);
}
