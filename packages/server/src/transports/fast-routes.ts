/**
 * Routes answered from Node's `request` event, in front of fastify: the
 * connection endpoints a client holds open or hits many times a second (the
 * SSE stream, long-poll open and poll). Fastify keeps a request, a reply
 * and a child logger alive for as long as a request is open, which for an
 * SSE stream or a held poll is the connection's whole life, and its hook
 * chain and routing cost more than a poll's own work. Every other request
 * goes to fastify unchanged.
 *
 * A fast route gets what fastify's hooks give every request (packages/server/src/app/http.ts):
 * the security headers, `Connection: close` during a drain, the origin
 * allowlist (403 `origin_not_allowed`) and the CORS answer headers (`Vary:
 * Origin`; `Access-Control-Allow-Origin` and `-Credentials` for an allowed
 * origin), and the same body rules (packages/server/src/app/http-input.ts): JSON only (415
 * otherwise), the body limit (413), strict UTF-8, the nesting depth (these
 * three end the connection after the answer, as fastify does), then the
 * route's TypeBox schema without coercion.
 * Answers are the registered API errors, byte for byte what fastify sends.
 * Fastify keeps a route for each path too (see `stub`), so that other
 * methods get 405 with `Allow` and HEAD is answered as before.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { TSchema } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { FastifyInstance } from 'fastify';
import { apiErrors, type ApiErrorCode } from '@herald/protocol';
import { readJson } from '@herald/protocol/json';
import { schemaDetail } from '@herald/protocol/commands';
import { apiErrorBody } from './http-connection.ts';
import type { Logger } from '../core/logger.ts';

/** What a fast route's handler is given besides the request and response. */
export interface FastContext {
  /** Response headers every answer carries (flat name, value list): security, CORS, drain. */
  readonly headers: readonly string[];
  /** The query string, without `?` ('' when absent). */
  readonly query: string;
}

export type FastHandler = (request: IncomingMessage, response: ServerResponse, context: FastContext) => void | Promise<void>;

export interface FastRoutesOptions {
  /** Security headers by lower-case name (packages/server/src/edge/security-headers.ts). */
  readonly securityHeaders: Readonly<Record<string, string>>;
  /** The origin allowlist (packages/server/src/edge/origins.ts). */
  readonly origins: { check(origin: string | string[] | undefined, host: string | undefined): 'absent' | 'allowed' | 'refused' };
  /** True while the node drains: answers end their connection. */
  readonly draining: () => boolean;
  readonly logger: Logger;
}

const JSON_TYPE = 'application/json; charset=utf-8';
/** Refuses what is not UTF-8 (as packages/server/src/app/http-input.ts). */
const utf8 = new TextDecoder('utf-8', { fatal: true });

export class FastRoutes {
  readonly #routes = new Map<string, FastHandler>();
  readonly #options: FastRoutesOptions;
  /** Security headers then `Vary: Origin`: the headers of a request without Origin outside a drain. */
  readonly #plain: readonly string[];
  readonly #secure: readonly string[];

  constructor(options: FastRoutesOptions) {
    this.#options = options;
    this.#secure = Object.entries(options.securityHeaders).flat();
    this.#plain = [...this.#secure, 'vary', 'Origin'];
  }

  get(path: string, handler: FastHandler): void {
    this.#routes.set('GET ' + path, handler);
  }

  post(path: string, handler: FastHandler): void {
    this.#routes.set('POST ' + path, handler);
  }

  /**
   * Puts the routes in front of `server`'s request listeners (fastify's):
   * a request for one of them is answered here, any other goes on to them.
   */
  install(server: Server): void {
    const fallbacks = server.listeners('request') as Array<(request: IncomingMessage, response: ServerResponse) => void>;
    server.removeAllListeners('request');
    server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      if (!this.serve(request, response)) for (const fallback of fallbacks) fallback(request, response);
    });
  }

  /** Answers `request` when it is for a fast route; false when it is not. */
  serve(request: IncomingMessage, response: ServerResponse): boolean {
    const url = request.url ?? '';
    const mark = url.indexOf('?');
    const handler = this.#routes.get(request.method + ' ' + (mark === -1 ? url : url.slice(0, mark)));
    if (handler === undefined) return false;
    this.#dispatch(handler, request, response, mark === -1 ? '' : url.slice(mark + 1));
    return true;
  }

  /**
   * A fastify route for `path` that hands the request to its fast handler:
   * reached only by what the front did not take (HEAD, an encoded path);
   * it makes fastify answer other methods 405 with `Allow`.
   */
  stub(app: FastifyInstance, method: 'GET' | 'POST', path: string): void {
    app.route({
      method,
      url: path,
      handler: (request, reply) => {
        const handler = this.#routes.get(method + ' ' + path);
        if (handler === undefined) return reply.callNotFound();
        // The headers fastify's hooks put on the reply (security, CORS) go with the hijacked answer.
        const headers: string[] = [];
        for (const [name, value] of Object.entries(reply.getHeaders())) if (typeof value === 'string') headers.push(name, value);
        reply.hijack();
        const mark = request.url.indexOf('?');
        this.#run(handler, request.raw, reply.raw, { headers, query: mark === -1 ? '' : request.url.slice(mark + 1) });
      },
    });
  }

  #dispatch(handler: FastHandler, request: IncomingMessage, response: ServerResponse, query: string): void {
    const origin = request.headers.origin;
    const draining = this.#options.draining();
    let headers: readonly string[];
    if (origin === undefined && !draining) headers = this.#plain;
    else {
      const list = [...this.#secure];
      if (draining) list.push('connection', 'close');
      const verdict = this.#options.origins.check(origin, request.headers.host);
      if (verdict === 'refused') {
        answerError(response, list, 'origin_not_allowed');
        return;
      }
      list.push('vary', 'Origin');
      if (verdict === 'allowed') list.push('access-control-allow-origin', origin as string, 'access-control-allow-credentials', 'true');
      headers = list;
    }
    this.#run(handler, request, response, { headers, query });
  }

  #run(handler: FastHandler, request: IncomingMessage, response: ServerResponse, context: FastContext): void {
    const failed = (error: unknown): void => {
      this.#options.logger.error({ err: error, url: request.url?.split('?', 1)[0] }, 'request failed');
      if (!response.headersSent) answerError(response, context.headers, 'internal');
      else response.destroy();
    };
    try {
      const done = handler(request, response, context);
      if (done !== undefined) done.catch(failed);
    } catch (error) {
      failed(error);
    }
  }
}

/** Answers JSON text with `status` and the context's headers. */
export function answerJson(response: ServerResponse, headers: readonly string[], status: number, text: string, extra?: readonly string[]): void {
  if (response.destroyed) return;
  response.writeHead(status, [...headers, ...(extra ?? []), 'content-type', JSON_TYPE, 'content-length', String(Buffer.byteLength(text))]);
  response.end(text);
}

/** Answers a registered API error (`Retry-After` when given). */
export function answerError(response: ServerResponse, headers: readonly string[], code: ApiErrorCode, detail?: string, retryAfterSeconds?: number): void {
  const extra = retryAfterSeconds === undefined ? undefined : ['retry-after', String(retryAfterSeconds)];
  answerJson(response, headers, apiErrors[code].status, JSON.stringify(apiErrorBody(code, detail)), extra);
}

export interface BodyRules {
  /** Largest body in bytes (413 beyond). */
  readonly limit: number;
  /** limits.maxJsonDepth. */
  readonly maxDepth: number;
}

/**
 * A JSON body reader for a fast route: reads the body by the rules of
 * packages/server/src/app/http-input.ts and checks it against `schema`
 * (TypeBox, no coercion). Resolves with `{ value }` (value undefined for a
 * POST without a body, which the schema then judges), or undefined once it
 * has answered the error itself.
 */
export function jsonBody<T>(schema: TSchema, rules: BodyRules): (request: IncomingMessage, response: ServerResponse, headers: readonly string[]) => Promise<{ value: T } | undefined> {
  const check = TypeCompiler.Compile(schema);
  const validate = (response: ServerResponse, headers: readonly string[], value: unknown): { value: T } | undefined => {
    if (check.Check(value)) return { value: value as T };
    answerError(response, headers, 'bad_request', schemaDetail(check, value));
    return undefined;
  };
  return (request, response, headers) => {
    const type = request.headers['content-type'];
    const length = request.headers['content-length'];
    const chunked = request.headers['transfer-encoding'] !== undefined;
    if (type === undefined) {
      if (!chunked && (length === undefined || length === '0')) return Promise.resolve(validate(response, headers, undefined));
      answerError(response, headers, 'unsupported_media_type');
      return Promise.resolve(undefined);
    }
    const semicolon = type.indexOf(';');
    if ((semicolon === -1 ? type : type.slice(0, semicolon)).trim().toLowerCase() !== 'application/json') {
      answerError(response, headers, 'unsupported_media_type');
      return Promise.resolve(undefined);
    }
    const tooLarge = (): undefined => {
      // The rest of the body is never read: the connection ends after the answer.
      answerError(response, [...headers, 'connection', 'close'], 'payload_too_large');
      return undefined;
    };
    if (length !== undefined && Number(length) > rules.limit) return Promise.resolve(tooLarge());
    return new Promise((resolve) => {
      let chunks: Buffer[] = [];
      let size = 0;
      const onData = (chunk: Buffer): void => {
        size += chunk.length;
        if (size > rules.limit) {
          finish();
          resolve(tooLarge());
          return;
        }
        chunks.push(chunk);
      };
      const onEnd = (): void => {
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
        finish();
        let text: string;
        // A body that does not parse ends the connection after its answer, as fastify's parser errors do.
        try {
          text = utf8.decode(body);
        } catch {
          answerError(response, [...headers, 'connection', 'close'], 'invalid_utf8');
          resolve(undefined);
          return;
        }
        const read = readJson(text, rules.maxDepth);
        if (!read.ok) {
          answerError(response, [...headers, 'connection', 'close'], read.error === 'too_deep' ? 'json_too_deep' : 'invalid_json');
          resolve(undefined);
          return;
        }
        resolve(validate(response, headers, read.value));
      };
      // A request that goes away before its body ends is answered by no one.
      const onClose = (): void => {
        finish();
        resolve(undefined);
      };
      // A held poll keeps its request, but not these listeners nor what they hold.
      const finish = (): void => {
        request.removeListener('data', onData);
        request.removeListener('end', onEnd);
        request.removeListener('close', onClose);
        chunks = [];
      };
      request.on('data', onData);
      request.on('end', onEnd);
      request.on('close', onClose);
    });
  };
}
