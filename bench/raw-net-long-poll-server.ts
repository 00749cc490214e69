/**
 * A measurement device, not a server to deploy: the long-poll broadcast of
 * bench/raw-long-poll-server.ts (same routes, bodies, answers and keep-alive)
 * on `node:net`, without node:http's IncomingMessage and ServerResponse, to
 * see what Node's `http` layer costs per long-poll answer. Two parsers:
 *
 * - `--parser=llhttp`: llhttp through Node's own binding (`HTTPParser` of
 *   `node:_http_common`, undocumented), the parser node:http drives, set up
 *   as node:http does (it consumes the socket's handle in C++, so reads do not
 *   go through the socket's stream);
 * - `--parser=hand`: a minimal hand parser for exactly the requests the
 *   benchmark sends (request line, headers, Content-Length body). NOT
 *   hardened: no header/URL limits beyond a size cap, no chunked bodies, no
 *   obs-fold, no checks of header names or values, no smuggling defences.
 *
 * Both answer pipelined requests in order (one at a time per connection),
 * close after `Connection: close` or HTTP/1.0 without keep-alive, drop idle
 * keep-alive connections after 300 s (one sweep a second, not a timer per
 * socket), and write each answer with one `socket.write` of one string
 * (head and body). No sessions, no protocol, no auth, no timeouts on held
 * polls, no logging.
 *
 * A `GET` (any path) opens an SSE stream as bench/raw-sse-server.ts does
 * (status 200, its headers, `retry: 1000` and one `connected` event, in one
 * write); the connection then answers nothing else. bench/connect-storm.ts
 * opens its `raw-net` target's streams here, to see what node:http costs
 * per SSE open.
 *
 *   node bench/raw-net-long-poll-server.ts [--parser=llhttp|hand] [--port=0] [--host=127.0.0.1]
 *
 * Prints one JSON line `{"msg":"listening","port":N}` to stdout once it
 * accepts connections, and exits when stdin closes (its parent went away),
 * on SIGTERM or on SIGINT.
 */
import { createRequire } from 'node:module';
import { createServer, type Socket } from 'node:net';

function flag(name: string, fallback: string): string {
  const prefix = `--${name}=`;
  const arg = process.argv.find((a) => a.startsWith(prefix));
  return arg === undefined ? fallback : arg.slice(prefix.length);
}

const host = flag('host', '127.0.0.1');
const port = Number(flag('port', '0'));
const parserKind = flag('parser', 'llhttp');
if (parserKind !== 'llhttp' && parserKind !== 'hand') throw new Error(`--parser=llhttp|hand, not ${parserKind}`);

const KEEP_ALIVE_MS = 300_000;
const MAX_HEAD = 16 * 1024;
const MAX_BODY = 64 * 1024;

/** One connection: requests are answered in order, one at a time. */
interface Connection {
  readonly socket: Socket;
  /** A request is being answered (a poll may be held). */
  busy: boolean;
  /** Pipelined requests behind the busy one. */
  queue: Request[] | undefined;
  /** When the last answer was written or the last request arrived (Date.now()), for the idle sweep. */
  lastActive: number;
  /** The answer being built closes the connection. */
  closeAfter: boolean;
}

interface Request {
  readonly post: boolean;
  readonly url: string;
  readonly body: string;
  readonly keepAlive: boolean;
}

const log: string[] = [];
let held: Connection[] = [];
const connections = new Set<Connection>();

/** The `Date` header, as node:http writes it: the text changes once a second. */
let date = new Date().toUTCString();
const clock = setInterval(() => {
  date = new Date().toUTCString();
  const idleSince = Date.now() - KEEP_ALIVE_MS;
  for (const connection of connections) if (!connection.busy && connection.lastActive < idleSince) connection.socket.destroy();
}, 1000);
clock.unref();

/** An SSE stream's opening: bench/raw-sse-server.ts's head (what node:http writes for it) and its first event. */
const SSE_HEAD = 'HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-store\r\nconnection: close\r\nDate: ';
const SSE_OPENING = '\r\n\r\nretry: 1000\n\ndata: {"connected":true}\n\n';

const KEEP_ALIVE_TAIL = `\r\nConnection: keep-alive\r\nKeep-Alive: timeout=${KEEP_ALIVE_MS / 1000}\r\n\r\n`;
const CLOSE_TAIL = '\r\nConnection: close\r\n\r\n';

/** One write: the head (the headers node:http sends for the raw server's answers) and the body. */
function send(connection: Connection, status: string, body: string, json = true): void {
  const close = connection.closeAfter;
  const head =
    'HTTP/1.1 ' +
    status +
    (json ? '\r\nContent-Type: application/json' : '') +
    '\r\nContent-Length: ' +
    Buffer.byteLength(body) +
    '\r\nDate: ' +
    date +
    (close ? CLOSE_TAIL : KEEP_ALIVE_TAIL);
  const socket = connection.socket;
  if (socket.destroyed) return;
  socket.write(head + body);
  connection.lastActive = Date.now();
  connection.busy = false;
  if (close) {
    socket.end();
    return;
  }
  const queue = connection.queue;
  if (queue !== undefined && queue.length > 0) {
    const next = queue.shift()!;
    if (queue.length === 0) connection.queue = undefined;
    handle(connection, next);
  }
}

function answer(connection: Connection, after: number): void {
  send(connection, '200 OK', '{"seq":' + log.length + ',"messages":[' + log.slice(after).join(',') + ']}');
}

/** A parsed request: answered now, or queued behind the connection's busy one. */
function arrived(connection: Connection, request: Request): void {
  connection.lastActive = Date.now();
  if (connection.busy) {
    (connection.queue ??= []).push(request);
    return;
  }
  handle(connection, request);
}

function handle(connection: Connection, request: Request): void {
  connection.busy = true;
  connection.closeAfter = !request.keepAlive;
  if (request.post && request.url === '/publish') {
    log.push(request.body);
    const waiting = held;
    held = [];
    for (const waiter of waiting) if (!waiter.socket.destroyed) answer(waiter, log.length - 1);
    send(connection, '200 OK', `{"offset":${log.length}}`);
    return;
  }
  if (request.post && request.url === '/poll') {
    let seq: number;
    try {
      seq = (JSON.parse(request.body) as { seq: number }).seq;
    } catch {
      connection.closeAfter = true;
      send(connection, '400 Bad Request', '', false);
      return;
    }
    if (seq < log.length) answer(connection, seq);
    else held.push(connection);
    return;
  }
  if (!request.post) {
    // An SSE stream: the connection stays busy (answers nothing else) until the peer goes.
    if (!connection.socket.destroyed) connection.socket.write(SSE_HEAD + date + SSE_OPENING);
    return;
  }
  send(connection, '404 Not Found', '', false);
}

function badRequest(connection: Connection): void {
  const socket = connection.socket;
  if (!socket.destroyed) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
}

function track(socket: Socket): Connection {
  socket.setNoDelay(true);
  const connection: Connection = { socket, busy: false, queue: undefined, lastActive: Date.now(), closeAfter: false };
  connections.add(connection);
  socket.on('error', () => socket.destroy());
  socket.on('close', () => connections.delete(connection));
  return connection;
}

// --- llhttp through Node's binding ------------------------------------------

interface LlhttpParser {
  initialize(type: number, resource: object, maxHeaderSize: number, lenient: number): void;
  consume(handle: unknown): void;
  unconsume(): void;
  execute(data: Buffer): number | Error;
  remove(): void;
  free(): void;
  close(): void;
  [key: number]: unknown;
}
interface LlhttpBinding {
  HTTPParser: {
    new (): LlhttpParser;
    REQUEST: number;
    kOnHeaders: number;
    kOnHeadersComplete: number;
    kOnBody: number;
    kOnMessageComplete: number;
    kOnExecute: number;
    kLenientNone: number;
  };
  methods: string[];
}

function llhttpConnection(socket: Socket, binding: LlhttpBinding): void {
  const { HTTPParser, methods } = binding;
  const connection = track(socket);
  const parser = new HTTPParser();
  parser.initialize(HTTPParser.REQUEST, { type: 'HERALDBENCH', socket }, MAX_HEAD, HTTPParser.kLenientNone);
  let post = false;
  let url = '';
  let keepAlive = true;
  let chunks: Buffer[] = [];
  let bodyBytes = 0;
  let failed = false;
  const fail = (): void => {
    if (failed) return;
    failed = true;
    badRequest(connection);
  };
  // Headers and URL split over several reads arrive here first (the slow case).
  parser[HTTPParser.kOnHeaders] = (_headers: string[], part: string): void => {
    url += part;
  };
  parser[HTTPParser.kOnHeadersComplete] = (_major: number, _minor: number, _headers: string[] | undefined, method: number, whole: string | undefined, _status: number, _message: string, upgrade: boolean, shouldKeepAlive: boolean): number => {
    post = methods[method] === 'POST';
    if (whole !== undefined) url = whole;
    keepAlive = shouldKeepAlive;
    if (upgrade) fail();
    return 0;
  };
  parser[HTTPParser.kOnBody] = (chunk: Buffer): void => {
    bodyBytes += chunk.length;
    if (bodyBytes > MAX_BODY) fail();
    // The binding hands out a view of its own read buffer: copy what is kept.
    else chunks.push(Buffer.from(chunk));
  };
  parser[HTTPParser.kOnMessageComplete] = (): void => {
    const body = chunks.length === 0 ? '' : chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8');
    const request: Request = { post, url, body, keepAlive };
    url = '';
    chunks = [];
    bodyBytes = 0;
    if (!failed) arrived(connection, request);
  };
  const executed = (result: number | Error): void => {
    if (result instanceof Error) fail();
  };
  parser[HTTPParser.kOnExecute] = executed;
  const handle = (socket as unknown as { _handle?: { isStreamBase?: boolean } })._handle;
  const consumed = handle?.isStreamBase === true;
  if (consumed) parser.consume(handle);
  else socket.on('data', (data: Buffer) => executed(parser.execute(data)));
  socket.on('close', () => {
    if (consumed) parser.unconsume();
    parser.remove();
    parser.free();
  });
}

// --- the hand parser (a measurement device) ---------------------------------

const CRLFCRLF = Buffer.from('\r\n\r\n');

function handConnection(socket: Socket): void {
  const connection = track(socket);
  let pending: Buffer | undefined;
  socket.on('data', (data: Buffer) => {
    if (socket.writableEnded) return;
    let buffer = pending === undefined ? data : Buffer.concat([pending, data]);
    pending = undefined;
    for (;;) {
      const end = buffer.indexOf(CRLFCRLF);
      if (end === -1) {
        if (buffer.length > MAX_HEAD) return badRequest(connection);
        pending = buffer.length > 0 ? Buffer.from(buffer) : undefined;
        return;
      }
      const head = buffer.toString('latin1', 0, end);
      const lineEnd = head.indexOf('\r\n');
      const line = lineEnd === -1 ? head : head.slice(0, lineEnd);
      const firstSpace = line.indexOf(' ');
      const lastSpace = line.lastIndexOf(' ');
      if (firstSpace <= 0 || lastSpace <= firstSpace) return badRequest(connection);
      const version = line.slice(lastSpace + 1);
      if (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') return badRequest(connection);
      let length = 0;
      let keepAlive = version === 'HTTP/1.1';
      // Only the two headers this device needs; names compared lower-cased.
      let at = lineEnd;
      while (at !== -1 && at < head.length) {
        const next = head.indexOf('\r\n', at + 2);
        const field = head.slice(at + 2, next === -1 ? head.length : next);
        at = next;
        const colon = field.indexOf(':');
        if (colon <= 0) return badRequest(connection);
        const name = field.slice(0, colon).toLowerCase();
        if (name === 'content-length') {
          length = Number(field.slice(colon + 1).trim());
          if (!Number.isSafeInteger(length) || length < 0 || length > MAX_BODY) return badRequest(connection);
        } else if (name === 'transfer-encoding') {
          return badRequest(connection);
        } else if (name === 'connection') {
          const value = field.slice(colon + 1).trim().toLowerCase();
          if (value === 'close') keepAlive = false;
          else if (value === 'keep-alive') keepAlive = true;
        }
      }
      const bodyStart = end + 4;
      if (buffer.length < bodyStart + length) {
        pending = Buffer.from(buffer);
        return;
      }
      const body = buffer.toString('utf8', bodyStart, bodyStart + length);
      arrived(connection, { post: line.slice(0, firstSpace) === 'POST', url: line.slice(firstSpace + 1, lastSpace), body, keepAlive });
      buffer = buffer.subarray(bodyStart + length);
      if (buffer.length === 0) return;
    }
  });
}

// --- the server --------------------------------------------------------------

const binding = parserKind === 'llhttp' ? (createRequire(import.meta.url)('node:_http_common') as LlhttpBinding) : undefined;
const server = createServer((socket) => (binding === undefined ? handConnection(socket) : llhttpConnection(socket, binding)));
server.listen(port, host, () => {
  const address = server.address();
  const actual = typeof address === 'object' && address !== null ? address.port : port;
  process.stdout.write(`${JSON.stringify({ msg: 'listening', port: actual, pid: process.pid, parser: parserKind })}\n`);
});

function stop(): void {
  for (const connection of connections) connection.socket.destroy();
  server.close();
  setTimeout(() => process.exit(0), 200).unref();
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
if (!process.stdin.isTTY) {
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();
}
