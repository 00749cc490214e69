/**
 * The lean HTTP layer's WebSocket upgrades (`http.leanWebSocket`, on by
 * default, plain HTTP only): an upgrade request on a WebSocket connection
 * path (`/connection/websocket`, `/apps/{id}/connection/websocket`) is taken
 * from the layer's own parse (lean-http.ts), without node:http's request
 * machinery (its connection listener, parser and IncomingMessage). The
 * socket and the bytes after the head go to the server's `upgrade`
 * listeners as node:http hands them (transports/websocket.ts, which makes
 * every check: origin, connection caps, tokens and cookies, the handshake,
 * subprotocols, and writes the 101 or the refusal), with the layer's
 * request object in the IncomingMessage's place: `method`, `url`,
 * `headers` (as node:http builds them), `socket`.
 *
 * An upgrade request the layer does not take goes to node:http untouched,
 * as any request it does not answer: not `GET`, not HTTP/1.1, no Host, a
 * body announced (`Content-Length`, `Transfer-Encoding`), more header lines
 * than node:http keeps, another path (the Pusher endpoint's `/app/{key}`).
 */
import type { IncomingHttpHeaders, Server } from 'node:http';
import type { Socket } from 'node:net';
import type { RequestHead } from './llhttp.ts';

/** True for a head (its header object `headers`) that the layer hands to the `upgrade` listeners itself. */
export function leanUpgrade(head: RequestHead, headers: IncomingHttpHeaders): boolean {
  return (
    head.method === 'GET' &&
    head.upgrade &&
    head.major === 1 &&
    head.minor === 1 &&
    headers.host !== undefined &&
    headers['content-length'] === undefined &&
    headers['transfer-encoding'] === undefined
  );
}

/**
 * Hands an upgrade request to the server's `upgrade` listeners, as node:http
 * does once its parser stopped at the head: the socket neither flowing nor
 * paused (the first 'data' listener, `ws`'s, starts reading; bytes that come
 * before it wait in the socket), `rest` the bytes read after the head.
 */
export function emitUpgrade(server: Server, request: object, socket: Socket, rest: Buffer): void {
  (socket as { readableFlowing: boolean | null }).readableFlowing = null;
  if (server.listenerCount('upgrade') === 0) {
    socket.destroy();
    return;
  }
  server.emit('upgrade', request, socket, rest);
}
