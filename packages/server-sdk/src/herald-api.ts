/**
 * A typed client of Herald's server HTTP API (`POST /api/<method>`,
 * docs/protocol.md "Server HTTP API"), for backends.
 *
 * Guarantees:
 * - request and result types are `Static<>` of the schemas in
 *   `@herald/protocol/api`, the ones the server checks requests against;
 * - every answer is read as hostile input: at most `maxResponseBytes`,
 *   strict UTF-8, JSON nested at most `maxResponseDepth` deep without
 *   prototype-poisoning keys, then checked against the method's result
 *   schema (or, for an error status, Herald's error body);
 * - every failure is a `HeraldApiError` (errors.ts); nothing else is thrown
 *   except a `TypeError` for arguments the SDK cannot send;
 * - the API key is only ever written into the `Authorization` header: it is
 *   not kept where `console.log`, `JSON.stringify` or an error shows it;
 * - no retries: a publish is not idempotent unless it carries an
 *   `idempotencyKey`, which makes retrying it safe; the caller decides. On
 *   429 the error carries `retryAfter`.
 */
import { ApiErrorBody, apiSchemas, schemaDetail, type ApiMethodName, type ApiRequest, type ApiResult } from '@herald/protocol/api';
import { readJson } from '@herald/protocol/json';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import { HeraldApiError, sdkError } from './errors.ts';

/** Options of `publish` and `broadcast`. */
export interface PublishOptions {
  /**
   * Makes the publish safe to retry (docs/protocol.md "Idempotent publish"):
   * 1 to 128 printable ASCII characters, one per event you publish.
   */
  readonly idempotencyKey?: string | undefined;
}

export interface HeraldApiOptions {
  /** Herald's public URL, e.g. `https://rt.example.com` (a path prefix is kept: `https://example.com/herald/`). */
  readonly url: string | URL;
  /** An API key with the scopes the methods need (`herald keys create`). Sent as `Authorization: Bearer`. */
  readonly apiKey: string;
  /** A `fetch` to use instead of the global one (a proxy agent, instrumentation). */
  readonly fetch?: typeof globalThis.fetch;
  /** Milliseconds for the whole exchange, answer body included (default 10000). */
  readonly timeoutMs?: number;
  /** Largest answer body read (default 64 MiB); a larger one is `invalid_response`. */
  readonly maxResponseBytes?: number;
  /**
   * Deepest JSON nesting read in an answer (default 1002: history wraps
   * data two levels deeper than the deepest `limits.maxJsonDepth` allows).
   */
  readonly maxResponseDepth?: number;
}

export interface HistoryOptions {
  /** Most publications to return (0, the default: only the stream's position). */
  readonly limit?: number;
  /** Only publications after this position. */
  readonly since?: { readonly epoch: string; readonly offset: number };
  /** Newest first (ignored with `since`). */
  readonly reverse?: boolean;
}

export interface DisconnectOptions {
  /** Close with 3007 (the client reconnects) instead of 3503 (it does not). Default false. */
  readonly reconnect?: boolean;
}

const DEFAULT_TIMEOUT_MS = 10000;
const DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
const DEFAULT_MAX_RESPONSE_DEPTH = 1002;

const utf8 = new TextDecoder('utf-8', { fatal: true });
const checks = new Map<TSchema, TypeCheck<TSchema>>();

function checkFor(schema: TSchema): TypeCheck<TSchema> {
  let check = checks.get(schema);
  if (check === undefined) {
    check = TypeCompiler.Compile(schema);
    checks.set(schema, check);
  }
  return check;
}

/** `Retry-After` in seconds (Herald sends seconds; an HTTP date is converted). */
function retryAfterSeconds(header: string | null, now: number): number | undefined {
  if (header === null) return undefined;
  const text = header.trim();
  if (/^[0-9]{1,9}$/.test(text)) return Number(text);
  const at = Date.parse(text);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

function positiveInteger(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) throw new TypeError(`HeraldApi: ${name} must be a positive integer`);
  return value;
}

export class HeraldApi {
  readonly #base: URL;
  readonly #authorization: string;
  readonly #fetch: typeof globalThis.fetch;
  readonly #timeoutMs: number;
  readonly #maxBytes: number;
  readonly #maxDepth: number;

  constructor(options: HeraldApiOptions) {
    let base: URL;
    try {
      base = new URL(options.url);
    } catch {
      throw new TypeError('HeraldApi: url must be an absolute http(s) URL, such as https://rt.example.com');
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') throw new TypeError(`HeraldApi: url must be http or https, not ${base.protocol}`);
    if (base.username !== '' || base.password !== '') throw new TypeError('HeraldApi: url must not carry credentials; give the API key as apiKey');
    if (base.search !== '' || base.hash !== '') throw new TypeError('HeraldApi: url must not have a query or fragment');
    if (!base.pathname.endsWith('/')) base.pathname += '/';
    this.#base = base;
    // Visible ASCII only: what a header can carry. The message never quotes the key.
    if (typeof options.apiKey !== 'string' || !/^[\x21-\x7e]{1,4096}$/.test(options.apiKey)) {
      throw new TypeError('HeraldApi: apiKey must be a non-empty string of visible ASCII characters (an API key from `herald keys create`)');
    }
    this.#authorization = `Bearer ${options.apiKey}`;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#timeoutMs = positiveInteger(options.timeoutMs, DEFAULT_TIMEOUT_MS, 'timeoutMs');
    this.#maxBytes = positiveInteger(options.maxResponseBytes, DEFAULT_MAX_RESPONSE_BYTES, 'maxResponseBytes');
    this.#maxDepth = positiveInteger(options.maxResponseDepth, DEFAULT_MAX_RESPONSE_DEPTH, 'maxResponseDepth');
  }

  /**
   * Publishes `data` (any JSON value) to `channel`; resolves with its
   * position. With `idempotencyKey`, a retry within the server's window
   * (`api.idempotencyWindowMs`, 5 minutes) resolves with the first
   * position and publishes nothing. Scope `publish`.
   */
  publish(channel: string, data: unknown, options: PublishOptions = {}): Promise<ApiResult<'publish'>> {
    const body: ApiRequest<'publish'> = { channel, data };
    if (options.idempotencyKey !== undefined) body.idempotency_key = options.idempotencyKey;
    return this.call('publish', body);
  }

  /** Publishes `data` to every channel; each succeeds or fails on its own (`results`). `idempotencyKey` applies per channel. Scope `publish`. */
  broadcast(channels: readonly string[], data: unknown, options: PublishOptions = {}): Promise<ApiResult<'broadcast'>> {
    const body: ApiRequest<'broadcast'> = { channels: [...channels], data };
    if (options.idempotencyKey !== undefined) body.idempotency_key = options.idempotencyKey;
    return this.call('broadcast', body);
  }

  /**
   * Publishes many values in one request (`POST /api/batch`), in order, each
   * to its channel; each succeeds or fails on its own (`results`, one per
   * publish, in the same order). At most `api.maxBatchPublishes` (1000) per
   * call, and the request within `api.maxBodyBytes`. Scope `publish`.
   */
  publishMany(publishes: readonly { readonly channel: string; readonly data: unknown; readonly idempotencyKey?: string | undefined }[]): Promise<ApiResult<'batch'>> {
    return this.call('batch', {
      publishes: publishes.map(({ channel, data, idempotencyKey }) => (idempotencyKey === undefined ? { channel, data } : { channel, data, idempotency_key: idempotencyKey })),
    });
  }

  /** The channel's stream position and up to `limit` publications. Scope `read`. */
  history(channel: string, options: HistoryOptions = {}): Promise<ApiResult<'history'>> {
    const body: ApiRequest<'history'> = { channel };
    if (options.limit !== undefined) body.limit = options.limit;
    if (options.since !== undefined) body.since = { epoch: options.since.epoch, offset: options.since.offset };
    if (options.reverse !== undefined) body.reverse = options.reverse;
    return this.call('history', body);
  }

  /** The connections subscribed to `channel`, by connection id. Scope `read`. */
  presence(channel: string): Promise<ApiResult<'presence'>> {
    return this.call('presence', { channel });
  }

  /** How many connections and distinct users are subscribed to `channel`. Scope `read`. */
  presenceStats(channel: string): Promise<ApiResult<'presence_stats'>> {
    return this.call('presence_stats', { channel });
  }

  /** Channels with subscribers (starting with `prefix`), and how many. Scope `read`. */
  channels(prefix?: string): Promise<ApiResult<'channels'>> {
    return this.call('channels', prefix === undefined ? {} : { prefix });
  }

  /** Closes every connection of `user` on every node. Scope `admin`. */
  disconnect(user: string, options: DisconnectOptions = {}): Promise<ApiResult<'disconnect'>> {
    return this.call('disconnect', options.reconnect === undefined ? { user } : { user, reconnect: options.reconnect });
  }

  /**
   * Refuses the token with this `jti` (until `expiresAt`: unix seconds or a
   * Date; by default for `auth.revocationRetentionMs`) and closes the
   * connections using it. Scope `admin`.
   */
  revokeToken(jti: string, expiresAt?: number | Date): Promise<ApiResult<'revoke_token'>> {
    if (expiresAt === undefined) return this.call('revoke_token', { jti });
    const seconds = expiresAt instanceof Date ? Math.ceil(expiresAt.getTime() / 1000) : expiresAt;
    return this.call('revoke_token', { jti, expires_at: seconds });
  }

  /** Refuses every token of `user` issued until now and closes the user's connections. Scope `admin`. */
  revokeUser(user: string): Promise<ApiResult<'revoke_user'>> {
    return this.call('revoke_user', { user });
  }

  /** The server's version, uptime and nodes. Scope `read`. */
  info(): Promise<ApiResult<'info'>> {
    return this.call('info', {});
  }

  /** Calls any method by name with its request body. */
  async call<M extends ApiMethodName>(method: M, body: ApiRequest<M>): Promise<ApiResult<M>> {
    if (!Object.hasOwn(apiSchemas, method)) throw new TypeError(`HeraldApi: unknown method ${String(method)}`);
    let text: string | undefined;
    try {
      text = JSON.stringify(body);
    } catch (error) {
      throw new TypeError(`HeraldApi ${method}: the request cannot be written as JSON (${(error as Error).message})`, { cause: error });
    }
    if (text === undefined) throw new TypeError(`HeraldApi ${method}: the request cannot be written as JSON`);
    const signal = AbortSignal.timeout(this.#timeoutMs);
    let response: Response;
    try {
      response = await this.#fetch(new URL(`api/${method}`, this.#base), {
        method: 'POST',
        headers: { authorization: this.#authorization, 'content-type': 'application/json', accept: 'application/json' },
        body: text,
        signal,
        redirect: 'manual',
      });
    } catch (error) {
      throw this.#transportError(method, signal, error);
    }
    const answer = await this.#read(method, response, signal);
    if (response.status === 200) {
      const check = checkFor(apiSchemas[method].result);
      if (!check.Check(answer)) {
        throw sdkError(method, 'invalid_response', 200, `the result does not match the ${method} schema: ${schemaDetail(check, answer) ?? ''}`);
      }
      return answer as ApiResult<M>;
    }
    const errorCheck = checkFor(ApiErrorBody);
    if (!errorCheck.Check(answer)) {
      throw sdkError(method, 'invalid_response', response.status, `HTTP ${response.status} without Herald's error body: ${schemaDetail(errorCheck, answer) ?? ''}`);
    }
    const error = (answer as ApiErrorBody).error;
    throw new HeraldApiError(method, {
      code: error.code,
      status: response.status,
      message: error.message.slice(0, 500),
      detail: error.detail?.slice(0, 500),
      retryAfter: response.status === 429 ? retryAfterSeconds(response.headers.get('retry-after'), Date.now()) : undefined,
    });
  }

  /** The answer body as JSON, read as hostile input. */
  async #read(method: string, response: Response, signal: AbortSignal): Promise<unknown> {
    const status = response.status;
    const type = response.headers.get('content-type') ?? '';
    if (!/^application\/json\s*(;|$)/i.test(type)) {
      await response.body?.cancel().catch(() => undefined);
      throw sdkError(method, 'invalid_response', status, `HTTP ${status} with content-type ${JSON.stringify(type.slice(0, 100))}, not application/json`);
    }
    const declared = Number(response.headers.get('content-length') ?? NaN);
    const tooLarge = () => sdkError(method, 'invalid_response', status, `the answer is larger than maxResponseBytes (${this.#maxBytes})`);
    if (declared > this.#maxBytes) {
      await response.body?.cancel().catch(() => undefined);
      throw tooLarge();
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    if (response.body !== null) {
      const reader = response.body.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          total += value.byteLength;
          if (total > this.#maxBytes) {
            await reader.cancel().catch(() => undefined);
            throw tooLarge();
          }
          chunks.push(value);
        }
      } catch (error) {
        if (error instanceof HeraldApiError) throw error;
        throw this.#transportError(method, signal, error);
      }
    }
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const chunk of chunks) {
      bytes.set(chunk, at);
      at += chunk.byteLength;
    }
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      throw sdkError(method, 'invalid_response', status, 'the answer is not valid UTF-8');
    }
    const read = readJson(text, this.#maxDepth);
    if (!read.ok) {
      const why = read.error === 'too_deep' ? `nests deeper than maxResponseDepth (${this.#maxDepth})` : read.error === 'poisoned' ? 'has a __proto__ or constructor.prototype key' : 'is not JSON';
      throw sdkError(method, 'invalid_response', status, `the answer ${why}`);
    }
    return read.value;
  }

  #transportError(method: string, signal: AbortSignal, error: unknown): HeraldApiError {
    if (signal.aborted) return sdkError(method, 'timeout', 0, `no complete answer within ${this.#timeoutMs} ms`);
    // fetch's error says "fetch failed"; its cause says why (ECONNREFUSED, bad port, …).
    const cause = (error as { cause?: { code?: unknown; message?: unknown } } | undefined)?.cause;
    const why = typeof cause?.code === 'string' ? cause.code : typeof cause?.message === 'string' ? cause.message.slice(0, 100) : undefined;
    return sdkError(method, 'network_error', 0, `${this.#base.origin}${why === undefined ? '' : ` (${why})`}`, error);
  }
}
