/**
 * Where a server's CPU goes, from `perf` samples with call chains, by kind
 * of work: socket writes and reads, Node's HTTP parser, Node's own
 * JavaScript, Herald's JavaScript, SQLite (the INSERT, the commit's WAL
 * frames, the checkpoint's copy and `fsync`), GC and V8's threads. Kernel
 * frames go with the user-space frame that entered the kernel (a `write`
 * with the socket write that made it, loopback delivery included).
 *
 *   node bench/publish.ts --rounds=1 --targets=herald --warmup=20000 --publications=160000 --server-node-args=--perf-basic-prof &
 *   perf record -F 2000 -g -p <server pid> -o perf.data -- sleep 2.5     # once the warm-up is over
 *   perf script -i perf.data -F comm,tid,ip,sym,dso > perf.txt
 *   node bench/perf-categories.ts perf.txt [--us=42.4]
 *
 * `--us`: the CPU per publication the benchmark printed for that run; the
 * shares are then also given in µs per publication. Every sample of the
 * process counts (all threads; the idle loop does not appear in `perf`).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface Sample {
  readonly thread: string;
  /** Symbol names, leaf first; kernel frames as ''. */
  readonly frames: string[];
}

export function readSamples(text: string): Sample[] {
  const samples: Sample[] = [];
  let current: Sample | undefined;
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    if (!line.startsWith('\t') && !line.startsWith(' ')) {
      current = { thread: line.trim().split(/\s+/)[0] ?? '', frames: [] };
      samples.push(current);
      continue;
    }
    // "<address> <symbol> (<dso>)"
    const body = line.trim();
    const space = body.indexOf(' ');
    const symbol = space === -1 ? '' : body.slice(space + 1);
    current?.frames.push(symbol.endsWith('([kernel.kallsyms])') ? '' : symbol.replace(/ \([^()]*\)$/, ''));
  }
  return samples;
}

const SQLITE_API = /^node::sqlite::/;

export function categoryOf(sample: Sample): string {
  const { frames } = sample;
  if (sample.thread !== 'MainThread') {
    return frames.some((f) => /Compile|compiler::|maglev/.test(f)) ? 'V8 compiler threads' : 'GC and V8 helper threads';
  }
  if (frames.some((f) => f.includes('walCheckpoint'))) return frames.some((f) => f === 'fsync') ? 'SQLite: checkpoint, fsync' : 'SQLite: checkpoint, page copy';
  if (frames.some((f) => f.includes('walWriteOneFrame') || f.includes('WalFrames'))) return 'SQLite: COMMIT, WAL frame writes';
  if (frames.some((f) => f.startsWith('node::sqlite::StatementExecutionHelper::Run') || f.startsWith('node::sqlite::StatementSync'))) return 'SQLite: INSERT (B-tree, binding)';
  if (frames.some((f) => SQLITE_API.test(f))) return 'SQLite: BEGIN, COMMIT, other';
  for (const f of frames) {
    // Kernel frames belong to the user-space frame that entered the kernel.
    if (f === '') continue;
    if (/StreamBase::Write|DoTryWrite|WriteBuffer|WriteString/.test(f)) return 'socket writes (frame and answer, loopback delivery)';
    if (/uv__read|epoll|uv__io_poll/.test(f)) return 'socket reads, epoll';
    if (f.includes('llhttp')) return "Node's HTTP parser (llhttp)";
    if (/v8::internal::Heap::|Scavenge|MarkCompact|Sweeper|MinorMS/.test(f)) return 'GC and V8 helper threads';
    if (f.startsWith('JS:')) {
      if (/packages\/(server|protocol)\/src/.test(f)) return "Herald's JavaScript";
      if (f.includes('node_modules')) return 'dependencies (ws, secure-json-parse, rate-limit store)';
      return "Node's JavaScript (http, streams, net, timers)";
    }
  }
  return 'malloc, other native';
}

function main(): void {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { us: { type: 'string' } } });
  const file = positionals[0];
  if (file === undefined) throw new Error('usage: node bench/perf-categories.ts PERF_SCRIPT_OUTPUT [--us=CPU_US_PER_PUBLICATION]');
  const samples = readSamples(readFileSync(file, 'utf8'));
  const counts = new Map<string, number>();
  for (const sample of samples) {
    const category = categoryOf(sample);
    counts.set(category, (counts.get(category) ?? 0) + 1);
  }
  const us = values.us === undefined ? undefined : Number(values.us);
  console.log(`${file}: ${String(samples.length)} samples`);
  for (const [category, n] of [...counts.entries()].sort((a, b) => b[1] - a[1])) {
    const share = n / samples.length;
    const perPublication = us === undefined ? '' : `  ${(share * us).toFixed(1).padStart(5)} µs`;
    console.log(`  ${(100 * share).toFixed(1).padStart(5)}%${perPublication}  ${category}`);
  }
}

main();
