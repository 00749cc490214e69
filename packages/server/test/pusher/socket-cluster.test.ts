/**
 * Presence on Pusher channels across nodes, with real pusher-js: members on
 * two workers of `herald serve --workers 2` and on two Herald nodes sharing
 * Redis. Exactly one member_added per user (not per tab, not per node) and
 * one member_removed when the user's last connection leaves, whichever
 * node it was on; the member list at subscribe has every node's members.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import Pusher from 'pusher';
import { unique } from '../helpers/herald-ws.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { connected, disconnectAll, nextEvent, pusherClientOnPort, startAuthServer, startPusherHerald, subscribed, testApp, type AuthServer, type PusherHerald } from '../helpers/pusher-socket.ts';
import { TestCluster } from '../cluster/harness.ts';
import { cleanupSpawned, spawnRedisHerald, Tokens } from '../redis/harness.ts';
import { createHmac } from 'node:crypto';
import { RawPusher } from '../helpers/pusher-socket.ts';

const app = testApp('main');
const sdk = new Pusher({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', useTLS: false });

/**
 * The scenario on any deployment: `port(i)` is where the i-th connection goes
 * (two nodes alternate; a cluster's workers take turns accepting).
 */
async function presenceAcrossNodes(port: (i: number) => number, auth: AuthServer, who: Map<string, string>): Promise<void> {
  let n = 0;
  const join = async (user: string, channel: string) => {
    const c = pusherClientOnPort(port(n++), app.key, { channelAuthorization: { endpoint: auth.channelUrl, transport: 'ajax' } });
    who.set(await connected(c), user);
    const live = await subscribed(c, channel);
    // pusher-js's Members object changes as members come and go: what it was at subscription_succeeded.
    return { client: c, members: { count: live.count as number, ids: Object.keys(live.members).sort() } };
  };
  const channel = unique('presence-nodes');
  const observer = await join('olga', channel);
  const added: string[] = [];
  const removed: string[] = [];
  observer.client.channel(channel).bind('pusher:member_added', (m: { id: string }) => added.push(m.id));
  observer.client.channel(channel).bind('pusher:member_removed', (m: { id: string }) => removed.push(m.id));
  // Two tabs of alice and one of bob, spread over the nodes.
  const alice1 = await join('alice', channel);
  const alice2 = await join('alice', channel);
  const bob = await join('bob', channel);
  assert.deepEqual(bob.members.ids, ['alice', 'bob', 'olga']);
  assert.equal(alice2.members.count, 2, 'olga and alice (her first tab, on the other node)');
  // A sentinel user joins last: once its member_added is here, anything the others caused is too.
  await join('zed', channel);
  await waitFor(() => added.includes('zed'));
  assert.deepEqual(added, ['alice', 'bob', 'zed']);
  // alice's first tab leaves: she is still there (her other tab, on another node).
  alice1.client.disconnect();
  const aliceGone = nextEvent(observer.client, channel, 'pusher:member_removed');
  alice2.client.disconnect();
  assert.equal((await aliceGone).id, 'alice');
  const bobGone = nextEvent(observer.client, channel, 'pusher:member_removed');
  bob.client.unsubscribe(channel);
  assert.equal((await bobGone).id, 'bob');
  assert.deepEqual(removed, ['alice', 'bob']);
  // A late joiner sees the members of every node.
  const late = await join('lee', channel);
  assert.deepEqual(late.members.ids, ['lee', 'olga', 'zed']);
}

async function waitFor(check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

describe('pusher presence on two workers (--workers 2)', { timeout: 120000 }, () => {
  let cluster: TestCluster;
  let auth: AuthServer;
  const who = new Map<string, string>();

  before(async () => {
    const secretFile = join(tmpdir(), `herald-pusher-cluster-${randomBytes(4).toString('hex')}.secret`);
    writeFileSync(secretFile, app.secret, { mode: 0o600 });
    try {
      cluster = await TestCluster.start({ workers: 2, config: { apps: { list: [{ id: app.id, key: app.key, secretFile }] } } });
    } finally {
      // Read at start.
      rmSync(secretFile, { force: true });
    }
    auth = await startAuthServer(sdk, (socketId) => ({ user_id: who.get(socketId) ?? 'nobody' }));
  });
  afterEach(() => disconnectAll());
  after(async () => {
    await auth?.close();
    await cluster?.stop();
  });

  test('one member_added per user, one member_removed at the last tab, members of both workers', async () => {
    await presenceAcrossNodes(() => cluster.port, auth, who);
  });
});

const skip = missingService('Redis', await redisAvailable(REDIS_URL));

describe('pusher presence on two Redis nodes', { skip, timeout: 60000 }, () => {
  let a: PusherHerald;
  let b: PusherHerald;
  let auth: AuthServer;
  const who = new Map<string, string>();

  before(async () => {
    const engine = { type: 'redis', redisUrl: REDIS_URL, redisPrefix: `herald-test-pusher-${randomBytes(4).toString('hex')}` };
    a = await startPusherHerald([app], { engine });
    b = await startPusherHerald([app], { engine });
    auth = await startAuthServer(
      sdk,
      (socketId) => ({ user_id: who.get(socketId) ?? 'nobody' }),
      (socketId) => signins.get(socketId) ?? { id: 'nobody' },
    );
  });
  afterEach(() => disconnectAll());
  after(async () => {
    await auth?.close();
    await a?.close();
    await b?.close();
  });
  const signins = new Map<string, { id: string; watchlist?: string[] }>();

  /** A pusher-js client on `node` signed in as `id`. */
  async function signedIn(node: PusherHerald, id: string, watchlist?: string[], bind?: (c: ReturnType<typeof pusherClientOnPort>) => void) {
    const c = pusherClientOnPort(node.server.port, app.key, { userAuthentication: { endpoint: auth.userUrl, transport: 'ajax' } });
    bind?.(c);
    signins.set(await connected(c), watchlist === undefined ? { id } : { id, watchlist });
    c.signin();
    await c.user.signinDonePromise;
    assert.equal(c.user.user_data?.id, id);
    return c;
  }

  test('one member_added per user, one member_removed at the last tab, members of both nodes', async () => {
    await presenceAcrossNodes((i) => (i % 2 === 0 ? a.server.port : b.server.port), auth, who);
  });

  test('watchlist across nodes: online / offline once per user whose connections are on both nodes; terminate reaches the other node', async () => {
    const onA = await signedIn(a, 'ivy');
    const events: [string, string[]][] = [];
    await signedIn(b, 'walt', ['ivy', 'jon'], (c) => {
      c.user.watchlist.bind('online', (e: { user_ids: string[] }) => events.push(['online', e.user_ids]));
      c.user.watchlist.bind('offline', (e: { user_ids: string[] }) => events.push(['offline', e.user_ids]));
    });
    await waitFor(() => events.length >= 1);
    assert.deepEqual(events, [['online', ['ivy']]]);
    // jon on both nodes: one online; his node A connection leaves: nothing; the last one: one offline.
    const jonA = await signedIn(a, 'jon');
    await waitFor(() => events.length >= 2);
    const jonB = await signedIn(b, 'jon');
    jonA.disconnect();
    // ivy's connection on A is terminated from node B (the HTTP API's terminate_connections).
    const terminated = new Promise<any>((resolve) => onA.connection.bind('error', resolve));
    await b.server.node.publishControl({ kind: 'pusher_terminate', app: app.id, user: 'ivy' });
    const error = await terminated;
    assert.equal((error.error?.data ?? error.data)?.code, 4009, JSON.stringify(error));
    await waitFor(() => events.length >= 3);
    jonB.disconnect();
    await waitFor(() => events.length >= 4);
    assert.deepEqual(events, [
      ['online', ['ivy']],
      ['online', ['jon']],
      ['offline', ['ivy']],
      ['offline', ['jon']],
    ]);
  });

  test('a node that dies: its presence members leave (member_removed) once the store expired them', { timeout: 60000 }, async () => {
    const prefix = `herald-test-pusher-dead-${randomBytes(4).toString('hex')}`;
    const ttl = { presenceTtlMs: 3000 };
    const survivor = await startPusherHerald([app], { engine: { type: 'redis', redisUrl: REDIS_URL, redisPrefix: prefix, ...ttl } });
    const secretFile = join(tmpdir(), `herald-pusher-dead-${randomBytes(4).toString('hex')}.secret`);
    writeFileSync(secretFile, app.secret, { mode: 0o600 });
    const opened: RawPusher[] = [];
    try {
      const doomed = await spawnRedisHerald('doomed', {
        redisUrl: REDIS_URL,
        prefix,
        tokens: new Tokens(),
        engine: ttl,
        overrides: { apps: { list: [{ id: app.id, key: app.key, secretFile }] } },
      });
      const channel = unique('presence-mortal');
      const join = async (port: number, user: string) => {
        const r = new RawPusher(`ws://127.0.0.1:${port}/app/${app.key}?protocol=7&client=test&version=1`);
        opened.push(r);
        const socketId = await r.established();
        const data = JSON.stringify({ user_id: user });
        const auth = `${app.key}:${createHmac('sha256', app.secret).update(`${socketId}:${channel}:${data}`).digest('hex')}`;
        r.send({ event: 'pusher:subscribe', data: { channel, auth, channel_data: data } });
        await r.event('pusher_internal:subscription_succeeded');
        return r;
      };
      const observer = await join(survivor.server.port, 'olga');
      await join(doomed.port, 'ghost');
      const added = await observer.event('pusher_internal:member_added');
      assert.equal(added.data.user_id, 'ghost');
      doomed.child.kill('SIGKILL');
      // The store expires the dead node's members after presenceTtlMs; the survivor checks every 5 s.
      const removed = await observer.event('pusher_internal:member_removed', 30000);
      assert.equal(removed.data.user_id, 'ghost');
      assert.equal(observer.frames.filter((f) => f.event === 'pusher_internal:member_removed').length, 1);
    } finally {
      for (const r of opened) r.close();
      cleanupSpawned();
      rmSync(secretFile, { force: true });
      await survivor.close();
    }
  });
});
