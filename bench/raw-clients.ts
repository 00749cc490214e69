/**
 * Lean load-generator clients over `node:net` for the benchmarks that open
 * thousands of connections from one process: an EventSource reader, a
 * WebSocket client and a kept-alive HTTP/1.1 connection. Only what the
 * benchmarks need (no TLS, no compression, no redirects), so that the load
 * generator spends its CPU on the server's bytes, not on client machinery.
 */
import { connect, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';

const HEAD_END = Buffer.from('\r\n\r\n');

interface Head {
  readonly status: number;
  readonly headers: Map<string, string>;
}

function parseHead(text: string): Head {
  const lines = text.split('\r\n');
  const status = Number(lines[0]?.split(' ')[1]);
  const headers = new Map<string, string>();
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status, headers };
}

function requestHead(method: string, path: string, port: number, headers: Record<string, string>): string {
  let head = `${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n`;
  for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
  return head + '\r\n';
}

export interface SseHandlers {
  /** The answer's head was 200. */
  onOpen?(): void;
  /** The data of one event (its `data:` lines joined), and its `id:` if any. */
  onEvent(data: string, id: string | undefined): void;
  /** A non-200 answer (its status and body start), a socket error, or the stream's end. */
  onEnd(reason: string): void;
}

/** An EventSource-like reader: GET `path`, then one onEvent per event. Returns the socket (destroy() to close). */
export function openSse(port: number, path: string, headers: Record<string, string>, handlers: SseHandlers): Socket {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true });
  socket.setEncoding('latin1');
  let head: Head | undefined;
  let buffer = '';
  /** Chunked answers (nginx streams that way): bytes not yet de-chunked. */
  let chunked: string | undefined;
  let ended = false;
  const end = (reason: string): void => {
    if (ended) return;
    ended = true;
    handlers.onEnd(reason);
  };
  socket.on('connect', () => socket.write(requestHead('GET', path, port, { accept: 'text/event-stream', ...headers })));
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    if (head === undefined) {
      const at = buffer.indexOf('\r\n\r\n');
      if (at === -1) return;
      head = parseHead(buffer.slice(0, at));
      buffer = buffer.slice(at + 4);
      if (head.status !== 200) {
        end(`status ${head.status}: ${buffer.slice(0, 160)}`);
        socket.destroy();
        return;
      }
      if (head.headers.get('transfer-encoding') === 'chunked') {
        chunked = buffer;
        buffer = '';
      }
      handlers.onOpen?.();
    } else if (chunked !== undefined) {
      chunked += buffer.slice(buffer.length - chunk.length);
      buffer = buffer.slice(0, buffer.length - chunk.length);
    }
    if (chunked !== undefined) {
      for (;;) {
        const lineEnd = chunked.indexOf('\r\n');
        if (lineEnd === -1) break;
        const size = parseInt(chunked.slice(0, lineEnd), 16);
        if (chunked.length < lineEnd + 2 + size + 2) break;
        buffer += chunked.slice(lineEnd + 2, lineEnd + 2 + size);
        chunked = chunked.slice(lineEnd + 2 + size + 2);
      }
    }
    let at = buffer.indexOf('\n\n');
    while (at !== -1) {
      const event = buffer.slice(0, at);
      buffer = buffer.slice(at + 2);
      let data: string | undefined;
      let id: string | undefined;
      for (const line of event.split('\n')) {
        if (line.startsWith('data:')) {
          const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
          data = data === undefined ? value : data + '\n' + value;
        } else if (line.startsWith('id:')) id = line.charCodeAt(3) === 32 ? line.slice(4) : line.slice(3);
      }
      if (data !== undefined) handlers.onEvent(Buffer.from(data, 'latin1').toString('utf8'), id);
      at = buffer.indexOf('\n\n');
    }
  });
  socket.on('error', (error) => end(error.message));
  socket.on('close', () => end('closed'));
  return socket;
}

export interface WsHandlers {
  onOpen(): void;
  onMessage(text: string): void;
  onEnd(reason: string): void;
}

export interface RawWebSocket {
  send(text: string): void;
  close(): void;
}

/** A WebSocket client: handshake on `path`, text frames in and out (masked out, as a client must). */
export function openWebSocket(port: number, path: string, handlers: WsHandlers): RawWebSocket {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true });
  let open = false;
  let ended = false;
  let buffer: Buffer = Buffer.alloc(0);
  const end = (reason: string): void => {
    if (ended) return;
    ended = true;
    handlers.onEnd(reason);
  };
  socket.on('connect', () =>
    socket.write(
      requestHead('GET', path, port, {
        upgrade: 'websocket',
        connection: 'Upgrade',
        'sec-websocket-key': randomBytes(16).toString('base64'),
        'sec-websocket-version': '13',
      }),
    ),
  );
  socket.on('data', (chunk: Buffer) => {
    buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk]);
    if (!open) {
      const at = buffer.indexOf(HEAD_END);
      if (at === -1) return;
      const head = parseHead(buffer.subarray(0, at).toString('latin1'));
      buffer = buffer.subarray(at + 4);
      if (head.status !== 101) {
        end(`status ${head.status}`);
        socket.destroy();
        return;
      }
      open = true;
      handlers.onOpen();
    }
    for (;;) {
      if (buffer.length < 2) return;
      const opcode = buffer[0]! & 0x0f;
      let length = buffer[1]! & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) return;
        length = buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (buffer.length < 10) return;
        length = Number(buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (buffer.length < offset + length) return;
      const payload = buffer.subarray(offset, offset + length);
      buffer = buffer.subarray(offset + length);
      if (opcode === 1) handlers.onMessage(payload.toString('utf8'));
      else if (opcode === 8) {
        end(`close ${payload.length >= 2 ? payload.readUInt16BE(0) : ''} ${payload.subarray(2).toString('utf8')}`);
        socket.destroy();
        return;
      }
    }
  });
  socket.on('error', (error) => end(error.message));
  socket.on('close', () => end('closed'));
  return {
    send(text: string) {
      const payload = Buffer.from(text, 'utf8');
      const mask = randomBytes(4);
      const length = payload.length;
      const header = length < 126 ? Buffer.alloc(6) : length < 65536 ? Buffer.alloc(8) : Buffer.alloc(14);
      header[0] = 0x81;
      if (length < 126) header[1] = 0x80 | length;
      else if (length < 65536) {
        header[1] = 0x80 | 126;
        header.writeUInt16BE(length, 2);
      } else {
        header[1] = 0x80 | 127;
        header.writeBigUInt64BE(BigInt(length), 2);
      }
      mask.copy(header, header.length - 4);
      for (let i = 0; i < length; i++) payload[i] = payload[i]! ^ mask[i & 3]!;
      socket.write(Buffer.concat([header, payload]));
    },
    close() {
      socket.destroy();
    },
  };
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Map<string, string>;
  readonly body: string;
}

/** An answer whose header map is built only when asked for (most callers read the status and body). */
class LazyAnswer implements HttpAnswer {
  readonly status: number;
  readonly body: string;
  readonly #head: string;
  #headers: Map<string, string> | undefined;

  constructor(head: string, status: number, body: string) {
    this.#head = head;
    this.status = status;
    this.body = body;
  }

  get headers(): Map<string, string> {
    return (this.#headers ??= parseHead(this.#head).headers);
  }
}

/** The value of header `name` (lower case) in a lower-cased head, or undefined. */
function headerIn(lowerHead: string, name: string): string | undefined {
  const at = lowerHead.indexOf('\r\n' + name + ':');
  if (at === -1) return undefined;
  const from = at + name.length + 3;
  const end = lowerHead.indexOf('\r\n', from);
  return lowerHead.slice(from, end === -1 ? lowerHead.length : end).trim();
}

/**
 * One kept-alive HTTP/1.1 connection, one request at a time (what a
 * long-poll client holds). Answers with Content-Length or chunked bodies.
 */
export class HttpConnection {
  readonly #port: number;
  #socket: Socket | undefined;
  #buffer = '';
  #pending: { resolve: (answer: HttpAnswer) => void; reject: (error: Error) => void } | undefined;

  constructor(port: number) {
    this.#port = port;
  }

  request(method: string, path: string, headers: Record<string, string>, body = ''): Promise<HttpAnswer> {
    if (this.#pending !== undefined) return Promise.reject(new Error('one request at a time'));
    const socket = this.#socket ?? this.#connect();
    const all = body === '' && method === 'GET' ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) };
    return new Promise((resolve, reject) => {
      this.#pending = { resolve, reject };
      socket.write(requestHead(method, path, this.#port, all) + body);
    });
  }

  close(): void {
    this.#socket?.destroy();
    this.#socket = undefined;
  }

  /** Opens the connection now (else the first request opens it); resolves once it is connected. */
  open(): Promise<void> {
    const socket = this.#socket ?? this.#connect();
    if (!socket.connecting) return Promise.resolve();
    return new Promise((resolve, reject) => {
      socket.once('connect', () => resolve());
      socket.once('error', reject);
    });
  }

  #connect(): Socket {
    const socket = connect({ host: '127.0.0.1', port: this.#port, noDelay: true });
    socket.setEncoding('latin1');
    this.#socket = socket;
    this.#buffer = '';
    socket.on('data', (chunk: string) => {
      this.#buffer += chunk;
      this.#parse();
    });
    const fail = (reason: string): void => {
      // A socket already replaced (closed after `Connection: close`) fails nothing.
      if (this.#socket !== socket) return;
      this.#socket = undefined;
      const pending = this.#pending;
      this.#pending = undefined;
      pending?.reject(new Error(reason));
    };
    socket.on('error', (error) => fail(error.message));
    socket.on('close', () => fail('connection closed'));
    return socket;
  }

  #parse(): void {
    const buffer = this.#buffer;
    const at = buffer.indexOf('\r\n\r\n');
    if (at === -1) return;
    // Only what framing needs (status, length, chunked, close): the header
    // map is built if a caller asks for it, so that the load generator's
    // cost does not grow with the number of headers a server sends.
    const headText = buffer.slice(0, at);
    const lower = headText.toLowerCase();
    const status = Number(headText.slice(9, 12));
    let body: string;
    let rest: string;
    const length = headerIn(lower, 'content-length');
    if (length !== undefined) {
      const n = Number(length);
      if (buffer.length < at + 4 + n) return;
      body = buffer.slice(at + 4, at + 4 + n);
      rest = buffer.slice(at + 4 + n);
    } else if (headerIn(lower, 'transfer-encoding') === 'chunked') {
      let offset = at + 4;
      body = '';
      for (;;) {
        const lineEnd = buffer.indexOf('\r\n', offset);
        if (lineEnd === -1) return;
        const size = parseInt(buffer.slice(offset, lineEnd), 16);
        if (buffer.length < lineEnd + 2 + size + 2) return;
        body += buffer.slice(lineEnd + 2, lineEnd + 2 + size);
        offset = lineEnd + 2 + size + 2;
        if (size === 0) break;
      }
      rest = buffer.slice(offset);
    } else {
      body = '';
      rest = buffer.slice(at + 4);
    }
    this.#buffer = rest;
    const pending = this.#pending;
    this.#pending = undefined;
    if (headerIn(lower, 'connection') === 'close') this.close();
    pending?.resolve(new LazyAnswer(headText, status, Buffer.from(body, 'latin1').toString('utf8')));
  }
}
