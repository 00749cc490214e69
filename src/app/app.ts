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
import { MemoryBroker, MemoryPresenceStore } from '../broker/memory-broker.ts';
import { createJwtVerifier } from '../auth/jwt.ts';
import { MemoryRevocationList } from '../auth/revocation.ts';
import { ApiKeyVerifier } from '../auth/api-keys.ts';
import { watchKeyStore } from '../auth/key-store.ts';
import { Node } from '../core/node.ts';
import { createMetrics } from '../observability/metrics.ts';
import { createLogger } from '../observability/logger.ts';
import { attachWebSocket } from '../transports/websocket.ts';
import { createHttpApp } from './http.ts';
import { version } from './version.ts';

export interface HeraldServer {
  readonly port: number;
  readonly host: string;
  readonly node: Node;
  /** Graceful drain: stop accepting, close clients with 3001, wait (bounded), close. True if all drained in time. */
  shutdown(drainTimeoutMs?: number): Promise<boolean>;
  /** Immediate close (tests). */
  close(): Promise<void>;
}

export interface StartOptions {
  readonly config: Config;
  readonly logger?: PinoLogger;
}

function readSecretFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new ConfigError([`cannot read ${what} file ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`]);
  }
}

export async function startServer(options: StartOptions): Promise<HeraldServer> {
  const { config } = options;
  const logger = options.logger ?? createLogger(config.log.level);
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
    });
  } catch (error) {
    throw new ConfigError([(error as Error).message]);
  }
  const apiKeys = new ApiKeyVerifier(config.api.keys, { source: watchKeyStore(config.stateDir, { onReloadError: (problem) => logger.error({ problem }, 'API key store not reloaded') }) });
  if (config.mode === 'production' && apiKeys.size === 0) {
    throw new ConfigError(['/api/keys: production mode needs at least one API key (or HERALD_API_KEY)']);
  }

  const broker = new MemoryBroker();
  const presence = new MemoryPresenceStore();
  const revocations = new MemoryRevocationList({ retentionMs: config.auth.revocationRetentionMs });
  const node = new Node({ config, broker, presence, tokens, revocations, logger, version });
  const metrics = createMetrics(node.hub);
  const app = createHttpApp({ config, node, apiKeys, metrics, logger });
  await app.ready();
  const websockets = attachWebSocket(app.server, node, { maxMessageBytes: config.limits.maxMessageBytes });
  await app.listen({ host: config.listen.host, port: config.listen.port });
  const address = app.server.address() as AddressInfo;
  logger.info({ host: config.listen.host, port: address.port, mode: config.mode, version }, 'listening');

  let closing: Promise<boolean> | undefined;
  const shutdown = (drainTimeoutMs = config.shutdown.drainTimeoutMs): Promise<boolean> => {
    closing ??= (async () => {
      const started = Date.now();
      // Stop accepting first; established connections stay until drained.
      const listenerClosed = new Promise<void>((resolve) => app.server.close(() => resolve()));
      app.server.closeIdleConnections();
      const drained = await node.drain(drainTimeoutMs);
      // WebSocket close handshakes get what is left of the drain time.
      await websockets.settle(drainTimeoutMs - (Date.now() - started));
      websockets.terminateAll();
      await node.close();
      // Let final answers (disconnect frames) finish, then cut what is left.
      app.server.closeIdleConnections();
      const left = Math.max(0, Math.min(2000, drainTimeoutMs - (Date.now() - started)));
      await Promise.race([listenerClosed, new Promise((resolve) => setTimeout(resolve, left).unref())]);
      app.server.closeAllConnections();
      await app.close().catch(() => undefined);
      logger.info({ drained, ms: Date.now() - started }, 'stopped');
      return drained;
    })();
    return closing;
  };

  return {
    port: address.port,
    host: config.listen.host,
    node,
    shutdown,
    close: async () => {
      await shutdown(0);
    },
  };
}
