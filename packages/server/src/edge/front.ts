/**
 * The front: the public listener's `request` listener, in front of fastify.
 * It answers a few exact routes itself, registered by the API (the publish
 * routes, api/lean-routes.ts) and the transports (the SSE stream, long
 * polling): fastify's request pipeline (routing, hook chain, content-type
 * parsers, a request, a reply and a child logger per request, kept for as
 * long as a stream or a held poll is open) costs more than their own work.
 * Every other request goes to fastify untouched, before anything is counted
 * or read.
 *
 * A front route gets what fastify's hooks give every request (app/http.ts),
 * in the same order, with the same answers, byte for byte
 * (packages/server/test/integration/api-lean-path.test.ts and
 * fast-routes.test.ts compare them with fastify's):
 *
 * 1. the security headers (security-headers.ts: the API's shorter set under
 *    `/api/`, the transports' under `/connection/`); `connection: close`
 *    while the node drains;
 * 2. `Origin` refused (origins.ts; on `/apps/{id}/connection/…` by the
 *    app's allowedOrigins when it has them) → 403 `origin_not_allowed`; CORS:
 *    `vary: Origin`, and for an allowed origin `access-control-allow-origin`
 *    and `-allow-credentials` (what @fastify/cors sets);
 * 3. the handler, with these headers and the query string. For a body it
 *    reads with `readBodyThen` or `jsonBody` (the rules of app/http-input.ts):
 *    over the limit → 413 (declared or received), not UTF-8 →
 *    `invalid_utf8`, nesting too deep → `json_too_deep`, not JSON or
 *    poisoned → `invalid_json`, each ending the connection after the answer
 *    as fastify's body parser does; `jsonBody` adds the content type (415)
 *    and the route's TypeBox schema, without coercion (400);
 * 4. a handler that throws → 500 `internal` (or the stream is cut when its
 *    head has left).
 *
 * Once fastify starts closing, every request goes to fastify (its 503). A
 * route may also leave a request to fastify (`accepts`), before anything is
 * read. Fastify keeps a route for each front path (see `stub`, or a route of
 * its own), so that other methods get 405 with `Allow` (HEAD too: a front
 * route opens a stream or a session), and a percent-encoded path is
 * answered as before.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { FastifyInstance } from 'fastify';
import { apiErrors, type ApiErrorCode } from '@herald/protocol';
import { readJson } from '@herald/protocol/json';
import { schemaDetail } from '@herald/protocol/commands';
import type { Logger } from '../core/logger.ts';
import type { OriginPolicy } from './origins.ts';
import { securityHeadersFor, type SecurityHeaderSets } from './security-headers.ts';
import type { AppPaths, AppScope } from '../transports/app-paths.ts';

/** What a front route's handler is given besides the request and response. */
export interface FrontContext {
  /** Response headers every answer carries (flat name, value list): security, drain, CORS. */
  readonly headers: readonly string[];
  /** The query string, without `?` ('' when absent). */
  readonly query: string;
  /** The app of a request on `/apps/{id}/connection/…` (not the default app), transports/app-paths.ts. */
  readonly scope?: AppScope | undefined;
}

export type FrontHandler = (request: IncomingMessage, response: ServerResponse, context: FrontContext) => void | Promise<void>;

export interface FrontOptions {
  /** Security headers by lower-case name (security-headers.ts): a route gets its path's set (`securityHeadersFor`). */
  readonly securityHeaders: SecurityHeaderSets;
  readonly origins: Pick<OriginPolicy, 'check'>;
  /** True while the node drains: answers end their connection. */
  readonly draining: () => boolean;
  readonly logger: Logger;
  /** The apps' native paths: a route under `/connection/` also answers `/apps/{id}/connection/…` (transports/app-paths.ts). */
  readonly appPaths?: AppPaths | undefined;
}

interface Route {
  readonly handler: FrontHandler;
  readonly accepts: ((request: IncomingMessage) => boolean) | undefined;
  /** The route's security headers (flat name, value list). */
  readonly security: readonly string[];
  /** `security` then `vary: Origin`: the headers of a request without `Origin` outside a drain. */
  readonly plain: readonly string[];
  /**
   * The headers of a request from an allowed `Origin` outside a drain, by
   * origin (at most ALLOWED_HEADS of them; an origin may be any host a
   * client names, when it is the request's own): one list per origin, so
   * that what is made once per list (a 200 answer's head, an SSE stream's
   * head) is made once per origin.
   */
  readonly allowed: Map<string, readonly string[]>;
}

const ALLOWED_HEADS = 256;

type RequestListener = (request: IncomingMessage, response: ServerResponse) => void;

export class Front {
  /** Routes by method, then by path (no string built per request to look one up). */
  readonly #routes = new Map<string, Map<string, Route>>();
  readonly #options: FrontOptions;
  /** Set when fastify starts closing: its own answer (503) then applies. */
  #closing = false;

  constructor(options: FrontOptions) {
    this.#options = options;
  }

  /**
   * Answers `method path` (the path without its query string) with
   * `handler`; a request `accepts` refuses goes to fastify. A path under
   * `/api/` gets the API's security headers, one under `/connection/` the
   * transports' (also on its `/apps/{id}/connection/…` form).
   */
  route(method: 'GET' | 'POST', path: string, handler: FrontHandler, accepts?: (request: IncomingMessage) => boolean): void {
    const security = Object.entries(securityHeadersFor(this.#options.securityHeaders, path)).flat();
    let paths = this.#routes.get(method);
    if (paths === undefined) this.#routes.set(method, (paths = new Map()));
    paths.set(path, { handler, accepts, security, plain: [...security, 'vary', 'Origin'], allowed: new Map() });
  }

  /** Puts the front before `app`'s request listener (fastify's). */
  install(app: FastifyInstance): void {
    const server = app.server;
    const [framework, ...others] = server.listeners('request') as RequestListener[];
    if (framework === undefined || others.length > 0) throw new Error('expected fastify as the only request listener');
    server.removeListener('request', framework);
    server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      if (!this.serve(request, response)) framework(request, response);
    });
    app.addHook('preClose', (done) => {
      this.#closing = true;
      done();
    });
  }

  /** Answers `request` when it is for a front route (true); false leaves it untouched. */
  serve(request: IncomingMessage, response: ServerResponse): boolean {
    if (this.#closing) return false;
    const url = request.url ?? '';
    const mark = url.indexOf('?');
    const paths = this.#routes.get(request.method ?? '');
    if (paths === undefined) return false;
    const path = mark === -1 ? url : url.slice(0, mark);
    let route = paths.get(path);
    let scope: AppScope | undefined;
    let refused: ApiErrorCode | undefined;
    if (route === undefined && this.#options.appPaths !== undefined) {
      // `/apps/{id}/connection/…`: the unprefixed route, for that app.
      const match = this.#options.appPaths.match(path);
      if (match === undefined) return false;
      route = paths.get(match.rest);
      refused = match.refused;
      if (match.refused === undefined) scope = match.scope;
    }
    if (route === undefined || (route.accepts !== undefined && !route.accepts(request))) return false;
    const headers = this.#headers(route, request, response, scope);
    if (headers === undefined) return true;
    if (refused !== undefined) answerError(response, headers, refused);
    else this.#run(route.handler, request, response, { headers, query: mark === -1 ? '' : url.slice(mark + 1), scope });
    return true;
  }

  /**
   * A fastify route for `path` that hands the request to its front handler:
   * reached only by what the front did not take (an encoded path); it makes
   * fastify answer other methods 405 with `Allow`. HEAD among them: a front
   * handler opens a stream or a session, which a HEAD must not, so a GET
   * stub gets no automatic HEAD route.
   */
  stub(app: FastifyInstance, method: 'GET' | 'POST', path: string): void {
    app.route({
      method,
      url: path,
      exposeHeadRoute: false,
      handler: (request, reply) => {
        const route = this.#routes.get(method)?.get(path);
        if (route === undefined) return reply.callNotFound();
        // The headers fastify's hooks put on the reply (security, CORS) go with the hijacked answer.
        const headers: string[] = [];
        for (const [name, value] of Object.entries(reply.getHeaders())) if (typeof value === 'string') headers.push(name, value);
        reply.hijack();
        const mark = request.url.indexOf('?');
        this.#run(route.handler, request.raw, reply.raw, { headers, query: mark === -1 ? '' : request.url.slice(mark + 1) });
      },
    });
  }

  /**
   * The headers of every answer to `request`, or undefined once its origin
   * is refused (answered 403). The origin is judged for the app of `scope`
   * (its allowedOrigins, origins.ts); the cached lists hold only what an
   * allowed origin's answer carries, the same for every app.
   */
  #headers(route: Route, request: IncomingMessage, response: ServerResponse, scope: AppScope | undefined): readonly string[] | undefined {
    const origin = request.headers.origin;
    const draining = this.#options.draining();
    if (origin === undefined && !draining) return route.plain;
    const verdict = this.#options.origins.check(origin, request.headers.host, scope?.app);
    const cached = verdict === 'allowed' && !draining ? route.allowed.get(origin as string) : undefined;
    if (cached !== undefined) return cached;
    const headers = [...route.security];
    if (draining) headers.push('connection', 'close');
    if (verdict === 'refused') {
      answerError(response, headers, 'origin_not_allowed');
      return undefined;
    }
    headers.push('vary', 'Origin');
    if (verdict === 'allowed') {
      headers.push('access-control-allow-origin', origin as string, 'access-control-allow-credentials', 'true');
      if (!draining && route.allowed.size < ALLOWED_HEADS) route.allowed.set(origin as string, headers);
    }
    return headers;
  }

  #run(handler: FrontHandler, request: IncomingMessage, response: ServerResponse, context: FrontContext): void {
    try {
      const done = handler(request, response, context);
      if (done !== undefined) done.catch((error: unknown) => this.failed(error, request, response, context.headers));
    } catch (error) {
      this.failed(error, request, response, context.headers);
    }
  }

  /**
   * A handler's failure: logged, answered 500 `internal` (or the stream cut
   * once its head has left). What a handler that throws or rejects gets; a
   * handler that goes on in callbacks calls it for what throws there.
   */
  failed(error: unknown, request: IncomingMessage, response: ServerResponse, headers: readonly string[]): void {
    this.#options.logger.error({ err: error, url: request.url?.split('?', 1)[0] }, 'request failed');
    if (!response.headersSent) answerError(response, headers, 'internal');
    else response.destroy();
  }
}

const JSON_TYPE = 'application/json; charset=utf-8';

/** `{error: {code, message, detail?}}`: the message is the code's fixed text; `detail` says what in the request was wrong. */
export function apiErrorBody(code: ApiErrorCode, detail?: string): { error: { code: ApiErrorCode; message: string; detail?: string } } {
  const message = apiErrors[code].message;
  return { error: detail === undefined ? { code, message } : { code, message, detail } };
}

/**
 * The head of a 200 JSON answer for each header list seen (the context's
 * lists are shared per route and origin verdict): the list, the content
 * type, then a last slot for the length, filled per answer. Node reads the
 * list while `writeHead` runs and keeps nothing of it.
 */
const okHeads = new WeakMap<readonly string[], string[]>();

/** Answers JSON text with `status`, the context's headers, then `extra`. */
export function answerJson(response: ServerResponse, headers: readonly string[], status: number, text: string, extra?: readonly string[]): void {
  if (response.destroyed) return;
  const length = String(Buffer.byteLength(text));
  if (status === 200 && extra === undefined) {
    let head = okHeads.get(headers);
    if (head === undefined) okHeads.set(headers, (head = [...headers, 'content-type', JSON_TYPE, 'content-length', '']));
    head[head.length - 1] = length;
    response.writeHead(200, head);
  } else {
    response.writeHead(status, [...headers, ...(extra ?? []), 'content-type', JSON_TYPE, 'content-length', length]);
  }
  response.end(text);
}

/** Answers a registered API error (`Retry-After` when given). */
export function answerError(response: ServerResponse, headers: readonly string[], code: ApiErrorCode, detail?: string, retryAfterSeconds?: number): void {
  const extra = retryAfterSeconds === undefined ? undefined : ['retry-after', String(retryAfterSeconds)];
  answerJson(response, headers, apiErrors[code].status, JSON.stringify(apiErrorBody(code, detail)), extra);
}

/** `headers` with `connection: close` once, where fastify's reply would hold it (a second set keeps the first place). */
function closing(headers: readonly string[]): readonly string[] {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === 'connection') return headers;
  return [...headers, 'connection', 'close'];
}

export interface BodyLimits {
  /** Largest body in bytes (413 beyond): `api.maxBodyBytes`. */
  readonly limit: number;
  /** `limits.maxJsonDepth`. */
  readonly maxDepth: number;
}

/** Refuses what is not UTF-8 (overlong forms, surrogates, truncated sequences), as app/http-input.ts. */
const utf8 = new TextDecoder('utf-8', { fatal: true });


/**
 * A request of the lean HTTP layer (edge/lean-http.ts `LeanRequest`, loaded
 * only when one of the `http.lean…` switches is on): its body may
 * have come whole in the read of its head. `takeBody` answers it once (then
 * no 'data' nor 'end' come for it), else undefined. node:http's requests
 * have no `takeBody`.
 */
export interface CarriesWholeBody {
  takeBody(): Buffer | undefined;
}

/**
 * A response of the lean HTTP layer (edge/lean-http.ts `LeanResponse`): a
 * handler whose answer becomes a stream written to the socket directly
 * (the SSE transport's) calls `streaming()` before its first write; the
 * layer then reads no other request on that connection (the stream says
 * `Connection: close`) and no timeout of its applies. node:http's responses
 * have no `streaming`.
 */
export interface StreamsOnSocket {
  streaming(): void;
}

/**
 * Reads a JSON body by the rules of app/http-input.ts, whatever its content
 * type, without a promise (the long-poll and publish routes'): calls `onValue`
 * with the parsed value, or `onNone` once the error was answered or the
 * request went away. `quick`, when given, reads the raw body first: a value
 * it returns is taken as is (it must be what the full reading would give:
 * a narrow exact form, such as a poll's `{"seq":N}`); undefined falls back
 * to the full reading.
 */
export function readBodyThen(
  request: IncomingMessage,
  response: ServerResponse,
  headers: readonly string[],
  limits: BodyLimits,
  onValue: (value: unknown) => void,
  onNone: () => void,
  quick?: (body: Buffer) => unknown,
): void {
  if (Number(request.headers['content-length']) > limits.limit) return refuseBody(response, headers, 'payload_too_large', onNone);
  // The lean layer's request with its whole body already read (a poll's, in the read of its head): no listeners, no closure.
  const whole = (request as Partial<CarriesWholeBody>).takeBody?.();
  if (whole !== undefined) {
    const value = bodyValue(whole, limits, quick);
    if (value instanceof Refusal) refuseBody(response, headers, value.code, onNone);
    else onValue(value);
    return;
  }
  let chunks: Buffer[] = [];
  let size = 0;
  const onData = (chunk: Buffer): void => {
    size += chunk.length;
    if (size <= limits.limit) chunks.push(chunk);
    else {
      finish();
      refuseBody(response, headers, 'payload_too_large', onNone);
    }
  };
  const onEnd = (): void => {
    const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
    finish();
    const value = bodyValue(body, limits, quick);
    if (value instanceof Refusal) refuseBody(response, headers, value.code, onNone);
    else onValue(value);
  };
  const onGone = (): void => {
    finish();
    onNone();
  };
  // A held poll keeps its request, but not these listeners nor what they hold.
  const finish = (): void => {
    request.removeListener('data', onData);
    request.removeListener('end', onEnd);
    request.removeListener('close', onGone);
    chunks = [];
  };
  request.on('data', onData);
  request.on('end', onEnd);
  request.on('close', onGone);
}

/** Answers a body's error (the connection ends after it, as fastify's body parser does), then `onNone`. */
function refuseBody(response: ServerResponse, headers: readonly string[], code: ApiErrorCode, onNone: () => void): void {
  answerError(response, closing(headers), code);
  onNone();
}

/** A body's error, as `bodyValue` returns it: one object per code, never a JSON value. */
class Refusal {
  readonly code: ApiErrorCode;
  constructor(code: ApiErrorCode) {
    this.code = code;
  }
}
const INVALID_UTF8 = new Refusal('invalid_utf8');
const JSON_TOO_DEEP = new Refusal('json_too_deep');
const INVALID_JSON = new Refusal('invalid_json');

/** A whole body's value: `quick`'s, else UTF-8 and JSON by the rules; or its error. */
function bodyValue(body: Buffer, limits: BodyLimits, quick: ((body: Buffer) => unknown) | undefined): unknown {
  if (quick !== undefined) {
    const value = quick(body);
    if (value !== undefined) return value;
  }
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    return INVALID_UTF8;
  }
  const read = readJson(text, limits.maxDepth);
  if (read.ok) return read.value;
  return read.error === 'too_deep' ? JSON_TOO_DEEP : INVALID_JSON;
}

/**
 * A JSON body reader for a front route, as fastify reads a route's body:
 * the content type (JSON only, else 415; none with no body: the value is
 * undefined, which the schema then judges), `readBodyThen`, then `schema`
 * (TypeBox, no coercion; 400 with the schema's detail). Resolves with
 * `{ value }`, or undefined once it has answered the error itself.
 */
export function jsonBody<T>(schema: TSchema, limits: BodyLimits): (request: IncomingMessage, response: ServerResponse, headers: readonly string[]) => Promise<{ value: T } | undefined> {
  const read = jsonBodyThen<T>(schema, limits);
  return (request, response, headers) =>
    new Promise((resolve) => {
      read(request, response, headers, (value) => resolve({ value }), () => resolve(undefined));
    });
}

/**
 * `jsonBody` without a promise: `onValue` gets the checked value (and the
 * request, response and headers it was called with, so that a route needs
 * no closure per request), `onNone` is called once the error was answered
 * or the request went away. `quick` as in `readBodyThen`; what it returns
 * is checked by the schema too.
 */
export function jsonBodyThen<T>(
  schema: TSchema,
  limits: BodyLimits,
  quick?: (body: Buffer) => unknown,
): (
  request: IncomingMessage,
  response: ServerResponse,
  headers: readonly string[],
  onValue: (value: T, request: IncomingMessage, response: ServerResponse, headers: readonly string[]) => void,
  onNone: () => void,
) => void {
  const check = TypeCompiler.Compile(schema);
  const validate = (value: unknown, request: IncomingMessage, response: ServerResponse, headers: readonly string[], onValue: (value: T, request: IncomingMessage, response: ServerResponse, headers: readonly string[]) => void, onNone: () => void): void => {
    if (check.Check(value)) return onValue(value as T, request, response, headers);
    answerError(response, headers, 'bad_request', schemaDetail(check, value));
    onNone();
  };
  return (request, response, headers, onValue, onNone) => {
    const type = request.headers['content-type'];
    if (type === undefined) {
      const length = request.headers['content-length'];
      if (request.headers['transfer-encoding'] === undefined && (length === undefined || length === '0')) return validate(undefined, request, response, headers, onValue, onNone);
      answerError(response, headers, 'unsupported_media_type');
      return onNone();
    }
    const semicolon = type.indexOf(';');
    if ((semicolon === -1 ? type : type.slice(0, semicolon)).trim().toLowerCase() !== 'application/json') {
      answerError(response, headers, 'unsupported_media_type');
      return onNone();
    }
    // A body the lean layer read whole (a poll's): read and checked here, without a closure; over the limit, readBodyThen refuses it.
    if (!(Number(request.headers['content-length']) > limits.limit)) {
      const whole = (request as Partial<CarriesWholeBody>).takeBody?.();
      if (whole !== undefined) {
        const value = bodyValue(whole, limits, quick);
        if (value instanceof Refusal) return refuseBody(response, headers, value.code, onNone);
        return validate(value, request, response, headers, onValue, onNone);
      }
    }
    readBodyThen(request, response, headers, limits, (value) => validate(value, request, response, headers, onValue, onNone), onNone, quick);
  };
}
