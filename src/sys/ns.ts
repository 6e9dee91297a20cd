/**
 * Synchronous namespace switching for the calling thread. Network namespaces are per thread: enter,
 * do a synchronous thing (open a socket, open /dev/net/tun, write a sysctl), and return, all before
 * the event loop runs again (STYLE.md, rule 2).
 */
import { TapnetError } from '../errors.js';
import { CLONE_NEWNET, O_CLOEXEC, O_RDONLY, open, setns } from './libc.js';

/** The calling thread's own network namespace, as a path that works on every kernel we support. */
export const SELF_NETNS = '/proc/thread-self/ns/net';

/**
 * Run `fn` with the calling thread inside the network namespace behind `nsFd`, then switch back.
 * `fn` must be synchronous: a returned Promise is refused (it would run later, elsewhere).
 * If switching back fails the process is in an unknown namespace: that is fatal and we abort.
 */
export function withNetns<T>(nsFd: number | undefined, fn: () => T): T {
  if (nsFd === undefined) return checkSync(fn());
  const home = homeNetns();
  setns(nsFd, CLONE_NEWNET);
  try {
    return checkSync(fn());
  } finally {
    try {
      setns(home, CLONE_NEWNET);
    } catch (e) {
      process.stderr.write(`tapnet: fatal: could not return to the original network namespace: ${e}\n`);
      process.abort();
    }
  }
}

let home: number | undefined;

/**
 * An fd of the main thread's own network namespace, opened once: the namespace withNetns returns to.
 * (Only the main thread calls withNetns, and it never stays in another namespace.)
 */
function homeNetns(): number {
  if (home === undefined) home = open(SELF_NETNS, O_RDONLY | O_CLOEXEC);
  return home;
}

function checkSync<T>(v: T): T {
  if (v && typeof (v as { then?: unknown }).then === 'function') {
    throw new TapnetError('ERR_INTERNAL', 'withNetns() callback must be synchronous');
  }
  return v;
}
