/**
 * JavaScript hooks in cluster mode (`herald serve --workers 2`): every
 * worker runs its own sandbox pool (docs/hooks.md). Beside them a proxy
 * hook answers subscribe (an event is one backend's or the other's):
 * connections are opened until both workers hold some; every one of them
 * then goes through the JavaScript connect, publish and rpc hooks and the
 * proxy subscribe hook; SSE and long-poll sessions, whose command POSTs the
 * primary routes to the owning worker, answer rpc too.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { openWs, type WsClient } from '../helpers/herald-ws.ts';
import { openSse, pollOpen, sendCommand, sseUrl } from '../helpers/rt-clients.ts';
import { startHeraldWorkers, type HeraldWorkers } from './harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-cluster-js-hooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const HOOK = `
export function onConnect(e) { return { result: { user: 'js-' + e.user } }; }
export function onPublish(e) { return { result: { data: { replaced: e.data, by: 'onPublish' } } }; }
export function onRpc(e) { return { result: { data: { echo: e.data, client: e.client, via: e.transport } } }; }
`;

describe('JavaScript hooks in cluster mode', () => {
  it('connect, publish and rpc from every worker, beside a proxy subscribe hook (WebSocket, SSE, long polling)', async () => {
    const hookSecret = randomBytes(32).toString('base64url');
    writeFileSync(join(dir, 'hook-secret'), hookSecret, { mode: 0o600 });
    let subscribeCalls = 0;
    const backend = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        subscribeCalls++;
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { channel: string };
        response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ result: { info: { channel: body.channel } } }));
      });
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    const hookFile = join(dir, 'hooks.js');
    writeFileSync(hookFile, HOOK);
    let herald: HeraldWorkers | undefined;
    const clients: WsClient[] = [];
    try {
      const { port, url, token, spread } = (herald = await startHeraldWorkers(dir, {
        channels: { namespaces: [{ name: 'chat', presence: true, clientPublish: true }] },
        hooks: {
          subscribe: { url: `http://127.0.0.1:${(backend.address() as AddressInfo).port}/subscribe`, secretFile: join(dir, 'hook-secret') },
          javascript: { file: hookFile, events: ['connect', 'publish', 'rpc'], pool: 1, timeoutMs: 1000 },
        },
      }));
      // Connections until both workers hold some: each one passed the JavaScript connect hook on its worker.
      await spread(clients, async () => {
        const client = await openWs(`ws://127.0.0.1:${port}/connection/websocket`);
        await client.connect(await token(`user${clients.length}`));
        return client;
      });

      for (const [i, client] of clients.entries()) {
        const channel = `chat:room${i}`;
        await client.call('subscribe', { channel });
        const presence = await client.call('presence', { channel });
        assert.deepEqual(presence.clients[client.clientId].chan_info, { channel }, 'proxy subscribe hook: chan_info from the backend');
        assert.equal(presence.clients[client.clientId].user, `js-user${i}`, 'onConnect: the user the file set');
        await client.call('publish', { channel, data: { n: i } });
        const [publication] = await client.waitPublications(channel, 1);
        assert.deepEqual(publication.data, { replaced: { n: i }, by: 'onPublish' }, 'onPublish: the data replaced');
        assert.deepEqual(await client.call('rpc', { method: 'ping', data: i }), { data: { echo: i, client: client.clientId, via: 'websocket' } }, 'onRpc');
      }
      assert.ok(subscribeCalls >= clients.length, 'subscribe went to the proxy hook');

      for (let i = 0; i < 4; i++) {
        const sse = await openSse(sseUrl(url, { token: await token(`sse${i}`) }));
        const connected = await sse.waitForFrame((f: any) => f.push === 'connected');
        const viaSse = await sendCommand(url, connected.session, { id: 1, method: 'rpc', params: { method: 'ping', data: `s${i}` } });
        assert.deepEqual(viaSse.body, [{ id: 1, result: { data: { echo: `s${i}`, client: connected.client, via: 'sse' } } }]);
        sse.abort();
        const opened = await pollOpen(url, { token: await token(`poll${i}`) });
        const body = opened.body as { session: string; messages: { push?: string; client?: string }[] };
        const client = body.messages.find((m) => m.push === 'connected')?.client;
        assert.equal(typeof client, 'string', JSON.stringify(body));
        const viaPoll = await sendCommand(url, body.session, [{ id: 2, method: 'rpc', params: { method: 'ping', data: `p${i}` } }]);
        assert.deepEqual(viaPoll.body, [{ id: 2, result: { data: { echo: `p${i}`, client, via: 'long_poll' } } }]);
      }
    } finally {
      for (const client of clients) await client.close().catch(() => undefined);
      await herald?.stop();
      backend.closeAllConnections();
      await new Promise((resolve) => backend.close(resolve));
    }
  });
});
