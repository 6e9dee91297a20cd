/**
 * Writing an HTTP response with file descriptors attached (SCM_RIGHTS) on a connection Node's HTTP server
 * accepted on the Unix socket: the response bytes go out with one sendmsg(2) on the connection's fd, the
 * fds riding on the first byte; the connection is then closed. Node has no API for ancillary data, so the
 * response bypasses ServerResponse — only after everything Node queued on the socket has been flushed.
 */
import { once } from 'node:events';
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { TapnetError } from '../errors.js';
import { sendWithFds } from '../sys/scm.js';

/** The raw fd behind a Node socket (Unix sockets only). */
function socketFd(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0)
    throw new TapnetError('ERR_INTERNAL', 'the connection has no file descriptor to pass fds on');
  return fd;
}

/** The bytes of a complete HTTP/1.1 response with a JSON body, closing the connection. */
export function rawJsonResponse(status: number, body: unknown, fds: number): Buffer {
  const text = `${JSON.stringify(body)}\n`;
  const head = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}`,
    'content-type: application/json',
    `content-length: ${Buffer.byteLength(text)}`,
    `x-tapnet-fds: ${fds}`,
    'connection: close',
    '',
    '',
  ].join('\r\n');
  return Buffer.concat([Buffer.from(head), Buffer.from(text)]);
}

/**
 * Send a JSON response with `fds` attached, then end the connection. The socket is non-blocking: a full
 * send buffer (EAGAIN) is retried for up to `timeoutMs`.
 */
export async function sendResponseWithFds(
  socket: Socket,
  status: number,
  body: unknown,
  fds: number[],
  timeoutMs = 5000,
): Promise<void> {
  const bytes = rawJsonResponse(status, body, fds.length);
  if (socket.writableLength > 0) await once(socket, 'drain');
  const fd = socketFd(socket);
  const deadline = Date.now() + timeoutMs;
  let sent = 0;
  for (;;) {
    try {
      sent = sendWithFds(fd, bytes, fds);
      break;
    } catch (e) {
      if (
        !(e instanceof TapnetError && (e.errno === 'EAGAIN' || e.errno === 'EWOULDBLOCK')) ||
        Date.now() > deadline
      )
        throw e;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  if (sent < bytes.length) socket.write(bytes.subarray(sent));
  socket.end();
}
