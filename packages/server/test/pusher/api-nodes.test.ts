/**
 * The Pusher HTTP API across two Herald nodes on the Redis engine: a
 * request to node A answers for pusher-js connections held by node B
 * (presence users and counts, the channel list, subscription_count once
 * B's snapshot arrives), its triggers reach B's subscribers (socket_id
 * exclusion included), and terminate_connections closes B's connections.
 * Needs Redis at HERALD_TEST_REDIS_URL (default 127.0.0.1:6379); skips
 * loudly without it, fails under HERALD_REQUIRE_SERVICES=1.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { eventually, unique } from '../helpers/herald-ws.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { disconnectAll, nextEvent, serverSdk, startPusherHerald, startSignedUsers, subscribed, testApp, type PusherHerald, type SignedUsers } from '../helpers/pusher-socket.ts';

const skip = missingService('Redis', await redisAvailable());

describe('Pusher HTTP API across two Redis nodes', { timeout: 90000, skip }, () => {
  const app = testApp('multi');
  const engine = { type: 'redis', redisUrl: REDIS_URL, redisPrefix: `herald-test-pusher-api-${randomBytes(4).toString('hex')}` };
  let a: PusherHerald;
  let b: PusherHerald;
  let users: SignedUsers;

  before(async () => {
    a = await startPusherHerald([app], { engine });
    b = await startPusherHerald([app], { engine });
    users = await startSignedUsers(a, app);
  });
  afterEach(() => disconnectAll());
  after(async () => {
    await users?.close();
    await a?.close();
    await b?.close();
  });

  /** A pusher-js client on node `h`, signed as `user` by node A's auth endpoint. */
  const client = (h: PusherHerald, user?: string) => users.client(user, { on: h });

  test('presence members on both nodes: users, user_count and occupied from either node', async () => {
    const channel = unique('presence-span');
    const amy = await client(b, 'amy');
    const ben = await client(a, 'ben');
    await subscribed(amy.c, channel);
    await subscribed(ben.c, channel);
    for (const h of [a, b]) {
      const api = serverSdk(h, app);
      assert.deepEqual(await (await api.get({ path: `/channels/${channel}/users` })).json(), { users: [{ id: 'amy' }, { id: 'ben' }] });
      const info = await (await api.get({ path: `/channels/${channel}`, params: { info: 'user_count' } })).json();
      assert.deepEqual(info, { occupied: true, user_count: 2 });
    }
  });

  test('a trigger on node A reaches pusher-js on node B, but not the excluded socket there', async () => {
    const channel = unique('span');
    const one = await client(b);
    const two = await client(b);
    await subscribed(one.c, channel);
    await subscribed(two.c, channel);
    const seenByOne: unknown[] = [];
    one.c.channel(channel).bind('e', (data: unknown) => seenByOne.push(data));
    const toTwo = nextEvent(two.c, channel, 'e');
    await serverSdk(a, app).trigger(channel, 'e', 'first', { socket_id: one.socketId });
    assert.equal(await toTwo, 'first');
    const toOne = nextEvent(one.c, channel, 'e');
    await serverSdk(a, app).trigger(channel, 'e', 'second');
    assert.equal(await toOne, 'second');
    assert.deepEqual(seenByOne, ['second']);
  });

  test('subscription_count and the channel list on node A count node B\'s subscribers (from its snapshot)', async () => {
    const channel = unique('counted');
    await subscribed((await client(b)).c, channel);
    await subscribed((await client(b)).c, channel);
    await subscribed((await client(a)).c, channel);
    const api = serverSdk(a, app);
    await eventually(async () => {
      const info = await (await api.get({ path: `/channels/${channel}`, params: { info: 'subscription_count' } })).json();
      return info.subscription_count === 3 ? info : undefined;
    }, 'subscription_count 3 on node A');
    const only = unique('only-on-b');
    await subscribed((await client(b)).c, only);
    await eventually(async () => {
      const listed = await (await api.get({ path: '/channels', params: { filter_by_prefix: only, info: 'subscription_count' } })).json();
      return listed.channels[only]?.subscription_count === 1 ? listed : undefined;
    }, 'node B\'s channel in node A\'s list');
  });

  test('terminate_connections on node A closes the user\'s connections on node B', async () => {
    const tom = await client(b, 'tom');
    tom.c.signin();
    await tom.c.user.signinDonePromise;
    const closed = new Promise<any>((resolve) => tom.c.connection.bind('error', resolve));
    await serverSdk(a, app).terminateUserConnections('tom');
    const error = await closed;
    assert.equal((error.error?.data ?? error.data).code, 4009);
  });
});
