/**
 * Subscription counting on the Pusher socket (docs/pusher.md, "Subscription
 * counting") with real pusher-js: `pusher_internal:subscription_count` in
 * Pusher's shape, `channel.subscriptionCount` and `pusher:subscription_count`
 * right as subscribers come and go (native subscribers of the default app
 * count too), on one node, on two workers (`--workers 2`) and on two Redis
 * nodes; nothing on presence channels, nothing for an app that has it off.
 *
 * Absence is shown without waiting on a clock: a count the server sends on
 * a connection goes out in the same look as the counts of every other
 * channel, and before the answer to anything the connection sends later.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Pusher from 'pusher';
import { closeAllClients, connectWs, eventually, unique } from '../helpers/herald-ws.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import {
  connected,
  disconnectAll,
  pusherClient,
  pusherClientOnPort,
  RawPusher,
  startAuthServer,
  startPusherHerald,
  subscribed,
  testApp,
  type AuthServer,
  type PusherHerald,
} from '../helpers/pusher-socket.ts';
import { TestCluster } from '../cluster/harness.ts';

type Client = ReturnType<typeof pusherClient>;

/** Waits until pusher-js says the channel has `count` subscribers. */
function counts(client: Client, channel: string, count: number, what: string, timeoutMs = 10000): Promise<true> {
  // pusher-js types subscriptionCount as null: it is the last count received.
  return eventually(async () => ((client.channel(channel)?.subscriptionCount as number | null | undefined) === count ? true : undefined), what, timeoutMs);
}

describe('pusher socket: subscription counting on one node', { timeout: 60000 }, () => {
  let h: PusherHerald;
  let auth: AuthServer;
  const main = testApp('main', { subscriptionCount: true });
  const off = testApp('off');
  const raws: RawPusher[] = [];
  const raw = (url: string): RawPusher => {
    const client = new RawPusher(url);
    raws.push(client);
    return client;
  };

  before(async () => {
    h = await startPusherHerald([main, off], { channels: { defaults: { allowAnonymous: true } } });
    const sdk = new Pusher({ appId: main.id, key: main.key, secret: main.secret, host: '127.0.0.1', port: String(h.server.port), useTLS: false });
    auth = await startAuthServer(sdk, () => ({ user_id: 'pat' }));
  });
  afterEach(() => {
    disconnectAll();
    closeAllClients();
    for (const client of raws.splice(0)) client.close();
  });
  after(async () => {
    await auth?.close();
    await h?.close();
  });

  test('the frame is Pusher\'s: pusher_internal:subscription_count with the count as a JSON string', async () => {
    const channel = unique('shape');
    const r = raw(h.appUrl(main.key));
    const texts: string[] = [];
    r.ws.on('message', (data) => texts.push(data.toString()));
    await r.established();
    r.send({ event: 'pusher:subscribe', data: { channel } });
    await r.event('pusher_internal:subscription_succeeded');
    await r.event('pusher_internal:subscription_count');
    const text = texts.find((t) => t.includes('subscription_count"'));
    assert.deepEqual(JSON.parse(text!), { event: 'pusher_internal:subscription_count', channel, data: JSON.stringify({ subscription_count: 1 }) });
  });

  test('pusher-js sees the count as subscribers come and go, native subscribers of the default app included', async () => {
    const channel = unique('room');
    const a = pusherClient(h, main.key);
    const seen: unknown[] = [];
    await connected(a);
    a.subscribe(channel).bind('pusher:subscription_count', (data: unknown) => seen.push(data));
    await counts(a, channel, 1, 'a alone');
    assert.deepEqual(seen[0], { subscription_count: 1 }, 'pusher:subscription_count carries the data');
    const b = pusherClient(h, main.key);
    await subscribed(b, channel);
    await counts(a, channel, 2, 'a sees b');
    await counts(b, channel, 2, 'b gets the count too');
    const native = await connectWs(h, 'nat');
    await native.call('subscribe', { channel });
    await counts(a, channel, 3, 'a native subscriber counts');
    await counts(b, channel, 3, 'b sees the native subscriber');
    b.unsubscribe(channel);
    await counts(a, channel, 2, 'b left');
    await native.close();
    await counts(a, channel, 1, 'the native subscriber left');
    // One event per change (the look sends only what changed): 1, 2, 3, 2, 1.
    assert.deepEqual(
      seen.map((d) => (d as { subscription_count: number }).subscription_count),
      [1, 2, 3, 2, 1],
    );
  });

  test('a subscriber that arrives as another leaves still gets the count', async () => {
    const channel = unique('swap');
    const stays = pusherClient(h, main.key);
    await subscribed(stays, channel);
    const a = pusherClient(h, main.key);
    await subscribed(a, channel);
    await counts(stays, channel, 2, 'two');
    const b = pusherClient(h, main.key);
    await connected(b);
    // Usually within one look: the count is 2 again when it is next compared.
    a.disconnect();
    await subscribed(b, channel);
    await counts(b, channel, 2, 'b gets the count though it may not have changed');
  });

  test('presence channels get no count (as Pusher): a public channel subscribed after it gets its count first', async () => {
    const presence = unique('presence-room');
    const sentinel = unique('after-presence');
    const c = pusherClient(h, main.key, { channelAuthorization: { endpoint: auth.channelUrl, transport: 'ajax' } });
    const presenceCounts: unknown[] = [];
    await connected(c);
    c.subscribe(presence).bind('pusher:subscription_count', (data: unknown) => presenceCounts.push(data));
    await new Promise<void>((resolve) => c.channel(presence).bind('pusher:subscription_succeeded', () => resolve()));
    await subscribed(c, sentinel);
    // The presence channel's tap is older than the sentinel's: a count for it would have gone out in the same look, earlier on this socket.
    await counts(c, sentinel, 1, 'the sentinel\'s count');
    assert.deepEqual(presenceCounts, []);
    assert.equal(c.channel(presence).subscriptionCount ?? null, null);
  });

  test('an app with subscription counting off gets no count', async () => {
    const channel = unique('quiet');
    const quiet = raw(h.appUrl(off.key));
    await quiet.established();
    quiet.send({ event: 'pusher:subscribe', data: { channel } });
    await quiet.event('pusher_internal:subscription_succeeded');
    // A counted channel subscribed after it: once its count arrived, a look passed over the quiet channel's tap too.
    const sentinel = pusherClient(h, main.key);
    await subscribed(sentinel, unique('sentinel'));
    await eventually(async () => ((sentinel.allChannels()[0]?.subscriptionCount as number | null | undefined) === 1 ? true : undefined), 'the sentinel\'s count');
    // Anything the server wrote to the quiet socket before comes before its answer to this ping.
    const from = quiet.frames.length;
    quiet.send({ event: 'pusher:ping', data: {} });
    await quiet.next((frame) => frame.event === 'pusher:pong', 5000, from);
    assert.deepEqual(
      quiet.frames.filter((frame) => frame.event === 'pusher_internal:subscription_count'),
      [],
    );
  });
});

/** N pusher-js subscribers on a channel, each on the port `port(i)`, every one seeing the count N; then one leaves. */
async function countsAcrossNodes(port: (i: number) => number, key: string, channel: string, clients: Client[], spread: () => Promise<boolean>): Promise<void> {
  const add = async (): Promise<void> => {
    const c = pusherClientOnPort(port(clients.length), key);
    await subscribed(c, channel);
    clients.push(c);
  };
  for (let i = 0; i < 2; i++) await add();
  // Until the channel has subscribers on both nodes (a cluster's primary hands connections out, not strictly in turn).
  await eventually(
    async () => {
      if (await spread()) return true;
      if (clients.length < 16) await add();
      return undefined;
    },
    'subscribers on both nodes',
    30000,
  );
  const total = clients.length;
  for (const [i, c] of clients.entries()) await counts(c, channel, total, `subscriber ${i} sees ${total}`);
  clients.shift()!.disconnect();
  for (const [i, c] of clients.entries()) await counts(c, channel, total - 1, `subscriber ${i + 1} sees ${total - 1}`);
}

describe('pusher socket: subscription counting on two workers (--workers 2)', { timeout: 120000 }, () => {
  const app = testApp('main', { subscriptionCount: true });
  let cluster: TestCluster;

  before(async () => {
    const secretFile = join(tmpdir(), `herald-pusher-subcount-${randomBytes(4).toString('hex')}.secret`);
    writeFileSync(secretFile, app.secret, { mode: 0o600 });
    try {
      cluster = await TestCluster.start({ workers: 2, config: { apps: { list: [{ id: app.id, key: app.key, secretFile, subscriptionCount: true }] } } });
    } finally {
      rmSync(secretFile, { force: true });
    }
  });
  afterEach(() => disconnectAll());
  after(async () => {
    await cluster?.stop();
  });

  test('every subscriber sees the count of both workers', async () => {
    const channel = unique('cluster-room');
    const nodesHolding = async (): Promise<number> => {
      const info = await cluster.api('info', {});
      return (info.body.nodes as { channels: number }[]).filter((n) => n.channels > 0).length;
    };
    await eventually(async () => ((await cluster.api('info', {})).body.nodes?.length === 2 ? true : undefined), 'info listing both workers', 20000);
    await countsAcrossNodes(() => cluster.port, app.key, channel, [], async () => (await nodesHolding()) === 2);
  });
});

const skip = missingService('Redis', await redisAvailable(REDIS_URL));

describe('pusher socket: subscription counting on two Redis nodes', { skip, timeout: 60000 }, () => {
  const app = testApp('main', { subscriptionCount: true });
  let a: PusherHerald;
  let b: PusherHerald;

  before(async () => {
    const engine = { type: 'redis', redisUrl: REDIS_URL, redisPrefix: `herald-test-pusher-subcount-${randomBytes(4).toString('hex')}` };
    a = await startPusherHerald([app], { engine });
    b = await startPusherHerald([app], { engine });
  });
  afterEach(() => disconnectAll());
  after(async () => {
    await a?.close();
    await b?.close();
  });

  test('every subscriber sees the count of both nodes', async () => {
    const channel = unique('redis-room');
    // Subscribers alternate between the nodes: both hold the channel from the second one on.
    await countsAcrossNodes((i) => (i % 2 === 0 ? a : b).server.port, app.key, channel, [], async () => true);
  });
});
