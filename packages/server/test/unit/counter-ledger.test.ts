/**
 * The primary's ledger of worker counters (cluster/counter-ledger.ts), with
 * real prom-client registries as the workers' metrics: exited workers'
 * counters and histograms stay in the aggregate, gauges drop out, a late
 * report replaces the retired record, and folding old retired records into
 * one keeps the totals.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AggregatorRegistry, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { CounterLedger, monotonicMetrics } from '../../src/cluster/counter-ledger.ts';

/** One worker's metrics: `n` publishes, `n` observations, a gauge at `n`. */
async function workerMetrics(n: number): Promise<object[]> {
  const registry = new Registry();
  const publications = new Counter({ name: 'pubs_total', help: 'p', labelNames: ['source'], registers: [registry] });
  const latency = new Histogram({ name: 'latency_seconds', help: 'l', buckets: [1], registers: [registry] });
  const connections = new Gauge({ name: 'conns', help: 'c', registers: [registry] });
  publications.inc({ source: 'api' }, n);
  for (let i = 0; i < n; i++) latency.observe(0.5);
  connections.set(n);
  return registry.getMetricsAsJSON();
}

async function scrape(ledger: CounterLedger, live: object[][]): Promise<string> {
  return AggregatorRegistry.aggregate([...live, ...ledger.retired()] as object[][]).metrics();
}

const line = (text: string, series: string): string | undefined => text.split('\n').find((l) => l.startsWith(`${series} `));

test('only counters and histograms are kept', async () => {
  const kept = monotonicMetrics(await workerMetrics(1)).map((m) => (m as { name: string }).name);
  assert.deepEqual(kept.sort(), ['latency_seconds', 'pubs_total']);
});

test("an exited worker's counters and histograms stay in the sum, its gauges go; a late report replaces its record", async () => {
  const ledger = new CounterLedger();
  ledger.attach(1);
  ledger.attach(2);
  ledger.record(1, await workerMetrics(7));
  ledger.retire(1);
  let text = await scrape(ledger, [await workerMetrics(5)]);
  assert.equal(line(text, 'pubs_total{source="api"}'), 'pubs_total{source="api"} 12');
  assert.equal(line(text, 'latency_seconds_count'), 'latency_seconds_count 12');
  assert.equal(line(text, 'conns'), 'conns 5');
  // The report sent after its drain arrives after the exit.
  ledger.record(1, await workerMetrics(9));
  text = await scrape(ledger, [await workerMetrics(5)]);
  assert.equal(line(text, 'pubs_total{source="api"}'), 'pubs_total{source="api"} 14');
  // A worker that misses a scrape counts with its last record.
  ledger.record(2, await workerMetrics(5));
  text = await scrape(ledger, [ledger.last(2) as object[]]);
  assert.equal(line(text, 'pubs_total{source="api"}'), 'pubs_total{source="api"} 14');
  assert.equal(line(text, 'conns'), undefined);
  // Records of workers never attached (or long folded) are ignored.
  ledger.record(99, await workerMetrics(100));
  assert.equal(line(await scrape(ledger, []), 'pubs_total{source="api"}'), 'pubs_total{source="api"} 9');
});

test('old retired records are folded into one without changing the totals', async () => {
  let now = 0;
  const ledger = new CounterLedger(() => now);
  for (let worker = 1; worker <= 20; worker++) {
    ledger.attach(worker);
    ledger.record(worker, await workerMetrics(worker));
    ledger.retire(worker);
    now += 1000;
  }
  const before = await scrape(ledger, []);
  assert.equal(line(before, 'pubs_total{source="api"}'), 'pubs_total{source="api"} 210');
  now += 5000;
  const parts = ledger.retired();
  assert.ok(parts.length < 20, `folded: ${parts.length} parts`);
  const after = await scrape(ledger, []);
  assert.equal(line(after, 'pubs_total{source="api"}'), 'pubs_total{source="api"} 210');
  assert.equal(line(after, 'latency_seconds_count'), 'latency_seconds_count 210');
  assert.equal(line(after, 'latency_seconds_bucket{le="1"}'), 'latency_seconds_bucket{le="1"} 210');
});
