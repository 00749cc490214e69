/**
 * The SDK checks the protocol version the server announces (`protocol` in
 * the connect result and the `connected` push): another major version is an
 * `error` event with code 9 (`protocol_mismatch`) and a message naming both
 * versions, then `disconnected` with the same code, and no reconnect; never
 * an exception. A scripted server announces other versions over WebSocket
 * and SSE; the real server announces the SDK's own.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { PROTOCOL_VERSION, sdkCodes, type TransportName } from '../src/index.ts';
import { recordedClient, type RecordedClient } from './sdk-helpers.ts';
import { startHerald, type TestHerald } from '../../server/test/helpers/herald.ts';

const SESSION = 'S'.repeat(22);

describe('protocol version check', { timeout: 60000 }, () => {
  let server: Server;
  let url: string;
  /** The `protocol` the scripted server announces; undefined: the field is left out. */
  let announced: number | undefined;
  const clients: RecordedClient[] = [];

  const connected = () => ({ client: 'c1', version: '9.0.0', ping: 25, ...(announced === undefined ? {} : { protocol: announced }) });

  before(async () => {
    const wss = new WebSocketServer({ noServer: true });
    wss.on('connection', (socket, req: { url?: string }) => {
      // Opened in the upgrade request (the SDK's default): the connect result as a push, at once.
      if (new URL(req.url ?? '/', 'http://x').searchParams.get('connect') === '1') socket.send(JSON.stringify({ push: 'connected', ...connected() }));
      socket.on('message', (data: Buffer) => {
        const command = JSON.parse(data.toString()) as { id?: number; method: string };
        if (command.method === 'connect') socket.send(JSON.stringify({ id: command.id, result: connected() }));
      });
    });
    server = createServer((req, res) => {
      if (req.method === 'GET' && req.url?.startsWith('/connection/sse')) {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`data: ${JSON.stringify({ push: 'connected', ...connected(), session: SESSION })}\n\n`);
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"not_found","message":"no such endpoint"}}');
    });
    server.on('upgrade', (req, socket, head) => {
      if (req.url?.split('?')[0] === '/connection/websocket') wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
      else socket.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    for (const { client } of clients) client.disconnect();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  function client(transport: TransportName, base = url): RecordedClient {
    const recorded = recordedClient({ url: base, transports: [transport] });
    clients.push(recorded);
    return recorded;
  }

  for (const transport of ['websocket', 'sse'] as const) {
    test(`${transport}: a server on another major version: error 9 naming both versions, then disconnected 9, no reconnect`, async () => {
      announced = PROTOCOL_VERSION + 1;
      const c = client(transport);
      c.client.connect();
      const disconnected = await c.waitFor('disconnected');
      assert.equal(disconnected.code, sdkCodes.protocol_mismatch.code);
      const errors = c.events.filter(([name]) => name === 'error').map(([, payload]) => payload as { code: number; message: string });
      assert.deepEqual(
        errors.map((e) => e.code),
        [sdkCodes.protocol_mismatch.code],
      );
      assert.match(errors[0]!.message, new RegExp(`protocol ${PROTOCOL_VERSION + 1}, this SDK protocol ${PROTOCOL_VERSION}`));
      assert.match(errors[0]!.message, /Herald 9\.0\.0/);
      assert.deepEqual(
        c.events.map(([name]) => name),
        ['connecting', 'error', 'disconnected'],
        'never connected, and no reconnect',
      );
      assert.equal(c.client.state, 'disconnected');
    });
  }

  test('the same major version connects; so does a server that does not announce one (protocol 1)', async () => {
    announced = PROTOCOL_VERSION;
    const same = client('websocket');
    same.client.connect();
    await same.waitFor('connected');
    same.client.disconnect();
    announced = undefined;
    const unannounced = client('sse');
    unannounced.client.connect();
    await unannounced.waitFor('connected');
    assert.equal(unannounced.count('error'), 0);
    unannounced.client.disconnect();
  });

  describe('against the real server', () => {
    let h: TestHerald;
    before(async () => {
      h = await startHerald();
    });
    after(async () => {
      await h.close();
    });

    for (const transport of ['websocket', 'long-poll'] as const) {
      test(`${transport}: connects without a protocol error`, async () => {
        const c = client(transport, h.url);
        c.client.connect();
        await c.waitFor('connected');
        assert.equal(c.count('error'), 0);
        c.client.disconnect();
      });
    }
  });
});
