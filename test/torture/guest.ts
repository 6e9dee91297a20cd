/**
 * Hostile guests for the security suites: frame builders (ARP, IPv4/UDP, IPv6 ICMPv6 RA/NA, DHCP and
 * DHCPv6 server answers) and a child process that plays a VM on a TAP fd (no virtio-net header): it sends
 * frames and reports every frame it receives.
 */
import { spawn } from 'node:child_process';

const mac = (s: string): Buffer => Buffer.from(s.split(':').map((h) => Number.parseInt(h, 16)));
const ip4 = (s: string): Buffer => Buffer.from(s.split('.').map(Number));

/** IPv6 text (full or with ::) as 16 bytes. */
export function ip6(s: string): Buffer {
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, i) => {
    b.writeUInt16BE(Number.parseInt(g || '0', 16), i * 2);
  });
  return b;
}

function sum16(b: Buffer, acc = 0): number {
  for (let i = 0; i + 1 < b.length; i += 2) acc += b.readUInt16BE(i);
  if (b.length % 2) acc += b[b.length - 1]! << 8;
  return acc;
}
const fold = (s: number): number => {
  let x = s;
  while (x >> 16) x = (x & 0xffff) + (x >> 16);
  return ~x & 0xffff;
};

export function ether(dst: string, src: string, type: number, payload: Buffer): Buffer {
  const h = Buffer.alloc(14);
  mac(dst).copy(h, 0);
  mac(src).copy(h, 6);
  h.writeUInt16BE(type, 12);
  return Buffer.concat([h, payload]);
}

/** ARP (op 1 request, 2 reply) with the given sender hardware/protocol addresses. */
export function arp(
  src: string,
  dst: string,
  op: 1 | 2,
  sha: string,
  spa: string,
  tpa: string,
  tha = '00:00:00:00:00:00',
): Buffer {
  const p = Buffer.concat([Buffer.from([0, 1, 8, 0, 6, 4, 0, op]), mac(sha), ip4(spa), mac(tha), ip4(tpa)]);
  return ether(dst, src, 0x0806, p);
}

/** IPv4/UDP (checksum 0). */
export function udp4(
  src: string,
  dst: string,
  srcIp: string,
  dstIp: string,
  sport: number,
  dport: number,
  data: Buffer,
): Buffer {
  const u = Buffer.alloc(8);
  u.writeUInt16BE(sport, 0);
  u.writeUInt16BE(dport, 2);
  u.writeUInt16BE(8 + data.length, 4);
  const h = Buffer.alloc(20);
  h[0] = 0x45;
  h.writeUInt16BE(28 + data.length, 2);
  h[8] = 64;
  h[9] = 17;
  ip4(srcIp).copy(h, 12);
  ip4(dstIp).copy(h, 16);
  h.writeUInt16BE(fold(sum16(h)), 10);
  return ether(dst, src, 0x0800, Buffer.concat([h, u, data]));
}

/** IPv6 with a payload of next header `nh`; ICMPv6 and UDP checksums are filled in. */
export function ipv6(
  src: string,
  dst: string,
  srcIp: string,
  dstIp: string,
  nh: number,
  payload: Buffer,
  hop = 255,
): Buffer {
  const h = Buffer.alloc(40);
  h.writeUInt32BE(0x60000000, 0);
  h.writeUInt16BE(payload.length, 4);
  h[6] = nh;
  h[7] = hop;
  ip6(srcIp).copy(h, 8);
  ip6(dstIp).copy(h, 24);
  const p = Buffer.from(payload);
  const pseudo = Buffer.concat([
    h.subarray(8, 40),
    Buffer.from([0, 0, (p.length >> 8) & 0xff, p.length & 0xff, 0, 0, 0, nh]),
  ]);
  const at = nh === 58 ? 2 : nh === 17 ? 6 : -1;
  if (at >= 0) {
    p.writeUInt16BE(0, at);
    p.writeUInt16BE(fold(sum16(p, sum16(pseudo))), at);
  }
  return ether(dst, src, 0x86dd, Buffer.concat([h, p]));
}

/** ICMPv6 router advertisement announcing `prefix`/64, from a guest. */
export function routerAdvert(src: string, srcLl: string, prefix: string): Buffer {
  const ra = Buffer.alloc(16);
  ra[0] = 134;
  ra[4] = 64; // hop limit
  ra.writeUInt16BE(1800, 6); // router lifetime
  const pio = Buffer.alloc(32);
  pio[0] = 3;
  pio[1] = 4;
  pio[2] = 64;
  pio[3] = 0xc0;
  pio.writeUInt32BE(86400, 4);
  pio.writeUInt32BE(14400, 8);
  ip6(prefix).copy(pio, 16);
  const sll = Buffer.concat([Buffer.from([1, 1]), mac(src)]);
  return ipv6(src, '33:33:00:00:00:01', srcLl, 'ff02::1', 58, Buffer.concat([ra, pio, sll]));
}

/** Unsolicited ICMPv6 neighbour advertisement: `target` is at `lladdr` (override set). */
export function neighbourAdvert(src: string, srcIp: string, target: string, lladdr: string): Buffer {
  const na = Buffer.alloc(24);
  na[0] = 136;
  na[4] = 0x20; // override
  ip6(target).copy(na, 8);
  const tll = Buffer.concat([Buffer.from([2, 1]), mac(lladdr)]);
  return ipv6(src, '33:33:00:00:00:01', srcIp, 'ff02::1', 58, Buffer.concat([na, tll]));
}

/** A DHCPv4 server's OFFER-like answer (UDP 67 → 68, broadcast). */
export function dhcpOffer(src: string, srcIp: string): Buffer {
  const bootp = Buffer.alloc(240);
  bootp[0] = 2; // BOOTREPLY
  bootp.writeUInt32BE(0x63825363, 236);
  return udp4(src, 'ff:ff:ff:ff:ff:ff', srcIp, '255.255.255.255', 67, 68, bootp);
}

/** A DHCPv6 server's ADVERTISE-like answer (UDP 547 → 546). */
export function dhcp6Advertise(src: string, srcLl: string): Buffer {
  const body = Buffer.from([2, 0, 0, 1]);
  const u = Buffer.alloc(8);
  u.writeUInt16BE(547, 0);
  u.writeUInt16BE(546, 2);
  u.writeUInt16BE(8 + body.length, 4);
  return ipv6(src, '33:33:00:01:00:02', srcLl, 'ff02::1:2', 17, Buffer.concat([u, body]), 64);
}

const GUEST = `
const fs = require('fs');
const [ms, ...frames] = process.argv.slice(1);
const buf = Buffer.alloc(65536);
const next = () => fs.read(3, buf, 0, buf.length, null, (err, n) => {
  if (err) process.exit(3);
  fs.writeSync(1, buf.subarray(0, n).toString('hex') + '\\n');
  next();
});
next();
setTimeout(() => { for (const h of frames) fs.writeSync(3, Buffer.from(h, 'hex')); }, 150);
setTimeout(() => process.kill(process.pid, 'SIGKILL'), Number(ms));
`;

/** Play a guest on `fd` (a TAP without vnet header) for `ms`: send `frames`, return what arrived. */
export function playGuest(fd: number, frames: Buffer[], ms = 800): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['-e', GUEST, String(ms), ...frames.map((f) => f.toString('hex'))],
      {
        stdio: ['ignore', 'pipe', 'inherit', fd],
      },
    );
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', () =>
      resolve(
        out
          .split('\n')
          .filter((l) => l.length >= 28)
          .map((l) => Buffer.from(l, 'hex')),
      ),
    );
  });
}
