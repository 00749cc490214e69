/**
 * Private and presence channels with real pusher-js in Node, its authorizer
 * pointed at an auth endpoint that signs with the official `pusher` SDK:
 * signatures as Pusher defines them, presence members once per user across
 * tabs, presence limits.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { unique } from '../helpers/herald-ws.ts';
import { disconnectAll, nextEvent, rawPusher, signSubscription, startPusherHerald, startSignedUsers, subscribed, testApp, type PusherHerald, type SignedUsers } from '../helpers/pusher-socket.ts';

describe('pusher socket: private and presence channels', { timeout: 60000 }, () => {
  let h: PusherHerald;
  /** The auth endpoint: each socket is the user (and user_info) it connected as. */
  let auth: SignedUsers;
  const app = testApp('main', { limits: { maxPresenceMembers: 3, maxPresenceMemberBytes: 64 } });

  before(async () => {
    h = await startPusherHerald([app]);
    auth = await startSignedUsers(h, app);
  });
  afterEach(() => disconnectAll());
  after(async () => {
    await auth.close();
    await h.close();
  });

  /** A pusher-js client whose auth endpoint says it is `user`. */
  const client = async (user?: string, info?: Record<string, unknown>) => (await auth.client(user, { info })).c;
  const sign = (socketId: string, channel: string, data?: string) => signSubscription(app, socketId, channel, data);
  const raw = () => rawPusher(h, app.key);

  test('private channel: pusher-js subscribes through the auth endpoint and receives triggers', async () => {
    const channel = unique('private-orders');
    const c = await client('alice');
    await subscribed(c, channel);
    assert.deepEqual(auth.seen.filter((name) => name === channel).length, 1);
    const arriving = nextEvent(c, channel, 'paid');
    const answer = await h.api('publish', { channel, data: { event: 'paid', data: '{"total":3}' } });
    assert.equal(answer.status, 200);
    assert.deepEqual(await arriving, { total: 3 });
  });

  test('private channel: no auth, a signature for another socket id, another channel, another secret or key → subscription_error 401', async () => {
    const channel = unique('private-x');
    const [r, socketId] = await raw();
    const [, otherSocket] = await raw();
    const attempts = [
      { channel },
      { channel, auth: sign(otherSocket, channel) },
      { channel, auth: sign(socketId, channel + 'y') },
      { channel, auth: signSubscription({ key: app.key, secret: 'another-secret-0123456789' }, socketId, channel) },
      { channel, auth: signSubscription({ key: 'another-key', secret: app.secret }, socketId, channel) },
      { channel, auth: sign(socketId, channel).slice(0, -2) },
      { channel, auth: 'garbage' },
    ];
    for (const data of attempts) {
      const from = r.frames.length;
      r.send({ event: 'pusher:subscribe', data });
      const error = await r.next((f) => f.event === 'pusher:subscription_error', 5000, from);
      assert.equal(error.data.status, 401, JSON.stringify(data));
      assert.equal(error.channel, channel);
    }
    assert.equal(r.frames.filter((f) => f.event === 'pusher_internal:subscription_succeeded').length, 0);
    // The right signature works on the same connection.
    r.send({ event: 'pusher:subscribe', data: { channel, auth: sign(socketId, channel) } });
    await r.event('pusher_internal:subscription_succeeded');
  });

  test('presence: member list, member_added once per user across tabs, member_removed when the last tab leaves', async () => {
    const channel = unique('presence-room');
    const alice = await client('alice', { name: 'Alice' });
    const first = await subscribed(alice, channel);
    assert.equal(first.count, 1);
    assert.deepEqual(first.me, { id: 'alice', info: { name: 'Alice' } });
    const added: string[] = [];
    const removed: string[] = [];
    alice.channel(channel).bind('pusher:member_added', (m: { id: string }) => added.push(m.id));
    alice.channel(channel).bind('pusher:member_removed', (m: { id: string }) => removed.push(m.id));
    const bobJoined = nextEvent(alice, channel, 'pusher:member_added');
    const bob1 = await client('bob', { name: 'Bob' });
    const members = await subscribed(bob1, channel);
    assert.equal(members.count, 2);
    assert.deepEqual(Object.keys(members.members).sort(), ['alice', 'bob']);
    assert.deepEqual((await bobJoined).info, { name: 'Bob' });
    // A second tab of bob: no member_added.
    const bob2 = await client('bob', { name: 'Bob' });
    const again = await subscribed(bob2, channel);
    assert.equal(again.count, 2);
    // carol joins after: her member_added orders after anything bob2 could have caused.
    const carolJoined = nextEvent(alice, channel, 'pusher:member_added');
    const carol = await client('carol');
    await subscribed(carol, channel);
    assert.equal((await carolJoined).id, 'carol');
    assert.deepEqual(added, ['bob', 'carol']);
    // bob1 leaves: bob still has a tab, nothing removed. Then bob2: one member_removed.
    bob1.unsubscribe(channel);
    const bobLeft = nextEvent(alice, channel, 'pusher:member_removed');
    bob2.disconnect();
    assert.equal((await bobLeft).id, 'bob');
    const carolLeft = nextEvent(alice, channel, 'pusher:member_removed');
    carol.unsubscribe(channel);
    assert.equal((await carolLeft).id, 'carol');
    assert.deepEqual(removed, ['bob', 'carol']);
  });

  test('presence: channel_data must match the signature; members limit 403; user_info limit 413', async () => {
    const channel = unique('presence-limits');
    const [r, socketId] = await raw();
    const data = JSON.stringify({ user_id: 'mallory' });
    const forged = JSON.stringify({ user_id: 'admin' });
    r.send({ event: 'pusher:subscribe', data: { channel, auth: sign(socketId, channel, data), channel_data: forged } });
    assert.equal((await r.event('pusher:subscription_error')).data.status, 401);
    const big = JSON.stringify({ user_id: 'big', user_info: { text: 'x'.repeat(100) } });
    r.send({ event: 'pusher:subscribe', data: { channel, auth: sign(socketId, channel, big), channel_data: big } });
    await r.next((f) => f.event === 'pusher:subscription_error' && f.data.status === 413);
    const noUser = JSON.stringify({ user_info: {} });
    r.send({ event: 'pusher:subscribe', data: { channel, auth: sign(socketId, channel, noUser), channel_data: noUser } });
    await r.next((f) => f.event === 'pusher:subscription_error' && f.data.status === 400);
    // Three users fill the channel (limit 3); a fourth is refused, a second tab of a member is not.
    for (const user of ['u1', 'u2', 'u3']) {
      const [m, id] = await raw();
      const d = JSON.stringify({ user_id: user });
      m.send({ event: 'pusher:subscribe', data: { channel, auth: sign(id, channel, d), channel_data: d } });
      await m.event('pusher_internal:subscription_succeeded');
    }
    const d4 = JSON.stringify({ user_id: 'u4' });
    r.send({ event: 'pusher:subscribe', data: { channel, auth: sign(socketId, channel, d4), channel_data: d4 } });
    await r.next((f) => f.event === 'pusher:subscription_error' && f.data.status === 403);
    const [tab, tabId] = await raw();
    const d1 = JSON.stringify({ user_id: 'u1' });
    tab.send({ event: 'pusher:subscribe', data: { channel, auth: sign(tabId, channel, d1), channel_data: d1 } });
    const ok = await tab.event('pusher_internal:subscription_succeeded');
    assert.equal(ok.data.presence.count, 3);
  });
});
