/**
 * Minimal Herald protocol clients for integration tests, written against
 * docs/protocol.md (not against the server code):
 *
 * - `WsClient`: the `ws` library plus command/reply bookkeeping.
 * - `openSse`: an SSE stream read with `fetch` and a small SSE parser, for
 *   tests that need to see exactly what is on the wire (status, `id:` lines,
 *   end of stream).
 * - `ControlledFetch`: a `fetch` for the `eventsource` npm client that
 *   records each (re)connect request (and its `Last-Event-ID`), can hold a
 *   reconnect until released, and can cut the current stream as a network
 *   drop would.
 * - long-poll and HTTP command helpers.
 */
import WebSocket from 'ws';
import { EventSource, type FetchLike } from 'eventsource';
import { deferred, waitUntil, type Deferred } from './rt-util.ts';

/** A decoded server frame (reply or push). */
export type Frame = Record<string, any>;

export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

// ---------------------------------------------------------------------------
// WebSocket

export class WsClient {
  readonly ws: WebSocket;
  /** Every frame received, in order (replies and pushes). */
  readonly frames: Frame[] = [];
  /** Set once the socket closed. */
  closeInfo: CloseInfo | undefined;
  readonly closed: Promise<CloseInfo>;
  /** Called for every push (frame without `id`) as it arrives. */
  onPush: ((frame: Frame) => void) | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Deferred<Frame>>();

  private constructor(ws: WebSocket) {
    this.ws = ws;
    const closed = deferred<CloseInfo>();
    this.closed = closed.promise;
    ws.on('message', (raw, isBinary) => {
      if (isBinary) return;
      let frame: Frame;
      try {
        frame = JSON.parse(raw.toString()) as Frame;
      } catch {
        frame = { unparsable: raw.toString() };
      }
      this.frames.push(frame);
      if (typeof frame['id'] === 'number') {
        const waiter = this.pending.get(frame['id']);
        if (waiter) {
          this.pending.delete(frame['id']);
          waiter.resolve(frame);
        }
      } else {
        this.onPush?.(frame);
      }
    });
    ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString() };
      for (const waiter of this.pending.values()) waiter.reject(new Error(`socket closed (${code}) before reply`));
      this.pending.clear();
      closed.resolve(this.closeInfo);
    });
    ws.on('error', () => {
      // 'close' follows; errors are observed through closeInfo.
    });
  }

  /** Opens the socket (no `connect` command yet). */
  static open(url: string): Promise<WsClient> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      const client = new WsClient(ws);
      const onError = (error: Error) => reject(error);
      ws.once('error', onError);
      ws.once('unexpected-response', (_req, res) => {
        reject(new Error(`unexpected HTTP ${res.statusCode} on upgrade`));
        ws.terminate();
      });
      ws.once('open', () => {
        ws.off('error', onError);
        resolve(client);
      });
    });
  }

  /** Opens and sends `connect`; throws when the reply is an error. */
  static async connect(url: string, token?: string): Promise<WsClient> {
    const client = await WsClient.open(url);
    await client.call('connect', token === undefined ? {} : { token });
    return client;
  }

  /** Sends a command and resolves with the whole reply frame. */
  request(method: string, params?: unknown, timeoutMs = 10000): Promise<Frame> {
    const id = this.nextId++;
    const waiter = deferred<Frame>();
    this.pending.set(id, waiter);
    const command: Frame = { id, method };
    if (params !== undefined) command['params'] = params;
    this.ws.send(JSON.stringify(command));
    const timer = setTimeout(() => {
      if (this.pending.delete(id)) waiter.reject(new Error(`no reply to ${method} (id ${id}) within ${timeoutMs} ms`));
    }, timeoutMs);
    return waiter.promise.finally(() => clearTimeout(timer));
  }

  /** Sends a command and resolves with its `result`; throws on an error reply. */
  async call(method: string, params?: unknown): Promise<Frame> {
    const reply = await this.request(method, params);
    if (reply['error']) throw new Error(`${method} failed: ${JSON.stringify(reply['error'])}`);
    return reply['result'] as Frame;
  }

  pushes(kind?: string): Frame[] {
    return this.frames.filter((f) => f['id'] === undefined && (kind === undefined || f['push'] === kind));
  }

  publications(channel?: string): Frame[] {
    return this.pushes('publication').filter((f) => channel === undefined || f['channel'] === channel);
  }

  waitForFrame(predicate: (frame: Frame) => boolean, timeoutMs = 10000, label = 'frame'): Promise<Frame> {
    return waitUntil(() => this.frames.find(predicate), {
      timeoutMs,
      label,
      describe: () => `frames so far: ${summarize(this.frames)}`,
    });
  }

  waitForClose(timeoutMs = 10000): Promise<CloseInfo> {
    return waitUntil(() => this.closeInfo, { timeoutMs, label: 'websocket close' });
  }

  close(code?: number): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(code);
  }

  /** Drops the TCP connection without a close handshake. */
  terminate(): void {
    this.ws.terminate();
  }
}

// ---------------------------------------------------------------------------
// SSE over fetch

export interface SseEvent {
  /** The `id:` field of this event, when it had one. */
  readonly id: string | undefined;
  /** `lastEventId` after this event, as an EventSource would track it. */
  readonly lastEventId: string;
  readonly event: string | undefined;
  readonly data: string;
  /** `data` parsed as JSON (undefined when it is not JSON). */
  readonly frame: Frame | undefined;
}

/** Incremental SSE parser following the WHATWG event-stream rules. */
export class SseParser {
  retry: number | undefined;
  lastEventId = '';
  private buffer = '';
  private data: string[] = [];
  private eventType: string | undefined;
  private eventId: string | undefined;
  private readonly onEvent: (event: SseEvent) => void;

  constructor(onEvent: (event: SseEvent) => void) {
    this.onEvent = onEvent;
  }

  feed(chunk: string): void {
    this.buffer += chunk;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) return;
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (match[0] === '\r' && match.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }

  private line(line: string): void {
    if (line === '') {
      if (this.eventId !== undefined) this.lastEventId = this.eventId;
      if (this.data.length > 0) {
        const data = this.data.join('\n');
        let frame: Frame | undefined;
        try {
          const parsed: unknown = JSON.parse(data);
          if (parsed && typeof parsed === 'object') frame = parsed as Frame;
        } catch {
          frame = undefined;
        }
        this.onEvent({ id: this.eventId, lastEventId: this.lastEventId, event: this.eventType, data, frame });
      }
      this.data = [];
      this.eventType = undefined;
      this.eventId = undefined;
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        break;
      case 'event':
        this.eventType = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.eventId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
  }
}

export class SseStream {
  readonly status: number;
  readonly headers: Headers;
  readonly events: SseEvent[] = [];
  /** JSON (or text) body of a non-200 answer. */
  readonly errorBody: unknown;
  /** True once the server ended the stream (or it failed). */
  ended = false;
  endError: unknown;
  readonly done: Promise<void>;
  private readonly controller: AbortController;
  private readonly parser: SseParser;

  constructor(response: Response, controller: AbortController, errorBody: unknown) {
    this.status = response.status;
    this.headers = response.headers;
    this.controller = controller;
    this.errorBody = errorBody;
    this.parser = new SseParser((event) => this.events.push(event));
    if (response.status === 200 && response.body) {
      this.done = this.pump(response.body);
    } else {
      this.ended = true;
      this.done = Promise.resolve();
    }
  }

  get retry(): number | undefined {
    return this.parser.retry;
  }

  get lastEventId(): string {
    return this.parser.lastEventId;
  }

  private async pump(body: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    const reader = body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (value) this.parser.feed(decoder.decode(value, { stream: !done }));
        if (done) break;
      }
    } catch (error) {
      this.endError = error;
    } finally {
      this.ended = true;
    }
  }

  /** Frames of all events, in order. */
  get frames(): Frame[] {
    return this.events.flatMap((e) => (e.frame ? [e.frame] : []));
  }

  pushes(kind: string): Frame[] {
    return this.frames.filter((f) => f['push'] === kind);
  }

  waitForEvent(predicate: (event: SseEvent) => boolean, timeoutMs = 10000, label = 'SSE event'): Promise<SseEvent> {
    return waitUntil(() => this.events.find(predicate), {
      timeoutMs,
      label,
      describe: () => `events so far: ${summarize(this.frames)} ended=${this.ended}`,
    });
  }

  waitForFrame(predicate: (frame: Frame) => boolean, timeoutMs = 10000, label = 'SSE frame'): Promise<Frame> {
    return this.waitForEvent((e) => e.frame !== undefined && predicate(e.frame), timeoutMs, label).then((e) => e.frame as Frame);
  }

  waitForEnd(timeoutMs = 10000): Promise<void> {
    return waitUntil(() => this.ended, { timeoutMs, label: 'end of SSE stream' }).then(() => undefined);
  }

  /** Aborts the request (the client goes away). */
  abort(): void {
    this.controller.abort();
  }
}

/** GETs an SSE URL with fetch. Non-200 answers are returned with their body parsed. */
export async function openSse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const controller = new AbortController();
  const response = await fetch(url, {
    headers: { accept: 'text/event-stream', ...headers },
    signal: controller.signal,
  });
  let errorBody: unknown;
  if (response.status !== 200) {
    const text = await response.text();
    try {
      errorBody = JSON.parse(text);
    } catch {
      errorBody = text;
    }
  }
  return new SseStream(response, controller, errorBody);
}

/** `http://host/connection/sse?token=…&channel=…` */
export function sseUrl(base: string, options: { token?: string; channels?: readonly string[]; lastEventId?: string } = {}): string {
  const url = new URL('/connection/sse', base);
  if (options.token !== undefined) url.searchParams.set('token', options.token);
  for (const channel of options.channels ?? []) url.searchParams.append('channel', channel);
  if (options.lastEventId !== undefined) url.searchParams.set('last_event_id', options.lastEventId);
  return url.toString();
}

// ---------------------------------------------------------------------------
// EventSource with a controllable fetch

export interface ControlledConnection {
  readonly index: number;
  /** The `Last-Event-ID` header EventSource sent (null on the first connect). */
  readonly lastEventId: string | null;
  status: number | undefined;
  /** Ends this connection's body for EventSource and cancels the HTTP response. */
  cut(): void;
}

/**
 * A `fetch` for `new EventSource(url, { fetch })`. Each (re)connect is recorded;
 * `hold()` makes the next connect wait until `release()`; `cut()` ends the
 * current stream as a network drop would (EventSource then reconnects with
 * `Last-Event-ID`).
 */
export class ControlledFetch {
  readonly connections: ControlledConnection[] = [];
  private gate: Deferred<void> | undefined;

  hold(): void {
    if (!this.gate) this.gate = deferred<void>();
  }

  release(): void {
    this.gate?.resolve();
    this.gate = undefined;
  }

  get held(): boolean {
    return this.gate !== undefined;
  }

  get current(): ControlledConnection | undefined {
    return this.connections[this.connections.length - 1];
  }

  /** Cuts the current connection, if any. */
  cut(): void {
    this.current?.cut();
  }

  readonly fetch: FetchLike = async (url, init) => {
    const headers = init.headers as Record<string, string>;
    let lastEventId: string | null = null;
    for (const [name, value] of Object.entries(headers)) {
      if (name.toLowerCase() === 'last-event-id') lastEventId = value;
    }
    let cutRequested = false;
    let cutNow: () => void = () => {
      cutRequested = true;
    };
    const connection: ControlledConnection = {
      index: this.connections.length,
      lastEventId,
      status: undefined,
      cut: () => cutNow(),
    };
    this.connections.push(connection);
    while (this.gate) await this.gate.promise;
    const response = await fetch(url, init as RequestInit);
    connection.status = response.status;
    const upstream = response.body;
    if (!upstream) return response;
    const reader = upstream.getReader();
    let controller!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        controller = c;
      },
      async pull(c) {
        try {
          const { done, value } = await reader.read();
          if (done) c.close();
          else c.enqueue(value);
        } catch (error) {
          try {
            c.error(error);
          } catch {
            // already closed by cut()
          }
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    });
    cutNow = () => {
      reader.cancel().catch(() => {});
      try {
        controller.close();
      } catch {
        // already closed
      }
    };
    if (cutRequested) cutNow();
    return { body, url: response.url, status: response.status, redirected: response.redirected, headers: response.headers };
  };
}

export interface EsMessage {
  /** Index of the (re)connection this message arrived on (0 = first). */
  readonly connection: number;
  /** The message's `lastEventId` as reported by EventSource ('' when the event had no id). */
  readonly lastEventId: string;
  readonly data: string;
  readonly frame: Frame | undefined;
}

/** The `eventsource` npm client, recording every message and error. */
export class RecordedEventSource {
  readonly es: EventSource;
  readonly control: ControlledFetch;
  readonly messages: EsMessage[] = [];
  readonly errors: Array<{ code: number | undefined; message: string | undefined; connection: number }> = [];
  opens = 0;
  /** Called for every message as it arrives. */
  onMessage: ((message: EsMessage) => void) | undefined;

  constructor(url: string, control: ControlledFetch = new ControlledFetch()) {
    this.control = control;
    this.es = new EventSource(url, { fetch: control.fetch });
    this.es.addEventListener('open', () => {
      this.opens += 1;
    });
    this.es.addEventListener('message', (event: MessageEvent) => {
      const data = String(event.data);
      let frame: Frame | undefined;
      try {
        frame = JSON.parse(data) as Frame;
      } catch {
        frame = undefined;
      }
      const message: EsMessage = { connection: control.connections.length - 1, lastEventId: event.lastEventId, data, frame };
      this.messages.push(message);
      this.onMessage?.(message);
    });
    this.es.addEventListener('error', (event) => {
      this.errors.push({ code: event.code, message: event.message, connection: control.connections.length - 1 });
    });
  }

  frames(kind?: string, connection?: number): Frame[] {
    return this.messages
      .filter((m) => m.frame !== undefined && (connection === undefined || m.connection === connection))
      .map((m) => m.frame as Frame)
      .filter((f) => kind === undefined || f['push'] === kind);
  }

  waitForMessage(predicate: (message: EsMessage) => boolean, timeoutMs = 10000, label = 'EventSource message'): Promise<EsMessage> {
    return waitUntil(() => this.messages.find(predicate), {
      timeoutMs,
      label,
      describe: () =>
        `messages so far: ${summarize(this.frames())} errors: ${JSON.stringify(this.errors)} connections: ${this.control.connections.length}`,
    });
  }

  waitForFrame(predicate: (frame: Frame, message: EsMessage) => boolean, timeoutMs = 10000, label = 'EventSource frame'): Promise<EsMessage> {
    return this.waitForMessage((m) => m.frame !== undefined && predicate(m.frame, m), timeoutMs, label);
  }

  close(): void {
    this.control.release();
    this.es.close();
  }
}

// ---------------------------------------------------------------------------
// HTTP helpers (commands, long polling)

export interface JsonAnswer {
  readonly status: number;
  readonly body: Frame | Frame[] | string | undefined;
}

export async function postJson(
  url: string,
  body: unknown,
  headers: Record<string, string> = {},
  signal?: AbortSignal,
): Promise<{ status: number; body: unknown }> {
  const init: RequestInit = {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  };
  if (signal) init.signal = signal;
  const response = await fetch(url, init);
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // keep text
  }
  return { status: response.status, body: parsed };
}

/** `POST /connection/command` with a session; body is one command or an array. */
export function sendCommand(base: string, session: string, commands: unknown): Promise<{ status: number; body: unknown }> {
  return postJson(new URL('/connection/command', base).toString(), commands, { 'herald-session': session });
}

export function pollOpen(base: string, body: Record<string, unknown>, signal?: AbortSignal): Promise<{ status: number; body: unknown }> {
  return postJson(new URL('/connection/poll/open', base).toString(), body, {}, signal);
}

export function poll(base: string, session: string, seq: number, signal?: AbortSignal): Promise<{ status: number; body: unknown }> {
  return postJson(new URL('/connection/poll', base).toString(), { seq }, { 'herald-session': session }, signal);
}

export function pollClose(base: string, session: string): Promise<{ status: number; body: unknown }> {
  return postJson(new URL('/connection/close', base).toString(), {}, { 'herald-session': session });
}

// ---------------------------------------------------------------------------

export function summarize(frames: readonly Frame[], max = 12): string {
  const shown = frames.slice(-max).map((f) => {
    const copy: Frame = { ...f };
    if (copy['data'] !== undefined) copy['data'] = '…';
    return JSON.stringify(copy);
  });
  return (frames.length > max ? `(${frames.length - max} earlier) ` : '') + shown.join(' ');
}

/** Parses a position vector into channel → {epoch, offset}, for assertions. */
export function parseVector(vector: string): Map<string, { epoch: string; offset: number }> {
  const out = new Map<string, { epoch: string; offset: number }>();
  if (vector === '') return out;
  for (const entry of vector.split(' ')) {
    const [channel, epoch, offset] = entry.split('|');
    if (channel === undefined || epoch === undefined || offset === undefined) throw new Error(`bad vector entry ${entry}`);
    out.set(channel, { epoch, offset: Number(offset) });
  }
  return out;
}
