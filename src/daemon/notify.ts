/**
 * sd_notify(3) for `Type=notify` units: one datagram to $NOTIFY_SOCKET (a path or an abstract name
 * starting with `@`). A no-op when not started by systemd.
 */
import * as libc from '../sys/libc.js';
import { connectUnix } from '../sys/scm.js';

/** Send `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=…` to systemd. Returns false when not under systemd. */
export function sdNotify(message: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const path = env.NOTIFY_SOCKET;
  if (!path) return false;
  try {
    const fd = connectUnix(path, libc.SOCK_DGRAM);
    try {
      libc.send(fd, Buffer.from(message));
    } finally {
      libc.close(fd);
    }
    return true;
  } catch {
    return false;
  }
}
