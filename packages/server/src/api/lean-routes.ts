/**
 * The lean path of the server API's publish routes: `POST /api/publish`,
 * `/api/broadcast` and `/api/batch` with a JSON body, answered by the front
 * (edge/front.ts) instead of through fastify's request pipeline, which cost
 * more than the publish itself. A request of these routes in a content type
 * other than the usual spellings of JSON, or with a query string, goes to
 * fastify's `/api/:method` route (app/http.ts), untouched.
 *
 * The answers are fastify's, byte for byte: after the front's headers and
 * origin check, the same checks in the same order as that route, with the
 * same code and headers (packages/server/test/integration/api-lean-path.test.ts
 * compares them):
 *
 * 1. the per-IP rate limit (the same counters as fastify's route,
 *    rate-limits.ts: in this process, or in Redis with `limits.scope:
 *    "cluster"`) → 429 with `retry-after`;
 * 2. the body (the front's `readBodyThen`: 413, `invalid_utf8`,
 *    `json_too_deep`, `invalid_json`, each ending the connection);
 * 3. the API key → 401; the per-key limit → 429; draining → 503;
 * 4. the method (ApiExecutor: scope, schema, run) → 200 or its ApiError.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { encodeResult } from '@herald/protocol';
import type { ApiKeyVerifier, ApiPrincipal } from '../auth/api-keys.ts';
import type { Node } from '../core/node.ts';
import { answerError, answerJson, readBodyThen, type BodyLimits, type Front } from '../edge/front.ts';
import { ApiError, type ApiExecutor } from './executor.ts';
import type { ApiRateLimits } from './rate-limits.ts';

export interface LeanRoutesOptions {
  readonly node: Node;
  readonly apiKeys: ApiKeyVerifier;
  readonly executor: ApiExecutor;
  /** `api.maxBodyBytes` and `limits.maxJsonDepth`. */
  readonly body: BodyLimits;
  /** The client address of a request, as fastify's `request.ip` has it. */
  readonly ip: (request: IncomingMessage) => string;
  /** The API's rate limits, shared with fastify's route. */
  readonly limits: ApiRateLimits;
}

/** The paths of the lean routes, with the API method each runs (the lean HTTP layer, `http.leanPublish`, takes these paths). */
export const LEAN_API_ROUTES: ReadonlyMap<string, string> = new Map([
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

/** What the lean path takes: a JSON body in a usual spelling, no query string (fastify takes the rest). */
function taken(request: IncomingMessage): boolean {
  const type = request.headers['content-type'];
  return type !== undefined && JSON_TYPES.has(type) && request.url?.includes('?') === false;
}

/** The API key, from `Authorization: Bearer` or `X-API-Key` only (never the URL). */
export function presentedKey(headers: IncomingMessage['headers']): string | undefined {
  const authorization = headers.authorization;
  if (typeof authorization === 'string' && authorization.startsWith('Bearer ')) return authorization.slice(7).trim();
  const header = headers['x-api-key'];
  return typeof header === 'string' ? header : undefined;
}

/** Registers the publish routes on the front. */
export function registerLeanRoutes(front: Front, options: LeanRoutesOptions): void {
  const { node, apiKeys, executor, limits } = options;
  for (const [path, method] of LEAN_API_ROUTES) {
    // No async function and no promise of its own: the body is read with callbacks and the
    // method's own promise (the publish's) is the only one between the request and its answer.
    const answer = (request: IncomingMessage, response: ServerResponse, headers: readonly string[], body: unknown): void => {
      const key = presentedKey(request.headers);
      const principal = key === undefined ? null : apiKeys.verify(key, request.socket);
      if (principal === null) return answerError(response, headers, 'unauthorized');
      const waitKey = limits.byKey(principal.name);
      if (typeof waitKey === 'object') {
        waitKey.then(
          (wait) => afterKeyLimit(request, response, headers, body, principal, wait),
          (error: unknown) => front.failed(error, request, response, headers),
        );
        return;
      }
      afterKeyLimit(request, response, headers, body, principal, waitKey);
    };
    const afterKeyLimit = (request: IncomingMessage, response: ServerResponse, headers: readonly string[], body: unknown, principal: ApiPrincipal, waitKey: number | undefined): void => {
      if (waitKey !== undefined) return answerError(response, headers, 'too_many_requests', undefined, waitKey);
      if (node.draining) return answerError(response, headers, 'unavailable');
      try {
        executor.start(
          method,
          body,
          principal,
          (result) => {
            try {
              answerJson(response, headers, 200, encodeResult(result));
            } catch (error) {
              front.failed(error, request, response, headers);
            }
          },
          (error) => answerError(response, headers, error.code, error.detail),
        );
      } catch (error) {
        return error instanceof ApiError ? answerError(response, headers, error.code, error.detail) : answerError(response, headers, 'internal');
      }
    };
    const afterIpLimit = (request: IncomingMessage, response: ServerResponse, headers: readonly string[], waitIp: number | undefined): void => {
      if (waitIp !== undefined) return answerError(response, headers, 'too_many_requests', undefined, waitIp);
      readBodyThen(
        request,
        response,
        headers,
        options.body,
        (value) => {
          try {
            answer(request, response, headers, value);
          } catch (error) {
            front.failed(error, request, response, headers);
          }
        },
        () => undefined,
      );
    };
    front.route(
      'POST',
      path,
      (request, response, { headers }) => {
        const waitIp = limits.byIp(options.ip(request));
        // A promise only when the limits are cluster-wide (counted in Redis).
        if (typeof waitIp === 'object') return waitIp.then((wait) => afterIpLimit(request, response, headers, wait));
        afterIpLimit(request, response, headers, waitIp);
      },
      taken,
    );
  }
}
