/**
 * Entry of a cluster worker, forked by packages/server/src/cluster/primary.ts. Says hello,
 * waits for `start` (config and the revocations in force), then runs the
 * same server as `herald serve`: on the cluster engine (memory, sqlite:
 * streams and presence in the primary), or, on the redis engine, as a
 * Redis node of its own (its own connections and node id; only SSE and
 * long-poll session requests go through the primary, and it tells the
 * primary when its engine is degraded, for the cluster's readiness). Answers heartbeats;
 * drains on `shutdown` from the primary, or on its own SIGTERM (telling the
 * primary it is leaving). SIGINT and SIGHUP are the primary's business: a
 * terminal's Ctrl-C reaches the whole process group, and the primary then
 * drains every worker. Exits when the primary goes away.
 */
import type { HeraldServer } from '../app/app.ts';
import { startServer } from '../app/app.ts';
import { ConfigError, deepFreeze } from '../config/load.ts';
import { createLogger } from '../observability/pino-logger.ts';
import type { Logger } from '../core/logger.ts';
import { EXIT_CANNOT_START, type PrimaryMessage, type WorkerMessage } from './ipc-messages.ts';
import { BatchingPipe, processCarrier } from './pipe.ts';
import { createWorkerEngine, createWorkerSessions } from './worker-engine.ts';
import { cleanOrphans, mirrorPresence, type PresenceOrphans } from './presence-mirror.ts';
import type { Engine } from '../app/engine.ts';
import type { NotReadyReason } from '../app/health.ts';
import { monotonicMetrics } from './counter-ledger.ts';
import { youngGenerationHold } from '../util/young-generation.ts';

const pipe = new BatchingPipe<PrimaryMessage, WorkerMessage>(processCarrier());
let server: HeraldServer | undefined;
let starting: Promise<void> | undefined;
let leaving = false;
let logger: Logger | undefined;
let drainTimeoutMs = 30000;
let clusterNotReady: readonly NotReadyReason[] = [];
let workerId = 0;
let metricsSeq = 0;
/** Redis engine: the engine state last told to the primary (`ok`, or why degraded). */
let engineState = 'ok';
let ownEngine = false;
/** Redis engine: the engine as opened (unmirrored), to clean up after a dead worker. */
let redisEngine: Engine | undefined;
/** Orphans that arrived before this worker's engine was open. */
const earlyOrphans: { from: number; orphans: PresenceOrphans }[] = [];

/** Removes a dead worker's presence entries and announces its leaves (best effort: what Redis refuses is left to the presence TTL). */
function adoptOrphans(from: number, orphans: PresenceOrphans): void {
  if (redisEngine === undefined) {
    earlyOrphans.push({ from, orphans });
    return;
  }
  void cleanOrphans(redisEngine, orphans).then((done) => logger?.info({ deadWorker: from, ...done }, 'presence of a dead worker removed, leaves announced'));
}

/** Redis engine: tells the primary when this worker's engine becomes degraded or healthy again (checked at each heartbeat). */
function reportEngine(): void {
  if (!ownEngine || server === undefined || leaving) return;
  const health = server.node.health();
  const state = health.status === 'degraded' ? (health.reason ?? 'degraded') : 'ok';
  if (state === engineState) return;
  engineState = state;
  pipe.send({ type: 'engine_state', degraded: state === 'ok' ? null : state });
}
const metricsPending = new Map<number, (text: string) => void>();

/** Series that mean something per worker (a sum over workers would not): they get a `worker` label in the aggregate. */
const PER_WORKER = new Set(['herald_event_loop_delay_seconds', 'herald_heap_used_bytes', 'herald_live_heap_bytes', 'herald_rss_bytes', 'herald_watchdog_over', 'herald_watchdog_reports']);

function labelWorker(metrics: readonly object[]): object[] {
  return metrics.map((metric) => {
    const m = metric as { name: string; values: { labels: Record<string, unknown> }[] };
    if (!PER_WORKER.has(m.name)) return metric;
    return { ...m, values: m.values.map((v) => ({ ...v, labels: { ...v.labels, worker: String(workerId) } })) };
  });
}

/** Tells the primary this worker's counters so far (it keeps them once the worker is gone). */
async function reportCounters(): Promise<void> {
  if (server === undefined) return;
  try {
    pipe.send({ type: 'counters', metrics: monotonicMetrics(await server.metricsJson()) });
  } catch (error) {
    logger?.warn({ err: error }, 'counters not reported to the primary');
  }
}

/** /metrics in cluster mode: the primary gathers every worker's metrics and aggregates them. */
function clusterMetrics(): Promise<string> {
  return new Promise((resolve, reject) => {
    const id = ++metricsSeq;
    const timer = setTimeout(() => {
      metricsPending.delete(id);
      reject(new Error('the primary did not answer the metrics request'));
    }, 5000);
    metricsPending.set(id, (text) => {
      clearTimeout(timer);
      metricsPending.delete(id);
      resolve(text);
    });
    pipe.send({ type: 'metrics_request', id });
  });
}

function onMessage(message: PrimaryMessage): void {
  switch (message.type) {
    case 'ping':
      pipe.send({ type: 'pong', seq: message.seq });
      reportEngine();
      return;
    case 'start':
      starting ??= start(message);
      return;
    case 'shutdown':
      void leave(message.drainTimeoutMs, 0);
      return;
    case 'metrics_collect':
      void (server?.metricsJson() ?? Promise.resolve([])).then(
        (metrics) => pipe.send({ type: 'metrics_part', id: message.id, metrics: labelWorker(metrics) }),
        () => pipe.send({ type: 'metrics_part', id: message.id, metrics: [] }),
      );
      return;
    case 'metrics_answer':
      metricsPending.get(message.id)?.(message.text);
      return;
    case 'presence_orphans':
      adoptOrphans(message.from, message.orphans);
      return;
    case 'cluster_readiness':
      // This worker's own state is read live; the primary's word is for the others.
      clusterNotReady = message.notReady.filter((reason) => reason.worker !== workerId);
      return;
    default:
      // Engine messages before the engine exists: nothing subscribed yet.
      return;
  }
}

async function start(message: Extract<PrimaryMessage, { type: 'start' }>): Promise<void> {
  // Cloned over IPC: frozen again, as the CLI hands it to a single process.
  const config = deepFreeze(message.config);
  drainTimeoutMs = config.shutdown.drainTimeoutMs;
  workerId = message.worker;
  process.title = `herald worker ${message.worker}`;
  const pino = createLogger(config.log.level).child({ worker: message.worker });
  logger = pino;
  // The redis engine: this worker is a Redis node (startServer connects it); sessions still route through the primary.
  ownEngine = config.engine.type === 'redis';
  const linked = ownEngine
    ? { sessionRouter: createWorkerSessions({ pipe, worker: message.worker, config, onOther: onMessage }) }
    : { engine: createWorkerEngine({ pipe, worker: message.worker, config, revocations: message.revocations, apiKeys: message.apiKeys, onOther: onMessage }) };
  try {
    server = await startServer({
      config,
      logger: pino,
      ...linked,
      ...(ownEngine
        ? {
            adaptEngine: (engine: Engine) => {
              redisEngine = engine;
              for (const early of earlyOrphans.splice(0)) adoptOrphans(early.from, early.orphans);
              return mirrorPresence(engine, (change) => pipe.send({ type: 'presence_track', ...change }));
            },
          }
        : {}),
      clusterReadiness: () => clusterNotReady,
      clusterMetrics,
      worker: message.worker,
      onWatchdog: (over) => pipe.send({ type: 'watchdog', over }),
      onDeliveryProbe: (failure) => pipe.send({ type: 'delivery_probe', failure }),
    });
  } catch (error) {
    pino.error({ err: error }, error instanceof ConfigError ? 'worker cannot start: invalid configuration' : 'worker cannot start');
    await pipe.flushed();
    process.exit(EXIT_CANNOT_START);
  }
  // A connect storm no longer leaves an idle worker with a 64 MiB young generation (util/young-generation.ts).
  youngGenerationHold.enable();
  if (leaving) return;
  pipe.send({ type: 'ready', nodeId: server.node.id, port: server.port, adminPort: server.adminPort });
  setInterval(() => void reportCounters(), config.cluster.heartbeatIntervalMs).unref();
}

async function leave(timeoutMs: number, code: number): Promise<void> {
  if (leaving) return;
  leaving = true;
  // A hard bound, whatever happens below.
  setTimeout(() => process.exit(code), timeoutMs + 5000).unref();
  await starting?.catch(() => undefined);
  if (server !== undefined) await server.shutdown(timeoutMs).catch(() => false);
  // The final counters, the drain's disconnects included.
  await reportCounters();
  await pipe.flushed();
  process.exit(code);
}

pipe.onMessage(onMessage);
pipe.onClose(() => {
  if (leaving) return;
  logger?.error({}, 'cluster primary gone; closing this worker');
  void leave(Math.min(drainTimeoutMs, 2000), 1);
});
process.on('SIGINT', () => {});
process.on('SIGHUP', () => {});
process.on('SIGTERM', () => {
  logger?.info({ signal: 'SIGTERM' }, 'worker draining on its own signal');
  pipe.send({ type: 'leaving' });
  void leave(drainTimeoutMs, 0);
});
pipe.send({ type: 'hello' });
