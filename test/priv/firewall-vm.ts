/**
 * Playing VMs through TAP fds, for the firewall traffic tests: raw Ethernet/ARP/IPv4/UDP frames, a child
 * process that writes frames into a TAP and reports what comes back, and a UDP echo server script.
 */
import { spawn } from 'node:child_process';

/** aa:bb:… as 6 bytes. */
export const mac = (s: string) => Buffer.from(s.split(':').map((h) => Number.parseInt(h, 16)));
/** A dotted quad as 4 bytes. */
export const ip4 = (s: string) => Buffer.from(s.split('.').map(Number));
export const BROADCAST = 'ff:ff:ff:ff:ff:ff';

/** The Internet checksum (RFC 1071). */
export function checksum(b: Buffer): number {
  let sum = 0;
  for (let i = 0; i < b.length; i += 2) sum += (b[i]! << 8) | (b[i + 1] ?? 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** One UDP datagram to frame: MACs, addresses, ports, text payload. */
export interface Udp {
  src: string;
  dst: string;
  srcIp: string;
  dstIp: string;
  sport: number;
  dport: number;
  payload: string;
}

/** An Ethernet + IPv4 + UDP frame (UDP checksum 0, allowed over IPv4). */
export function udpFrame(u: Udp): Buffer {
  const data = Buffer.from(u.payload);
  const udp = Buffer.alloc(8);
  udp.writeUInt16BE(u.sport, 0);
  udp.writeUInt16BE(u.dport, 2);
  udp.writeUInt16BE(8 + data.length, 4);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + 8 + data.length, 2);
  ip[8] = 64;
  ip[9] = 17;
  ip4(u.srcIp).copy(ip, 12);
  ip4(u.dstIp).copy(ip, 16);
  ip.writeUInt16BE(checksum(ip), 10);
  return Buffer.concat([mac(u.dst), mac(u.src), Buffer.from([0x08, 0x00]), ip, udp, data]);
}

/** An ARP frame (op 1 request, 2 reply). */
export function arpFrame(
  src: string,
  dst: string,
  op: 1 | 2,
  senderMac: string,
  senderIp: string,
  targetIp: string,
): Buffer {
  return Buffer.concat([
    mac(dst),
    mac(src),
    Buffer.from([0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, op]),
    mac(senderMac),
    ip4(senderIp),
    Buffer.alloc(6),
    ip4(targetIp),
  ]);
}

/** What a VM received, decoded. */
export interface Seen {
  udp: Array<{ srcIp: string; dstIp: string; sport: number; dport: number; payload: string }>;
  arp: Array<{ op: number; senderMac: string; senderIp: string; targetIp: string }>;
}

/** Decode received frames into UDP datagrams and ARP packets. */
export function decode(frames: Buffer[]): Seen {
  const seen: Seen = { udp: [], arp: [] };
  const ipText = (b: Buffer) => Array.from(b).join('.');
  for (const f of frames) {
    const type = f.readUInt16BE(12);
    if (type === 0x0806) {
      seen.arp.push({
        op: f.readUInt16BE(20),
        senderMac: Array.from(f.subarray(22, 28), (x) => x.toString(16).padStart(2, '0')).join(':'),
        senderIp: ipText(f.subarray(28, 32)),
        targetIp: ipText(f.subarray(38, 42)),
      });
    } else if (type === 0x0800 && f[23] === 17) {
      const ihl = (f[14]! & 0xf) * 4;
      const u = 14 + ihl;
      seen.udp.push({
        srcIp: ipText(f.subarray(26, 30)),
        dstIp: ipText(f.subarray(30, 34)),
        sport: f.readUInt16BE(u),
        dport: f.readUInt16BE(u + 2),
        payload: f.subarray(u + 8, 14 + f.readUInt16BE(16)).toString(),
      });
    }
  }
  return seen;
}

/**
 * A "VM": a child process holding the TAP fd as fd 3; writes `send`, then prints what arrives for `ms`.
 * It ends with SIGKILL: a plain exit would wait for the thread blocked in read(2) on the TAP.
 */
const VM_SCRIPT = `
const fs = require('fs');
const [ms, ...frames] = process.argv.slice(1);
const buf = Buffer.alloc(65536);
const next = () => fs.read(3, buf, 0, buf.length, null, (err, n) => {
  if (err) process.exit(3);
  fs.writeSync(1, buf.subarray(0, n).toString('hex') + '\\n');
  next();
});
next();
setTimeout(() => { for (const h of frames) fs.writeSync(3, Buffer.from(h, 'hex')); }, 100);
setTimeout(() => process.kill(process.pid, 'SIGKILL'), Number(ms));
`;

export function runVm(fd: number, send: Buffer[], ms = 1000): Promise<Seen> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['-e', VM_SCRIPT, String(ms), ...send.map((f) => f.toString('hex'))],
      {
        stdio: ['ignore', 'pipe', 'inherit', fd],
      },
    );
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (signal !== 'SIGKILL') return reject(new Error(`VM child ended with ${code ?? signal}`));
      const frames = out
        .split('\n')
        .filter((l) => l.length >= 28)
        .map((l) => Buffer.from(l, 'hex'));
      resolve(decode(frames));
    });
  });
}

/** UDP echo in the upstream namespace: prints `{"from": addr}` per datagram and sends it back. */
export const ECHO_SCRIPT = `
const s = require('dgram').createSocket('udp4');
s.on('message', (m, r) => { process.stdout.write(JSON.stringify({ from: r.address, data: m.toString() }) + '\\n'); s.send(m, r.port, r.address); });
s.bind(7777, '198.19.0.2', () => process.stdout.write('ready\\n'));
`;
