/**
 * The composition root: the only module that builds everything. It runs
 * the start-time checks (preflight.ts: the files the config names, the
 * production rules), creates the engine, the node, the HTTP listener and
 * the exporters, and owns the shutdown order.
 */
import type { AddressInfo } from 'node:net';
import type { Logger as PinoLogger } from 'pino';
import type { Config } from '../config/schema.ts';
import { ConfigError } from '../config/load.ts';
import { createMemoryEngine, createRedisEngine, createSqliteEngine, openRedisClients, redisTarget, type Engine, type RedisTls } from './engine.ts';
import { ApiKeyVerifier } from '../auth/api-keys.ts';
import { watchKeyStore } from '../auth/key-store.ts';
import { DeliveryProbe } from '../broker/delivery-probe.ts';
import { Node } from '../core/node.ts';
import { basename, join } from 'node:path';
import { createMetrics, type LiveTotals } from '../observability/metrics.ts';
import { hostname } from 'node:os';
import { defaultLiveHeapMiB, Watchdog, type ProcessSample, type WatchdogThreshold } from '../observability/watchdog.ts';
import type { NotReadyReason } from './health.ts';
import { createLogger } from '../observability/pino-logger.ts';
import { attachWebSocket } from '../transports/websocket.ts';
import { AppPaths } from '../transports/app-paths.ts';
import { createHttpApp, type AdminChange } from './http.ts';
import { startChecks } from './preflight.ts';
import { openSharedLimits, type SharedLimits } from './shared-limits.ts';
import { createAdminApp } from './admin.ts';
import { createAuditLog } from '../console/audit-log.ts';
import { KeyUsage } from '../console/key-usage.ts';
import { RedisKeyUsageStore, SqliteKeyUsageStore } from '../console/key-usage-store.ts';
import { version } from './version.ts';
import type { SessionRouter } from '../transports/http-connection.ts';
import { hookTargets } from '../hooks/hook-secrets.ts';
import type { Hooks } from '../hooks/hooks.ts';
import type { SandboxPool } from '../hooks/sandbox-pool.ts';
import { RoutedHooks } from '../hooks/routed-hooks.ts';
import { diagnostics } from '../observability/diagnostics.ts';
import { createWebhooks, type Webhooks } from '../webhooks/webhooks.ts';
import { MemoryAppStore } from '../apps/app-store.ts';
import { StoreAppRegistry } from '../apps/store-app-registry.ts';
import { AppAdmin } from '../apps/app-admin.ts';
import type { AppRegistry } from '../apps/apps.ts';
import type { WebhookEvent } from '../webhooks/events.ts';
import { allAppEndpoints, followApps, PusherWebhookSink, watchSubscriptionCounts } from '../pusher/pusher-webhooks.ts';
import { SUBSCRIPTION_COUNT_INTERVAL_MS } from '../pusher/subscription-counts.ts';
import { Ticker } from '../util/ticker.ts';
import { watchAppsNotices } from '../apps/apps-notice.ts';
import { createPusherEndpoint } from '../pusher/pusher-endpoint.ts';

export interface HeraldServer {
  readonly port: number;
  readonly host: string;
  readonly node: Node;
  /** The apps this server serves (config and store; apps/store-app-registry.ts). */
  readonly apps: AppRegistry;
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
  /** This process's metrics as prom-client JSON (cluster mode: the primary aggregates them). */
  metricsJson(): Promise<readonly object[]>;
}

export interface StartOptions {
  readonly config: Config;
  readonly logger?: PinoLogger;
  /** Whether the process runs as root (default: asks the OS; tests inject it). */
  readonly runningAsRoot?: boolean;
  /** The engine linking nodes; default from `config.engine` (memory or Redis). */
  readonly engine?: Engine;
  /**
   * Cluster mode on an engine of its own (redis): routes SSE/long-poll
   * session requests to the worker that owns the session. The cluster
   * engine brings its own (`engine.sessionRouter`).
   */
  readonly sessionRouter?: SessionRouter;
  /** Cluster mode on the redis engine: wraps the engine this server opened (the worker mirrors its presence to the primary). */
  readonly adaptEngine?: (engine: Engine) => Engine;
  /** Cluster mode: the other workers that are not ready, as the primary last said (readiness). */
  readonly clusterReadiness?: () => readonly NotReadyReason[];
  /** Cluster mode: /metrics answers every worker's metrics, aggregated by the primary. */
  readonly clusterMetrics?: () => Promise<string>;
  /** Cluster mode: the watchdog's thresholds changed (the worker tells the primary). */
  readonly onWatchdog?: (over: readonly WatchdogThreshold[], sample: ProcessSample) => void;
  /** Cluster mode: the delivery probe failed (its reason) or passes again (undefined); the worker tells the primary. */
  readonly onDeliveryProbe?: (failure: string | undefined) => void;
  /** Cluster mode: this worker's id in its primary (shown per node in the console's overview). */
  readonly worker?: number | undefined;
}

/** Longest wait at shutdown for the API key uses not saved yet (console/key-usage.ts). */
const KEY_USAGE_SAVE_MS = 1000;

const NO_TOTALS: LiveTotals = { connections: { websocket: 0, sse: 0, longPoll: 0, pusher: 0 }, subscriptions: 0, publications: 0, deliveries: 0 };

/** Builds the engine named by the config; Redis clients are opened here. */
async function openEngine(config: Config, logger: PinoLogger, redisTls: RedisTls | undefined): Promise<Engine> {
  if (config.engine.type === 'memory') return createMemoryEngine(config);
  if (config.engine.type === 'sqlite') {
    const engine = await createSqliteEngine(
      config,
      (healthy, reason) => (healthy ? logger.info({ reason }, 'sqlite engine healthy') : logger.error({ reason }, 'sqlite engine degraded: publishes with history fail with unavailable')),
      (error, what) => logger.error({ err: error, what }, 'sqlite engine'),
      (level, message) => logger[level]({}, message),
    );
    logger.info({ file: `${config.stateDir}/herald.db`, synchronous: config.engine.sqliteSynchronous }, 'sqlite engine opened');
    return engine;
  }
  const clients = await openRedisClients(config, redisTls);
  logger.info({ redis: redisTarget(config) }, 'redis engine connected');
  return createRedisEngine(
    config,
    clients,
    (error, what) => logger.warn({ err: error, what }, 'redis engine'),
    (healthy, reason) => (healthy ? logger.info({ reason }, 'redis engine healthy') : logger.error({ reason }, 'redis engine degraded')),
  );
}

/** A listener that cannot bind: one line naming the listener and how to move it. */
export class ListenError extends Error {
  readonly code: string;
  constructor(message: string, code: string) {
    super(message);
    this.name = 'ListenError';
    this.code = code;
  }
}

const listeners = {
  public: { name: 'the public listener', flag: '--port', env: 'HERALD_PORT', key: 'listen.port', hostFlag: '--host', hostKey: 'listen.host (or HERALD_HOST)' },
  internal: { name: 'the internal listener (metrics, health)', flag: '--admin-port', env: 'HERALD_ADMIN_PORT', key: 'admin.port', hostFlag: undefined, hostKey: 'admin.host' },
} as const;

function listenError(error: unknown, which: keyof typeof listeners, host: string, port: number): Error {
  const code = (error as NodeJS.ErrnoException).code;
  const l = listeners[which];
  const at = `${host.includes(':') ? `[${host}]` : host}:${port}`;
  const move = `${l.flag} PORT, ${l.env}=PORT or ${l.key} in the config file (0 picks a free port)`;
  if (code === 'EADDRINUSE') return new ListenError(`${l.name} cannot listen on ${at}: the port is in use (another Herald?); move it with ${move}`, code);
  if (code === 'EACCES') return new ListenError(`${l.name} cannot listen on ${at}: permission denied (ports below 1024 need privileges); use a higher port with ${move}`, code);
  if (code === 'EADDRNOTAVAIL') return new ListenError(`${l.name} cannot listen on ${at}: no such address on this machine; set ${l.hostFlag === undefined ? '' : `${l.hostFlag} HOST or `}${l.hostKey}`, code);
  return error instanceof Error ? error : new Error(String(error));
}

export async function startServer(options: StartOptions): Promise<HeraldServer> {
  const { config } = options;
  const logger = options.logger ?? createLogger(config.log.level);
  const checks = await startChecks(config, {
    runningAsRoot: options.runningAsRoot ?? process.getuid?.() === 0,
    purpose: 'serve',
    // The composition root reads the environment: webhook secrets may live there (secretEnv).
    env: process.env,
    onKeyStoreReloadError: (problem) => logger.error({ problem }, 'API key store not reloaded'),
  });
  for (const warning of checks.warnings) logger.warn({}, warning);
  if (checks.prepared === undefined) throw new ConfigError(checks.problems);
  const { tls, edge, tokens, keyStore, redisTls, adminTls, consoleEnabled, webhookEndpoints, hookSecrets, hookSource, oidcProviders } = checks.prepared;

  const opened = options.engine ?? (await openEngine(config, logger, redisTls));
  const engine = options.adaptEngine === undefined ? opened : options.adaptEngine(opened);
  // The tenants of the Pusher endpoint: the config's apps and the store's (console, `herald apps`), apps/store-app-registry.ts.
  const appStore = engine.appStore ?? new MemoryAppStore();
  let apps: StoreAppRegistry;
  try {
    apps = await StoreAppRegistry.open({
      configApps: checks.prepared.apps,
      store: appStore,
      pollIntervalMs: config.apps.pollIntervalMs,
      onError: (error) => logger.warn({ err: error }, 'apps not reloaded from the store (the apps read before stay in force)'),
      onConflict: (id, reason) => logger.warn({ app: id }, `stored app left out: ${reason}`),
    });
  } catch (error) {
    await engine.close().catch(() => undefined);
    throw error;
  }
  // The sqlite engine keeps the keys in its state file; the others read api-keys.json.
  const apiKeys = new ApiKeyVerifier(config.api.keys, { source: engine.apiKeys ?? keyStore ?? watchKeyStore(config.stateDir, { onReloadError: (problem) => logger.error({ problem }, 'API key store not reloaded') }) });
  let sharedLimits: SharedLimits | undefined;
  try {
    sharedLimits = openSharedLimits(config, engine, edge, logger);
  } catch (error) {
    await engine.close().catch(() => undefined);
    throw error;
  }
  let webhooks: Webhooks | undefined;
  // Herald's endpoints and the apps' Pusher webhooks (pusher/pusher-webhooks.ts) share one dispatcher and outbox.
  // With apps, it runs even before one has webhooks: the console and `herald apps` may add them while the server runs.
  // Cluster workers send theirs to the primary instead (engine.webhookEvents, engine.webhookEmit).
  // Apps (and their webhooks) may come from the store at any time, also to a server that started without any: on an engine with an outbox, the dispatcher always runs.
  const withApps = apps.list().length > 0 || engine.webhookOutbox !== undefined;
  if ((config.webhooks.endpoints.length > 0 || withApps) && engine.webhookEvents === undefined && engine.webhookEmit === undefined) {
    const problems: string[] = [];
    const endpoints = [...webhookEndpoints, ...allAppEndpoints(apps.list())];
    if (engine.webhookOutbox === undefined) problems.push(`/webhooks: webhooks are not available on the ${engine.name} engine in this process`);
    if (problems.length > 0) {
      await sharedLimits?.close();
      await engine.close().catch(() => undefined);
      throw new ConfigError(problems);
    }
    webhooks = createWebhooks({
      config,
      endpoints,
      outbox: engine.webhookOutbox!,
      journal: engine.webhookJournal,
      shared: engine.name === 'redis' && engine.redis !== undefined ? { redis: engine.redis, prefix: config.engine.redisPrefix, node: engine.nodeId, nodeTtlMs: config.engine.presenceTtlMs } : undefined,
      logger,
      userAgent: `Herald/${version}`,
      onOutcome: (endpoint, outcome, count) => diagnostics.webhook.publish({ node: engine.nodeId, endpoint, outcome, count }),
      endpointsMayChange: withApps,
    });
    followApps(apps, webhooks.dispatcher);
    if (endpoints.length > 0) logger.info({ endpoints: endpoints.map((endpoint) => endpoint.name), outbox: engine.name === 'memory' ? 'memory (lost on restart)' : engine.name === 'redis' ? 'redis (shared by every node)' : 'state file' }, 'webhooks on');
  }
  // The Pusher socket's own events (client_event, cache_miss) for the apps' webhooks: to this process's dispatcher, or a worker's to the primary's.
  const emitWebhook = webhooks === undefined ? engine.webhookEmit : (event: WebhookEvent) => webhooks.dispatcher.emit(event);
  const pusherEvents = emitWebhook === undefined ? undefined : new PusherWebhookSink(emitWebhook);
  if (emitWebhook === undefined) {
    // Started without apps: webhooks of an app created later wait for a restart.
    apps.onChange((id) => {
      if ((apps.byId(id)?.webhooks.length ?? 0) > 0) logger.warn({ app: id }, 'this app has webhooks, but the server started without apps or webhooks: restart it to send them');
    });
  }
  const sessionRouter = options.sessionRouter ?? engine.sessionRouter;
  const w = config.watchdog;
  const watchdog = new Watchdog({
    eventLoopDelayMs: w.eventLoopDelayMs,
    liveHeapMiB: w.liveHeapMiB === 'auto' ? defaultLiveHeapMiB() : w.liveHeapMiB,
    rssMiB: w.rssMiB,
    intervalMs: w.intervalMs,
    settleMs: w.settleMs,
    dir: join(config.stateDir, 'diagnostics'),
    maxReports: w.maxReports,
    reportIntervalMs: w.reportIntervalMs,
    heapSnapshots: w.heapSnapshots,
    maxHeapSnapshots: w.maxHeapSnapshots,
    heapSnapshotMaxMiB: w.heapSnapshotMaxMiB,
    logger,
    onChange: options.onWatchdog,
  });
  // Every engine but Redis (which probes its pub/sub itself: engine.deliveryProbe) gets the end-to-end delivery probe.
  const probe =
    engine.deliveryProbe !== undefined || engine.name === 'redis'
      ? undefined
      : new DeliveryProbe(engine.broker, {
          nodeId: engine.nodeId,
          intervalMs: config.engine.probeIntervalMs,
          deadlineMs: config.engine.probeDeadlineMs,
          onChange: (failure) => {
            if (failure === undefined) logger.info({}, 'delivery probe passes again; ready');
            else logger.error({ reason: failure }, 'delivery probe failing; not ready');
            options.onDeliveryProbe?.(failure);
          },
        });
  // The metrics exporter is made from the node; the node's snapshots read its totals.
  const exporter: { totals?: () => LiveTotals } = {};
  const host = hostname();
  // Loaded only when hooks are configured: undici and the hook client are about 5 MiB of an idle server's RSS.
  const proxyHooks =
    hookTargets(config.hooks).length === 0
      ? undefined
      : new (await import('../hooks/proxy-hooks.ts')).ProxyHooks({ config: config.hooks, secrets: hookSecrets, maxJsonDepth: config.limits.maxJsonDepth, node: engine.nodeId });
  let scriptHooks: Hooks | undefined;
  const js = config.hooks.javascript;
  if (js !== undefined && hookSource !== undefined) {
    const { JavascriptHooks } = await import('../hooks/javascript-hooks.ts');
    let pool: SandboxPool | undefined;
    try {
      pool = await (await import('../hooks/sandbox-pool.ts')).SandboxPool.start({
        source: hookSource,
        filename: basename(js.file),
        limits: { memoryBytes: js.memoryBytes, stackBytes: js.stackBytes, loadTimeoutMs: Math.max(1000, js.timeoutMs), logPerSecond: js.logPerSecond },
        size: js.pool,
        maxQueue: js.maxQueue,
        maxQueueWaitMs: js.maxQueueWaitMs,
        onLog: (text, dropped) => logger.info({ hook: js.file, ...(dropped > 0 ? { dropped } : {}) }, `hook log: ${text}`),
        onExit: (why) => logger.warn({ hook: js.file, why }, 'a JavaScript hook sandbox process exited; replacing it'),
      });
      scriptHooks = new JavascriptHooks({ config: js, pool, maxAnswerBytes: config.hooks.maxAnswerBytes, maxJsonDepth: config.limits.maxJsonDepth, node: engine.nodeId });
      logger.info({ hook: js.file, events: js.events, pool: js.pool }, 'JavaScript hooks on');
    } catch (error) {
      await pool?.close();
      await proxyHooks?.close();
      await webhooks?.close();
      await sharedLimits?.close();
      await engine.close().catch(() => undefined);
      throw new ConfigError([`/hooks/javascript/file: ${js.file} cannot be used: ${(error as Error).message}`]);
    }
  }
  const hooks = scriptHooks === undefined ? proxyHooks : proxyHooks === undefined ? scriptHooks : new RoutedHooks(proxyHooks, scriptHooks);
  const node = new Node({
    config,
    hooks,
    broker: probe?.broker ?? engine.broker,
    presence: engine.presence,
    tokens,
    revocations: engine.revocations,
    control: engine.control,
    id: engine.nodeId,
    health: engine.health,
    processStats: () => ({ ...watchdog.sample, over: watchdog.over() }),
    liveStats: () => ({ worker: options.worker, host, ...(exporter.totals?.() ?? NO_TOTALS) }),
    logger,
    version,
    ...(webhooks === undefined ? (engine.webhookEvents === undefined ? {} : { events: engine.webhookEvents }) : { events: webhooks.nodeEvents }),
  });
  node.onControl((command) => {
    if (command.kind === 'apps_changed') void apps.reload();
  });
  // subscription_count webhooks of the apps that take them (pusher/pusher-webhooks.ts), on the Pusher socket's count timer.
  const countTicker = new Ticker(SUBSCRIPTION_COUNT_INTERVAL_MS, (error) => logger.error({ err: error }, 'subscription counts: a look failed'));
  const subscriptionCounts = pusherEvents === undefined ? undefined : watchSubscriptionCounts(node, apps, pusherEvents, countTicker);
  const metrics = createMetrics(node, watchdog, webhooks?.dispatcher);
  exporter.totals = metrics.totals;
  probe?.start();
  const ownProbe = engine.deliveryProbe;
  ownProbe?.onChange((failure) => {
    if (failure === undefined) logger.info({}, 'delivery probe passes again; ready');
    else logger.error({ reason: failure }, 'delivery probe failing; not ready');
    options.onDeliveryProbe?.(failure);
  });
  const verdict = probe !== undefined ? () => probe.failure() : ownProbe !== undefined ? () => ownProbe.failure() : undefined;
  const health = { node, watchdog, probe: verdict, cluster: options.clusterReadiness };
  // Admin changes made through the server API (disconnect, revocations) go to the console's audit log.
  const auditLog = createAuditLog(engine.adminStore, { onError: (error, entry) => logger.error({ err: error, action: entry.action }, 'audit entry not written') });
  const keyUsage = new KeyUsage(node, apiKeys, {
    store:
      config.engine.type === 'sqlite'
        ? new SqliteKeyUsageStore(config.stateDir)
        : engine.redis === undefined
          ? undefined
          : new RedisKeyUsageStore(engine.redis, config.engine.redisPrefix),
    onError: (error) => logger.warn({ err: error }, 'API key last uses not read or saved'),
  });
  const onAdminChange = (change: AdminChange): void =>
    auditLog.record({
      actor: `api-key:${change.key}`,
      action: `api.${change.method}`,
      target: change.target,
      address: change.ip,
      outcome: change.outcome,
      detail: change.code === undefined ? { via: 'api' } : { via: 'api', code: change.code },
    });
  // The native transports per app: /apps/{id}/connection/… (transports/app-paths.ts).
  const appPaths = new AppPaths(apps, { leewayMs: config.auth.leewayMs, maxJsonDepth: config.limits.maxJsonDepth, clients: () => node.connectedClients() });
  const app = await createHttpApp({ config, node, apiKeys, apps, appPaths, logger, edge, tls, sessionRouter, health, sharedLimits, onAdminChange });
  await app.ready();
  // The Pusher protocol endpoint (/app/{key}) shares the listener and the node (docs/pusher.md).
  const pusher = createPusherEndpoint({ config, node, apps, logger, edge, events: pusherEvents, countTicker });
  const websockets = attachWebSocket(app.server, node, {
    maxMessageBytes: config.limits.maxMessageBytes,
    maxFragments: config.limits.maxFragments,
    gate: edge,
    appPaths,
    otherUpgrade: (request, socket, head, path) => pusher.otherUpgrade(request, socket, head, path),
  });
  // The composition root reads the environment: debug actions exist only for the watchdog's tests.
  const debugActions = process.env['HERALD_TEST_DEBUG_ACTIONS'] === '1';
  const admin = await createAdminApp({
    config,
    node,
    metrics: metrics.registry,
    logger,
    health,
    debugActions,
    probe,
    clusterMetrics: options.clusterMetrics,
    tls: adminTls,
    consoleStore: consoleEnabled ? engine.adminStore : undefined,
    oidcProviders,
    keyUsage,
    apps: {
      // Every node reloads on apps_changed; this one before it answers, so the console's next read sees the change here.
      admin: new AppAdmin({ config, store: appStore, announce: async (id) => void (await Promise.all([node.publishControl({ kind: 'apps_changed', id }), apps.reload()])) }),
      connections: (id) => edge.appConnections.split(id),
      registry: apps,
    },
  });
  // A listener that cannot bind leaves nothing behind (timers, the other listener, the engine).
  const abandon = async () => {
    probe?.close();
    await apps.close();
    pusher.close();
    subscriptionCounts?.close();
    await keyUsage.close();
    await admin.close().catch(() => undefined);
    await app.close().catch(() => undefined);
    await node.close().catch(() => undefined);
    await hooks?.close();
    await webhooks?.close();
    await sharedLimits?.close();
    await engine.close().catch(() => undefined);
    metrics.close();
    watchdog.close();
  };
  try {
    await admin.listen({ host: config.admin.host, port: config.admin.port });
  } catch (error) {
    await abandon();
    throw listenError(error, 'internal', config.admin.host, config.admin.port);
  }
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (error) {
    await abandon();
    throw listenError(error, 'public', config.listen.host, config.listen.port);
  }
  const address = app.server.address() as AddressInfo;
  const adminAddress = admin.server.address() as AddressInfo;
  logger.info({ host: config.listen.host, port: address.port, tls: tls !== undefined, mode: config.mode, version }, 'listening');
  logger.info({ host: config.admin.host, port: adminAddress.port, tls: adminTls !== undefined }, 'internal listener (metrics, health)');
  apps.watch();
  // `herald apps` beside this process on the sqlite engine leaves a notice in the state directory (apps/apps-notice.ts); cluster workers hear it from their primary.
  const appsNotices =
    config.engine.type === 'sqlite' && options.worker === undefined
      ? watchAppsNotices(config.stateDir, () => void apps.reload(), (error) => logger.warn({ err: error }, '`herald apps` changes are seen within apps.pollIntervalMs only: the notices directory cannot be watched'))
      : undefined;
  if (apps.list().length > 0) logger.info({ apps: apps.list().map((a) => ({ id: a.id, key: a.key, default: a.channelPrefix === '' })) }, 'apps');
  if (consoleEnabled) {
    const at = `${adminTls === undefined ? 'http' : 'https'}://${config.admin.host.includes(':') ? `[${config.admin.host}]` : config.admin.host}:${adminAddress.port}${config.admin.console.basePath}/`;
    logger.info({ url: config.admin.console.origin === undefined ? at : config.admin.console.origin + config.admin.console.basePath + '/' }, 'admin console');
    if (config.mode === 'development' && (await engine.adminStore.listAdmins()).length === 0) {
      logger.info(
        {},
        config.engine.type === 'memory'
          ? 'admin console: the memory engine keeps admins inside this process, where `herald admin` cannot reach them; run on the sqlite engine (the default) to use the console'
          : `admin console: no admin yet; create the first (an owner) with \`npm run herald -- admin create NAME --role owner\` (add --config FILE when the server has one), then sign in at ${at}`,
      );
    }
  }

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
      let listenerClosed = sessionRouter === undefined ? undefined : stopAccepting();
      // Pusher connections hear 4200 (reconnect at once, elsewhere) before the node drains.
      const pusherDrained = pusher.drain(drainTimeoutMs);
      const clientsDrained = (await node.drain(drainTimeoutMs)) && (await pusherDrained);
      // WebSocket close handshakes get what is left of the drain time.
      const drained = (await websockets.settle(left())) && clientsDrained;
      websockets.terminateAll();
      pusher.close();
      subscriptionCounts?.close();
      listenerClosed ??= stopAccepting();
      probe?.close();
      // The last minute of API key uses is saved, but never holds the shutdown up for long.
      await Promise.race([keyUsage.close(), new Promise((resolve) => setTimeout(resolve, KEY_USAGE_SAVE_MS).unref())]);
      await auditLog.flush();
      await node.close();
      appsNotices?.close();
      await apps.close();
      await hooks?.close();
      // Events of the drain (disconnects, vacated) are in the outbox; what is not sent now is sent after the next start (redis: by another node).
      await webhooks?.close();
      await sharedLimits?.close();
      await engine.close().catch((error: unknown) => logger.warn({ err: error }, 'engine close failed'));
      // Let final answers (disconnect frames) finish, then cut what is left.
      app.server.closeIdleConnections();
      await Promise.race([listenerClosed, new Promise((resolve) => setTimeout(resolve, Math.min(2000, left())).unref())]);
      app.server.closeAllConnections();
      await app.close().catch(() => undefined);
      // The internal listener last: metrics and health stay readable during the drain.
      await admin.close().catch(() => undefined);
      metrics.close();
      watchdog.close();
      logger.info({ drained, ms: Date.now() - started }, 'stopped');
      return drained;
    })();
    return closing;
  };

  return {
    port: address.port,
    host: config.listen.host,
    node,
    apps,
    adminPort: adminAddress.port,
    shutdown,
    close: async () => {
      await shutdown(0);
    },
    metricsJson: () => metrics.registry.getMetricsAsJSON(),
  };
}
