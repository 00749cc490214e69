/**
 * Clients that follow docs/protocol.md's recovery rules, on each transport,
 * and a numbered publisher, for the Redis engine suites:
 *
 * - a follower keeps its position (epoch from the subscribe answer, offset of
 *   the last publication) and, on any reconnect code (3000–3499, or a dropped
 *   connection), comes back (to whichever node its `targets()` lists first,
 *   rotating when one fails) and resubscribes with `recover: true` and that
 *   position: WebSocket with a new socket, SSE with `last_event_id`, long
 *   polling with a new session opened with the cursor;
 * - on SSE and long polling the server resynchronizes a live subscription
 *   itself (after a gap or a stream reset) and sends `subscribed` with
 *   `was_recovering: true` from the follower's position; an `unsubscribed`
 *   push there is a problem (the server no longer asks the client to act);
 * - it records every subscribe answer and publication (`events`) and any
 *   protocol problem it sees (a publication before the subscribe answer, an
 *   offset that is not the next one, `recovered: true` in another epoch);
 * - `verify` then checks the guarantee of the protocol against the
 *   publisher's acknowledged (HTTP 200) publications: each arrives exactly
 *   once, in order, at the position it was acknowledged with, unless the
 *   client was told `recovered: false` in between (never a silent gap).
 */
import WebSocket from 'ws';
import { SseParser, type Frame } from '../helpers/rt-clients.ts';
import { sleep, waitUntil, withTimeout } from '../helpers/rt-util.ts';
import { callApi, type Target, type Tokens } from './harness.ts';

export type FollowerEvent =
  | {
      readonly kind: 'sub';
      readonly at: number;
      readonly node: string;
      readonly epoch: string;
      readonly offset: number;
      readonly recovering: boolean;
      readonly recovered: boolean;
    }
  | { readonly kind: 'pub'; readonly at: number; readonly node: string; readonly n: number | undefined; readonly epoch: string; readonly offset: number }
  | { readonly kind: 'reset'; readonly at: number; readonly node: string; readonly code: number; readonly how: string }
  | { readonly kind: 'error'; readonly at: number; readonly node: string; readonly what: string };

/** What `verify` reads of a client: its name, the problems it saw, its events, and n → index in `events` of each publication. */
export interface Followed {
  readonly name: string;
  readonly problems: readonly string[];
  readonly events: readonly FollowerEvent[];
  readonly received: ReadonlyMap<number, number>;
}

export interface FollowerOptions {
  readonly name: string;
  readonly channel: string;
  readonly tokens: Tokens;
  readonly user?: string;
  /** Nodes to (re)connect to; the first is tried first, failures rotate through the list. */
  readonly targets: () => readonly Target[];
}

const OPEN_TIMEOUT_MS = 15000;

export abstract class Follower {
  readonly name: string;
  readonly channel: string;
  readonly events: FollowerEvent[] = [];
  readonly problems: string[] = [];
  /** n → index in `events` of its publication. */
  readonly received = new Map<number, number>();
  epoch = '';
  offset = 0;
  hasPosition = false;
  subscribed = false;
  stopped = false;
  /** Successful (re)connections. */
  connections = 0;
  /** Node of the current connection. */
  node = '';
  protected generation = 0;
  protected token = '';
  readonly #options: FollowerOptions;
  #reconnecting = false;
  /** A reconnect asked for (by the current connection) while one was being established. */
  #again: string | undefined;
  #failures = 0;
  #rotation = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(options: FollowerOptions) {
    this.#options = options;
    this.name = options.name;
    this.channel = options.channel;
  }

  abstract readonly kind: 'websocket' | 'sse' | 'long-poll';

  /** Establishes the connection and the subscription on `target`; throws when that fails. */
  protected abstract open(target: Target, generation: number): Promise<void>;
  /** Drops the current connection without notifying anyone. */
  protected abstract drop(): void;

  /** First connection (to the first target); fails the test when it cannot subscribe. */
  async start(): Promise<void> {
    this.token = await this.#options.tokens.sign(this.#options.user ?? this.name);
    const target = this.#options.targets()[0]!;
    this.#reconnecting = true;
    try {
      await this.open(target, ++this.generation);
    } finally {
      this.#reconnecting = false;
    }
    this.#established(target);
  }

  #established(target: Target): void {
    this.node = target.name;
    this.connections++;
    this.#failures = 0;
    this.#reconnecting = false;
    const again = this.#again;
    this.#again = undefined;
    if (again !== undefined) this.reconnect(again);
  }

  /** Drops the connection as a network failure would and reconnects (with recovery). */
  cut(): void {
    this.reconnect('cut by the test');
  }

  /** Reconnects with backoff until established or stopped. Idempotent while in progress. */
  reconnect(reason: string): void {
    if (this.stopped) return;
    if (this.#reconnecting) {
      this.#again = reason;
      return;
    }
    this.#reconnecting = true;
    this.subscribed = false;
    this.generation++;
    this.drop();
    this.events.push({ kind: 'error', at: Date.now(), node: this.node, what: `reconnect: ${reason}` });
    const attempt = async (): Promise<void> => {
      this.#timer = undefined;
      if (this.stopped) return;
      const targets = this.#options.targets();
      const target = targets[this.#rotation % targets.length]!;
      const generation = ++this.generation;
      this.#again = undefined;
      try {
        await this.open(target, generation);
        if (generation !== this.generation) return;
        this.#established(target);
      } catch (error) {
        if (this.stopped) return;
        this.events.push({ kind: 'error', at: Date.now(), node: target.name, what: `open failed: ${(error as Error).message}` });
        this.generation++;
        this.drop();
        this.#failures++;
        this.#rotation++;
        this.#timer = setTimeout(() => void attempt(), Math.min(100 * this.#failures, 1000) + Math.random() * 100);
      }
    };
    this.#timer = setTimeout(() => void attempt(), 50 + Math.random() * 100);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.#timer);
    this.generation++;
    this.drop();
  }

  /** A subscribe answer (reply, or `subscribed` push). */
  protected onSubscribed(result: Frame, node: string, from: { epoch: string; offset: number } | undefined): void {
    const recovering = result['was_recovering'] === true;
    const recovered = result['recovered'] === true;
    if (recovering !== (from !== undefined)) this.problems.push(`was_recovering=${recovering} but the client ${from === undefined ? 'did not recover' : 'recovered'}`);
    if (recovered) {
      if (from === undefined || result['epoch'] !== from.epoch) this.problems.push(`recovered:true in epoch ${result['epoch']} for position ${JSON.stringify(from)}`);
      else if ((result['offset'] as number) < from.offset) this.problems.push(`recovered:true with the stream at ${result['offset']} behind the position ${from.offset}`);
      this.epoch = from?.epoch ?? this.epoch;
      this.offset = from?.offset ?? this.offset;
    } else {
      this.epoch = result['epoch'] as string;
      this.offset = result['offset'] as number;
    }
    this.hasPosition = result['recoverable'] === true;
    this.subscribed = true;
    this.events.push({ kind: 'sub', at: Date.now(), node, epoch: this.epoch, offset: this.offset, recovering, recovered });
  }

  protected onPublication(frame: Frame, node: string): void {
    if (frame['channel'] !== this.channel) return;
    const offset = frame['offset'] as number;
    const n = (frame['data'] as Frame | undefined)?.['n'] as number | undefined;
    if (!this.subscribed) this.problems.push(`publication ${offset} (n=${n}) outside a subscription`);
    if (this.hasPosition && offset !== this.offset + 1) this.problems.push(`offset ${offset} after ${this.offset} (gap or duplicate) on ${node}`);
    this.offset = offset;
    if (n !== undefined && !this.received.has(n)) this.received.set(n, this.events.length);
    else if (n !== undefined) this.problems.push(`n=${n} delivered twice`);
    this.events.push({ kind: 'pub', at: Date.now(), node, n, epoch: this.epoch, offset });
  }

  protected onReset(code: number, how: string, node: string): void {
    this.subscribed = false;
    this.events.push({ kind: 'reset', at: Date.now(), node, code, how });
  }

  /** SSE and long polling: a `subscribed` push for the live subscription (the server resynchronized it from our position). */
  protected onServerResync(frame: Frame, node: string): void {
    if (frame['was_recovering'] !== true) this.problems.push(`subscribed push for a live subscription without was_recovering: ${JSON.stringify(frame)}`);
    const from = this.position();
    this.onReset(0, 'server resync', node);
    this.onSubscribed(frame, node, from);
  }

  /** The position to recover from, when the client holds one. */
  protected position(): { epoch: string; offset: number } | undefined {
    return this.hasPosition ? { epoch: this.epoch, offset: this.offset } : undefined;
  }

  /** Waits until publication `n` has arrived (or, given its acknowledgement, a recovered:false made it history: `reached`). */
  async waitFor(marker: number | Ack, timeoutMs = 15000): Promise<void> {
    const n = typeof marker === 'number' ? marker : marker.n;
    await waitUntil(() => (typeof marker === 'number' ? this.received.has(n) : reached(this, marker)), {
      timeoutMs,
      label: `${this.name} (${this.kind}) to receive n=${n}`,
      describe: () => `last events: ${JSON.stringify(this.events.slice(-6))}; problems: ${this.problems.slice(0, 5).join('; ')}`,
    });
  }

  /** Waits until the follower is subscribed (after a reset). */
  async waitSubscribed(timeoutMs = 15000): Promise<void> {
    await waitUntil(() => this.subscribed, { timeoutMs, label: `${this.name} subscribed`, describe: () => JSON.stringify(this.events.slice(-6)) });
  }

  /** Subscribe answers after the first one. */
  get resubscribes(): Extract<FollowerEvent, { kind: 'sub' }>[] {
    return this.events.filter((e): e is Extract<FollowerEvent, { kind: 'sub' }> => e.kind === 'sub' && e.recovering);
  }

  /** Counts for reports. */
  summary(): string {
    const resets = new Map<string, number>();
    for (const e of this.events) if (e.kind === 'reset') resets.set(`${e.how} ${e.code}`, (resets.get(`${e.how} ${e.code}`) ?? 0) + 1);
    const subs = this.resubscribes;
    return `${this.name}(${this.kind}): ${this.received.size} publications, ${this.connections} connections, resubscribes ${subs.length} (recovered:true ${subs.filter((s) => s.recovered).length}, recovered:false ${subs.filter((s) => !s.recovered).length}), resets {${[...resets].map(([k, v]) => `${k}: ${v}`).join(', ')}}`;
  }
}

/** Disconnect codes after which a client reconnects: 3000–3499, and transport-level drops. */
function reconnects(code: number): boolean {
  return (code >= 3000 && code < 3500) || code < 3000;
}

// ---------------------------------------------------------------------------

export class WsFollower extends Follower {
  readonly kind = 'websocket';
  #ws: WebSocket | undefined;
  #nextId = 1;

  protected drop(): void {
    this.#ws?.terminate();
    this.#ws = undefined;
  }

  protected async open(target: Target, generation: number): Promise<void> {
    const ws = new WebSocket(target.wsUrl);
    this.#ws = ws;
    const replies = new Map<number, (frame: Frame) => void>();
    let established = false;
    const closed = new Promise<never>((_, reject) => {
      ws.on('close', (code) => {
        reject(new Error(`closed with ${code} before subscribing`));
        if (generation !== this.generation || !established) return;
        this.onReset(code, 'close', target.name);
        if (this.stopped) return;
        if (reconnects(code)) this.reconnect(`close ${code}`);
        else this.problems.push(`closed with ${code} (no reconnect)`);
      });
    });
    closed.catch(() => {});
    ws.on('error', () => {});
    ws.on('message', (raw) => {
      if (generation !== this.generation) return;
      const frame = JSON.parse(String(raw)) as Frame;
      if (typeof frame['id'] === 'number') {
        const handler = replies.get(frame['id']);
        replies.delete(frame['id']);
        handler?.(frame);
      } else if (frame['push'] === 'publication') {
        this.onPublication(frame, target.name);
      }
    });
    await Promise.race([
      new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('unexpected-response', (_request, response) => reject(new Error(`upgrade answered HTTP ${response.statusCode}`)));
        ws.once('error', reject);
      }),
      closed,
    ]);
    // Reply handlers run inside the message handler: publications that follow
    // the subscribe reply in the same chunk see its effect.
    const call = (method: string, params: unknown, onReply?: (frame: Frame) => void): Promise<Frame> => {
      const id = this.#nextId++;
      const answer = new Promise<Frame>((resolve) => {
        replies.set(id, (frame) => {
          onReply?.(frame);
          resolve(frame);
        });
      });
      ws.send(JSON.stringify({ id, method, params }));
      return withTimeout(Promise.race([answer, closed]), OPEN_TIMEOUT_MS, `${method} reply from ${target.name}`);
    };
    const connected = await call('connect', { token: this.token });
    if (connected['error'] !== undefined) throw new Error(`connect: ${JSON.stringify(connected['error'])}`);
    const from = this.position();
    const params = from === undefined ? { channel: this.channel } : { channel: this.channel, recover: true, ...from };
    const reply = await call('subscribe', params, (frame) => {
      if (frame['error'] === undefined && generation === this.generation) {
        established = true;
        this.onSubscribed(frame['result'] as Frame, target.name, from);
      }
    });
    if (reply['error'] !== undefined) throw new Error(`subscribe: ${JSON.stringify(reply['error'])}`);
  }

  /** Sends one command on the current connection (for tests that need a reply). */
  async request(method: string, params: unknown): Promise<Frame> {
    const ws = this.#ws;
    if (ws === undefined) throw new Error('not connected');
    const id = 100000 + this.#nextId++;
    return withTimeout(
      new Promise<Frame>((resolve) => {
        const listener = (raw: WebSocket.RawData) => {
          const frame = JSON.parse(String(raw)) as Frame;
          if (frame['id'] === id) {
            ws.off('message', listener);
            resolve(frame);
          }
        };
        ws.on('message', listener);
        ws.send(JSON.stringify({ id, method, params }));
      }),
      OPEN_TIMEOUT_MS,
      `${method} reply`,
    );
  }
}

// ---------------------------------------------------------------------------

export class SseFollower extends Follower {
  readonly kind = 'sse';
  #controller: AbortController | undefined;

  protected drop(): void {
    this.#controller?.abort();
    this.#controller = undefined;
  }

  protected async open(target: Target, generation: number): Promise<void> {
    const url = new URL('/connection/sse', target.url);
    url.searchParams.set('token', this.token);
    const from = this.position();
    if (from === undefined) url.searchParams.append('channel', this.channel);
    else url.searchParams.set('last_event_id', `${this.channel}|${from.epoch}|${from.offset}`);
    const controller = new AbortController();
    this.#controller = controller;
    const response = await fetch(url, { headers: { accept: 'text/event-stream' }, signal: controller.signal });
    if (response.status !== 200 || response.body === null) {
      await response.text().catch(() => undefined);
      throw new Error(`SSE answered HTTP ${response.status}`);
    }
    let session = '';
    let established = false;
    let resolveEstablished!: () => void;
    let rejectEstablished!: (error: Error) => void;
    const establishedPromise = new Promise<void>((resolve, reject) => {
      resolveEstablished = resolve;
      rejectEstablished = reject;
    });
    let lastDisconnect: Frame | undefined;
    const parser = new SseParser((event) => {
      if (generation !== this.generation || event.frame === undefined) return;
      const frame = event.frame;
      switch (frame['push']) {
        case 'connected':
          session = frame['session'] as string;
          break;
        case 'subscribed':
          if (frame['channel'] !== this.channel) break;
          if (established) this.onServerResync(frame, target.name);
          else {
            this.onSubscribed(frame, target.name, from);
            established = true;
            resolveEstablished();
          }
          break;
        case 'publication':
          this.onPublication(frame, target.name);
          break;
        case 'unsubscribed':
          if (frame['channel'] === this.channel) this.problems.push(`unsubscribed push with ${frame['code']} on SSE`);
          break;
        case 'disconnect':
          lastDisconnect = frame;
          this.onReset(frame['code'] as number, 'disconnect', target.name);
          break;
        case 'ping':
          void fetch(`${target.url}/connection/command`, {
            method: 'POST',
            headers: { 'content-type': 'application/json', 'herald-session': session },
            body: JSON.stringify({ method: 'pong' }),
            signal: AbortSignal.timeout(5000),
          }).then((r) => r.body?.cancel(), () => undefined);
          break;
        default:
          break;
      }
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    void (async () => {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (value !== undefined) parser.feed(decoder.decode(value, { stream: !done }));
          if (done) break;
        }
      } catch {
        // aborted or cut
      }
      const why = lastDisconnect === undefined ? 'stream ended' : `disconnect ${lastDisconnect['code']}`;
      rejectEstablished(new Error(`${why} before subscribing`));
      if (generation !== this.generation || this.stopped || !established) return;
      if (lastDisconnect === undefined) this.onReset(0, 'stream end', target.name);
      if (lastDisconnect !== undefined && lastDisconnect['reconnect'] !== true) this.problems.push(`disconnected with ${lastDisconnect['code']} (no reconnect)`);
      else this.reconnect(why);
    })();
    await withTimeout(establishedPromise, OPEN_TIMEOUT_MS, `SSE subscribed on ${target.name}`);
  }
}

// ---------------------------------------------------------------------------

export class LongPollFollower extends Follower {
  readonly kind = 'long-poll';
  #controller: AbortController | undefined;

  protected drop(): void {
    this.#controller?.abort();
    this.#controller = undefined;
  }

  protected async open(target: Target, generation: number): Promise<void> {
    const controller = new AbortController();
    this.#controller = controller;
    const from = this.position();
    const body = from === undefined ? { token: this.token, channels: [this.channel] } : { token: this.token, cursor: `${this.channel}|${from.epoch}|${from.offset}` };
    const post = async (path: string, payload: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> => {
      const response = await fetch(`${target.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body: JSON.stringify(payload),
        signal: AbortSignal.any([controller.signal, AbortSignal.timeout(60000)]),
      });
      return { status: response.status, body: await response.json().catch(() => undefined) };
    };
    const opened = await post('/connection/poll/open', body);
    if (opened.status !== 200) throw new Error(`poll/open answered HTTP ${opened.status} ${JSON.stringify(opened.body)}`);
    const session = opened.body.session as string;
    let seq = opened.body.seq as number;
    let established = false;
    let disconnect: Frame | undefined;
    const handle = (messages: Frame[]): void => {
      for (const frame of messages) {
        if (generation !== this.generation) return;
        switch (frame['push']) {
          case 'subscribed':
            if (frame['channel'] !== this.channel) break;
            if (established) this.onServerResync(frame, target.name);
            else {
              this.onSubscribed(frame, target.name, from);
              established = true;
            }
            break;
          case 'publication':
            this.onPublication(frame, target.name);
            break;
          case 'unsubscribed':
            if (frame['channel'] === this.channel) this.problems.push(`unsubscribed push with ${frame['code']} on long polling`);
            break;
          case 'disconnect':
            disconnect = frame;
            this.onReset(frame['code'] as number, 'disconnect', target.name);
            break;
          default:
            break;
        }
      }
    };
    const pollOnce = async (): Promise<boolean> => {
      const answer = await post('/connection/poll', { seq }, { 'herald-session': session });
      if (answer.status !== 200) throw new Error(`poll answered HTTP ${answer.status}`);
      if (typeof answer.body.seq === 'number') seq = answer.body.seq;
      handle(answer.body.messages as Frame[]);
      return disconnect === undefined;
    };
    handle(opened.body.messages as Frame[]);
    const deadline = Date.now() + OPEN_TIMEOUT_MS;
    while (!established) {
      if (disconnect !== undefined) throw new Error(`disconnect ${disconnect['code']} before subscribing`);
      if (Date.now() > deadline) throw new Error('no subscribed message');
      await pollOnce();
    }
    void (async () => {
      try {
        while (generation === this.generation && !this.stopped && (await pollOnce()));
      } catch (error) {
        if (generation !== this.generation || this.stopped) return;
        this.onReset(0, `poll failed: ${(error as Error).message}`, target.name);
        this.reconnect('poll failed');
        return;
      }
      if (generation !== this.generation || this.stopped) return;
      if (disconnect !== undefined && disconnect['reconnect'] !== true) this.problems.push(`disconnected with ${disconnect['code']} (no reconnect)`);
      else this.reconnect(`disconnect ${disconnect?.['code']}`);
    })();
  }
}

// ---------------------------------------------------------------------------

export interface Ack {
  readonly n: number;
  readonly epoch: string;
  readonly offset: number;
  readonly node: string;
}

export interface Attempt {
  readonly n: number;
  readonly node: string;
  readonly status: number;
  readonly startedAt: number;
  readonly endedAt: number;
  readonly error?: string | undefined;
}

/**
 * Publishes `{n}` with n = 1, 2, … through the server API, one at a time
 * (each waits for its answer), round-robin over `targets()`. Only HTTP 200
 * answers count as acknowledged.
 */
export class Publisher {
  readonly channel: string;
  readonly acked: Ack[] = [];
  readonly attempts: Attempt[] = [];
  readonly #targets: () => readonly Target[];
  readonly #intervalMs: number;
  readonly #timeoutMs: number;
  #n = 0;
  #running: Promise<void> | undefined;
  #stopped = false;

  constructor(channel: string, targets: () => readonly Target[], options: { intervalMs?: number; timeoutMs?: number } = {}) {
    this.channel = channel;
    this.#targets = targets;
    this.#intervalMs = options.intervalMs ?? 20;
    this.#timeoutMs = options.timeoutMs ?? 10000;
  }

  async publishOnce(target?: Target): Promise<Attempt> {
    const n = ++this.#n;
    const targets = this.#targets();
    const to = target ?? targets[n % targets.length]!;
    const startedAt = Date.now();
    const answer = await callApi(to, 'publish', { channel: this.channel, data: { n } }, this.#timeoutMs);
    const attempt: Attempt = { n, node: to.name, status: answer.status, startedAt, endedAt: Date.now(), error: answer.error ?? (answer.status === 200 ? undefined : JSON.stringify(answer.body)) };
    this.attempts.push(attempt);
    if (answer.status === 200) this.acked.push({ n, epoch: answer.body.epoch, offset: answer.body.offset, node: to.name });
    return attempt;
  }

  start(): void {
    this.#stopped = false;
    this.#running = (async () => {
      while (!this.#stopped) {
        await this.publishOnce();
        await sleep(this.#intervalMs);
      }
    })();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#running;
  }

  /** Publishes until one is acknowledged (the end marker); returns it. */
  async final(timeoutMs = 20000): Promise<Ack> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const attempt = await this.publishOnce();
      if (attempt.status === 200) return this.acked[this.acked.length - 1]!;
      if (Date.now() > deadline) throw new Error(`no publish acknowledged within ${timeoutMs} ms; last: ${JSON.stringify(attempt)}`);
      await sleep(100);
    }
  }

  statusCounts(from = 0, to = Number.POSITIVE_INFINITY): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const a of this.attempts) if (a.startedAt >= from && a.endedAt <= to) counts[String(a.status)] = (counts[String(a.status)] ?? 0) + 1;
    return counts;
  }
}

/**
 * Whether a client is past an acknowledged publication: it received it, or a
 * `recovered: false` put its position at or beyond it (the client reloads
 * its state and never gets it as a publication: the protocol's answer).
 */
export function reached(follower: Followed, ack: Ack): boolean {
  if (follower.received.has(ack.n)) return true;
  return follower.events.some((e) => e.kind === 'sub' && e.recovering && !e.recovered && e.epoch === ack.epoch && e.offset >= ack.offset);
}

/**
 * The delivery guarantee for one follower: every acknowledged publication
 * exactly once, in order, at its acknowledged position; a missing one only
 * behind an explicit `recovered: false` (or published before the follower
 * first subscribed). Returns the problems found (empty: all good).
 */
export function verify(follower: Followed, acked: readonly Ack[]): string[] {
  const problems = follower.problems.map((p) => `${follower.name}: ${p}`);
  const ackByN = new Map(acked.map((a) => [a.n, a]));
  let lastAcked = 0;
  for (const event of follower.events) {
    if (event.kind !== 'pub' || event.n === undefined) continue;
    const ack = ackByN.get(event.n);
    if (ack === undefined) continue; // not acknowledged (503 or timed out): may or may not arrive
    if (ack.epoch !== event.epoch || ack.offset !== event.offset) {
      problems.push(`${follower.name}: wrong history: n=${event.n} acknowledged at ${ack.epoch}:${ack.offset}, delivered as ${event.epoch}:${event.offset}`);
    }
    if (event.n <= lastAcked) problems.push(`${follower.name}: n=${event.n} after n=${lastAcked} (order)`);
    lastAcked = Math.max(lastAcked, event.n);
  }
  const first = follower.events.find((e): e is Extract<FollowerEvent, { kind: 'sub' }> => e.kind === 'sub');
  const losses = follower.events.flatMap((e, i) => (e.kind === 'sub' && e.recovering && !e.recovered ? [i] : []));
  const receivedAcked = acked.filter((a) => follower.received.has(a.n));
  const firstInEpoch = first === undefined ? undefined : acked.find((a) => a.epoch === first.epoch);
  for (const ack of acked) {
    if (follower.received.has(ack.n)) continue;
    let prev: Ack | undefined;
    let next: Ack | undefined;
    for (const r of receivedAcked) {
      if (r.n < ack.n) prev = r;
      else if (next === undefined) next = r;
    }
    const lo = prev === undefined ? -1 : follower.received.get(prev.n)!;
    const hi = next === undefined ? Number.POSITIVE_INFINITY : follower.received.get(next.n)!;
    if (losses.some((i) => i > lo && i < hi)) continue; // announced by recovered:false
    if (prev === undefined && first !== undefined) {
      if (ack.epoch === first.epoch && ack.offset <= first.offset) continue; // before the first subscription
      if (ack.epoch !== first.epoch && firstInEpoch !== undefined && ack.n < firstInEpoch.n) continue; // an earlier epoch
    }
    problems.push(`${follower.name}: acknowledged n=${ack.n} (${ack.epoch}:${ack.offset}) never arrived and no recovered:false explains it`);
  }
  return problems;
}
