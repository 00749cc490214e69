/**
 * What publish idempotency keys cost the engine (issue 14, "Publish
 * idempotency"): publishes straight into the memory and sqlite brokers, in
 * this process, with and without an `idempotency_key` (a new key each time,
 * the case where nothing repeats and every key must be remembered), and the
 * cost of a retry that is answered from a remembered key. Rounds alternate
 * the variants; CPU time (process.cpuUsage) per publish, median over rounds.
 * No HTTP and no subscribers: the HTTP publish path is bench/publish.ts
 * (`--targets=herald,herald-idempotent`).
 *
 *   node bench/idempotency.ts [--publishes=40000] [--channels=10000] [--in-flight=32] [--rounds=5] [--cpu=0]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Broker, PublishOptions } from '../packages/server/src/broker/broker.ts';
import { MemoryBroker } from '../packages/server/src/broker/memory-broker.ts';
import { SqliteBroker } from '../packages/server/src/broker/sqlite-broker.ts';
import { openSqliteStore } from '../packages/server/src/store/sqlite-store.ts';

const { values } = parseArgs({
  options: {
    publishes: { type: 'string', default: '40000' },
    channels: { type: 'string', default: '10000' },
    'in-flight': { type: 'string', default: '32' },
    rounds: { type: 'string', default: '5' },
    cpu: { type: 'string' },
  },
});
const publishes = Number(values.publishes);
const channels = Number(values.channels);
const inFlight = Number(values['in-flight']);
const rounds = Number(values.rounds);
if (values.cpu !== undefined) execFileSync('taskset', ['-pc', values.cpu, String(process.pid)], { stdio: 'ignore' });

type Variant = 'no key' | 'new key each' | 'retry (known key)';
const variants: Variant[] = ['no key', 'new key each', 'retry (known key)'];
const stream = { size: 300, ttlMs: 600_000 };
const data = JSON.stringify({ x: 'y'.repeat(90) });

async function engine(kind: 'memory' | 'sqlite'): Promise<{ broker: Broker; close: () => Promise<void> }> {
  if (kind === 'memory') {
    const broker = new MemoryBroker({ sweepIntervalMs: 3_600_000 });
    return { broker, close: () => broker.close() };
  }
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-idempotency-'));
  const store = openSqliteStore({ stateDir: dir });
  const broker = new SqliteBroker(store, { sweepIntervalMs: 3_600_000 });
  return {
    broker,
    close: async () => {
      await broker.close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** CPU µs per publish of `publishes` publishes, `inFlight` at a time. */
async function run(broker: Broker, variant: Variant, round: number): Promise<number> {
  const option = (i: number): PublishOptions =>
    variant === 'no key' ? { stream } : { stream, idempotency: { key: variant === 'retry (known key)' ? `k${String(i)}` : `r${String(round)}-${String(i)}`, windowMs: 300_000 } };
  if (variant === 'retry (known key)') {
    // The first publishes, not measured: the measured ones are their retries.
    for (let i = 0; i < publishes; i += inFlight) await Promise.all(Array.from({ length: Math.min(inFlight, publishes - i) }, (_, j) => broker.publish(`bench:${String((i + j) % channels)}`, data, option(i + j))));
  }
  const before = process.cpuUsage();
  for (let i = 0; i < publishes; i += inFlight) {
    await Promise.all(Array.from({ length: Math.min(inFlight, publishes - i) }, (_, j) => broker.publish(`bench:${String((i + j) % channels)}`, data, option(i + j))));
  }
  const used = process.cpuUsage(before);
  return (used.user + used.system) / publishes;
}

const median = (list: number[]) => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)]!;
console.log(`idempotency benchmark: ${String(publishes)} publishes to ${String(channels)} channels, ${String(inFlight)} in flight, history 300, ${String(rounds)} rounds; node ${process.version}`);
console.log('\n| engine | variant | CPU µs/publish (median) | × no key | rounds |\n|---|---|---:|---:|---|');
for (const kind of ['memory', 'sqlite'] as const) {
  const results = new Map<Variant, number[]>(variants.map((v) => [v, []]));
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? variants : [...variants].reverse();
    for (const variant of order) {
      const e = await engine(kind);
      results.get(variant)!.push(await run(e.broker, variant, round));
      await e.close();
    }
  }
  const base = median(results.get('no key')!);
  for (const variant of variants) {
    const list = results.get(variant)!;
    console.log(`| ${kind} | ${variant} | ${median(list).toFixed(2)} | ${(median(list) / base).toFixed(2)} | ${list.map((x) => x.toFixed(1)).join(', ')} |`);
  }
}
