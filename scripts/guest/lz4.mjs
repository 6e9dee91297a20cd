// LZ4 for the guest builder: the legacy frame format the kernel's compressed payload uses (lib/decompress_unlz4.c)
// and the scan for it inside a bzImage, as the kernel's scripts/extract-vmlinux does. Dependency-free.

const LZ4_LEGACY_MAGIC = 0x184c2102;
const LZ4_LEGACY_BLOCK = 8 << 20;

/** Decompress one LZ4 block src[start, end) into a fresh buffer of at most `max` bytes. */
export function lz4Block(src, start, end, max) {
  const out = Buffer.allocUnsafe(max);
  let i = start;
  let o = 0;
  const len = (n) => {
    let v = n;
    let b;
    do {
      if (i >= end) throw new Error('truncated length');
      b = src[i++];
      v += b;
    } while (b === 255);
    return v;
  };
  while (i < end) {
    const token = src[i++];
    let lit = token >> 4;
    if (lit === 15) lit = len(lit);
    if (i + lit > end || o + lit > max) throw new Error('literal run out of bounds');
    src.copy(out, o, i, i + lit);
    i += lit;
    o += lit;
    if (i >= end) break; // the last sequence has literals only
    const off = src[i] | (src[i + 1] << 8);
    i += 2;
    let ml = token & 15;
    if (ml === 15) ml = len(ml);
    ml += 4;
    const m = o - off;
    if (off === 0 || m < 0 || o + ml > max) throw new Error('match out of bounds');
    if (off >= ml) out.copy(out, o, m, m + ml);
    else for (let k = 0; k < ml; k++) out[o + k] = out[m + k];
    o += ml;
  }
  return out.subarray(0, o);
}

/** A legacy LZ4 stream starting at `pos` (its magic): blocks until the data stops looking like blocks. */
export function lz4Legacy(buf, pos) {
  const bound = LZ4_LEGACY_BLOCK + Math.floor(LZ4_LEGACY_BLOCK / 255) + 16;
  const parts = [];
  let i = pos + 4;
  while (i + 4 <= buf.length) {
    const size = buf.readUInt32LE(i);
    if (size === LZ4_LEGACY_MAGIC) {
      i += 4;
      continue;
    }
    if (size === 0 || size > bound || i + 4 + size > buf.length) break; // e.g. the appended size field
    parts.push(lz4Block(buf, i + 4, i + 4 + size, LZ4_LEGACY_BLOCK));
    i += 4 + size;
  }
  return Buffer.concat(parts);
}

/** The ELF vmlinux inside a bzImage: try every LZ4 magic until one decompresses to an ELF image. */
export function extractVmlinux(bz) {
  const magic = Buffer.from([0x02, 0x21, 0x4c, 0x18]);
  for (let at = bz.indexOf(magic); at >= 0; at = bz.indexOf(magic, at + 1)) {
    try {
      const out = lz4Legacy(bz, at);
      if (out.length > 4 && out.readUInt32BE(0) === 0x7f454c46) return out;
    } catch {
      // not a stream after all: keep scanning
    }
  }
  throw new Error('no LZ4-compressed ELF payload in the bzImage (is the kernel still CONFIG_KERNEL_LZ4?)');
}
