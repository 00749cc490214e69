/**
 * HTTP long polling: a per-session queue of numbered frames. A poll
 * acknowledges up to the `seq` it sends and receives everything newer, at
 * once or when something arrives (or empty at the poll timeout), so a lost
 * answer is simply sent again. The answer's `cursor` is the position vector
 * after its last frame, for reopening a lost session with recovery.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { encodePush } from '@herald/protocol';
import type { EncodedBatch } from '../core/encoded-batch.ts';
import { EncodedFrame } from '../core/encoded-frame.ts';
import type { Transport } from '../core/transport.ts';
import type { Node } from '../core/node.ts';
import type { Client } from '../core/client.ts';
import { bearer } from './sse.ts';
import {
  queryFlag,
  apiErrorAnswer,
  connectHttpClient,
  openGate,
  SESSION_HEADER,
  subscribeHttpClient,
  type ConnectionGate,
  type Releasable,
  type SessionRegistry,
} from './http-connection.ts';
import { answerError, answerJson, jsonBody, jsonBodyThen, type Front } from '../edge/front.ts';
import { dropClearedTimer } from './idle-socket-timer.ts';

export const POLL_OPEN_PATH = '/connection/poll/open';
export const POLL_PATH = '/connection/poll';

interface Entry {
  readonly seq: number;
  readonly text: string;
  readonly cursor: string | undefined;
}

/** Where a poll's answer goes: the HTTP reply, or back to the worker that received a forwarded poll. */
export interface PollReply {
  /** Called at most once, with the JSON answer. */
  send(body: string): void;
  /**
   * True once the request went away unanswered. Asked by the sweep and
   * before answering, instead of a listener per held poll.
   */
  gone(): boolean;
}

/**
 * What the sessions of one listener share: their settings, the session map
 * and the sweep over it. A session's transport points here rather than
 * holding its own copies and callbacks.
 */
export class PollSessions {
  /** Session secret → transport; a transport outlives its client until its disconnect frame is polled. */
  readonly polling = new Map<string, LongPollTransport>();
  readonly pollTimeoutMs: number;
  readonly sessionTimeoutMs: number;
  readonly closeGraceMs: number;

  constructor(pollTimeoutMs: number, sessionTimeoutMs: number, closeGraceMs: number) {
    this.pollTimeoutMs = pollTimeoutMs;
    this.sessionTimeoutMs = sessionTimeoutMs;
    this.closeGraceMs = closeGraceMs;
  }

  /** Runs what is due for every session (held polls' timeouts, polls gone, expiries, close graces). */
  sweep(now: number): void {
    for (const transport of this.polling.values()) transport.expire(now);
  }
}

/**
 * Transports with frames written in the current task: one microtask answers
 * all their held polls after the burst of writes (a publication reaches
 * every subscriber in one synchronous burst), instead of one callback per
 * transport. A microtask, not setImmediate: under a steady stream of polls
 * libuv's poll phase runs for up to 48 rounds of 1024 socket events before
 * the check phase, and held polls then waited for it for more than a second.
 */
const toFlush = new Set<LongPollTransport>();

/**
 * A session's queue while nothing is queued (most of an idle session's
 * life): one shared, frozen empty list instead of an array and its element
 * store per session; `#push` makes a session's own list.
 */
const NO_ENTRIES: Entry[] = Object.freeze([]) as unknown as Entry[];

/**
 * Deadlines are kept in milliseconds since this module loaded, not since
 * the epoch: a small integer (a Smi) stays in its field, where a Date.now()
 * value (above 2^31) is a boxed number of its own per session. Smis reach
 * 2^30 ms, about 12 days of uptime; later values are boxed again, still
 * exact.
 */
const CLOCK_BASE = Date.now();
/** `Math.trunc` makes the difference a Smi (a subtraction of two boxed numbers gives a boxed one, which would box the field). */
const clock = (now: number = Date.now()): number => Math.trunc(now - CLOCK_BASE);
/**
 * The last cursor rendered and its JSON text: the answers of one publication
 * carry equal cursors (a channel's position), so one `JSON.stringify` serves
 * them all.
 */
let lastCursor = '';
let lastCursorJson = '""';
function cursorJson(cursor: string): string {
  if (cursor !== lastCursor) {
    lastCursorJson = JSON.stringify(cursor);
    lastCursor = cursor;
  }
  return lastCursorJson;
}
function flushAll(): void {
  for (const transport of toFlush) transport.flush();
  toFlush.clear();
}

export class LongPollTransport implements Transport {
  // Getters, not fields: nothing per connection.
  get kind(): 'long-poll' {
    return 'long-poll';
  }

  get tracksPositions(): boolean {
    return true;
  }
  readonly #shared: PollSessions;
  #queue: Entry[] = NO_ENTRIES;
  #bytes = 0;
  #seq = 0;
  #ackedCursor = '';
  /** The held poll, if any. */
  #waiter: PollReply | undefined;
  /**
   * A deadline instead of timers (`clock()` ms; 0 = none), checked by
   * `expire`, which the sweep calls for every session about every second:
   * no timer per poll, nor per session. One field for two deadlines, never
   * both set: with a poll held, the time it is answered empty; with none,
   * the time the session
   * expires (its client is disconnected `session_expired`), or, once
   * closed, is over (its disconnect frame was not fetched within the close
   * grace). A held poll that went away is noticed by the sweep too (or
   * when something is to be answered), not by a listener per poll.
   */
  #deadline = 0;
  #closed = false;
  #finished = false;
  /** Transport.onDrain: called at the next poll. */
  #drainListener: (() => void) | undefined;
  /** Resolves what `settled()` returned, once finished. */
  #onSettled: (() => void) | undefined;
  /** The session's client: disconnected when the session expires, closed when it is over. */
  client: Client | undefined;
  /** The session's secret in `PollSessions.polling` ('' until registered). */
  session = '';
  /** The connection's place under the caps, released when the client closes or the session is over. */
  readonly #place: Releasable;

  constructor(shared: PollSessions, place: Releasable) {
    this.#shared = shared;
    this.#place = place;
    this.#deadline = clock() + shared.sessionTimeoutMs;
  }

  write(frame: EncodedFrame, positions?: string): void {
    if (this.#closed) return;
    this.#push(frame.text, positions);
  }

  writeMany(batch: EncodedBatch, positions?: string): void {
    if (this.#closed) return;
    const frames = batch.frames;
    const last = frames.length - 1;
    for (let i = 0; i <= last; i++) this.#push(frames[i]!.text, i === last ? positions : undefined);
  }

  #push(text: string, cursor: string | undefined): void {
    const entry = { seq: ++this.#seq, text, cursor };
    if (this.#queue === NO_ENTRIES) this.#queue = [entry];
    else this.#queue.push(entry);
    this.#bytes += text.length;
    if (this.#waiter !== undefined) {
      // Answer after the current burst of writes, in one response.
      if (toFlush.size === 0) queueMicrotask(flushAll);
      toFlush.add(this);
    }
  }

  /** Answers the held poll with what is queued (after a burst of writes). */
  flush(): void {
    if (this.#waiter !== undefined && this.#queue.length > 0) this.#answerWaiter();
  }

  heartbeat(): void {}

  holdsRequest(): boolean {
    const waiter = this.#waiter;
    return waiter !== undefined && !waiter.gone();
  }

  bufferedBytes(): number {
    return this.#bytes;
  }

  onDrain(listener: () => void): void {
    if (!this.#closed) this.#drainListener = listener;
  }

  close(code: number, reason: string): void {
    // The client is closing: its place under the caps is free (idempotent).
    this.#place.release();
    if (this.#closed) return;
    const reconnect = code < 3500 || (code >= 4000 && code < 4500);
    this.#push(encodePush({ push: 'disconnect', code, reason, reconnect }), undefined);
    this.#closed = true;
    if (this.holdsRequest()) {
      // Answer now, not after the write burst: a drain must see this frame go out.
      this.#answerWaiter();
    } else {
      // Between two polls: the next poll fetches the disconnect frame, if it
      // comes within the close grace.
      this.#waiter = undefined;
      this.#deadline = clock() + this.#shared.closeGraceMs;
    }
  }

  /** Resolves once the session is over: its disconnect frame polled, or the close grace ran out. */
  settled(): Promise<void> {
    if (this.#finished) return Promise.resolve();
    return new Promise((resolve) => {
      const previous = this.#onSettled;
      this.#onSettled =
        previous === undefined
          ? resolve
          : () => {
              previous();
              resolve();
            };
    });
  }

  /** Everything queued, as the first answer of an open. */
  snapshot(): string {
    return this.#render();
  }

  /** Runs what is due at `now`: a held poll's timeout or departure, the session's expiry or the end of its close grace. */
  expire(now: number): void {
    const at = clock(now);
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      if (waiter.gone()) this.#answerWaiter();
      else if (at >= this.#deadline) this.#answerWaiter();
      return;
    }
    if (this.#deadline !== 0 && at >= this.#deadline) {
      this.#deadline = 0;
      if (this.#closed) this.#finish();
      else this.client?.disconnect('session_expired');
    }
  }

  poll(ack: number, reply: PollReply): void {
    this.#deadline = 0;
    this.#ackUpTo(ack);
    const previous = this.#waiter;
    if (previous !== undefined) {
      this.#waiter = undefined;
      previous.send(this.#render(true));
    }
    const drained = this.#drainListener;
    if (drained !== undefined && !this.#closed) {
      // The client took what it was sent: frames written now go out in this answer.
      this.#drainListener = undefined;
      drained();
    }
    if (this.#queue.length > 0 || this.#finished) {
      this.#send(reply);
      return;
    }
    this.#waiter = reply;
    this.#deadline = clock() + this.#shared.pollTimeoutMs;
  }

  /** Answers the held poll; one that went away ends the session if closed, else starts its expiry. */
  #answerWaiter(): void {
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    this.#waiter = undefined;
    if (!waiter.gone()) {
      this.#send(waiter);
      return;
    }
    // What it would have carried stays queued until a poll acknowledges it.
    if (this.#closed) this.#finish();
    else this.#armIdle();
  }

  #send(reply: PollReply): void {
    reply.send(this.#render());
    if (this.#closed) {
      // The disconnect frame is in this answer; the session is over.
      this.#finish();
      return;
    }
    this.#armIdle();
  }

  #render(empty = false): string {
    const entries = empty ? NO_ENTRIES : this.#queue;
    let cursor = this.#ackedCursor;
    let messages = '';
    for (let i = 0; i < entries.length; i++) {
      const entry = entries[i]!;
      if (entry.cursor !== undefined) cursor = entry.cursor;
      messages += i === 0 ? entry.text : ',' + entry.text;
    }
    const seq = entries.length > 0 ? entries[entries.length - 1]!.seq : this.#ackedSeq();
    return '{"seq":' + seq + ',"cursor":' + cursorJson(cursor) + ',"messages":[' + messages + ']}';
  }

  #ackedSeq(): number {
    return this.#queue.length > 0 ? this.#queue[0]!.seq - 1 : this.#seq;
  }

  #ackUpTo(ack: number): void {
    let drop = 0;
    while (drop < this.#queue.length && this.#queue[drop]!.seq <= ack) {
      const entry = this.#queue[drop]!;
      this.#bytes -= entry.text.length;
      if (entry.cursor !== undefined) this.#ackedCursor = entry.cursor;
      drop++;
    }
    if (drop === this.#queue.length) this.#queue = NO_ENTRIES;
    else if (drop > 0) this.#queue.splice(0, drop);
  }

  #armIdle(): void {
    this.#deadline = clock() + this.#shared.sessionTimeoutMs;
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#closed = true;
    this.#deadline = 0;
    this.#place.release();
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#waiter = undefined;
      if (!waiter.gone()) waiter.send(this.#render());
    }
    // The session is over: forget it, and close its client if it is still open.
    if (this.session !== '') this.#shared.polling.delete(this.session);
    this.client?.close(1006, 'session ended');
    const settled = this.#onSettled;
    this.#onSettled = undefined;
    settled?.();
  }
}

const OpenBody = Type.Object(
  {
    token: Type.Optional(Type.String({ maxLength: 16384 })),
    channels: Type.Optional(Type.Array(Type.String({ maxLength: 1024 }), { maxItems: 1024 })),
    cursor: Type.Optional(Type.String({ maxLength: 8192 })),
    batch: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

const PollBody = Type.Object({ seq: Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }) }, { additionalProperties: false });

const POLL_PREFIX = Buffer.from('{"seq":');
/** Longest `seq` read here: 15 digits stay below Number.MAX_SAFE_INTEGER (16 digits may not). */
const QUICK_DIGITS = 15;

/**
 * A poll body in its exact compact form, `{"seq":N}` (what the SDK and the
 * benchmarks send), read from its bytes: the value JSON.parse would give.
 * Anything else (spaces, other keys, a leading zero, a long number) is
 * undefined and goes through the full JSON reading.
 */
export function quickPollBody(body: Buffer): { seq: number } | undefined {
  const end = body.length - 1;
  const digits = end - POLL_PREFIX.length;
  if (digits < 1 || digits > QUICK_DIGITS || body[end] !== 0x7d) return undefined;
  for (let i = 0; i < POLL_PREFIX.length; i++) if (body[i] !== POLL_PREFIX[i]) return undefined;
  if (digits > 1 && body[POLL_PREFIX.length] === 0x30) return undefined;
  let seq = 0;
  for (let i = POLL_PREFIX.length; i < end; i++) {
    const digit = body[i]! - 0x30;
    if (digit < 0 || digit > 9) return undefined;
    seq = seq * 10 + digit;
  }
  return { seq };
}


/** A poll's answer as an HTTP response (one object per held poll, not a pair of closures). */
class HttpPollReply implements PollReply {
  readonly #response: ServerResponse;
  readonly #headers: readonly string[];

  constructor(response: ServerResponse, headers: readonly string[]) {
    this.#response = response;
    this.#headers = headers;
  }

  send(body: string): void {
    answerJson(this.#response, this.#headers, 200, body);
  }

  gone(): boolean {
    return this.#response.destroyed;
  }
}

export interface LongPollLimits {
  /** The body limit of the two routes (api.maxBodyBytes, as fastify's). */
  readonly bodyLimit: number;
}

/**
 * POST /connection/poll/open and /connection/poll, served by the front
 * (../edge/front.ts): a held poll keeps its request and response,
 * nothing of fastify's, and no timer (one sweep runs the deadlines of every
 * session).
 */
export function registerLongPoll(app: FastifyInstance, front: Front, node: Node, sessions: SessionRegistry, gate: ConnectionGate = openGate, limits: LongPollLimits): void {
  const { pollTimeoutMs, sessionTimeoutMs } = node.config.longPoll;
  const closeGraceMs = node.config.limits.closeGraceMs;
  const shared = new PollSessions(pollTimeoutMs, sessionTimeoutMs, closeGraceMs);
  const polling = shared.polling;
  const rules = { limit: limits.bodyLimit, maxDepth: node.config.limits.maxJsonDepth };
  const openBody = jsonBody<{ token?: string; channels?: string[]; cursor?: string; batch?: boolean }>(OpenBody, rules);
  const pollBody = jsonBodyThen<{ seq: number }>(PollBody, rules, quickPollBody);

  // The deadlines of every session (held polls, expiry, close grace), a few times per the shortest of them.
  const sweepMs = Math.max(10, Math.min(1000, Math.floor(Math.min(pollTimeoutMs, sessionTimeoutMs, closeGraceMs) / 4)));
  const sweep = setInterval(() => shared.sweep(Date.now()), sweepMs);
  sweep.unref();
  app.addHook('onClose', (_app, done) => {
    clearInterval(sweep);
    done();
  });

  front.route('POST', POLL_OPEN_PATH, async (request, response, { headers, query, scope }) => {
    const read = await openBody(request, response, headers);
    if (read === undefined) return;
    if (node.draining) return answerError(response, headers, 'unavailable');
    let admission = gate.open(request, scope);
    if (admission instanceof Promise) admission = await admission;
    if (admission.refused !== undefined) return answerError(response, headers, admission.refused, undefined, admission.retryAfterSeconds);
    const body = read.value;
    const transport = new LongPollTransport(shared, admission.place);
    const client = node.createClient(transport);
    client.scope = scope;
    transport.client = client;
    client.fallbackToken = admission.fallbackToken;
    client.address = admission.address ?? request.socket.remoteAddress ?? '';
    if (node.hooks !== undefined) client.forwarded = node.hooks.capture(request.headers);
    const token = body.token ?? bearer(request.headers.authorization);
    const batch = body.batch === true || (query !== '' && queryFlag(new URLSearchParams(query).get('batch') ?? undefined));
    const opened = await connectHttpClient(client, node, { token, channels: body.channels ?? [], vector: body.cursor, batch });
    if ('error' in opened) return answerError(response, headers, opened.error, opened.detail);
    if (!gate.admitUser(client)) {
      client.disconnect('connection_limit');
      return answerError(response, headers, 'connection_limit');
    }
    const session = sessions.register(client);
    transport.session = session;
    polling.set(session, transport);
    client.writePush(new EncodedFrame(encodePush({ push: 'connected', ...opened.connected, session })));
    if (batch) client.enableBatching();
    await subscribeHttpClient(client, opened.subscribe);
    client.flushWrites();
    const snapshot = transport.snapshot();
    answerJson(response, headers, 200, '{"session":' + JSON.stringify(session) + ',' + snapshot.slice(1));
  });
  front.stub(app, 'POST', POLL_OPEN_PATH);

  /** A poll for a session held here (the session's client is the transport's: no second lookup of the secret). */
  const pollHere = (transport: LongPollTransport, seq: number, reply: PollReply): void => {
    const client = transport.client;
    if (client !== undefined && !client.isClosed) client.lastActivity = node.now();
    transport.poll(seq, reply);
  };

  // Polls forwarded from other workers (cluster mode).
  sessions.handle('poll', (secret, body, signal) => {
    const transport = polling.get(secret);
    const seq = (body as { seq?: unknown } | undefined)?.seq;
    if (transport === undefined) return Promise.resolve(apiErrorAnswer('session_unknown'));
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return Promise.resolve(apiErrorAnswer('bad_request'));
    return new Promise((resolve) => {
      pollHere(transport, seq, {
        send: (text) => resolve({ status: 200, body: text }),
        gone: () => signal.aborted,
      });
    });
  });

  // No promise on this path, and no closure per poll: a poll is the transport's most frequent request.
  const ignore = (): void => {};
  const onPoll = (value: { seq: number }, request: IncomingMessage, response: ServerResponse, headers: readonly string[]): void => {
    try {
      const secret = request.headers[SESSION_HEADER];
      const transport = typeof secret === 'string' ? polling.get(secret) : undefined;
      if (transport === undefined) {
        // Another worker's session (cluster mode), or none.
        sessions.routeRaw('poll', secret, value, response, headers).catch((error: unknown) => front.failed(error, request, response, headers));
        return;
      }
      // The keep-alive timer Node cleared for this request would stay on the socket while the poll is held.
      dropClearedTimer(request.socket);
      pollHere(transport, value.seq, new HttpPollReply(response, headers));
    } catch (error) {
      front.failed(error, request, response, headers);
    }
  };
  front.route('POST', POLL_PATH, (request, response, { headers }) => {
    pollBody(request, response, headers, onPoll, ignore);
  });
  front.stub(app, 'POST', POLL_PATH);
}
