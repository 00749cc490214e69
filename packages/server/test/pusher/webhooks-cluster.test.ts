/**
 * Pusher webhooks in cluster mode (`herald serve --workers 2`, sqlite
 * engine): pusher-js tabs of two users on one presence channel, spread
 * over both workers. The primary decides the transitions and sends the
 * batches: exactly one channel_occupied and one channel_vacated, one
 * member_added and one member_removed per user; a client event sent on a
 * worker reaches the primary's outbox. Every request verified by the
 * `pusher` SDK.
 */
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Pusher from 'pusher';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { PusherWebhookReceiver } from '../helpers/pusher-webhook-receiver.ts';
import { connected, disconnectAll, pusherClient, startAuthServer, subscribed, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAppStore } from '../../src/apps/sqlite-app-store.ts';
import { buildConfig } from '../../src/config/load.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-pusher-cluster-webhooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => disconnectAll());

/** Channels held per node (taps included), from the API's info: each worker is a node. */
async function channelsByNode(port: number, apiKey: string): Promise<Map<string, number>> {
  const response = await fetch(`http://127.0.0.1:${port}/api/info`, { method: 'POST', headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' }, body: '{}' });
  if (!response.ok) throw new Error(`info answered ${response.status}`);
  const info = (await response.json()) as { nodes: { id: string; channels: number }[] };
  return new Map(info.nodes.map((n) => [n.id, n.channels]));
}

function lines(receiver: PusherWebhookReceiver, channel: string): string[] {
  return receiver
    .events()
    .filter((e) => e.channel === channel && e.name !== 'client_event')
    .map((e) => `${e.name}${e.user_id === undefined ? '' : ' ' + e.user_id}`);
}

describe('Pusher webhooks in cluster mode', () => {
  it('two workers: one occupied and one vacated, one member_added and member_removed per user; a worker\'s client event reaches the webhook', async () => {
    const app = testApp('1', { clientEvents: true });
    const receiver = await PusherWebhookReceiver.start(app);
    writeFileSync(join(dir, 'app-secret'), app.secret, { mode: 0o600 });
    writeFileSync(join(dir, 'hmac'), randomBytes(32).toString('base64url'), { mode: 0o600 });
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
        api: { rateLimitPerIp: 100000, rateLimitPerKey: 100000 },
        apps: {
          list: [
            {
              id: app.id,
              key: app.key,
              secretFile: join(dir, 'app-secret'),
              clientEvents: true,
              webhooks: [{ url: receiver.url, events: ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_event'] }],
            },
          ],
        },
        webhooks: { batchWindowMs: 20 },
      }),
    );
    const apiKey = randomBytes(24).toString('base64url');
    const herald = new HeraldProcess(['--config', config, '--workers', '2'], dir, { HERALD_API_KEY: apiKey });
    const users = new Map<string, string>();
    try {
      const port = await herald.listeningPort();
      const sdk = new Pusher({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(port), useTLS: false });
      const auth = await startAuthServer(sdk, (socketId) => ({ user_id: users.get(socketId) ?? 'nobody' }));
      try {
        const target = { server: { port } } as unknown as PusherHerald;
        const baseline = await eventually(async () => {
          const counts = await channelsByNode(port, apiKey);
          return counts.size === 2 ? counts : undefined;
        }, 'info listing both workers', 15000);
        // Three tabs each of alice and bob: the primary hands connections to the workers in turn.
        const tabs: { user: string; client: ReturnType<typeof pusherClient> }[] = [];
        for (let i = 0; i < 3; i++) {
          for (const user of ['alice', 'bob']) {
            const client = pusherClient(target, app.key, { channelAuthorization: { endpoint: auth.channelUrl, transport: 'ajax' } });
            users.set(await connected(client), user);
            await subscribed(client, 'presence-room');
            tabs.push({ user, client });
          }
        }
        // Both workers hold the channel (each node's snapshot, at most a few seconds old).
        await eventually(async () => {
          const now = await channelsByNode(port, apiKey);
          return [...now].every(([id, n]) => n > (baseline.get(id) ?? 0)) ? true : undefined;
        }, 'the channel on both workers', 15000);
        await eventually(async () => (lines(receiver, 'presence-room').length >= 3 ? true : undefined), 'occupied and two members');
        const sender = tabs[0]!;
        sender.client.channel('presence-room').trigger('client-hello', { from: sender.user });
        const clientEvent = await eventually(async () => receiver.events().find((e) => e.name === 'client_event'), 'the client event');
        assert.deepEqual(clientEvent, {
          name: 'client_event',
          channel: 'presence-room',
          event: 'client-hello',
          data: JSON.stringify({ from: sender.user }),
          socket_id: sender.client.connection.socket_id,
          user_id: sender.user,
        });
        for (const { client } of tabs) client.disconnect();
        const seen = await eventually(async () => {
          const l = lines(receiver, 'presence-room');
          return l.includes('channel_vacated') ? l : undefined;
        }, 'vacated');
        await new Promise((resolve) => setTimeout(resolve, 500));
        const all = lines(receiver, 'presence-room');
        assert.equal(seen[0], 'channel_occupied');
        assert.equal(all.at(-1), 'channel_vacated');
        assert.deepEqual([...all].sort(), ['channel_occupied', 'channel_vacated', 'member_added alice', 'member_added bob', 'member_removed alice', 'member_removed bob']);
        assert.ok(receiver.requests.every((r) => r.valid), 'every request verifies');
      } finally {
        await auth.close();
      }
    } finally {
      disconnectAll();
      await herald.stop();
      await receiver.close();
    }
  });

  it('an app created in the state file while the cluster runs (as `herald apps create` does): the primary sends its webhooks', async () => {
    const app = testApp('shop');
    const receiver = await PusherWebhookReceiver.start(app);
    writeFileSync(join(dir, 'hmac2'), randomBytes(32).toString('base64url'), { mode: 0o600 });
    const stateDir = join(dir, 'state-store-apps');
    const config = join(dir, 'herald-store-apps.json');
    writeFileSync(
      config,
      JSON.stringify({
        auth: { hmacSecretFile: join(dir, 'hmac2') },
        listen: { host: '127.0.0.1', port: 0 },
        admin: { port: 0 },
        stateDir,
        log: { level: 'info' },
        process: { allowRoot: true },
        limits: { newConnectionsPerIpPerSecond: 100000 },
        apps: { pollIntervalMs: 200 },
        webhooks: { batchWindowMs: 20 },
      }),
    );
    const herald = new HeraldProcess(['--config', config, '--workers', '2'], dir, { HERALD_API_KEY: randomBytes(24).toString('base64url') });
    try {
      const port = await herald.listeningPort();
      const store = openSqliteStore({ stateDir, claim: false });
      try {
        const now = Date.now();
        const limits = buildConfig({ apps: { list: [{ id: 'x', key: 'x', secretEnv: 'X' }] } }, { env: {} }).apps.list[0]!.limits;
        const outcome = await new SqliteAppStore(store.db).create({
          id: app.id,
          key: app.key,
          secret: app.secret,
          name: 'Shop',
          enabled: true,
          clientEvents: false,
          userAuthentication: true,
          subscriptionCount: false,
          allowedOrigins: null,
          limits,
          webhooks: [{ url: receiver.url, events: ['channel_occupied', 'channel_vacated'] }],
          createdAt: now,
          updatedAt: now,
        });
        assert.equal(outcome, 'created');
      } finally {
        store.close();
      }
      // Every worker and the primary see it at their next look at the store.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      const target = { server: { port } } as unknown as PusherHerald;
      const clients = [];
      for (let i = 0; i < 4; i++) {
        const client = pusherClient(target, app.key);
        await connected(client);
        await subscribed(client, 'news');
        clients.push(client);
      }
      await eventually(async () => (receiver.events().length >= 1 ? true : undefined), 'channel_occupied');
      for (const client of clients) client.disconnect();
      await eventually(async () => (receiver.events().length >= 2 ? true : undefined), 'channel_vacated');
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual(
        receiver.events().map((e) => `${e.name} ${e.channel}`),
        ['channel_occupied news', 'channel_vacated news'],
      );
      assert.ok(receiver.requests.every((r) => r.valid));
    } finally {
      disconnectAll();
      await herald.stop();
      await receiver.close();
    }
  });
});
