/**
 * A small keep-alive HTTP/1.1 client for load generation: one TCP
 * connection, one request in flight at a time, the request written as one
 * string, the answer parsed just enough (status, `content-length` or
 * chunked body). `fetch`/undici and `http.request` cost the load generator
 * several times what the server under test spends on small requests, so a
 * benchmark that saturates one server core from one loader core uses this.
 *
 * Not a general client: no redirects, no pipelining, no 1xx answers, no
 * trailers; an answer it cannot read rejects the request and closes the
 * connection.
 */
import { connect, type Socket } from 'node:net';

export interface Answer {
  readonly status: number;
  readonly body: string;
}

interface Pending {
  resolve(answer: Answer): void;
  reject(error: Error): void;
}

const HEAD_END = Buffer.from('\r\n\r\n');
const CHUNKED_END = Buffer.from('\r\n0\r\n\r\n');

export class KeepAliveClient {
  readonly #socket: Socket;
  readonly #host: string;
  #buffer: Buffer = Buffer.alloc(0);
  #pending: Pending | undefined;
  #closed: Error | undefined;

  private constructor(socket: Socket, host: string) {
    this.#socket = socket;
    this.#host = host;
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#parse();
    });
    const fail = (error: Error): void => {
      this.#closed ??= error;
      const pending = this.#pending;
      this.#pending = undefined;
      pending?.reject(error);
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
  }

  static async open(port: number, host = '127.0.0.1'): Promise<KeepAliveClient> {
    const socket = connect({ port, host });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new KeepAliveClient(socket, `${host}:${String(port)}`);
  }

  /** Sends one request; `headers` is extra header lines (`name: value\r\n` each). */
  request(method: string, path: string, body: string, headers = ''): Promise<Answer> {
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    if (this.#pending !== undefined) return Promise.reject(new Error('a request is already in flight'));
    return new Promise((resolve, reject) => {
      this.#pending = { resolve, reject };
      this.#socket.write(
        `${method} ${path} HTTP/1.1\r\nhost: ${this.#host}\r\ncontent-length: ${String(Buffer.byteLength(body))}\r\n${headers}\r\n${body}`,
      );
    });
  }

  close(): void {
    this.#socket.destroy();
  }

  #parse(): void {
    const buffer = this.#buffer;
    const headEnd = buffer.indexOf(HEAD_END);
    if (headEnd < 0) return;
    const head = buffer.toString('latin1', 0, headEnd);
    const status = Number(head.slice(9, 12));
    const lower = head.toLowerCase();
    const bodyStart = headEnd + 4;
    let bodyEnd: number;
    let body: string;
    const lengthAt = lower.indexOf('\r\ncontent-length:');
    if (lengthAt >= 0) {
      const lineEnd = lower.indexOf('\r\n', lengthAt + 2);
      const length = Number(lower.slice(lengthAt + 17, lineEnd < 0 ? undefined : lineEnd).trim());
      bodyEnd = bodyStart + length;
      if (buffer.length < bodyEnd) return;
      body = buffer.toString('utf8', bodyStart, bodyEnd);
    } else if (lower.includes('\r\ntransfer-encoding: chunked')) {
      const end = buffer.indexOf(CHUNKED_END, bodyStart - 2);
      if (end < 0) return;
      bodyEnd = end + CHUNKED_END.length;
      body = buffer.toString('utf8', bodyStart, bodyEnd); // chunk framing left in: callers only look at the status
    } else {
      this.#socket.destroy(new Error(`answer without a length: ${head.slice(0, 200)}`));
      return;
    }
    this.#buffer = buffer.length === bodyEnd ? Buffer.alloc(0) : buffer.subarray(bodyEnd);
    const pending = this.#pending;
    this.#pending = undefined;
    pending?.resolve({ status, body });
    if (this.#buffer.length > 0) this.#parse();
  }
}
