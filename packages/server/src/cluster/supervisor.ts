/**
 * Supervision of the cluster's workers, in the primary. Each of the N slots
 * holds one worker process (node:cluster), linked to the PrimaryHub.
 *
 * - Heartbeats: every `cluster.heartbeatIntervalMs` the primary pings each
 *   worker over IPC; a worker whose event loop has not answered for
 *   `cluster.heartbeatTimeoutMs` is killed (SIGKILL) and replaced. A worker
 *   gets `STARTUP_TIMEOUT_MS` to become ready.
 * - Crashes: an exit the primary did not ask for is a crash. The slot is
 *   restarted after `cluster.restartDelayMs`, doubled for each crash of that
 *   slot within `cluster.crashLoopWindowMs` (at most 30 s). More than
 *   `cluster.crashLoopRestarts` crashes in the window is a crash loop: one
 *   error line, and the slot stays empty. With every slot empty the primary
 *   gives up (exit code 1). A worker that cannot start at all (invalid
 *   configuration, listener refused) before any worker was ever ready stops
 *   the cluster at once instead of looping.
 * - A worker that drains on its own (SIGTERM sent to it) says so and is
 *   replaced at once; that is not a crash.
 * - Rolling reload: slot by slot, a new worker is started and must become
 *   ready before the old one drains (its clients reconnect to the other
 *   workers and recover: the streams live in the primary). A new worker
 *   that fails aborts the reload and the old ones keep running.
 * - Memory: a worker whose watchdog says it is over a memory threshold
 *   (live heap or RSS, observability/watchdog.ts) for
 *   `watchdog.recycleAfterMs` is recycled like one slot of a rolling
 *   reload: a new worker first, then the old one drains (3001; its clients
 *   reconnect to the others and recover). Not during a reload or shutdown.
 * - Readiness: the workers that are not ready (no ready worker in a slot,
 *   a worker whose delivery probe fails, a worker over a watchdog
 *   threshold, or, on the redis engine, a worker whose own Redis
 *   connections are degraded) are told to every worker, so
 *   that `/health/ready` on any of them reflects the whole cluster.
 * - Shutdown: every worker drains (clients closed with 3001) within
 *   `shutdown.drainTimeoutMs`, bounded by a SIGKILL after that.
 * - Connections: the workers share the listening sockets and accept from
 *   them (SCHED_NONE); the primary never holds a client connection, so a
 *   worker's death closes exactly the connections it had accepted.
 */
import cluster, { type Worker as ClusterWorker } from 'node:cluster';
import type { Config } from '../config/schema.ts';
import type { Logger } from '../core/logger.ts';
import { EXIT_CANNOT_START, type PrimaryMessage, type WorkerMessage } from './ipc-messages.ts';
import type { NotReadyReason } from '../app/health.ts';
import { BatchingPipe, clusterWorkerCarrier } from './pipe.ts';
import type { PrimaryHub } from './primary-hub.ts';
import { HeldPresence, type PresenceOrphans } from './presence-mirror.ts';
import { CounterLedger } from './counter-ledger.ts';

/** Longest time a new worker may take to become ready. */
export const STARTUP_TIMEOUT_MS = 60000;
/** Longest restart delay, however many recent crashes. */
export const MAX_RESTART_DELAY_MS = 30000;
/** Time a worker gets beyond the drain timeout before it is killed. */
const EXIT_GRACE_MS = 5000;

export interface RestartPolicy {
  readonly restartDelayMs: number;
  readonly crashLoopRestarts: number;
  readonly crashLoopWindowMs: number;
}

export type RestartDecision = { readonly restart: true; readonly delayMs: number; readonly recent: number } | { readonly restart: false; readonly recent: number };

/** Crashes of one slot: when to restart it, or that it is in a crash loop. */
export class CrashHistory {
  readonly #policy: RestartPolicy;
  #crashes: number[] = [];

  constructor(policy: RestartPolicy) {
    this.#policy = policy;
  }

  crashed(now: number): RestartDecision {
    const since = now - this.#policy.crashLoopWindowMs;
    this.#crashes = this.#crashes.filter((at) => at > since);
    this.#crashes.push(now);
    const recent = this.#crashes.length;
    if (recent > this.#policy.crashLoopRestarts) return { restart: false, recent };
    const delayMs = Math.min(MAX_RESTART_DELAY_MS, this.#policy.restartDelayMs * 2 ** (recent - 1));
    return { restart: true, delayMs, recent };
  }
}

interface Running {
  readonly handle: ClusterWorker;
  readonly id: number;
  readonly slot: Slot;
  readonly pipe: BatchingPipe<WorkerMessage, PrimaryMessage>;
  readonly forkedAt: number;
  lastPong: number;
  ready: boolean;
  /** The primary asked it to go (reload, shutdown) or it said it leaves: its exit is no crash. */
  planned: boolean;
  /** Started by a reload and not yet in its slot. */
  candidate: boolean;
  /** Watchdog thresholds the worker said it is over. */
  over: readonly string[];
  /** Redis engine: why the worker's own engine is degraded, as it last said. */
  engineDegraded: string | undefined;
  /** Redis engine: the presence entries and joins it holds, handed to another worker if it dies. */
  readonly held: HeldPresence;
  /** Why its delivery probe fails, as it said; undefined while it passes. */
  probeFailure: string | undefined;
  /** Since when it has been over a memory threshold (epoch ms). */
  memoryOverSince: number | undefined;
  readonly exited: Promise<void>;
  readonly readyOrExit: Promise<boolean>;
}

interface Slot {
  readonly index: number;
  worker: Running | undefined;
  crashes: CrashHistory;
  restartTimer: NodeJS.Timeout | undefined;
  givenUp: boolean;
}

export interface SupervisorOptions {
  readonly config: Config;
  readonly workers: number;
  readonly hub: PrimaryHub;
  readonly logger: Logger;
  /** Worker entry module (packages/server/src/cluster/worker-main.ts). */
  readonly exec: string;
  /** Called once when the supervisor gives up (every slot in a crash loop, or workers cannot start). */
  readonly onFatal: (reason: string) => void;
  /** Called once every slot has had a ready worker, with the shared ports. */
  readonly onReady?: (ports: { port: number; adminPort: number }) => void;
  /** The primary's own metrics (prom-client JSON: the webhook outbox it owns), added to every cluster scrape. */
  readonly primaryMetrics?: () => Promise<readonly object[]>;
}

export class Supervisor {
  readonly #options: SupervisorOptions;
  readonly #logger: Logger;
  readonly #slots: Slot[] = [];
  readonly #running = new Map<number, Running>();
  #config: Config;
  #heartbeat: NodeJS.Timeout | undefined;
  #seq = 0;
  #everReady = false;
  #announced = false;
  #stopping = false;
  #reloading = false;
  #fatal = false;
  #notReady = '[]';
  #notReadyList: readonly NotReadyReason[] = [];
  #metricsSeq = 0;
  readonly #primaryMetrics: (() => Promise<readonly object[]>) | undefined;
  /** Presence of dead workers waiting for a ready worker (redis engine). */
  readonly #orphans: { from: number; orphans: PresenceOrphans }[] = [];
  readonly #metricsParts = new Map<number, (worker: number, metrics: readonly object[]) => void>();
  /** Every worker's last counters, the exited ones' included (/metrics never goes backwards). */
  readonly #counters = new CounterLedger();

  constructor(options: SupervisorOptions) {
    this.#primaryMetrics = options.primaryMetrics;
    this.#options = options;
    this.#logger = options.logger;
    this.#config = options.config;
    const policy = options.config.cluster;
    for (let index = 0; index < options.workers; index++) {
      this.#slots.push({ index, worker: undefined, crashes: new CrashHistory(policy), restartTimer: undefined, givenUp: false });
    }
  }

  start(): void {
    // The workers accept from the one listening socket themselves. With
    // node:cluster's default round-robin the primary accepts and hands each
    // connection over IPC, keeping it open until the worker acknowledges:
    // a worker killed in between leaves that connection open in the primary
    // forever, unanswered. Here a connection is only ever held by the worker
    // that accepted it (and closes with it); one the dead worker had not
    // accepted yet waits in the kernel's queue for another worker.
    cluster.schedulingPolicy = cluster.SCHED_NONE;
    cluster.setupPrimary({ exec: this.#options.exec, args: [], serialization: 'advanced' });
    for (const slot of this.#slots) slot.worker = this.#spawn(slot, false);
    this.#heartbeat = setInterval(() => this.#beat(), this.#config.cluster.heartbeatIntervalMs);
  }

  /** Live worker processes (for tests and logs). */
  get pids(): number[] {
    return [...this.#running.values()].map((r) => r.handle.process.pid ?? 0);
  }

  #spawn(slot: Slot, candidate: boolean): Running {
    const handle = cluster.fork({ HERALD_WORKER_SLOT: String(slot.index) });
    const pipe = new BatchingPipe<WorkerMessage, PrimaryMessage>(clusterWorkerCarrier(handle));
    let resolveReady!: (ready: boolean) => void;
    const readyOrExit = new Promise<boolean>((resolve) => (resolveReady = resolve));
    const exited = new Promise<void>((resolve) => {
      handle.once('exit', (code: number | null, signal: string | null) => {
        resolveReady(false);
        this.#onExit(running, code, signal);
        resolve();
      });
    });
    // EPIPE and the like while a worker dies: its exit is what counts.
    handle.on('error', () => {});
    const now = Date.now();
    const running: Running = {
      handle,
      id: handle.id,
      slot,
      pipe,
      forkedAt: now,
      lastPong: now,
      ready: false,
      planned: false,
      candidate,
      over: [],
      engineDegraded: undefined,
      held: new HeldPresence(),
      probeFailure: undefined,
      memoryOverSince: undefined,
      exited,
      readyOrExit,
    };
    this.#running.set(handle.id, running);
    this.#counters.attach(handle.id);
    this.#options.hub.attach(handle.id, pipe, (message) => {
      switch (message.type) {
        case 'hello':
          pipe.send({ type: 'start', worker: handle.id, config: this.#config, revocations: this.#options.hub.revocations(), apiKeys: this.#options.hub.apiKeys() });
          this.#options.hub.sendEngineHealth(handle.id);
          return;
        case 'pong':
          running.lastPong = Date.now();
          return;
        case 'ready':
          running.ready = true;
          running.lastPong = Date.now();
          this.#everReady = true;
          this.#logger.info({ worker: handle.id, slot: slot.index, pid: handle.process.pid, node: message.nodeId }, 'worker ready');
          resolveReady(true);
          for (const left of this.#orphans.splice(0)) pipe.send({ type: 'presence_orphans', ...left });
          // What it missed while starting (a reload's new worker may leave the list unchanged).
          pipe.send({ type: 'cluster_readiness', notReady: this.#notReadyList });
          this.#tellReadiness();
          this.#announce(message.port, message.adminPort);
          return;
        case 'metrics_request':
          void this.#gatherMetrics(running, message.id);
          return;
        case 'metrics_part':
          this.#metricsParts.get(message.id)?.(handle.id, message.metrics);
          return;
        case 'counters':
          // Also after its exit: the report sent after its drain may come last.
          this.#counters.record(handle.id, message.metrics);
          return;
        case 'watchdog': {
          running.over = message.over;
          const memory = message.over.some((threshold) => threshold === 'live_heap' || threshold === 'rss');
          if (!memory) running.memoryOverSince = undefined;
          else running.memoryOverSince ??= Date.now();
          this.#tellReadiness();
          return;
        }
        case 'presence_track':
          running.held.apply(message);
          return;
        case 'engine_state':
          running.engineDegraded = message.degraded ?? undefined;
          this.#tellReadiness();
          return;
        case 'delivery_probe':
          running.probeFailure = message.failure;
          this.#tellReadiness();
          return;
        case 'leaving':
          running.planned = true;
          this.#logger.info({ worker: handle.id, slot: slot.index }, 'worker draining on its own; replacing it');
          if (slot.worker === running && !this.#stopping) slot.worker = this.#spawn(slot, false);
          return;
        default:
          return;
      }
    });
    this.#logger.info({ worker: handle.id, slot: slot.index, pid: handle.process.pid }, 'worker started');
    return running;
  }

  #announce(port: number, adminPort: number): void {
    if (this.#announced || this.#slots.some((slot) => slot.worker?.ready !== true)) return;
    this.#announced = true;
    this.#logger.info({ host: this.#config.listen.host, port, adminPort, workers: this.#slots.length }, 'cluster ready');
    this.#options.onReady?.({ port, adminPort });
  }

  #beat(): void {
    const now = Date.now();
    const { heartbeatTimeoutMs } = this.#config.cluster;
    const seq = ++this.#seq;
    for (const running of this.#running.values()) {
      if (running.planned) continue;
      const silentFor = now - running.lastPong;
      const tooSlowToStart = !running.ready && now - running.forkedAt > Math.max(STARTUP_TIMEOUT_MS, heartbeatTimeoutMs);
      // Before it is ready, a worker's event loop may be busy loading code: only the startup bound applies.
      if ((running.ready && silentFor > heartbeatTimeoutMs) || tooSlowToStart) {
        this.#logger.error(
          { worker: running.id, slot: running.slot.index, pid: running.handle.process.pid, silentMs: silentFor, ready: running.ready },
          running.ready ? 'worker unresponsive (no heartbeat answer); killing it' : 'worker did not become ready; killing it',
        );
        running.handle.process.kill('SIGKILL');
        continue;
      }
      running.pipe.send({ type: 'ping', seq });
      const { recycleAfterMs } = this.#config.watchdog;
      if (recycleAfterMs > 0 && running.memoryOverSince !== undefined && now - running.memoryOverSince >= recycleAfterMs && running.slot.worker === running) {
        void this.#recycle(running, now - running.memoryOverSince);
      }
    }
    this.#tellReadiness();
  }

  /**
   * One scrape of the cluster: every ready worker's metrics, aggregated
   * with prom-client's AggregatorRegistry (counters and most gauges summed;
   * process metrics as prom-client defines), plus the counters of the
   * workers that exited (counter-ledger.ts). A worker that does not answer
   * within 2 s counts with its last recorded counters (its gauges are left
   * out of this scrape).
   */
  async #gatherMetrics(requester: Running, id: number): Promise<void> {
    const targets = [...this.#running.values()].filter((r) => r.ready && !r.candidate);
    const key = ++this.#metricsSeq;
    const answers = new Map<number, readonly object[]>();
    await new Promise<void>((resolve) => {
      let left = targets.length;
      const timer = setTimeout(resolve, 2000);
      this.#metricsParts.set(key, (worker, metrics) => {
        if (answers.has(worker)) return;
        answers.set(worker, metrics);
        this.#counters.record(worker, metrics);
        if (--left === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
      for (const target of targets) target.pipe.send({ type: 'metrics_collect', id: key });
      if (left === 0) {
        clearTimeout(timer);
        resolve();
      }
    });
    this.#metricsParts.delete(key);
    const parts: (readonly object[])[] = [...answers.values()];
    for (const target of targets) if (!answers.has(target.id)) parts.push(this.#counters.last(target.id));
    parts.push(...this.#counters.retired());
    if (this.#primaryMetrics !== undefined) parts.push(await this.#primaryMetrics().catch(() => []));
    let text = '';
    try {
      const { AggregatorRegistry } = await import('prom-client');
      text = await AggregatorRegistry.aggregate(parts as object[]).metrics();
    } catch (error) {
      this.#logger.error({ err: error }, 'cluster metrics not aggregated');
    }
    requester.pipe.send({ type: 'metrics_answer', id, text });
  }

  /** Tells every worker which workers are not ready, when that changed. */
  #tellReadiness(): void {
    const notReady: NotReadyReason[] = [];
    for (const slot of this.#slots) {
      const worker = slot.worker;
      if (worker === undefined || !worker.ready) notReady.push({ reason: 'worker_not_running', detail: `slot ${slot.index}`, ...(worker === undefined ? {} : { worker: worker.id }) });
      else {
        if (worker.probeFailure !== undefined) notReady.push({ reason: 'delivery_probe', detail: worker.probeFailure, worker: worker.id });
        for (const threshold of worker.over) notReady.push({ reason: threshold, worker: worker.id });
        if (worker.engineDegraded !== undefined) notReady.push({ reason: 'engine_degraded', detail: worker.engineDegraded, worker: worker.id });
      }
    }
    const text = JSON.stringify(notReady);
    if (text === this.#notReady) return;
    this.#notReady = text;
    this.#notReadyList = notReady;
    for (const running of this.#running.values()) running.pipe.send({ type: 'cluster_readiness', notReady });
  }

  /** Replaces a worker that stayed over its memory limit: the new one first, then the old one drains. */
  async #recycle(old: Running, overForMs: number): Promise<void> {
    if (this.#stopping || this.#reloading) return;
    this.#reloading = true;
    try {
      const slot = old.slot;
      this.#logger.warn(
        { worker: old.id, slot: slot.index, pid: old.handle.process.pid, over: old.over, overForMs, recycleAfterMs: this.#config.watchdog.recycleAfterMs },
        'worker over its memory limit; replacing it (graceful drain)',
      );
      const next = this.#spawn(slot, true);
      if (!(await next.readyOrExit) || this.#stopping) {
        this.#logger.error({ slot: slot.index }, 'memory recycling aborted: the new worker did not become ready; the old one keeps running');
        if (!this.#stopping) await this.#stop(next);
        // Try again after another recycleAfterMs.
        old.memoryOverSince = old.memoryOverSince === undefined ? undefined : Date.now();
        return;
      }
      if (slot.worker !== old) {
        // The old one is gone already (crashed and restarted meanwhile): the new one is not needed.
        await this.#stop(next);
        return;
      }
      next.candidate = false;
      slot.worker = next;
      if (slot.restartTimer !== undefined) {
        clearTimeout(slot.restartTimer);
        slot.restartTimer = undefined;
      }
      await this.#stop(old);
      this.#logger.info({ worker: old.id, slot: slot.index, replacement: next.id }, 'worker recycled');
    } finally {
      this.#reloading = false;
    }
  }

  #onExit(running: Running, code: number | null, signal: string | null): void {
    this.#running.delete(running.id);
    this.#counters.retire(running.id);
    this.#options.hub.detach(running.id);
    // A worker that exits 0 drained: it removed its own entries (their last reports may trail its exit).
    const orphans = code === 0 && signal === null ? undefined : running.held.orphans();
    if (orphans !== undefined) this.#handOrphans(running.id, orphans);
    const slot = running.slot;
    if (running.candidate) {
      if (!running.planned) this.#logger.error({ worker: running.id, slot: slot.index, code, signal }, 'new worker exited during reload');
      return;
    }
    if (slot.worker !== running) return;
    slot.worker = undefined;
    if (this.#stopping) return;
    if (running.planned) return;
    if (code === 0) {
      // It drained on its own and its `leaving` did not arrive: replace it, no crash.
      this.#logger.info({ worker: running.id, slot: slot.index }, 'worker exited after draining; replacing it');
      slot.worker = this.#spawn(slot, false);
      return;
    }
    if (code === EXIT_CANNOT_START && !this.#everReady) {
      this.#logger.error({ worker: running.id, slot: slot.index, code }, 'worker cannot start; stopping the cluster (see the worker log line above)');
      this.#giveUp('workers cannot start');
      return;
    }
    const decision = slot.crashes.crashed(Date.now());
    if (!decision.restart) {
      slot.givenUp = true;
      this.#logger.error(
        { worker: running.id, slot: slot.index, code, signal, crashes: decision.recent, windowMs: this.#config.cluster.crashLoopWindowMs },
        'worker crash loop: not restarting this slot',
      );
      if (this.#slots.every((s) => s.givenUp)) this.#giveUp('every worker slot is in a crash loop');
      return;
    }
    this.#logger.warn(
      { worker: running.id, slot: slot.index, pid: running.handle.process.pid, code, signal, restartInMs: decision.delayMs, recentCrashes: decision.recent },
      'worker exited unexpectedly; restarting',
    );
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (!this.#stopping && slot.worker === undefined) slot.worker = this.#spawn(slot, false);
    }, decision.delayMs);
  }

  /**
   * A worker died holding Redis presence (redis engine): a ready worker
   * removes the entries and announces the leaves; with none ready, the next
   * one that becomes ready does.
   */
  #handOrphans(from: number, orphans: PresenceOrphans): void {
    const target = [...this.#running.values()].find((r) => r.ready && !r.planned);
    this.#logger.info({ worker: from, entries: orphans.presence.length, joins: orphans.joins.length, to: target?.id }, 'worker left presence behind; handing it to another worker');
    if (target === undefined) this.#orphans.push({ from, orphans });
    else target.pipe.send({ type: 'presence_orphans', from, orphans });
  }

  #giveUp(reason: string): void {
    if (this.#fatal) return;
    this.#fatal = true;
    this.#options.onFatal(reason);
  }

  /**
   * Replaces every worker, one at a time: the new one must be ready before
   * the old one drains. `config` (re-read by the caller) applies to the new
   * workers. Resolves false when the reload was refused or aborted.
   */
  async reload(config?: Config): Promise<boolean> {
    if (this.#stopping) return false;
    if (this.#reloading) {
      this.#logger.warn({}, 'reload already in progress; ignored');
      return false;
    }
    this.#reloading = true;
    try {
      // The worker count stays that of the running cluster.
      if (config !== undefined) this.#config = config;
      this.#logger.info({ workers: this.#slots.length }, 'rolling reload started');
      for (const slot of this.#slots) {
        if (this.#stopping) return false;
        // A slot given up after a crash loop gets its chance again: a reload is how a fix is rolled out.
        const next = this.#spawn(slot, true);
        if (!(await next.readyOrExit) || this.#stopping) {
          this.#logger.error({ slot: slot.index }, 'rolling reload aborted: the new worker did not become ready; the old workers keep running');
          if (!this.#stopping) await this.#stop(next);
          return false;
        }
        const old = slot.worker;
        next.candidate = false;
        slot.worker = next;
        if (slot.givenUp) {
          slot.givenUp = false;
          slot.crashes = new CrashHistory(this.#config.cluster);
        }
        if (slot.restartTimer !== undefined) {
          clearTimeout(slot.restartTimer);
          slot.restartTimer = undefined;
        }
        if (old !== undefined) await this.#stop(old);
      }
      this.#logger.info({ workers: this.#slots.length }, 'rolling reload complete');
      return true;
    } finally {
      this.#reloading = false;
    }
  }

  /** Asks one worker to drain and exit; kills it when it overstays. */
  async #stop(running: Running): Promise<void> {
    running.planned = true;
    const drainTimeoutMs = this.#config.shutdown.drainTimeoutMs;
    running.pipe.send({ type: 'shutdown', drainTimeoutMs });
    const timer = setTimeout(() => {
      this.#logger.warn({ worker: running.id }, 'worker did not exit after its drain; killing it');
      running.handle.process.kill('SIGKILL');
    }, drainTimeoutMs + EXIT_GRACE_MS);
    await running.exited;
    clearTimeout(timer);
  }

  /** Drains every worker; resolves once they have all exited. */
  async shutdown(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#heartbeat);
    for (const slot of this.#slots) clearTimeout(slot.restartTimer);
    await Promise.all([...this.#running.values()].map((running) => this.#stop(running)));
  }
}
