/**
 * The internal listener (`admin.host:admin.port`, loopback by default):
 * Prometheus metrics, health (health.ts), the API's OpenAPI description and
 * the admin console (packages/server/src/console/), kept off the public
 * listener. HTTPS with `admin.tls`.
 *
 * Browsers: a request carrying an `Origin` is refused (403
 * `origin_not_allowed`), so a web page cannot read metrics or health even
 * from the operator's own machine, with one exception: console routes
 * (under `admin.console.basePath`) accept the console's own origin (and
 * refuse any other with 403 `csrf_failed`).
 */
import fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger as PinoLogger } from 'pino';
import type { Config } from '../config/schema.ts';
import type { Node } from '../core/node.ts';
import { sendApiError } from '../transports/http-connection.ts';
import { useSecurityHeaders } from '../edge/security-headers.ts';
import { answerClientError } from '../edge/client-errors.ts';
import { answerFrameworkError, httpServerOptions, mapFrameworkError, MAX_HEADERS } from './http.ts';
import { answerUnmatched, schemaController } from './http-input.ts';
import { version } from './version.ts';
import { registerHealthRoutes, type ReadinessSources } from './health.ts';
import { registerDebugActions } from './debug-actions.ts';
import type { DeliveryProbe } from '../broker/delivery-probe.ts';
import { ApiError } from '../api/executor.ts';
import { useJsonBodies, useStrictSchemas } from './http-input.ts';
import type { TlsFiles } from './http.ts';
import type { AdminStore } from '../console/admin-store.ts';
import { isConsolePath, registerConsole } from '../console/console.ts';
import type { PreparedOidcProvider } from '../console/oidc.ts';
import type { KeyUsage } from '../console/key-usage.ts';
import { sameOrigin } from '../console/csrf.ts';

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
  /** Certificate and key (`admin.tls`): the listener serves HTTPS. */
  readonly tls?: TlsFiles | undefined;
  /** The console's store when the console runs (preflight decided; console/console-config.ts). */
  readonly consoleStore?: AdminStore | undefined;
  /** API keys' last uses, for the console's key list. */
  readonly keyUsage?: KeyUsage | undefined;
  /** The console's OpenID Connect providers (console/oidc.ts); none when absent. */
  readonly oidcProviders?: readonly PreparedOidcProvider[] | undefined;
  /** The console's Apps view (console/console-apps.ts). */
  readonly apps?: import('../console/console-apps.ts').ConsoleAppsDeps | undefined;
}

export async function createAdminApp(options: AdminAppOptions): Promise<FastifyInstance> {
  const { config, metrics } = options;
  const serverOptions = httpServerOptions(config.http);
  const common = {
    loggerInstance: options.logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    return503OnClosing: false,
    connectionTimeout: 0,
    clientErrorHandler: answerClientError,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    requestTimeout: serverOptions.requestTimeout,
    routerOptions: { ignoreTrailingSlash: false, maxParamLength: 200 },
    frameworkErrors: answerFrameworkError,
    schemaController,
  } as const;
  const tls = options.tls;
  // The https variant has another server type; the routes only see requests.
  const app = (
    tls === undefined ? fastify({ ...common, http: serverOptions }) : fastify({ ...common, https: { ...serverOptions, cert: tls.cert, key: tls.key } })
  ) as unknown as FastifyInstance;
  app.server.maxHeadersCount = MAX_HEADERS;
  useJsonBodies(app, config.limits.maxJsonDepth);
  useStrictSchemas(app);
  app.setErrorHandler((error: { statusCode?: number; code?: string; validation?: unknown }, request, reply) => {
    const code = mapFrameworkError(error);
    if (code === 'internal') request.log.error({ err: error, url: request.routeOptions.url }, 'admin request failed');
    // The rest of an oversize body is never read: end the connection after the answer.
    if (code === 'payload_too_large') reply.header('connection', 'close');
    return sendApiError(reply, code, error instanceof ApiError ? error.detail : undefined);
  });
  app.setNotFoundHandler(answerUnmatched(app));
  useSecurityHeaders(app, tls !== undefined);
  const consoleBase = options.consoleStore === undefined ? undefined : config.admin.console.basePath;
  const originRule = { origin: config.admin.console.origin, tls: tls !== undefined, adminHost: config.admin.host };
  app.addHook('onRequest', async (request, reply) => {
    if (request.headers.origin === undefined) return;
    if (consoleBase !== undefined && isConsolePath(consoleBase, request.url)) {
      if (!sameOrigin(originRule, request.headers)) return sendApiError(reply, 'csrf_failed', "Origin is not the console's own origin");
      return;
    }
    return sendApiError(reply, 'origin_not_allowed');
  });
  if (options.consoleStore !== undefined) {
    await registerConsole(app, { config, node: options.node, store: options.consoleStore, metrics, logger: options.logger, tls: tls !== undefined, keyUsage: options.keyUsage, oidcProviders: options.oidcProviders, apps: options.apps });
  }
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
