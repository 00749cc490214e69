/**
 * The lean path of the server API's publish routes: `POST /api/publish`,
 * `/api/broadcast` and `/api/batch` with a JSON body, answered straight from
 * Node's `request` event instead of through fastify's request pipeline
 * (routing, hook chain, content-type parsers, reply objects), which cost
 * more than the publish itself. Everything else, and every request of these
 * routes this path does not fully understand (another content type, a query
 * string, a server that is closing), goes to fastify untouched, before
 * anything is counted or read.
 *
 * The answers are fastify's, byte for byte but for the order of nothing:
 * the same checks in the same order, with the same code and headers
 * (packages/server/test/integration/api-lean-path.test.ts compares them):
 *
 * 1. the security headers (edge/security-headers.ts); `connection: close`
 *    while the node drains;
 * 2. `Origin` refused → 403 `origin_not_allowed`; CORS: `vary: Origin`, and
 *    for an allowed origin `access-control-allow-origin` and
 *    `-allow-credentials` (what @fastify/cors sets for these routes);
 * 3. the per-IP rate limit (the same counters as fastify's route,
 *    rate-limits.ts) → 429 with `retry-after`;
 * 4. the body: over `api.maxBodyBytes` → 413 (declared or received), not
 *    UTF-8 → `invalid_utf8`, nesting over `limits.maxJsonDepth` →
 *    `json_too_deep`, not JSON or poisoned → `invalid_json`, each with
 *    `connection: close` as fastify's body parser answers;
 * 5. the API key → 401; the per-key limit → 429; draining → 503;
 * 6. the method (ApiExecutor: scope, schema, run) → 200 or its ApiError.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { apiErrors, encodeResult, type ApiErrorCode } from '@herald/protocol';
import { readJson } from '@herald/protocol/json';
import type { ApiKeyVerifier } from '../auth/api-keys.ts';
import type { Node } from '../core/node.ts';
import type { Logger } from '../core/logger.ts';
import type { OriginPolicy } from '../edge/origins.ts';
import { ApiError, type ApiExecutor } from './executor.ts';
import type { ApiRateLimits } from './rate-limits.ts';

export interface LeanRoutesOptions {
  readonly node: Node;
  readonly apiKeys: ApiKeyVerifier;
  readonly executor: ApiExecutor;
  readonly origins: OriginPolicy;
  readonly logger: Logger;
  /** `api.maxBodyBytes`. */
  readonly maxBodyBytes: number;
  /** `limits.maxJsonDepth`. */
  readonly maxJsonDepth: number;
  /** The security headers of every answer. */
  readonly securityHeaders: Readonly<Record<string, string>>;
  /** The client address of a request, as fastify's `request.ip` has it. */
  readonly ip: (request: IncomingMessage) => string;
  /** The API's rate limits, shared with fastify's route. */
  readonly limits: ApiRateLimits;
}

const ROUTES: ReadonlyMap<string, string> = new Map([
  ['/api/publish', 'publish'],
  ['/api/broadcast', 'broadcast'],
  ['/api/batch', 'batch'],
]);

/** Content types fastify reads as `application/json` (its parser's media type), in the forms clients send. */
const JSON_TYPES: ReadonlySet<string> = new Set([
  'application/json',
  'application/json; charset=utf-8',
  'application/json;charset=utf-8',
  'application/json; charset=UTF-8',
  'application/json;charset=UTF-8',
]);

const CONTENT_TYPE = 'application/json; charset=utf-8';

/** Refuses what is not UTF-8, as the JSON body parser does (app/http-input.ts). */
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The API key, from `Authorization: Bearer` or `X-API-Key` only (never the URL). */
export function presentedKey(headers: IncomingMessage['headers']): string | undefined {
  const authorization = headers.authorization;
  if (typeof authorization === 'string' && authorization.startsWith('Bearer ')) return authorization.slice(7).trim();
  const header = headers['x-api-key'];
  return typeof header === 'string' ? header : undefined;
}

/** `connection: close` once, where fastify's reply would hold it (a second set keeps the first place). */
function closeAfter(headers: string[]): void {
  for (let i = 0; i < headers.length; i += 2) if (headers[i] === 'connection') return;
  headers.push('connection', 'close');
}

export class LeanRoutes {
  readonly #options: LeanRoutesOptions;
  readonly #security: readonly string[];
  /** The security headers and `vary: Origin`: the headers of a request without `Origin` outside a drain. */
  readonly #plain: readonly string[];
  /** Set when fastify starts closing: its own answer (503) then applies. */
  closing = false;

  constructor(options: LeanRoutesOptions) {
    this.#options = options;
    this.#security = Object.entries(options.securityHeaders).flat();
    this.#plain = [...this.#security, 'vary', 'Origin'];
  }

  /** Takes the request when it is one of the lean routes' (true), or leaves it untouched for fastify (false). */
  handle(request: IncomingMessage, response: ServerResponse): boolean {
    if (request.method !== 'POST' || this.closing) return false;
    const method = ROUTES.get(request.url ?? '');
    if (method === undefined) return false;
    const type = request.headers['content-type'];
    if (type === undefined || !JSON_TYPES.has(type)) return false;
    void this.#serve(request, response, method).catch((error: unknown) => {
      this.#options.logger.error({ err: error, url: request.url }, 'request failed');
      if (!response.headersSent) this.#fail(response, [...this.#security], 'internal');
      else response.destroy();
    });
    return true;
  }

  async #serve(request: IncomingMessage, response: ServerResponse, method: string): Promise<void> {
    const options = this.#options;
    const origin = request.headers.origin;
    let headers: string[];
    if (origin === undefined && !options.node.draining) headers = this.#plain.slice();
    else {
      headers = this.#security.slice();
      if (options.node.draining) closeAfter(headers);
      const verdict = options.origins.check(origin, request.headers.host);
      if (verdict === 'refused') return this.#fail(response, headers, 'origin_not_allowed');
      headers.push('vary', 'Origin');
      if (verdict === 'allowed') headers.push('access-control-allow-origin', origin as string, 'access-control-allow-credentials', 'true');
    }

    const waitIp = options.limits.byIp(options.ip(request));
    if (waitIp !== undefined) return this.#limited(response, headers, waitIp);

    const body = await this.#readBody(request);
    if (body instanceof ApiError) {
      // The client may still be sending: the connection ends after the answer.
      closeAfter(headers);
      return this.#fail(response, headers, body.code);
    }

    const key = presentedKey(request.headers);
    const principal = key === undefined ? null : options.apiKeys.verify(key);
    if (principal === null) return this.#fail(response, headers, 'unauthorized');
    const waitKey = options.limits.byKey(principal.name);
    if (waitKey !== undefined) return this.#limited(response, headers, waitKey);
    if (options.node.draining) return this.#fail(response, headers, 'unavailable');
    let result: unknown;
    try {
      result = await options.executor.run(method, body.value, principal);
    } catch (error) {
      return error instanceof ApiError ? this.#fail(response, headers, error.code, error.detail) : this.#fail(response, headers, 'internal');
    }
    this.#send(response, 200, headers, encodeResult(result));
  }

  /** The parsed body, or the ApiError fastify's body parser answers with. */
  #readBody(request: IncomingMessage): Promise<{ value: unknown } | ApiError> {
    const { maxBodyBytes, maxJsonDepth } = this.#options;
    const declared = Number(request.headers['content-length']);
    if (declared > maxBodyBytes) return Promise.resolve(new ApiError('payload_too_large'));
    return new Promise((resolve) => {
      const chunks: Buffer[] = [];
      let received = 0;
      const done = (result: { value: unknown } | ApiError): void => {
        request.removeListener('data', onData);
        request.removeListener('end', onEnd);
        request.removeListener('error', onError);
        resolve(result);
      };
      const onData = (chunk: Buffer): void => {
        received += chunk.length;
        if (received > maxBodyBytes) done(new ApiError('payload_too_large'));
        else chunks.push(chunk);
      };
      // The client went away: nothing reaches it; the socket is gone with it.
      const onError = (): void => done(new ApiError('bad_request'));
      const onEnd = (): void => {
        if (!Number.isNaN(declared) && received !== declared) return done(new ApiError('bad_request'));
        let text: string;
        try {
          text = utf8.decode(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, received));
        } catch {
          return done(new ApiError('invalid_utf8'));
        }
        const read = readJson(text, maxJsonDepth);
        done(read.ok ? { value: read.value } : new ApiError(read.error === 'too_deep' ? 'json_too_deep' : 'invalid_json'));
      };
      request.on('data', onData);
      request.on('end', onEnd);
      request.on('error', onError);
    });
  }

  #limited(response: ServerResponse, headers: string[], seconds: number): void {
    headers.push('retry-after', String(seconds));
    this.#fail(response, headers, 'too_many_requests');
  }

  #fail(response: ServerResponse, headers: string[], code: ApiErrorCode, detail?: string): void {
    const message = apiErrors[code].message;
    this.#send(response, apiErrors[code].status, headers, JSON.stringify({ error: detail === undefined ? { code, message } : { code, message, detail } }));
  }

  #send(response: ServerResponse, status: number, headers: string[], body: string): void {
    headers.push('content-type', CONTENT_TYPE, 'content-length', String(Buffer.byteLength(body)));
    response.writeHead(status, headers);
    response.end(body);
  }
}
