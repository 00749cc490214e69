/**
 * Engines: what links Herald nodes. Each engine supplies the same four
 * contracts (broker, presence, control, revocations); the composition root
 * picks one from config and hands it to the Node. External connections
 * (Redis clients, the cluster IPC channel) are created here, never inside a
 * broker, so tests can hand in their own.
 */
import { randomUUID } from 'node:crypto';
import type { Broker, PresenceStore } from '../broker/broker.ts';
import type { ControlBus } from '../broker/control.ts';
import { LocalControlBus } from '../broker/control.ts';
import { MemoryBroker, MemoryPresenceStore } from '../broker/memory-broker.ts';
import { MemoryRevocationList, type RevocationList } from '../auth/revocation.ts';
import type { Config } from '../config/schema.ts';
import type { KeySource } from '../auth/api-keys.ts';
import type { SessionRouter } from '../transports/http-connection.ts';
import { redactUrl } from '../observability/redact.ts';
import { MemoryAdminStore, type AdminStore } from '../console/admin-store.ts';
import { MemoryOutbox, type WebhookOutbox } from '../webhooks/outbox.ts';
import { MemoryAppStore, type AppStore } from '../apps/app-store.ts';
import type { NodeEvents } from '../core/node-events.ts';
import type { TransitionJournal } from '../webhooks/journal.ts';
import type { WebhookEvent } from '../webhooks/events.ts';

export type EngineHealth = { readonly status: 'ok' } | { readonly status: 'degraded'; readonly reason: string };

export interface Engine {
  readonly name: 'memory' | 'sqlite' | 'redis' | 'cluster';
  readonly nodeId: string;
  readonly broker: Broker;
  readonly presence: PresenceStore;
  readonly control: ControlBus;
  readonly revocations: RevocationList;
  /** Degraded while the engine cannot guarantee delivery (e.g. Redis unreachable). */
  health(): EngineHealth;
  /**
   * The engine's own end-to-end delivery probe (redis: over pub/sub,
   * broker/redis-engine.ts); readiness says `delivery_probe` while it fails.
   * Absent: the server runs broker/delivery-probe.ts over the engine's broker.
   */
  readonly deliveryProbe?: import('../broker/redis-engine.ts').RedisDeliveryProbe | undefined;
  /**
   * API keys the engine keeps (the sqlite engine's state file; in cluster
   * mode on it, the keys the primary sends). Absent: the server watches
   * `<stateDir>/api-keys.json` (memory and redis engines).
   */
  readonly apiKeys?: KeySource | undefined;
  /**
   * The admin console's store (console/admin-store.ts): the state file on
   * sqlite (the primary's, over IPC, in cluster mode), Redis on redis,
   * memory on memory.
   */
  readonly adminStore: AdminStore;
  /**
   * Apps created from the console and `herald apps` (apps/app-store.ts): the
   * state file on sqlite (the primary's, over IPC, in cluster mode), Redis
   * on redis, memory on memory. Absent (engines made by tests): memory.
   */
  readonly appStore?: AppStore | undefined;
  /** Cluster mode: routes SSE/long-poll session requests to the worker that owns the session. */
  readonly sessionRouter?: SessionRouter | undefined;
  /** The redis engine's command connection: where `limits.scope: "cluster"` counts (app/shared-limits.ts). */
  readonly redis?: import('ioredis').Redis | import('ioredis').Cluster | undefined;
  /**
   * The webhook outbox (webhooks/outbox.ts): the state file on sqlite,
   * memory on memory, Redis on redis (shared by every node). Absent:
   * webhooks are not available on this engine in this process.
   */
  readonly webhookOutbox?: WebhookOutbox | undefined;
  /** The sqlite engine's journal of open channels and members (webhooks/journal.ts). */
  readonly webhookJournal?: TransitionJournal | undefined;
  /** Cluster workers: where the Node's reports go instead (the primary owns the outbox and decides transitions). */
  readonly webhookEvents?: NodeEvents | undefined;
  /** Cluster workers: where events seen only here go (the Pusher socket's client_event, cache_miss): to the primary's dispatcher. */
  readonly webhookEmit?: ((event: WebhookEvent) => void) | undefined;
  /** Closes what the engine opened (after the Node has closed its parts). */
  close(): Promise<void>;
}

export function createMemoryEngine(config: Config): Engine {
  const nodeId = randomUUID();
  return {
    name: 'memory',
    nodeId,
    broker: new MemoryBroker(),
    presence: new MemoryPresenceStore(),
    control: new LocalControlBus(nodeId),
    revocations: new MemoryRevocationList({ retentionMs: config.auth.revocationRetentionMs }),
    adminStore: new MemoryAdminStore(),
    appStore: new MemoryAppStore(),
    webhookOutbox: new MemoryOutbox(),
    health: () => ({ status: 'ok' }),
    close: async () => {},
  };
}

/**
 * The durable single-process engine: streams, revocations and API keys in
 * `<stateDir>/herald.db` (store/sqlite-store.ts), fan-out and presence in
 * memory. An api-keys.json left by an earlier Herald is imported on the way
 * (store/api-key-table.ts). Throws a ConfigError when the state file (or
 * the JSON store to import) is refused; the file is closed again then.
 */
export async function createSqliteEngine(
  config: Config,
  onHealthChange?: (healthy: boolean, reason: string) => void,
  onError?: (error: unknown, what: string) => void,
  onNotice?: (level: 'info' | 'warn', message: string) => void,
): Promise<Engine> {
  const { openSqliteStore } = await import('../store/sqlite-store.ts');
  const { SqliteBroker } = await import('../broker/sqlite-broker.ts');
  const { SqliteRevocationList } = await import('../auth/revocation.ts');
  const { describeKeyImport, importKeyFile, watchKeyTable } = await import('../store/api-key-table.ts');
  const { SqliteAdminStore } = await import('../console/sqlite-admin-store.ts');
  const { SqliteOutbox } = await import('../webhooks/sqlite-outbox.ts');
  const { SqliteJournal } = await import('../webhooks/journal.ts');
  const { SqliteAppStore } = await import('../apps/sqlite-app-store.ts');
  const store = openSqliteStore({ stateDir: config.stateDir, synchronous: config.engine.sqliteSynchronous, busyTimeoutMs: config.engine.sqliteBusyTimeoutMs });
  let apiKeys: KeySource;
  try {
    const imported = describeKeyImport(importKeyFile(store.db, config.stateDir, store.path), store.path);
    if (imported !== undefined) onNotice?.(imported.level, imported.message);
    apiKeys = watchKeyTable(store.db, store.path, { onReloadError: (problem) => onError?.(new Error(problem), 'API keys not reloaded (the keys read before stay in force)') });
  } catch (error) {
    store.close();
    throw error;
  }
  const nodeId = randomUUID();
  const broker = new SqliteBroker(store, onHealthChange === undefined ? {} : { onHealthChange });
  return {
    name: 'sqlite',
    nodeId,
    broker,
    presence: new MemoryPresenceStore(),
    control: new LocalControlBus(nodeId),
    revocations: new SqliteRevocationList(store.db, {
      retentionMs: config.auth.revocationRetentionMs,
      onPersistError: (error) => onError?.(error, 'revocation not written to the state file (it holds until restart)'),
    }),
    health: () => broker.health(),
    apiKeys,
    adminStore: new SqliteAdminStore(store.db),
    appStore: new SqliteAppStore(store.db),
    webhookOutbox: new SqliteOutbox(store.db),
    webhookJournal: new SqliteJournal(store.db),
    async close() {
      await broker.close();
      store.close();
    },
  };
}

/** One Redis (commands, pub/sub), or a Redis Cluster (commands, sharded pub/sub). */
export type RedisClients =
  | { readonly command: import('ioredis').Redis; readonly subscriber: import('ioredis').Redis }
  | { readonly command: import('ioredis').Cluster; readonly subscriber: import('../broker/redis-sharded-pubsub.ts').ShardedPubSub };

/** Where the redis engine connects: `engine.redisCluster` seeds when given, else `engine.redisUrl` (for logs, redacted). */
export function redisTarget(config: Config): string {
  return config.engine.redisCluster.length > 0 ? 'cluster ' + config.engine.redisCluster.map(redactUrl).join(',') : redactUrl(config.engine.redisUrl);
}

/**
 * TLS to Redis (`rediss://`), from `engine.redisTls` as the start-time
 * checks read it: node:tls options. The server certificate is always
 * verified (against `ca`, or the system CAs).
 */
export interface RedisTls {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  readonly servername?: string;
}

/** Opens the Redis connections of the redis engine (the only place that does). `tls` applies to a `rediss://` URL. */
export async function openRedisClients(config: Config, tls?: RedisTls): Promise<RedisClients> {
  if (config.engine.redisCluster.length > 0) return openRedisCluster(config, tls);
  const { Redis } = await import('ioredis');
  const { GuardedConnector } = await import('./redis-connector.ts');
  const secure = /^rediss:\/\//i.test(config.engine.redisUrl);
  const options = {
    ...(secure ? { tls: { ...tls, rejectUnauthorized: true } } : {}),
    Connector: GuardedConnector,
    commandTimeout: config.engine.redisCommandTimeoutMs,
    connectTimeout: config.engine.redisCommandTimeoutMs,
    // A stalled Redis keeps TCP up: nothing heard for two timeouts while
    // commands wait drops the connection, so timed-out commands do not pile up.
    socketTimeout: 2 * config.engine.redisCommandTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
    lazyConnect: true,
  };
  const command = new Redis(config.engine.redisUrl, options);
  // Same timeouts on pub/sub (SUBSCRIBE must not wait forever); the engine
  // resubscribes itself after a reconnect (ioredis's own resubscription
  // leaves a failure as an unhandled rejection).
  const subscriber = new Redis(config.engine.redisUrl, { ...options, autoResubscribe: false });
  // Errors are reported through health and logs, never thrown at the process.
  // Before the first connection the last one explains a refused start
  // (connect() itself only says the connection closed).
  let lastError: unknown;
  const remember = (error: unknown): void => {
    lastError = error;
  };
  command.on('error', remember);
  subscriber.on('error', remember);
  try {
    await Promise.all([command.connect(), subscriber.connect()]);
  } catch (error) {
    command.disconnect();
    subscriber.disconnect();
    throw new Error(`cannot connect to Redis at ${redactUrl(config.engine.redisUrl)}${connectHint(lastError ?? error, secure)}`, { cause: error });
  }
  command.off('error', remember);
  subscriber.off('error', remember);
  command.on('error', () => {});
  subscriber.on('error', () => {});
  return { command, subscriber };
}

/** Why a connection failed, when Redis or TLS said so: an ACL or password refusal, a certificate not trusted. Never the secret. */
function connectHint(error: unknown, secure: boolean): string {
  const message = error instanceof Error ? error.message : '';
  const code = (error as { code?: unknown } | undefined)?.code;
  if (/WRONGPASS|invalid username-password/i.test(message)) return ': the user name or password was refused (WRONGPASS); check the credentials in engine.redisUrl or HERALD_REDIS_URL';
  if (/NOAUTH/.test(message)) return ': Redis requires a password (NOAUTH); put it in engine.redisUrl or HERALD_REDIS_URL';
  if (/NOPERM/.test(message)) return ': the Redis ACL user may not run a command Herald needs (NOPERM); see docs/operations.md, "Redis with TLS and an ACL user"';
  if (secure && typeof code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|HOSTNAME|ALTNAME/.test(code)) {
    return `: TLS: the server certificate was not accepted (${code}); set engine.redisTls.caFile to the CA that signed it (or serverName when it names another host)`;
  }
  if (secure && typeof code === 'string' && code !== '') return `: ${code}`;
  return '';
}

/** The same timeouts and failure rules as one Redis's clients, on every connection of a cluster. */
function redisOptions(config: Config) {
  return {
    commandTimeout: config.engine.redisCommandTimeoutMs,
    connectTimeout: config.engine.redisCommandTimeoutMs,
    socketTimeout: 2 * config.engine.redisCommandTimeoutMs,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
    lazyConnect: true,
  };
}

/**
 * A Redis Cluster: a Cluster client for commands (slot routing, MOVED/ASK,
 * failover) seeded by `engine.redisCluster`, and sharded pub/sub with one
 * connection per master. User, password and TLS
 * (`rediss://`, with engine.redisTls) of the first seed URL apply to every node.
 */
async function openRedisCluster(config: Config, tls: RedisTls | undefined): Promise<RedisClients> {
  const { Cluster, Redis } = await import('ioredis');
  const { GuardedConnector } = await import('./redis-connector.ts');
  const { ShardedPubSub } = await import('../broker/redis-sharded-pubsub.ts');
  const seeds = config.engine.redisCluster.map((text) => new URL(text));
  const first = seeds[0]!;
  const auth = {
    ...(first.username !== '' ? { username: decodeURIComponent(first.username) } : {}),
    ...(first.password !== '' ? { password: decodeURIComponent(first.password) } : {}),
    ...(first.protocol === 'rediss:' ? { tls: { ...tls, rejectUnauthorized: true } } : {}),
  };
  const nodeOptions = { ...redisOptions(config), ...auth, Connector: GuardedConnector };
  const command = new Cluster(
    seeds.map((url) => ({ host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port === '' ? 6379 : Number(url.port) })),
    {
      redisOptions: nodeOptions,
      enableOfflineQueue: false,
      lazyConnect: true,
      // The slot map is read again on MOVED and when a pub/sub connection closes; periodically by `refreshSlots` below,
      // not by ioredis' own `slotsRefreshInterval`.
      slotsRefreshInterval: 0,
      slotsRefreshTimeout: config.engine.redisCommandTimeoutMs,
      clusterRetryStrategy: (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
    },
  );
  command.on('error', () => {});
  command.on('node error', () => {});
  // ioredis 5.11's own slot-refresh timer re-arms itself when `disconnect` comes while a refresh is in flight (the
  // refresh's callback schedules the next round after `disconnect` cleared the timer), and then refreshes an empty pool
  // forever, referenced: a closed engine kept its process alive (CI: redis-cluster.test.ts's process waited 35 minutes
  // after its last test). This timer is Herald's: unreferenced, stopped when the client ends.
  const refreshSlots = setInterval(() => {
    if (command.status === 'ready') command.refreshSlotsCache();
  }, config.engine.probeIntervalMs);
  refreshSlots.unref();
  command.once('end', () => clearInterval(refreshSlots));
  const subscriber = new ShardedPubSub({
    cluster: command,
    connect: (host, port) => {
      const redis = new Redis({ ...nodeOptions, host, port, autoResubscribe: false });
      redis.on('error', () => {});
      return redis;
    },
  });
  try {
    await command.connect();
  } catch {
    command.disconnect();
    await subscriber.close();
    throw new Error(`cannot connect to the Redis Cluster at ${config.engine.redisCluster.map(redactUrl).join(', ')}`);
  }
  return { command, subscriber };
}

export async function createRedisEngine(
  config: Config,
  clients: RedisClients,
  onError: (error: unknown, what: string) => void,
  onHealthChange?: (healthy: boolean, reason: string) => void,
): Promise<Engine> {
  const { createRedisEngineParts } = await import('../broker/redis-engine.ts');
  const { RedisAdminStore } = await import('../console/redis-admin-store.ts');
  const { RedisOutbox } = await import('../webhooks/redis-outbox.ts');
  const { RedisAppStore } = await import('../apps/redis-app-store.ts');
  const nodeId = randomUUID();
  const parts = await createRedisEngineParts({
    nodeId,
    command: clients.command,
    subscriber: clients.subscriber,
    prefix: config.engine.redisPrefix,
    streamMetaTtlMs: config.engine.streamMetaTtlMs,
    presenceTtlMs: config.engine.presenceTtlMs,
    probeIntervalMs: config.engine.probeIntervalMs,
    probeDeadlineMs: config.engine.probeDeadlineMs,
    revocationRetentionMs: config.auth.revocationRetentionMs,
    onError,
    ...(onHealthChange === undefined ? {} : { onHealthChange }),
  });
  return {
    name: 'redis',
    nodeId,
    broker: parts.broker,
    presence: parts.presence,
    control: parts.control,
    revocations: parts.revocations,
    health: parts.health,
    deliveryProbe: parts.probe,
    redis: clients.command,
    adminStore: new RedisAdminStore(clients.command, config.engine.redisPrefix),
    appStore: new RedisAppStore(clients.command, config.engine.redisPrefix),
    // The endpoint's lease outlasts the longest POST (the timeout) and the Redis calls that settle it.
    webhookOutbox: new RedisOutbox(clients.command, config.engine.redisPrefix, { owner: nodeId, leaseMs: config.webhooks.timeoutMs + 2 * config.engine.redisCommandTimeoutMs }),
    async close() {
      await parts.close();
      clients.command.disconnect();
      if ('disconnect' in clients.subscriber) clients.subscriber.disconnect();
    },
  };
}
