/**
 * Slow consumers (docs/protocol.md: `limits.outboundQueueBytes`, disconnect
 * 3004 `slow`). A raw socket subscribes and then never reads while the
 * channel is flooded through the API: the server must cut it instead of
 * buffering without bound, and a normal subscriber on the same channel must
 * keep receiving every publication. The server runs in this process, so
 * `process.memoryUsage().rss` is its memory.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import v8 from 'node:v8';
import vm from 'node:vm';
import WebSocket from 'ws';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { SseParser, sseUrl, type Frame } from '../helpers/rt-clients.ts';
import { RawSse, RawWebSocket } from '../helpers/rt-raw.ts';
import { sleep, waitUntil, withTimeout } from '../helpers/rt-util.ts';

const QUEUE_BYTES = 262144;
const PAYLOAD_BYTES = 30 * 1024;
/** ~73 MiB in all: unbounded buffering for the slow consumer would dwarf the bounds below. */
const FLOOD = 2500;
/** Memory is sampled after a forced GC every this many publications. */
const SAMPLE_EVERY = 50;
/**
 * Bounds on growth during the flood. The server shares this process with the
 * API client and the normal subscriber, whose traffic alone costs about
 * 10 MiB live and 10 MiB RSS (measured with no slow consumer), so the bounds
 * are 4× the queue limit times a factor covering that baseline (after a
 * warm-up, so the first test is not charged for heap sizing). Buffering the
 * flood for the slow consumer would add ~70 MiB to both.
 */
const LIVE_BOUND = 4 * QUEUE_BYTES * 24; // 24 MiB of heap + array buffers after GC
const RSS_BOUND = 4 * QUEUE_BYTES * 32; // 32 MiB of RSS

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let counter = 0;
const unique = (prefix: string): string => `${prefix}-${++counter}-${randomBytes(3).toString('hex')}`;

/** Peak memory growth over a flood, sampled after forced GCs (so garbage does not count). */
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

/** A WebSocket subscriber that keeps only offsets (so the test itself stays small). */
async function leanWsSubscriber(url: string, token: string, channel: string): Promise<{ offsets: number[]; close(): void }> {
  const ws = new WebSocket(url);
  const offsets: number[] = [];
  const replies = new Map<number, Frame>();
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw.toString()) as Frame;
    if (frame['push'] === 'publication') offsets.push(frame['offset'] as number);
    else if (typeof frame['id'] === 'number') replies.set(frame['id'], frame);
  });
  ws.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  ws.send(JSON.stringify({ id: 1, method: 'connect', params: { token } }));
  await waitUntil(() => replies.get(1), { label: 'connect reply' });
  ws.send(JSON.stringify({ id: 2, method: 'subscribe', params: { channel } }));
  const reply = await waitUntil(() => replies.get(2), { label: 'subscribe reply' });
  assert.equal(reply['error'], undefined, JSON.stringify(reply));
  return { offsets, close: () => ws.terminate() };
}

/** An SSE subscriber over fetch that keeps only offsets. */
async function leanSseSubscriber(url: string): Promise<{ offsets: number[]; close(): void }> {
  const controller = new AbortController();
  const offsets: number[] = [];
  let subscribed = false;
  const parser = new SseParser((event) => {
    const frame = event.frame;
    if (frame?.['push'] === 'publication') offsets.push(frame['offset'] as number);
    else if (frame?.['push'] === 'subscribed') subscribed = true;
  });
  const response = await fetch(url, { headers: { accept: 'text/event-stream' }, signal: controller.signal });
  assert.equal(response.status, 200);
  const body = response.body;
  assert.ok(body);
  void (async () => {
    const decoder = new TextDecoder();
    const reader = body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (value) parser.feed(decoder.decode(value, { stream: true }));
        if (done) return;
      }
    } catch {
      // aborted
    }
  })();
  await waitUntil(() => subscribed, { label: 'lean SSE subscribed' });
  return { offsets, close: () => controller.abort() };
}

function assertContiguousPrefix(offsets: readonly number[], label: string): void {
  offsets.forEach((offset, index) => assert.equal(offset, index + 1, `${label}: offset ${offset} at position ${index}: no silent gaps`));
}

describe('slow consumers', { timeout: 120000 }, () => {
  let h: TestHerald;
  let port: number;
  const pad = 'x'.repeat(PAYLOAD_BYTES);

  before(async () => {
    h = await startHerald({
      // A close grace far beyond the flood: the slow SSE reader resumes after it and must still find its 3004.
      limits: { outboundQueueBytes: QUEUE_BYTES, closeGraceMs: 600000 },
      // a short history, so that what history keeps is not mistaken for queued data
      channels: { namespaces: [{ name: 'chat', presence: true, historySize: 16 }] },
    });
    port = Number(new URL(h.url).port);
    // Warm up (JIT, heap sizing, socket buffers) so the first measured flood is not charged for it.
    const channel = unique('chat:warm-up');
    const ws = await leanWsSubscriber(h.wsUrl, await h.token('warm'), channel);
    const sse = await leanSseSubscriber(sseUrl(h.url, { token: await h.token('warm'), channels: [channel] }));
    for (let n = 1; n <= 500; n++) await h.api('publish', { channel, data: { n, pad } });
    await waitUntil(() => ws.offsets.length >= 500 && sse.offsets.length >= 500, { timeoutMs: 30000, label: 'warm-up' });
    ws.close();
    sse.close();
  });
  after(async () => {
    await h.close();
  });

  async function numClients(channel: string): Promise<number> {
    const answer = await h.api('presence_stats', { channel });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.num_clients as number;
  }

  /** Floods the channel; returns the publication count at which presence first showed the slow consumer gone. */
  async function flood(channel: string, memory: MemoryWatch): Promise<number | undefined> {
    let cutAt: number | undefined;
    for (let n = 1; n <= FLOOD; n++) {
      const answer = await h.api('publish', { channel, data: { n, pad } });
      assert.equal(answer.status, 200, `publish ${n}: ${JSON.stringify(answer.body)}`);
      if (n % SAMPLE_EVERY === 0) memory.sample();
      if (cutAt === undefined && n % 100 === 0 && (await numClients(channel)) === 1) cutAt = n;
    }
    return cutAt;
  }

  test('WebSocket: a socket that never reads is cut (3004), others get everything, memory stays bounded', async () => {
    const channel = unique('chat:slow-ws');
    const normal = await leanWsSubscriber(h.wsUrl, await h.token('normal'), channel);
    const slow = await RawWebSocket.connect(port);
    try {
      await slow.call('connect', { token: await h.token('slow') });
      await slow.call('subscribe', { channel });
      assert.equal(await numClients(channel), 2);
      slow.stopReading();

      const memory = new MemoryWatch();
      const cutAt = await flood(channel, memory);
      assert.ok(cutAt !== undefined, 'the slow consumer must be cut while the flood is still running');
      await waitUntil(() => normal.offsets.length >= FLOOD, {
        timeoutMs: 60000,
        label: `normal subscriber to receive ${FLOOD} publications`,
        describe: () => `got ${normal.offsets.length}`,
      });
      memory.sample();

      // the server dropped the slow connection (it is gone from presence)
      let clients = await numClients(channel);
      for (let i = 0; clients !== 1 && i < 200; i++) {
        await sleep(25);
        clients = await numClients(channel);
      }
      assert.equal(clients, 1, 'the slow consumer must be disconnected');

      assertContiguousPrefix(normal.offsets, 'normal subscriber');
      assert.equal(normal.offsets.length, FLOOD);

      // drain what was in flight: at most a contiguous prefix, then the close
      slow.resumeReading();
      await waitUntil(() => slow.parser.closeCode() !== undefined || slow.closed, {
        timeoutMs: 20000,
        label: 'close frame or end of the slow socket',
      });
      const close = slow.parser.closeCode();
      if (close !== undefined) assert.equal(close, 3004, 'close code of a slow consumer');
      const received = slow.parser.messages().filter((m) => m['push'] === 'publication').map((m) => m['offset'] as number);
      assertContiguousPrefix(received, 'slow consumer');
      assert.ok(received.length < FLOOD, 'the slow consumer cannot have received the whole flood');
      console.log(
        `ws slow consumer: received ${received.length}/${FLOOD} before the cut, close=${close ?? 'none'}, gone from presence by publication ${cutAt}, ` +
          memory.describe(),
      );
      memory.check();
    } finally {
      slow.destroy();
      normal.close();
    }
  });

  test('SSE: a stream that is not read is cut (3004) and, once it reads again, ends with disconnect 3004; others get everything; memory stays bounded', async () => {
    const channel = unique('chat:slow-sse');
    const normal = await leanSseSubscriber(sseUrl(h.url, { token: await h.token('normal'), channels: [channel] }));
    const slow = await RawSse.connect(port, `/connection/sse?channel=${encodeURIComponent(channel)}`, {
      authorization: `Bearer ${await h.token('slow')}`,
    });
    try {
      assert.match(slow.statusLine, /^HTTP\/1\.1 200/);
      await waitUntil(() => slow.frames.some((f) => f['push'] === 'subscribed'), { label: 'raw SSE subscribed' });
      assert.equal(await numClients(channel), 2);
      slow.stopReading();

      const memory = new MemoryWatch();
      const cutAt = await flood(channel, memory);
      assert.ok(cutAt !== undefined, 'the slow consumer must be cut while the flood is still running');
      await waitUntil(() => normal.offsets.length >= FLOOD, {
        timeoutMs: 60000,
        label: `normal SSE subscriber to receive ${FLOOD} publications`,
        describe: () => `got ${normal.offsets.length}`,
      });
      memory.sample();

      let clients = await numClients(channel);
      for (let i = 0; clients !== 1 && i < 200; i++) {
        await sleep(25);
        clients = await numClients(channel);
      }
      assert.equal(clients, 1, 'the slow SSE consumer must be disconnected');
      assertContiguousPrefix(normal.offsets, 'normal SSE subscriber');
      assert.equal(normal.offsets.length, FLOOD);

      slow.resumeReading();
      await waitUntil(() => slow.bodyEnded || slow.closed, { timeoutMs: 20000, label: 'end of the slow SSE stream' });
      // It reads everything that was queued, and then why it was cut.
      const frames = slow.frames;
      const disconnect = frames.at(-1);
      assert.deepEqual(
        [disconnect?.['push'], disconnect?.['code'], disconnect?.['reconnect']],
        ['disconnect', 3004, true],
        `the stream ends with disconnect 3004 (slow): ${JSON.stringify(frames.slice(-3).map((f) => [f['push'], f['offset'] ?? f['code']]))}`,
      );
      assert.ok(slow.bodyEnded, 'the server ended the stream (not cut)');
      const received = frames.filter((f) => f['push'] === 'publication').map((f) => f['offset'] as number);
      assertContiguousPrefix(received, 'slow SSE consumer');
      assert.ok(received.length < FLOOD);
      console.log(
        `sse slow consumer: received ${received.length}/${FLOOD} before the cut, disconnect=${disconnect?.['code'] ?? 'none'}, gone from presence by publication ${cutAt}, ` +
          memory.describe(),
      );
      memory.check();
    } finally {
      slow.destroy();
      normal.close();
    }
  });
});

describe('slow consumers: the close grace', { timeout: 120000 }, () => {
  test('SSE: a stream cut as slow whose reader never reads again is given up after limits.closeGraceMs: it does not hold a drain', async () => {
    // A short close grace, and a drain timeout far beyond it: only the grace can let this drain finish in time.
    const h = await startHerald({
      limits: { outboundQueueBytes: 65536, closeGraceMs: 200 },
      channels: { namespaces: [{ name: 'chat', presence: true, historySize: 16 }] },
    });
    const port = Number(new URL(h.url).port);
    const channel = unique('chat:stuck-sse');
    const slow = await RawSse.connect(port, `/connection/sse?channel=${encodeURIComponent(channel)}`, {
      authorization: `Bearer ${await h.token('stuck')}`,
    });
    try {
      await waitUntil(() => slow.frames.some((f) => f['push'] === 'subscribed'), { label: 'raw SSE subscribed' });
      slow.stopReading();
      const pad = 'x'.repeat(PAYLOAD_BYTES);
      const subscribers = async () => ((await h.api('presence_stats', { channel })).body as { num_clients: number }).num_clients;
      for (let n = 1; (await subscribers()) > 0; n++) {
        assert.ok(n <= FLOOD, `the reader that does not read is cut as slow within ${FLOOD} publications`);
        assert.equal((await h.api('publish', { channel, data: { n, pad } })).status, 200);
      }
      const drained = await withTimeout(h.server.shutdown(600000), 60000, 'a drain while a cut SSE reader never reads again');
      assert.equal(drained, true, 'the drain found every connection closed and settled');
    } finally {
      slow.destroy();
      await h.close();
    }
  });
});
