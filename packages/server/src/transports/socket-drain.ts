/** `Transport.onDrain` for transports that write to a socket (WebSocket, SSE). */
import type { Writable } from 'node:stream';

/**
 * While the buffer is below the socket's high-water mark the socket emits no
 * 'drain': the caller then looks again after this long.
 */
const BELOW_MARK_RETRY_MS = 10;

/** Calls `listener` once on the socket's next 'drain', or after a short while when none is due. */
export function onSocketDrain(socket: Writable, listener: () => void): void {
  if (socket.destroyed) return;
  if (socket.writableNeedDrain) {
    socket.once('drain', listener);
    return;
  }
  setTimeout(() => {
    if (!socket.destroyed) listener();
  }, BELOW_MARK_RETRY_MS).unref();
}
