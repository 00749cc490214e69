/**
 * Chaos tests of the Redis engine (shared/SECURITY-TESTS.md section F, 30–34;
 * issue 4 "Chaos tests"). Each test starts its own `redis-server` on a spare
 * loopback port (stopped, flushed and killed at will; the machine's shared
 * Redis is only used to check that `redis-server` exists) and two Herald
 * nodes on it, A and B. A numbered publisher goes through the server API;
 * WebSocket, SSE and long-poll followers (packages/server/test/redis/followers.ts) obey the
 * protocol's recovery rules. In every case each follower must end with every
 * acknowledged (HTTP 200) publication exactly once, in order, at its
 * acknowledged position, or with an explicit `recovered: false` before the
 * gap; nothing may hang.
 *
 * HERALD_CHAOS_OUTAGE_MS (default 30000) sets the length of the Redis outage
 * of test 30.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { missingService } from '../helpers/services.ts';
import { closeAllClients, eventually, openWs, type WsClient } from '../helpers/herald-ws.ts';
import { WsClient as RtWsClient } from '../helpers/rt-clients.ts';
import { sleep, waitUntil, withTimeout } from '../helpers/rt-util.ts';
import { callApi, cleanupSpawned, RedisProxy, RedisServer, spawnRedisHerald, startRedisHerald, Tokens, uniquePrefix, type RedisHerald, type SpawnedHerald, type Target } from './harness.ts';
import { LongPollFollower, Publisher, SseFollower, verify, WsFollower, type Follower } from './followers.ts';

const OUTAGE_MS = Number(process.env['HERALD_CHAOS_OUTAGE_MS'] ?? 30000);
const hasRedisServer = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
const skip = missingService('redis-server (the binary, to run a private Redis)', hasRedisServer);

/** WebSocket, SSE and long polling on `a`, WebSocket on `b`; each comes back to the same node unless `targetsA` says otherwise. */
function followersFor(channel: string, tokens: Tokens, a: Target, b: Target, targetsA: () => readonly Target[] = () => [a]): Follower[] {
  return [
    new WsFollower({ name: 'ws-A', channel, tokens, targets: targetsA }),
    new SseFollower({ name: 'sse-A', channel, tokens, targets: targetsA }),
    new LongPollFollower({ name: 'lp-A', channel, tokens, targets: targetsA }),
    new WsFollower({ name: 'ws-B', channel, tokens, targets: () => [b] }),
  ];
}

/** Stops the publisher, publishes an end marker, waits for every follower to get it, and checks the guarantee. */
async function finish(publisher: Publisher, followers: readonly Follower[]): Promise<void> {
  await publisher.stop();
  const marker = await publisher.final();
  for (const f of followers) await f.waitFor(marker, 20000);
  const report = followers.map((f) => f.summary()).join('\n  ');
  console.log(`  ${publisher.channel}: ${publisher.acked.length} acknowledged of ${publisher.attempts.length} (${JSON.stringify(publisher.statusCounts())})\n  ${report}`);
  for (const f of followers) assert.deepEqual(verify(f, publisher.acked).slice(0, 10), [], `${f.summary()}`);
}

/** The first acknowledged publication made through `node` that started after `since`, and when `follower` got it. */
function deliveredAfter(publisher: Publisher, follower: Follower, node: string, since: number): number | undefined {
  const attempt = publisher.attempts.find((a) => a.status === 200 && a.node === node && a.startedAt >= since && follower.received.has(a.n));
  if (attempt === undefined) return undefined;
  const event = follower.events[follower.received.get(attempt.n)!]!;
  return event.at - since;
}

describe('Redis engine chaos (SECURITY-TESTS F 30–34)', { skip }, () => {
  let redis: RedisServer;
  const nodes: { close(): Promise<void> }[] = [];
  const proxies: RedisProxy[] = [];
  let followers: Follower[] = [];
  let publisher: Publisher | undefined;
  /** Per test: a token secret shared by its nodes, and a key prefix of its own. */
  let tokens = new Tokens();
  let prefix = uniquePrefix('chaos');

  function fresh(label: string): void {
    tokens = new Tokens();
    prefix = uniquePrefix(label);
  }

  before(async () => {
    redis = await RedisServer.start();
  });

  afterEach(async () => {
    await publisher?.stop();
    publisher = undefined;
    for (const f of followers) f.stop();
    followers = [];
    closeAllClients();
    // Heal the network first: a node must be able to close.
    for (const proxy of proxies) {
      proxy.stalled = false;
      proxy.delayMs = 0;
    }
    for (const node of nodes.splice(0)) await withTimeout(node.close(), 20000, 'closing a Herald node').catch((error: unknown) => console.log(`  ${String(error)}`));
    for (const proxy of proxies.splice(0)) await proxy.close();
    cleanupSpawned();
    if (redis.child === undefined) await redis.launch();
    await redis.command('FLUSHALL');
  });

  after(async () => {
    await redis?.close();
  });

  async function node(name: string, options: { redisUrl?: string; ownEngine?: boolean; engine?: Record<string, unknown> } = {}): Promise<RedisHerald> {
    const h = await startRedisHerald(name, {
      redisUrl: options.redisUrl ?? redis.url,
      prefix: prefix,
      tokens,
      ownEngine: options.ownEngine ?? false,
      engine: { probeIntervalMs: 500, redisCommandTimeoutMs: 1000, ...(options.engine ?? {}) },
    });
    nodes.push(h);
    // Each fault starts from a healthy node: on a loaded machine the first
    // delivery probe (a short deadline in some tests) may not have passed yet,
    // and a subscribe before it is answered 116 (temporarily unavailable).
    const deadline = Date.now() + 30_000;
    while ((await h.health().catch(() => undefined))?.status !== 200) {
      if (Date.now() > deadline) throw new Error(`node ${name} not healthy within 30 s`);
      await sleep(100);
    }
    return h;
  }

  async function startAll(list: Follower[]): Promise<void> {
    followers = list;
    for (const f of list) await f.start();
  }

  async function wsClient(target: Target, user: string): Promise<WsClient> {
    const client = await openWs(target.wsUrl);
    await client.connect(await tokens.sign(user));
    return client;
  }

  test(`30: Redis down ${OUTAGE_MS / 1000} s: publish answers 503, health degraded; after it returns, cross-node delivery resumes and nothing acknowledged is lost`, async () => {
    fresh('c30');
    const a = await node('A');
    const b = await node('B');
    const channel = 'chaos:c30';
    await startAll(followersFor(channel, tokens, a, b));
    const chatter = await wsClient(a, 'chatter');
    publisher = new Publisher(channel, () => [a, b], { intervalMs: 20 });
    publisher.start();
    await sleep(1000);

    // Redis stops (a maintenance restart of a persistent Redis: its data survives).
    await redis.stop({ save: true });
    const downAt = Date.now();
    for (const h of [a, b]) {
      const health = await eventually(async () => {
        const answer = await h.health();
        return answer.status === 503 ? answer : undefined;
      }, `${h.name} health degraded`);
      assert.equal(health.body.status, 'degraded');
      assert.match(health.body.reason, /redis/);
    }
    // Clients get reply 116 for what needs Redis.
    assert.equal(await chatter.callError('publish', { channel: 'chat:during-outage', data: {} }), 116);
    assert.equal(await chatter.callError('subscribe', { channel: 'chaos:during-outage' }), 116);
    const healthSamples: number[] = [];
    while (Date.now() - downAt < OUTAGE_MS) {
      await sleep(1000);
      for (const h of [a, b]) healthSamples.push((await h.health()).status);
    }
    const upAt = Date.now();
    const during = publisher.attempts.filter((t) => t.startedAt >= downAt && t.endedAt <= upAt);
    assert.ok(during.length > 10, `publishes were attempted during the outage (${during.length})`);
    assert.deepEqual([...new Set(during.map((t) => t.status))], [503], 'every publish during the outage answers 503');
    assert.deepEqual(
      publisher.attempts.filter((t) => t.status === 200 && t.startedAt >= downAt && t.startedAt < upAt),
      [],
      'no publish started while Redis was down is acknowledged',
    );
    assert.ok(healthSamples.every((s) => s === 503), `health stays degraded: ${healthSamples.join(',')}`);

    // Redis comes back on the same port.
    await redis.launch();
    const backAt = Date.now();
    const resumed = await waitUntil(
      () => {
        const times = followers.filter((f) => f.name.endsWith('-A')).map((f) => deliveredAfter(publisher!, f, 'B', backAt));
        return times.every((t) => t !== undefined) ? (times as number[]) : undefined;
      },
      { timeoutMs: 20000, label: 'cross-node delivery (published on B, received on A) after Redis returned' },
    );
    const firstAck = publisher.attempts.find((t) => t.status === 200 && t.startedAt >= backAt);
    console.log(
      `  Redis back: first publish acknowledged ${firstAck === undefined ? '?' : firstAck.endedAt - backAt} ms later; B→A delivery resumed after ${resumed.join('/')} ms (ws/sse/lp); ${during.length} publishes during the outage, all 503`,
    );
    await sleep(1000);
    await finish(publisher, followers);
    for (const h of [a, b]) assert.equal((await h.health()).status, 200, `${h.name} healthy again`);
    for (const f of followers) {
      assert.ok(f.resubscribes.length >= 1, `${f.name} resynchronized after the pub/sub connection came back`);
      assert.ok(
        f.resubscribes.every((s) => s.recovered),
        `${f.name}: Redis kept its data, so every recovery succeeds: ${f.summary()}`,
      );
    }
  });

  test('31: pub/sub connection killed (CLIENT KILL TYPE pubsub), and lost silently with TCP up: resubscribe, resynchronize, no silent gap; the probe reports it (readiness delivery_probe)', async () => {
    fresh('c31');
    const proxy = new RedisProxy(redis.port);
    await proxy.listen();
    proxies.push(proxy);
    const a = await node('A', { redisUrl: proxy.url, ownEngine: true, engine: { probeIntervalMs: 300, probeDeadlineMs: 300 } });
    const b = await node('B');
    const channel = 'chaos:c31';
    await startAll(followersFor(channel, tokens, a, b));
    // A subscription without history is not resynchronized (it has no
    // position): it must simply keep receiving after the resubscription.
    const plain = await wsClient(a, 'plain');
    // 116 is retryable by contract; A's probe deadline here is 300 ms, which a loaded machine can miss once.
    for (let attempt = 0; ; attempt++) {
      const reply = await plain.request('subscribe', { channel: 'nohistory:c31' });
      if (reply['error'] === undefined) break;
      assert.equal(reply['error'].code, 116, `only "temporarily unavailable" is retried: ${JSON.stringify(reply)}`);
      assert.ok(attempt < 50, 'the subscribe kept failing with 116');
      await sleep(200);
    }
    publisher = new Publisher(channel, () => [b], { intervalMs: 10 });
    publisher.start();
    await sleep(500);

    // (a) Redis closes every pub/sub connection.
    const degradedSeen: string[] = [];
    /** Readiness reasons of A, once the silent loss below has begun. */
    const notReadySeen = new Set<string>();
    let silentLoss = false;
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const health = await a.health().catch(() => undefined);
        if (health?.status === 503) degradedSeen.push(health.body.reason);
        if (silentLoss) {
          const ready = await a.ready().catch(() => undefined);
          for (const r of ready?.body?.reasons ?? []) notReadySeen.add(r.reason);
        }
        await sleep(5);
      }
    })();
    const before = followers.map((f) => f.resubscribes.length);
    const killed = Number(await redis.command('CLIENT', 'KILL', 'TYPE', 'pubsub'));
    assert.ok(killed >= 2, `pub/sub connections of both nodes killed (${killed})`);
    const killedAt = Date.now();
    await waitUntil(() => followers.every((f, i) => f.resubscribes.length > before[i]! && f.subscribed), {
      timeoutMs: 15000,
      label: 'every follower resynchronized after CLIENT KILL',
      describe: () => followers.map((f) => f.summary()).join('\n'),
    });
    const resyncMs = Date.now() - killedAt;
    let tick = 0;
    await eventually(async () => {
      await callApi(b, 'publish', { channel: 'nohistory:c31', data: { tick: ++tick } });
      return plain.publications('nohistory:c31').length > 0 ? true : undefined;
    }, 'a channel without history delivers again after the pub/sub connection came back');
    assert.ok(plain.isOpen, 'a subscription without history stays open');
    await sleep(500);
    console.log(`  CLIENT KILL TYPE pubsub: ${killed} connections; every follower resynchronized within ${resyncMs} ms; /health degraded seen ${degradedSeen.length} times (${[...new Set(degradedSeen)].join('; ') || 'reconnect faster than the poll'})`);

    // (b) The subscription is lost silently: A's pub/sub socket stays up, but
    // Redis now sees a fresh client with no subscriptions.
    // The probe's failure is readiness (delivery_probe); the reconnect that
    // repairs it may show briefly as engine_degraded.
    const changesBefore = a.probeChanges.length;
    silentLoss = true;
    const swapped = proxy.swapSubscriberUpstreams();
    assert.equal(swapped, 1, 'A has one pub/sub connection');
    const swappedAt = Date.now();
    const resubscribesBefore = followers.map((f) => f.resubscribes.length);
    const reported = await waitUntil(() => a.probeChanges.slice(changesBefore).find((c) => c.failure !== undefined), {
      timeoutMs: 15000,
      label: 'the delivery probe to report the lost subscription',
    });
    assert.match(reported.failure!, /not delivered back within 300 ms/);
    await waitUntil(() => a.probeChanges.slice(changesBefore).some((c) => c.failure === undefined), { timeoutMs: 15000, label: 'A ready again' });
    await waitUntil(() => followers.slice(0, 3).every((f, i) => f.resubscribes.length > resubscribesBefore[i]! && f.subscribed), {
      timeoutMs: 15000,
      label: 'followers on A resynchronized after the silent loss',
      describe: () => followers.map((f) => f.summary()).join('\n'),
    });
    console.log(`  silent loss: probe reported it after ${reported.at - swappedAt} ms; not ready for ${a.probeChanges.slice(changesBefore).find((c) => c.failure === undefined)!.at - reported.at} ms`);
    watching = false;
    await watcher;
    assert.ok(notReadySeen.has('delivery_probe'), `readiness said delivery_probe during the silent loss: ${[...notReadySeen].join(', ')}`);
    await sleep(300);
    await finish(publisher, followers);
    for (const f of followers) assert.ok(f.resubscribes.every((s) => s.recovered), `${f.name}: history covered the gap: ${f.summary()}`);
  });

  test('32: FLUSHALL: the epoch changes; live and returning clients get recovered:false, never wrong history', async () => {
    fresh('c32');
    const a = await node('A');
    const b = await node('B');
    const channel = 'chaos:c32';
    await startAll(followersFor(channel, tokens, a, b));
    // A client that will be away during the FLUSHALL.
    const away = await wsClient(a, 'away');
    const awaySub = await away.call('subscribe', { channel });
    publisher = new Publisher(channel, () => [a, b], { intervalMs: 10 });
    publisher.start();
    await sleep(700);
    const awayPubs = await away.waitPublications(channel, 5);
    const awayPosition = { epoch: awaySub.epoch, offset: awayPubs[awayPubs.length - 1].offset };
    away.ws.terminate();
    const oldEpoch = publisher.acked[0]!.epoch;

    await redis.command('FLUSHALL');
    await sleep(1000);
    await finish(publisher, followers);

    const epochs = [...new Set(publisher.acked.map((x) => x.epoch))];
    assert.equal(epochs.length, 2, `one epoch before and one after: ${epochs.join(',')}`);
    const newEpoch = epochs[1]!;
    const inNewEpoch = publisher.acked.filter((x) => x.epoch === newEpoch);
    assert.deepEqual(
      inNewEpoch.map((x) => x.offset),
      inNewEpoch.map((_, i) => i + 1),
      'the new stream starts at offset 1, contiguous',
    );
    for (const f of followers) {
      assert.ok(f.resubscribes.some((s) => !s.recovered), `${f.name} was told recovered:false: ${f.summary()}`);
      assert.equal(f.epoch, newEpoch, `${f.name} ends in the new epoch`);
    }
    // A client coming back with a position in the lost epoch.
    const back = await wsClient(b, 'away');
    const answer = await back.call('subscribe', { channel, recover: true, ...awayPosition });
    assert.deepEqual([answer.recovered, answer.was_recovering, answer.epoch !== oldEpoch], [false, true, true]);
    await sleep(200);
    assert.deepEqual(back.publications(channel), [], 'no publication of another epoch is replayed');
    // History holds only the new stream.
    const history = await callApi(a, 'history', { channel, limit: 10000 });
    assert.equal(history.body.epoch, newEpoch);
    const byN = new Map(publisher.acked.map((x) => [x.n, x]));
    for (const p of history.body.publications as { offset: number; data: { n: number } }[]) {
      const ack = byN.get(p.data.n);
      if (ack !== undefined) assert.deepEqual([ack.epoch, ack.offset], [newEpoch, p.offset], `history entry n=${p.data.n}`);
    }
    const since = await callApi(b, 'history', { channel, limit: 100, since: awayPosition });
    assert.deepEqual(since.body.publications, [], 'history since a position of the lost epoch is empty');
  });

  test('32b: a stream whose epoch record is lost but whose history list survives (eviction) never serves the old entries under the new epoch', async () => {
    fresh('c32b');
    const a = await node('A');
    const channel = 'chaos:c32b';
    for (let n = 1; n <= 5; n++) assert.equal((await callApi(a, 'publish', { channel, data: { n } })).status, 200);
    const old = (await callApi(a, 'history', { channel, limit: 0 })).body;
    // What allkeys-lru eviction (or an operator's DEL) can do: one key of the stream goes, the other stays.
    assert.equal(await redis.command('DEL', `${prefix}:{${channel}}:meta`), 1);
    const reader = await wsClient(a, 'reader');
    const subscribed = await reader.call('subscribe', { channel });
    assert.notEqual(subscribed.epoch, old.epoch, 'a new epoch');
    for (let n = 101; n <= 103; n++) assert.equal((await callApi(a, 'publish', { channel, data: { n } })).status, 200);
    const history = (await callApi(a, 'history', { channel, limit: 100 })).body;
    assert.deepEqual(
      history.publications.map((p: { offset: number; data: { n: number } }) => [p.offset, p.data.n]),
      [
        [1, 101],
        [2, 102],
        [3, 103],
      ],
      'history of the new epoch holds only its own publications',
    );
    const recovering = await wsClient(a, 'reader');
    const answer = await recovering.call('subscribe', { channel, recover: true, epoch: old.epoch, offset: 2 });
    assert.equal(answer.recovered, false);
    const recovered = await wsClient(a, 'reader');
    const again = await recovered.call('subscribe', { channel, recover: true, epoch: subscribed.epoch, offset: 0 });
    assert.equal(again.recovered, true);
    await recovered.waitPublications(channel, 3);
    assert.deepEqual(
      recovered.publications(channel).map((p) => p.data.n),
      [101, 102, 103],
    );
  });

  test('33: slow Redis (3 s latency, 500 ms timeouts) and stalled Redis: every call times out, nothing hangs, queues stay bounded; it all works again afterwards', async () => {
    fresh('c33');
    const proxy = new RedisProxy(redis.port);
    await proxy.listen();
    proxies.push(proxy);
    const timeoutMs = 500;
    const a = await node('A', { redisUrl: proxy.url, ownEngine: true, engine: { redisCommandTimeoutMs: timeoutMs, probeIntervalMs: 500 } });
    const b = await node('B');
    const channel = 'chaos:c33';
    await startAll(followersFor(channel, tokens, a, b));
    publisher = new Publisher(channel, () => [b], { intervalMs: 20 });
    publisher.start();
    await sleep(500);

    // Publishers hammering A while Redis is slow, then stalled.
    const viaA = new Publisher('chaos:c33-via-a', () => [a], { intervalMs: 0, timeoutMs: 30000 });
    let hammering = true;
    const hammer = Promise.all(
      Array.from({ length: 6 }, async () => {
        while (hammering) await viaA.publishOnce();
      }),
    );
    const queue = () => (a.clients!.command as unknown as { commandQueue: { length: number } }).commandQueue.length;
    const samples: { phase: string; queue: number; held: number }[] = [];
    const phase = async (name: string, ms: number) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        await sleep(250);
        samples.push({ phase: name, queue: queue(), held: proxy.heldBytes });
      }
    };

    proxy.delayMs = 3000;
    const slowAt = Date.now();
    await phase('slow', 6000);
    proxy.stalled = true;
    const stallAt = Date.now();
    await phase('stall', 6000);
    const sickEnd = Date.now();
    hammering = false;
    await hammer;
    const sick = viaA.attempts.filter((t) => t.startedAt >= slowAt + timeoutMs && t.endedAt <= sickEnd);
    const stalled = viaA.attempts.filter((t) => t.startedAt >= stallAt);
    const slowest = Math.max(...sick.map((t) => t.endedAt - t.startedAt));
    const maxQueue = Math.max(...samples.map((s) => s.queue));
    const maxQueueStall = Math.max(...samples.filter((s) => s.phase === 'stall').map((s) => s.queue));
    console.log(
      `  slow+stalled Redis: ${sick.length} publishes through A (${JSON.stringify(viaA.statusCounts(slowAt + timeoutMs, sickEnd))}), slowest answer ${slowest} ms; ` +
        `A's command queue max ${maxQueue} (stall: ${maxQueueStall}, ${stalled.length} publishes meanwhile); health of A: ${(await a.health()).body.status}`,
    );
    assert.ok(sick.length > 20, 'publishes were attempted through A');
    assert.deepEqual([...new Set(sick.map((t) => t.status))], [503], 'every publish through the slow Redis answers 503, never 200');
    // Bounded by the command timeout (500 ms), not by Redis: a publish that waited for the stalled Redis
    // would end at the client's own timeout (30 s) without an answer, or with 200 once Redis is healed.
    assert.deepEqual([...new Set(stalled.map((t) => t.status))], [503], 'every publish started while Redis stalls is answered 503 while it still stalls');
    assert.equal((await a.health()).status, 503, 'A reports degraded health while Redis stalls');
    assert.ok(
      maxQueueStall < stalled.length / 2,
      `commands waiting on a stalled Redis do not pile up without bound: queue ${maxQueueStall} after ${stalled.length} publishes`,
    );

    proxy.stalled = false;
    proxy.delayMs = 0;
    const healedAt = Date.now();
    const ok = await eventually(async () => {
      const answer = await callApi(a, 'publish', { channel: 'chaos:c33-via-a', data: { after: true } });
      return answer.status === 200 ? Date.now() : undefined;
    }, 'a publish through A acknowledged once Redis is fast again', 20000);
    await eventually(async () => ((await a.health()).status === 200 ? true : undefined), 'A healthy again', 20000);
    console.log(`  Redis fast again: publish through A acknowledged after ${ok - healedAt} ms`);
    await sleep(500);
    await finish(publisher, followers);
  });

  test('33c: a resynchronization while Redis commands fail: WebSocket clients are closed with 3006, SSE and long-poll subscriptions are resynchronized by the server once Redis answers again (recovered:false after FLUSHALL), never a silent stop', async () => {
    fresh('c33c');
    const proxy = new RedisProxy(redis.port);
    await proxy.listen();
    proxies.push(proxy);
    // A long probe interval: the epoch change below, not the probe, must trigger the resynchronization.
    const a = await node('A', { redisUrl: proxy.url, engine: { redisCommandTimeoutMs: 500, probeIntervalMs: 5000 } });
    const b = await node('B');
    const channel = 'chaos:c33c';
    await startAll(followersFor(channel, tokens, a, b));
    publisher = new Publisher(channel, () => [b], { intervalMs: 20 });
    publisher.start();
    await sleep(500);
    // A's command connection stalls (its pub/sub connection still delivers);
    // then the stream's data is lost, so B's next publication has a new epoch
    // and every subscriber on A must resynchronize: reading history and
    // leaving presence fail meanwhile.
    proxy.stallCommands = true;
    await sleep(100);
    const resets = () => followers.map((f) => f.events.filter((e) => e.kind === 'reset').length);
    const before = resets();
    const resyncsBefore = followers.map((f) => f.resubscribes.length);
    await redis.command('FLUSHALL');
    const wsA = followers.find((f) => f.name === 'ws-A')!;
    await waitUntil(() => resets()[followers.indexOf(wsA)]! > before[followers.indexOf(wsA)]!, {
      timeoutMs: 10000,
      label: 'the WebSocket client on A closed with 3006 while A cannot reach Redis for commands',
      describe: () => followers.map((f) => f.summary()).join('\n'),
    });
    proxy.stallCommands = false;
    await waitUntil(() => followers.every((f, i) => f.resubscribes.length > resyncsBefore[i]! && f.subscribed), {
      timeoutMs: 15000,
      label: 'every follower resynchronized once Redis answers again',
      describe: () => followers.map((f) => f.summary()).join('\n'),
    });
    for (const f of followers) {
      const last = f.resubscribes.at(-1)!;
      assert.equal(last.recovered, false, `${f.name}: FLUSHALL lost the stream, so the resynchronization says recovered:false: ${f.summary()}`);
    }
    await sleep(500);
    await finish(publisher, followers);
  });

  test('33d: Redis commands fail for longer than engine.unavailableRetryMs: SSE and long-poll connections whose subscriptions the server is resynchronizing are closed with 3002, and recover after reconnecting', async () => {
    fresh('c33d');
    const proxy = new RedisProxy(redis.port);
    await proxy.listen();
    proxies.push(proxy);
    const a = await node('A', { redisUrl: proxy.url, engine: { redisCommandTimeoutMs: 300, probeIntervalMs: 5000, unavailableRetryMs: 1500 } });
    const b = await node('B');
    const channel = 'chaos:c33d';
    const sse = new SseFollower({ name: 'sse-A', channel, tokens, targets: () => [a] });
    const lp = new LongPollFollower({ name: 'lp-A', channel, tokens, targets: () => [a] });
    await startAll([sse, lp, new WsFollower({ name: 'ws-B', channel, tokens, targets: () => [b] })]);
    publisher = new Publisher(channel, () => [b], { intervalMs: 20 });
    publisher.start();
    await sleep(500);
    proxy.stallCommands = true;
    await sleep(100);
    await redis.command('FLUSHALL');
    const closedWith = (f: Follower, code: number) => f.events.some((e) => e.kind === 'reset' && e.how === 'disconnect' && e.code === code);
    await waitUntil(() => closedWith(sse, 3002) && closedWith(lp, 3002), {
      timeoutMs: 15000,
      label: 'SSE and long-poll connections on A closed with 3002 after engine.unavailableRetryMs',
      describe: () => followers.map((f) => f.summary()).join('\n'),
    });
    proxy.stallCommands = false;
    await sleep(500);
    await finish(publisher, followers);
  });

  test('33b: stalled Redis: a subscribe is still answered (116) and SIGTERM still exits (the drain is bounded)', async () => {
    fresh('c33b');
    const proxy = new RedisProxy(redis.port);
    await proxy.listen();
    proxies.push(proxy);
    const drainTimeoutMs = 3000;
    const a = await spawnRedisHerald('A', { redisUrl: proxy.url, prefix: prefix, tokens, drainTimeoutMs, engine: { redisCommandTimeoutMs: 500, probeIntervalMs: 500 } });
    const follower = new WsFollower({ name: 'ws-A', channel: 'chaos:c33b', tokens, targets: () => [a] });
    await startAll([follower]);
    const client = await RtWsClient.connect(a.wsUrl, await tokens.sign('late'));
    proxy.stalled = true;
    await sleep(2000);
    const askedAt = Date.now();
    const reply = await client.request('subscribe', { channel: 'chaos:c33b-late' }, 15000).catch((error: Error) => ({ error: { message: error.message } }));
    const answeredMs = Date.now() - askedAt;
    console.log(`  stalled Redis: subscribe answered ${JSON.stringify(reply)} after ${answeredMs} ms`);
    assert.equal(reply['error']?.code, 116, 'the subscribe is answered 116 (unavailable), not left waiting');
    const termAt = Date.now();
    a.child.kill('SIGTERM');
    const exit = await Promise.race([a.exited, sleep(drainTimeoutMs + 60000).then(() => undefined)]);
    console.log(`  stalled Redis: SIGTERM -> ${exit === undefined ? 'still running' : `exit ${exit.code} after ${exit.at - termAt} ms`}`);
    assert.ok(exit !== undefined, `Herald exits after SIGTERM while Redis stalls (drain timeout ${drainTimeoutMs} ms); it was still running after ${drainTimeoutMs + 60000} ms`);
    assert.equal(exit.code, 0);
    client.terminate();
  });

  test('31b: a pub/sub connection that drops again while resubscribing (flapping) does not take Herald down', async () => {
    fresh('c31b');
    const proxy = new RedisProxy(redis.port);
    await proxy.listen();
    proxies.push(proxy);
    const a = await spawnRedisHerald('A', { redisUrl: proxy.url, prefix: prefix, tokens, engine: { redisCommandTimeoutMs: 2000, probeIntervalMs: 500 } });
    const channel = 'chaos:c31b';
    await startAll([new WsFollower({ name: 'ws-A', channel, tokens, targets: () => [a] })]);
    publisher = new Publisher(channel, () => [a], { intervalMs: 20 });
    publisher.start();
    const cutSubscriber = () => {
      for (const pipe of [...proxy.pipes]) if (pipe.subscriber) pipe.client.destroy();
    };
    for (let round = 0; round < 4; round++) {
      proxy.delayMs = 300;
      const accepted = proxy.accepted;
      cutSubscriber();
      // Herald reconnects and sends its SUBSCRIBEs again (held 300 ms by the proxy): cut right then.
      await waitUntil(() => proxy.accepted > accepted && [...proxy.pipes].some((p) => p.subscriber), { timeoutMs: 15000, label: 'Herald resubscribing' }).catch(() => undefined);
      cutSubscriber();
      await sleep(200);
      if (a.child.exitCode !== null) break;
    }
    proxy.delayMs = 0;
    await sleep(1000);
    assert.equal(a.child.exitCode, null, `Herald is still running:\n${a.stderr.slice(-20).join('\n')}\n${a.stdout.filter((l) => l.includes('"level":50') || l.includes('"level":60')).slice(-5).join('\n')}`);
    await eventually(async () => ((await callApi(a, 'publish', { channel: 'chaos:ok', data: {} })).status === 200 ? true : undefined), 'publish works again', 15000);
    await finish(publisher, followers);
  });

  test('34: SIGTERM drains one of two nodes: its clients get 3001, reconnect to the other node and recover with no acknowledged publication lost', async () => {
    fresh('c34');
    // A drain timeout far beyond the close grace: the clients, not the timeout, end this drain.
    const a: SpawnedHerald = await spawnRedisHerald('A', { redisUrl: redis.url, prefix: prefix, tokens, drainTimeoutMs: 60000 });
    const b: SpawnedHerald = await spawnRedisHerald('B', { redisUrl: redis.url, prefix: prefix, tokens });
    const channel = 'chaos:c34';
    let aAlive = true;
    await startAll(followersFor(channel, tokens, a, b, () => [a, b]));
    publisher = new Publisher(channel, () => (aAlive ? [a, b] : [b]), { intervalMs: 10 });
    publisher.start();
    await sleep(1000);
    const termAt = Date.now();
    a.child.kill('SIGTERM');
    const exit = await a.exited;
    aAlive = false;
    assert.deepEqual([exit.code, exit.signal], [0, null], `A exits 0:\n${a.stderr.join('\n')}`);
    const stopped = a.stdout.find((line) => line.includes('"msg":"stopped"'));
    assert.match(stopped ?? '', /"drained":true/, 'every client of A drained before the drain timeout');
    await waitUntil(() => followers.every((f) => f.node === 'B' && f.subscribed), {
      timeoutMs: 15000,
      label: 'every follower reconnected to B',
      describe: () => followers.map((f) => `${f.summary()} on ${f.node}`).join('\n'),
    });
    await sleep(500);
    await finish(publisher, followers);
    for (const f of followers.slice(0, 3)) {
      const codes = f.events.flatMap((e) => (e.kind === 'reset' ? [e.code] : []));
      // A long-poll client between two polls too: its next poll answers 3001 (test 34b).
      assert.ok(codes.includes(3001), `${f.name} was told 3001: ${JSON.stringify(f.events.filter((e) => e.kind !== 'pub'))}`);
      assert.ok(f.resubscribes.length >= 1 && f.resubscribes.every((s) => s.recovered), `${f.name} recovered on B: ${f.summary()}`);
    }
    const failed = publisher.attempts.filter((t) => t.status !== 200);
    console.log(`  drain: A exited ${exit.code} after ${exit.at - termAt} ms; ${failed.length} publishes to A refused meanwhile (${[...new Set(failed.map((t) => t.status))].join(',')})`);
  });

  test(
    '34b: SIGTERM: a long-poll client between two polls is told 3001 by its next poll (docs/operations.md: every connection is closed with 3001)',
    async () => {
      tokens = new Tokens();
      prefix = uniquePrefix('c34b');
      // Bounds far beyond the test's steps: the poll, not a timer, ends this drain.
      const a = await spawnRedisHerald('A', { redisUrl: redis.url, prefix: prefix, tokens, drainTimeoutMs: 60000, limits: { closeGraceMs: 60000 } });
      const opened = await fetch(`${a.url}/connection/poll/open`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ token: await tokens.sign('idle-poller'), channels: ['chaos:c34b'] }),
      });
      const session = (await opened.json()) as { session: string; seq: number };
      a.child.kill('SIGTERM');
      await eventually(async () => ((await fetch(`${a.url}/health`)).status === 503 ? true : undefined), 'A draining');
      const answer = await fetch(`${a.url}/connection/poll`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'herald-session': session.session },
        body: JSON.stringify({ seq: session.seq }),
        signal: AbortSignal.timeout(10000),
      }).then(
        async (r) => ({ status: r.status, body: (await r.json()) as { messages: { push: string; code?: number }[] } }),
        (error: Error) => ({ status: 0, body: { messages: [] }, error: error.message }),
      );
      const exit = await a.exited;
      assert.equal(answer.status, 200, `the poll after SIGTERM is answered: ${JSON.stringify(answer)}`);
      assert.ok(answer.body.messages.some((m) => m.push === 'disconnect' && m.code === 3001), JSON.stringify(answer.body));
      assert.deepEqual([exit.code, exit.signal], [0, null]);
    },
  );
});
