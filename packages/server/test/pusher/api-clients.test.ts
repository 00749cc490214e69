/**
 * The Pusher HTTP API end to end with the real clients on both sides: the
 * official `pusher` server SDK triggers and asks, pusher-js (in Node)
 * subscribes, on the default app and on another app. socket_id exclusion,
 * info in trigger answers, presence users and counts from pusher-js
 * members (two tabs, one user), sendToUser and terminateUserConnections.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { unique } from '../helpers/herald-ws.ts';
import { disconnectAll, nextEvent, serverSdk, startPusherHerald, startSignedUsers, subscribed, testApp, type PusherHerald, type SignedUsers, type TestApp } from '../helpers/pusher-socket.ts';

describe('Pusher HTTP API with pusher-js subscribers', { timeout: 60000 }, () => {
  let h: PusherHerald;
  const main = testApp('main');
  const second = testApp('second');
  /** Each app's auth endpoint, signing each socket as the user it connected as. */
  const users = new Map<string, SignedUsers>();

  before(async () => {
    h = await startPusherHerald([main, second]);
    for (const app of [main, second]) users.set(app.id, await startSignedUsers(h, app));
  });
  afterEach(() => disconnectAll());
  after(async () => {
    for (const server of users.values()) await server.close();
    await h.close();
  });

  /** A connected pusher-js client of `app`; with `user`, its auth endpoints sign it as that user. */
  const client = (app: TestApp, user?: string) => users.get(app.id)!.client(user);

  for (const app of [main, second]) {
    test(`${app.id} app: trigger with socket_id reaches every subscriber but that socket`, async () => {
      const channel = unique('room');
      const a = await client(app);
      const b = await client(app);
      await subscribed(a.c, channel);
      await subscribed(b.c, channel);
      const seenByA: unknown[] = [];
      a.c.channel(channel).bind('greet', (data: unknown) => seenByA.push(data));
      const toB = nextEvent(b.c, channel, 'greet');
      await serverSdk(h, app).trigger(channel, 'greet', { n: 1 }, { socket_id: a.socketId });
      assert.deepEqual(await toB, { n: 1 });
      // The next one, without exclusion, is the first A gets (events on one channel arrive in order).
      const toA = nextEvent(a.c, channel, 'greet');
      await serverSdk(h, app).trigger(channel, 'greet', { n: 2 });
      assert.deepEqual(await toA, { n: 2 });
      assert.deepEqual(seenByA, [{ n: 2 }]);
    });
  }

  test('presence with pusher-js: two tabs of one user and another user → users, user_count, subscription_count, channel list', async () => {
    const channel = unique('presence-team');
    const amy1 = await client(second, 'amy');
    const amy2 = await client(second, 'amy');
    const ben = await client(second, 'ben');
    for (const { c } of [amy1, amy2, ben]) await subscribed(c, channel);
    const api = serverSdk(h, second);
    assert.deepEqual(await (await api.get({ path: `/channels/${channel}/users` })).json(), { users: [{ id: 'amy' }, { id: 'ben' }] });
    assert.deepEqual(await (await api.get({ path: `/channels/${channel}`, params: { info: 'user_count,subscription_count' } })).json(), {
      occupied: true,
      user_count: 2,
      subscription_count: 3,
    });
    const listed = await (await api.get({ path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' } })).json();
    assert.deepEqual(listed.channels[channel], { user_count: 2 });
    const triggered = await api.trigger(channel, 'hi', 'x', { info: 'user_count,subscription_count' });
    assert.deepEqual(await triggered.json(), { channels: { [channel]: { user_count: 2, subscription_count: 3 } } });
    // The other app has no such members.
    assert.deepEqual(await (await serverSdk(h, main).get({ path: `/channels/${channel}/users` })).json(), { users: [] });
    // One tab of amy leaves: still two users; both: one.
    amy1.c.unsubscribe(channel);
    amy2.c.disconnect();
    const users = async () => (await (await api.get({ path: `/channels/${channel}/users` })).json()).users;
    for (let i = 0; i < 50 && (await users()).length !== 1; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(await users(), [{ id: 'ben' }]);
  });

  test('sendToUser reaches every signed-in connection of the user, on its app only', async () => {
    const signedIn = async (app: TestApp, user: string) => {
      const { c } = await client(app, user);
      c.signin();
      await c.user.signinDonePromise;
      await new Promise<void>((resolve) => {
        const ch = c.user.serverToUserChannel!;
        if (ch.subscribed) resolve();
        else ch.bind('pusher:subscription_succeeded', () => resolve());
      });
      return c;
    };
    const zoe1 = await signedIn(second, 'zoe');
    const zoe2 = await signedIn(second, 'zoe');
    const zoeOnMain = await signedIn(main, 'zoe');
    const got: string[] = [];
    zoeOnMain.user.bind('notice', () => got.push('main'));
    const arrived = Promise.all([zoe1, zoe2].map((c) => new Promise((resolve) => c.user.bind('notice', resolve))));
    await serverSdk(h, second).sendToUser('zoe', 'notice', { n: 1 });
    assert.deepEqual(await arrived, [{ n: 1 }, { n: 1 }]);
    // A later event to main's zoe arrives first there: second's never crossed.
    const mainGot = new Promise((resolve) => zoeOnMain.user.bind('notice', resolve));
    await serverSdk(h, main).sendToUser('zoe', 'notice', { n: 2 });
    assert.deepEqual(await mainGot, { n: 2 });
    assert.deepEqual(got, ['main']);
  });

  test('terminateUserConnections closes the user\'s pusher-js connections (4009) on that app only', async () => {
    const signedIn = async (app: TestApp, user: string) => {
      const { c } = await client(app, user);
      c.signin();
      await c.user.signinDonePromise;
      return c;
    };
    const tom1 = await signedIn(second, 'tom');
    const tom2 = await signedIn(second, 'tom');
    const tomOnMain = await signedIn(main, 'tom');
    const closed = Promise.all([tom1, tom2].map((c) => new Promise<any>((resolve) => c.connection.bind('error', resolve))));
    const answer = await serverSdk(h, second).terminateUserConnections('tom');
    assert.deepEqual(await answer.json(), {});
    for (const error of await closed) assert.equal((error.error?.data ?? error.data).code, 4009);
    assert.equal(tomOnMain.connection.state, 'connected');
    // main's tom still gets events: its connection was never touched.
    const channel = unique('still-here');
    await subscribed(tomOnMain, channel);
    const event = nextEvent(tomOnMain, channel, 'ping');
    await serverSdk(h, main).trigger(channel, 'ping', 'x');
    assert.equal(await event, 'x');
  });
});
