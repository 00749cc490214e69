/**
 * HTTP long polling: a per-session queue of numbered frames. A poll
 * acknowledges up to the `seq` it sends and receives everything newer, at
 * once or when something arrives (or empty at the poll timeout), so a lost
 * answer is simply sent again. The answer's `cursor` is the position vector
 * after its last frame, for reopening a lost session with recovery.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { encodePush } from '@herald/protocol';
import type { EncodedBatch } from '../core/encoded-batch.ts';
import { EncodedFrame } from '../core/encoded-frame.ts';
import type { Transport } from '../core/transport.ts';
import type { Node } from '../core/node.ts';
import { bearer } from './sse.ts';
import {
  announcesBatch,
  apiErrorAnswer,
  connectHttpClient,
  openGate,
  sendApiError as sendError,
  sendRefusal,
  SESSION_HEADER,
  subscribeHttpClient,
  type ConnectionGate,
  type SessionRegistry,
} from './http-connection.ts';

export const POLL_OPEN_PATH = '/connection/poll/open';
export const POLL_PATH = '/connection/poll';

interface Entry {
  readonly seq: number;
  readonly text: string;
  readonly cursor: string | undefined;
}

/** Where a poll's answer goes: the HTTP reply, or back to the worker that received a forwarded poll. */
export interface PollReply {
  /** Called once, with the JSON answer. */
  send(body: string): void;
  /** `listener` runs if the request goes away before it is answered. */
  onGone(listener: () => void): void;
}

interface Waiter {
  readonly reply: PollReply;
  readonly timer: NodeJS.Timeout;
}

export class LongPollTransport implements Transport {
  // Getters, not fields: nothing per connection.
  get kind(): 'long-poll' {
    return 'long-poll';
  }

  get tracksPositions(): boolean {
    return true;
  }
  readonly #queue: Entry[] = [];
  #bytes = 0;
  #seq = 0;
  #ackedCursor = '';
  #waiter: Waiter | undefined;
  #closed = false;
  #finished = false;
  #flushScheduled = false;
  /** Transport.onDrain: called at the next poll. */
  #drainListener: (() => void) | undefined;
  #idleTimer: NodeJS.Timeout | undefined;
  readonly #sessionTimeoutMs: number;
  readonly #pollTimeoutMs: number;
  readonly #closeGraceMs: number;
  /** Resolves what `settled()` returned, once finished. */
  #onSettled: (() => void) | undefined;
  /** Called when the session is over (closed and its last frames polled, or abandoned). */
  onFinished: () => void = () => {};
  onIdle: () => void = () => {};

  constructor(pollTimeoutMs: number, sessionTimeoutMs: number, closeGraceMs: number) {
    this.#pollTimeoutMs = pollTimeoutMs;
    this.#sessionTimeoutMs = sessionTimeoutMs;
    this.#closeGraceMs = closeGraceMs;
    this.#armIdle();
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
    this.#queue.push({ seq: ++this.#seq, text, cursor });
    this.#bytes += text.length;
    if (this.#waiter !== undefined && !this.#flushScheduled) {
      // Answer after the current burst of writes, in one response.
      this.#flushScheduled = true;
      setImmediate(() => {
        this.#flushScheduled = false;
        this.#answerWaiter();
      });
    }
  }

  heartbeat(): void {}

  holdsRequest(): boolean {
    return this.#waiter !== undefined;
  }

  bufferedBytes(): number {
    return this.#bytes;
  }

  onDrain(listener: () => void): void {
    if (!this.#closed) this.#drainListener = listener;
  }

  close(code: number, reason: string): void {
    if (this.#closed) return;
    const reconnect = code < 3500 || (code >= 4000 && code < 4500);
    this.#push(encodePush({ push: 'disconnect', code, reason, reconnect }), undefined);
    this.#closed = true;
    if (this.#waiter !== undefined) {
      // Answer now, not after the write burst: a drain must see this frame go out.
      this.#answerWaiter();
    } else {
      // Between two polls: the next poll fetches the disconnect frame, if it
      // comes within the close grace.
      clearTimeout(this.#idleTimer);
      this.#idleTimer = setTimeout(() => this.#finish(), this.#closeGraceMs);
      this.#idleTimer.unref();
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

  poll(ack: number, reply: PollReply): void {
    clearTimeout(this.#idleTimer);
    this.#ackUpTo(ack);
    const previous = this.#waiter;
    if (previous !== undefined) {
      this.#waiter = undefined;
      clearTimeout(previous.timer);
      previous.reply.send(this.#render(true));
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
    const timer = setTimeout(() => this.#answerWaiter(), this.#pollTimeoutMs);
    timer.unref();
    this.#waiter = { reply, timer };
    reply.onGone(() => {
      if (this.#waiter?.reply === reply) {
        clearTimeout(timer);
        this.#waiter = undefined;
        if (this.#closed) this.#finish();
        else this.#armIdle();
      }
    });
  }

  #answerWaiter(): void {
    const waiter = this.#waiter;
    if (waiter === undefined) return;
    this.#waiter = undefined;
    clearTimeout(waiter.timer);
    this.#send(waiter.reply);
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
    const entries = empty ? [] : this.#queue;
    let cursor = this.#ackedCursor;
    for (const entry of entries) if (entry.cursor !== undefined) cursor = entry.cursor;
    const seq = entries.length > 0 ? entries[entries.length - 1]!.seq : this.#ackedSeq();
    return '{"seq":' + seq + ',"cursor":' + JSON.stringify(cursor) + ',"messages":[' + entries.map((e) => e.text).join(',') + ']}';
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
    if (drop > 0) this.#queue.splice(0, drop);
  }

  #armIdle(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = setTimeout(() => this.onIdle(), this.#sessionTimeoutMs);
    this.#idleTimer.unref();
  }

  #finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#closed = true;
    clearTimeout(this.#idleTimer);
    const waiter = this.#waiter;
    if (waiter !== undefined) {
      this.#waiter = undefined;
      clearTimeout(waiter.timer);
      waiter.reply.send(this.#render());
    }
    this.onFinished();
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


export function registerLongPoll(app: FastifyInstance, node: Node, sessions: SessionRegistry, gate: ConnectionGate = openGate): void {
  /** Session secret → transport; outlives the client until its disconnect frame is polled. */
  const polling = new Map<string, LongPollTransport>();
  const { pollTimeoutMs, sessionTimeoutMs } = node.config.longPoll;
  const closeGraceMs = node.config.limits.closeGraceMs;

  app.post(POLL_OPEN_PATH, { schema: { body: OpenBody } }, async (request: FastifyRequest<{ Body: { token?: string; channels?: string[]; cursor?: string; batch?: boolean }; Querystring: { batch?: string | string[] } }>, reply) => {
    if (node.draining) return sendError(reply, 'unavailable');
    const admission = gate.open(request.raw);
    if (admission.refused !== undefined) return sendRefusal(reply, admission);
    const body = request.body;
    const transport = new LongPollTransport(pollTimeoutMs, sessionTimeoutMs, closeGraceMs);
    const client = node.createClient(transport);
    client.onClosed(() => admission.place.release());
    client.fallbackToken = admission.fallbackToken;
    transport.onIdle = () => client.disconnect('session_expired');
    const token = body.token ?? bearer(request.headers.authorization);
    const batch = body.batch === true || announcesBatch(request.query.batch);
    const opened = await connectHttpClient(client, node, { token, channels: body.channels ?? [], vector: body.cursor, batch });
    if ('error' in opened) return sendError(reply, opened.error, opened.detail);
    if (!gate.admitUser(client)) {
      client.disconnect('connection_limit');
      return sendError(reply, 'connection_limit');
    }
    const session = sessions.register(client);
    polling.set(session, transport);
    transport.onFinished = () => {
      polling.delete(session);
      client.close(1006, 'session ended');
    };
    client.writePush(new EncodedFrame(encodePush({ push: 'connected', ...opened.connected, session })));
    if (batch) client.enableBatching();
    await subscribeHttpClient(client, opened.subscribe);
    client.flushWrites();
    const snapshot = transport.snapshot();
    return reply.type('application/json').send('{"session":' + JSON.stringify(session) + ',' + snapshot.slice(1));
  });

  sessions.handle('poll', (secret, body, signal) => {
    const transport = polling.get(secret);
    const seq = (body as { seq?: unknown } | undefined)?.seq;
    if (transport === undefined) return Promise.resolve(apiErrorAnswer('session_unknown'));
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return Promise.resolve(apiErrorAnswer('bad_request'));
    const client = sessions.get(secret);
    if (client !== undefined) client.lastActivity = node.now();
    return new Promise((resolve) => {
      transport.poll(seq, {
        send: (text) => resolve({ status: 200, body: text }),
        onGone: (listener) => {
          if (signal.aborted) queueMicrotask(listener);
          else signal.addEventListener('abort', listener, { once: true });
        },
      });
    });
  });

  app.post(POLL_PATH, { schema: { body: PollBody } }, (request, reply) => sessions.route('poll', request.headers[SESSION_HEADER], request.body, reply));
}
