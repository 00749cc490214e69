/**
 * Server-Sent Events: the write side and the GET handler. Each frame is one
 * event; frames that change positions carry the connection's position
 * vector as the event id, so EventSource's Last-Event-ID resumes exactly.
 */
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { encodePush } from '@herald/protocol';
import type { EncodedBatch } from '../core/encoded-batch.ts';
import { EncodedFrame } from '../core/encoded-frame.ts';
import type { Transport } from '../core/transport.ts';
import type { Node } from '../core/node.ts';
import { queryFlag, connectHttpClient, openGate, subscribeHttpClient, type ConnectionGate, type SessionRegistry } from './http-connection.ts';
import { answerError, type Front, type StreamsOnSocket } from '../edge/front.ts';
import { onSocketDrain } from './socket-drain.ts';
import { httpDate } from '../util/http-date.ts';

export const SSE_PATH = '/connection/sse';

/**
 * Streams whose opening is still held: one callback at the end of this turn
 * of the event loop writes what each still holds (an engine that answers
 * slowly does not hold the head back), instead of one callback per stream.
 */
let toOpen: SseTransport[] = [];
function openAll(): void {
  const list = toOpen;
  toOpen = [];
  for (const transport of list) transport.opened();
}

/** The head's first lines for each header list seen (the front's lists are shared per route and origin verdict). */
const heads = new WeakMap<readonly string[], string>();
function headOf(headers: readonly string[]): string {
  let head = heads.get(headers);
  if (head === undefined) {
    head = 'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-store\r\nx-accel-buffering: no\r\n';
    for (let i = 0; i + 1 < headers.length; i += 2) head += headers[i] + ': ' + headers[i + 1] + '\r\n';
    heads.set(headers, head);
  }
  return head;
}

export class SseTransport implements Transport {
  // Getters, not fields: nothing per connection.
  get kind(): 'sse' {
    return 'sse';
  }

  get tracksPositions(): boolean {
    return true;
  }
  readonly #response: ServerResponse;
  readonly #closeGraceMs: number;
  #started = false;
  #closed = false;
  /**
   * The head and the opening frames (connected, subscribed, recovered
   * publications) until `opened()`: written in one piece, as one string
   * (no writev of mixed strings and buffers, no frame's bytes made for one
   * stream).
   */
  #opening: string | undefined;
  /** `#opening`'s length: counted in `bufferedBytes()` as the socket's buffer counts a string written to it (its length). */
  #openingBytes = 0;
  #socket: Socket | undefined;
  /** Once closed: resolves when the stream has ended (flushed) or was cut. */
  #settled: Promise<void> | undefined;

  constructor(response: ServerResponse, closeGraceMs: number) {
    this.#response = response;
    this.#closeGraceMs = closeGraceMs;
  }

  /**
   * Sends the stream's head, `headers` (flat name, value list: security,
   * CORS) and the stream's own, straight to the socket, with the first
   * event. From here on the stream owns its socket: no chunked framing
   * (`Connection: close`, the stream ends with its connection), events go
   * to the socket as they are, and the response object only marks the
   * request as in progress for Node's server (which therefore never counts
   * the connection as idle). Node's own head would stay in the response as
   * a string of some seventy pieces, about 2 KiB per stream.
   */
  start(headers: readonly string[]): void {
    if (this.#closed) return;
    const socket = this.#response.socket;
    if (socket === null || socket.destroyed) return;
    this.#started = true;
    this.#socket = socket;
    // On the lean HTTP layer: the socket is the stream's from here on.
    (this.#response as Partial<StreamsOnSocket>).streaming?.();
    // Held until `opened()`, or the end of this turn of the event loop at
    // the latest: the head and the opening frames leave in one write.
    const opening = headOf(headers) + 'Date: ' + httpDate() + '\r\nConnection: close\r\n\r\nretry: 1000\n\n';
    this.#opening = opening;
    this.#openingBytes = opening.length;
    if (toOpen.length === 0) setImmediate(openAll);
    toOpen.push(this);
  }

  /** The opening frames are written: sends them with the head. */
  opened(): void {
    const opening = this.#opening;
    if (opening === undefined) return;
    this.#opening = undefined;
    this.#openingBytes = 0;
    const socket = this.#socket;
    if (socket !== undefined && !socket.destroyed) socket.write(opening);
  }

  write(frame: EncodedFrame, positions?: string): void {
    const socket = this.#socket;
    if (this.#closed || socket === undefined) return;
    if (this.#opening !== undefined) return this.#hold(positions === undefined ? frame.sseText : 'id: ' + positions + '\n' + frame.sseText);
    // One write per event: the shared bytes, or this connection's id line
    // with the shared text.
    socket.write(positions === undefined ? frame.sseBytes : 'id: ' + positions + '\n' + frame.sseText);
  }

  writeMany(batch: EncodedBatch, positions?: string): void {
    const socket = this.#socket;
    if (this.#closed || socket === undefined) return;
    if (this.#opening !== undefined) return this.#hold(positions === undefined ? batch.sseText : 'id: ' + positions + '\n' + batch.sseText);
    // One event, one write: a `data:` line per frame.
    socket.write(positions === undefined ? batch.sseBytes : 'id: ' + positions + '\n' + batch.sseText);
  }

  #hold(text: string): void {
    this.#opening += text;
    this.#openingBytes += text.length;
  }

  heartbeat(ping: EncodedFrame): void {
    this.write(ping);
  }

  bufferedBytes(): number {
    return (this.#socket?.writableLength ?? 0) + this.#openingBytes;
  }

  onDrain(listener: () => void): void {
    if (this.#socket !== undefined) onSocketDrain(this.#socket, listener);
  }

  close(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    const socket = this.#socket;
    if (!this.#started || socket === undefined || socket.destroyed) return;
    // The disconnect frame always goes behind what is queued: a slow
    // reader's backlog is bounded (limits.outboundQueueBytes and one frame),
    // and one more small frame tells it why it was cut once it catches up.
    // A peer that has not taken it all within the close grace is cut.
    const reconnect = code < 3500 || (code >= 4000 && code < 4500);
    const frame = new EncodedFrame(encodePush({ push: 'disconnect', code, reason, reconnect }));
    const opening = this.#opening;
    if (opening !== undefined) {
      // Closed while opening: the head and what was held go first.
      this.#opening = undefined;
      this.#openingBytes = 0;
        socket.end(opening + frame.sseText);
    } else {
      socket.end(frame.sseBytes);
    }
    this.#settled = new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        socket.destroy();
        done();
      }, this.#closeGraceMs);
      timer.unref();
      socket.once('finish', done);
      socket.once('close', done);
    });
  }

  /** Resolves once the stream has ended with its disconnect frame handed to the kernel, or was cut. */
  settled(): Promise<void> {
    return this.#settled ?? Promise.resolve();
  }

  markClosed(): void {
    this.#closed = true;
    this.#opening = undefined;
    this.#openingBytes = 0;
  }
}

const noChannels: readonly string[] = [];

export function bearer(header: string | undefined): string | undefined {
  if (header === undefined || !header.startsWith('Bearer ')) return undefined;
  return header.slice(7).trim();
}

/**
 * GET /connection/sse, served by the front (../edge/front.ts): the
 * stream holds the response and its socket, and nothing of fastify's.
 */
export function registerSse(app: FastifyInstance, front: Front, node: Node, sessions: SessionRegistry, gate: ConnectionGate = openGate): void {
  const closeGraceMs = node.config.limits.closeGraceMs;
  front.route('GET', SSE_PATH, async (request, response, { headers, query, scope }) => {
    if (node.draining) return answerError(response, headers, 'unavailable');
    let admission = gate.open(request, scope);
    if (admission instanceof Promise) {
      admission = await admission;
      // The client left while the shared counts answered: nothing will close its place but this.
      if (response.destroyed || response.socket === null || response.socket.destroyed) {
        if (admission.refused === undefined) admission.place.release();
        return;
      }
    }
    if (admission.refused !== undefined) return answerError(response, headers, admission.refused, undefined, admission.retryAfterSeconds);
    // No query (an EventSource resuming with Last-Event-ID, the position in its header): nothing to parse.
    const params = query === '' ? undefined : new URLSearchParams(query);
    const channels = params === undefined ? noChannels : params.getAll('channel');
    const token = params?.get('token') ?? bearer(request.headers.authorization);
    const header = request.headers['last-event-id'];
    const vector = (typeof header === 'string' ? header : undefined) ?? params?.get('last_event_id') ?? undefined;
    const transport = new SseTransport(response, closeGraceMs);
    const client = node.createClient(transport);
    client.scope = scope;
    client.fallbackToken = admission.fallbackToken;
    client.address = admission.address ?? request.socket.remoteAddress ?? '';
    if (node.hooks !== undefined) client.forwarded = node.hooks.capture(request.headers);
    // The stream's one listener keeps its place, not the whole admission answer.
    const place = admission.place;
    response.on('close', () => {
      place.release();
      transport.markClosed();
      client.close(1006, 'connection lost');
    });
    const opening = connectHttpClient(client, node, { token, channels, vector, batch: params !== undefined && queryFlag(params.get('batch') ?? undefined) });
    // At once when `connect` asked nothing (no token, no hook): no promise per open.
    const opened = opening instanceof Promise ? await opening : opening;
    if ('error' in opened) return answerError(response, headers, opened.error, opened.detail);
    if (!gate.admitUser(client)) {
      client.disconnect('connection_limit');
      return answerError(response, headers, 'connection_limit');
    }
    const session = sessions.register(client);
    response.socket?.setNoDelay(true);
    transport.start(headers);
    try {
      client.writePush(new EncodedFrame(encodePush({ push: 'connected', ...opened.connected, session })));
      if (opened.connected.batch === true) client.enableBatching();
      const subscribing = subscribeHttpClient(client, opened.subscribe);
      if (subscribing !== undefined) await subscribing;
    } catch (error) {
      // The stream has started: no HTTP error can follow its head.
      node.logger.error({ err: error }, 'SSE stream failed after it started');
      client.disconnect('internal');
    } finally {
      transport.opened();
    }
  });
  front.stub(app, 'GET', SSE_PATH);
}
