/**
 * Minimal frame builders and parsers for tests that play a VM through a TAP fd: Ethernet, ARP, IPv4, UDP.
 */
const mac = (s: string): Buffer => Buffer.from(s.split(':').map((h) => Number.parseInt(h, 16)));
const ip4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));

export function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i + 1 < b.length; i += 2) sum += b.readUInt16BE(i);
  if (b.length % 2) sum += b[b.length - 1]! << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return ~sum & 0xffff;
}

export function ethernet(dst: string, src: string, ethertype: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  mac(dst).copy(h, 0);
  mac(src).copy(h, 6);
  h.writeUInt16BE(ethertype, 12);
  return Buffer.concat([h, payload]);
}

export function arpRequest(senderMac: string, senderIp: string, targetIp: string): Buffer {
  const p = Buffer.concat([
    Buffer.from([0, 1, 8, 0, 6, 4, 0, 1]),
    mac(senderMac),
    ip4(senderIp),
    Buffer.alloc(6),
    ip4(targetIp),
  ]);
  return ethernet('ff:ff:ff:ff:ff:ff', senderMac, 0x0806, p);
}

export function ipv4Udp(src: string, dst: string, sport: number, dport: number, data: Buffer): Buffer {
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(sport, 0);
  udp.writeUInt16BE(dport, 2);
  udp.writeUInt16BE(8 + data.length, 4);
  udp.writeUInt16BE(0, 6); // checksum optional over IPv4
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(20 + 8 + data.length, 2);
  h.writeUInt16BE(0x4000, 6); // DF
  h[8] = 64;
  h[9] = 17;
  ip4(src).copy(h, 12);
  ip4(dst).copy(h, 16);
  h.writeUInt16BE(checksum(h), 10);
  return Buffer.concat([h, udp, data]);
}

export interface ParsedUdp {
  srcMac: string;
  dstMac: string;
  src: string;
  dst: string;
  sport: number;
  dport: number;
  data: Buffer;
}

const fmtMac = (b: Buffer): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');

/** Parse an Ethernet/IPv4/UDP frame, or undefined. */
export function parseUdp(f: Buffer): ParsedUdp | undefined {
  if (f.length < 42 || f.readUInt16BE(12) !== 0x0800 || f[23] !== 17) return undefined;
  const ihl = (f[14]! & 0xf) * 4;
  const u = 14 + ihl;
  return {
    dstMac: fmtMac(f.subarray(0, 6)),
    srcMac: fmtMac(f.subarray(6, 12)),
    src: Array.from(f.subarray(26, 30)).join('.'),
    dst: Array.from(f.subarray(30, 34)).join('.'),
    sport: f.readUInt16BE(u),
    dport: f.readUInt16BE(u + 2),
    data: f.subarray(u + 8, u + f.readUInt16BE(u + 4)),
  };
}
