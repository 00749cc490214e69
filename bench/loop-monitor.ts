/**
 * A preload for a benchmark's server process: once a second it appends one
 * JSON line to a file with the event loop's delay over that second (p50, p99,
 * max, 1 ms resolution: how late a timer ran) and the garbage collections
 * (count, total and longest pause, by kind: 1 scavenge, 2 minor mark-sweep,
 * 4 mark-sweep-compact, 8 incremental marking, 16 weak callbacks). `mono` is
 * CLOCK_MONOTONIC in µs, the clock of the windows the benchmarks print, so a
 * line can be matched to a round (`bench/loop-monitor.ts --summary` does it).
 *
 *   node bench/long-poll.ts … --server-node-args="--import=./bench/loop-monitor.ts"   (LOOP_MONITOR_DIR, default /tmp)
 *   node bench/loop-monitor.ts --summary BENCH-OUTPUT [--dir=/tmp]
 *
 * The timer behind the second's line is itself a timer: when timers wait
 * (libuv's poll phase busy with sockets), lines are missing and the next
 * line's delay says how long.
 */
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { appendFileSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

interface Line {
  readonly mono: number;
  readonly pid: number;
  readonly loopP50: number;
  readonly loopP99: number;
  readonly loopMax: number;
  readonly gcCount: number;
  readonly gcTotalMs: number;
  readonly gcMaxMs: number;
  readonly kinds: Record<string, number>;
}

const PREFIX = 'loop-monitor-';

function monitor(dir: string): void {
  const file = join(dir, `${PREFIX}${process.pid}.jsonl`);
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  let count = 0;
  let total = 0;
  let longest = 0;
  let kinds: Record<string, number> = {};
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      count++;
      total += entry.duration;
      longest = Math.max(longest, entry.duration);
      const kind = String((entry as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? 0);
      kinds[kind] = (kinds[kind] ?? 0) + 1;
    }
  }).observe({ entryTypes: ['gc'] });
  setInterval(() => {
    const line: Line = {
      mono: Number(process.hrtime.bigint() / 1000n),
      pid: process.pid,
      loopP50: delay.percentile(50) / 1e6,
      loopP99: delay.percentile(99) / 1e6,
      loopMax: delay.max / 1e6,
      gcCount: count,
      gcTotalMs: Math.round(total * 100) / 100,
      gcMaxMs: Math.round(longest * 100) / 100,
      kinds,
    };
    appendFileSync(file, JSON.stringify(line) + '\n');
    delay.reset();
    count = 0;
    total = 0;
    longest = 0;
    kinds = {};
  }, 1000).unref();
}

/** Per round of a benchmark's output (lines with `round N` and `window FROM-TO`): the lines inside its window. */
function summary(output: string, dir: string): void {
  const lines: Line[] = [];
  for (const name of readdirSync(dir).filter((f) => f.startsWith(PREFIX))) {
    for (const text of readFileSync(join(dir, name), 'utf8').trim().split('\n')) if (text !== '') lines.push(JSON.parse(text) as Line);
  }
  for (const match of readFileSync(output, 'utf8').matchAll(/^ +(\S+) (.*?)round (\d+).*window (\d+)-(\d+)/gm)) {
    const [, target, what, round, from, to] = match as unknown as [string, string, string, string, string, string];
    // A line covers the second before it: the first second of the window is left out.
    const inside = lines.filter((l) => l.mono > Number(from) + 1e6 && l.mono <= Number(to));
    if (inside.length === 0) continue;
    const kinds: Record<string, number> = {};
    for (const l of inside) for (const [kind, n] of Object.entries(l.kinds)) kinds[kind] = (kinds[kind] ?? 0) + n;
    const seconds = (Number(to) - Number(from) - 1e6) / 1e6;
    const gcMs = inside.reduce((a, l) => a + l.gcTotalMs, 0);
    process.stdout.write(
      `${target} ${what.split(' (')[0]!.trim()} round ${round}: ${inside.length} lines in ${seconds.toFixed(1)} s; loop delay p99 per second ${inside.map((l) => l.loopP99.toFixed(0)).join(', ')} ms, max ${Math.max(...inside.map((l) => l.loopMax)).toFixed(0)} ms; ` +
        `GC ${(gcMs / seconds).toFixed(1)} ms/s, longest ${Math.max(...inside.map((l) => l.gcMaxMs)).toFixed(1)} ms, by kind ${JSON.stringify(kinds)}\n`,
    );
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values, positionals } = parseArgs({ options: { summary: { type: 'boolean', default: false }, dir: { type: 'string', default: '/tmp' } }, allowPositionals: true });
  if (!values.summary || positionals[0] === undefined) throw new Error('usage: node bench/loop-monitor.ts --summary BENCH-OUTPUT [--dir=/tmp]');
  summary(positionals[0], values.dir);
} else {
  monitor(process.env['LOOP_MONITOR_DIR'] ?? '/tmp');
}
