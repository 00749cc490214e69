/**
 * The cluster's counters across worker lifetimes, kept by the primary for
 * `/metrics` (supervisor.ts aggregates the scrape with prom-client's
 * AggregatorRegistry).
 *
 * Guarantees:
 * - A worker's counters and histograms (prom-client JSON; gauges are left
 *   out) are recorded whenever they reach the primary: each scrape's answer,
 *   the worker's report every `cluster.heartbeatIntervalMs`, and its last
 *   report after its drain. A later record replaces an earlier one (a
 *   worker's counters only grow).
 * - When a worker exits, its last record joins the retired contribution,
 *   which every later scrape adds to the live workers' sum: cluster counters
 *   never go backwards when a worker is recycled, reloaded or dies. Gauges of
 *   a dead worker drop out with it. A report that arrives after the exit
 *   (the IPC channel may deliver it after the exit event) still replaces the
 *   retired record.
 * - A worker that exits without a last report (SIGKILL, crash) keeps what
 *   its last record said: what it counted after that is lost (at most one
 *   report interval), never what a scrape has already shown.
 * - A live worker that does not answer a scrape in time is counted by its
 *   last record instead of being left out.
 * - Memory is bounded: retired records older than `FOLD_AFTER_MS` are
 *   summed into one, beyond `MAX_RETIRED` of them.
 */
import { AggregatorRegistry } from 'prom-client';

/** prom-client's JSON form of one metric (`Registry.getMetricsAsJSON`). */
type MetricJson = object;

/** Retired records kept one by one at most (a late report may still replace them). */
const MAX_RETIRED = 8;
/** Retired records older than this may be folded into the sum. */
const FOLD_AFTER_MS = 10_000;

/** The counters and histograms of a prom-client JSON list: what only grows over a process's life. */
export function monotonicMetrics(metrics: readonly MetricJson[]): MetricJson[] {
  return metrics.filter((metric) => {
    const type = (metric as { type?: unknown }).type;
    return type === 'counter' || type === 'histogram';
  });
}

export class CounterLedger {
  /** Live workers' last records. */
  readonly #live = new Map<number, readonly MetricJson[]>();
  /** Workers gone, their last record and when they went. */
  readonly #retired = new Map<number, { metrics: readonly MetricJson[]; readonly at: number }>();
  /** Retired records summed into one (folded). */
  #folded: readonly MetricJson[] = [];
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** A worker started: its records are kept from now on. */
  attach(worker: number): void {
    this.#live.set(worker, []);
  }

  /** A worker's counters as of now (its whole metrics list may be given: gauges are left out). */
  record(worker: number, metrics: readonly MetricJson[]): void {
    const counters = monotonicMetrics(metrics);
    if (this.#live.has(worker)) this.#live.set(worker, counters);
    else {
      const retired = this.#retired.get(worker);
      if (retired !== undefined) retired.metrics = counters;
    }
  }

  /** A worker exited: its last record joins the retired contribution. Idempotent. */
  retire(worker: number): void {
    const last = this.#live.get(worker);
    if (last === undefined) return;
    this.#live.delete(worker);
    this.#retired.set(worker, { metrics: last, at: this.#now() });
  }

  /** The last record of a live worker (for one that did not answer a scrape). */
  last(worker: number): readonly MetricJson[] {
    return this.#live.get(worker) ?? [];
  }

  /** The retired contribution, as parts to aggregate with the live workers' metrics. */
  retired(): (readonly MetricJson[])[] {
    if (this.#retired.size > MAX_RETIRED) {
      const cutoff = this.#now() - FOLD_AFTER_MS;
      const old = [...this.#retired].filter(([, entry]) => entry.at <= cutoff);
      if (old.length > 0) {
        const parts = [this.#folded, ...old.map(([, entry]) => entry.metrics)];
        // The aggregate's metrics hold their values already (`get` answers them synchronously).
        const sum = AggregatorRegistry.aggregate(parts as MetricJson[][]).getMetricsAsArray() as unknown as { get(): MetricJson }[];
        this.#folded = monotonicMetrics(sum.map((metric) => metric.get()));
        for (const [worker] of old) this.#retired.delete(worker);
      }
    }
    return [this.#folded, ...[...this.#retired.values()].map((entry) => entry.metrics)];
  }
}
