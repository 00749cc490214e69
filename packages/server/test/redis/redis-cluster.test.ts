/**
 * Herald on a real Redis Cluster (issue 14, part 2): three masters and three
 * replicas started here (`redis-server --cluster-enabled yes` on spare
 * loopback ports, `redis-cli --cluster create`), two Herald nodes on it.
 * Cross-node delivery on all three transports, recovery, presence, the
 * control channel, channels spread over every master, then failovers with
 * clients connected: `CLUSTER FAILOVER` on a replica, and SIGKILL of a
 * master (its replica takes over); every acknowledged publication arrives
 * once, in order, with `recovered: true`.
 *
 * Skips loudly without redis-server/redis-cli; fails under
 * HERALD_REQUIRE_SERVICES=1. Every redis-server is stopped by PID.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { missingService } from '../helpers/services.ts';
import { closeAllClients, eventually, openWs, unique, type WsClient } from '../helpers/herald-ws.ts';
import { sleep, waitUntil } from '../helpers/rt-util.ts';
import { ShardedPubSub, slotOf } from '../../src/broker/redis-sharded-pubsub.ts';
import { callApi, startRedisHerald, Tokens, uniquePrefix, type RedisHerald } from './harness.ts';
import { LongPollFollower, Publisher, SseFollower, verify, WsFollower, type Follower } from './followers.ts';
import { RedisClusterFixture, redisClusterToolsAvailable } from './cluster-harness.ts';

const skip = missingService('redis-server and redis-cli (a local Redis Cluster)', await redisClusterToolsAvailable());

describe('Redis engine on a Redis Cluster (3 masters + 3 replicas)', { skip }, () => {
  let cluster: RedisClusterFixture;
  const tokens = new Tokens();
  const prefix = uniquePrefix('cluster');
  let a: RedisHerald;
  let b: RedisHerald;
  let followers: Follower[] = [];
  let publisher: Publisher | undefined;

  /** Herald on the cluster (`redisUrl` points nowhere: the seeds win). */
  const node = (name: string) =>
    startRedisHerald(name, {
      redisUrl: 'redis://127.0.0.1:1',
      prefix,
      tokens,
      ownEngine: true,
      engine: { redisCluster: cluster.urls, probeIntervalMs: 500, probeDeadlineMs: 500, redisCommandTimeoutMs: 1000 },
    });

  before(async () => {
    cluster = await RedisClusterFixture.start();
    a = await node('A');
    b = await node('B');
  });

  afterEach(async () => {
    await publisher?.stop();
    publisher = undefined;
    for (const f of followers) f.stop();
    followers = [];
    closeAllClients();
  });

  after(async () => {
    await a?.close();
    await b?.close();
    await cluster?.close();
  });

  /** The topic → master map of a node's sharded pub/sub. */
  const owners = (node: RedisHerald): ReadonlyMap<string, string> => (node.clients!.subscriber as ShardedPubSub).owners;
  const topic = (channel: string) => `${prefix}:ch:{${channel}}`;

  async function ws(node: RedisHerald, user: string): Promise<WsClient> {
    const client = await openWs(node.wsUrl);
    await client.connect(await tokens.sign(user));
    return client;
  }

  /** WebSocket, SSE and long polling on B (publications come through A), and WebSocket on A. */
  async function follow(channel: string): Promise<Follower[]> {
    followers = [
      new WsFollower({ name: 'ws-B', channel, tokens, targets: () => [b] }),
      new SseFollower({ name: 'sse-B', channel, tokens, targets: () => [b] }),
      new LongPollFollower({ name: 'lp-B', channel, tokens, targets: () => [b] }),
      new WsFollower({ name: 'ws-A', channel, tokens, targets: () => [a] }),
    ];
    for (const f of followers) await f.start();
    return followers;
  }

  /** Stops the publisher, publishes an end marker, waits for it everywhere, checks exactly-once in order and recovered:true. */
  async function finish(label: string): Promise<void> {
    const p = publisher!;
    await p.stop();
    // Everything acknowledged arrives without a later publication revealing a gap.
    const last = p.acked.at(-1);
    if (last !== undefined) for (const f of followers) await f.waitFor(last, 30000);
    const marker = await p.final(30000);
    for (const f of followers) await f.waitFor(marker, 30000);
    console.log(`  ${label}: ${p.acked.length} acknowledged of ${p.attempts.length} (${JSON.stringify(p.statusCounts())})\n  ${followers.map((f) => f.summary()).join('\n  ')}`);
    for (const f of followers) {
      assert.deepEqual(verify(f, p.acked), [], f.summary());
      for (const ack of p.acked) assert.ok(f.received.has(ack.n), `${f.name} received n=${ack.n}: ${f.summary()}`);
      assert.ok(
        f.resubscribes.every((s) => s.recovered),
        `${f.name}: the stream survived, so every recovery is recovered:true: ${f.summary()}`,
      );
    }
  }

  test('publish on A reaches WebSocket, SSE and long-poll subscribers on B in order; cut connections recover with recovered:true', async () => {
    const channel = unique('chaos:cross');
    await follow(channel);
    publisher = new Publisher(channel, () => [a], { intervalMs: 5 });
    for (let i = 0; i < 30; i++) assert.equal((await publisher.publishOnce()).status, 200);
    assert.equal(publisher.acked.at(-1)!.offset, 30, 'offsets are contiguous from 1');
    for (const f of followers) await f.waitFor(publisher.acked.at(-1)!.n);
    // Every client drops its connection while publishing goes on, and comes back with its position.
    publisher.start();
    for (const f of followers) f.cut();
    await waitUntil(() => followers.every((f) => f.resubscribes.length >= 1 && f.subscribed), { timeoutMs: 20000, label: 'every follower resubscribed' });
    await sleep(200);
    await finish('cross-node');
    for (const f of followers) assert.ok(f.resubscribes.length >= 1 && f.resubscribes.every((s) => s.recovered), f.summary());
    // History through the other node is the same stream.
    const page = await callApi(b, 'history', { channel, limit: 5 });
    assert.equal(page.status, 200);
    assert.equal(page.body.offset, publisher.acked.at(-1)!.offset);
  });

  test('channels spread over every master; each delivers across nodes', async () => {
    const view = await cluster.view();
    const masters = view.filter((n) => n.master && n.slots.length > 0);
    assert.equal(masters.length, 3);
    // Channel names until every master serves at least two of them.
    const byMaster = new Map<number, string[]>();
    for (let i = 0; [...byMaster.values()].filter((list) => list.length >= 2).length < 3; i++) {
      const channel = `public:spread-${prefix}-${i}`;
      const slot = slotOf(topic(channel));
      const master = masters.find((m) => m.slots.some(([from, to]) => slot >= from && slot <= to))!;
      byMaster.set(master.port, [...(byMaster.get(master.port) ?? []), channel]);
    }
    const channels = [...byMaster.values()].flatMap((list) => list.slice(0, 2));
    const reader = await ws(b, 'reader');
    for (const channel of channels) await reader.call('subscribe', { channel });
    const shards = new Set(channels.map((channel) => owners(b).get(topic(channel))));
    assert.equal(shards.size, 3, `B subscribes on three masters: ${[...shards].join(', ')}`);
    for (const [i, channel] of channels.entries()) assert.equal((await callApi(a, 'publish', { channel, data: { i } })).status, 200);
    for (const [i, channel] of channels.entries()) {
      const [publication] = await reader.waitPublications(channel, 1);
      assert.deepEqual(publication.data, { i });
    }
  });

  test('presence, join and leave span both nodes; an API disconnect on B closes the user on A (control channel)', async () => {
    const channel = unique('chat:presence');
    const alice = await ws(a, 'alice');
    await alice.call('subscribe', { channel });
    const bob = await ws(b, 'bob');
    await bob.call('subscribe', { channel });
    const join = await alice.push('join', channel, (f) => f.info.user === 'bob');
    assert.equal(join.info.client, bob.clientId);
    for (const node of [a, b]) {
      const presence = await callApi(node, 'presence', { channel });
      assert.equal(presence.status, 200);
      assert.deepEqual(Object.values(presence.body.clients as Record<string, { user: string }>).map((c) => c.user).sort(), ['alice', 'bob'], `presence on ${node.name}`);
    }
    await bob.close();
    const leave = await alice.push('leave', channel, (f) => f.info.user === 'bob');
    assert.equal(leave.info.client, bob.clientId);
    await eventually(async () => ((await callApi(a, 'presence_stats', { channel })).body.num_clients === 1 ? true : undefined), 'presence of 1 on A');

    const carol = await ws(a, 'carol');
    assert.equal((await callApi(b, 'disconnect', { user: 'carol' })).status, 200);
    assert.equal((await carol.waitClose()).code, 3503);
  });

  test('revoke_user on A closes the user on B (3507); a node started later refuses the revoked token (kept in the cluster)', async () => {
    const token = await tokens.sign('dave');
    const dave = await openWs(b.wsUrl);
    await dave.connect(token);
    assert.equal((await callApi(a, 'revoke_user', { user: 'dave' })).status, 200);
    assert.equal((await dave.waitClose()).code, 3507);
    const c = await node('C');
    try {
      const late = await openWs(c.wsUrl);
      late.send({ id: 1, method: 'connect', params: { token } });
      assert.equal((await late.waitClose()).code, 3507);
    } finally {
      await c.close();
    }
  });

  test('limits.scope "cluster" on the cluster: an API key\'s rate limit and the open connections per IP hold across two nodes', async () => {
    const limited = (name: string) =>
      startRedisHerald(name, {
        redisUrl: 'redis://127.0.0.1:1',
        prefix,
        tokens,
        engine: { redisCluster: cluster.urls },
        overrides: { http: { trustedProxies: ['127.0.0.1'] }, limits: { scope: 'cluster', maxConnectionsPerIp: 3 }, api: { rateLimitPerIp: 1000000, rateLimitPerKey: 10 } },
      });
    const c = await limited('C');
    const d = await limited('D');
    const sockets: WebSocket[] = [];
    try {
      const statuses: number[] = [];
      for (let i = 0; i < 20; i++) statuses.push((await callApi(i % 2 === 0 ? c : d, 'info', {})).status);
      assert.deepEqual(statuses, [...Array(10).fill(200), ...Array(10).fill(429)], statuses.join(','));
      const upgrade = (node: RedisHerald) =>
        new Promise<number>((resolve, reject) => {
          const socket = new WebSocket(node.wsUrl, { headers: { 'x-forwarded-for': '203.0.113.77' } });
          sockets.push(socket);
          socket.once('open', () => resolve(101));
          socket.once('unexpected-response', (_request, response) => resolve(response.statusCode ?? 0));
          socket.once('error', reject);
        });
      const answers = [];
      for (const node of [c, d, c, d]) answers.push(await upgrade(node));
      assert.deepEqual(answers, [101, 101, 101, 429]);
    } finally {
      for (const socket of sockets) socket.terminate();
      await c.close();
      await d.close();
    }
  });

  test('a shard subscription lost silently (SUNSUBSCRIBE behind Herald\'s back): the probe of that master reports it, the connection starts again, its channels resynchronize with recovered:true', async () => {
    const channel = unique('chaos:silent');
    await follow(channel);
    publisher = new Publisher(channel, () => [a], { intervalMs: 10 });
    publisher.start();
    await waitUntil(() => publisher!.acked.length >= 20, { timeoutMs: 10000, label: '20 publications before the loss' });
    const pubsub = b.clients!.subscriber as ShardedPubSub;
    const master = owners(b).get(topic(channel))!;
    const connection = pubsub.connectionOf(topic(channel))!;
    const lost = [...owners(b)].filter(([, key]) => key === master).map(([t]) => t);
    assert.ok(lost.some((t) => t.includes(':probe:')), `B probes master ${master} too: ${lost.join(', ')}`);
    await publisher.stop();
    const failedBefore = b.probeChanges.filter((c) => c.failure !== undefined).length;
    // Redis forgets B's subscriptions on that master; the TCP connection stays up.
    for (const t of lost) await connection.sunsubscribe(t);
    // Ten more, then quiet: nothing later reveals a gap, so only the
    // resynchronization after the probe's reconnect brings them to B.
    for (let i = 0; i < 10; i++) assert.equal((await publisher.publishOnce()).status, 200);
    const last = publisher.acked.at(-1)!;
    await waitUntil(() => b.probeChanges.filter((c) => c.failure !== undefined).length > failedBefore, { timeoutMs: 10000, label: 'B reports the lost probe' });
    assert.match(b.probeChanges.filter((c) => c.failure !== undefined).at(-1)!.failure!, new RegExp(`not delivered back within 500 ms \\(master ${master}\\)`));
    for (const f of followers) await f.waitFor(last, 20000);
    for (const f of followers.filter((f) => f.name.endsWith('-B'))) assert.ok(f.resubscribes.length >= 1, `${f.name} resynchronized: ${f.summary()}`);
    await finish('silent loss');
    await eventually(async () => ((await b.health()).status === 200 && (await b.ready()).status === 200 ? true : undefined), 'B healthy and ready again');
  });

  test('a channel\'s slot moved to another master (resharding) with clients connected: subscriptions follow it, nothing acknowledged lost or duplicated, recovered:true', async () => {
    const channel = unique('chaos:reshard');
    await follow(channel);
    const slot = slotOf(topic(channel));
    const from = await cluster.masterOf(slot);
    const to = (await cluster.view()).find((n) => n.master && !n.failed && n.slots.length > 0 && n.id !== from.id)!;
    publisher = new Publisher(channel, () => [a, b], { intervalMs: 10 });
    publisher.start();
    await waitUntil(() => publisher!.acked.length >= 20, { timeoutMs: 10000, label: '20 publications before the move' });
    await cluster.migrateSlot(slot, to.port);
    await waitUntil(() => owners(a).get(topic(channel)) === `127.0.0.1:${to.port}` && owners(b).get(topic(channel)) === `127.0.0.1:${to.port}`, {
      timeoutMs: 20000,
      label: 'subscriptions moved with the slot',
    });
    const movedAt = publisher.acked.length;
    await waitUntil(() => publisher!.acked.length >= movedAt + 20, { timeoutMs: 20000, label: '20 publications after the move' });
    await finish('slot moved');
  });

  test('manual failover (CLUSTER FAILOVER on a replica) with clients connected: nothing acknowledged lost or duplicated, recovered:true', async () => {
    const channel = unique('chaos:failover');
    await follow(channel);
    const master = await cluster.masterOf(slotOf(topic(channel)));
    const replica = await cluster.replicaOf(master);
    publisher = new Publisher(channel, () => [a, b], { intervalMs: 10 });
    publisher.start();
    await waitUntil(() => publisher!.acked.length >= 20, { timeoutMs: 10000, label: '20 publications before the failover' });
    await cluster.command(replica.port, 'CLUSTER', 'FAILOVER');
    await cluster.waitMaster(replica.port);
    // Both nodes move the channel's subscription to the new master.
    await waitUntil(() => owners(a).get(topic(channel)) === `127.0.0.1:${replica.port}` && owners(b).get(topic(channel)) === `127.0.0.1:${replica.port}`, {
      timeoutMs: 20000,
      label: 'subscriptions moved to the promoted replica',
    });
    const movedAt = publisher.acked.length;
    await waitUntil(() => publisher!.acked.length >= movedAt + 20, { timeoutMs: 20000, label: '20 publications after the failover' });
    await finish('manual failover');
  });

  test('a master killed (SIGKILL): its replica takes over; clients recover every acknowledged publication with recovered:true', async () => {
    const channel = unique('chaos:kill');
    await follow(channel);
    const master = await cluster.masterOf(slotOf(topic(channel)));
    const replica = await cluster.replicaOf(master);
    publisher = new Publisher(channel, () => [a, b], { intervalMs: 10 });
    publisher.start();
    await waitUntil(() => publisher!.acked.length >= 20, { timeoutMs: 10000, label: '20 publications before the kill' });
    await cluster.kill(master.port);
    const killedAt = Date.now();
    await cluster.waitMaster(replica.port);
    await cluster.waitHealthy();
    console.log(`  master ${master.port} killed; replica ${replica.port} serves its slots ${Date.now() - killedAt} ms later`);
    await waitUntil(() => owners(a).get(topic(channel)) === `127.0.0.1:${replica.port}` && owners(b).get(topic(channel)) === `127.0.0.1:${replica.port}`, {
      timeoutMs: 20000,
      label: 'subscriptions moved to the promoted replica',
    });
    const movedAt = publisher.acked.length;
    await waitUntil(() => publisher!.acked.length >= movedAt + 20, { timeoutMs: 20000, label: '20 publications after the takeover' });
    await finish('master killed');
    for (const node of [a, b]) await eventually(async () => ((await node.health()).status === 200 ? true : undefined), `${node.name} healthy`);
  });
});
