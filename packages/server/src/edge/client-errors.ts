/**
 * What a client gets when Node's HTTP parser refuses its request before any
 * route runs (malformed or ambiguous framing such as Content-Length with
 * Transfer-Encoding, duplicate Content-Length, obs-fold, bare LF; headers
 * too large or too many; the headers or request timeout): a fixed answer,
 * then the connection is destroyed, so nothing after the bad bytes is ever
 * parsed as another request. Bodies are the registry's generic ones.
 */
import type { Socket } from 'node:net';
import { apiErrors } from '@herald/protocol';

const badRequest = JSON.stringify({ error: { code: 'bad_request', message: apiErrors.bad_request.message } });

export function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  if (socket.writable) {
    let head: string;
    let body = '';
    if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') head = '408 Request Timeout';
    else if (error.code === 'HPE_HEADER_OVERFLOW') head = '431 Request Header Fields Too Large';
    else {
      head = '400 Bad Request';
      body = badRequest;
    }
    socket.write(
      `HTTP/1.1 ${head}\r\nConnection: close\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\n` +
        `Cache-Control: no-store\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}
