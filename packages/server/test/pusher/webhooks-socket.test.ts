/**
 * Pusher webhooks from real pusher-js clients (Node) on two apps: presence
 * members once per user (two tabs of one user are one member),
 * client_event with its socket id and user id, cache_miss, occupancy;
 * every request verified by the `pusher` SDK's webhook verifier, and
 * nothing of one app at the other's URL although both use the same
 * channel names.
 */
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connected, disconnectAll, pusherClient, serverSdk, startAuthServer, startPusherHerald, subscribed, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';
import { PusherWebhookReceiver } from '../helpers/pusher-webhook-receiver.ts';
import { eventually } from '../helpers/herald-ws.ts';

const ALL = ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_event', 'cache_miss'];
const FAST = { batchWindowMs: 20, backoffMinMs: 20, backoffMaxMs: 100, pollIntervalMs: 200 };

afterEach(() => disconnectAll());

function summary(events: { name: string; channel?: string; user_id?: string }[]): string[] {
  return events.map((e) => `${e.name} ${e.channel}${e.user_id === undefined ? '' : ' ' + e.user_id}`);
}

describe('Pusher webhooks from pusher-js clients', () => {
  it('members once per user, client events, cache misses and occupancy, per app, verified by the pusher SDK', async () => {
    const appA = testApp('a', { clientEvents: true });
    const appB = testApp('b', { clientEvents: true });
    const ra = await PusherWebhookReceiver.start(appA);
    const rb = await PusherWebhookReceiver.start(appB);
    let h: PusherHerald | undefined;
    const users = new Map<string, string>();
    try {
      h = await startPusherHerald(
        [
          { ...appA, webhooks: [{ url: ra.url, events: ALL }] },
          { ...appB, webhooks: [{ url: rb.url, events: ALL }] },
        ],
        { webhooks: FAST },
      );
      const authA = await startAuthServer(serverSdk(h, appA), (socketId) => ({ user_id: users.get(socketId) ?? 'nobody' }));
      const authB = await startAuthServer(serverSdk(h, appB), (socketId) => ({ user_id: users.get(socketId) ?? 'nobody' }));
      try {
        const client = async (app: typeof appA, user: string, auth: typeof authA) => {
          const c = pusherClient(h!, app.key, { channelAuthorization: { endpoint: auth.channelUrl, transport: 'ajax' } });
          users.set(await connected(c), user);
          return c;
        };
        // Two tabs of u1 and one of u2 on app a's presence channel; b-user on app b's channel of the same name.
        const tab1 = await client(appA, 'u1', authA);
        const tab2 = await client(appA, 'u1', authA);
        const other = await client(appA, 'u2', authA);
        const foreign = await client(appB, 'b-user', authB);
        for (const c of [tab1, tab2, other, foreign]) await subscribed(c, 'presence-room');
        await subscribed(other, 'private-game');
        await subscribed(tab1, 'private-game');
        await subscribed(other, 'cache-news');
        other.channel('presence-room').trigger('client-move', { x: 1 });
        other.channel('private-game').trigger('client-shot', 'pew');
        const otherSocket = other.connection.socket_id;
        const clientEvents = await eventually(async () => {
          const events = ra.events().filter((e) => e.name === 'client_event');
          return events.length >= 2 ? events : undefined;
        }, 'two client events');
        const byEvent = new Map(clientEvents.map((e) => [e['event'], e]));
        assert.deepEqual(byEvent.get('client-move'), { name: 'client_event', channel: 'presence-room', event: 'client-move', data: '{"x":1}', socket_id: otherSocket, user_id: 'u2' });
        assert.deepEqual(byEvent.get('client-shot'), { name: 'client_event', channel: 'private-game', event: 'client-shot', data: 'pew', socket_id: otherSocket });
        await eventually(async () => (ra.events().some((e) => e.name === 'cache_miss') ? true : undefined), 'cache_miss');
        assert.deepEqual(
          ra.events().filter((e) => e.name === 'cache_miss'),
          [{ name: 'cache_miss', channel: 'cache-news' }],
        );
        // The second tab leaving is no member_removed; the last one is.
        tab2.disconnect();
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.deepEqual(summary(ra.events().filter((e) => e.name === 'member_removed')), []);
        tab1.disconnect();
        other.disconnect();
        foreign.disconnect();
        const presence = await eventually(async () => {
          const events = ra.events().filter((e) => e.channel === 'presence-room' && e.name !== 'client_event');
          return events.length >= 6 ? events : undefined;
        }, 'six presence-room events at a');
        assert.deepEqual(summary(presence.slice(0, 3)), ['channel_occupied presence-room', 'member_added presence-room u1', 'member_added presence-room u2']);
        assert.deepEqual(summary(presence.slice(3, 5)).sort(), ['member_removed presence-room u1', 'member_removed presence-room u2']);
        assert.deepEqual(summary(presence.slice(5)), ['channel_vacated presence-room']);
        await eventually(async () => (ra.events().filter((e) => e.name === 'channel_vacated').length >= 3 ? true : undefined), 'every channel of a vacated');
        const bEvents = await eventually(async () => (rb.events().length >= 4 ? rb.events() : undefined), 'four events at b');
        assert.deepEqual(summary(bEvents), ['channel_occupied presence-room', 'member_added presence-room b-user', 'member_removed presence-room b-user', 'channel_vacated presence-room']);
        await new Promise((resolve) => setTimeout(resolve, 300));
        // Each event once; nothing of b at a's URL, nothing of a at b's.
        assert.equal(ra.events().filter((e) => e.name === 'member_added').length, 2);
        assert.ok(ra.events().every((e) => e.user_id !== 'b-user'));
        assert.ok(rb.events().every((e) => e.user_id === undefined || e.user_id === 'b-user'));
        assert.equal(rb.events().length, 4);
        for (const request of [...ra.requests, ...rb.requests]) assert.equal(request.valid, true);
      } finally {
        await authA.close();
        await authB.close();
      }
    } finally {
      disconnectAll();
      await h?.close();
      await ra.close();
      await rb.close();
    }
  });
});
