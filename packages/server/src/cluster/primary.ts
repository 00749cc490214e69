/**
 * `herald serve --workers N`: the primary process. It serves no client
 * itself: it forks N workers that share the listening port (node:cluster),
 * links them through its PrimaryHub (streams, presence, control, session
 * routing) and supervises them (packages/server/src/cluster/supervisor.ts).
 * On the sqlite engine the primary owns the state file: its hub's broker
 * and revocations are the file's, and workers reach them over IPC; the API
 * keys too: the primary reads them (`herald keys` writes them beside it)
 * and sends workers the list at start and within a second of a change. On
 * the redis engine the primary holds no stream and no Redis connection: each
 * worker is a Redis node of its own (own connections, own node id), and
 * the hub only routes SSE/long-poll session requests between workers.
 *
 * Signals: SIGTERM and SIGINT drain every worker and exit 0; SIGHUP (or
 * `herald reload`, which signals the pid in `<stateDir>/herald.pid`)
 * re-reads the configuration and replaces the workers one by one.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Config } from '../config/schema.ts';
import { ConfigError } from '../config/load.ts';
import type { Logger } from '../core/logger.ts';
import { PrimaryHub } from './primary-hub.ts';
import { openSqliteStore, type SqliteStore } from '../store/sqlite-store.ts';
import { SqliteBroker } from '../broker/sqlite-broker.ts';
import { sqliteRevocationStore } from '../auth/revocation.ts';
import { Supervisor } from './supervisor.ts';
import { SqliteAdminStore } from '../console/sqlite-admin-store.ts';
import { SqliteAppStore } from '../apps/sqlite-app-store.ts';
import { describeKeyImport, importKeyFile, watchKeyTable, type KeyTableSource } from '../store/api-key-table.ts';
import { Registry } from 'prom-client';
import { webhookMetrics } from '../observability/metrics.ts';
import { MemoryOutbox } from '../webhooks/outbox.ts';
import { SqliteOutbox } from '../webhooks/sqlite-outbox.ts';
import { SqliteJournal } from '../webhooks/journal.ts';
import { createWebhooks, resolveEndpoints, type Webhooks } from '../webhooks/webhooks.ts';
import { resolveApps } from '../apps/apps.ts';
import { MemoryAppStore, type AppStore } from '../apps/app-store.ts';
import { StoreAppRegistry } from '../apps/store-app-registry.ts';
import { allAppEndpoints, appEndpointGroup, appEndpoints, followApps } from '../pusher/pusher-webhooks.ts';
import { watchAppsNotices } from '../apps/apps-notice.ts';
import { version } from '../app/version.ts';

/** How often the primary looks for API key changes in its state file (workers have them within this plus an IPC message). */
export const KEY_POLL_MS = 1000;

export interface PrimaryOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly workers: number;
  /** Re-reads the configuration for a reload; a ConfigError aborts the reload. */
  readonly reloadConfig?: () => Config;
  /** Worker entry module; packages/server/src/cluster/worker-main.ts by default. */
  readonly exec?: string;
  /** Installs SIGTERM/SIGINT/SIGHUP handlers and writes the pid file (the CLI does; tests may not). */
  readonly process?: boolean;
}

export interface ClusterPrimary {
  /** Resolves with the shared ports once every worker is ready. */
  readonly ready: Promise<{ readonly port: number; readonly adminPort: number }>;
  /** Resolves with the exit code once the cluster has stopped: 0 after a shutdown, 1 when it gave up. */
  readonly done: Promise<number>;
  reload(): Promise<boolean>;
  shutdown(): Promise<number>;
  /** Pids of the live workers. */
  readonly workerPids: readonly number[];
}

/** `cluster.workers` or `--workers`: "auto" is the number of cores. */
export function pidFilePath(stateDir: string): string {
  return join(stateDir, 'herald.pid');
}

/** `herald reload`: sends SIGHUP to the primary named by the pid file; answers its pid. */
export function signalReload(stateDir: string): number {
  const path = pidFilePath(stateDir);
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch {
    throw new Error(`no ${path}: is Herald running in cluster mode (--workers) with this state directory?`);
  }
  const pid = Number(text);
  if (!Number.isInteger(pid) || pid <= 1) throw new Error(`${path} does not hold a process id`);
  try {
    process.kill(pid, 'SIGHUP');
  } catch (error) {
    throw new Error(`cannot signal process ${pid} from ${path}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`, { cause: error });
  }
  return pid;
}

export function startPrimary(options: PrimaryOptions): ClusterPrimary {
  const { config } = options;
  const logger = options.logger.child({ role: 'primary' });
  let store: SqliteStore | undefined;
  let hubState = {};
  let engineHealth = (_healthy: boolean, _reason: string): void => {};
  let keys: KeyTableSource | undefined;
  if (config.engine.type === 'sqlite') {
    store = openSqliteStore({ stateDir: config.stateDir, synchronous: config.engine.sqliteSynchronous, busyTimeoutMs: config.engine.sqliteBusyTimeoutMs });
    logger.info({ file: store.path, synchronous: config.engine.sqliteSynchronous }, 'sqlite engine opened');
    try {
      // The primary owns the state file: it imports api-keys.json, and hands workers the keys.
      const imported = describeKeyImport(importKeyFile(store.db, config.stateDir, store.path), store.path);
      if (imported !== undefined) logger[imported.level]({}, imported.message);
      keys = watchKeyTable(store.db, store.path, { onReloadError: (problem) => logger.error({ problem }, 'API keys not reloaded (the keys read before stay in force)') });
    } catch (error) {
      store.close();
      throw error;
    }
    hubState = {
      apiKeys: keys.current(),
      broker: new SqliteBroker(store, {
        onHealthChange: (healthy, reason) => {
          if (healthy) logger.info({ reason }, 'sqlite engine healthy');
          else logger.error({ reason }, 'sqlite engine degraded: publishes with history fail with unavailable');
          engineHealth(healthy, reason);
        },
      }),
      adminStore: new SqliteAdminStore(store.db),
      appStore: new SqliteAppStore(store.db),
      revocationStore: sqliteRevocationStore(store.db, (error) => logger.error({ err: error }, 'revocation not written to the state file (it holds until restart)')),
    };
  }
  // Webhooks: the primary owns the outbox (the state file on sqlite) and decides the transitions for every worker.
  let webhooks: Webhooks | undefined;
  let metricsRegistry: Registry | undefined;
  // The apps' store (workers reach it over IPC): its apps' webhooks are the primary's to send.
  const appStore: AppStore = (hubState as { appStore?: AppStore }).appStore ?? new MemoryAppStore();
  let storeApps: StoreAppRegistry | undefined;
  let closed = false;
  // On the redis engine each worker is a Redis node: the workers share the outbox and the transitions in Redis.
  // Otherwise the dispatcher runs even without endpoints: apps made from the console or `herald apps` may bring some.
  if (config.engine.type !== 'redis') {
    const problems: string[] = [];
    // The cluster's composition root reads the environment: endpoint and app secrets may live there (secretEnv).
    // The apps' Pusher webhooks (pusher/pusher-webhooks.ts) share the dispatcher and the outbox.
    const configApps = resolveApps(config, process.env, problems);
    const endpoints = [...resolveEndpoints(config, process.env, problems), ...allAppEndpoints(configApps)];
    if (problems.length > 0) {
      store?.close();
      throw new ConfigError(problems);
    }
    metricsRegistry = new Registry();
    const outbox = store === undefined ? new MemoryOutbox() : new SqliteOutbox(store.db);
    webhooks = createWebhooks({
      config,
      endpoints,
      outbox,
      logger,
      userAgent: `Herald/${version}`,
      onOutcome: webhookMetrics(metricsRegistry, outbox),
      journal: store === undefined ? undefined : new SqliteJournal(store.db),
      endpointsMayChange: true,
    });
    const dispatcher = webhooks.dispatcher;
    void StoreAppRegistry.open({
      configApps,
      store: appStore,
      pollIntervalMs: config.apps.pollIntervalMs,
      onError: (error) => logger.warn({ err: error }, 'apps not reloaded from the store (the apps read before stay in force)'),
    }).then(
      (registry) => {
        if (closed) return void registry.close();
        storeApps = registry;
        for (const app of registry.list()) if (app.source === 'store') dispatcher.replaceEndpoints(appEndpointGroup(app.id), appEndpoints(app));
        followApps(registry, dispatcher);
        registry.watch();
      },
      (error: unknown) => logger.error({ err: error }, 'stored apps not read: their webhooks are not sent until a restart'),
    );
    if (endpoints.length > 0) logger.info({ endpoints: endpoints.map((endpoint) => endpoint.name) }, 'webhooks on (the primary sends them)');
  }
  const hub = new PrimaryHub({
    revocationRetentionMs: config.auth.revocationRetentionMs,
    ...hubState,
    appStore,
    ...(webhooks === undefined ? {} : { webhooks: { tracker: webhooks.tracker, emit: (event) => webhooks.dispatcher.emit(event) } }),
  });
  engineHealth = (healthy, reason) => hub.setEngineHealth(healthy, reason);
  // `herald apps` writes the state file beside the primary and leaves a notice (apps/apps-notice.ts): the primary reloads its apps (webhooks) and tells the workers.
  const appsNotices =
    config.engine.type === 'sqlite'
      ? watchAppsNotices(
          config.stateDir,
          () => {
            void storeApps?.reload();
            hub.control({ kind: 'apps_changed', id: '' });
          },
          (error) => logger.warn({ err: error }, '`herald apps` changes are seen within apps.pollIntervalMs only: the notices directory cannot be watched'),
        )
      : undefined;
  // `herald keys` writes the state file beside the primary: a look at PRAGMA data_version per interval.
  const keyPoll =
    keys === undefined
      ? undefined
      : setInterval(() => {
          if (keys.poll()) hub.setApiKeys(keys.current());
        }, KEY_POLL_MS);
  keyPoll?.unref();
  let resolveReady!: (ports: { port: number; adminPort: number }) => void;
  let rejectReady!: (error: Error) => void;
  const ready = new Promise<{ port: number; adminPort: number }>((resolve, reject) => {
    resolveReady = resolve;
    rejectReady = reject;
  });
  ready.catch(() => undefined);
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((resolve) => (resolveDone = resolve));
  const pidFile = options.process === true ? pidFilePath(config.stateDir) : undefined;

  let stopping: Promise<number> | undefined;
  const stop = (code: number): Promise<number> => {
    stopping ??= (async () => {
      const started = Date.now();
      await supervisor.shutdown();
      clearInterval(keyPoll);
      appsNotices?.close();
      await hub.close();
      closed = true;
      await storeApps?.close();
      await webhooks?.close();
      store?.close();
      if (pidFile !== undefined) removePidFile(pidFile);
      logger.info({ ms: Date.now() - started, code }, 'cluster stopped');
      rejectReady(new Error('cluster stopped'));
      resolveDone(code);
      return code;
    })();
    return stopping;
  };

  const supervisor = new Supervisor({
    config,
    workers: options.workers,
    hub,
    logger,
    // Beside this module, with its extension (.ts from the sources, .js once built).
    exec: options.exec ?? fileURLToPath(new URL(`./worker-main${extname(fileURLToPath(import.meta.url))}`, import.meta.url)),
    onReady: (ports) => resolveReady(ports),
    ...(metricsRegistry === undefined ? {} : { primaryMetrics: () => metricsRegistry.getMetricsAsJSON() }),
    onFatal: (reason) => {
      logger.error({ reason }, 'cluster giving up');
      void stop(1);
    },
  });

  const reload = async (): Promise<boolean> => {
    let next: Config | undefined;
    if (options.reloadConfig !== undefined) {
      try {
        next = options.reloadConfig();
      } catch (error) {
        logger.error({ problems: error instanceof ConfigError ? error.problems : [(error as Error).message] }, 'reload refused: the configuration is invalid; workers unchanged');
        return false;
      }
    }
    return supervisor.reload(next);
  };

  if (options.process === true) {
    process.title = 'herald primary';
    if (pidFile !== undefined) writePidFile(pidFile, config.stateDir);
    const onStop = (signal: string) => {
      logger.info({ signal }, 'draining the cluster');
      void stop(0);
    };
    process.on('SIGTERM', () => onStop('SIGTERM'));
    process.on('SIGINT', () => onStop('SIGINT'));
    process.on('SIGHUP', () => {
      logger.info({ signal: 'SIGHUP' }, 'reload requested');
      void reload();
    });
  }
  logger.info({ workers: options.workers, pid: process.pid, engine: config.engine.type }, 'cluster primary starting');
  supervisor.start();

  return {
    ready,
    done,
    reload,
    shutdown: () => stop(0),
    get workerPids() {
      return supervisor.pids;
    },
  };
}

function writePidFile(path: string, stateDir: string): void {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(path, `${process.pid}\n`, { mode: 0o644 });
}

function removePidFile(path: string): void {
  try {
    if (readFileSync(path, 'utf8').trim() === String(process.pid)) rmSync(path);
  } catch {
    // already gone
  }
}
