/**
 * What the watchdog costs (packages/server/src/observability/watchdog.ts):
 * one process, pinned to one core (`--cpu N`, taskset), alternating rounds
 * without and with a Watchdog at the default settings (1 s interval, the
 * event-loop delay histogram at 20 ms resolution, the `gc` observer). Both
 * modes run prom-client's default metrics, as every Herald process does (its
 * own event-loop monitor and `gc` observer): the ratio is what the watchdog
 * adds to a server.
 *
 * - busy: an allocating workload (JSON encode and decode of small objects in
 *   batches, yielding with setImmediate so timers interleave, and enough
 *   garbage for many collections): operations per second;
 * - idle: CPU time used by the process over the round with nothing to do.
 *
 * Prints each round and the median ratio watchdog / baseline.
 *
 *   flock /work/bench.lock node bench/watchdog.ts --cpu 1 --rounds 3 --seconds 5
 */
import { execFileSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Watchdog } from '../packages/server/src/observability/watchdog.ts';
import { silentLogger } from '../packages/server/src/core/logger.ts';
import { collectDefaultMetrics, Registry } from 'prom-client';

const { values } = parseArgs({ options: { cpu: { type: 'string' }, rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '5' } } });
if (values.cpu !== undefined) execFileSync('taskset', ['-pc', values.cpu, String(process.pid)], { stdio: 'ignore' });
collectDefaultMetrics({ register: new Registry(), prefix: 'herald_' });
const rounds = Number(values.rounds);
const seconds = Number(values.seconds);

function startWatchdog(): Watchdog {
  return new Watchdog({
    eventLoopDelayMs: 1000,
    liveHeapMiB: 0,
    rssMiB: 0,
    intervalMs: 1000,
    settleMs: 10000,
    dir: join(tmpdir(), 'herald-bench-watchdog'),
    maxReports: 1,
    reportIntervalMs: 600000,
    heapSnapshots: false,
    maxHeapSnapshots: 1,
    heapSnapshotMaxMiB: 1,
    logger: silentLogger,
  });
}

async function busy(ms: number): Promise<number> {
  const until = performance.now() + ms;
  let ops = 0;
  while (performance.now() < until) {
    for (let i = 0; i < 200; i++) {
      const text = JSON.stringify({ channel: `chat:${i}`, offset: ops, data: { text: 'hello world', n: [i, ops, i * ops] } });
      ops += JSON.parse(text).offset === ops ? 1 : 0;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  return ops / (ms / 1000);
}

async function idle(ms: number): Promise<number> {
  const before = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const used = process.cpuUsage(before);
  return (used.user + used.system) / 1000 / (ms / 1000);
}

const rows: { round: number; mode: string; busyOps: number; idleCpuMsPerS: number }[] = [];
await busy(1000); // warm-up
for (let round = 1; round <= rounds; round++) {
  for (const mode of round % 2 === 1 ? ['baseline', 'watchdog'] : ['watchdog', 'baseline']) {
    const watchdog = mode === 'watchdog' ? startWatchdog() : undefined;
    const busyOps = await busy(seconds * 1000);
    const idleCpuMsPerS = await idle(seconds * 1000);
    watchdog?.close();
    rows.push({ round, mode, busyOps: Math.round(busyOps), idleCpuMsPerS: Math.round(idleCpuMsPerS * 100) / 100 });
    console.log(JSON.stringify(rows.at(-1)));
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const of = (mode: string, key: 'busyOps' | 'idleCpuMsPerS') => median(rows.filter((r) => r.mode === mode).map((r) => r[key]));
console.log('\n| | baseline | watchdog | ratio |\n|---|---|---|---|');
console.log(`| busy: JSON ops/s (median of ${rounds}) | ${of('baseline', 'busyOps')} | ${of('watchdog', 'busyOps')} | ${(of('watchdog', 'busyOps') / of('baseline', 'busyOps')).toFixed(3)} |`);
console.log(`| idle: CPU ms per s (median of ${rounds}) | ${of('baseline', 'idleCpuMsPerS')} | ${of('watchdog', 'idleCpuMsPerS')} | +${(of('watchdog', 'idleCpuMsPerS') - of('baseline', 'idleCpuMsPerS')).toFixed(2)} ms/s |`);
