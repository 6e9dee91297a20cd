/**
 * Address leases on local disk. One symlink per leased address, whose target is the owner's VM ID:
 *
 *   <state>/ipam/<network>/<address>_<prefix>/leases/198.18.0.7 -> vm-42
 *   <state>/ipam/<network>/<address>_<prefix>/cursor   "198.18.0.7" (last handed out), padded text
 *
 * symlink(2) creates the name and its content in one atomic step and fails with EEXIST when the name
 * exists, so the filesystem is the arbiter between processes and a crash can never leave a lease
 * without an owner. `ls -l` shows who holds what. The cursor is only a round-robin hint, so it is
 * rewritten in place (one pwrite, no new inode) rather than replaced atomically; a garbled cursor
 * merely restarts the scan at the start of the range.
 */
import fs from 'node:fs';
import { TapnetError } from '../errors.js';
import { cidrContains, formatCidr, formatIp, parseCidr, parseIp } from '../ip.js';
import { validateName, validateVmId } from '../validate.js';
import type { StateDir } from './statedir.js';
import type { LeaseStore, PoolRef } from './types.js';

interface PoolPaths {
  ref: PoolRef;
  family: 4 | 6;
  cidr: ReturnType<typeof parseCidr>;
  /** Path segments of the pool directory under the state root. */
  segments: string[];
  /** Absolute path of the leases directory (built by StateDir.path, so checked). */
  leasesDir: string;
  /** The open cursor file, once used. */
  cursorFd?: number;
}

/** Bytes of the cursor file: the longest IPv6 text (39) fits with room to spare. */
const CURSOR_SIZE = 48;

const POOL_DIR_RE = /^([0-9a-f.:]+)_(\d{1,3})$/;

/** LeaseStore over a state directory. */
export class FileLeaseStore implements LeaseStore {
  private readonly pathCache = new Map<string, PoolPaths>();

  constructor(private readonly dir: StateDir) {}

  /** Validate a pool reference once and remember its directory. */
  private pool(ref: PoolRef): PoolPaths {
    const key = `${ref.network}|${ref.subnet}`;
    const hit = this.pathCache.get(key);
    if (hit) return hit;
    validateName(ref.network, 'network name');
    const cidr = parseCidr(ref.subnet, 'subnet');
    if (cidr.addr !== cidr.network || formatCidr(cidr) !== ref.subnet) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `subnet ${JSON.stringify(ref.subnet)} is not in canonical network form`,
        {
          details: { value: ref.subnet },
        },
      );
    }
    const segments = ['ipam', ref.network, `${formatIp(cidr.family, cidr.network)}_${cidr.prefix}`];
    const p: PoolPaths = {
      ref: { network: ref.network, subnet: ref.subnet },
      family: cidr.family,
      cidr,
      segments,
      leasesDir: this.dir.path(...segments, 'leases'),
    };
    this.pathCache.set(key, p);
    return p;
  }

  /** The lease file of `addr`, after checking it is a canonical address inside the pool. */
  private leaseFile(p: PoolPaths, addr: string): string {
    const ip = parseIp(addr, 'address');
    if (formatIp(ip.family, ip.value) !== addr) {
      throw new TapnetError(
        'ERR_INVALID_ARGUMENT',
        `address ${JSON.stringify(addr)} is not in canonical form`,
        {
          details: { value: addr },
        },
      );
    }
    if (!cidrContains(p.cidr, ip)) {
      throw new TapnetError('ERR_INVALID_ARGUMENT', `address ${addr} is not in ${p.ref.subnet}`, {
        details: { value: addr, subnet: p.ref.subnet },
      });
    }
    // Canonical address text is only [0-9a-f.:], never `.`/`..`: safe to join without re-checking.
    return `${p.leasesDir}/${addr}`;
  }

  /** Create the lease symlink; true when `owner` holds `addr` afterwards (new or already its own). */
  async claim(pool: PoolRef, addr: string, owner: string): Promise<boolean> {
    const p = this.pool(pool);
    const file = this.leaseFile(p, addr);
    validateVmId(owner);
    for (let attempt = 0; attempt < 3; attempt++) {
      if (this.dir.createLink(file, owner)) return true;
      const current = this.dir.readLink(file);
      if (current !== undefined) return current === owner;
      // Released between our symlink and readlink: try again.
    }
    return false;
  }

  /** Remove the lease if `owner` holds it. Callers hold the owner's VM lock (see LeaseStore). */
  async release(pool: PoolRef, addr: string, owner: string): Promise<boolean> {
    const file = this.leaseFile(this.pool(pool), addr);
    if (this.dir.readLink(file) !== owner) return false;
    return this.dir.remove(file);
  }

  async ownerOf(pool: PoolRef, addr: string): Promise<string | undefined> {
    return this.dir.readLink(this.leaseFile(this.pool(pool), addr));
  }

  /**
   * Every lease of the pool, read from disk. Entries that are not leases (a bad name, a regular file)
   * are moved to the quarantine directory.
   */
  async leases(pool: PoolRef): Promise<Map<string, string>> {
    const p = this.pool(pool);
    const out = new Map<string, string>();
    const dir = p.leasesDir;
    for (const name of this.dir.list(dir)) {
      let file: string;
      try {
        file = this.leaseFile(p, name);
      } catch {
        this.quarantineStray(dir, name);
        continue;
      }
      let owner: string | undefined;
      try {
        owner = this.dir.readLink(file);
      } catch (e) {
        if (!(e instanceof TapnetError) || e.errno !== 'EINVAL') throw e; // EINVAL: not a symlink
        this.dir.quarantine(file);
        continue;
      }
      if (owner !== undefined) out.set(name, owner);
    }
    return out;
  }

  private quarantineStray(dir: string, name: string): void {
    if (!/^[A-Za-z0-9_.:-]{1,200}$/.test(name)) return; // cannot even name it safely: leave it
    try {
      this.dir.quarantine(`${dir}/${name}`);
    } catch {
      // reported nowhere else; leaving it is harmless
    }
  }

  /** Every pool that has a directory under `<state>/ipam`. */
  async pools(): Promise<PoolRef[]> {
    const out: PoolRef[] = [];
    for (const network of this.dir.list(this.dir.path('ipam'))) {
      try {
        validateName(network);
      } catch {
        continue;
      }
      for (const name of this.dir.list(this.dir.path('ipam', network))) {
        const m = POOL_DIR_RE.exec(name);
        if (!m) continue;
        try {
          const cidr = parseCidr(`${m[1]}/${m[2]}`);
          if (cidr.addr === cidr.network) out.push({ network, subnet: formatCidr(cidr) });
        } catch {
          // not a pool directory
        }
      }
    }
    return out;
  }

  private cursor(p: PoolPaths): { fd: number; file: string } {
    const file = this.dir.path(...p.segments, 'cursor');
    p.cursorFd ??= this.dir.openFixed(file);
    return { fd: p.cursorFd, file };
  }

  async getCursor(pool: PoolRef): Promise<string | undefined> {
    const { fd, file } = this.cursor(this.pool(pool));
    return this.dir.readFixed(fd, file, CURSOR_SIZE) || undefined;
  }

  async setCursor(pool: PoolRef, addr: string): Promise<void> {
    const p = this.pool(pool);
    this.leaseFile(p, addr); // validates addr
    const { fd, file } = this.cursor(p);
    this.dir.writeFixed(fd, file, addr, CURSOR_SIZE);
  }

  /** Close the cursor files this store opened. It reopens them if used again. */
  close(): void {
    for (const p of this.pathCache.values()) {
      if (p.cursorFd === undefined) continue;
      try {
        fs.closeSync(p.cursorFd);
      } catch {
        // already closed
      }
      p.cursorFd = undefined;
    }
  }

  /** The directory holding the pool's state (for cleanup of crash leftovers). */
  poolDir(pool: PoolRef): string {
    return this.dir.path(...this.pool(pool).segments);
  }
}
