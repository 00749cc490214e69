/**
 * Conflation channels (docs/protocol.md, "Conflation"): a deliberately slow
 * reader on each transport, on a channel whose namespace conflates by the
 * `sym` field of the data, while the channel is flooded through the API.
 * Without conflation such a reader is cut as slow (3004,
 * slow-consumer.test.ts); with it, it stays connected, the server's memory
 * stays bounded, it sees no gap (no 3006, no resynchronization) and, once
 * it reads again, the newest publication of every key arrives, each skip of
 * offsets marked with `prev`. Then recovery on a conflated channel.
 * The server runs in this process, so `process.memoryUsage()` is its memory.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import WebSocket from 'ws';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { poll, pollOpen, type Frame } from '../helpers/rt-clients.ts';
import { RawSse, RawWebSocket } from '../helpers/rt-raw.ts';
import { sleep, waitUntil } from '../helpers/rt-util.ts';

const QUEUE_BYTES = 262144;
const LAG_BYTES = 16384;
const PAYLOAD_BYTES = 30 * 1024;
/** ~44 MiB in all: far past the kernel's socket buffers and the outbound queue limit. */
const FLOOD = 1500;
const KEYS = ['AAA', 'BBB', 'CCC', 'DDD'];
const SAMPLE_EVERY = 50;
/** As in slow-consumer.test.ts: buffering the flood would add ~44 MiB. */
const LIVE_BOUND = 4 * QUEUE_BYTES * 24;
const RSS_BOUND = 4 * QUEUE_BYTES * 32;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let counter = 0;
const unique = (prefix: string): string => `${prefix}-${++counter}-${randomBytes(3).toString('hex')}`;

class MemoryWatch {
  private readonly baseRss: number;
  private readonly baseLive: number;
  rssGrowth = 0;
  liveGrowth = 0;

  constructor() {
    gc();
    gc();
    const m = process.memoryUsage();
    this.baseRss = m.rss;
    this.baseLive = m.heapUsed + m.arrayBuffers;
  }

  sample(): void {
    gc();
    const m = process.memoryUsage();
    this.rssGrowth = Math.max(this.rssGrowth, m.rss - this.baseRss);
    this.liveGrowth = Math.max(this.liveGrowth, m.heapUsed + m.arrayBuffers - this.baseLive);
  }

  describe(): string {
    const mib = (x: number) => (x / 1048576).toFixed(1);
    return `peak growth: rss ${mib(this.rssGrowth)} MiB (bound ${mib(RSS_BOUND)}), live ${mib(this.liveGrowth)} MiB (bound ${mib(LIVE_BOUND)})`;
  }

  check(): void {
    assert.ok(this.rssGrowth < RSS_BOUND, `rss grew by ${this.rssGrowth} bytes during the flood (bound ${RSS_BOUND})`);
    assert.ok(this.liveGrowth < LIVE_BOUND, `live memory grew by ${this.liveGrowth} bytes during the flood (bound ${LIVE_BOUND})`);
  }
}

/** What one reader got on one channel: publications as (offset, prev, key, n). */
interface Received {
  readonly offset: number;
  readonly prev: number | undefined;
  readonly sym: string;
  readonly n: number;
}

function publications(frames: readonly Frame[], channel: string): Received[] {
  return frames
    .filter((f) => f['push'] === 'publication' && f['channel'] === channel)
    .map((f) => ({ offset: f['offset'] as number, prev: f['prev'] as number | undefined, sym: f['data']['sym'] as string, n: f['data']['n'] as number }));
}

/** Offsets increase; each one follows the one before, or says with `prev` that it follows it. */
function assertNoGap(received: readonly Received[], from: number, label: string): void {
  let last = from;
  for (const pub of received) {
    if (pub.prev === undefined) assert.equal(pub.offset, last + 1, `${label}: offset ${pub.offset} after ${last} without prev`);
    else {
      assert.equal(pub.prev, last, `${label}: prev ${pub.prev} of offset ${pub.offset} names the previous delivery`);
      assert.ok(pub.offset > last + 1, `${label}: prev only on a skip`);
    }
    last = pub.offset;
  }
}

describe('conflation: a slow reader on each transport', { timeout: 180000 }, () => {
  let h: TestHerald;
  let port: number;
  const pad = 'x'.repeat(PAYLOAD_BYTES);
  /** Newest n published per key, per channel. */
  const newest = new Map<string, Map<string, number>>();

  before(async () => {
    h = await startHerald({
      limits: { outboundQueueBytes: QUEUE_BYTES },
      channels: {
        namespaces: [
          { name: 'px', presence: true, historySize: 16, conflation: { enabled: true, key: 'sym', lagBytes: LAG_BYTES, maxKeys: 64 } },
        ],
      },
    });
    port = Number(new URL(h.url).port);
    // Warm up (JIT, heap sizing) so the first measured flood is not charged for it.
    const channel = unique('px:warm-up');
    for (let n = 1; n <= 300; n++) await publish(channel, n);
  });
  after(async () => {
    await h.close();
  });

  async function publish(channel: string, n: number): Promise<void> {
    const sym = KEYS[n % KEYS.length]!;
    const answer = await h.api('publish', { channel, data: { sym, n, pad } });
    assert.equal(answer.status, 200, `publish ${n}: ${JSON.stringify(answer.body)}`);
    let keys = newest.get(channel);
    if (keys === undefined) newest.set(channel, (keys = new Map()));
    keys.set(sym, n);
  }

  async function numClients(channel: string): Promise<number> {
    const answer = await h.api('presence_stats', { channel });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.num_clients as number;
  }

  async function flood(channel: string, memory: MemoryWatch, between?: () => Promise<void>): Promise<void> {
    for (let n = 1; n <= FLOOD; n++) {
      await publish(channel, n);
      if (n % SAMPLE_EVERY === 0) {
        memory.sample();
        await between?.();
      }
    }
  }

  /** The newest publication of every key has arrived (the latest value always arrives). */
  function hasLatest(received: readonly Received[], channel: string): boolean {
    const seen = new Map<string, number>();
    for (const pub of received) seen.set(pub.sym, pub.n);
    for (const [sym, n] of newest.get(channel) ?? []) if (seen.get(sym) !== n) return false;
    return true;
  }

  test('WebSocket: a socket that stops reading stays connected, memory stays bounded, the newest value per key arrives', async () => {
    const channel = unique('px:ws');
    const normal = new WebSocket(h.wsUrl);
    const normalOffsets: number[] = [];
    normal.on('message', (raw) => {
      const frame = JSON.parse(raw.toString()) as Frame;
      if (frame['push'] === 'publication') normalOffsets.push(frame['offset'] as number);
    });
    await new Promise((resolve) => normal.once('open', resolve));
    normal.send(JSON.stringify({ id: 1, method: 'connect', params: { token: await h.token('normal') } }));
    normal.send(JSON.stringify({ id: 2, method: 'subscribe', params: { channel } }));
    const slow = await RawWebSocket.connect(port);
    try {
      await slow.call('connect', { token: await h.token('slow') });
      const subscribed = await slow.call('subscribe', { channel });
      assert.equal(subscribed['conflated'], true, 'the subscribe result says the channel is conflated');
      for (let i = 0; (await numClients(channel)) !== 2; i++) {
        assert.ok(i < 200, 'both readers subscribed');
        await sleep(10);
      }
      slow.stopReading();

      const memory = new MemoryWatch();
      await flood(channel, memory);
      memory.sample();
      assert.equal(await numClients(channel), 2, 'the slow reader is still subscribed: not cut as slow');
      assert.equal(slow.closed, false);

      slow.resumeReading();
      const received = await waitUntil(
        () => {
          const list = publications(slow.parser.messages(), channel);
          return hasLatest(list, channel) ? list : undefined;
        },
        { timeoutMs: 60000, label: 'the newest publication of every key', describe: () => `got ${publications(slow.parser.messages(), channel).length}` },
      );
      await waitUntil(() => normalOffsets.length >= FLOOD, { timeoutMs: 60000, label: 'the reader that keeps up gets everything' });
      normalOffsets.forEach((offset, i) => assert.equal(offset, i + 1, 'a reader that keeps up gets every publication, without prev'));
      assert.equal(slow.parser.closeCode(), undefined, 'no close frame (no 3004, no 3006)');
      assertNoGap(received, 0, 'slow WebSocket reader');
      assert.ok(received.length < FLOOD, `conflated: ${received.length} of ${FLOOD} delivered`);
      assert.ok(
        received.some((p) => p.prev !== undefined),
        'skips are marked with prev',
      );
      const metrics = await (await fetch(`http://127.0.0.1:${h.server.adminPort}/metrics`)).text();
      const conflated = Number(/^herald_conflated_total (\d+)/m.exec(metrics)?.[1]);
      assert.ok(conflated > 0 && conflated <= FLOOD - received.length, `herald_conflated_total ${conflated}: publications the slow reader never got`);
      console.log(`ws: slow reader got ${received.length}/${FLOOD}, ${memory.describe()}`);
      memory.check();
    } finally {
      slow.destroy();
      normal.terminate();
    }
  });

  test('SSE: a stream that stops reading stays open, memory stays bounded, the newest value per key arrives, event ids follow', async () => {
    const channel = unique('px:sse');
    const slow = await RawSse.connect(port, `/connection/sse?channel=${encodeURIComponent(channel)}`, {
      authorization: `Bearer ${await h.token('slow')}`,
    });
    try {
      assert.match(slow.statusLine, /^HTTP\/1\.1 200/);
      const subscribed = await waitUntil(() => slow.frames.find((f) => f['push'] === 'subscribed'), { label: 'subscribed push' });
      assert.equal(subscribed['conflated'], true);
      slow.stopReading();

      const memory = new MemoryWatch();
      await flood(channel, memory);
      memory.sample();
      assert.equal(await numClients(channel), 1, 'the slow stream is still subscribed: not cut as slow');

      slow.resumeReading();
      const received = await waitUntil(
        () => {
          const list = publications(slow.frames, channel);
          return hasLatest(list, channel) ? list : undefined;
        },
        { timeoutMs: 60000, label: 'the newest publication of every key' },
      );
      const pushes = slow.frames.map((f) => f['push']);
      assert.ok(!pushes.includes('disconnect'), 'no disconnect frame');
      assert.equal(pushes.filter((p) => p === 'subscribed').length, 1, 'no resynchronization (the server saw no gap)');
      assertNoGap(received, 0, 'slow SSE reader');
      assert.ok(received.length < FLOOD, `conflated: ${received.length} of ${FLOOD} delivered`);
      // The last event id names the newest offset delivered: a reconnect resumes from there.
      const lastId = slow.events.filter((e) => e.id !== undefined).at(-1)?.id ?? '';
      assert.ok(lastId.includes(`${received.at(-1)!.offset}`), `last event id ${lastId} carries offset ${received.at(-1)!.offset}`);
      console.log(`sse: slow reader got ${received.length}/${FLOOD}, ${memory.describe()}`);
      memory.check();
    } finally {
      slow.destroy();
    }
  });

  test('long polling: a client that polls slowly gets bounded answers and the newest value per key, never cut', async () => {
    const channel = unique('px:lp');
    const opened = await pollOpen(h.url, { token: await h.token('slow'), channels: [channel] });
    assert.equal(opened.status, 200, JSON.stringify(opened.body));
    const first = opened.body as { session: string; seq: number; messages: Frame[] };
    const frames: Frame[] = [...first.messages];
    assert.equal(frames.find((f) => f['push'] === 'subscribed')?.['conflated'], true);
    let seq = first.seq;
    let largest = 0;
    const pollOnce = async (): Promise<void> => {
      const answer = await poll(h.url, first.session, seq);
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      const body = answer.body as { seq: number; messages: Frame[] };
      largest = Math.max(largest, JSON.stringify(body).length);
      seq = body.seq;
      frames.push(...body.messages);
    };
    const memory = new MemoryWatch();
    // A poll every 50 publications (~1.5 MiB published between two polls).
    await flood(channel, memory, pollOnce);
    memory.sample();
    for (let i = 0; !hasLatest(publications(frames, channel), channel); i++) {
      assert.ok(i < 100, 'the newest publication of every key arrives');
      await pollOnce();
    }
    const received = publications(frames, channel);
    assert.ok(!frames.some((f) => f['push'] === 'disconnect'), 'no disconnect frame');
    assert.equal(frames.filter((f) => f['push'] === 'subscribed').length, 1, 'no resynchronization');
    assertNoGap(received, 0, 'slow long-poll reader');
    assert.ok(received.length < FLOOD, `conflated: ${received.length} of ${FLOOD} delivered`);
    // An answer holds at most the backlog bound, one publication past it, and the held newest value per key.
    const bound = LAG_BYTES + (KEYS.length + 2) * (PAYLOAD_BYTES + 200);
    assert.ok(largest <= bound, `largest answer ${largest} bytes (bound ${bound})`);
    console.log(`long-poll: slow reader got ${received.length}/${FLOOD}, largest answer ${largest} bytes, ${memory.describe()}`);
    memory.check();
  });
});

describe('conflation: recovery and the whole-channel key', { timeout: 120000 }, () => {
  let h: TestHerald;

  before(async () => {
    h = await startHerald({
      channels: {
        namespaces: [
          { name: 'px', historySize: 16, conflation: { enabled: true, key: 'sym' } },
          { name: 'whole', historySize: 16, conflation: { enabled: true } },
          { name: 'plain', historySize: 16 },
        ],
      },
    });
  });
  after(async () => {
    await h.close();
  });

  /** A WebSocket client that records every frame. */
  async function wsClient(): Promise<{ frames: Frame[]; call(method: string, params: unknown): Promise<Frame>; close(): void }> {
    const ws = new WebSocket(h.wsUrl);
    const frames: Frame[] = [];
    ws.on('message', (raw) => frames.push(JSON.parse(raw.toString()) as Frame));
    await new Promise((resolve) => ws.once('open', resolve));
    let id = 0;
    const call = async (method: string, params: unknown): Promise<Frame> => {
      const n = ++id;
      ws.send(JSON.stringify({ id: n, method, params }));
      const reply = await waitUntil(() => frames.find((f) => f['id'] === n), { label: `reply to ${method}` });
      assert.equal(reply['error'], undefined, JSON.stringify(reply));
      return reply['result'] as Frame;
    };
    await call('connect', { token: await h.token('reader') });
    return { frames, call, close: () => ws.terminate() };
  }

  test('history covers the gap: recovered, every missed publication, no prev', async () => {
    const channel = unique('px:covered');
    for (let n = 1; n <= 3; n++) await h.api('publish', { channel, data: { sym: 'A', n } });
    const client = await wsClient();
    try {
      const result = await client.call('subscribe', { channel, recover: true, epoch: (await h.api('history', { channel })).body.epoch, offset: 1 });
      assert.deepEqual([result['recovered'], result['conflated']], [true, true]);
      await waitUntil(() => publications(client.frames, channel).length === 2, { label: 'two recovered publications' });
      assert.deepEqual(
        publications(client.frames, channel).map((p) => [p.offset, p.prev, p.n]),
        [
          [2, undefined, 2],
          [3, undefined, 3],
        ],
      );
    } finally {
      client.close();
    }
  });

  test('history no longer covers the gap: recovered false, conflated, the latest value per key from the result offset', async () => {
    const channel = unique('px:uncovered');
    const epoch = (await h.api('history', { channel })).body.epoch as string;
    // 40 publications over three keys with history 16: offsets 1..24 are gone.
    const last = new Map<string, number>();
    for (let n = 1; n <= 40; n++) {
      const sym = n % 7 === 0 ? 'C' : n % 2 === 0 ? 'B' : 'A';
      await h.api('publish', { channel, data: { sym, n } });
      last.set(sym, n);
    }
    const client = await wsClient();
    try {
      const result = await client.call('subscribe', { channel, recover: true, epoch, offset: 2 });
      assert.deepEqual([result['recovered'], result['conflated'], result['was_recovering']], [false, true, true]);
      // C's newest (35) is the oldest of the latest values: they continue from 34.
      assert.equal(result['offset'], 34);
      await waitUntil(() => publications(client.frames, channel).length === 3, { label: 'three latest values' });
      const received = publications(client.frames, channel);
      assert.deepEqual(
        received.map((p) => [p.sym, p.n]),
        [
          ['C', 35],
          ['A', 39],
          ['B', 40],
        ],
      );
      assertNoGap(received, 34, 'latest values');
      // Live publications continue after the latest values.
      await h.api('publish', { channel, data: { sym: 'A', n: 41 } });
      await waitUntil(() => publications(client.frames, channel).length === 4, { label: 'a live publication' });
      assert.deepEqual(publications(client.frames, channel).at(-1), { offset: 41, prev: undefined, sym: 'A', n: 41 });
    } finally {
      client.close();
    }
  });

  test('a fresh subscription (no recover) gets the latest value per key too', async () => {
    const channel = unique('px:fresh');
    for (let n = 1; n <= 6; n++) await h.api('publish', { channel, data: { sym: n % 2 === 0 ? 'B' : 'A', n } });
    const client = await wsClient();
    try {
      const result = await client.call('subscribe', { channel });
      assert.deepEqual([result['recovered'], result['was_recovering'], result['conflated'], result['offset']], [false, false, true, 4]);
      await waitUntil(() => publications(client.frames, channel).length === 2, { label: 'two latest values' });
      assertNoGap(publications(client.frames, channel), 4, 'latest values');
      assert.deepEqual(publications(client.frames, channel).map((p) => [p.offset, p.prev]), [
        [5, undefined],
        [6, undefined],
      ]);
      const empty = await client.call('subscribe', { channel: unique('px:empty') });
      assert.deepEqual([empty['recovered'], empty['conflated'], empty['offset']], [false, true, 0]);
    } finally {
      client.close();
    }
  });

  test('without a key the whole channel is one key; channels without conflation are unchanged', async () => {
    const whole = unique('whole:uncovered');
    const plain = unique('plain:uncovered');
    const epochs = [(await h.api('history', { channel: whole })).body.epoch, (await h.api('history', { channel: plain })).body.epoch];
    for (let n = 1; n <= 30; n++) {
      await h.api('publish', { channel: whole, data: { sym: n % 2 === 0 ? 'B' : 'A', n } });
      await h.api('publish', { channel: plain, data: { sym: 'A', n } });
    }
    const client = await wsClient();
    try {
      const conflated = await client.call('subscribe', { channel: whole, recover: true, epoch: epochs[0], offset: 1 });
      assert.deepEqual([conflated['recovered'], conflated['conflated'], conflated['offset']], [false, true, 29]);
      await waitUntil(() => publications(client.frames, whole).length === 1, { label: 'the latest value' });
      assert.deepEqual(publications(client.frames, whole), [{ offset: 30, prev: undefined, sym: 'B', n: 30 }]);

      const other = await client.call('subscribe', { channel: plain, recover: true, epoch: epochs[1], offset: 1 });
      assert.deepEqual([other['recovered'], other['conflated'], other['offset']], [false, undefined, 30]);
      await sleep(100);
      assert.equal(publications(client.frames, plain).length, 0, 'no latest values on a channel without conflation');
    } finally {
      client.close();
    }
  });
});
