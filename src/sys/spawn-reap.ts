/**
 * Reaping the children src/sys/spawn.ts starts, without ever blocking the event loop: a SIGCHLD listener
 * calls waitpid(pid, WNOHANG) for our own children only (libuv does the same, per pid, for its own, so
 * node:child_process is not disturbed); a 1 s interval keeps the loop alive while children run (signal
 * handles do not) and would catch a lost SIGCHLD. Off the main thread, where signals are not delivered
 * to JS, a backing-off timer (1 → 50 ms) polls instead.
 */
import { constants as osConstants } from 'node:os';
import { isMainThread } from 'node:worker_threads';
import { errnoName } from './libc.js';
import { spawnLib, WNOHANG } from './spawn-libc.js';

/** How a child ended: an exit code, or the signal that killed it. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const pending = new Map<number, (s: ExitStatus) => void>();
const statusBuf = new Int32Array(1);
let listening = false;
let safetyNet: NodeJS.Timeout | undefined;
let pollTimer: NodeJS.Timeout | undefined;
let pollDelay = 1;

const signalNames = new Map<number, NodeJS.Signals>(
  Object.entries(osConstants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
);

/** Decode a wait status (WIFEXITED/WEXITSTATUS, WIFSIGNALED/WTERMSIG). */
export function decodeWaitStatus(status: number): ExitStatus {
  const sig = status & 0x7f;
  if (sig === 0) return { code: (status >> 8) & 0xff, signal: null };
  return { code: null, signal: signalNames.get(sig) ?? (`SIG${sig}` as NodeJS.Signals) };
}

/** waitpid(pid, WNOHANG); settles the child when it has exited. True when it is done. */
function reapOne(pid: number): boolean {
  const done = pending.get(pid);
  if (!done) return true;
  const r = Number(spawnLib().waitpid(pid, statusBuf, WNOHANG));
  if (r === 0) return false;
  if (r < 0 && errnoName(spawnLib().errno()) === 'EINTR') return false;
  pending.delete(pid);
  // r < 0 (ECHILD): someone else reaped it; its status is lost.
  done(r === pid ? decodeWaitStatus(statusBuf[0]!) : { code: null, signal: null });
  return true;
}

function reapAll(): void {
  for (const pid of [...pending.keys()]) reapOne(pid);
  if (pending.size === 0) stopWatching();
}

function onPollTimer(): void {
  pollTimer = undefined;
  reapAll();
  if (pending.size > 0) {
    pollDelay = Math.min(pollDelay * 2, 50);
    pollTimer = setTimeout(onPollTimer, pollDelay);
  }
}

function startWatching(): void {
  if (isMainThread) {
    if (!listening) {
      process.on('SIGCHLD', reapAll);
      listening = true;
      // Signal handles do not keep the loop alive; this does, and also catches a SIGCHLD we never saw.
      safetyNet = setInterval(reapAll, 1000);
    }
  } else if (!pollTimer) {
    pollDelay = 1;
    pollTimer = setTimeout(onPollTimer, pollDelay);
  }
}

function stopWatching(): void {
  if (listening) {
    process.off('SIGCHLD', reapAll);
    clearInterval(safetyNet);
    listening = false;
  }
  if (pollTimer) {
    clearTimeout(pollTimer);
    pollTimer = undefined;
  }
}

/** How many children spawned here are not reaped yet (for tests and diagnostics). */
export function unreapedChildren(): number {
  return pending.size;
}

/** Start watching for exits: call before posix_spawn, so that no SIGCHLD can be missed. */
export function armReaper(): void {
  startWatching();
}

/** After a failed posix_spawn: stop watching when nothing else is pending. */
export function disarmIfIdle(): void {
  if (pending.size === 0) stopWatching();
}

/** Settle when `pid` (our child, spawned after armReaper()) has exited and been reaped. */
export function watchExit(pid: number, onExit: (s: ExitStatus) => void): void {
  pending.set(pid, onExit);
}
