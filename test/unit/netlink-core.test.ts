import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isTapnetError, TapnetError } from '../../src/errors.js';
import { decodeAddress, encodeAddressRequest } from '../../src/netlink/addr.js';
import { AttrMap, NlWriter, parseAttrs } from '../../src/netlink/attr.js';
import {
  IFLA_ADDRESS,
  IFLA_IFNAME,
  IFLA_INFO_KIND,
  IFLA_LINKINFO,
  IFLA_MASTER,
  IFLA_MTU,
  IFLA_STATS64,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLMSG_ERROR,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWROUTE,
} from '../../src/netlink/constants.js';
import { decodeLink, encodeLinkRequest } from '../../src/netlink/link.js';
import { encodeMessage, netlinkError, parseErrorPayload, parseMessages } from '../../src/netlink/message.js';
import { decodeRoute, encodeRouteRequest } from '../../src/netlink/route.js';
import { encodeStats64 } from '../../src/netlink/stats.js';

const hex = (b: Buffer) => b.toString('hex');

describe('netlink attributes', () => {
  it('encodes aligned attributes with golden bytes', () => {
    const w = new NlWriter(8);
    w.attrU32(IFLA_MTU, 1500).attrStr(IFLA_IFNAME, 'br0').attrU8(99, 1);
    // len=8 type=4 1500 | len=8 type=3 "br0\0" | len=5 type=99 01 + 3 pad
    assert.equal(hex(w.toBuffer()), '08000400dc050000' + '0800030062723000' + '0500630001000000');
  });

  it('nests with NLA_F_NESTED and patched length', () => {
    const w = new NlWriter(4);
    w.nest(IFLA_LINKINFO, () => w.attrStr(IFLA_INFO_KIND, 'bridge'));
    // outer len = 4 + (4 + 7 + 1 pad) = 16; type 18|0x8000
    assert.equal(hex(w.toBuffer()), '1000' + '1280' + '0b00' + '0100' + '6272696467650000');
    const [outer] = parseAttrs(w.toBuffer());
    assert.equal(outer!.type, IFLA_LINKINFO);
    assert.equal(outer!.nested, true);
    assert.equal(AttrMap.parse(outer!.data).str(IFLA_INFO_KIND), 'bridge');
  });

  it('rejects impossible lengths with ERR_NETLINK_DECODE', () => {
    assert.throws(
      () => parseAttrs(Buffer.from('0200030000', 'hex')),
      (e) => isTapnetError(e, 'ERR_NETLINK_DECODE'),
    );
    assert.throws(
      () => parseAttrs(Buffer.from('ff00030000000000', 'hex')),
      (e) => isTapnetError(e, 'ERR_NETLINK_DECODE'),
    );
    const m = AttrMap.parse(Buffer.from('0500040001000000', 'hex'));
    assert.throws(
      () => m.u32(4),
      (e) => isTapnetError(e, 'ERR_NETLINK_DECODE'),
    );
  });
});

describe('netlink messages', () => {
  it('encodes a bridge creation request with golden bytes', () => {
    const msg = encodeLinkRequest(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, {
      name: 'br0',
      kind: 'bridge',
      up: true,
    });
    const expected =
      '38000000' + // nlmsg_len 56
      '1000' + // RTM_NEWLINK
      '0006' + // NLM_F_CREATE|NLM_F_EXCL
      '00000000' +
      '00000000' + // seq, pid (set by the socket)
      '00' +
      '00' +
      '0000' +
      '00000000' +
      '01000000' +
      '01000000' + // ifinfomsg: family, pad, type, index, flags=UP, change=UP
      '0800' +
      '0300' +
      '62723000' + // IFLA_IFNAME "br0"
      '1000' +
      '1280' +
      '0b00' +
      '0100' +
      '6272696467650000'; // IFLA_LINKINFO{IFLA_INFO_KIND "bridge"}
    assert.equal(hex(msg), expected);
  });

  it('encodes an IPv4 address request with golden bytes', () => {
    const msg = encodeAddressRequest(RTM_NEWADDR, 0, { index: 7, cidr: '198.18.0.1/24', broadcast: true });
    const expected =
      '30000000' +
      '1400' +
      '0000' +
      '00000000' +
      '00000000' +
      '02' +
      '18' +
      '00' +
      '00' +
      '07000000' + // AF_INET, /24, flags, scope, index 7
      '0800' +
      '0200' +
      'c6120001' + // IFA_LOCAL
      '0800' +
      '0100' +
      'c6120001' + // IFA_ADDRESS
      '0800' +
      '0400' +
      'c61200ff'; // IFA_BROADCAST
    assert.equal(hex(msg), expected);
  });

  it('encodes a default IPv6 route with golden bytes', () => {
    const msg = encodeRouteRequest(RTM_NEWROUTE, 0, { dst: 'default', family: 6, gateway: 'fd00::1' });
    const expected =
      '30000000' +
      '1800' +
      '0000' +
      '00000000' +
      '00000000' +
      '0a' +
      '00' +
      '00' +
      '00' +
      'fe' +
      '04' +
      '00' +
      '01' +
      '00000000' + // AF_INET6, dst_len 0, main, static, universe, unicast
      '1400' +
      '0500' +
      'fd000000000000000000000000000001'; // RTA_GATEWAY
    assert.equal(hex(msg), expected);
  });

  it('round-trips a link answer', () => {
    const w = new NlWriter();
    w.u8(0).u8(0).u16(1).i32(42).u32(0x1043).u32(0);
    w.attrStr(IFLA_IFNAME, 'tn0001').attrU32(IFLA_MTU, 1500).attrU32(IFLA_MASTER, 3);
    w.attr(IFLA_ADDRESS, Buffer.from([2, 0, 0, 0, 0, 9]));
    w.attr(IFLA_STATS64, encodeStats64({ rxBytes: 1234, txPackets: 5 }));
    w.nest(IFLA_LINKINFO, () => w.attrStr(IFLA_INFO_KIND, 'tun'));
    const msg = parseMessages(encodeMessage(RTM_NEWLINK, 0, 1, 0, w.toBuffer()))[0]!;
    const l = decodeLink(msg);
    assert.equal(l.index, 42);
    assert.equal(l.name, 'tn0001');
    assert.equal(l.mtu, 1500);
    assert.equal(l.master, 3);
    assert.equal(l.mac, '02:00:00:00:00:09');
    assert.equal(l.up, true);
    assert.equal(l.kind, 'tun');
    assert.equal(l.stats?.rxBytes, 1234);
    assert.equal(l.stats?.txPackets, 5);
  });

  it('round-trips addresses and routes through encode and decode', () => {
    const a = decodeAddress(
      parseMessages(encodeAddressRequest(RTM_NEWADDR, 0, { index: 3, cidr: 'fd00::5/64' }))[0]!,
    );
    assert.equal(a.cidr, 'fd00::5/64');
    assert.equal(a.family, 6);
    assert.equal(a.index, 3);
    const r = decodeRoute(
      parseMessages(
        encodeRouteRequest(RTM_NEWROUTE, 0, { dst: '198.18.4.0/22', gateway: '198.18.0.1', oif: 5 }),
      )[0]!,
    );
    assert.equal(r.dst, '198.18.4.0/22');
    assert.equal(r.gateway, '198.18.0.1');
    assert.equal(r.oif, 5);
  });

  it('parses kernel errors with extended ACK', () => {
    const req = encodeLinkRequest(RTM_NEWLINK, 0, { name: 'x' });
    const w = new NlWriter();
    w.i32(-19); // -ENODEV
    w.bytes(req.subarray(0, 16)); // capped: only the request header
    w.attrStr(1, 'Unknown device type');
    const msg = parseMessages(
      encodeMessage(NLMSG_ERROR, NLM_F_CAPPED | NLM_F_ACK_TLVS, 7, 0, w.toBuffer()),
    )[0]!;
    const e = parseErrorPayload(msg);
    assert.equal(e.errno, 19);
    assert.equal(e.extack, 'Unknown device type');
    const err = netlinkError(e, 'x');
    assert.ok(err instanceof TapnetError);
    assert.equal(err.code, 'ERR_LINK_NOT_FOUND');
    assert.equal(err.errno, 'ENODEV');
    assert.equal(err.extack, 'Unknown device type');
    assert.match(err.message, /RTM_NEWLINK x failed: ENODEV: Unknown device type/);
  });

  it('maps EXFULL (bridge full) to ERR_CAPACITY and EEXIST to ERR_CONFLICT', () => {
    assert.equal(netlinkError({ errno: 54, requestType: RTM_NEWLINK, requestSeq: 1 }).code, 'ERR_CAPACITY');
    assert.equal(netlinkError({ errno: 17, requestType: RTM_NEWLINK, requestSeq: 1 }).code, 'ERR_CONFLICT');
  });

  it('splits multi-message datagrams and rejects truncation', () => {
    const a = encodeMessage(RTM_NEWLINK, 2, 1, 0, Buffer.alloc(16));
    const b = encodeMessage(3, 2, 1, 0, Buffer.alloc(4));
    const msgs = parseMessages(Buffer.concat([a, b]));
    assert.deepEqual(
      msgs.map((m) => m.type),
      [RTM_NEWLINK, 3],
    );
    assert.throws(
      () => parseMessages(Buffer.concat([a, b.subarray(0, 10)])),
      (e) => isTapnetError(e, 'ERR_NETLINK_DECODE'),
    );
    const bad = Buffer.from(a);
    bad.writeUInt32LE(4, 0);
    assert.throws(
      () => parseMessages(bad),
      (e) => isTapnetError(e, 'ERR_NETLINK_DECODE'),
    );
  });

  it('never crashes or hangs on garbage: only ERR_NETLINK_DECODE', () => {
    let seed = 12345;
    const rnd = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed;
    };
    for (let i = 0; i < 3000; i++) {
      const len = rnd() % 200;
      const buf = Buffer.alloc(len);
      for (let j = 0; j < len; j++) buf[j] = rnd() & 0xff;
      // Make some inputs plausible headers so decoding goes deeper.
      if (len >= 16 && i % 2 === 0) buf.writeUInt32LE(len, 0);
      for (const decode of [decodeLink, decodeAddress, decodeRoute]) {
        try {
          for (const m of parseMessages(buf)) decode(m);
        } catch (e) {
          assert.ok(isTapnetError(e, 'ERR_NETLINK_DECODE'), String(e));
        }
      }
    }
  });
});
