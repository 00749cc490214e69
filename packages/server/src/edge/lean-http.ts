/**
 * The lean HTTP/1.1 layer (`http.leanLongPoll`, `http.leanPublish`,
 * `http.leanSse`, `http.leanWebSocket`, each on by default; without TLS
 * only, installed at the server's first connection: first-connection.ts)
 * for the long-poll routes, the server API's publish routes, the SSE
 * stream's opening and the WebSocket upgrade, in front of node:http on the
 * public listener.
 *
 * node:http builds an IncomingMessage and a ServerResponse per request, with
 * their events and garbage: on the long-poll route that is about 40 % of a
 * delivery's CPU (docs/performance.md, "Long polling: is node:http the
 * floor?"). This layer takes every new connection first, parses it with
 * llhttp compiled to WebAssembly (llhttp.ts, undici's build: strict, the
 * same `maxHeaderSize`), and answers the requests it knows itself: the paths
 * `isLean` names (`POST /connection/poll` and `/connection/poll/open` and
 * their `/apps/{id}/connection/…` forms; `POST /api/publish`,
 * `/api/broadcast`, `/api/batch`), HTTP/1.1, with a Host, a
 * `Content-Length` body or none, no `Expect`, no `Transfer-Encoding`, no
 * upgrade; and a `GET` with no body on a path `isStream` names (the SSE
 * stream's opening, `http.leanSse`), whose answer, once it is a stream,
 * owns the socket (`LeanResponse.streaming`: no parser, no timeout, what
 * the client sends is dropped). They go to the front (front.ts) with small
 * request and response objects of their own, so every rule and answer of
 * the front applies; a
 * request the front's route does not take (`accepts`: the publish routes
 * leave a query string or another content type to fastify) is handed off
 * as below, nothing of it read.
 *
 * At the first request it does not answer, the connection is handed to
 * node:http untouched: the bytes from that request's first byte are put back
 * (`unshift`) and the socket goes to node:http's own `connection` listener;
 * a connection whose first bytes are not `POST ` (nor `GET `, with
 * `isUpgrade` or `isStream`) is handed over at once. A WebSocket upgrade
 * request on a path `isUpgrade` names goes to the server's `upgrade`
 * listeners instead (lean-upgrade.ts).
 *
 * What node:http would do for these requests and this layer does itself:
 * requests in order, one at a time (reading stops while the pipelined bytes
 * behind a request exceed PIPELINE_BYTES); the headers and request timeouts
 * and the keep-alive timeout, by one sweep (a held poll is not idle);
 * `Connection: close` (asked, or the answer's own, e.g. during a drain)
 * ends the connection after the answer; parse errors go to the server's
 * `clientError` listener (edge/client-errors.ts), as node:http's do; a
 * request with more than `maxHeaders` header lines goes to node:http (its
 * 431), not answered with the lines past the limit dropped.
 */
import type { Server } from 'node:http';
import { STATUS_CODES, type IncomingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { HeadParser, Llhttp, RequestHead } from './llhttp.ts';
import type { CarriesWholeBody } from './front.ts';
import { emitUpgrade, leanUpgrade } from './lean-upgrade.ts';
import { httpDate } from '../util/http-date.ts';

/** What the lean layers of this process did (tests and debugging: which requests took the lean path). */
export const leanStats = { requests: 0, handOffs: 0, wholeBodies: 0, upgrades: 0 };

/** Bytes read ahead of the request being answered (pipelining) before reading stops. */
const PIPELINE_BYTES = 65536;

export interface LeanHttpOptions {
  readonly llhttp: Llhttp;
  readonly maxHeaderBytes: number;
  readonly maxHeaders: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
  readonly checkingIntervalMs: number;
  /** True for a path (without query) this layer answers. */
  readonly isLean: (path: string) => boolean;
  /** True for a path (without query) whose WebSocket upgrades this layer takes (lean-upgrade.ts); none without it. */
  readonly isUpgrade?: ((path: string) => boolean) | undefined;
  /** True for a path (without query) whose `GET` this layer answers: a stream's opening (the SSE stream, `http.leanSse`). */
  readonly isStream?: ((path: string) => boolean) | undefined;
  /** The front's `serve`: false leaves the request to node:http (nothing read yet). */
  readonly serve: (request: LeanRequest, response: LeanResponse) => boolean;
}

type Listener = (...args: never[]) => void;

/** Headers node:http keeps once (the first), as IncomingMessage does. */
const SINGLE = new Set([
  'age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host', 'if-modified-since',
  'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'referer', 'retry-after', 'server', 'user-agent',
]);

function headerObject(raw: readonly string[], pairs: number): IncomingHttpHeaders {
  const headers: Record<string, string | string[]> = {};
  const end = Math.min(raw.length, pairs * 2);
  for (let i = 0; i < end; i += 2) {
    const name = raw[i]!.toLowerCase();
    // A plain object, as IncomingMessage's: a header named __proto__ is not kept (it would not be a header there either).
    if (name === '__proto__') continue;
    const value = raw[i + 1]!;
    const previous = Object.hasOwn(headers, name) ? headers[name] : undefined;
    if (previous === undefined) headers[name] = name === 'set-cookie' ? [value] : value;
    else if (name === 'set-cookie') (previous as string[]).push(value);
    else if (SINGLE.has(name)) continue;
    else headers[name] = previous + (name === 'cookie' ? '; ' : ', ') + value;
  }
  return headers as IncomingHttpHeaders;
}

/** The request a front handler gets: what the front and the long-poll routes read of an IncomingMessage. */
export class LeanRequest implements CarriesWholeBody {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly socket: Socket;
  readonly httpVersion = '1.1';
  /** Listeners as (event, listener) pairs in order: a body reader adds three ('data', 'end', 'close'), no Map per request. */
  #listeners: (string | Listener)[] | undefined;
  /** The whole body, when it came in the read that ended the head: until a reader takes it (`takeBody`, front.ts `CarriesWholeBody`). */
  #whole: Buffer | undefined;
  /** A reader took the whole body: the layer emits no 'data' nor 'end' for it. */
  bodyTaken = false;

  constructor(method: string, url: string, headers: IncomingHttpHeaders, socket: Socket) {
    this.method = method;
    this.url = url;
    this.headers = headers;
    this.socket = socket;
  }

  get connection(): Socket {
    return this.socket;
  }

  /** The layer: the whole body is here before the request is served. */
  giveBody(body: Buffer | undefined): void {
    this.#whole = body;
  }

  /** The whole body, once, if it was read with the head (then no 'data' nor 'end' come for it); else undefined. */
  takeBody(): Buffer | undefined {
    const body = this.#whole;
    if (body === undefined) return undefined;
    this.#whole = undefined;
    this.bodyTaken = true;
    leanStats.wholeBodies++;
    return body;
  }

  on(event: string, listener: Listener): this {
    (this.#listeners ??= []).push(event, listener);
    if (this.#early !== undefined) this.#replay();
    return this;
  }

  /**
   * 'data' and 'end' that came before a listener of theirs, in order: a
   * reader that starts after a promise (the publish routes' cluster-wide
   * rate limit, counted in Redis) gets them when it registers, as a stream
   * keeps its chunks for a late reader.
   */
  #early: unknown[] | undefined;
  /** Bytes in `#early`: past PIPELINE_BYTES the socket pauses (`#paused`) until a reader takes them. */
  #earlyBytes = 0;
  #paused = false;

  #heard(event: string): boolean {
    const list = this.#listeners;
    if (list !== undefined) for (let i = 0; i < list.length; i += 2) if (list[i] === event) return true;
    return false;
  }

  #replay(): void {
    const early = this.#early!;
    while (early.length > 0 && this.#heard(early[0] as string)) {
      const event = early.shift() as string;
      const argument = early.shift();
      if (event === 'data') this.#earlyBytes -= (argument as Buffer).length;
      this.#dispatch(event, argument);
    }
    if (early.length === 0) this.#early = undefined;
    if (this.#paused && this.#earlyBytes <= PIPELINE_BYTES) {
      this.#paused = false;
      this.socket.resume();
    }
  }

  removeListener(event: string, listener: Listener): this {
    const list = this.#listeners;
    if (list === undefined) return this;
    for (let i = 0; i < list.length; i += 2) {
      if (list[i] === event && list[i + 1] === listener) {
        list.splice(i, 2);
        break;
      }
    }
    return this;
  }

  emit(event: string, argument?: unknown): void {
    if ((event === 'data' || event === 'end') && (this.#early !== undefined || !this.#heard(event))) {
      (this.#early ??= []).push(event, argument);
      if (event === 'data') {
        this.#earlyBytes += (argument as Buffer).length;
        if (this.#earlyBytes > PIPELINE_BYTES && !this.#paused) {
          this.#paused = true;
          this.socket.pause();
        }
      }
      return;
    }
    this.#dispatch(event, argument);
  }

  #dispatch(event: string, argument: unknown): void {
    const list = this.#listeners;
    if (list === undefined) return;
    // A listener may remove listeners: the ones registered when the event came are called.
    let first: Listener | undefined;
    let called: Listener[] | undefined;
    for (let i = 0; i < list.length; i += 2) {
      if (list[i] !== event) continue;
      if (first === undefined) first = list[i + 1] as Listener;
      else (called ??= [first]).push(list[i + 1] as Listener);
    }
    // One listener (a body reader's): no list of them per event.
    if (called === undefined) {
      if (first !== undefined) (first as (value: unknown) => void)(argument);
      return;
    }
    for (const listener of called) (listener as (value: unknown) => void)(argument);
  }
}

/** The answer side: what front.ts and the long-poll routes call on a ServerResponse. */
export class LeanResponse {
  readonly #connection: LeanConnection;
  #head = '';
  #close = false;
  headersSent = false;
  #ended = false;
  #onClose: Listener[] | undefined;

  constructor(connection: LeanConnection) {
    this.#connection = connection;
  }

  get destroyed(): boolean {
    return this.#connection.socket.destroyed;
  }

  get socket(): Socket {
    return this.#connection.socket;
  }

  /** The answer is a stream written to the socket from here until it closes (front.ts `StreamsOnSocket`): no other request follows. */
  streaming(): void {
    this.headersSent = true;
    this.#connection.streaming();
  }

  /** `writeHead(status, [name, value, …])` with the headers node:http adds: Date, and Connection/Keep-Alive. */
  writeHead(status: number, headers: readonly string[]): this {
    let lines = heads.get(headers);
    const last = headers.length - 2;
    if (lines === undefined || lines.status !== status) {
      lines = headLines(status, headers);
      // A list the front reuses (a 200 answer's, per route and origin: its last value, the length, changes per answer).
      if (lines.lengthLast) heads.set(headers, lines);
    }
    const close = lines.close || this.#connection.closeAfter;
    this.#close = close;
    let head = lines.lengthLast ? lines.text + headers[last + 1]! + '\r\n' : lines.text;
    head += 'Date: ' + httpDate() + '\r\n';
    if (!lines.connection) head += close ? 'Connection: close\r\n' : this.#connection.keepAliveTail;
    this.#head = head + '\r\n';
    this.headersSent = true;
    return this;
  }

  /** Writes the answer; then 'close', as a ServerResponse emits it once its answer is done (a route frees what the request held). */
  end(text = ''): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#connection.answered(this.#head + text, this.#close);
    this.closed();
  }

  destroy(): void {
    this.#connection.socket.destroy();
  }

  once(event: string, listener: Listener): this {
    if (event === 'close') (this.#onClose ??= []).push(listener);
    return this;
  }

  on(event: string, listener: Listener): this {
    return this.once(event, listener);
  }

  /** The answer is done, or the socket closed while it was pending: the 'close' listeners, once. */
  closed(): void {
    const list = this.#onClose;
    this.#onClose = undefined;
    if (list !== undefined) for (const listener of list) (listener as () => void)();
  }
}

/** The status line and header lines of a header list (when its last header is `content-length`, up to its value, which changes per answer). */
interface HeadLines {
  readonly status: number;
  readonly text: string;
  readonly lengthLast: boolean;
  /** The list has a `connection` header; `close`: it says close. */
  readonly connection: boolean;
  readonly close: boolean;
}

const heads = new WeakMap<readonly string[], HeadLines>();

function headLines(status: number, headers: readonly string[]): HeadLines {
  let text = 'HTTP/1.1 ' + status + ' ' + (STATUS_CODES[status] ?? 'unknown') + '\r\n';
  let connection = false;
  let close = false;
  const last = headers.length - 2;
  const lengthLast = last >= 0 && headers[last]!.toLowerCase() === 'content-length';
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const value = headers[i + 1]!;
    if (i === last && lengthLast) text += name + ': ';
    else text += name + ': ' + value + '\r\n';
    if (name.length === 10 && name.toLowerCase() === 'connection') {
      connection = true;
      if (value.toLowerCase().includes('close')) close = true;
    }
  }
  return { status, text, lengthLast, connection, close };
}

/**
 * A connection's phase. Idle: waiting for a request (its first byte); the
 * keep-alive timeout runs (the headers timeout on a new connection). Head:
 * receiving a request's head. Body: receiving a lean request's body. Busy:
 * a request is being answered (a held poll): no timeout. Stream: the answer
 * is a stream that owns the socket until it closes (an SSE stream): no
 * timeout, no parser, and what the client sends is dropped.
 */
const Phase = { Idle: 0, Head: 1, Body: 2, Busy: 3, Stream: 4 } as const;
type Phase = (typeof Phase)[keyof typeof Phase];

const POST = Buffer.from('POST ');
const GET = Buffer.from('GET ');

/** A request target's path: without its query. */
function pathOf(url: string): string {
  const mark = url.indexOf('?');
  return mark === -1 ? url : url.slice(0, mark);
}

/** The first bytes of a request the layer may take: `POST ` (its routes); `GET ` when it takes upgrades or streams. */
function startsLean(pending: Buffer, gets: boolean): boolean {
  const post = Math.min(pending.length, POST.length);
  if (pending.compare(POST, 0, post, 0, post) === 0) return true;
  const get = Math.min(pending.length, GET.length);
  return gets && pending.compare(GET, 0, get, 0, get) === 0;
}

class LeanConnection {
  readonly socket: Socket;
  readonly #layer: LeanHttp;
  readonly #parser: HeadParser;
  /** Bytes from the current request's first byte that were read (for a hand-off, and the body). */
  #pending: Buffer | undefined;
  /** Bytes of `#pending` given to the parser. */
  #parsed = 0;
  #phase: Phase = Phase.Idle;
  /** When the phase's timeout started (Date.now()). */
  since = Date.now();
  /** Fresh: no request yet (headers timeout, not keep-alive). */
  #fresh = true;
  closeAfter = false;
  keepAliveTail: string;
  /** The request whose body is being read, and how much is left. */
  #request: LeanRequest | undefined;
  #bodyLeft = 0;
  #response: LeanResponse | undefined;
  /** The last head the parser kept (llhttp.ts: its repeats come as the same object) and its header object. */
  #head: RequestHead | undefined;
  #headers: IncomingHttpHeaders | undefined;
  /** A request was taken and its answer has not been written. */
  #waiting = false;
  #gone = false;
  readonly #onData = (data: Buffer): void => this.#read(data);
  readonly #onEnd = (): void => this.#ended();
  readonly #onClose = (): void => this.#closed();
  readonly #onError = (): void => {
    this.socket.destroy();
  };

  constructor(layer: LeanHttp, socket: Socket) {
    this.#layer = layer;
    this.socket = socket;
    this.keepAliveTail = layer.keepAliveTail;
    // It stops after each head: the body (Content-Length only) is read here, and a hand-off keeps the bytes as they came.
    this.#parser = layer.options.llhttp.parser(layer.options.maxHeaderBytes);
    socket.on('data', this.#onData);
    socket.on('end', this.#onEnd);
    socket.on('close', this.#onClose);
    socket.on('error', this.#onError);
  }

  /** The sweep: the headers, request and keep-alive timeouts. */
  check(now: number): void {
    const { headersTimeoutMs, requestTimeoutMs, keepAliveTimeoutMs } = this.#layer.options;
    switch (this.#phase) {
      case Phase.Idle:
        if (this.#fresh ? now - this.since > headersTimeoutMs : now - this.since > keepAliveTimeoutMs) {
          if (this.#fresh) this.#clientError(Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }));
          else this.socket.destroy();
        }
        return;
      case Phase.Head:
        if (now - this.since > headersTimeoutMs) this.#clientError(Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }));
        return;
      case Phase.Body:
        if (now - this.since > requestTimeoutMs) this.#clientError(Object.assign(new Error('Request timeout'), { code: 'ERR_HTTP_REQUEST_TIMEOUT' }));
        return;
      case Phase.Busy:
      case Phase.Stream:
        return;
    }
  }

  #read(data: Buffer): void {
    if (this.#gone || this.#phase === Phase.Stream) return;
    if (this.#bodyLeft > 0) return this.#body(data);
    if (this.#waiting) return this.#keep(data);
    this.#pending = this.#pending === undefined ? data : Buffer.concat([this.#pending, data]);
    this.#next();
  }

  /** Parses what is pending from the start of a request, while nothing is being answered. */
  #next(): void {
    while (!this.#gone && !this.#waiting && this.#bodyLeft === 0) {
      const pending = this.#pending;
      if (pending === undefined || pending.length === 0) {
        this.#pending = undefined;
        return;
      }
      if (this.#phase === Phase.Idle) {
        // A request starts: one that cannot be lean goes to node:http at once.
        if (!startsLean(pending, this.#layer.options.isUpgrade !== undefined || this.#layer.options.isStream !== undefined)) return this.#handOff();
        this.#phase = Phase.Head;
        this.since = Date.now();
        this.#fresh = false;
        this.#parsed = 0;
      }
      const head = this.#parser.execute(this.#parsed === 0 ? pending : pending.subarray(this.#parsed));
      if (head === undefined) {
        // The head goes on in the next read; the parser keeps its state.
        this.#parsed = pending.length;
        this.#pending = Buffer.from(pending);
        return;
      }
      if (head instanceof Error) return this.#clientError(head);
      this.#parser.reset();
      if (!this.#start(head, pending, this.#parsed + head.end)) return this.#handOff();
    }
  }

  /** A whole head: answered here (true) or not (false, nothing consumed). */
  #start(head: RequestHead, pending: Buffer, headEnd: number): boolean {
    if (head.upgrade) return this.#upgrade(head, pending, headEnd);
    const method = head.method;
    if ((method !== 'POST' && method !== 'GET') || head.major !== 1 || head.minor !== 1) return false;
    const path = pathOf(head.url);
    if (method === 'GET' ? this.#layer.options.isStream?.(path) !== true : !this.#layer.options.isLean(path)) return false;
    // More header lines than node:http keeps: node:http answers them (431), not a request missing the ones past the limit.
    if (head.headers.length > this.#layer.options.maxHeaders * 2) return false;
    // The parser's head again (a request with the same head bytes, llhttp.ts): its header object again, frozen since shared.
    let headers = this.#headers;
    if (head !== this.#head || headers === undefined) {
      headers = headerObject(head.headers, this.#layer.options.maxHeaders);
      if (Object.isFrozen(head)) {
        this.#head = head;
        this.#headers = Object.freeze(headers);
      }
    }
    if (headers.host === undefined || headers.expect !== undefined || headers['transfer-encoding'] !== undefined) return false;
    const declared = headers['content-length'];
    // A stream's opening has no body.
    if (method === 'GET' && declared !== undefined) return false;
    const length = declared === undefined ? 0 : Number(declared);
    if (!Number.isSafeInteger(length) || length < 0) return false;
    const request = new LeanRequest(method, head.url, headers, this.socket);
    const response = new LeanResponse(this);
    this.closeAfter = !head.keepAlive || this.#layer.closing;
    this.#phase = Phase.Body;
    this.#waiting = true;
    this.#bodyLeft = length;
    this.#request = request;
    this.#response = response;
    // What follows the head is this request's body, then the next request's bytes.
    this.#pending = undefined;
    // A body read with its head (a poll's): a reader may take it whole while served (`takeBody`, front.ts `CarriesWholeBody`), without listeners.
    // A view, not a copy: Node reads each read into a buffer of its own, of the read's size.
    if (length > 0 && pending.length - headEnd >= length) request.giveBody(pending.subarray(headEnd, headEnd + length));
    if (!this.#layer.options.serve(request, response)) {
      this.#phase = Phase.Head;
      this.#waiting = false;
      this.#bodyLeft = 0;
      this.#request = undefined;
      this.#response = undefined;
      this.closeAfter = false;
      this.#pending = pending;
      return false;
    }
    leanStats.requests++;
    // Taken while served, or never: a reader that comes later gets it as 'data' and 'end' events, as before.
    request.giveBody(undefined);
    if (length === 0) {
      this.#request = undefined;
      // (A stream may have started while served: it stays one.)
      if (this.#waiting && this.#phase === Phase.Body) this.#phase = Phase.Busy;
      request.emit('end');
      if (pending.length > headEnd) this.#read(pending.subarray(headEnd));
      return true;
    }
    if (pending.length > headEnd) this.#body(pending, headEnd);
    return true;
  }

  /** A WebSocket upgrade request: to the server's `upgrade` listeners (lean-upgrade.ts), or not taken (false, nothing consumed). */
  #upgrade(head: RequestHead, pending: Buffer, headEnd: number): boolean {
    if (this.#layer.options.isUpgrade?.(pathOf(head.url)) !== true || head.headers.length > this.#layer.options.maxHeaders * 2) return false;
    const headers = headerObject(head.headers, this.#layer.options.maxHeaders);
    if (!leanUpgrade(head, headers)) return false;
    leanStats.upgrades++;
    this.#pending = undefined;
    this.#detach();
    emitUpgrade(this.#layer.server, new LeanRequest(head.method, head.url, headers, this.socket), this.socket, pending.subarray(headEnd));
    return true;
  }

  /** Body bytes of the current request from `from` (discarded once it was answered); what follows is the next request's. */
  #body(data: Buffer, from = 0): void {
    const request = this.#request;
    const take = Math.min(this.#bodyLeft, data.length - from);
    this.#bodyLeft -= take;
    const done = this.#bodyLeft === 0;
    if (done) {
      this.#request = undefined;
      if (this.#waiting) this.#phase = Phase.Busy;
      else {
        this.#phase = Phase.Idle;
        this.since = Date.now();
      }
    }
    // The socket's buffer may hold the next request's bytes too: a copy goes to the handler (unless it took the body whole, a copy too).
    if (request !== undefined && !request.bodyTaken) {
      if (take > 0) request.emit('data', Buffer.from(data.subarray(from, from + take)));
      if (done) request.emit('end');
    }
    if (from + take < data.length && !this.#gone) this.#read(data.subarray(from + take));
  }

  /** Keeps bytes read ahead of the request being answered. */
  #keep(data: Buffer): void {
    this.#pending = this.#pending === undefined ? Buffer.from(data) : Buffer.concat([this.#pending, data]);
    if (this.#pending.length > PIPELINE_BYTES) this.socket.pause();
  }

  /** The current request's answer, in one write; then the next pipelined request. */
  answered(text: string, close: boolean): void {
    const socket = this.socket;
    this.#response = undefined;
    this.#waiting = false;
    if (this.#gone || socket.destroyed) return;
    if (close || this.closeAfter || this.#layer.closing) {
      this.#gone = true;
      socket.end(text);
      return;
    }
    socket.write(text);
    if (this.#bodyLeft > 0) {
      // Answered before its body was read: the rest is read and dropped, as node:http does (reading again if a late reader's wait paused it).
      this.#request = undefined;
      socket.resume();
      return;
    }
    this.#phase = Phase.Idle;
    this.since = Date.now();
    if (this.#pending !== undefined) {
      const pending = this.#pending;
      this.#pending = undefined;
      socket.resume();
      this.#read(pending);
    }
  }

  /** The answer became a stream that owns the socket (`LeanResponse.streaming`): nothing more is parsed. */
  streaming(): void {
    this.#phase = Phase.Stream;
    this.#pending = undefined;
    this.#free();
  }

  /** The server is closing: an idle connection ends now; a busy one ends after its answer. */
  closeIfIdle(): void {
    this.closeAfter = true;
    if (this.#phase === Phase.Idle && (this.#pending === undefined || this.#pending.length === 0)) this.socket.destroy();
  }

  #clientError(error: Error): void {
    if (this.#gone) return;
    this.#gone = true;
    this.#layer.server.emit('clientError', error, this.socket);
    if (!this.socket.destroyed) this.socket.destroy();
  }

  #ended(): void {
    // The client will send nothing more: as node:http (no half-open), end our side; a held poll sees it gone.
    if (this.#phase === Phase.Busy || this.#phase === Phase.Body || this.#phase === Phase.Stream) this.socket.destroy();
    else this.socket.end();
  }

  #closed(): void {
    this.#gone = true;
    this.#layer.forget(this);
    this.#free();
    const request = this.#request;
    this.#request = undefined;
    request?.emit('close');
    this.#response?.closed();
    this.#response = undefined;
  }

  #freed = false;

  #free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#parser.free();
  }

  /** The socket leaves the layer: its listeners, timeouts and parser. */
  #detach(): void {
    const socket = this.socket;
    this.#gone = true;
    socket.removeListener('data', this.#onData);
    socket.removeListener('end', this.#onEnd);
    socket.removeListener('close', this.#onClose);
    socket.removeListener('error', this.#onError);
    this.#layer.forget(this);
    this.#free();
  }

  /** To node:http, from the current request's first byte. */
  #handOff(): void {
    const socket = this.socket;
    socket.pause();
    this.#detach();
    const pending = this.#pending;
    this.#pending = undefined;
    if (pending !== undefined && pending.length > 0) socket.unshift(pending);
    this.#layer.handOff(socket);
    socket.resume();
  }
}

/** The layer on one node:http server: takes its `connection` listeners' place. */
export class LeanHttp {
  readonly options: LeanHttpOptions;
  readonly server: Server;
  readonly keepAliveTail: string;
  readonly #connections = new Set<LeanConnection>();
  readonly #httpListeners: ((socket: Socket) => void)[];
  readonly #sweep: NodeJS.Timeout;

  constructor(server: Server, options: LeanHttpOptions) {
    this.server = server;
    this.options = options;
    this.keepAliveTail = options.keepAliveTimeoutMs > 0 ? `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(options.keepAliveTimeoutMs / 1000)}\r\n` : 'Connection: keep-alive\r\n';
    this.#httpListeners = server.listeners('connection') as ((socket: Socket) => void)[];
    server.removeAllListeners('connection');
    server.on('connection', (socket: Socket) => {
      this.#connections.add(new LeanConnection(this, socket));
    });
    this.#sweep = setInterval(() => {
      const now = Date.now();
      for (const connection of this.#connections) connection.check(now);
    }, options.checkingIntervalMs);
    this.#sweep.unref();
    // node:http's close (and closeIdleConnections) knows only its own connections.
    const close = server.close.bind(server);
    server.close = ((callback?: (error?: Error) => void) => {
      this.#close();
      return close(callback);
    }) as Server['close'];
    const closeAll = server.closeAllConnections.bind(server);
    server.closeAllConnections = () => {
      this.#close();
      for (const connection of this.#connections) connection.socket.destroy();
      closeAll();
    };
  }

  /** The server is closing: idle lean connections end now, busy ones after their answer. */
  closing = false;

  #close(): void {
    this.closing = true;
    clearInterval(this.#sweep);
    for (const connection of this.#connections) connection.closeIfIdle();
  }

  forget(connection: LeanConnection): void {
    this.#connections.delete(connection);
  }

  handOff(socket: Socket): void {
    leanStats.handOffs++;
    for (const listener of this.#httpListeners) listener.call(this.server, socket);
  }

}
