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
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from '../helpers/herald-ws.ts';
import { PusherWebhookReceiver } from '../helpers/pusher-webhook-receiver.ts';
import { connected, disconnectAll, pusherClientOnPort, startSignedUsers, subscribed, testApp, type PusherClient } from '../helpers/pusher-socket.ts';
import { startHeraldWorkers, type HeraldWorkers } from '../cluster/harness.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAppStore } from '../../src/apps/sqlite-app-store.ts';
import { buildConfig } from '../../src/config/load.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-pusher-cluster-webhooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => disconnectAll());

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
    let herald: HeraldWorkers | undefined;
    try {
      herald = await startHeraldWorkers(dir, {
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
      });
      const { channelsByNode } = herald;
      const users = await startSignedUsers(herald.port, app);
      try {
        const baseline = await channelsByNode();
        // Three tabs each of alice and bob: the primary hands connections to the workers in turn.
        const tabs: { user: string; client: PusherClient }[] = [];
        for (let i = 0; i < 3; i++) {
          for (const user of ['alice', 'bob']) {
            const { c: client } = await users.client(user);
            await subscribed(client, 'presence-room');
            tabs.push({ user, client });
          }
        }
        // Both workers hold the channel (each node's snapshot, at most a few seconds old).
        await eventually(async () => {
          const now = await channelsByNode();
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
        await users.close();
      }
    } finally {
      disconnectAll();
      await herald?.stop();
      await receiver.close();
    }
  });

  it('an app created in the state file while the cluster runs (as `herald apps create` does): the primary sends its webhooks', async () => {
    const app = testApp('shop');
    const receiver = await PusherWebhookReceiver.start(app);
    let herald: HeraldWorkers | undefined;
    try {
      herald = await startHeraldWorkers(dir, { apps: { pollIntervalMs: 200 }, webhooks: { batchWindowMs: 20 } }, { name: 'store-apps' });
      const { port, stateDir } = herald;
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
      const clients = [];
      for (let i = 0; i < 4; i++) {
        const client = pusherClientOnPort(port, app.key);
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
      await herald?.stop();
      await receiver.close();
    }
  });
});
