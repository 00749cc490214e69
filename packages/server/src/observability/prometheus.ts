/**
 * prom-client's metric classes and its default process metrics, without its
 * index. The index also loads the Pushgateway client, the cluster
 * aggregator and, through the process CPU metric, `@opentelemetry/api`
 * (its exemplars' trace ids, which Herald does not turn on): 0.75 MiB of
 * an idle server's heap (docs/performance.md, "Footprint, sixth pass"). The package has no `exports` map; its modules are reachable by
 * path (CommonJS), and the version is pinned. The cluster primary, which
 * aggregates the workers' metrics, imports the index itself.
 */
import { createRequire } from 'node:module';
import type * as PromClient from 'prom-client';

const require = createRequire(import.meta.url);

export const Registry = require('prom-client/lib/registry.js') as typeof PromClient.Registry;
export type Registry = PromClient.Registry;
export const Counter = require('prom-client/lib/counter.js') as typeof PromClient.Counter;
export type Counter<T extends string = string> = PromClient.Counter<T>;
export const Gauge = require('prom-client/lib/gauge.js') as typeof PromClient.Gauge;
export type Gauge<T extends string = string> = PromClient.Gauge<T>;
export const Histogram = require('prom-client/lib/histogram.js') as typeof PromClient.Histogram;
export type Histogram<T extends string = string> = PromClient.Histogram<T>;

/** The default metrics of prom-client's `collectDefaultMetrics` (lib/defaultMetrics.js) in its order, after the process CPU counters (processCpuSeconds below). */
const DEFAULT_METRICS = [
  'processStartTime',
  'osMemoryHeap',
  'processOpenFileDescriptors',
  'processMaxFileDescriptors',
  'eventLoopLag',
  'processResources',
  'processHandles',
  'processRequests',
  'heapSizeAndUsed',
  'heapSpacesSizeAndUsed',
  'version',
  'gc',
] as const;

type DefaultMetric = (registry: Registry, config: { readonly prefix: string; readonly eventLoopMonitoringPrecision: number }) => void;

/**
 * What `collectDefaultMetrics({ register: registry, prefix })` registers,
 * with the same names, help and values: `<prefix>process_*` and
 * `<prefix>nodejs_*`.
 */
export function collectDefaultMetrics(registry: Registry, prefix: string): void {
  processCpuSeconds(registry, prefix);
  for (const name of DEFAULT_METRICS) {
    (require(`prom-client/lib/metrics/${name}.js`) as DefaultMetric)(registry, { prefix, eventLoopMonitoringPrecision: 10 });
  }
}

/** prom-client's process CPU counters (lib/metrics/processCpuTotal.js) without exemplars: the CPU used since the last scrape, added at each. */
function processCpuSeconds(registry: Registry, prefix: string): void {
  let last = process.cpuUsage();
  const user = new Counter({
    name: `${prefix}process_cpu_user_seconds_total`,
    help: 'Total user CPU time spent in seconds.',
    registers: [registry],
    // This one metric's collect sets all three.
    collect() {
      const now = process.cpuUsage();
      const userSeconds = (now.user - last.user) / 1e6;
      const systemSeconds = (now.system - last.system) / 1e6;
      last = now;
      user.inc(userSeconds);
      system.inc(systemSeconds);
      total.inc(userSeconds + systemSeconds);
    },
  });
  const system = new Counter({ name: `${prefix}process_cpu_system_seconds_total`, help: 'Total system CPU time spent in seconds.', registers: [registry] });
  const total = new Counter({ name: `${prefix}process_cpu_seconds_total`, help: 'Total user and system CPU time spent in seconds.', registers: [registry] });
}
