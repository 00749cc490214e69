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
import { sleep, waitUntil } from '../helpers/rt-util.ts';

const QUEUE_BYTES = 262144;
const PAYLOAD_BYTES = 30 * 1024;
/** Enough volume that unbounded buffering would dwarf the memory bound. */
const FLOOD = 2500;
/**
 * Allowed RSS growth: the bounded queue (4× for framing/copies) times a
 * factor for allocator and GC slack of the whole process (server, API client
 * and the normal subscriber all run here). Unbounded buffering of the flood
 * (~73 MiB) would exceed it.
 */
const MEMORY_BOUND = 4 * QUEUE_BYTES * 24;

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let counter = 0;
const unique = (prefix: string): string => `${prefix}-${++counter}-${randomBytes(3).toString('hex')}`;

/** Samples RSS while a flood runs. */
class MemoryWatch {
  readonly baseline: number;
  peak: number;
  private readonly timer: ReturnType<typeof setInterval>;

  constructor() {
    gc();
    gc();
    this.baseline = process.memoryUsage().rss;
    this.peak = this.baseline;
    this.timer = setInterval(() => this.sample(), 5);
  }

  sample(): void {
    const rss = process.memoryUsage().rss;
    if (rss > this.peak) this.peak = rss;
  }

  stop(): number {
    clearInterval(this.timer);
    this.sample();
    return this.peak - this.baseline;
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
    h = await startHerald({ limits: { outboundQueueBytes: QUEUE_BYTES } });
    port = Number(new URL(h.url).port);
  });
  after(async () => {
    await h.close();
  });

  async function numClients(channel: string): Promise<number> {
    const answer = await h.api('presence_stats', { channel });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.num_clients as number;
  }

  async function flood(channel: string): Promise<void> {
    for (let n = 1; n <= FLOOD; n++) {
      const answer = await h.api('publish', { channel, data: { n, pad } });
      assert.equal(answer.status, 200, `publish ${n}: ${JSON.stringify(answer.body)}`);
    }
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
      await flood(channel);
      await waitUntil(() => normal.offsets.length >= FLOOD, {
        timeoutMs: 60000,
        label: `normal subscriber to receive ${FLOOD} publications`,
        describe: () => `got ${normal.offsets.length}`,
      });
      const growth = memory.stop();

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
        `ws slow consumer: received ${received.length}/${FLOOD} before the cut, close=${close ?? 'none'}, ` +
          `peak rss growth ${(growth / 1048576).toFixed(1)} MiB (bound ${(MEMORY_BOUND / 1048576).toFixed(1)} MiB)`,
      );
      assert.ok(growth < MEMORY_BOUND, `rss grew by ${growth} bytes during the flood (bound ${MEMORY_BOUND})`);
    } finally {
      slow.destroy();
      normal.close();
    }
  });

  test('SSE: a stream that is never read is dropped (3004), others get everything, memory stays bounded', async () => {
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
      await flood(channel);
      await waitUntil(() => normal.offsets.length >= FLOOD, {
        timeoutMs: 60000,
        label: `normal SSE subscriber to receive ${FLOOD} publications`,
        describe: () => `got ${normal.offsets.length}`,
      });
      const growth = memory.stop();

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
      const frames = slow.frames;
      const disconnect = frames.find((f) => f['push'] === 'disconnect');
      if (disconnect) {
        assert.equal(disconnect['code'], 3004, 'disconnect code of a slow consumer');
        assert.equal(frames.at(-1), disconnect, 'disconnect is the last frame');
      }
      const received = frames.filter((f) => f['push'] === 'publication').map((f) => f['offset'] as number);
      assertContiguousPrefix(received, 'slow SSE consumer');
      assert.ok(received.length < FLOOD);
      console.log(
        `sse slow consumer: received ${received.length}/${FLOOD} before the cut, disconnect=${disconnect?.['code'] ?? 'none'}, ` +
          `peak rss growth ${(growth / 1048576).toFixed(1)} MiB (bound ${(MEMORY_BOUND / 1048576).toFixed(1)} MiB)`,
      );
      assert.ok(growth < MEMORY_BOUND, `rss grew by ${growth} bytes during the flood (bound ${MEMORY_BOUND})`);
    } finally {
      slow.destroy();
      normal.close();
    }
  });
});
