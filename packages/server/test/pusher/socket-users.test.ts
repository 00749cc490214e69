/**
 * User authentication with real pusher-js in Node and the `pusher` SDK's
 * authenticateUser: pusher:signin, server-to-user events, terminating a
 * user's connections (the control command pusher_terminate), the
 * watchlist's online / offline events, and forged sign-ins refused.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import {
  connected,
  disconnectAll,
  pusherClient,
  RawPusher,
  serverSdk,
  startAuthServer,
  startPusherHerald,
  testApp,
  type AuthServer,
  type PusherHerald,
} from '../helpers/pusher-socket.ts';
import { encodePusherData } from '../../src/pusher/pusher-publication.ts';
import { OverviewBuilder } from '../../src/console/overview.ts';
import { disconnects } from '@herald/protocol';
import { closeAllClients, connectWs, eventually, http, openWs, signToken } from '../helpers/herald-ws.ts';

describe('pusher socket: user sign-in, server-to-user, terminate, watchlist', { timeout: 60000 }, () => {
  let h: PusherHerald;
  let auth: AuthServer;
  const app = testApp('main');
  const users = new Map<string, { id: string; watchlist?: string[] }>();
  const raws: RawPusher[] = [];

  before(async () => {
    h = await startPusherHerald([app]);
    auth = await startAuthServer(
      serverSdk(h, app),
      () => ({ user_id: 'x' }),
      (socketId) => users.get(socketId) ?? { id: 'nobody' },
    );
  });
  afterEach(() => {
    disconnectAll();
    for (const r of raws.splice(0)) r.close();
  });
  after(async () => {
    await auth.close();
    await h.close();
  });

  /** A pusher-js client signed in as `id` (with a watchlist). */
  async function signedIn(id: string, watchlist?: string[]) {
    const c = pusherClient(h, app.key, { userAuthentication: { endpoint: auth.userUrl, transport: 'ajax' } });
    const socketId = await connected(c);
    users.set(socketId, watchlist === undefined ? { id } : { id, watchlist });
    c.signin();
    await c.user.signinDonePromise;
    assert.equal(c.user.user_data?.id, id, 'signed in');
    return c;
  }

  async function toUser(user: string, event: string, data: string): Promise<void> {
    const node = h.server.node;
    await node.publish({ channel: `#server-to-user-${user}`, namespace: '', options: node.rules.namespaceOptions('')! }, encodePusherData({ event, data }), undefined, 'api');
  }

  test('signin, then server-to-user events reach every connection of that user only', async () => {
    const a1 = await signedIn('ann');
    const a2 = await signedIn('ann');
    const b = await signedIn('ben');
    // pusher-js subscribes #server-to-user-{id} after the sign-in.
    for (const c of [a1, a2, b]) {
      await new Promise<void>((resolve) => {
        const ch = c.user.serverToUserChannel!;
        if (ch.subscribed) resolve();
        else ch.bind('pusher:subscription_succeeded', () => resolve());
      });
    }
    const got: [string, unknown][] = [];
    const arrived = Promise.all(
      [a1, a2].map((c, i) => new Promise<void>((resolve) => c.user.bind('notice', (data: unknown) => (got.push([`ann${i + 1}`, data]), resolve())))),
    );
    b.user.bind('notice', (data: unknown) => got.push(['ben', data]));
    await toUser('ann', 'notice', '{"n":1}');
    await arrived;
    assert.deepEqual(got.sort(), [
      ['ann1', { n: 1 }],
      ['ann2', { n: 1 }],
    ]);
  });

  test('#server-to-user-{id} is refused without signing in as {id}', async () => {
    const r = new RawPusher(h.appUrl(app.key));
    raws.push(r);
    await r.established();
    r.send({ event: 'pusher:subscribe', data: { channel: '#server-to-user-ann' } });
    const error = await r.event('pusher:subscription_error');
    assert.equal(error.data.status, 401);
  });

  test('forged sign-ins are refused with 4302: wrong secret, another socket id, user data changed, no id', async () => {
    const r = new RawPusher(h.appUrl(app.key));
    raws.push(r);
    const socketId = await r.established();
    const sign = (text: string, secret = app.secret) => `${app.key}:${createHmac('sha256', secret).update(text).digest('hex')}`;
    const data = JSON.stringify({ id: 'eve' });
    const attempts = [
      { auth: sign(`${socketId}::user::${data}`, 'not-the-secret-at-all'), user_data: data },
      { auth: sign(`1.2::user::${data}`), user_data: data },
      { auth: sign(`${socketId}::user::${data}`), user_data: JSON.stringify({ id: 'admin' }) },
      { auth: sign(`${socketId}::user::{}`), user_data: '{}' },
      { auth: sign(`${socketId}::user::{"id":"a b"}`), user_data: '{"id":"a b"}' },
      { auth: sign(`${socketId}::user::{"id":"ok","watchlist":["x}y"]}`), user_data: '{"id":"ok","watchlist":["x}y"]}' },
    ];
    for (const attempt of attempts) {
      const from = r.frames.length;
      r.send({ event: 'pusher:signin', data: attempt });
      const error = await r.next((f) => f.event === 'pusher:error', 5000, from);
      assert.equal(error.data.code, 4302);
    }
    assert.equal(r.frames.filter((f) => f.event === 'pusher:signin_success').length, 0);
    r.send({ event: 'pusher:subscribe', data: { channel: '#server-to-user-admin' } });
    assert.equal((await r.event('pusher:subscription_error')).data.status, 401);
    // The real signature works.
    r.send({ event: 'pusher:signin', data: { auth: sign(`${socketId}::user::${data}`), user_data: data } });
    const ok = await r.event('pusher:signin_success');
    assert.equal(ok.data.user_data, data);
  });

  test('terminate closes every connection of the user with 4009, and pusher-js does not reconnect', async () => {
    const t1 = await signedIn('tom');
    const t2 = await signedIn('tom');
    const other = await signedIn('tim');
    const states = [t1, t2].map((c) => {
      const seen: string[] = [];
      c.connection.bind('state_change', (s: { current: string }) => seen.push(s.current));
      return seen;
    });
    const closed = Promise.all([t1, t2].map((c) => new Promise<any>((resolve) => c.connection.bind('error', resolve))));
    await h.server.node.publishControl({ kind: 'pusher_terminate', app: app.id, user: 'tom' });
    const errors = await closed;
    for (const error of errors) assert.equal((error.error?.data ?? error.data).code, 4009);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    for (const seen of states) assert.deepEqual(seen, ['disconnected']);
    assert.equal(other.connection.state, 'connected');
  });

  test('watchlist: online at sign-in for those online, then online / offline once per user', async () => {
    const bea1 = await signedIn('bea');
    const watcher = pusherClient(h, app.key, { userAuthentication: { endpoint: auth.userUrl, transport: 'ajax' } });
    const events: [string, string[]][] = [];
    watcher.user.watchlist.bind('online', (e: { user_ids: string[] }) => events.push(['online', e.user_ids]));
    watcher.user.watchlist.bind('offline', (e: { user_ids: string[] }) => events.push(['offline', e.user_ids]));
    const socketId = await connected(watcher);
    users.set(socketId, { id: 'wes', watchlist: ['bea', 'bob', 'cal'] });
    watcher.signin();
    await waitFor(() => events.length >= 1);
    assert.deepEqual(events, [['online', ['bea']]]);
    // A second connection of bea: nothing. cal comes online: one event.
    const bea2 = await signedIn('bea');
    const cal = await signedIn('cal');
    await waitFor(() => events.length >= 2);
    bea1.disconnect();
    cal.disconnect();
    await waitFor(() => events.length >= 3);
    bea2.disconnect();
    await waitFor(() => events.length >= 4);
    assert.deepEqual(events, [
      ['online', ['bea']],
      ['online', ['cal']],
      ['offline', ['cal']],
      ['offline', ['bea']],
    ]);
  });
});

async function waitFor(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('pusher socket: sign-ins under limits.maxConnectionsPerUser; the node counts Pusher sockets', { timeout: 60000 }, () => {
  let h: PusherHerald;
  const main = testApp('main');
  const x = testApp('x');
  const raws: RawPusher[] = [];

  before(async () => {
    h = await startPusherHerald([main, x], { limits: { maxConnectionsPerUser: 2 } });
  });
  afterEach(() => {
    for (const r of raws.splice(0)) r.close();
    closeAllClients();
  });
  after(async () => {
    await h.close();
  });

  /** A raw socket of `app` that sends pusher:signin as `id` (signed with the app's secret); answers the socket and the reply. */
  async function signIn(app: typeof main, id: string): Promise<{ socket: RawPusher; reply: any }> {
    const socket = new RawPusher(h.appUrl(app.key));
    raws.push(socket);
    const socketId = await socket.established();
    const userData = JSON.stringify({ id });
    const auth = `${app.key}:${createHmac('sha256', app.secret).update(`${socketId}::user::${userData}`).digest('hex')}`;
    socket.send({ event: 'pusher:signin', data: { user_data: userData, auth } });
    const reply = await socket.next((f) => f.event === 'pusher:signin_success' || f.event === 'pusher:error');
    return { socket, reply };
  }
  const appToken = (sub: string): Promise<string> => signToken(x.secret, { sub, exp: Math.floor(Date.now() / 1000) + 600 });

  test('a sign-in counts with the user\'s native connections: over the cap it is refused with 4302 (the socket stays), and a native connect is closed with 3506', async () => {
    const native = await connectWs(h, 'ann');
    const first = await signIn(main, 'ann');
    assert.equal(first.reply.event, 'pusher:signin_success');
    const second = await signIn(main, 'ann');
    assert.equal(second.reply.event, 'pusher:error');
    assert.equal(second.reply.data.code, 4302);
    assert.match(second.reply.data.message, /maxConnectionsPerUser/);
    // The refused socket stays open, not signed in: it still answers.
    second.socket.send({ event: 'pusher:ping', data: {} });
    await second.socket.event('pusher:pong');
    const third = await openWs(h.wsUrl);
    third.send({ id: 1, method: 'connect', params: { token: await h.token('ann') } });
    assert.equal((await third.waitClose()).code, disconnects.connection_limit.code, 'the native connection over the cap');
    // Another user, and the same id in another app, are other users.
    assert.equal((await signIn(main, 'bea')).reply.event, 'pusher:signin_success');
    assert.equal((await signIn(x, 'ann')).reply.event, 'pusher:signin_success');
    // App x's ann: its Pusher sign-in and a native connection on x's path count together.
    const onX = await openWs(`ws://127.0.0.1:${h.server.port}/apps/${x.id}/connection/websocket`);
    await onX.connect(await appToken('ann'));
    const overX = await signIn(x, 'ann');
    assert.equal(overX.reply.data.code, 4302, 'x\'s ann holds 2 already');
    const nativeOverX = await openWs(`ws://127.0.0.1:${h.server.port}/apps/${x.id}/connection/websocket`);
    nativeOverX.send({ id: 1, method: 'connect', params: { token: await appToken('ann') } });
    assert.equal((await nativeOverX.waitClose()).code, disconnects.connection_limit.code);
    // A signed-in socket that closes gives its place back.
    first.socket.close();
    await eventually(async () => ((await signIn(main, 'ann')).reply.event === 'pusher:signin_success' ? true : undefined), 'a sign-in after one closed');
    assert.equal(native.closeInfo, undefined);
  });

  test('GET /api/info, the console\'s overview and herald_connections count Pusher sockets', async () => {
    const nodeCount = async (): Promise<number> => (await h.api('info', {})).body.nodes[0].connections;
    // What the test before opened has closed.
    const before = await eventually(async () => ((await nodeCount()) === 0 ? 0 : undefined), 'no connection left');
    const sockets = [new RawPusher(h.appUrl(main.key)), new RawPusher(h.appUrl(x.key)), new RawPusher(h.appUrl(x.key))];
    raws.push(...sockets);
    for (const socket of sockets) await socket.established();
    await connectWs(h, 'cid');
    assert.equal(await nodeCount(), before + 4, 'three Pusher sockets and one native connection');
    const info = (await h.api('info', {})).body.nodes[0];
    assert.ok(info.authenticated >= 4, `authenticated: ${info.authenticated}`);
    const overview = new OverviewBuilder(h.server.node).frame(Date.now());
    assert.equal(overview.totals.connections.pusher, 3);
    assert.equal(overview.totals.connections.websocket, 1);
    const metrics = await http(`http://127.0.0.1:${h.server.adminPort}/metrics`);
    assert.match(metrics.text, /^herald_connections\{transport="pusher"\} 3$/m);
    sockets[0]!.close();
    await eventually(async () => ((await nodeCount()) === before + 3 ? true : undefined), 'a closed Pusher socket leaves the count');
  });
});
