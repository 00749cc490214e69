/**
 * Protocol clients for the integration tests in packages/server/test/integration/{websocket,
 * long-poll,api,limits}.test.ts: a WebSocket client that records every frame
 * and lets a test wait for the frames it expects, and HTTP helpers. Waits
 * fail with a descriptive error after a generous timeout; no assertion is
 * decided by timing.
 */
import { request as httpRequest } from 'node:http';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { SignJWT } from 'jose';
import type { TestHerald } from './herald.ts';

/** A parsed JSON frame or body (what `JSON.parse` returns). */
export type Json = ReturnType<typeof JSON.parse>;

export interface Closed {
  readonly code: number;
  readonly reason: string;
}

/** Default time a test waits for an expected event before failing. */
export const WAIT_MS = 5000;

const openClients = new Set<WsClient>();

/** Terminates every WebSocket client opened by this module (call in `afterEach`). */
export function closeAllClients(): void {
  for (const client of openClients) client.ws.terminate();
  openClients.clear();
}

export class WsClient {
  readonly ws: WebSocket;
  /** Every frame received, in arrival order. */
  readonly frames: Json[] = [];
  /** Frames not yet consumed by `take`. */
  readonly #pending: Json[] = [];
  readonly #listeners = new Set<() => void>();
  #nextId = 1;
  closeInfo: Closed | undefined;
  readonly closed: Promise<Closed>;
  /** Id of the connection, set by `connect`. */
  clientId = '';
  /** Called for every frame as it arrives (after it is recorded). */
  onFrame: ((frame: Json) => void) | undefined;

  constructor(ws: WebSocket) {
    this.ws = ws;
    openClients.add(this);
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? `<binary ${String(data)}>` : String(data);
      let frame: Json;
      try {
        frame = JSON.parse(text);
      } catch {
        frame = { unparsable: text };
      }
      this.frames.push(frame);
      this.#pending.push(frame);
      this.onFrame?.(frame);
      this.#notify();
    });
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        openClients.delete(this);
        resolve(this.closeInfo);
        this.#notify();
      });
    });
    ws.on('error', () => {
      // surfaced through 'close'
    });
  }

  #notify(): void {
    for (const listener of [...this.#listeners]) listener();
  }

  /**
   * Resolves with `check()`'s first non-undefined value, re-checked on every
   * frame and on close. Fails when the socket closes first or on timeout.
   */
  waitUntil<T>(check: () => T | undefined, what: string, timeoutMs = WAIT_MS): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const listener = (): void => {
        let value: T | undefined;
        try {
          value = check();
        } catch (error) {
          done();
          reject(error as Error);
          return;
        }
        if (value !== undefined) {
          done();
          resolve(value);
        } else if (this.closeInfo !== undefined) {
          done();
          reject(
            new Error(
              `socket closed (${this.closeInfo.code} ${this.closeInfo.reason}) while waiting for ${what}; last frames: ${tail(this.frames)}`,
            ),
          );
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last frames: ${tail(this.frames)}`));
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(timer);
        this.#listeners.delete(listener);
      };
      this.#listeners.add(listener);
      listener();
    });
  }

  /** Consumes and returns the first not-yet-taken frame matching `predicate`. */
  take(predicate: (frame: Json) => boolean, what = 'a frame', timeoutMs = WAIT_MS): Promise<Json> {
    return this.waitUntil(
      () => {
        const index = this.#pending.findIndex(predicate);
        if (index === -1) return undefined;
        return this.#pending.splice(index, 1)[0];
      },
      what,
      timeoutMs,
    );
  }

  /** Waits for (and consumes) the next push of a kind, optionally of a channel and matching `extra`. */
  push(kind: string, channel?: string, extra: (frame: Json) => boolean = () => true): Promise<Json> {
    return this.take(
      (f) => f.push === kind && (channel === undefined || f.channel === channel) && extra(f),
      `push ${kind}${channel === undefined ? '' : ' on ' + channel}`,
    );
  }

  /** Publication pushes received on `channel` so far (all of them, taken or not). */
  publications(channel: string): Json[] {
    return this.frames.filter((f) => f.push === 'publication' && f.channel === channel);
  }

  /** Waits until `count` publications of `channel` have arrived in total; returns them all. */
  waitPublications(channel: string, count: number, timeoutMs = WAIT_MS): Promise<Json[]> {
    return this.waitUntil(
      () => {
        const list = this.publications(channel);
        return list.length >= count ? list : undefined;
      },
      `${count} publications on ${channel}`,
      timeoutMs,
    );
  }

  /** Waits for a publication whose data equals `marker` (as JSON); returns the channel's publications up to it. */
  waitMarker(channel: string, marker: unknown, timeoutMs = WAIT_MS): Promise<Json[]> {
    const text = JSON.stringify(marker);
    return this.waitUntil(
      () => {
        const list = this.publications(channel);
        const index = list.findIndex((p) => JSON.stringify(p.data) === text);
        return index === -1 ? undefined : list.slice(0, index + 1);
      },
      `marker ${text} on ${channel}`,
      timeoutMs,
    );
  }

  send(frame: unknown): void {
    this.ws.send(JSON.stringify(frame));
  }

  sendRaw(data: string | Buffer): void {
    this.ws.send(data);
  }

  newId(): number {
    return this.#nextId++;
  }

  /** Sends a command and resolves with its reply frame (`result` or `error`). */
  request(method: string, params?: unknown): Promise<Json> {
    const id = this.newId();
    const frame: Record<string, unknown> = { id, method };
    if (params !== undefined) frame['params'] = params;
    this.send(frame);
    return this.reply(id, method);
  }

  /** Waits for (and consumes) the reply with `id`. */
  reply(id: number, what = 'command'): Promise<Json> {
    return this.take((f) => f.id === id && f.push === undefined, `reply to ${what} #${id}`);
  }

  /** Sends a command and returns its result; fails the test on an error reply. */
  async call(method: string, params?: unknown): Promise<Json> {
    const reply = await this.request(method, params);
    if (reply.error !== undefined) {
      throw new Error(`${method} ${JSON.stringify(params)} failed: ${JSON.stringify(reply.error)}`);
    }
    return reply.result;
  }

  /** Sends a command that must fail; returns the error code. */
  async callError(method: string, params?: unknown): Promise<number> {
    const reply = await this.request(method, params);
    if (reply.error === undefined) {
      throw new Error(`${method} ${JSON.stringify(params)} should fail but answered ${JSON.stringify(reply)}`);
    }
    return reply.error.code;
  }

  /** Sends `connect` (anonymous without a token); records the client id; returns the result. */
  async connect(token?: string): Promise<Json> {
    const result = await this.call('connect', token === undefined ? {} : { token });
    this.clientId = result.client;
    return result;
  }

  waitClose(timeoutMs = WAIT_MS): Promise<Closed> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`timed out after ${timeoutMs} ms waiting for close; last frames: ${tail(this.frames)}`)),
        timeoutMs,
      );
      void this.closed.then((info) => {
        clearTimeout(timer);
        resolve(info);
      });
    });
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** Closes with 1000 and waits for the close handshake. */
  close(): Promise<Closed> {
    this.ws.close(1000);
    return this.waitClose();
  }
}

function tail(frames: readonly Json[]): string {
  const text = JSON.stringify(frames.slice(-8));
  return text.length > 1500 ? text.slice(0, 1500) + '…' : text;
}

/** Opens a WebSocket (no `connect` command yet). */
export function openWs(url: string, options: WebSocket.ClientOptions = {}): Promise<WsClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, options);
    const client = new WsClient(ws);
    ws.once('open', () => resolve(client));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    ws.once('error', (error) => reject(error));
  });
}

/** Opens a WebSocket and connects as `sub` (a token is minted with `claims`), or anonymously when `sub` is null. */
export async function connectWs(
  h: TestHerald,
  sub: string | null,
  claims: Record<string, unknown> = {},
  options: WebSocket.ClientOptions = {},
): Promise<WsClient> {
  const client = await openWs(h.wsUrl, options);
  await client.connect(sub === null ? undefined : await h.token(sub, claims));
  return client;
}

/** Signs a JWT with an arbitrary HMAC secret, claims and HMAC algorithm (for forged or unusual tokens). */
export function signToken(
  secret: string,
  claims: Record<string, unknown>,
  alg: 'HS256' | 'HS384' | 'HS512' = 'HS256',
): Promise<string> {
  return new SignJWT({ ...claims }).setProtectedHeader({ alg }).sign(new TextEncoder().encode(secret));
}

export interface HttpAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** The body parsed as JSON, or the text when it is not JSON. */
  readonly body: Json;
}

/** Sends an HTTP request; a non-string body is JSON-encoded (content-type JSON unless given). */
export async function http(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: unknown; timeoutMs?: number } = {},
): Promise<HttpAnswer> {
  const headers: Record<string, string> = { ...(init.headers ?? {}) };
  let body: string | undefined;
  if (init.body !== undefined) {
    body = typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
    if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
  }
  const response = await fetch(url, {
    method: init.method ?? (body === undefined ? 'GET' : 'POST'),
    headers,
    ...(body === undefined ? {} : { body }),
    signal: AbortSignal.timeout(init.timeoutMs ?? WAIT_MS * 3),
  });
  const text = await response.text();
  let parsed: Json = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: response.status, headers: response.headers, text, body: parsed };
}

/**
 * POSTs a raw body with node:http and resolves with the answer even when the
 * server answers early and stops reading (as for an oversize body). Rejects
 * when no answer arrives at all (connection reset without a response).
 */
export function postRaw(url: string, headers: Record<string, string>, body: Buffer): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': String(body.length), ...headers },
    });
    const timer = setTimeout(() => request.destroy(new Error(`no answer within ${WAIT_MS * 3} ms`)), WAIT_MS * 3);
    let answered = false;
    request.on('response', (response) => {
      answered = true;
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: Json = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON
        }
        const responseHeaders = new Headers();
        for (const [k, v] of Object.entries(response.headers)) if (typeof v === 'string') responseHeaders.set(k, v);
        resolve({ status: response.statusCode ?? 0, headers: responseHeaders, text, body: parsed });
      };
      response.on('end', finish);
      response.on('error', finish);
      response.on('close', finish);
    });
    request.on('error', (error) => {
      // a write error (EPIPE/ECONNRESET) after the answer arrived is expected
      if (!answered) {
        clearTimeout(timer);
        reject(new Error(`no HTTP answer: ${error.message}`));
      }
    });
    request.end(body);
  });
}

/** Re-runs an async probe (e.g. an API call) until it returns a non-undefined value. */
export async function eventually<T>(check: () => Promise<T | undefined>, what: string, timeoutMs = WAIT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last === undefined ? '' : ': ' + String(last)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

let counter = 0;
/** A channel-name-safe unique name, so tests never share streams. */
export function unique(prefix: string): string {
  counter += 1;
  return `${prefix}-${counter}-${randomBytes(3).toString('hex')}`;
}
