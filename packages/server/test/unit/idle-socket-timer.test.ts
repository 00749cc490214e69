/**
 * transports/idle-socket-timer.ts: the keep-alive timer Node's HTTP server
 * cleared for a request is dropped from the socket, a timer still armed is
 * not, and the connection's keep-alive works as before (a real server on an
 * ephemeral port, two and three requests on one connection).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { dropClearedTimer } from '../../src/transports/idle-socket-timer.ts';

function timerOf(socket: Socket): unknown {
  const field = Object.getOwnPropertySymbols(socket).find((key) => key.description === 'timeout');
  assert.ok(field !== undefined, 'the socket has a timer field');
  return (socket as unknown as Record<symbol, unknown>)[field];
}

/** Sends `count` GETs on one connection, one after the other; resolves with the answers' bodies. */
async function requests(port: number, count: number): Promise<string[]> {
  const socket = connect(port, '127.0.0.1');
  socket.setEncoding('latin1');
  const bodies: string[] = [];
  let buffer = '';
  for (let i = 0; i < count; i++) {
    socket.write(`GET /${i} HTTP/1.1\r\nHost: x\r\n\r\n`);
    while (!/\r\n\r\n[a-z0-9-]+$/.test(buffer)) buffer += (await once(socket, 'data'))[0] as string;
    bodies.push(buffer.slice(buffer.lastIndexOf('\r\n') + 2));
    buffer = '';
  }
  socket.destroy();
  return bodies;
}

test('the cleared keep-alive timer of a second request is dropped; keep-alive still works', async () => {
  const seen: string[] = [];
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const socket = request.socket;
    const before = timerOf(socket);
    dropClearedTimer(socket);
    const after = timerOf(socket);
    seen.push(`${request.url} ${before === null ? 'none' : 'timer'} -> ${after === null ? 'none' : 'timer'}`);
    response.setHeader('content-type', 'text/plain');
    response.end(`ok-${request.url!.slice(1)}`);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const port = (server.address() as { port: number }).port;
    assert.deepEqual(await requests(port, 3), ['ok-0', 'ok-1', 'ok-2']);
    // First request: no timer yet; later ones: Node's cleared keep-alive timer, dropped.
    assert.deepEqual(seen, ['/0 none -> none', '/1 timer -> none', '/2 timer -> none']);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test('a timer still armed is left alone', async () => {
  let kept: boolean | undefined;
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    request.socket.setTimeout(30_000);
    dropClearedTimer(request.socket);
    kept = timerOf(request.socket) !== null && request.socket.timeout === 30_000;
    request.socket.setTimeout(0);
    response.end('ok-0');
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  try {
    const port = (server.address() as { port: number }).port;
    assert.deepEqual(await requests(port, 1), ['ok-0']);
    assert.equal(kept, true);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
