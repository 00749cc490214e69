/**
 * Clients that only use the standard never miss silently (issue 11,
 * "Delivery"; docs/protocol.md, "Positions and recovery").
 *
 * Two clients keep no positions of their own:
 * - a real `EventSource` (the `eventsource` package), which resumes by the
 *   `Last-Event-ID` of the last event it got, as a browser does;
 * - a long-poll client that keeps nothing but the `cursor` of the last
 *   answer it got, and opens a new session with it whenever a poll fails
 *   or the session ends.
 *
 * Both subscribe to two channels on node A of a two-node Redis deployment
 * (publications come through node B): one with a long history, one with a
 * history of 20. The test then drops their connections at random, kills A's
 * pub/sub connection (publications are lost in flight: a gap the server
 * must repair), keeps them away longer than the short history covers
 * (trimming), and stops Redis (an outage), all while publishing. Each
 * channel of each client must end with every acknowledged publication
 * exactly once, in order, at its acknowledged position, or an explicit
 * `recovered: false` before what it missed; a `subscribed` that restarts a
 * channel without `was_recovering` (a lost position) is a failure too.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { EventSource } from 'eventsource';
import { missingService } from '../helpers/services.ts';
import { startProxy, type TestProxy } from '../helpers/proxy.ts';
import { randomInt, seededRandom, sleep, testSeed, waitUntil, withTimeout } from '../helpers/rt-util.ts';
import { openSse, pollOpen, sseUrl, type Frame } from '../helpers/rt-clients.ts';
import { callApi, RedisProxy, RedisServer, startRedisHerald, Tokens, uniquePrefix, type RedisHerald } from './harness.ts';
import { Publisher, reached, verify, type Followed, type FollowerEvent } from './followers.ts';

const hasRedisServer = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
const skip = missingService('redis-server (the binary, to run a private Redis)', hasRedisServer);
const SEED = testSeed();
console.log(`standard-clients seed=${SEED} (rerun with HERALD_TEST_SEED=${SEED})`);

const LONG = 'chaos:standard';
const SHORT = 'short:standard';

/** One channel as one client saw it, in the shape `verify` reads. */
class ChannelLog implements Followed {
  readonly name: string;
  readonly problems: string[] = [];
  readonly events: FollowerEvent[] = [];
  readonly received = new Map<number, number>();
  #epoch = '';
  #last = 0;
  #positions = false;
  #subscribed = false;

  constructor(name: string) {
    this.name = name;
  }

  onSubscribed(frame: Frame): void {
    const recovering = frame['was_recovering'] === true;
    const recovered = frame['recovered'] === true;
    const first = !this.events.some((e) => e.kind === 'sub');
    if (!first && !recovering) this.problems.push(`position lost: resubscribed without was_recovering at ${this.#epoch}:${this.#last}`);
    if (recovered) {
      if (frame['epoch'] !== this.#epoch) this.problems.push(`recovered:true in epoch ${String(frame['epoch'])}, the client was in ${this.#epoch}`);
    } else {
      this.#epoch = frame['epoch'] as string;
      this.#last = frame['offset'] as number;
    }
    this.#positions = frame['recoverable'] === true;
    this.#subscribed = true;
    this.events.push({ kind: 'sub', at: Date.now(), node: 'A', epoch: this.#epoch, offset: this.#last, recovering, recovered });
  }

  onPublication(frame: Frame): void {
    const offset = frame['offset'] as number;
    const n = (frame['data'] as Frame | undefined)?.['n'] as number | undefined;
    if (!this.#subscribed) this.problems.push(`publication ${offset} (n=${n}) before any subscribed`);
    if (this.#positions && offset !== this.#last + 1) this.problems.push(`offset ${offset} after ${this.#last} (gap or duplicate)`);
    this.#last = offset;
    if (n !== undefined) {
      if (this.received.has(n)) this.problems.push(`n=${n} delivered twice`);
      else this.received.set(n, this.events.length);
    }
    this.events.push({ kind: 'pub', at: Date.now(), node: 'A', n, epoch: this.#epoch, offset });
  }

  onUnsubscribed(frame: Frame): void {
    this.problems.push(`unsubscribed push (code ${String(frame['code'])}): the client cannot act on it`);
  }
}

abstract class StandardClient {
  readonly logs: Map<string, ChannelLog>;
  readonly name: string;
  disconnects: number[] = [];

  constructor(name: string, channels: readonly string[]) {
    this.name = name;
    this.logs = new Map(channels.map((c) => [c, new ChannelLog(`${name} ${c}`)]));
  }

  protected frame(frame: Frame): void {
    const log = typeof frame['channel'] === 'string' ? this.logs.get(frame['channel']) : undefined;
    switch (frame['push']) {
      case 'subscribed':
        log?.onSubscribed(frame);
        return;
      case 'publication':
        log?.onPublication(frame);
        return;
      case 'unsubscribed':
        log?.onUnsubscribed(frame);
        return;
      case 'disconnect':
        this.disconnects.push(frame['code'] as number);
        return;
      default:
        return;
    }
  }

  abstract stop(): void;
}

/** The `eventsource` package on `/connection/sse?channel=…`: resumes by Last-Event-ID alone. */
class StandardEventSource extends StandardClient {
  readonly #source: EventSource;

  constructor(name: string, url: string) {
    super(name, [LONG, SHORT]);
    this.#source = new EventSource(url);
    this.#source.onmessage = (event) => this.frame(JSON.parse(event.data) as Frame);
  }

  stop(): void {
    this.#source.close();
  }
}

/** Long polling keeping only the last answer's `cursor` (and the session's `seq` while it lives). */
class CursorPoller extends StandardClient {
  readonly #base: string;
  readonly #token: string;
  #cursor: string | undefined;
  #stopped = false;
  #controller = new AbortController();
  opens = 0;
  readonly running: Promise<void>;

  constructor(name: string, base: string, token: string) {
    super(name, [LONG, SHORT]);
    this.#base = base;
    this.#token = token;
    this.running = this.#run();
  }

  async #post(path: string, body: unknown, session?: string): Promise<{ status: number; body: any }> {
    const response = await fetch(`${this.#base}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(session === undefined ? {} : { 'herald-session': session }) },
      body: JSON.stringify(body),
      signal: AbortSignal.any([this.#controller.signal, AbortSignal.timeout(40000)]),
    });
    return { status: response.status, body: await response.json().catch(() => undefined) };
  }

  #answer(body: any): boolean {
    if (typeof body?.cursor === 'string') this.#cursor = body.cursor;
    let open = true;
    for (const frame of body?.messages ?? []) {
      this.frame(frame as Frame);
      if ((frame as Frame)['push'] === 'disconnect') open = false;
    }
    return open;
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      try {
        const opened = await this.#post('/connection/poll/open', { token: this.#token, channels: [LONG, SHORT], ...(this.#cursor === undefined ? {} : { cursor: this.#cursor }) });
        if (opened.status !== 200) throw new Error(`open answered ${opened.status}`);
        this.opens++;
        const session = opened.body.session as string;
        let seq = opened.body.seq as number;
        let open = this.#answer(opened.body);
        while (open && !this.#stopped) {
          const polled = await this.#post('/connection/poll', { seq }, session);
          if (polled.status !== 200) throw new Error(`poll answered ${polled.status}`);
          seq = polled.body.seq as number;
          open = this.#answer(polled.body);
        }
      } catch {
        // A drop, an unknown session, the server away: open again with the cursor.
      }
      if (!this.#stopped) await sleep(100);
    }
  }

  stop(): void {
    this.#stopped = true;
    this.#controller.abort();
  }
}

describe('standard clients (EventSource, cursor-only long polling) never miss silently', { skip, timeout: 180000 }, () => {
  let redis: RedisServer;
  let redisProxy: RedisProxy;
  let a: RedisHerald;
  let b: RedisHerald;
  let edge: TestProxy;
  const tokens = new Tokens();

  before(async () => {
    redis = await RedisServer.start();
    redisProxy = new RedisProxy(redis.port);
    await redisProxy.listen();
    const prefix = uniquePrefix('standard');
    a = await startRedisHerald('A', { redisUrl: redisProxy.url, prefix, tokens, engine: { probeIntervalMs: 300, redisCommandTimeoutMs: 500 } });
    b = await startRedisHerald('B', { redisUrl: redis.url, prefix, tokens, engine: { probeIntervalMs: 300, redisCommandTimeoutMs: 500 } });
    edge = await startProxy(a.url);
  });

  after(async () => {
    await edge?.close();
    for (const node of [a, b]) await node?.close().catch(() => undefined);
    await redisProxy?.close();
    await redis?.close();
  });

  test('random drops, a killed pub/sub connection, trimmed history and a Redis outage: every publication exactly once and in order, or recovered:false', async () => {
    const random = seededRandom(SEED);
    const token = await tokens.sign('standard');
    const sseUrl = `${edge.url}/connection/sse?token=${token}&channel=${encodeURIComponent(LONG)}&channel=${encodeURIComponent(SHORT)}`;
    const clients: StandardClient[] = [new StandardEventSource('eventsource', sseUrl), new CursorPoller('cursor-poller', edge.url, token)];
    const publishers = [new Publisher(LONG, () => [b], { intervalMs: 15 }), new Publisher(SHORT, () => [b], { intervalMs: 15 })];
    const everyLog = () => clients.flatMap((c) => [...c.logs.values()]);
    const subscribedAll = () => everyLog().every((log) => log.events.some((e) => e.kind === 'sub'));
    try {
      await waitUntil(subscribedAll, { timeoutMs: 15000, label: 'both clients subscribed to both channels' });
      for (const p of publishers) p.start();

      // 1. Random drops of every client connection.
      for (let i = 0; i < 6; i++) {
        await sleep(randomInt(random, 150, 600));
        edge.dropAll();
      }
      await sleep(500);

      // 2. A forced gap: A's pub/sub connection is killed; what B publishes
      // meanwhile never reaches A by pub/sub, and A resynchronizes.
      const killed = Number(await redis.command('CLIENT', 'KILL', 'TYPE', 'pubsub'));
      assert.ok(killed >= 1, `pub/sub connections killed (${killed})`);
      await sleep(800);

      // 3. Trimming: the clients are away while far more than the short
      // channel's 20 publications go by.
      edge.down = true;
      edge.dropAll();
      await sleep(1500);
      edge.down = false;
      await sleep(800);

      // 4. A Redis outage (a maintenance restart: the data survives), with drops during it.
      await redis.stop({ save: true });
      await sleep(400);
      edge.dropAll();
      await sleep(800);
      await redis.launch();
      await sleep(1500);
      edge.dropAll();
      await sleep(800);

      for (const p of publishers) await p.stop();
      const markers: Awaited<ReturnType<Publisher["final"]>>[] = [];
      for (const p of publishers) markers.push(await p.final());
      for (const client of clients) {
        for (const [i, channel] of [LONG, SHORT].entries()) {
          const log = client.logs.get(channel)!;
          await waitUntil(() => reached(log, markers[i]!), {
            timeoutMs: 30000,
            label: `${log.name} to receive the end marker n=${markers[i]!.n}`,
            describe: () => `problems: ${log.problems.slice(0, 5).join('; ')}; last events: ${JSON.stringify(log.events.slice(-5))}; hub subscribers of ${channel} on A: ${a.server.node.hub.subscriberCount(channel)}`,
          });
        }
      }
    } finally {
      for (const client of clients) client.stop();
      for (const p of publishers) await p.stop();
    }
    const poller = clients[1] as CursorPoller;
    await withTimeout(poller.running, 10000, 'the poller stops');

    for (const [i, channel] of [LONG, SHORT].entries()) {
      const publisher = publishers[i]!;
      for (const client of clients) {
        const log = client.logs.get(channel)!;
        const subs = log.events.filter((e): e is Extract<FollowerEvent, { kind: 'sub' }> => e.kind === 'sub');
        console.log(
          `  ${log.name}: ${log.received.size} of ${publisher.acked.length} acknowledged received; subscribed ${subs.length} times (recovered:true ${subs.filter((s) => s.recovered).length}, recovered:false ${subs.filter((s) => s.recovering && !s.recovered).length}); disconnect codes ${JSON.stringify(client.disconnects)}`,
        );
        assert.deepEqual(verify(log, publisher.acked).slice(0, 10), [], log.name);
      }
    }
    // The outage and the drops made every client come back at least once with its position.
    for (const log of everyLog()) assert.ok(log.events.filter((e) => e.kind === 'sub' && e.recovering).length >= 2, `${log.name} recovered its position after drops`);
    // The long history covers every gap: only the short channel may have lost publications.
    for (const client of clients) {
      const long = client.logs.get(LONG)!;
      assert.deepEqual(
        long.events.filter((e) => e.kind === 'sub' && e.recovering && !e.recovered),
        [],
        `${long.name}: a history of 20000 covers every gap, so no recovered:false`,
      );
    }
    for (const client of clients) {
      const short = client.logs.get(SHORT)!;
      assert.ok(
        short.events.some((e) => e.kind === 'sub' && e.recovering && !e.recovered),
        `${short.name}: away for longer than 20 publications, it is told recovered:false`,
      );
    }
  });

  test('opened during a Redis outage: SSE and long-poll subscriptions are held and made when Redis returns, or the connection is closed with 3002 after engine.unavailableRetryMs; never an unsubscribed push', async () => {
    const prefix = uniquePrefix('outage-open');
    // The retry window is wide enough for a Redis relaunch on a loaded machine
    // (the held phase below must end inside it); the expiring phase waits it out.
    const engine = { redisCommandTimeoutMs: 300, unavailableRetryMs: 6000 };
    const node = await startRedisHerald('C', { redisUrl: redis.url, prefix, tokens, engine });
    try {
      const token = await tokens.sign('opener');
      const first = await callApi(node, 'publish', { channel: LONG, data: { before: true } });
      assert.equal(first.status, 200);
      const vector = `${LONG}|${first.body.epoch as string}|${first.body.offset as number}`;
      await redis.stop({ save: true });
      try {
        // Opened with a position while Redis is down: connected at once, nothing refused.
        const held = await openSse(sseUrl(node.url, { token, lastEventId: vector }));
        assert.equal(held.status, 200);
        await held.waitForFrame((f) => f['push'] === 'connected', 5000, 'connected push');
        const polled = await pollOpen(node.url, { token, cursor: vector });
        assert.equal(polled.status, 200, 'a long-poll open is answered during the outage');
        const pollMessages = (polled.body as { messages: Frame[] }).messages;
        assert.deepEqual(pollMessages.map((f) => f['push']), ['connected'], 'the open answers connected; the subscription is held');
        // A second SSE connection outlives the retry window.
        const expiring = await openSse(sseUrl(node.url, { token, channels: [SHORT] }));
        const closed = await expiring.waitForFrame((f) => f['push'] === 'disconnect', 20000, 'disconnect after engine.unavailableRetryMs');
        assert.deepEqual([closed['code'], closed['reconnect']], [3002, true], 'closed with 3002, reconnect');
        assert.deepEqual(expiring.pushes('unsubscribed'), [], 'no unsubscribed push');
        assert.deepEqual(held.pushes('subscribed'), [], 'nothing subscribed while Redis is down');
        held.abort();
        expiring.abort();
      } finally {
        await redis.launch();
      }
      // Within the window: the held subscription is made, recovering from the vector.
      const again = await openSse(sseUrl(node.url, { token, lastEventId: vector }));
      await redis.stop({ save: true });
      await sleep(500);
      await redis.launch();
      const subscribed = await again.waitForFrame((f) => f['push'] === 'subscribed', 15000, 'subscribed once Redis is back');
      assert.deepEqual([subscribed['channel'], subscribed['was_recovering'], subscribed['recovered']], [LONG, true, true]);
      // The engine's 300 ms command timeout can still answer 503 while Redis warms
      // up on a loaded machine: retry as a backend would, with an idempotency key
      // (bounded; a retry never makes a second publication).
      let next = await callApi(node, 'publish', { channel: LONG, data: { after: true }, idempotency_key: 'after-outage' });
      for (let attempt = 1; next.status === 503 && attempt < 20; attempt++) {
        await sleep(250);
        next = await callApi(node, 'publish', { channel: LONG, data: { after: true }, idempotency_key: 'after-outage' });
      }
      assert.equal(next.status, 200);
      const publication = await again.waitForFrame((f) => f['push'] === 'publication' && (f['data'] as Frame)['after'] === true, 10000, 'a publication after the outage');
      assert.equal(publication['offset'], next.body.offset);
      assert.deepEqual(again.pushes('unsubscribed'), []);
      again.abort();
    } finally {
      await node.close();
    }
  });
});
