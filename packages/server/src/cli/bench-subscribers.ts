/**
 * The subscribers of `herald bench`: plain protocol clients over raw `ws`
 * and `node:http(s)`, one connection each, on the three transports. Each
 * opens, subscribes to one channel (without recovery: it wants only what is
 * published from now on), hands every publication to the sink with the time
 * it arrived, answers pings, and reports a connection that ends while the
 * run goes on. A refused open says why in a short reason the report groups
 * by ("HTTP 403 anonymous_not_allowed", "reply 118 anonymous_not_allowed",
 * "close 3506 connection_limit"), and whether waiting helps.
 */
import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import WebSocket, { type RawData } from 'ws';
import { disconnects, replyErrors } from '@herald/protocol';

export const BENCH_TRANSPORTS = ['websocket', 'sse', 'long-poll'] as const;
export type BenchTransport = (typeof BENCH_TRANSPORTS)[number];

export interface Target {
  /** The server's base URL, http(s)://host:port[/prefix], without a trailing slash. */
  readonly base: URL;
  readonly channel: string;
  readonly transport: BenchTransport;
  /** Longest time one subscriber may take to be subscribed. */
  readonly openTimeoutMs: number;
}

export interface Sink {
  /** A publication of the channel arrived on subscriber `index` at `receivedAt` (performance.now()). */
  publication(index: number, data: unknown, offset: number, receivedAt: number): void;
  /** Subscriber `index` lost its connection while the run went on. */
  lost(index: number, reason: string): void;
}

/** Why a subscriber could not be opened. */
export class OpenError extends Error {
  /** Short, for grouping in the report. */
  readonly reason: string;
  /** Set when the server said to come back later (429 too_many_requests, 503). */
  readonly retryAfterMs: number | undefined;

  constructor(reason: string, retryAfterMs?: number) {
    super(reason);
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

export interface Subscriber {
  /** Ends the connection (the server is told where the transport allows it). */
  close(): Promise<void>;
}

const replyNames = new Map<number, string>(Object.entries(replyErrors).map(([name, e]) => [e.code, name]));
const disconnectNames = new Map<number, string>(Object.entries(disconnects).map(([name, e]) => [e.code, name]));

function replyReason(error: unknown): string {
  const code = typeof error === 'object' && error !== null ? (error as Record<string, unknown>)['code'] : undefined;
  return typeof code === 'number' ? `reply ${code} ${replyNames.get(code) ?? 'error'}` : 'reply error';
}

function closeReason(code: number): string {
  const name = disconnectNames.get(code);
  return name === undefined ? `close ${code}` : `close ${code} ${name}`;
}

function parse(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function networkReason(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  return typeof code === 'string' ? code : (error as Error).message.slice(0, 80);
}

/** An HTTP refusal: `HTTP 403 anonymous_not_allowed`, with Retry-After when waiting helps. */
function httpRefusal(status: number, body: string, retryAfter: string | string[] | undefined): OpenError {
  const error = parse(body)?.['error'];
  const code = typeof error === 'object' && error !== null ? (error as Record<string, unknown>)['code'] : undefined;
  const seconds = typeof retryAfter === 'string' && /^[0-9]{1,4}$/.test(retryAfter) ? Number(retryAfter) : undefined;
  const waitable = status === 503 || code === 'too_many_requests';
  return new OpenError(`HTTP ${status}${typeof code === 'string' ? ` ${code}` : ''}`, waitable ? (seconds ?? 1) * 1000 : undefined);
}

interface Answer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/**
 * The connections of one run: agents for SSE streams and long polls, and
 * `open` for each subscriber. `destroy` cuts whatever is left.
 */
export class BenchClients {
  readonly #target: Target;
  readonly #sink: Sink;
  readonly #http: typeof http | typeof https;
  readonly #streamAgent: http.Agent;
  readonly #pollAgent: http.Agent;
  readonly #prefix: string;

  constructor(target: Target, sink: Sink) {
    this.#target = target;
    this.#sink = sink;
    const secure = target.base.protocol === 'https:';
    this.#http = secure ? https : http;
    const Agent = secure ? https.Agent : http.Agent;
    this.#streamAgent = new Agent({ keepAlive: false, maxSockets: Infinity });
    this.#pollAgent = new Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 });
    this.#prefix = target.base.pathname.replace(/\/+$/, '');
  }

  /** Opens subscriber `index`; resolves once it is subscribed. */
  open(index: number, token: string | undefined): Promise<Subscriber> {
    switch (this.#target.transport) {
      case 'websocket':
        return this.#openWebSocket(index, token);
      case 'sse':
        return this.#openSse(index, token);
      case 'long-poll':
        return this.#openLongPoll(index, token);
    }
  }

  destroy(): void {
    this.#streamAgent.destroy();
    this.#pollAgent.destroy();
  }

  #url(path: string): URL {
    const url = new URL(this.#target.base.href);
    url.pathname = this.#prefix + path;
    url.search = '';
    return url;
  }

  #publication(index: number, frame: Record<string, unknown>, receivedAt: number): void {
    if (frame['channel'] !== this.#target.channel) return;
    const offset = typeof frame['offset'] === 'number' ? frame['offset'] : 0;
    this.#sink.publication(index, frame['data'], offset, receivedAt);
  }

  #openWebSocket(index: number, token: string | undefined): Promise<Subscriber> {
    const url = this.#url('/connection/websocket');
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: this.#target.openTimeoutMs });
      let ready = false;
      let closing = false;
      let settled = false;
      const refuse = (error: OpenError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        ws.terminate();
        reject(error);
      };
      const timer = setTimeout(() => refuse(new OpenError('timeout')), this.#target.openTimeoutMs);
      const subscriber: Subscriber = {
        close: () =>
          new Promise<void>((done) => {
            closing = true;
            if (ws.readyState === WebSocket.CLOSED) return done();
            const cut = setTimeout(() => ws.terminate(), 1000);
            ws.once('close', () => {
              clearTimeout(cut);
              done();
            });
            ws.close(1000);
          }),
      };
      ws.on('unexpected-response', (_request, response) => {
        let body = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          if (body.length < 4096) body += chunk;
        });
        response.on('end', () => refuse(httpRefusal(response.statusCode ?? 0, body, response.headers['retry-after'])));
        response.on('error', () => refuse(new OpenError(`HTTP ${response.statusCode ?? 0}`)));
      });
      ws.on('open', () => ws.send(JSON.stringify({ id: 1, method: 'connect', params: token === undefined ? {} : { token } })));
      ws.on('message', (data: RawData) => {
        const receivedAt = performance.now();
        const frame = parse(data.toString());
        if (frame === undefined) return;
        const push = frame['push'];
        if (push === 'publication') return this.#publication(index, frame, receivedAt);
        if (push === 'ping') return ws.send('{"method":"pong"}');
        if (frame['error'] !== undefined) return refuse(new OpenError(replyReason(frame['error'])));
        if (frame['id'] === 1) {
          ws.send(JSON.stringify({ id: 2, method: 'subscribe', params: { channel: this.#target.channel } }));
        } else if (frame['id'] === 2 && !settled) {
          ready = true;
          settled = true;
          clearTimeout(timer);
          resolve(subscriber);
        }
      });
      ws.on('error', (error) => refuse(new OpenError(networkReason(error))));
      ws.on('close', (code) => {
        if (ready && !closing) this.#sink.lost(index, closeReason(code));
        else refuse(new OpenError(closeReason(code)));
      });
    });
  }

  #openSse(index: number, token: string | undefined): Promise<Subscriber> {
    const url = this.#url('/connection/sse');
    url.searchParams.set('channel', this.#target.channel);
    return new Promise((resolve, reject) => {
      let ready = false;
      let closing = false;
      let settled = false;
      const headers: Record<string, string> = { accept: 'text/event-stream' };
      if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
      const request = this.#http.get(url, { agent: this.#streamAgent, headers });
      const refuse = (error: OpenError) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        request.destroy();
        reject(error);
      };
      const timer = setTimeout(() => refuse(new OpenError('timeout')), this.#target.openTimeoutMs);
      const end = (reason: string) => {
        if (ready && !closing) {
          closing = true;
          this.#sink.lost(index, reason);
        } else refuse(new OpenError(reason));
      };
      const subscriber: Subscriber = {
        close: () => {
          closing = true;
          request.destroy();
          return Promise.resolve();
        },
      };
      request.on('error', (error) => end(networkReason(error)));
      request.on('response', (response) => {
        response.setEncoding('utf8');
        if (response.statusCode !== 200) {
          let body = '';
          response.on('data', (chunk: string) => {
            if (body.length < 4096) body += chunk;
          });
          response.on('end', () => refuse(httpRefusal(response.statusCode ?? 0, body, response.headers['retry-after'])));
          return;
        }
        let buffer = '';
        response.on('data', (chunk: string) => {
          const receivedAt = performance.now();
          buffer += chunk.includes('\r') ? chunk.replace(/\r\n?/g, '\n') : chunk;
          let boundary = buffer.indexOf('\n\n');
          while (boundary !== -1) {
            const event = buffer.slice(0, boundary);
            buffer = buffer.slice(boundary + 2);
            boundary = buffer.indexOf('\n\n');
            let data: string | undefined;
            for (const line of event.split('\n')) {
              if (!line.startsWith('data:')) continue;
              const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
              data = data === undefined ? value : `${data}\n${value}`;
            }
            const frame = data === undefined ? undefined : parse(data);
            if (frame === undefined) continue;
            const push = frame['push'];
            if (push === 'publication') this.#publication(index, frame, receivedAt);
            else if (push === 'subscribed' && frame['channel'] === this.#target.channel && !settled) {
              ready = true;
              settled = true;
              clearTimeout(timer);
              resolve(subscriber);
            } else if (push === 'unsubscribed') end(typeof frame['code'] === 'number' ? `unsubscribed ${frame['code']}` : 'unsubscribed');
            else if (push === 'disconnect') end(typeof frame['code'] === 'number' ? closeReason(frame['code']) : 'disconnect');
          }
        });
        response.on('close', () => end('stream ended'));
      });
    });
  }

  /** One HTTP request of a long-poll session, JSON in and out. */
  #post(path: string, body: unknown, session: string | undefined, timeoutMs: number): Promise<Answer> {
    const text = JSON.stringify(body);
    const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)) };
    if (session !== undefined) headers['herald-session'] = session;
    return new Promise((resolve, reject) => {
      const request = this.#http.request(this.#url(path), { method: 'POST', agent: this.#pollAgent, headers, timeout: timeoutMs }, (response) => {
        let answer = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => (answer += chunk));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, headers: response.headers, body: answer }));
        response.on('error', reject);
      });
      request.on('timeout', () => request.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
      request.on('error', reject);
      request.end(text);
    });
  }

  #openLongPoll(index: number, token: string | undefined): Promise<Subscriber> {
    return new Promise((resolve, reject) => {
      let ready = false;
      let closing = false;
      let settled = false;
      let session: string | undefined;
      const refuse = (error: OpenError) => {
        if (settled) return;
        settled = true;
        closing = true;
        clearTimeout(timer);
        reject(error);
      };
      const timer = setTimeout(() => refuse(new OpenError('timeout')), this.#target.openTimeoutMs);
      const end = (reason: string) => {
        if (ready && !closing) {
          closing = true;
          this.#sink.lost(index, reason);
        } else refuse(new OpenError(reason));
      };
      const subscriber: Subscriber = {
        close: async () => {
          if (closing) return;
          closing = true;
          if (session !== undefined) await this.#post('/connection/close', {}, session, 2000).catch(() => undefined);
        },
      };
      const take = (messages: unknown, receivedAt: number) => {
        if (!Array.isArray(messages)) return;
        for (const message of messages) {
          if (typeof message !== 'object' || message === null) continue;
          const frame = message as Record<string, unknown>;
          const push = frame['push'];
          if (push === 'publication') this.#publication(index, frame, receivedAt);
          else if (push === 'subscribed' && frame['channel'] === this.#target.channel && !settled) {
            ready = true;
            settled = true;
            clearTimeout(timer);
            resolve(subscriber);
          } else if (push === 'unsubscribed') end(typeof frame['code'] === 'number' ? `unsubscribed ${frame['code']}` : 'unsubscribed');
          else if (push === 'disconnect') end(typeof frame['code'] === 'number' ? closeReason(frame['code']) : 'disconnect');
        }
      };
      const run = async () => {
        const opened = await this.#post('/connection/poll/open', { channels: [this.#target.channel], ...(token === undefined ? {} : { token }) }, undefined, this.#target.openTimeoutMs);
        if (opened.status !== 200) return refuse(httpRefusal(opened.status, opened.body, opened.headers['retry-after']));
        const first = parse(opened.body);
        if (first === undefined || typeof first['session'] !== 'string' || typeof first['seq'] !== 'number') return refuse(new OpenError('bad open answer'));
        session = first['session'];
        let seq = first['seq'];
        take(first['messages'], performance.now());
        let failures = 0;
        while (!closing) {
          let answer: Answer;
          try {
            // Held up to longPoll.pollTimeoutMs (25 s by default) when there is nothing to say.
            answer = await this.#post('/connection/poll', { seq }, session, 120000);
            failures = 0;
          } catch (error) {
            // A kept-alive socket closed as the next poll went out: poll again with the same seq.
            if (closing) return;
            if (++failures > 3) return end(networkReason(error));
            continue;
          }
          const receivedAt = performance.now();
          if (closing) return;
          if (answer.status !== 200) return end(httpRefusal(answer.status, answer.body, undefined).reason);
          const parsed = parse(answer.body);
          if (parsed === undefined || typeof parsed['seq'] !== 'number') return end('bad poll answer');
          take(parsed['messages'], receivedAt);
          if (parsed['seq'] > seq) seq = parsed['seq'];
        }
      };
      run().catch((error: unknown) => end(networkReason(error)));
    });
  }
}
