/**
 * Randomized recovery stress over real sockets (docs/protocol.md, "Positions
 * and recovery"). For each transport, a publisher sends a numbered stream
 * through the server API while K clients are dropped at random points and
 * reconnect with their last position:
 *
 * - WebSocket: new socket, `connect`, `subscribe` with recover/epoch/offset.
 * - SSE: the `eventsource` client reconnects by itself with Last-Event-ID.
 * - long polling: a new session opened with the last cursor.
 *
 * At the end every client must hold every publication exactly once, in
 * order; the only allowed gap is one announced by `recovered: false`, and that
 * answer is only allowed when history was really exceeded.
 *
 * The schedule comes from a seeded PRNG: the seed is printed; rerun with
 * HERALD_TEST_SEED=<seed> to reproduce.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { ControlledFetch, parseVector, poll, pollClose, pollOpen, type Frame } from '../helpers/rt-clients.ts';
import { EventSource } from 'eventsource';
import { deferred, randomInt, seededRandom, sleep, testSeed, waitUntil } from '../helpers/rt-util.ts';

const SEED = testSeed();
const REPRO = `HERALD_TEST_SEED=${SEED}`;
console.log(`recovery-stress seed=${SEED} (rerun with ${REPRO})`);

const LARGE_HISTORY = 2000;
const TINY_HISTORY = 8;
const CLIENTS = 5;

type Transport = 'websocket' | 'sse' | 'long-poll';

interface Resubscribe {
  /** The offset the client asked to recover from (what it sent). */
  readonly from: number;
  /** The client's own last processed offset at that time. */
  readonly own: number;
  readonly result: Frame;
}

/** What a client saw, transport independent. */
abstract class StressClient {
  readonly name: string;
  readonly channel: string;
  readonly received: Array<{ offset: number; n: unknown }> = [];
  readonly resubscribes: Resubscribe[] = [];
  /** Protocol problems seen (publication before subscribe, wrong ids, …). */
  readonly problems: string[] = [];
  readonly log: string[] = [];
  epoch = '';
  lastOffset = 0;
  subscribed = false;
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;

  constructor(name: string, channel: string) {
    this.name = name;
    this.channel = channel;
  }

  /** Runs client actions one after another; the publisher never waits for them. */
  enqueue(label: string, action: () => Promise<void>): void {
    this.pending += 1;
    this.chain = this.chain
      .then(async () => {
        this.log.push(`${label} at lastOffset=${this.lastOffset}`);
        await action();
      })
      .catch((error: unknown) => {
        this.problems.push(`${label} failed: ${error instanceof Error ? error.message : String(error)}`);
      })
      .finally(() => {
        this.pending -= 1;
      });
  }

  get idle(): boolean {
    return this.pending === 0;
  }

  /** Records a publication push. */
  protected onPublication(frame: Frame): void {
    if (!this.subscribed) this.problems.push(`publication ${frame['offset']} before the subscribe answer`);
    if (frame['channel'] !== this.channel) return;
    this.received.push({ offset: frame['offset'] as number, n: (frame['data'] as Frame | undefined)?.['n'] });
    this.lastOffset = frame['offset'] as number;
  }

  /** Records a subscribe answer (reply or `subscribed` push). */
  protected onSubscribed(result: Frame, recovering: boolean, from: number): void {
    if (recovering) {
      this.resubscribes.push({ from, own: this.lastOffset, result });
      if (result['was_recovering'] !== true) this.problems.push(`resubscribe without was_recovering: ${JSON.stringify(result)}`);
      if (result['recovered'] === true && result['epoch'] !== this.epoch) {
        this.problems.push(`recovered:true with another epoch (${this.epoch} -> ${result['epoch']})`);
      }
      if (result['recovered'] === true && (result['offset'] as number) < from) {
        this.problems.push(`recovered:true with the stream (${result['offset']}) behind the position ${from}`);
      }
    } else if (this.epoch !== '') {
      this.problems.push(`resubscribed without recovery: ${JSON.stringify(result)}`);
    }
    if (!recovering || result['recovered'] !== true) this.lastOffset = result['offset'] as number;
    this.epoch = result['epoch'] as string;
    this.subscribed = true;
  }

  abstract start(): Promise<void>;
  abstract drop(random: () => number): Promise<void>;
  abstract reconnect(): Promise<void>;
  abstract stop(): Promise<void>;
}

// ---------------------------------------------------------------------------

class WsStressClient extends StressClient {
  private ws: WebSocket | undefined;
  private generation = 0;
  private readonly url: string;
  private readonly token: string;
  private nextId = 1;

  constructor(name: string, channel: string, url: string, token: string) {
    super(name, channel);
    this.url = url;
    this.token = token;
  }

  async start(): Promise<void> {
    await this.open(false);
  }

  private async open(recover: boolean): Promise<void> {
    const generation = ++this.generation;
    const ws = new WebSocket(this.url);
    this.ws = ws;
    this.subscribed = false;
    const replies = new Map<number, (frame: Frame) => void>();
    ws.on('message', (raw) => {
      if (generation !== this.generation) return;
      const frame = JSON.parse(raw.toString()) as Frame;
      if (typeof frame['id'] === 'number') {
        replies.get(frame['id'])?.(frame);
      } else if (frame['push'] === 'publication') {
        this.onPublication(frame);
      }
    });
    ws.on('close', (code) => {
      if (generation !== this.generation) return;
      // The server dropped us on its own: reconnect like a real client would.
      this.log.push(`server closed ${code}`);
      if (code === 3006 || (code >= 3000 && code < 3500)) this.enqueue(`reconnect after ${code}`, () => this.reconnect());
      else this.problems.push(`closed by the server with ${code}`);
    });
    ws.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    // `onReply` runs synchronously in the message handler: publications that
    // follow the reply in the same chunk must see its effect.
    const call = (method: string, params: unknown, onReply?: (frame: Frame) => void): Promise<Frame> => {
      const id = this.nextId++;
      const answer = deferred<Frame>();
      replies.set(id, (frame) => {
        onReply?.(frame);
        answer.resolve(frame);
      });
      ws.once('close', () => answer.reject(new Error(`closed before reply to ${method}`)));
      ws.send(JSON.stringify({ id, method, params }));
      return answer.promise;
    };
    const connected = await call('connect', { token: this.token });
    if (connected['error']) throw new Error(`connect: ${JSON.stringify(connected['error'])}`);
    const from = this.lastOffset;
    const params = recover ? { channel: this.channel, recover: true, epoch: this.epoch, offset: from } : { channel: this.channel };
    const reply = await call('subscribe', params, (frame) => {
      if (!frame['error'] && generation === this.generation) this.onSubscribed(frame['result'] as Frame, recover, from);
    });
    if (reply['error']) throw new Error(`subscribe: ${JSON.stringify(reply['error'])}`);
  }

  async drop(random: () => number): Promise<void> {
    this.generation += 1;
    const ws = this.ws;
    if (!ws) return;
    if (random() < 0.5) ws.terminate();
    else ws.close(1000);
  }

  async reconnect(): Promise<void> {
    this.generation += 1;
    this.ws?.terminate();
    await this.open(this.epoch !== '');
  }

  async stop(): Promise<void> {
    this.generation += 1;
    this.ws?.terminate();
  }
}

// ---------------------------------------------------------------------------

class SseStressClient extends StressClient {
  private readonly control = new ControlledFetch();
  private readonly es: EventSource;
  /** Index of the connection whose `subscribed` arrived (-1: none yet). */
  private subscribedOn = -1;

  constructor(name: string, channel: string, url: string) {
    super(name, channel);
    this.es = new EventSource(url, { fetch: this.control.fetch });
    this.es.addEventListener('message', (event: MessageEvent) => this.onMessage(event));
  }

  private get connection(): number {
    return this.control.connections.length - 1;
  }

  private onMessage(event: MessageEvent): void {
    const frame = JSON.parse(String(event.data)) as Frame;
    switch (frame['push']) {
      case 'connected':
        this.subscribed = false;
        break;
      case 'subscribed': {
        const index = this.connection;
        const sent = this.control.connections[index]?.lastEventId ?? null;
        const from = sent === null ? 0 : (parseVector(sent).get(this.channel)?.offset ?? -1);
        if (sent !== null && from !== this.lastOffset) {
          this.problems.push(`Last-Event-ID ${sent} does not match the last processed offset ${this.lastOffset}`);
        }
        this.onSubscribed(frame, sent !== null, from);
        this.subscribedOn = index;
        break;
      }
      case 'publication': {
        this.onPublication(frame);
        const expected = `${this.channel}|${this.epoch}|${frame['offset']}`;
        if (event.lastEventId !== expected) this.problems.push(`publication id ${event.lastEventId}, expected ${expected}`);
        break;
      }
      case 'disconnect':
        this.log.push(`disconnect push ${frame['code']}`);
        if (frame['reconnect'] !== true) this.problems.push(`disconnect without reconnect: ${JSON.stringify(frame)}`);
        break;
      case 'unsubscribed':
        // insufficient state: reconnect; Last-Event-ID resubscribes with recovery
        this.log.push(`unsubscribed ${frame['code']}`);
        this.control.cut();
        break;
      default:
        break;
    }
  }

  async start(): Promise<void> {
    await waitUntil(() => this.subscribedOn === 0, { timeoutMs: 10000, label: `${this.name} subscribed` });
  }

  async drop(): Promise<void> {
    this.control.hold();
    this.control.cut();
  }

  async reconnect(): Promise<void> {
    const before = this.connection;
    this.control.release();
    await waitUntil(() => this.connection > before && this.subscribedOn === this.connection, {
      timeoutMs: 15000,
      label: `${this.name} resubscribed`,
    });
  }

  async stop(): Promise<void> {
    this.control.release();
    this.es.close();
  }
}

// ---------------------------------------------------------------------------

class PollStressClient extends StressClient {
  private readonly base: string;
  private readonly token: string;
  private session = '';
  private seq = 0;
  private cursor: string | undefined;
  private generation = 0;
  private abort: AbortController | undefined;

  constructor(name: string, channel: string, base: string, token: string) {
    super(name, channel);
    this.base = base;
    this.token = token;
  }

  async start(): Promise<void> {
    await this.open();
  }

  private async open(): Promise<void> {
    const generation = ++this.generation;
    this.subscribed = false;
    const cursor = this.cursor;
    const body: Record<string, unknown> = { token: this.token, channels: [this.channel] };
    if (cursor !== undefined) body['cursor'] = cursor;
    const answer = await pollOpen(this.base, body);
    if (answer.status !== 200) throw new Error(`poll/open answered ${answer.status} ${JSON.stringify(answer.body)}`);
    if (generation !== this.generation) return;
    const opened = answer.body as Frame;
    this.session = opened['session'] as string;
    const from = cursor === undefined ? 0 : (parseVector(cursor).get(this.channel)?.offset ?? -1);
    if (cursor !== undefined && from !== this.lastOffset) {
      this.problems.push(`cursor ${cursor} does not match the last processed offset ${this.lastOffset}`);
    }
    this.absorb(opened, cursor !== undefined, from);
    void this.loop(generation, cursor !== undefined, from);
    if (!this.subscribed) {
      await waitUntil(() => this.subscribed || generation !== this.generation, { timeoutMs: 15000, label: `${this.name} subscribed` });
    }
  }

  private absorb(answer: Frame, recovering: boolean, from: number): void {
    const messages = (answer['messages'] ?? []) as Frame[];
    for (const message of messages) {
      switch (message['push']) {
        case 'subscribed':
          this.onSubscribed(message, recovering, from);
          break;
        case 'publication':
          this.onPublication(message);
          break;
        case 'disconnect':
          this.log.push(`disconnect ${message['code']}`);
          if (message['reconnect'] === true) {
            this.generation += 1;
            this.enqueue(`reopen after disconnect ${message['code']}`, () => this.open());
          } else this.problems.push(`disconnect without reconnect: ${JSON.stringify(message)}`);
          break;
        case 'unsubscribed':
          this.log.push(`unsubscribed ${message['code']}`);
          this.generation += 1;
          this.enqueue('reopen after unsubscribed', () => this.open());
          break;
        default:
          break;
      }
    }
    if (typeof answer['seq'] === 'number') this.seq = answer['seq'];
    if (typeof answer['cursor'] === 'string') {
      this.cursor = answer['cursor'];
      if (this.subscribed) {
        const position = parseVector(answer['cursor']).get(this.channel);
        if (!position || position.offset !== this.lastOffset || position.epoch !== this.epoch) {
          this.problems.push(`cursor ${answer['cursor']} after offset ${this.lastOffset} (epoch ${this.epoch})`);
        }
      }
    }
  }

  private async loop(generation: number, recovering: boolean, from: number): Promise<void> {
    while (generation === this.generation) {
      const abort = new AbortController();
      this.abort = abort;
      let answer: { status: number; body: unknown };
      try {
        answer = await poll(this.base, this.session, this.seq, abort.signal);
      } catch (error) {
        if (generation !== this.generation) return;
        this.problems.push(`poll failed: ${String(error)}`);
        return;
      }
      if (generation !== this.generation) return;
      if (answer.status === 404) {
        this.log.push('session_unknown');
        this.generation += 1;
        this.enqueue('reopen after session_unknown', () => this.open());
        return;
      }
      if (answer.status !== 200) {
        this.problems.push(`poll answered ${answer.status} ${JSON.stringify(answer.body)}`);
        return;
      }
      this.absorb(answer.body as Frame, recovering, from);
    }
  }

  async drop(random: () => number): Promise<void> {
    this.generation += 1;
    this.abort?.abort();
    if (random() < 0.5 && this.session !== '') await pollClose(this.base, this.session).catch(() => undefined);
  }

  async reconnect(): Promise<void> {
    this.generation += 1;
    this.abort?.abort();
    await this.open();
  }

  async stop(): Promise<void> {
    this.generation += 1;
    this.abort?.abort();
    if (this.session !== '') await pollClose(this.base, this.session).catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------

interface Drop {
  readonly client: number;
  readonly at: number;
  readonly until: number;
}

/**
 * Drop windows per client, in publication numbers. With `forceLoss`, each
 * client's first window is long enough to exceed the history.
 */
function schedule(random: () => number, total: number, historySize: number, forceLoss: boolean): Drop[] {
  const drops: Drop[] = [];
  for (let client = 0; client < CLIENTS; client++) {
    let cursor = randomInt(random, 5, 40);
    for (let k = 0; cursor < total - 10; k++) {
      const length = forceLoss && k === 0 ? randomInt(random, 3 * historySize, 5 * historySize) : randomInt(random, 0, 30);
      const until = Math.min(cursor + length, total);
      drops.push({ client, at: cursor, until });
      cursor = until + randomInt(random, 5, 80);
    }
  }
  return drops;
}

/**
 * Checks one client's history: strictly the stream 1..total, except gaps
 * announced by `recovered: false` that history really could not cover.
 */
function verify(client: StressClient, total: number, historySize: number, seed: number): void {
  const where = `${client.name} (seed ${seed}, ${REPRO})`;
  assert.deepEqual(client.problems, [], `${where}: protocol problems`);
  for (const r of client.received) assert.equal(r.n, r.offset, `${where}: data n=${String(r.n)} at offset ${r.offset}`);
  const jumps = new Map<number, number>();
  for (const r of client.resubscribes) {
    assert.equal(r.from, r.own, `${where}: recovered from ${r.from} but had processed ${r.own}`);
    if (r.result['recovered'] === true) continue;
    const missed = (r.result['offset'] as number) - r.from;
    assert.ok(
      missed > historySize,
      `${where}: recovered:false although only ${missed} publications were missed (historySize ${historySize}): ${JSON.stringify(r)}`,
    );
    jumps.set(r.from, r.result['offset'] as number);
  }
  let position = 0;
  for (const [index, r] of client.received.entries()) {
    let expected = position + 1;
    let next = jumps.get(position);
    while (r.offset !== expected && next !== undefined) {
      position = next;
      expected = position + 1;
      next = jumps.get(position);
    }
    if (r.offset !== expected) {
      const around = client.received.slice(Math.max(0, index - 3), index + 3).map((x) => x.offset);
      assert.fail(
        `${where}: offset ${r.offset} after ${position} (${r.offset <= position ? 'duplicate/out of order' : 'silent gap'}); ` +
          `around: ${around.join(',')}; resubscribes: ${JSON.stringify(client.resubscribes.map((x) => [x.from, x.result['offset'], x.result['recovered']]))}; log: ${client.log.slice(-12).join(' | ')}`,
      );
    }
    position = r.offset;
  }
  assert.equal(client.lastOffset, total, `${where}: did not reach the end of the stream`);
}

describe('recovery stress', { timeout: 120000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald({
      channels: {
        namespaces: [
          { name: 'stress', historySize: LARGE_HISTORY, presence: false },
          { name: 'tiny', historySize: TINY_HISTORY, presence: false },
        ],
      },
      limits: { inboundRatePerSecond: 100000, inboundBurst: 100000, inboundHardPerSecond: 1000000 },
      longPoll: { pollTimeoutMs: 1000, sessionTimeoutMs: 3000 },
    });
  });
  after(async () => {
    await h.close();
  });

  async function makeClient(transport: Transport, name: string, channel: string): Promise<StressClient> {
    const token = await h.token(name);
    switch (transport) {
      case 'websocket':
        return new WsStressClient(name, channel, h.wsUrl, token);
      case 'sse': {
        const url = new URL('/connection/sse', h.url);
        url.searchParams.set('token', token);
        url.searchParams.set('channel', channel);
        return new SseStressClient(name, channel, url.toString());
      }
      case 'long-poll':
        return new PollStressClient(name, channel, h.url, token);
    }
  }

  async function run(transport: Transport, tiny: boolean, salt: number): Promise<void> {
    const seed = (SEED + salt) >>> 0;
    const random = seededRandom(seed);
    const total = tiny ? 240 : 450;
    const historySize = tiny ? TINY_HISTORY : LARGE_HISTORY;
    const channel = `${tiny ? 'tiny' : 'stress'}:${transport}-${seed}`;
    const clients: StressClient[] = [];
    for (let i = 0; i < CLIENTS; i++) clients.push(await makeClient(transport, `${transport}-${i}`, channel));
    try {
      await Promise.all(clients.map((c) => c.start()));
      const drops = schedule(random, total, historySize, tiny);
      const actionRandom = seededRandom(seed ^ 0x5bd1e995);
      for (let n = 1; n <= total; n++) {
        for (const d of drops) {
          const client = clients[d.client] as StressClient;
          if (d.at === n) client.enqueue(`drop@${n}`, () => client.drop(actionRandom));
          if (d.until === n) client.enqueue(`reconnect@${n}`, () => client.reconnect());
        }
        const answer = await h.api('publish', { channel, data: { n } });
        assert.equal(answer.status, 200, `publish ${n}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body.offset, n, 'API publish offsets are contiguous');
        if (random() < 0.3) await sleep(randomInt(random, 1, 4));
      }
      await waitUntil(() => clients.every((c) => c.idle), {
        timeoutMs: 30000,
        label: 'clients to finish reconnecting',
        describe: () => clients.map((c) => `${c.name}: ${c.log.slice(-3).join(' | ')} problems=${c.problems.join(';')}`).join('\n'),
      });
      await waitUntil(() => clients.every((c) => c.lastOffset >= total || c.problems.length > 0), {
        timeoutMs: 30000,
        label: `every client to reach offset ${total} (${REPRO})`,
        describe: () => clients.map((c) => `${c.name}: lastOffset=${c.lastOffset} problems=${c.problems.join(';')}`).join('\n'),
      });
      await sleep(100); // let any duplicate that would follow arrive
    } finally {
      await Promise.all(clients.map((c) => c.stop()));
    }
    for (const client of clients) verify(client, total, historySize, seed);
    const resubscribes = clients.flatMap((c) => c.resubscribes);
    const lost = resubscribes.filter((r) => r.result['recovered'] !== true).length;
    console.log(`${transport} ${tiny ? 'tiny history' : 'large history'} seed=${seed}: ${resubscribes.length} resubscribes, ${lost} recovered:false`);
    assert.ok(resubscribes.length >= CLIENTS, 'every client reconnected at least once');
    if (tiny) {
      for (const client of clients) {
        assert.ok(
          client.resubscribes.some((r) => r.result['recovered'] === false),
          `${client.name} (${REPRO}): a drop of more than historySize publications must answer recovered:false`,
        );
      }
    } else {
      assert.equal(lost, 0, `history (${LARGE_HISTORY}) always covered the gap, so every recovery must succeed (${REPRO})`);
    }
  }

  const transports: Transport[] = ['websocket', 'sse', 'long-poll'];
  for (const [index, transport] of transports.entries()) {
    test(`${transport}: ${CLIENTS} clients dropped at random points recover every publication exactly once, in order`, async () => {
      await run(transport, false, index * 2);
    });
    test(`${transport}: with a tiny history, recovered:false is announced and there is no silent gap`, async () => {
      await run(transport, true, index * 2 + 1);
    });
  }
});
