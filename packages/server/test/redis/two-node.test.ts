/**
 * Two Herald nodes sharing one Redis (the machine's, under a unique key
 * prefix): what a client on one node sees of the other (issue 4, "Two Herald
 * nodes sharing Redis"). Publications, recovery, presence, disconnect,
 * revocation, channel lists and node info are cluster-wide.
 *
 * Needs Redis at HERALD_TEST_REDIS_URL (default 127.0.0.1:6379); skips
 * loudly without it, fails under HERALD_REQUIRE_SERVICES=1.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { closeAllClients, eventually, openWs, unique, type WsClient } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { openSse, sseUrl, type SseStream } from '../helpers/rt-clients.ts';
import { sleep } from '../helpers/rt-util.ts';
import { callApi, deletePrefix, startRedisHerald, Tokens, uniquePrefix, type RedisHerald } from './harness.ts';
import { LongPollFollower, Publisher, SseFollower, verify, WsFollower, type Follower } from './followers.ts';

const skip = missingService('Redis', await redisAvailable(REDIS_URL));

describe('two Herald nodes sharing Redis', { skip }, () => {
  const tokens = new Tokens();
  const prefix = uniquePrefix('two-node');
  let a: RedisHerald;
  let b: RedisHerald;
  const streams: SseStream[] = [];

  before(async () => {
    a = await startRedisHerald('A', { redisUrl: REDIS_URL, prefix, tokens });
    b = await startRedisHerald('B', { redisUrl: REDIS_URL, prefix, tokens });
  });

  after(async () => {
    closeAllClients();
    for (const stream of streams) stream.abort();
    await a?.close();
    await b?.close();
    await deletePrefix(REDIS_URL, prefix);
  });

  async function ws(node: RedisHerald, user: string): Promise<WsClient> {
    const client = await openWs(node.wsUrl);
    await client.connect(await tokens.sign(user));
    return client;
  }

  test('WebSocket, SSE and long-poll clients on A receive, in order, what the API publishes on B', async () => {
    const channel = unique('chaos:cross');
    const followers: Follower[] = [
      new WsFollower({ name: 'ws-A', channel, tokens, targets: () => [a] }),
      new SseFollower({ name: 'sse-A', channel, tokens, targets: () => [a] }),
      new LongPollFollower({ name: 'lp-A', channel, tokens, targets: () => [a] }),
      new WsFollower({ name: 'ws-B', channel, tokens, targets: () => [b] }),
    ];
    try {
      for (const f of followers) await f.start();
      const publisher = new Publisher(channel, () => [b], { intervalMs: 2 });
      for (let i = 0; i < 40; i++) assert.equal((await publisher.publishOnce()).status, 200);
      const last = publisher.acked[publisher.acked.length - 1]!;
      assert.equal(last.offset, 40, 'offsets are contiguous from 1');
      for (const f of followers) await f.waitFor(last.n);
      for (const f of followers) {
        assert.deepEqual(verify(f, publisher.acked), [], f.summary());
        assert.equal(f.received.size, 40, f.summary());
        assert.equal(f.resubscribes.length, 0, f.summary());
      }
    } finally {
      for (const f of followers) f.stop();
    }
  });

  test('a client publication on A reaches a WebSocket subscriber on B', async () => {
    const channel = unique('chat:client-pub');
    const onB = await ws(b, 'reader');
    await onB.call('subscribe', { channel });
    const onA = await ws(a, 'writer');
    const result = await onA.call('publish', { channel, data: { text: 'from A' } });
    assert.equal(result.offset, 1);
    const [publication] = await onB.waitPublications(channel, 1);
    assert.deepEqual(publication.data, { text: 'from A' });
    assert.equal(publication.info.user, 'writer');
    assert.equal(publication.offset, 1);
  });

  test('WebSocket: a client drops from A and recovers on B exactly the publications it missed', async () => {
    const channel = unique('chaos:ws-recover');
    const first = await ws(a, 'walker');
    const subscribed = await first.call('subscribe', { channel });
    assert.equal(subscribed.offset, 0);
    for (let n = 1; n <= 3; n++) assert.equal((await callApi(b, 'publish', { channel, data: { n } })).status, 200);
    const seen = await first.waitPublications(channel, 3);
    const position = { epoch: subscribed.epoch, offset: seen[2].offset };
    first.ws.terminate();
    for (let n = 4; n <= 8; n++) assert.equal((await callApi(b, 'publish', { channel, data: { n } })).status, 200);
    const second = await ws(b, 'walker');
    const recovered = await second.call('subscribe', { channel, recover: true, ...position });
    assert.deepEqual(
      { recovered: recovered.recovered, was_recovering: recovered.was_recovering, epoch: recovered.epoch, offset: recovered.offset },
      { recovered: true, was_recovering: true, epoch: subscribed.epoch, offset: 8 },
    );
    assert.equal((await callApi(a, 'publish', { channel, data: { n: 9 } })).status, 200);
    const after = await second.waitPublications(channel, 6);
    await sleep(200);
    assert.deepEqual(
      second.publications(channel).map((p) => [p.offset, p.data.n]),
      [4, 5, 6, 7, 8, 9].map((n) => [n, n]),
      'exactly the missed publications, then the live one',
    );
    assert.equal(after.length, 6);
  });

  test('SSE: a stream drops from A and resumes on B with its Last-Event-ID', async () => {
    const channel = unique('chaos:sse-recover');
    const token = await tokens.sign('sse-walker');
    const first = await openSse(sseUrl(a.url, { token, channels: [channel] }));
    streams.push(first);
    assert.equal(first.status, 200);
    await first.waitForFrame((f) => f['push'] === 'subscribed');
    for (let n = 1; n <= 3; n++) assert.equal((await callApi(b, 'publish', { channel, data: { n } })).status, 200);
    await first.waitForFrame((f) => f['push'] === 'publication' && f['data']?.n === 3);
    const lastEventId = first.lastEventId;
    assert.match(lastEventId, /\|3$/);
    first.abort();
    for (let n = 4; n <= 7; n++) assert.equal((await callApi(b, 'publish', { channel, data: { n } })).status, 200);
    const second = await openSse(sseUrl(b.url, { token }), { 'last-event-id': lastEventId });
    streams.push(second);
    const subscribedFrame = await second.waitForFrame((f) => f['push'] === 'subscribed');
    assert.equal(subscribedFrame['recovered'], true, JSON.stringify(subscribedFrame));
    assert.equal(subscribedFrame['was_recovering'], true);
    await second.waitForFrame((f) => f['push'] === 'publication' && f['data']?.n === 7);
    assert.equal((await callApi(a, 'publish', { channel, data: { n: 8 } })).status, 200);
    await second.waitForFrame((f) => f['push'] === 'publication' && f['data']?.n === 8);
    assert.deepEqual(
      second.pushes('publication').map((p) => p['data'].n),
      [4, 5, 6, 7, 8],
    );
    second.abort();
  });

  test('long polling: a session on A is abandoned and a new one on B recovers from its cursor', async () => {
    const channel = unique('chaos:lp-recover');
    const token = await tokens.sign('lp-walker');
    const first = await LongPollSession.open(a.url, { token, channels: [channel] });
    for (let n = 1; n <= 3; n++) assert.equal((await callApi(b, 'publish', { channel, data: { n } })).status, 200);
    await first.pollUntil((all) => (all.some((m) => m.push === 'publication' && m.data?.n === 3) ? true : undefined), 'n=3 on A');
    const cursor = first.cursor;
    assert.match(cursor, /\|3$/);
    await first.close();
    for (let n = 4; n <= 6; n++) assert.equal((await callApi(b, 'publish', { channel, data: { n } })).status, 200);
    const second = await LongPollSession.open(b.url, { token, cursor });
    const subscribedMessage = await second.pollUntil((all) => all.find((m) => m.push === 'subscribed'), 'subscribed on B');
    assert.equal(subscribedMessage.recovered, true, JSON.stringify(subscribedMessage));
    await second.waitMarker(channel, { n: 6 });
    assert.deepEqual(
      second.publications(channel).map((p) => p.data.n),
      [4, 5, 6],
    );
    await second.close();
  });

  test('long polling: a poll that lands on the other node is 404 session_unknown; reopening there with the cursor loses nothing', async () => {
    const channel = unique('chaos:lp-wander');
    const token = await tokens.sign('lp-wanderer');
    const onA = await LongPollSession.open(a.url, { token, channels: [channel] });
    assert.equal((await callApi(b, 'publish', { channel, data: { n: 1 } })).status, 200);
    await onA.waitMarker(channel, { n: 1 });
    assert.equal((await callApi(a, 'publish', { channel, data: { n: 2 } })).status, 200);
    // A load balancer without stickiness sends the next poll to B: sessions are per node.
    const stray = await new LongPollSession(b.url, { session: onA.session, seq: onA.seq, cursor: onA.cursor, messages: [] }).rawPoll(onA.seq);
    assert.equal(stray.status, 404);
    assert.equal(stray.body.error.code, 'session_unknown');
    const onB = await LongPollSession.open(b.url, { token, cursor: onA.cursor });
    await onB.waitMarker(channel, { n: 2 });
    assert.deepEqual(
      onB.publications(channel).map((p) => p.data.n),
      [2],
    );
    await onB.close();
    await onA.close();
  });

  test('presence, join and leave span both nodes', async () => {
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
      assert.deepEqual(
        Object.values(presence.body.clients as Record<string, { user: string }>).map((c) => c.user).sort(),
        ['alice', 'bob'],
        `presence on ${node.name}`,
      );
      assert.deepEqual((await callApi(node, 'presence_stats', { channel })).body, { num_clients: 2, num_users: 2 });
    }
    const fromClient = await alice.call('presence', { channel });
    assert.deepEqual(Object.keys(fromClient.clients).sort(), [alice.clientId, bob.clientId].sort());
    await bob.close();
    const leave = await alice.push('leave', channel, (f) => f.info.user === 'bob');
    assert.equal(leave.info.client, bob.clientId);
    await eventually(async () => ((await callApi(a, 'presence_stats', { channel })).body.num_clients === 1 ? true : undefined), 'presence of 1 on A');
    await eventually(async () => ((await callApi(b, 'presence_stats', { channel })).body.num_clients === 1 ? true : undefined), 'presence of 1 on B');
  });

  test('API disconnect on B closes the user’s connections on A (3503, or 3007 with reconnect)', async () => {
    const carol = await ws(a, 'carol');
    const other = await ws(a, 'not-carol');
    const answer = await callApi(b, 'disconnect', { user: 'carol' });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.disconnected, 0, 'the count is of connections on the answering node');
    assert.equal((await carol.waitClose()).code, 3503);
    const carolAgain = await ws(a, 'carol');
    assert.equal((await callApi(b, 'disconnect', { user: 'carol', reconnect: true })).status, 200);
    assert.equal((await carolAgain.waitClose()).code, 3007);
    assert.ok(other.isOpen, 'another user stays connected');
    await other.close();
  });

  test('channels and info list both nodes (snapshots)', async () => {
    const x = unique('chaos:listed');
    const y = unique('chaos:listed');
    const clients: WsClient[] = [];
    for (const [node, channel] of [
      [a, x],
      [a, x],
      [b, x],
      [b, y],
    ] as const) {
      const client = await ws(node, 'lister');
      await client.call('subscribe', { channel });
      clients.push(client);
    }
    const listPrefix = 'chaos:listed';
    for (const node of [a, b]) {
      const listed = await eventually(
        async () => {
          const answer = await callApi(node, 'channels', { prefix: listPrefix });
          const channels = answer.body.channels as Record<string, { num_clients: number }>;
          return channels[x]?.num_clients === 3 && channels[y]?.num_clients === 1 ? channels : undefined;
        },
        `channels on ${node.name} to count both nodes`,
        10000,
      );
      assert.deepEqual(Object.keys(listed).sort(), [x, y].sort());
      const info = await eventually(
        async () => {
          const answer = await callApi(node, 'info', {});
          return answer.body.nodes?.length === 2 ? answer.body : undefined;
        },
        `info on ${node.name} to list 2 nodes`,
        10000,
      );
      const ids = new Set(info.nodes.map((n: { id: string }) => n.id));
      assert.equal(ids.size, 2);
      assert.ok(info.nodes.every((n: { connections: number }) => n.connections >= 2), JSON.stringify(info.nodes));
    }
    for (const client of clients) await client.close();
  });

  test('revoke_user on A closes the user on B (3507); a node started later refuses the revoked token too', async () => {
    const token = await tokens.sign('dave');
    const dave = await openWs(b.wsUrl);
    await dave.connect(token);
    const answer = await callApi(a, 'revoke_user', { user: 'dave' });
    assert.equal(answer.status, 200);
    assert.equal((await dave.waitClose()).code, 3507);
    const again = await openWs(b.wsUrl);
    again.send({ id: 1, method: 'connect', params: { token } });
    assert.equal((await again.waitClose()).code, 3507, 'the old token is refused on B');
    const c = await startRedisHerald('C', { redisUrl: REDIS_URL, prefix, tokens });
    try {
      const late = await openWs(c.wsUrl);
      late.send({ id: 1, method: 'connect', params: { token } });
      assert.equal((await late.waitClose()).code, 3507, 'a node started after the revocation knows it (kept in Redis)');
      // A token issued after the revocation (a later second) is accepted.
      await sleep(1100);
      const fresh = await openWs(c.wsUrl);
      await fresh.connect(await tokens.sign('dave'));
      await fresh.close();
    } finally {
      await c.close();
    }
  });
});
