/**
 * The composition root: the only module that builds everything. It reads
 * secret files named by the config, creates the engine, the node, the HTTP
 * listener and the exporters, and owns the shutdown order.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { Logger as PinoLogger } from 'pino';
import type { Config } from '../config/schema.ts';
import { ConfigError } from '../config/load.ts';
import { createMemoryEngine, createRedisEngine, openRedisClients, type Engine } from './engine.ts';
import { createJwtVerifier } from '../auth/jwt.ts';
import { ApiKeyVerifier } from '../auth/api-keys.ts';
import { watchKeyStore } from '../auth/key-store.ts';
import { Node } from '../core/node.ts';
import { createMetrics } from '../observability/metrics.ts';
import { createLogger, redactUrl } from '../observability/logger.ts';
import { attachWebSocket } from '../transports/websocket.ts';
import { createHttpApp, type TlsFiles } from './http.ts';
import { createAdminApp } from './admin.ts';
import { Edge } from '../edge/edge.ts';
import { version } from './version.ts';

export interface HeraldServer {
  readonly port: number;
  readonly host: string;
  readonly node: Node;
  /** Port of the internal listener (metrics, admin) on `admin.host`. */
  readonly adminPort: number;
  /**
   * Graceful drain: close clients with 3001 and answer new connections 503,
   * wait until every connection has closed and taken its final frames
   * (bounded by `drainTimeoutMs`), stop accepting, close. True if all drained in time.
   */
  shutdown(drainTimeoutMs?: number): Promise<boolean>;
  /** Immediate close (tests). */
  close(): Promise<void>;
}

export interface StartOptions {
  readonly config: Config;
  readonly logger?: PinoLogger;
  /** Whether the process runs as root (default: asks the OS; tests inject it). */
  readonly runningAsRoot?: boolean;
  /** The engine linking nodes; default from `config.engine` (memory or Redis). */
  readonly engine?: Engine;
}

/** Builds the engine named by the config; Redis clients are opened here. */
async function openEngine(config: Config, logger: PinoLogger): Promise<Engine> {
  if (config.engine.type === 'memory') return createMemoryEngine(config);
  const clients = await openRedisClients(config);
  logger.info({ redis: redactUrl(config.engine.redisUrl) }, 'redis engine connected');
  return createRedisEngine(
    config,
    clients,
    (error, what) => logger.warn({ err: error, what }, 'redis engine'),
    (healthy, reason) => (healthy ? logger.info({ reason }, 'redis engine healthy') : logger.error({ reason }, 'redis engine degraded')),
  );
}

function readSecretFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new ConfigError([`cannot read ${what} file ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`]);
  }
}

/** The certificate and key files, when `tls` names them (both or neither). */
function readTls(config: Config): TlsFiles | undefined {
  const { certFile, keyFile } = config.tls;
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) throw new ConfigError(['/tls: certFile and keyFile go together']);
  return { cert: readSecretFile(certFile, 'TLS certificate'), key: readSecretFile(keyFile, 'TLS key') };
}

export async function startServer(options: StartOptions): Promise<HeraldServer> {
  const { config } = options;
  const logger = options.logger ?? createLogger(config.log.level);
  const asRoot = options.runningAsRoot ?? process.getuid?.() === 0;
  if (asRoot && config.mode === 'production' && !config.process.allowRoot) {
    throw new ConfigError(['/process/allowRoot: production mode refuses to run as root; run as an unprivileged user (or set process.allowRoot)']);
  }
  const tls = readTls(config);
  let edge: Edge;
  try {
    edge = new Edge(config);
  } catch (error) {
    throw new ConfigError([(error as Error).message]);
  }
  const auth = config.auth;
  const hmacSecret = auth.hmacSecret ?? (auth.hmacSecretFile === undefined ? undefined : readSecretFile(auth.hmacSecretFile, 'HMAC secret'));
  const publicKey = auth.publicKey ?? (auth.publicKeyFile === undefined ? undefined : readSecretFile(auth.publicKeyFile, 'public key'));
  if (hmacSecret !== undefined && hmacSecret.length < 32) throw new ConfigError(['/auth: the HMAC secret must be at least 32 characters']);
  let tokens;
  try {
    tokens = await createJwtVerifier({
      algorithms: auth.algorithms,
      hmacSecret,
      publicKey,
      jwksUrl: auth.jwksUrl,
      jwksCacheMs: auth.jwksCacheMs,
      jwksCooldownMs: auth.jwksCooldownMs,
      audience: auth.audience,
      issuer: auth.issuer,
      leewayMs: auth.leewayMs,
      maxJsonDepth: config.limits.maxJsonDepth,
    });
  } catch (error) {
    throw new ConfigError([(error as Error).message]);
  }
  const apiKeys = new ApiKeyVerifier(config.api.keys, { source: watchKeyStore(config.stateDir, { onReloadError: (problem) => logger.error({ problem }, 'API key store not reloaded') }) });
  if (config.mode === 'production' && apiKeys.size === 0) {
    throw new ConfigError(['/api/keys: production mode needs at least one API key (or HERALD_API_KEY)']);
  }

  const engine = options.engine ?? (await openEngine(config, logger));
  const node = new Node({
    config,
    broker: engine.broker,
    presence: engine.presence,
    tokens,
    revocations: engine.revocations,
    control: engine.control,
    id: engine.nodeId,
    health: engine.health,
    logger,
    version,
  });
  const metrics = createMetrics(node);
  const app = await createHttpApp({ config, node, apiKeys, logger, edge, tls, sessionRouter: engine.sessionRouter });
  await app.ready();
  const websockets = attachWebSocket(app.server, node, { maxMessageBytes: config.limits.maxMessageBytes, maxFragments: config.limits.maxFragments, gate: edge });
  const admin = await createAdminApp({ config, node, metrics: metrics.registry, logger });
  await admin.listen({ host: config.admin.host, port: config.admin.port });
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (error) {
    await admin.close();
    metrics.close();
    throw error;
  }
  const address = app.server.address() as AddressInfo;
  const adminAddress = admin.server.address() as AddressInfo;
  logger.info({ host: config.listen.host, port: address.port, tls: tls !== undefined, mode: config.mode, version }, 'listening');
  logger.info({ host: config.admin.host, port: adminAddress.port }, 'internal listener (metrics, health)');

  let closing: Promise<boolean> | undefined;
  const shutdown = (drainTimeoutMs = config.shutdown.drainTimeoutMs): Promise<boolean> => {
    closing ??= (async () => {
      const started = Date.now();
      const left = (): number => Math.max(0, drainTimeoutMs - (Date.now() - started));
      const stopAccepting = (): Promise<void> => {
        const closed = new Promise<void>((resolve) => app.server.close(() => resolve()));
        app.server.closeIdleConnections();
        return closed;
      };
      // The listener stays open during the drain, so that a long-poll client
      // between two polls gets its 3001 from its next poll; meanwhile new
      // connections are answered 503. In cluster mode the other workers
      // reach this worker's sessions: stop accepting at once.
      let listenerClosed = engine.sessionRouter === undefined ? undefined : stopAccepting();
      const clientsDrained = await node.drain(drainTimeoutMs);
      // WebSocket close handshakes get what is left of the drain time.
      const drained = (await websockets.settle(left())) && clientsDrained;
      websockets.terminateAll();
      listenerClosed ??= stopAccepting();
      await node.close();
      await engine.close().catch((error: unknown) => logger.warn({ err: error }, 'engine close failed'));
      // Let final answers (disconnect frames) finish, then cut what is left.
      app.server.closeIdleConnections();
      await Promise.race([listenerClosed, new Promise((resolve) => setTimeout(resolve, Math.min(2000, left())).unref())]);
      app.server.closeAllConnections();
      await app.close().catch(() => undefined);
      // The internal listener last: metrics and health stay readable during the drain.
      await admin.close().catch(() => undefined);
      metrics.close();
      logger.info({ drained, ms: Date.now() - started }, 'stopped');
      return drained;
    })();
    return closing;
  };

  return {
    port: address.port,
    host: config.listen.host,
    node,
    adminPort: adminAddress.port,
    shutdown,
    close: async () => {
      await shutdown(0);
    },
  };
}
