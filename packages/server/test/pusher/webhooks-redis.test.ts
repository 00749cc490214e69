/**
 * Pusher webhooks on two Redis-engine nodes sharing one (real) Redis:
 * pusher-js tabs of one user on both nodes and another user's on one,
 * leaving in an order that crosses the nodes. Redis decides the
 * transitions: exactly one channel_occupied and one channel_vacated, one
 * member_added and one member_removed per user, vacated last; the shared
 * outbox sends each event once (a receiver failing the first attempts
 * still gets them once). A client event sent on either node reaches the
 * webhook. Every request verified by the `pusher` SDK.
 */
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Pusher from 'pusher';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { PusherWebhookReceiver } from '../helpers/pusher-webhook-receiver.ts';
import { connected, disconnectAll, pusherClient, startAuthServer, subscribed, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';
import { cleanupSpawned, deletePrefix, startRedisHerald, Tokens, uniquePrefix, type RedisHerald } from '../redis/harness.ts';

const skip = missingService('Redis', await redisAvailable());
const dir = mkdtempSync(join(tmpdir(), 'herald-pusher-redis-webhooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function lines(receiver: PusherWebhookReceiver, channel: string): string[] {
  return receiver
    .events()
    .filter((e) => e.channel === channel && e.name !== 'client_event')
    .map((e) => `${e.name}${e.user_id === undefined ? '' : ' ' + e.user_id}`);
}

describe('Pusher webhooks on two redis nodes', { skip }, () => {
  const nodes: RedisHerald[] = [];
  const prefixes: string[] = [];

  afterEach(async () => {
    disconnectAll();
    for (const node of nodes.splice(0)) await node.close().catch(() => undefined);
    cleanupSpawned();
    for (const prefix of prefixes.splice(0)) await deletePrefix(REDIS_URL, prefix);
  });

  it('members once per user and one occupied/vacated across the nodes; client events from both nodes; each event once after failed attempts', async () => {
    const app = testApp('1', { clientEvents: true });
    const secretFile = join(dir, 'app-secret');
    writeFileSync(secretFile, app.secret, { mode: 0o600 });
    const receiver = await PusherWebhookReceiver.start(app, (n) => (n < 2 ? 503 : 200));
    const prefix = uniquePrefix('pusher-wh');
    prefixes.push(prefix);
    const tokens = new Tokens();
    const overrides = {
      apps: {
        list: [
          {
            id: app.id,
            key: app.key,
            secretFile,
            clientEvents: true,
            webhooks: [{ url: receiver.url, events: ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_event'] }],
          },
        ],
      },
      webhooks: { batchWindowMs: 20, backoffMinMs: 50, backoffMaxMs: 200, pollIntervalMs: 200, timeoutMs: 1000 },
    };
    const users = new Map<string, string>();
    try {
      for (const name of ['A', 'B']) nodes.push(await startRedisHerald(name, { redisUrl: REDIS_URL, prefix, tokens, engine: { presenceTtlMs: 3000 }, overrides }));
      const [a, b] = nodes as [RedisHerald, RedisHerald];
      const sdk = new Pusher({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(a.server.port), useTLS: false });
      const auth = await startAuthServer(sdk, (socketId) => ({ user_id: users.get(socketId) ?? 'nobody' }));
      try {
        const tab = async (node: RedisHerald, user: string) => {
          const client = pusherClient(node as unknown as PusherHerald, app.key, { channelAuthorization: { endpoint: auth.channelUrl, transport: 'ajax' } });
          users.set(await connected(client), user);
          await subscribed(client, 'presence-room');
          return client;
        };
        const alice1 = await tab(a, 'alice');
        const alice2 = await tab(b, 'alice');
        const bob = await tab(b, 'bob');
        await eventually(async () => (lines(receiver, 'presence-room').length >= 3 ? true : undefined), 'occupied and two members', 30000);
        alice1.channel('presence-room').trigger('client-a', { on: 'A' });
        bob.channel('presence-room').trigger('client-b', { on: 'B' });
        const clientEvents = await eventually(async () => {
          const events = receiver.events().filter((e) => e.name === 'client_event');
          return events.length >= 2 ? events : undefined;
        }, 'client events from both nodes', 30000);
        assert.deepEqual(clientEvents.map((e) => `${e['event']} ${e.user_id} ${e['socket_id'] === (e['event'] === 'client-a' ? alice1 : bob).connection.socket_id}`).sort(), [
          'client-a alice true',
          'client-b bob true',
        ]);
        // A's only subscriber leaves first while B still holds the channel and alice: no member_removed, no vacated.
        alice1.disconnect();
        await new Promise((resolve) => setTimeout(resolve, 500));
        assert.deepEqual(lines(receiver, 'presence-room').filter((l) => !l.startsWith('channel_occupied') && !l.startsWith('member_added')), []);
        bob.disconnect();
        alice2.disconnect();
        const seen = await eventually(async () => {
          const l = lines(receiver, 'presence-room');
          return l.includes('channel_vacated') ? l : undefined;
        }, 'vacated', 30000);
        await new Promise((resolve) => setTimeout(resolve, 500));
        const all = lines(receiver, 'presence-room');
        assert.equal(seen[0], 'channel_occupied');
        assert.equal(all.at(-1), 'channel_vacated');
        assert.deepEqual([...all].sort(), ['channel_occupied', 'channel_vacated', 'member_added alice', 'member_added bob', 'member_removed alice', 'member_removed bob']);
        assert.equal(receiver.events().filter((e) => e.name === 'client_event').length, 2, 'each client event once');
        assert.ok(receiver.requests.length >= 3, 'two failed attempts, then deliveries');
        assert.ok(receiver.requests.every((r) => r.valid), 'every request verifies');
      } finally {
        await auth.close();
      }
    } finally {
      disconnectAll();
      await receiver.close();
    }
  });

  it('an app whose URL is down holds at most limits.maxPendingWebhookEvents in the shared outbox; the transitions beyond are dropped and counted', async () => {
    const app = testApp('1');
    const secretFile = join(dir, 'app-secret-cap');
    writeFileSync(secretFile, app.secret, { mode: 0o600 });
    const down = await PusherWebhookReceiver.start(app);
    const url = down.url;
    await down.close(); // nothing listens: every attempt fails and is retried
    const prefix = uniquePrefix('pusher-wh-cap');
    prefixes.push(prefix);
    const overrides = {
      apps: { list: [{ id: app.id, key: app.key, secretFile, limits: { maxPendingWebhookEvents: 2 }, webhooks: [{ url, events: ['channel_occupied'] }] }] },
      webhooks: { batchWindowMs: 20, backoffMinMs: 60000, backoffMaxMs: 60000, pollIntervalMs: 200, timeoutMs: 1000 },
    };
    nodes.push(await startRedisHerald('A', { redisUrl: REDIS_URL, prefix, tokens: new Tokens(), engine: { presenceTtlMs: 3000 }, overrides }));
    const node = nodes[0]!;
    const tap = { size: 1, deliverPublication: () => 0, deliverJoinLeave: () => {}, reset: () => {} };
    for (let i = 0; i < 5; i++) await node.server.node.hub.addTap(`c-${i}`, tap);
    const text = await eventually(async () => {
      const metrics = await (await fetch(`http://127.0.0.1:${node.server.adminPort}/metrics`)).text();
      return metrics.includes('herald_webhook_events_total{endpoint="app:1:0",outcome="dropped"} 3') ? metrics : undefined;
    }, 'three occupied events dropped', 30000);
    assert.match(text, /herald_webhook_outbox\{state="pending"\} 2/);
  });
});
