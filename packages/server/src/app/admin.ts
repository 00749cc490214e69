/**
 * The internal listener (`admin.host:admin.port`, loopback by default):
 * Prometheus metrics, health (health.ts) and the API's OpenAPI description, kept off
 * the public listener. It is not for
 * browsers: a request carrying any `Origin` is refused (403), so a web page
 * cannot read it even from the operator's own machine.
 */
import fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger as PinoLogger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { Node } from '../core/node.ts';
import { sendApiError } from '../transports/http-connection.ts';
import { useSecurityHeaders } from '../edge/security-headers.ts';
import { answerClientError } from '../edge/client-errors.ts';
import { httpServerOptions, mapFrameworkError, MAX_HEADERS } from './http.ts';
import { answerUnmatched, schemaController } from './http-input.ts';
import { version } from './version.ts';
import { registerHealthRoutes, type ReadinessSources } from './health.ts';
import { registerDebugActions } from './debug-actions.ts';
import type { DeliveryProbe } from '../broker/delivery-probe.ts';

export interface AdminAppOptions {
  readonly config: Config;
  readonly node: Node;
  readonly metrics: Registry;
  readonly logger: PinoLogger;
  readonly health: ReadinessSources;
  /** Tests only (HERALD_TEST_DEBUG_ACTIONS=1): POST /debug/block-loop, /debug/grow-heap and /debug/delivery-probe (debug-actions.ts). */
  readonly debugActions?: boolean;
  /** The delivery probe, for the debug action that cuts it. */
  readonly probe?: DeliveryProbe | undefined;
  /** Cluster mode: every worker's metrics, aggregated by the primary. */
  readonly clusterMetrics?: (() => Promise<string>) | undefined;
}

export async function createAdminApp(options: AdminAppOptions): Promise<FastifyInstance> {
  const { config, metrics } = options;
  const serverOptions = httpServerOptions(config.http);
  const app = fastify({
    loggerInstance: options.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024,
    return503OnClosing: false,
    connectionTimeout: 0,
    clientErrorHandler: answerClientError,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    requestTimeout: serverOptions.requestTimeout,
    http: serverOptions,
    schemaController,
  });
  app.server.maxHeadersCount = MAX_HEADERS;
  app.setErrorHandler((error: { statusCode?: number; code?: string; validation?: unknown }, request, reply) => {
    const code = mapFrameworkError(error);
    if (code === 'internal') request.log.error({ err: error, url: request.routeOptions.url }, 'admin request failed');
    return sendApiError(reply, code);
  });
  app.setNotFoundHandler(answerUnmatched(app));
  useSecurityHeaders(app, false);
  app.addHook('onRequest', async (request, reply) => {
    if (request.headers.origin !== undefined) return sendApiError(reply, 'origin_not_allowed');
  });
  registerHealthRoutes(app, options.health);
  if (options.debugActions === true) registerDebugActions(app, options.logger, options.probe);
  // The server API as OpenAPI 3.1, with this server's limits (docs/openapi.json has the defaults).
  // Built at the first request: most servers are never asked for it.
  let openApi: Promise<string> | undefined;
  app.get('/openapi.json', async (_request, reply) => {
    openApi ??= import('../api/openapi.ts').then(({ createOpenApiDocument }) =>
      JSON.stringify(createOpenApiDocument({ version, limits: { maxBroadcastChannels: config.api.maxBroadcastChannels, maxBatchPublishes: config.api.maxBatchPublishes } })),
    );
    return reply.type('application/json').send(await openApi);
  });
  app.get('/metrics', async (_request, reply) => {
    const text = options.clusterMetrics === undefined ? await metrics.metrics() : await options.clusterMetrics();
    return reply.type(metrics.contentType).send(text);
  });
  return app;
}
