/**
 * Process seats: how the journal's locks tell a live holder from a dead one without trusting pids.
 *
 *   <dir>/journal.seats/seat-<n>     "<nonce> <pid>", padded; held with flock(LOCK_EX) by its process
 *
 * A process that takes locks sits in the first seat it can flock, and writes a fresh random nonce into
 * it (an in-place write, no new inode). A lock line in the journal names (seat, nonce); its holder is
 * alive while that seat is flocked and still carries that nonce. The kernel drops the flock when the
 * process dies, even by SIGKILL, so a dead holder is seen at once; pids are never compared (they are
 * reused and differ between pid namespaces: the pid is written for humans only). Seat files are created
 * only when more processes than ever before hold locks at the same time, so never on the hot path.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { TapnetError } from '../errors.js';
import { flock, LOCK_EX, LOCK_NB, LOCK_SH, LOCK_UN } from '../sys/flock.js';
import { fsErrno, storeError } from './statedir.js';

/** The seats directory inside the state directory. */
export const SEATS_DIR = 'journal.seats';

const SEAT_BYTES = 64;
const MAX_SEATS = 4096;

/** This process's seat: keep `fd` open (and flocked) for as long as it holds locks. */
export interface Seat {
  index: number;
  nonce: string;
  fd: number;
}

const seatFile = (dir: string, n: number): string => path.join(dir, SEATS_DIR, `seat-${n}`);

/** Sit in the first free seat of `dir` (creating one only when all are taken). */
export function takeSeat(dir: string): Seat {
  const seats = path.join(dir, SEATS_DIR);
  try {
    fs.mkdirSync(seats, { recursive: true, mode: 0o755 });
  } catch (e) {
    throw storeError('create directory', seats, e);
  }
  const nonce = randomBytes(8).toString('hex');
  for (let n = 0; n < MAX_SEATS; n++) {
    const file = seatFile(dir, n);
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o644);
    } catch (e) {
      throw storeError('open', file, e);
    }
    if (!flock(fd, LOCK_EX | LOCK_NB)) {
      fs.closeSync(fd);
      continue;
    }
    try {
      fs.writeSync(fd, `${nonce} ${process.pid}`.padEnd(SEAT_BYTES - 1).concat('\n'), 0, 'latin1');
    } catch (e) {
      fs.closeSync(fd);
      throw storeError('write', file, e);
    }
    return { index: n, nonce, fd };
  }
  throw new TapnetError('ERR_CAPACITY', `all ${MAX_SEATS} journal seats in ${seats} are taken`);
}

/** Leave the seat: its locks, if any are still recorded, become free for everyone. */
export function leaveSeat(seat: Seat): void {
  try {
    fs.closeSync(seat.fd);
  } catch {
    // already closed
  }
}

/** Answers "is the holder in seat n with this nonce alive?" for the lock service. */
export class SeatProbe {
  private readonly fds = new Map<number, number>();

  constructor(private readonly dir: string) {}

  /**
   * True while seat `n` is flocked and carries `nonce`. Errs towards "alive" only for the instant a new
   * process takes a dead holder's seat and has not yet written its nonce.
   */
  isAlive(n: number, nonce: string, mine?: Seat): boolean {
    if (mine && n === mine.index) return nonce === mine.nonce;
    const fd = this.open(n);
    if (fd === undefined) return false;
    const buf = Buffer.alloc(SEAT_BYTES);
    let len: number;
    try {
      len = fs.readSync(fd, buf, 0, SEAT_BYTES, 0);
    } catch {
      return false;
    }
    if (buf.toString('latin1', 0, len).split(' ', 1)[0] !== nonce) return false; // someone else sits there now
    if (flock(fd, LOCK_SH | LOCK_NB)) {
      flock(fd, LOCK_UN);
      return false; // nobody holds the seat: its process is gone
    }
    return true;
  }

  private open(n: number): number | undefined {
    const hit = this.fds.get(n);
    if (hit !== undefined) return hit;
    try {
      const fd = fs.openSync(seatFile(this.dir, n), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      this.fds.set(n, fd);
      return fd;
    } catch (e) {
      if (fsErrno(e) === 'ENOENT') return undefined;
      throw storeError('open', seatFile(this.dir, n), e);
    }
  }

  /** Close the seat files opened for probing. */
  close(): void {
    for (const fd of this.fds.values()) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
    }
    this.fds.clear();
  }
}
