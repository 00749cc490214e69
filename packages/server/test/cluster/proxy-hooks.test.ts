/**
 * Proxy hooks in cluster mode (`herald serve --workers 2`): every worker
 * calls the backend itself (docs/hooks.md: calls in flight and timeouts
 * are per process). Connections are opened until both workers hold some
 * (the API's `info` counts them per node); every one of them then goes
 * through each hook kind, connect, refresh, subscribe, publish and rpc,
 * with the backend's answers taking effect; SSE and long-poll sessions,
 * whose command POSTs the primary routes to the owning worker, answer rpc
 * too. The backend checks every call's signature.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { eventually, openWs, type WsClient } from '../helpers/herald-ws.ts';
import { openSse, pollOpen, sendCommand, sseUrl } from '../helpers/rt-clients.ts';
import { startHeraldWorkers, type HeraldWorkers } from './harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-cluster-hooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const hookSecret = randomBytes(32).toString('base64url');
const hookSecretFile = join(dir, 'hook-secret');
writeFileSync(hookSecretFile, hookSecret, { mode: 0o600 });

interface HookCall {
  readonly event: string;
  readonly body: Record<string, any>;
  readonly verified: boolean;
}

/** docs/hooks.md "Verifying a call". */
function verified(headers: IncomingHttpHeaders, raw: string): boolean {
  const timestamp = Number(headers['x-herald-timestamp']);
  const expected = Buffer.from('v1=' + createHmac('sha256', hookSecret).update(`${timestamp}.${raw}`).digest('hex'));
  const given = Buffer.from(String(headers['x-herald-signature'] ?? ''));
  return Math.abs(Date.now() / 1000 - timestamp) <= 300 && given.length === expected.length && timingSafeEqual(given, expected);
}

/** A backend answering every hook kind: short expiry at connect (so refresh is asked), replaced publish data, rpc echo. */
async function startBackend(): Promise<{ url: string; calls: HookCall[]; close(): Promise<void> }> {
  const calls: HookCall[] = [];
  const answer = (event: string, body: Record<string, any>): unknown => {
    const now = Math.floor(Date.now() / 1000);
    switch (event) {
      case 'connect':
        return { result: { user: `hooked-${String(body['user'])}`, expire_at: now + 2 } };
      case 'refresh':
        return { result: { expire_at: now + 3600, info: { via: 'refresh-hook' } } };
      case 'subscribe':
        return { result: { info: { channel: body['channel'] } } };
      case 'publish':
        return { result: { data: { replaced: body['data'], by: 'publish-hook' } } };
      default:
        return { result: { data: { echo: body['data'], client: body['client'], via: body['transport'] } } };
    }
  };
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const body = JSON.parse(raw) as Record<string, any>;
      const event = String(request.headers['x-herald-event']);
      calls.push({ event, body, verified: verified(request.headers, raw) });
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer(event, body)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    close: async () => {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

describe('proxy hooks in cluster mode', () => {
  it('each hook kind works from every worker: connect, refresh, subscribe, publish and rpc (WebSocket, SSE, long polling)', async () => {
    const backend = await startBackend();
    const hook = (path: string) => ({ url: `${backend.url}/${path}`, secretFile: hookSecretFile });
    let herald: HeraldWorkers | undefined;
    const clients: WsClient[] = [];
    try {
      const { port, url, token, spread } = (herald = await startHeraldWorkers(dir, {
        channels: { namespaces: [{ name: 'chat', presence: true, clientPublish: true }] },
        hooks: { connect: hook('connect'), refresh: hook('refresh'), subscribe: hook('subscribe'), publish: hook('publish'), rpc: hook('rpc') },
      }));
      // Connections until both workers hold some: each one passed the connect hook on its worker.
      await spread(clients, async () => {
        const client = await openWs(`ws://127.0.0.1:${port}/connection/websocket`);
        await client.connect(await token(`user${clients.length}`));
        return client;
      });

      for (const [i, client] of clients.entries()) {
        const channel = `chat:room${i}`;
        await client.call('subscribe', { channel });
        const presence = await client.call('presence', { channel });
        assert.deepEqual(presence.clients[client.clientId].chan_info, { channel }, 'subscribe hook: chan_info from the backend');
        assert.equal(presence.clients[client.clientId].user, `hooked-user${i}`, 'connect hook: the user the backend set');
        await client.call('publish', { channel, data: { n: i } });
        const [publication] = await client.waitPublications(channel, 1);
        assert.deepEqual(publication.data, { replaced: { n: i }, by: 'publish-hook' }, 'publish hook: the data replaced');
        assert.deepEqual(await client.call('rpc', { method: 'ping', data: i }), { data: { echo: i, client: client.clientId, via: 'websocket' } }, 'rpc hook');
      }
      // The connect hook set a 2 s expiry: each worker asks the refresh hook, and the connections live on.
      await eventually(async () => (clients.every((client) => backend.calls.some((c) => c.event === 'refresh' && c.body['client'] === client.clientId)) ? true : undefined), 'a refresh per connection', 30000);
      // Past the connect hook's expiry: each connection lives on (the refresh hook extended it) and still answers.
      for (const [i, client] of clients.entries()) {
        assert.equal(client.closeInfo, undefined, 'refreshed by the hook, still open');
        assert.deepEqual(await client.call('rpc', { method: 'again', data: i }), { data: { echo: i, client: client.clientId, via: 'websocket' } });
      }

      // SSE and long polling: the command POST may land on either worker; the session's worker asks the backend.
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
      for (const event of ['connect', 'refresh', 'subscribe', 'publish', 'rpc']) assert.ok(backend.calls.filter((c) => c.event === event).length >= clients.length, `${event} calls`);
      assert.ok(backend.calls.every((c) => c.verified), 'every call signed');
    } finally {
      for (const client of clients) await client.close().catch(() => undefined);
      await herald?.stop();
      await backend.close();
    }
  });
});
