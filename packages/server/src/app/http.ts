/**
 * The public HTTP listener: fastify with the connection endpoints, the
 * server API and health. Metrics and admin live on the internal listener
 * (admin.ts). Errors answer with registered codes only.
 *
 * Order for every request: Node's parser (header size and count, timeouts,
 * smuggling vectors → 4xx) → security headers → origin allowlist (403) →
 * CORS (preflight answered here) → route. The API adds its rate limits:
 * per client IP before the key is checked, per key after. A few hot routes
 * (publish, the SSE stream, long polling) are answered by the front
 * (edge/front.ts) with the same rules and answers, without fastify.
 */
import fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ServerOptions as HttpServerOptions } from 'node:http';
import cors from '@fastify/cors';
import type { Logger as PinoLogger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { Node } from '../core/node.ts';
import { ApiError, ApiExecutor } from '../api/executor.ts';
import type { ApiKeyVerifier } from '../auth/api-keys.ts';
import { registerSse, SSE_PATH } from '../transports/sse.ts';
import { registerLongPoll } from '../transports/long-poll.ts';
import { registerHttpCommands, sendApiError, SessionRegistry, type SessionRouter } from '../transports/http-connection.ts';
import { encodeResult, type ApiErrorCode } from '@herald/protocol';
import type { Edge } from '../edge/edge.ts';
import { securityHeaderSets, useSecurityHeaders } from '../edge/security-headers.ts';
import { LEAN_API_ROUTES, presentedKey, registerLeanRoutes } from '../api/lean-routes.ts';
import { ApiRateLimits, type SharedApiCounting } from '../api/rate-limits.ts';
import { Front } from '../edge/front.ts';
import { installAtFirstConnection } from '../edge/first-connection.ts';
import type { LeanRequest, LeanResponse } from '../edge/lean-http.ts';
import { POLL_OPEN_PATH, POLL_PATH } from '../transports/long-poll.ts';
import { WEBSOCKET_PATH } from '../transports/websocket.ts';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { answerClientError } from '../edge/client-errors.ts';
import { answerUnmatched, schemaController, useJsonBodies, useStrictSchemas } from './http-input.ts';
import { registerHealthRoutes, type ReadinessSources } from './health.ts';
import type { App, AppRegistry } from '../apps/apps.ts';
import type { AppPaths } from '../transports/app-paths.ts';
import { registerPusherApi } from '../pusher/pusher-api.ts';

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
}

export interface HttpAppOptions {
  readonly config: Config;
  readonly node: Node;
  readonly apiKeys: ApiKeyVerifier;
  /** The apps of the Pusher HTTP API (`/apps/{id}/…`). */
  readonly apps: AppRegistry;
  /** The apps' native transport paths (`/apps/{id}/connection/…`, transports/app-paths.ts). */
  readonly appPaths?: AppPaths;
  readonly logger: PinoLogger;
  readonly edge: Edge;
  /** PEM certificate chain and key: the listener serves HTTPS (and WSS). */
  readonly tls?: TlsFiles | undefined;
  /** Cluster mode: session requests for other workers' sessions are forwarded (packages/server/src/transports/http-connection.ts). */
  readonly sessionRouter?: SessionRouter | undefined;
  /** What /health, /health/live and /health/ready answer from (health.ts). */
  readonly health: ReadinessSources;
  /** `limits.scope: "cluster"`: the stores every node counts the API limits in (shared-limits.ts). */
  readonly sharedLimits?: { readonly api: SharedApiCounting } | undefined;
  /** Called after each call of a method that changes who may stay connected (ADMIN_CHANGE_METHODS), for the audit log. */
  readonly onAdminChange?: ((change: AdminChange) => void) | undefined;
}

/** Server API methods recorded in the audit log: they end or forbid connections. */
export const ADMIN_CHANGE_METHODS: ReadonlySet<string> = new Set(['disconnect', 'revoke_user', 'revoke_token']);

export interface AdminChange {
  readonly method: string;
  /** Name of the API key that called. */
  readonly key: string;
  readonly ip: string;
  /** The user or token id the call named (from the body, when it had one). */
  readonly target: string | undefined;
  readonly outcome: 'ok' | 'failed';
  /** The error code of a failed call. */
  readonly code?: string | undefined;
}

function changeTarget(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const record = body as Record<string, unknown>;
  const target = record['user'] ?? record['jti'];
  return typeof target === 'string' ? target : undefined;
}

/** Request headers accepted per request; more is answered 431 by Node's parser. */
export const MAX_HEADERS = 100;
export const MAX_HEADER_BYTES = 16384;

/** Methods and headers a browser may use cross-origin (answered on preflight). */
export const CORS_METHODS = ['GET', 'POST'];
export const CORS_HEADERS = ['content-type', 'authorization', 'herald-session', 'x-api-key', 'last-event-id'];

/**
 * Node's HTTP server options shared by both listeners. Node checks the
 * headers and request timeouts every `connectionsCheckingInterval`, so it
 * follows the smaller timeout. `requestTimeout` bounds receiving a request
 * (head and body), never the response: SSE streams and held polls are not
 * cut by it, and upgraded WebSockets leave the HTTP server's timeouts.
 */
export function httpServerOptions(http: Config['http']): HttpServerOptions {
  return {
    headersTimeout: http.headersTimeoutMs,
    requestTimeout: Math.max(http.requestTimeoutMs, http.headersTimeoutMs),
    keepAliveTimeout: http.keepAliveTimeoutMs,
    maxHeaderSize: MAX_HEADER_BYTES,
    connectionsCheckingInterval: Math.max(10, Math.min(1000, Math.floor(Math.min(http.headersTimeoutMs, http.requestTimeoutMs) / 4))),
    requireHostHeader: true,
    insecureHTTPParser: false,
  };
}

export async function createHttpApp(options: HttpAppOptions): Promise<FastifyInstance> {
  const { config, node, apiKeys, edge } = options;
  const serverOptions = httpServerOptions(config.http);
  const common = {
    loggerInstance: options.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.api.maxBodyBytes,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    connectionTimeout: 0,
    clientErrorHandler: answerClientError,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    requestTimeout: serverOptions.requestTimeout,
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 100 },
    frameworkErrors: answerFrameworkError,
    schemaController,
    trustProxy: config.http.trustedProxies.length === 0 ? false : edge.address.trust,
  } as const;
  const tls = options.tls;
  // The https variant has another server type; the routes only see requests.
  const app = (
    tls === undefined
      ? fastify({ ...common, http: serverOptions })
      : fastify({ ...common, https: { ...serverOptions, cert: tls.cert, key: tls.key } })
  ) as unknown as FastifyInstance;
  app.server.maxHeadersCount = MAX_HEADERS;
  useJsonBodies(app, config.limits.maxJsonDepth);
  useStrictSchemas(app);

  app.setErrorHandler((error: { statusCode?: number; code?: string; validation?: unknown }, request: FastifyRequest, reply: FastifyReply) => {
    const code = mapFrameworkError(error);
    if (code === 'internal') request.log.error({ err: error, url: request.routeOptions.url }, 'request failed');
    // The rest of an oversize body is never read: end the connection after the answer.
    if (code === 'payload_too_large') reply.header('connection', 'close');
    return sendApiError(reply, code, error instanceof ApiError ? error.detail : undefined);
  });
  app.setNotFoundHandler(answerUnmatched(app));

  useSecurityHeaders(app, tls !== undefined);
  // On an app's native paths (`/apps/{id}/connection/…`) the app's allowedOrigins judge, when it has them.
  const appPaths = options.appPaths;
  const appOf = (url: string): App | undefined => {
    const match = appPaths !== undefined && url.startsWith('/apps/') ? appPaths.match(url.split('?', 1)[0]!) : undefined;
    return match?.refused === undefined ? match?.scope?.app : undefined;
  };
  const originOf = (request: FastifyRequest) => edge.origins.check(request.headers.origin, request.headers.host, appOf(request.url));
  app.addHook('onRequest', async (request, reply) => {
    // During a drain every answer ends its connection: nothing is left idle
    // for the final close to cut while a request is on its way.
    if (node.draining) reply.header('connection', 'close');
    if (originOf(request) === 'refused') return sendApiError(reply, 'origin_not_allowed');
  });
  await app.register(cors, {
    hook: 'onRequest',
    delegator: (request, callback) =>
      callback(null, {
        origin: originOf(request) === 'allowed',
        methods: CORS_METHODS,
        allowedHeaders: CORS_HEADERS,
        credentials: true,
        maxAge: 600,
        strictPreflight: true,
      }),
  });

  registerHealthRoutes(app, options.health);

  const sessions = new SessionRegistry(options.sessionRouter);
  // The publish routes, the SSE stream and long polling are answered by the front, with the same edge rules (edge/front.ts).
  const front = new Front({
    securityHeaders: securityHeaderSets(tls !== undefined),
    origins: edge.origins,
    draining: () => node.draining,
    logger: node.logger,
    appPaths: options.appPaths,
  });
  front.install(app);
  registerSse(app, front, node, sessions, edge);
  registerLongPoll(app, front, node, sessions, edge, { bodyLimit: config.api.maxBodyBytes });
  registerHttpCommands(app, node, sessions, options.appPaths);
  // The chat demo exists in development mode only: production never loads it.
  if (config.mode === 'development') (await import('./demo.ts')).registerDemo(app, config, { channels: (prefix) => node.channels(prefix) });

  // The Pusher HTTP API: signed per app, its own errors and limits (pusher/pusher-api.ts).
  await registerPusherApi(app, { config, node, apps: options.apps, logger: options.logger, front });

  // Per client IP, counted before the key is checked; then per key (in Redis when limits.scope is "cluster").
  const limits = new ApiRateLimits(config.api.rateLimitPerIp, config.api.rateLimitPerKey, options.sharedLimits?.api);
  const limited = (reply: FastifyReply, seconds: number) => {
    reply.header('retry-after', String(seconds));
    return sendApiError(reply, 'too_many_requests');
  };

  const executor = new ApiExecutor(node);
  app.post<{ Params: { method: string } }>(
    '/api/:method',
    {
      onRequest: async (request, reply) => {
        let wait = limits.byIp(request.ip);
        if (typeof wait === 'object') wait = await wait;
        if (wait !== undefined) return limited(reply, wait);
      },
    },
    async (request, reply) => {
      const key = presentedKey(request.headers);
      const principal = key === undefined ? null : apiKeys.verify(key, request.raw.socket);
      if (principal === null) return sendApiError(reply, 'unauthorized');
      let wait = limits.byKey(principal.name);
      if (typeof wait === 'object') wait = await wait;
      if (wait !== undefined) return limited(reply, wait);
      if (node.draining) return sendApiError(reply, 'unavailable');
      const method = request.params.method;
      const audited = options.onAdminChange !== undefined && ADMIN_CHANGE_METHODS.has(method);
      try {
        const result = await executor.run(method, request.body, principal);
        if (audited) options.onAdminChange!({ method, key: principal.name, ip: request.ip, target: changeTarget(request.body), outcome: 'ok' });
        return reply.type('application/json').send(encodeResult(result));
      } catch (error) {
        const code = error instanceof ApiError ? error.code : 'internal';
        if (audited && code !== 'forbidden') options.onAdminChange!({ method, key: principal.name, ip: request.ip, target: changeTarget(request.body), outcome: 'failed', code });
        return sendApiError(reply, code, error instanceof ApiError ? error.detail : undefined);
      }
    },
  );

  // POST /api/publish, /broadcast and /batch in JSON: the same answers as this route, from the front.
  registerLeanRoutes(front, {
    node,
    apiKeys,
    executor,
    body: { limit: config.api.maxBodyBytes, maxDepth: config.limits.maxJsonDepth },
    ip: common.trustProxy === false ? (request) => request.socket.remoteAddress ?? '' : (request) => edge.address.ip(request),
    limits,
  });
  // The lean layer reads plain HTTP only: with TLS, node:https serves its routes too. It loads at the first
  // connection: its module and llhttp's WASM build cost the idle process 4.4 MiB of RSS (docs/performance.md).
  if ((config.http.leanLongPoll || config.http.leanPublish || config.http.leanWebSocket || config.http.leanSse) && tls === undefined) {
    installAtFirstConnection(app.server, () => loadLeanHttp(app, front, config, serverOptions, options.appPaths), (error) =>
      app.log.error({ err: error }, 'the lean HTTP layer did not load; node:http serves every route'),
    );
  }
  return app;
}

/** True for `route` or its `/apps/{id}/…` form (the apps' native paths exist for the connection routes only). */
function isConnectionPath(path: string, route: string, appPaths: AppPaths | undefined): boolean {
  return path === route || (appPaths !== undefined && path.startsWith('/apps/') && appPaths.match(path)?.rest === route);
}

/**
 * `http.leanLongPoll`, `http.leanPublish`, `http.leanWebSocket` and
 * `http.leanSse` (all on by default, plain HTTP only): loads the lean
 * HTTP/1.1 layer (edge/lean-http.ts) and answers its install, which puts the
 * long-poll routes, the publish routes, the WebSocket upgrades
 * (edge/lean-upgrade.ts), the SSE stream's opening, or some of them on it,
 * every other request on node:http. If llhttp's WASM build (llhttp.ts)
 * does not load, they stay on node:http, with one warning (no install).
 */
async function loadLeanHttp(app: FastifyInstance, front: Front, config: Config, serverOptions: HttpServerOptions, appPaths: AppPaths | undefined): Promise<(() => void) | undefined> {
  const switches = [
    config.http.leanLongPoll ? 'http.leanLongPoll' : '',
    config.http.leanPublish ? 'http.leanPublish' : '',
    config.http.leanWebSocket ? 'http.leanWebSocket' : '',
    config.http.leanSse ? 'http.leanSse' : '',
  ]
    .filter(Boolean)
    .join(' and ');
  const [{ LeanHttp }, { loadLlhttp }] = await Promise.all([import('../edge/lean-http.ts'), import('../edge/llhttp.ts')]);
  const loaded = loadLlhttp();
  if (!('llhttp' in loaded)) {
    app.log.warn({ reason: loaded.reason }, `${switches}: llhttp (WASM) unavailable, the routes stay on node:http`);
    return undefined;
  }
  const polls = new Set(config.http.leanLongPoll ? [POLL_PATH, POLL_OPEN_PATH] : []);
  const lean = new Set([...polls, ...(config.http.leanPublish ? LEAN_API_ROUTES.keys() : [])]);
  return () => new LeanHttp(app.server, {
    llhttp: loaded.llhttp,
    maxHeaderBytes: MAX_HEADER_BYTES,
    maxHeaders: MAX_HEADERS,
    headersTimeoutMs: serverOptions.headersTimeout ?? config.http.headersTimeoutMs,
    requestTimeoutMs: serverOptions.requestTimeout ?? config.http.requestTimeoutMs,
    keepAliveTimeoutMs: config.http.keepAliveTimeoutMs,
    checkingIntervalMs: serverOptions.connectionsCheckingInterval ?? 1000,
    isLean: (path) => {
      if (lean.has(path)) return true;
      // The apps' native paths exist for the connection routes only (transports/app-paths.ts).
      if (polls.size === 0 || appPaths === undefined || !path.startsWith('/apps/')) return false;
      const match = appPaths.match(path);
      return match !== undefined && polls.has(match.rest);
    },
    isUpgrade: config.http.leanWebSocket ? (path) => isConnectionPath(path, WEBSOCKET_PATH, appPaths) : undefined,
    isStream: config.http.leanSse ? (path) => isConnectionPath(path, SSE_PATH, appPaths) : undefined,
    serve: (request: LeanRequest, response: LeanResponse) => front.serve(request as unknown as IncomingMessage, response as unknown as ServerResponse),
  });
}

/**
 * fastify's router answers a malformed URL (bad percent-encoding) or a path
 * parameter longer than `maxParamLength` by itself, in its own format and
 * echoing the path; this answers them with the registry's codes instead:
 * `bad_request` and `not_found` (no resource has so long a name).
 */
export function answerFrameworkError(error: { code?: string }, _request: FastifyRequest, reply: FastifyReply): void {
  if (error.code === 'FST_ERR_MAX_PARAM_LENGTH') void sendApiError(reply, 'not_found', 'a path segment is longer than any name this server knows');
  else void sendApiError(reply, 'bad_request', error.code === 'FST_ERR_BAD_URL' ? 'the URL path is not validly percent-encoded' : undefined);
}

export function mapFrameworkError(error: { statusCode?: number; code?: string; validation?: unknown }): ApiErrorCode {
  if (error instanceof ApiError) return error.code;
  if (error.validation !== undefined) return 'bad_request';
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'payload_too_large';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'unsupported_media_type' : 'bad_request';
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return 'invalid_json';
  }
  const status = error.statusCode ?? 500;
  if (status === 413) return 'payload_too_large';
  if (status === 415) return 'unsupported_media_type';
  if (status === 405) return 'method_not_allowed';
  if (status === 404) return 'not_found';
  if (status === 429) return 'too_many_requests';
  if (status === 503) return 'unavailable';
  if (status >= 400 && status < 500) return error.code === undefined ? 'bad_request' : 'invalid_json';
  return 'internal';
}
