/**
 * A VM stand-in for the cluster tests: a child process holding a TAP fd (no virtio header) that answers
 * ARP for its address and echoes UDP port 7, and on request resolves another address with ARP and sends
 * it a UDP datagram, reporting which MAC answered the ARP and whether the echo came back.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

const SCRIPT = String.raw`
const fs = require('fs');
const [myMac, myIp] = process.argv.slice(1);
const macB = (s) => Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
const ipB = (s) => Buffer.from(s.split('.').map(Number));
const ipT = (b) => Array.from(b).join('.');
const macT = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
const csum = (b) => { let s = 0; for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (b[i + 1] || 0); while (s > 0xffff) s = (s & 0xffff) + (s >>> 16); return ~s & 0xffff; };
const eth = (dst, type, p) => Buffer.concat([macB(dst), macB(myMac), Buffer.from([type >> 8, type & 255]), p]);
const arp = (op, dstMac, tMac, tIp) => eth(dstMac, 0x0806, Buffer.concat([Buffer.from([0, 1, 8, 0, 6, 4, 0, op]), macB(myMac), ipB(myIp), macB(tMac), ipB(tIp)]));
const udp = (dstMac, dstIp, sport, dport, data) => {
  const u = Buffer.alloc(8); u.writeUInt16BE(sport, 0); u.writeUInt16BE(dport, 2); u.writeUInt16BE(8 + data.length, 4);
  const h = Buffer.alloc(20); h[0] = 0x45; h.writeUInt16BE(28 + data.length, 2); h[8] = 64; h[9] = 17; ipB(myIp).copy(h, 12); ipB(dstIp).copy(h, 16); h.writeUInt16BE(csum(h), 10);
  return eth(dstMac, 0x0800, Buffer.concat([h, u, data]));
};
let arpRequests = 0;
const waiters = new Set();
const send = (f) => fs.writeSync(3, f);
const onFrame = (f) => {
  const type = f.readUInt16BE(12);
  if (type === 0x0806) {
    const op = f.readUInt16BE(20), sMac = macT(f.subarray(22, 28)), sIp = ipT(f.subarray(28, 32)), tIp = ipT(f.subarray(38, 42));
    if (op === 1) { arpRequests++; if (tIp === myIp) send(arp(2, sMac, sMac, sIp)); }
    if (op === 2) for (const w of waiters) if (w.arp === sIp) w.done(sMac);
  } else if (type === 0x0800 && f[23] === 17) {
    const u = 14 + (f[14] & 15) * 4, src = ipT(f.subarray(26, 30)), dst = ipT(f.subarray(30, 34));
    const sport = f.readUInt16BE(u), dport = f.readUInt16BE(u + 2), data = f.subarray(u + 8, 14 + f.readUInt16BE(16));
    if (dst !== myIp) return;
    if (dport === 7) send(udp(macT(f.subarray(6, 12)), src, 7, sport, data));
    else for (const w of waiters) if (w.token === data.toString()) w.done(true);
  }
};
const buf = Buffer.alloc(65536);
const next = () => fs.read(3, buf, 0, buf.length, null, (err, n) => { if (err) return; try { onFrame(Buffer.from(buf.subarray(0, n))); } catch {} next(); });
next();
const wait = (w, ms) => new Promise((resolve) => { const t = setTimeout(() => { waiters.delete(w); resolve(null); }, ms); w.done = (v) => { clearTimeout(t); waiters.delete(w); resolve(v); }; waiters.add(w); });
require('readline').createInterface({ input: process.stdin }).on('line', async (line) => {
  const c = JSON.parse(line);
  if (c.op === 'stats') return process.stdout.write(JSON.stringify({ id: c.id, arpRequests }) + '\n');
  const t0 = Date.now();
  let mac = null;
  for (let i = 0; i < 3 && !mac; i++) { const p = wait({ arp: c.dst }, c.timeoutMs / 3); send(arp(1, 'ff:ff:ff:ff:ff:ff', '00:00:00:00:00:00', c.dst)); mac = await p; }
  let echo = false;
  for (let i = 0; i < 3 && mac && !echo; i++) { const token = 'probe-' + c.id + '-' + i; const p = wait({ token }, c.timeoutMs / 3); send(udp(mac, c.dst, 40000 + (c.id % 20000), 7, Buffer.from(token))); echo = (await p) === true; }
  process.stdout.write(JSON.stringify({ id: c.id, arp: mac, echo, ms: Date.now() - t0 }) + '\n');
});
`;

/** What a probe found. */
export interface ProbeResult {
  /** The MAC that answered the ARP request, or null. */
  arp: string | null;
  /** Whether the UDP echo came back. */
  echo: boolean;
  ms: number;
}

/** A running stand-in. */
export interface StandIn {
  mac: string;
  ip: string;
  probe(dst: string, timeoutMs?: number): Promise<ProbeResult>;
  /** ARP requests this VM received so far (any target). */
  arpRequests(): Promise<number>;
  kill(): void;
}

/** Start a stand-in on TAP fd `fd` (the child gets it as fd 3; the caller may close its own copy). */
export function startStandIn(fd: number, mac: string, ip: string): StandIn {
  const child = spawn(process.execPath, ['-e', SCRIPT, mac, ip], { stdio: ['pipe', 'pipe', 'inherit', fd] });
  const pending = new Map<number, (v: Record<string, unknown>) => void>();
  let n = 1;
  createInterface({ input: child.stdout! }).on('line', (line) => {
    const v = JSON.parse(line) as Record<string, unknown>;
    pending.get(v.id as number)?.(v);
    pending.delete(v.id as number);
  });
  const ask = (c: Record<string, unknown>): Promise<Record<string, unknown>> =>
    new Promise((resolve) => {
      const id = n++;
      pending.set(id, resolve);
      child.stdin!.write(`${JSON.stringify({ ...c, id })}\n`);
    });
  return {
    mac,
    ip,
    probe: async (dst, timeoutMs = 1500) =>
      (await ask({ op: 'probe', dst, timeoutMs })) as unknown as ProbeResult,
    arpRequests: async () => (await ask({ op: 'stats' })).arpRequests as number,
    kill: () => void child.kill('SIGKILL'),
  };
}
