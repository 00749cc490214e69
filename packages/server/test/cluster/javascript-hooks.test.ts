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
import { SignJWT } from 'jose';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { eventually, openWs, type WsClient } from '../helpers/herald-ws.ts';
import { openSse, pollOpen, sendCommand, sseUrl } from '../helpers/rt-clients.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-cluster-js-hooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const HOOK = `
export function onConnect(e) { return { result: { user: 'js-' + e.user } }; }
export function onPublish(e) { return { result: { data: { replaced: e.data, by: 'onPublish' } } }; }
export function onRpc(e) { return { result: { data: { echo: e.data, client: e.client, via: e.transport } } }; }
`;

function token(secret: string, sub: string): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuedAt().setExpirationTime(Math.floor(Date.now() / 1000) + 3600).sign(new TextEncoder().encode(secret));
}

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
    const hmac = randomBytes(32).toString('base64url');
    writeFileSync(join(dir, 'hmac'), hmac, { mode: 0o600 });
    const hookFile = join(dir, 'hooks.js');
    writeFileSync(hookFile, HOOK);
    const config = join(dir, 'herald.json');
    writeFileSync(
      config,
      JSON.stringify({
        auth: { hmacSecretFile: join(dir, 'hmac') },
        listen: { host: '127.0.0.1', port: 0 },
        admin: { port: 0 },
        stateDir: join(dir, 'state'),
        log: { level: 'info' },
        process: { allowRoot: true },
        limits: { newConnectionsPerIpPerSecond: 100000 },
        // The test polls /api/info every 20 ms: the default 600 per IP per minute would answer 429.
        api: { rateLimitPerIp: 100000, rateLimitPerKey: 100000 },
        channels: { namespaces: [{ name: 'chat', presence: true, clientPublish: true }] },
        hooks: {
          subscribe: { url: `http://127.0.0.1:${(backend.address() as AddressInfo).port}/subscribe`, secretFile: join(dir, 'hook-secret') },
          javascript: { file: hookFile, events: ['connect', 'publish', 'rpc'], pool: 1, timeoutMs: 1000 },
        },
      }),
    );
    const apiKey = randomBytes(24).toString('base64url');
    const herald = new HeraldProcess(['--config', config, '--workers', '2'], dir, { HERALD_API_KEY: apiKey });
    const clients: WsClient[] = [];
    try {
      const port = await herald.listeningPort();
      const url = `http://127.0.0.1:${port}`;
      const nodes = async (): Promise<{ id: string; connections: number }[]> => {
        const response = await fetch(url + '/api/info', { method: 'POST', headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' }, body: '{}' });
        if (!response.ok) throw new Error(`info answered ${response.status}: ${await response.text()}`);
        return ((await response.json()) as { nodes: { id: string; connections: number }[] }).nodes;
      };
      await eventually(async () => ((await nodes()).length === 2 ? true : undefined), 'both workers in info', 30000);
      for (let round = 0; round < 30; round++) {
        const client = await openWs(`ws://127.0.0.1:${port}/connection/websocket`);
        await client.connect(await token(hmac, `user${round}`));
        clients.push(client);
        const counts = await eventually(async () => {
          const n = await nodes();
          return n.reduce((sum, node) => sum + node.connections, 0) === clients.length ? n : undefined;
        }, 'node snapshots adding up', 15000);
        if (counts.filter((node) => node.connections > 0).length === 2 && clients.length >= 4) break;
      }
      await eventually(async () => {
        const n = await nodes();
        return n.filter((node) => node.connections > 0).length === 2 && n.reduce((sum, node) => sum + node.connections, 0) === clients.length ? true : undefined;
      }, 'connections on both workers', 30000);

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
        const sse = await openSse(sseUrl(url, { token: await token(hmac, `sse${i}`) }));
        const connected = await sse.waitForFrame((f: any) => f.push === 'connected');
        const viaSse = await sendCommand(url, connected.session, { id: 1, method: 'rpc', params: { method: 'ping', data: `s${i}` } });
        assert.deepEqual(viaSse.body, [{ id: 1, result: { data: { echo: `s${i}`, client: connected.client, via: 'sse' } } }]);
        sse.abort();
        const opened = await pollOpen(url, { token: await token(hmac, `poll${i}`) });
        const body = opened.body as { session: string; messages: { push?: string; client?: string }[] };
        const client = body.messages.find((m) => m.push === 'connected')?.client;
        assert.equal(typeof client, 'string', JSON.stringify(body));
        const viaPoll = await sendCommand(url, body.session, [{ id: 2, method: 'rpc', params: { method: 'ping', data: `p${i}` } }]);
        assert.deepEqual(viaPoll.body, [{ id: 2, result: { data: { echo: `p${i}`, client, via: 'long_poll' } } }]);
      }
    } finally {
      for (const client of clients) await client.close().catch(() => undefined);
      await herald.stop();
      backend.closeAllConnections();
      await new Promise((resolve) => backend.close(resolve));
    }
  });
});
