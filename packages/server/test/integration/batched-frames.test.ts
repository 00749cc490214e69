/**
 * Batched frames (docs/protocol.md, "Batched frames"): a client that
 * announces them (`batch=1` in the connection URL, `batch: true` in
 * `connect` or in the long-poll open body) may receive several frames in one
 * WebSocket message or one SSE event, joined by "\n", in order; a client
 * that does not gets one frame per message as before. A namespace's
 * `writeDelayMs` gathers its publications for such clients; the
 * slow-consumer limit still holds for a reader that stops reading.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { openSse, parseVector, poll, pollOpen, sseUrl, type Frame, type SseStream } from '../helpers/rt-clients.ts';
import { Opcode, RawSse, RawWebSocket } from '../helpers/rt-raw.ts';
import { waitUntil } from '../helpers/rt-util.ts';

let counter = 0;
const unique = (prefix: string): string => `${prefix}-${++counter}-${randomBytes(3).toString('hex')}`;

/** Splits one WebSocket message or SSE event's data into its frames. */
const framesOf = (text: string): Frame[] => text.split('\n').map((line) => JSON.parse(line) as Frame);

/** A WebSocket client (the `ws` library) that keeps every message as received. */
class WsRecorder {
  readonly messages: string[] = [];
  readonly socket: WebSocket;
  #nextId = 1;

  private constructor(socket: WebSocket) {
    this.socket = socket;
    socket.on('message', (data) => this.messages.push(data.toString()));
  }

  static async open(url: string): Promise<WsRecorder> {
    const socket = new WebSocket(url);
    socket.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    return new WsRecorder(socket);
  }

  /** Every frame received, batches split, in order. */
  get frames(): Frame[] {
    return this.messages.flatMap(framesOf);
  }

  publications(channel?: string): Frame[] {
    return this.frames.filter((f) => f['push'] === 'publication' && (channel === undefined || f['channel'] === channel));
  }

  /** Messages that carried more than one frame. */
  get batches(): string[] {
    return this.messages.filter((m) => m.includes('\n'));
  }

  async call(method: string, params?: unknown): Promise<Frame> {
    const id = this.#nextId++;
    this.socket.send(JSON.stringify(params === undefined ? { id, method } : { id, method, params }));
    const reply = await waitUntil(() => this.frames.find((f) => f['id'] === id), { label: `reply to ${method}` });
    assert.equal(reply['error'], undefined, `${method}: ${JSON.stringify(reply['error'])}`);
    return reply['result'] as Frame;
  }

  close(): void {
    this.socket.terminate();
  }
}

/** SSE frames, batches split, in order. */
const sseFrames = (stream: SseStream): Frame[] => stream.events.flatMap((e) => framesOf(e.data));

describe('batched frames', { timeout: 120000 }, () => {
  let h: TestHerald;
  let port: number;

  before(async () => {
    h = await startHerald({
      limits: { outboundQueueBytes: 262144, closeGraceMs: 600000 },
      channels: {
        namespaces: [
          { name: 'public', allowAnonymous: true },
          { name: 'delayed', allowAnonymous: true, writeDelayMs: 400 },
        ],
      },
    });
    port = Number(new URL(h.url).port);
  });
  after(async () => {
    await h.close();
  });

  async function publish(channel: string, data: unknown): Promise<void> {
    const answer = await h.api('publish', { channel, data });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  }

  /** One API request that publishes into every channel, one after the other within one turn of the server's event loop. */
  async function broadcast(channels: readonly string[], data: unknown): Promise<void> {
    const answer = await h.api('broadcast', { channels, data });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
  }

  async function wsSubscriber(url: string, channels: readonly string[], connect: Record<string, unknown> = {}): Promise<{ ws: WsRecorder; connected: Frame }> {
    const ws = await WsRecorder.open(url);
    const connected = await ws.call('connect', connect);
    for (const channel of channels) await ws.call('subscribe', { channel });
    return { ws, connected };
  }

  test('WebSocket with batch=1: frames of one turn arrive as one message, in order; connect says batch', async () => {
    const channels = Array.from({ length: 6 }, () => unique('public:ws'));
    const { ws, connected } = await wsSubscriber(h.wsUrl + '?batch=1', channels);
    try {
      assert.equal(connected['batch'], true, 'the connect result says the server batches');
      await broadcast(channels, { n: 1 });
      await waitUntil(() => ws.publications().length === channels.length, { label: 'all publications', describe: () => ws.messages.join(' | ') });
      assert.deepEqual(
        ws.publications().map((p) => p['channel']),
        channels,
        'publications in the order they were published',
      );
      assert.ok(ws.batches.length > 0, `no message carried more than one frame: ${ws.messages.join(' | ')}`);
      // The first publication of the turn went out at once, alone.
      const first = ws.messages.findIndex((m) => m.includes('"push":"publication"'));
      assert.equal(framesOf(ws.messages[first]!).length, 1, 'the first frame of a turn is written at once');
    } finally {
      ws.close();
    }
  });

  test('WebSocket: a client that does not announce gets one frame per message; batch: true in connect works too', async () => {
    const channels = Array.from({ length: 6 }, () => unique('public:ws-plain'));
    const plain = await wsSubscriber(h.wsUrl, channels);
    const param = await wsSubscriber(h.wsUrl, channels, { batch: true });
    try {
      assert.equal(plain.connected['batch'], undefined, 'no batch in the connect result of a client that did not announce');
      assert.equal(param.connected['batch'], true);
      for (let round = 1; round <= 3; round++) await broadcast(channels, { round });
      const all = channels.length * 3;
      await waitUntil(() => plain.ws.publications().length === all && param.ws.publications().length === all, { label: 'all publications' });
      assert.equal(plain.ws.batches.length, 0, 'no batched message to a client that did not announce');
      assert.equal(plain.ws.messages.filter((m) => m.includes('"push":"publication"')).length, all, 'one message per publication');
      assert.ok(param.ws.batches.length > 0, 'batches for the client that announced in connect');
      const order = (ws: WsRecorder) => ws.publications().map((p) => `${p['channel']}#${p['offset']}`);
      assert.deepEqual(order(param.ws), order(plain.ws), 'the same frames in the same order');
    } finally {
      plain.ws.close();
      param.ws.close();
    }
  });

  test('WebSocket: concurrent publishes to one channel arrive complete and in offset order', async () => {
    const channel = unique('public:ws-burst');
    const { ws } = await wsSubscriber(h.wsUrl + '?batch=1', [channel]);
    try {
      const count = 200;
      for (let wave = 0; wave < count; wave += 20) {
        await Promise.all(Array.from({ length: 20 }, (_, i) => publish(channel, { n: wave + i })));
      }
      await waitUntil(() => ws.publications().length === count, { label: 'all publications', describe: () => `${ws.publications().length}` });
      assert.deepEqual(
        ws.publications().map((p) => p['offset']),
        Array.from({ length: count }, (_, i) => i + 1),
      );
    } finally {
      ws.close();
    }
  });

  test('SSE with batch=1: one event per batch, a data line per frame, the event id is the vector after the last', async () => {
    const channels = Array.from({ length: 6 }, () => unique('public:sse'));
    const url = sseUrl(h.url, { channels }) + '&batch=1';
    const stream = await openSse(url);
    const plain = await openSse(sseUrl(h.url, { channels }));
    try {
      assert.equal(stream.status, 200);
      const connected = await stream.waitForFrame((f) => f['push'] === 'connected');
      assert.equal(connected['batch'], true, 'the connected push says the server batches');
      const plainConnected = await plain.waitForFrame((f) => f['push'] === 'connected');
      assert.equal(plainConnected['batch'], undefined);
      await waitUntil(() => sseFrames(stream).filter((f) => f['push'] === 'subscribed').length === channels.length, { label: 'subscribed' });
      await waitUntil(() => sseFrames(plain).filter((f) => f['push'] === 'subscribed').length === channels.length, { label: 'plain subscribed' });
      for (let round = 1; round <= 3; round++) await broadcast(channels, { round });
      const all = channels.length * 3;
      const pubs = (s: SseStream) => sseFrames(s).filter((f) => f['push'] === 'publication');
      await waitUntil(() => pubs(stream).length === all && pubs(plain).length === all, { label: 'all publications' });
      const batches = stream.events.filter((e) => e.data.includes('\n'));
      assert.ok(batches.length > 0, 'at least one event carried several frames');
      assert.equal(plain.events.filter((e) => e.data.includes('\n')).length, 0, 'one frame per event without the announcement');
      const order = (s: SseStream) => pubs(s).map((p) => `${p['channel']}#${p['offset']}`);
      assert.deepEqual(order(stream), order(plain), 'the same frames in the same order');
      const expected = [1, 2, 3].flatMap((offset) => channels.map((c) => `${c}#${offset}`));
      assert.deepEqual(order(stream), expected);
      // Last-Event-ID after everything: every channel at offset 3 (resuming from it misses nothing, repeats nothing).
      const vector = parseVector(stream.lastEventId);
      for (const channel of channels) assert.equal(vector.get(channel)?.offset, 3, `${channel} in ${stream.lastEventId}`);
      for (const event of batches) assert.ok(event.id !== undefined, 'a batch of publications carries the id');
    } finally {
      stream.abort();
      plain.abort();
    }
  });

  test('long polling with batch: true: frames in order in the answers, connected says batch', async () => {
    const channels = Array.from({ length: 6 }, () => unique('public:lp'));
    const opened = await pollOpen(h.url, { channels, batch: true });
    assert.equal(opened.status, 200, JSON.stringify(opened.body));
    const first = opened.body as { session: string; seq: number; cursor: string; messages: Frame[] };
    const messages = [...first.messages];
    assert.equal(messages[0]?.['push'], 'connected');
    assert.equal(messages[0]?.['batch'], true);
    assert.equal(messages.filter((m) => m['push'] === 'subscribed').length, channels.length, 'the open answer holds every subscribed push');
    let seq = first.seq;
    let cursor = first.cursor;
    await broadcast(channels, { round: 1 });
    await broadcast(channels, { round: 2 });
    while (messages.filter((m) => m['push'] === 'publication').length < channels.length * 2) {
      const answer = await poll(h.url, first.session, seq);
      assert.equal(answer.status, 200);
      const body = answer.body as { seq: number; cursor: string; messages: Frame[] };
      messages.push(...body.messages);
      seq = body.seq;
      cursor = body.cursor;
    }
    const order = messages.filter((m) => m['push'] === 'publication').map((p) => `${p['channel']}#${p['offset']}`);
    assert.deepEqual(order, [...channels.map((c) => `${c}#1`), ...channels.map((c) => `${c}#2`)]);
    const vector = parseVector(cursor);
    for (const channel of channels) assert.equal(vector.get(channel)?.offset, 2);
    // The query form is read as well.
    const viaQuery = await fetch(new URL('/connection/poll/open?batch=1', h.url), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ channels: [channels[0]] }),
    });
    const queryAnswer = (await viaQuery.json()) as { messages: Frame[] };
    assert.equal(queryAnswer.messages[0]?.['batch'], true);
  });

  test('writeDelayMs gathers a namespace\'s publications for announcing clients only', async () => {
    const channel = unique('delayed:ws');
    const batched = await wsSubscriber(h.wsUrl + '?batch=1', [channel]);
    const plain = await wsSubscriber(h.wsUrl, [channel]);
    const stream = await openSse(sseUrl(h.url, { channels: [channel] }) + '&batch=1');
    try {
      await waitUntil(() => sseFrames(stream).some((f) => f['push'] === 'subscribed'), { label: 'SSE subscribed' });
      // Three publishes, each answered before the next: separate turns of the server's event loop.
      for (let n = 1; n <= 3; n++) await publish(channel, { n });
      await waitUntil(() => batched.ws.publications().length === 3 && plain.ws.publications().length === 3, { label: 'publications' });
      const ssePubs = () => sseFrames(stream).filter((f) => f['push'] === 'publication');
      await waitUntil(() => ssePubs().length === 3, { label: 'SSE publications' });
      const pubMessages = batched.ws.messages.filter((m) => m.includes('"push":"publication"'));
      assert.equal(pubMessages.length, 1, `the delay gathered the three publications into one message: ${pubMessages.join(' | ')}`);
      assert.deepEqual(framesOf(pubMessages[0]!).map((f) => f['offset']), [1, 2, 3]);
      assert.equal(stream.events.filter((e) => e.data.includes('"push":"publication"')).length, 1, 'one SSE event');
      assert.deepEqual(ssePubs().map((f) => f['offset']), [1, 2, 3]);
      assert.equal(plain.ws.batches.length, 0);
      assert.equal(plain.ws.messages.filter((m) => m.includes('"push":"publication"')).length, 3, 'no delay or batch without the announcement');
    } finally {
      batched.ws.close();
      plain.ws.close();
      stream.abort();
    }
  });

  test('WebSocket: a reply never overtakes frames queued before it (writeDelayMs)', async () => {
    const channel = unique('delayed:ws-order');
    const { ws } = await wsSubscriber(h.wsUrl + '?batch=1', [channel]);
    try {
      for (let n = 1; n <= 2; n++) await publish(channel, { n });
      // The two publications wait up to 400 ms; the reply to this command must come after them.
      await ws.call('presence_stats', { channel });
      const replyAt = ws.messages.findIndex((m) => m.includes('"num_clients"'));
      const publicationsAt = ws.messages.findIndex((m) => m.includes('"push":"publication"'));
      assert.ok(publicationsAt !== -1 && publicationsAt < replyAt, `publications before the reply: ${ws.messages.join(' | ')}`);
      assert.deepEqual(ws.publications().map((p) => p['offset']), [1, 2]);
    } finally {
      ws.close();
    }
  });

  test('backpressure, WebSocket: a batching reader that stops reading gets a contiguous prefix, then is cut (3004); others get everything', async () => {
    const channel = unique('public:slow');
    const normal = await wsSubscriber(h.wsUrl + '?batch=1', [channel]);
    const slow = await RawWebSocket.connect(port, '/connection/websocket?batch=1');
    try {
      const connected = await slow.call('connect', {});
      assert.equal(connected['batch'], true);
      await slow.call('subscribe', { channel });
      slow.stopReading();
      // Flood until the server cuts the stalled reader: the kernel's loopback
      // buffers take tens of MiB before the server's queue starts to grow.
      const pad = 'x'.repeat(30 * 1024);
      const numClients = async (): Promise<number> => (await h.api('presence_stats', { channel })).body.num_clients as number;
      let count = 0;
      let cut = false;
      while (!cut && count < 3000) {
        await Promise.all(Array.from({ length: 10 }, (_, i) => publish(channel, { n: count + i, pad })));
        count += 10;
        if (count % 100 === 0) cut = (await numClients()) === 1;
      }
      assert.ok(cut, `the stalled reader was cut (after ${count} publications of 30 KiB)`);
      await waitUntil(() => normal.ws.publications().length === count, { timeoutMs: 60000, label: 'normal subscriber complete' });
      assert.deepEqual(
        normal.ws.publications().map((p) => p['offset']),
        Array.from({ length: count }, (_, i) => i + 1),
      );
      slow.resumeReading();
      await slow.waitClosed(30000);
      assert.equal(slow.parser.closeCode(), undefined, 'cut without a close handshake (the socket was not read)');
      const texts = slow.parser.frames.filter((f) => f.opcode === Opcode.text).map((f) => f.payload.toString('utf8'));
      const offsets: number[] = texts.flatMap(framesOf).filter((f) => f['push'] === 'publication').map((f) => f['offset']);
      assert.ok(offsets.length < count, `the stalled reader was cut before the end (got ${offsets.length})`);
      offsets.forEach((offset, index) => assert.equal(offset, index + 1, 'a contiguous prefix, in order'));
    } finally {
      normal.ws.close();
      slow.destroy();
    }
  });

  test('backpressure, SSE: a batching reader that stops reading gets a contiguous prefix, then its 3004 disconnect frame', async () => {
    const channel = unique('public:slow-sse');
    const normal = await wsSubscriber(h.wsUrl + '?batch=1', [channel]);
    const slow = await RawSse.connect(port, `/connection/sse?channel=${encodeURIComponent(channel)}&batch=1`);
    try {
      assert.match(slow.statusLine, / 200 /);
      const slowFrames = (): Frame[] => slow.events.flatMap((e) => framesOf(e.data));
      await waitUntil(() => slowFrames().some((f) => f['push'] === 'subscribed'), { label: 'SSE subscribed' });
      assert.equal(slowFrames()[0]?.['batch'], true, 'connected says batch');
      slow.stopReading();
      const pad = 'x'.repeat(30 * 1024);
      const numClients = async (): Promise<number> => (await h.api('presence_stats', { channel })).body.num_clients as number;
      let count = 0;
      let cut = false;
      while (!cut && count < 3000) {
        await Promise.all(Array.from({ length: 10 }, (_, i) => publish(channel, { n: count + i, pad })));
        count += 10;
        if (count % 100 === 0) cut = (await numClients()) === 1;
      }
      assert.ok(cut, `the stalled reader was cut (after ${count} publications of 30 KiB)`);
      await waitUntil(() => normal.ws.publications().length === count, { timeoutMs: 60000, label: 'normal subscriber complete' });
      slow.resumeReading();
      // The disconnect frame waits behind what the reader had not read (closeGraceMs is long here).
      const disconnect = await waitUntil(() => slowFrames().find((f) => f['push'] === 'disconnect'), { timeoutMs: 60000, label: 'the disconnect frame' });
      assert.equal(disconnect['code'], 3004);
      const frames = slowFrames();
      assert.equal(frames[frames.length - 1]?.['push'], 'disconnect', 'the disconnect frame comes last');
      const offsets: number[] = frames.filter((f) => f['push'] === 'publication').map((f) => f['offset']);
      assert.ok(offsets.length < count, `cut before the end (got ${offsets.length})`);
      offsets.forEach((offset, index) => assert.equal(offset, index + 1, 'a contiguous prefix, in order'));
      assert.ok(slow.events.some((e) => e.data.includes('\n')), 'the backlog went out in batches');
    } finally {
      normal.ws.close();
      slow.destroy();
    }
  });
});
