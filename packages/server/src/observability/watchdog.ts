/**
 * The watchdog: the process watching its own event loop and memory.
 *
 * Every `intervalMs` it takes one sample: the event-loop delay over the
 * interval (`perf_hooks.monitorEventLoopDelay`: the longest delay, and the
 * 99th percentile; the longest also counts how late the sampling timer
 * itself ran), heap used, the live heap (heap used right after the
 * last full collection, from the `gc` performance entries) and RSS.
 *
 * Memory is judged by the live heap as well as RSS: after a burst of
 * connection churn RSS stays high until V8 gives memory back, with little
 * live heap and no leak, so RSS alone would call a healthy process sick.
 * The live heap is what a leak grows.
 *
 * A threshold (0 = off) that a sample exceeds puts the watchdog "over" it:
 * one warning line with the numbers, `over()` names it (readiness answers
 * 503), and a diagnostic report (`process.report`, environment excluded) is
 * written into `dir`, at most one per `reportIntervalMs` and at most
 * `maxReports` files kept (the oldest are deleted). A heap snapshot is
 * written only when `heapSnapshots` is on (it blocks the loop and can
 * double memory): at most one per `reportIntervalMs`, `maxHeapSnapshots`
 * files, and never when the heap is larger than `heapSnapshotMaxMiB`.
 * A threshold is left once the samples have stayed under it for `settleMs`
 * (one info line).
 *
 * What to do about it is the caller's: a single process only reports; the
 * cluster supervisor replaces a worker whose memory stays over
 * (packages/server/src/cluster/supervisor.ts).
 */
import { monitorEventLoopDelay, performance, PerformanceObserver, constants as perfConstants } from 'node:perf_hooks';
import { getHeapStatistics, writeHeapSnapshot } from 'node:v8';
import { chmodSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../core/logger.ts';

export const MIB = 1024 * 1024;

export type WatchdogThreshold = 'event_loop_delay' | 'live_heap' | 'rss';

/** The memory thresholds: what the cluster supervisor recycles a worker for. */
export const MEMORY_THRESHOLDS: readonly WatchdogThreshold[] = ['live_heap', 'rss'];

export interface ProcessSample {
  /** Longest event-loop delay in the last interval, ms. */
  readonly eventLoopDelayMaxMs: number;
  /** 99th percentile of the event-loop delay in the last interval, ms. */
  readonly eventLoopDelayP99Ms: number;
  readonly heapUsedBytes: number;
  /** Heap used right after the last full collection (heap used until the first one). */
  readonly liveHeapBytes: number;
  readonly rssBytes: number;
  /** Epoch ms. */
  readonly at: number;
}

export interface WatchdogOptions {
  /** 0 turns a threshold off. */
  readonly eventLoopDelayMs: number;
  readonly liveHeapMiB: number;
  readonly rssMiB: number;
  readonly intervalMs: number;
  readonly settleMs: number;
  /** Where reports and heap snapshots go (created 0700 when first needed). */
  readonly dir: string;
  readonly maxReports: number;
  readonly reportIntervalMs: number;
  readonly heapSnapshots: boolean;
  readonly maxHeapSnapshots: number;
  readonly heapSnapshotMaxMiB: number;
  readonly logger: Logger;
  /** Called after every sample whose set of exceeded thresholds changed. */
  readonly onChange?: (over: readonly WatchdogThreshold[], sample: ProcessSample) => void;
  readonly now?: () => number;
}

export class Watchdog {
  readonly #options: WatchdogOptions;
  readonly #now: () => number;
  readonly #delay: ReturnType<typeof monitorEventLoopDelay>;
  readonly #gc: PerformanceObserver;
  readonly #timer: NodeJS.Timeout;
  /** Threshold → when the samples were last over it. */
  readonly #over = new Map<WatchdogThreshold, number>();
  #liveHeap: number | undefined;
  #lastTick = performance.now();
  #sample: ProcessSample;
  #lastReport = -Infinity;
  #lastSnapshot = -Infinity;
  #reports = 0;
  #snapshots = 0;
  #closed = false;

  constructor(options: WatchdogOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    // 20 ms: half the wake-ups of prom-client's 10 ms monitor; thresholds are far above it, and the tick's lateness catches long blocks.
    this.#delay = monitorEventLoopDelay({ resolution: 20 });
    this.#delay.enable();
    this.#gc = new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) {
        const kind = (entry as unknown as { detail?: { kind?: number } }).detail?.kind;
        if (kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) this.#liveHeap = getHeapStatistics().used_heap_size;
      }
    });
    this.#gc.observe({ entryTypes: ['gc'] });
    this.#sample = this.#measure();
    this.#lastTick = performance.now();
    this.#timer = setInterval(() => this.#tick(), options.intervalMs);
    this.#timer.unref();
  }

  /** The last sample. */
  get sample(): ProcessSample {
    return this.#sample;
  }

  /** The thresholds the process is over now. */
  over(): readonly WatchdogThreshold[] {
    return [...this.#over.keys()];
  }

  /** Reports and heap snapshots written by this process. */
  get written(): { readonly reports: number; readonly heapSnapshots: number } {
    return { reports: this.#reports, heapSnapshots: this.#snapshots };
  }

  /** The limits in force, in bytes and ms (0 = off), as they were resolved. */
  get limits(): { readonly eventLoopDelayMs: number; readonly liveHeapBytes: number; readonly rssBytes: number } {
    return { eventLoopDelayMs: this.#options.eventLoopDelayMs, liveHeapBytes: this.#options.liveHeapMiB * MIB, rssBytes: this.#options.rssMiB * MIB };
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#delay.disable();
    this.#gc.disconnect();
  }

  #measure(): ProcessSample {
    const memory = process.memoryUsage();
    // The histogram's own timer can miss a block right after a report was
    // written; this tick's lateness is a second witness of the same delay.
    const tick = performance.now();
    const late = Math.max(0, tick - this.#lastTick - this.#options.intervalMs);
    this.#lastTick = tick;
    const max = Math.max(late, this.#delay.count === 0 ? 0 : this.#delay.max / 1e6);
    const p99 = this.#delay.count === 0 ? 0 : this.#delay.percentile(99) / 1e6;
    this.#delay.reset();
    return {
      eventLoopDelayMaxMs: Math.round(max * 10) / 10,
      eventLoopDelayP99Ms: Math.round(p99 * 10) / 10,
      heapUsedBytes: memory.heapUsed,
      liveHeapBytes: this.#liveHeap ?? memory.heapUsed,
      rssBytes: memory.rss,
      at: this.#now(),
    };
  }

  #tick(): void {
    const sample = this.#measure();
    this.#sample = sample;
    const { eventLoopDelayMs, liveHeapMiB, rssMiB, settleMs } = this.#options;
    const exceeded: WatchdogThreshold[] = [];
    if (eventLoopDelayMs > 0 && sample.eventLoopDelayMaxMs > eventLoopDelayMs) exceeded.push('event_loop_delay');
    if (liveHeapMiB > 0 && sample.liveHeapBytes > liveHeapMiB * MIB) exceeded.push('live_heap');
    if (rssMiB > 0 && sample.rssBytes > rssMiB * MIB) exceeded.push('rss');
    let changed = false;
    const entered: WatchdogThreshold[] = [];
    for (const threshold of exceeded) {
      if (!this.#over.has(threshold)) entered.push(threshold);
      this.#over.set(threshold, sample.at);
    }
    const left: WatchdogThreshold[] = [];
    for (const [threshold, lastOver] of this.#over) {
      if (sample.at - lastOver >= settleMs) {
        this.#over.delete(threshold);
        left.push(threshold);
      }
    }
    const numbers = {
      eventLoopDelayMaxMs: sample.eventLoopDelayMaxMs,
      eventLoopDelayP99Ms: sample.eventLoopDelayP99Ms,
      liveHeapMiB: mib(sample.liveHeapBytes),
      heapUsedMiB: mib(sample.heapUsedBytes),
      rssMiB: mib(sample.rssBytes),
      limits: { eventLoopDelayMs, liveHeapMiB, rssMiB },
    };
    if (entered.length > 0) {
      changed = true;
      this.#options.logger.warn({ over: entered, ...numbers }, 'watchdog: over threshold; not ready');
    }
    if (left.length > 0) {
      changed = true;
      this.#options.logger.info({ recovered: left, over: this.over(), ...numbers }, 'watchdog: back under threshold');
    }
    if (exceeded.length > 0) {
      this.#diagnose(exceeded, sample);
      // Writing a report blocks the loop: that is not a delay to report next time.
      this.#delay.reset();
      this.#lastTick = performance.now();
    }
    if (changed) this.#options.onChange?.(this.over(), sample);
  }

  /** A report (and a heap snapshot when configured) within the rate and count bounds. */
  #diagnose(exceeded: readonly WatchdogThreshold[], sample: ProcessSample): void {
    const options = this.#options;
    const now = sample.at;
    if (now - this.#lastReport < options.reportIntervalMs) return;
    this.#lastReport = now;
    const stamp = new Date(now).toISOString().replace(/[:.]/g, '-');
    try {
      mkdirSync(options.dir, { recursive: true, mode: 0o700 });
      const file = join(options.dir, `report-${stamp}-${process.pid}-${exceeded.join('+')}.json`);
      // Environment variables carry secrets (HERALD_AUTH_HMAC_SECRET, …): never in a report.
      process.report.excludeEnv = true;
      // Without it the report resolves every socket's peer by reverse DNS, synchronously, on the
      // event loop that is already late (8000 loopback sockets: 130-300 ms against 40-75 ms;
      // real clients' addresses can wait on a resolver), and names clients' hosts in the file.
      // (Node has it since 22.0; @types/node does not declare it yet.)
      (process.report as NodeJS.ProcessReport & { excludeNetwork: boolean }).excludeNetwork = true;
      process.report.writeReport(file);
      chmodSync(file, 0o600);
      this.#reports++;
      prune(options.dir, 'report-', options.maxReports);
      options.logger.warn({ file, over: exceeded }, 'watchdog: diagnostic report written');
    } catch (error) {
      options.logger.error({ err: error, dir: options.dir }, 'watchdog: diagnostic report not written');
    }
    if (!options.heapSnapshots || now - this.#lastSnapshot < options.reportIntervalMs) return;
    if (sample.heapUsedBytes > options.heapSnapshotMaxMiB * MIB) {
      options.logger.warn({ heapUsedMiB: mib(sample.heapUsedBytes), heapSnapshotMaxMiB: options.heapSnapshotMaxMiB }, 'watchdog: heap too large for a heap snapshot; none written');
      return;
    }
    this.#lastSnapshot = now;
    try {
      const file = writeHeapSnapshot(join(options.dir, `heap-${stamp}-${process.pid}.heapsnapshot`));
      chmodSync(file, 0o600);
      this.#snapshots++;
      prune(options.dir, 'heap-', options.maxHeapSnapshots);
      options.logger.warn({ file }, 'watchdog: heap snapshot written');
    } catch (error) {
      options.logger.error({ err: error, dir: options.dir }, 'watchdog: heap snapshot not written');
    }
  }
}

/** The live-heap limit when the config leaves it at 0: 85 % of V8's heap limit. */
export function defaultLiveHeapMiB(): number {
  return Math.floor((getHeapStatistics().heap_size_limit * 0.85) / MIB);
}

function mib(bytes: number): number {
  return Math.round((bytes / MIB) * 10) / 10;
}

/** Keeps the `keep` newest files starting with `prefix` in `dir`. */
function prune(dir: string, prefix: string, keep: number): void {
  const files = readdirSync(dir)
    .filter((name) => name.startsWith(prefix))
    .map((name) => ({ name, at: statSync(join(dir, name)).mtimeMs }))
    .sort((a, b) => b.at - a.at || (a.name < b.name ? 1 : -1));
  for (const file of files.slice(keep)) rmSync(join(dir, file.name), { force: true });
}
