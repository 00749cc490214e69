/**
 * The public HTTP listener: fastify with the connection endpoints, the
 * server API, health and metrics. Errors answer with registered codes only.
 */
import fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger as PinoLogger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { Node } from '../core/node.ts';
import { ApiError, ApiExecutor } from '../api/executor.ts';
import type { ApiKeyVerifier } from '../auth/api-keys.ts';
import { registerSse } from '../transports/sse.ts';
import { registerLongPoll } from '../transports/long-poll.ts';
import { registerHttpCommands, sendApiError, SessionRegistry } from '../transports/http-connection.ts';
import type { ApiErrorCode } from '../protocol/index.ts';

export interface HttpAppOptions {
  readonly config: Config;
  readonly node: Node;
  readonly apiKeys: ApiKeyVerifier;
  readonly metrics: Registry;
  readonly logger: PinoLogger;
}

export function createHttpApp(options: HttpAppOptions): FastifyInstance {
  const { config, node, apiKeys, metrics } = options;
  const app = fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.api.maxBodyBytes,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: true,
    connectionTimeout: 0,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    requestTimeout: config.http.requestTimeoutMs,
    http: { headersTimeout: config.http.headersTimeoutMs, maxHeaderSize: 16384 },
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 100 },
  });

  app.setErrorHandler((error: { statusCode?: number; code?: string; validation?: unknown }, request: FastifyRequest, reply: FastifyReply) => {
    const code = mapFrameworkError(error);
    if (code === 'internal') request.log.error({ err: error, url: request.routeOptions.url }, 'request failed');
    return sendApiError(reply, code);
  });
  app.setNotFoundHandler((_request, reply) => sendApiError(reply, 'not_found'));

  app.get('/health', async (_request, reply) => {
    if (node.draining) return reply.code(503).send({ status: 'draining' });
    return { status: 'ok' };
  });
  app.get('/metrics', async (_request, reply) => {
    const text = await metrics.metrics();
    return reply.type(metrics.contentType).send(text);
  });

  const sessions = new SessionRegistry();
  registerSse(app, node, sessions);
  registerLongPoll(app, node, sessions);
  registerHttpCommands(app, node, sessions);

  const executor = new ApiExecutor(node);
  app.post('/api/:method', async (request: FastifyRequest<{ Params: { method: string } }>, reply) => {
    const key = presentedKey(request);
    const principal = key === undefined ? null : apiKeys.verify(key);
    if (principal === null) return sendApiError(reply, 'unauthorized');
    if (node.draining) return sendApiError(reply, 'unavailable');
    try {
      const result = await executor.run(request.params.method, request.body, principal);
      return reply.type('application/json').send(JSON.stringify(result));
    } catch (error) {
      return sendApiError(reply, error instanceof ApiError ? error.code : 'internal');
    }
  });
  return app;
}

function presentedKey(request: FastifyRequest): string | undefined {
  const authorization = request.headers.authorization;
  if (typeof authorization === 'string' && authorization.startsWith('Bearer ')) return authorization.slice(7).trim();
  const header = request.headers['x-api-key'];
  return typeof header === 'string' ? header : undefined;
}

function mapFrameworkError(error: { statusCode?: number; code?: string; validation?: unknown }): ApiErrorCode {
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
  if (status === 503) return 'unavailable';
  if (status >= 400 && status < 500) return error.code === undefined ? 'bad_request' : 'invalid_json';
  return 'internal';
}
