/**
 * Cluster mode on the Redis engine (issue 14 part 2): two "machines" (two
 * `herald serve --workers 2 --engine redis` processes, each with its own
 * port and state directory) on one private `redis-server`. Each worker is a
 * Redis node of its own; the primaries only supervise and route SSE and
 * long-poll sessions between their workers.
 *
 * Checked as outcomes, never durations: four distinct node ids; delivery
 * across machines on all three transports; presence and join/leave;
 * history and recovery; disconnect and revocation reaching every worker of
 * every machine; readiness following a worker's Redis. Chaos: SIGKILL of one
 * worker, a restart of Redis, SIGTERM of one machine while the other keeps
 * serving: every follower (WebSocket, SSE, long polling, on both machines)
 * ends with every acknowledged publication exactly once, in order
 * (packages/server/test/redis/followers.ts `verify`).
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { missingService } from '../helpers/services.ts';
import { closeAllClients, eventually, openWs, type WsClient } from '../helpers/herald-ws.ts';
import { sleep, waitUntil, withTimeout } from '../helpers/rt-util.ts';
import { TestCluster } from '../cluster/harness.ts';
import { callApi, NAMESPACES, RedisServer, Tokens, uniquePrefix, type Target } from './harness.ts';
import { LongPollFollower, Publisher, SseFollower, verify, WsFollower, type Follower } from './followers.ts';

const hasRedisServer = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
const skip = missingService('redis-server (the binary, to run a private Redis)', hasRedisServer);

interface Machine extends Target {
  readonly cluster: TestCluster;
}

function asTarget(name: string, cluster: TestCluster): Machine {
  return { name, url: cluster.url, wsUrl: cluster.wsUrl, apiKey: cluster.apiKey, cluster };
}

describe('cluster mode on the Redis engine: two machines × two workers', { skip }, () => {
  let redis: RedisServer;
  const tokens = new Tokens();
  const apiKey = randomBytes(24).toString('base64url');
  const prefix = uniquePrefix('machines');
  let m1: Machine;
  let m2: Machine;
  let followers: Follower[] = [];
  let publisher: Publisher | undefined;

  async function machine(name: string): Promise<Machine> {
    const cluster = await TestCluster.start({
      workers: 2,
      apiKey,
      hmacSecret: tokens.secret,
      config: {
        engine: { type: 'redis', redisUrl: redis.url, redisPrefix: prefix, probeIntervalMs: 500, redisCommandTimeoutMs: 1000 },
        channels: { defaults: {}, namespaces: NAMESPACES },
        limits: { newConnectionsPerIpPerSecond: 100000 },
      },
    });
    return asTarget(name, cluster);
  }

  async function ws(target: Target, user: string): Promise<WsClient> {
    const client = await openWs(target.wsUrl);
    await client.connect(await tokens.sign(user));
    return client;
  }

  /** Stops the publisher, publishes an end marker, waits for every follower to get it, and checks the guarantee. */
  async function finish(p: Publisher, list: readonly Follower[]): Promise<void> {
    await p.stop();
    const marker = await p.final();
    for (const f of list) await f.waitFor(marker, 30000);
    console.log(`  ${p.channel}: ${p.acked.length} acknowledged of ${p.attempts.length} (${JSON.stringify(p.statusCounts())})\n  ${list.map((f) => f.summary()).join('\n  ')}`);
    for (const f of list) assert.deepEqual(verify(f, p.acked).slice(0, 10), [], f.summary());
  }

  /** WebSocket, SSE and long polling on each machine; `back(m)` is where a follower of machine m reconnects. */
  function followersOn(channel: string, back: (m: Machine) => () => readonly Target[] = (m) => () => [m]): Follower[] {
    const list: Follower[] = [];
    for (const m of [m1, m2]) {
      list.push(new WsFollower({ name: `ws-${m.name}`, channel, tokens, targets: back(m) }));
      list.push(new SseFollower({ name: `sse-${m.name}`, channel, tokens, targets: back(m) }));
      list.push(new LongPollFollower({ name: `lp-${m.name}`, channel, tokens, targets: back(m) }));
    }
    return list;
  }

  async function startAll(list: Follower[]): Promise<void> {
    followers = list;
    for (const f of list) await f.start();
  }

  before(async () => {
    redis = await RedisServer.start();
    m1 = await machine('M1');
    m2 = await machine('M2');
  });

  afterEach(async () => {
    await publisher?.stop();
    publisher = undefined;
    for (const f of followers) f.stop();
    followers = [];
    closeAllClients();
    if (redis.child === undefined) await redis.launch();
  });

  after(async () => {
    for (const m of [m1, m2]) await m?.cluster.stop().catch(() => m.cluster.kill());
    await redis?.close();
  });

  test('every worker is a Redis node of its own: four distinct node ids, each machine sees all four', async () => {
    const ids = new Set<string>();
    for (const m of [m1, m2]) for (const pinned of await m.cluster.pinToWorkers(2)) ids.add(await pinned.node());
    assert.equal(ids.size, 4, `four workers, four node ids: ${[...ids].join(', ')}`);
    for (const m of [m1, m2]) {
      // Nodes learn of each other by their snapshots on the control channel (every 2 s).
      const nodes = await eventually(async () => {
        const info = await callApi(m, 'info', {});
        const seen = new Set<string>((info.body?.nodes ?? []).map((n: { id: string }) => n.id));
        return [...ids].every((id) => seen.has(id)) ? seen : undefined;
      }, `${m.name} info lists the four workers`, 15000);
      assert.equal(nodes.size, 4, `${m.name} sees exactly the four workers`);
    }
    // /metrics on a machine's internal listener aggregates its own two workers (not the other machine's).
    const before = await Promise.all([m1, m2].map(async (m) => metric(await scrape(m), 'herald_publications_total{source="api"}')));
    for (let i = 0; i < 6; i++) assert.equal((await m1.cluster.api('publish', { channel: 'chat:metrics', data: { i } })).status, 200);
    for (let i = 0; i < 4; i++) assert.equal((await m2.cluster.api('publish', { channel: 'chat:metrics', data: { i } })).status, 200);
    for (const [index, m] of [m1, m2].entries()) {
      const text = await scrape(m);
      assert.equal(metric(text, 'herald_publications_total{source="api"}') - before[index]!, index === 0 ? 6 : 4, `${m.name} counts its own workers' publishes`);
      assert.equal(text.split('\n').filter((l) => l.startsWith('herald_live_heap_bytes{worker="')).length, 2, `${m.name}: one live heap per worker`);
    }
  });

  test('a worker SIGKILLed with a client in presence: its entry is removed and its leave announced at once, by another worker', async () => {
    const channel = 'chat:orphans';
    const workers = await m1.cluster.pinToWorkers(2);
    // No client on M1 yet (this runs before any follower; long-poll sessions outlive their clients): bob's worker is the one with a connection.
    await eventually(async () => ((await Promise.all(workers.map((w) => w.connections()))).every((n) => n === 0) ? true : undefined), 'M1 without clients', 15000);
    const alice = await ws(m2, 'alice');
    await alice.call('subscribe', { channel });
    const bob = await ws(m1, 'bob');
    await bob.call('subscribe', { channel });
    await alice.push('join', channel, (f) => f.info?.user === 'bob');
    let bobsNode = '';
    for (const w of workers) if ((await w.connections()) === 1) bobsNode = await w.node();
    const [worker, line] = [...m1.cluster.readyWorkers()].find(([, l]) => l.node === bobsNode)!;
    process.kill(line.pid as number, 'SIGKILL');
    const leave = await alice.take((f) => f.push === 'leave' && f.channel === channel, 'the leave of bob', 20000);
    assert.equal(leave.info.client, bob.clientId);
    const presence = await callApi(m2, 'presence', { channel });
    assert.deepEqual(Object.values(presence.body.clients as Record<string, { user: string }>).map((c) => c.user), ['alice']);
    await replaced(m1, worker);
    // Exactly one leave: the cleanup runs once.
    assert.equal(alice.frames.filter((f) => f.push === 'leave' && f.channel === channel).length, 1);
  });

  test('delivery across machines on all three transports, published through both machines', async () => {
    const channel = 'chaos:across';
    await startAll(followersOn(channel));
    publisher = new Publisher(channel, () => [m1, m2], { intervalMs: 5 });
    for (let i = 0; i < 60; i++) assert.equal((await publisher.publishOnce()).status, 200);
    await finish(publisher, followers);
    for (const f of followers) assert.equal(f.received.size, 61, `${f.name} got all 61`);
  });

  test('presence, join and leave across machines; history and recovery through the other machine', async () => {
    const channel = 'chat:room-presence';
    const alice = await ws(m1, 'alice');
    await alice.call('subscribe', { channel });
    const bob = await ws(m2, 'bob');
    await bob.call('subscribe', { channel });
    const join = await alice.push('join', channel, (f) => f.info?.user === 'bob');
    assert.equal(join.info.client, bob.clientId);
    for (const m of [m1, m2]) {
      const presence = await callApi(m, 'presence', { channel });
      assert.equal(presence.status, 200);
      assert.deepEqual(Object.values(presence.body.clients as Record<string, { user: string }>).map((c) => c.user).sort(), ['alice', 'bob'], `presence on ${m.name}`);
      const stats = await callApi(m, 'presence_stats', { channel });
      assert.deepEqual(stats.body, { num_clients: 2, num_users: 2 });
    }
    await bob.close();
    const leave = await alice.push('leave', channel, (f) => f.info?.user === 'bob');
    assert.equal(leave.info.client, bob.clientId);
    const after = await callApi(m2, 'presence', { channel });
    assert.deepEqual(Object.values(after.body.clients as Record<string, { user: string }>).map((c) => c.user), ['alice']);

    // History written through M1 is read through M2; a client of M2 recovers on M1.
    const stream = 'chaos:history';
    const carol = await ws(m2, 'carol');
    const sub = await carol.call('subscribe', { channel: stream });
    const first = await callApi(m1, 'publish', { channel: stream, data: { n: 1 } });
    await carol.waitPublications(stream, 1);
    await carol.close();
    const missed: number[] = [];
    for (let n = 2; n <= 6; n++) missed.push((await callApi(n % 2 === 0 ? m1 : m2, 'publish', { channel: stream, data: { n } })).body.offset);
    const history = await callApi(m2, 'history', { channel: stream, limit: 100 });
    assert.deepEqual(
      history.body.publications.map((p: { data: { n: number } }) => p.data.n),
      [1, 2, 3, 4, 5, 6],
    );
    assert.equal(history.body.epoch, sub.epoch);
    const back = await ws(m1, 'carol');
    const recovered = await back.call('subscribe', { channel: stream, recover: true, epoch: sub.epoch, offset: first.body.offset });
    assert.equal(recovered.recovered, true);
    const pushed = await back.waitPublications(stream, missed.length);
    assert.deepEqual(
      pushed.map((p: { offset: number }) => p.offset),
      missed,
    );
  });

  test('disconnect and revocation from the API reach every worker of every machine, and later workers', async () => {
    // Two connections per machine: with two workers each, they may land on either.
    const mallory = [await ws(m1, 'mallory'), await ws(m1, 'mallory'), await ws(m2, 'mallory'), await ws(m2, 'mallory')];
    const answer = await callApi(m2, 'disconnect', { user: 'mallory', reconnect: false });
    assert.equal(answer.status, 200);
    for (const c of mallory) assert.ok((await c.waitClose(10000)).code >= 3500, 'closed without reconnect');

    const token = await tokens.sign('trudy');
    const trudy: WsClient[] = [];
    for (const m of [m1, m1, m2, m2]) {
      const c = await openWs(m.wsUrl);
      await c.connect(token);
      trudy.push(c);
    }
    assert.equal((await callApi(m1, 'revoke_user', { user: 'trudy' })).status, 200);
    for (const c of trudy) assert.equal((await c.waitClose(10000)).code, 3507);
    // Refused on every worker of both machines (fresh connections spread over the workers).
    for (const m of [m1, m2]) {
      for (let i = 0; i < 4; i++) {
        const c = await openWs(m.wsUrl);
        c.send({ id: 1, method: 'connect', params: { token } });
        assert.ok((await c.waitClose(10000)).code >= 3500, `revoked token refused on ${m.name}`);
      }
    }
    // A worker started after the revocation (SIGKILL one; the primary replaces it) knows it from Redis.
    const killed = await killOneWorker(m2);
    await replaced(m2, killed);
    for (let i = 0; i < 6; i++) {
      const c = await openWs(m2.wsUrl);
      c.send({ id: 1, method: 'connect', params: { token } });
      assert.ok((await c.waitClose(10000)).code >= 3500, 'revoked token refused by the new worker too');
    }
  });

  test('readiness: a worker whose Redis is degraded makes every worker of its machine not ready', async () => {
    await redis.stop({ save: true });
    for (const m of [m1, m2]) {
      const body = await eventually(async () => {
        const r = await fetch(`http://127.0.0.1:${m.cluster.adminPort}/health/ready`, { signal: AbortSignal.timeout(5000) });
        const json = (await r.json()) as { reasons?: { reason: string; worker?: number }[] };
        const workers = new Set((json.reasons ?? []).filter((x) => x.reason === 'engine_degraded').map((x) => x.worker ?? 'self'));
        return r.status === 503 && workers.size === 2 ? json : undefined;
      }, `${m.name} /health/ready names both workers' engines`, 15000);
      assert.ok(body.reasons!.length >= 2);
    }
    await redis.launch();
    for (const m of [m1, m2]) {
      await eventually(async () => {
        const r = await fetch(`http://127.0.0.1:${m.cluster.adminPort}/health/ready`, { signal: AbortSignal.timeout(5000) });
        await r.body?.cancel();
        return r.status === 200 ? true : undefined;
      }, `${m.name} ready again`, 20000);
    }
  });

  test('chaos: SIGKILL of one worker while publishing: clients recover, nothing lost, nothing twice', async () => {
    const channel = 'chaos:kill-worker';
    await startAll(followersOn(channel));
    publisher = new Publisher(channel, () => [m1, m2], { intervalMs: 10, timeoutMs: 5000 });
    publisher.start();
    await waitUntil(() => publisher!.acked.length >= 30, { timeoutMs: 20000, label: '30 publications before the kill' });
    const killed = await killOneWorker(m1, true);
    await replaced(m1, killed);
    const since = publisher.acked.length;
    await waitUntil(() => publisher!.acked.length >= since + 30, { timeoutMs: 20000, label: '30 publications after the kill' });
    await finish(publisher, followers);
  });

  test('chaos: Redis restarts (data kept) while publishing: every follower recovers, nothing lost, nothing twice', async () => {
    const channel = 'chaos:redis-restart';
    await startAll(followersOn(channel));
    publisher = new Publisher(channel, () => [m1, m2], { intervalMs: 10, timeoutMs: 3000 });
    publisher.start();
    await waitUntil(() => publisher!.acked.length >= 30, { timeoutMs: 20000, label: '30 publications before the restart' });
    await redis.stop({ save: true });
    const downAt = Date.now();
    await waitUntil(() => publisher!.attempts.some((a) => a.startedAt > downAt && a.status === 503), { timeoutMs: 20000, label: 'a publish refused while Redis is down' });
    await redis.launch();
    const since = publisher.acked.length;
    await waitUntil(() => publisher!.acked.length >= since + 30, { timeoutMs: 30000, label: '30 publications after Redis returned' });
    await finish(publisher, followers);
    for (const f of followers) assert.ok(f.resubscribes.every((s) => s.recovered), `${f.name}: Redis kept its data, every recovery succeeds: ${f.summary()}`);
  });

  test('rolling reload (SIGHUP) of one machine while publishing: its workers are replaced one by one, clients recover, nothing lost, nothing twice', async () => {
    const channel = 'chaos:reload';
    await startAll(followersOn(channel));
    publisher = new Publisher(channel, () => [m1, m2], { intervalMs: 10, timeoutMs: 5000 });
    publisher.start();
    await waitUntil(() => publisher!.acked.length >= 30, { timeoutMs: 20000, label: '30 publications before the reload' });
    const since = m1.cluster.logs.length;
    m1.cluster.process.kill('SIGHUP');
    await m1.cluster.waitLog((l) => l.msg === 'rolling reload complete', 60000, 'rolling reload complete', since);
    const fresh = new Set(m1.cluster.logs.slice(since).filter((l) => l.msg === 'worker ready').map((l) => l.worker as number));
    assert.equal(fresh.size, 2, 'both workers of M1 were replaced');
    const acked = publisher.acked.length;
    await waitUntil(() => publisher!.acked.length >= acked + 30, { timeoutMs: 20000, label: '30 publications after the reload' });
    await finish(publisher, followers);
    for (const f of followers.filter((x) => x.name.endsWith('M1'))) assert.ok(f.events.some((e) => e.kind === 'reset'), `${f.name} was moved by the reload`);
  });

  test('chaos: SIGTERM of one machine while the other keeps serving: its clients move and recover', async () => {
    const channel = 'chaos:machine-down';
    let m2Up = true;
    // Followers of M2 come back to M2 while it runs, to M1 once it is stopping.
    await startAll(followersOn(channel, (m) => () => (m === m2 && !m2Up ? [m1] : [m])));
    publisher = new Publisher(channel, () => (m2Up ? [m1, m2] : [m1]), { intervalMs: 10, timeoutMs: 5000 });
    publisher.start();
    await waitUntil(() => publisher!.acked.length >= 30, { timeoutMs: 20000, label: '30 publications before the SIGTERM' });
    m2Up = false;
    m2.cluster.process.kill('SIGTERM');
    const exit = await withTimeout(m2.cluster.exited, 30000, 'M2 exit after SIGTERM');
    assert.equal(exit.code, 0, 'M2 drained and exited 0');
    const since = publisher.acked.length;
    await waitUntil(() => publisher!.acked.length >= since + 30, { timeoutMs: 20000, label: '30 publications after M2 left' });
    await finish(publisher, followers);
    for (const f of followers.filter((x) => x.name.endsWith('M2'))) assert.equal(f.node, 'M1', `${f.name} moved to M1`);
    for (const f of followers.filter((x) => x.name.endsWith('M2'))) assert.ok(f.events.some((e) => e.kind === 'reset'), `${f.name} was reset by the drain of M2`);
  });
});

/** GET /metrics on a machine's internal listener (a fresh connection: any worker answers for the machine). */
async function scrape(m: Machine): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${m.cluster.adminPort}/metrics`, { signal: AbortSignal.timeout(10000) });
  assert.equal(response.status, 200);
  return response.text();
}

function metric(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

/**
 * SIGKILLs one worker of a machine (a process the test started through its
 * primary); `busiest`: the one holding the most client connections (at
 * least one). Answers its worker id.
 */
async function killOneWorker(m: Machine, busiest = false): Promise<number> {
  let [worker, line] = [...m.cluster.readyWorkers()][0]!;
  if (busiest) {
    let most = 0;
    for (const pinned of await m.cluster.pinToWorkers(2)) {
      // The pinned connection's own request is not a client connection.
      const connections = await pinned.connections();
      const node = await pinned.node();
      const entry = [...m.cluster.readyWorkers()].find(([, l]) => l.node === node);
      if (entry !== undefined && connections > most) {
        most = connections;
        [worker, line] = entry;
      }
    }
    assert.ok(most >= 1, 'the killed worker holds client connections');
  }
  process.kill(line.pid as number, 'SIGKILL');
  await m.cluster.waitLog((l) => l.msg === 'worker exited unexpectedly; restarting' && l.worker === worker, 15000, 'the primary saw the worker die');
  return worker;
}

/** Waits until the primary has a ready replacement for `killed`. */
async function replaced(m: Machine, killed: number): Promise<void> {
  await waitUntil(() => m.cluster.readyWorkers().size === 2 && !m.cluster.readyWorkers().has(killed), { timeoutMs: 30000, label: 'a replacement worker ready' });
  await sleep(100);
}
