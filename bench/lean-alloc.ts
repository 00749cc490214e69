/**
 * Allocation per request on the lean HTTP layer: a preload for a
 * benchmark's Herald server that runs V8's sampling heap profiler (objects
 * that the young and old collections freed included: garbage counts) over a
 * window of requests the layer answered (`leanStats.requests`, from
 * LEAN_ALLOC_START requests on, for LEAN_ALLOC_COUNT requests), then writes
 * the profile and prints bytes per request; `--summary` prints a profile's
 * bytes per request by allocating stack (its last frames; inlined functions
 * are not frames of their own).
 *
 *   LEAN_ALLOC_DIR=/tmp node bench/long-poll.ts --generator=c --rates=5 --seconds=6 --rounds=1 --targets=herald \
 *     --server-node-args="--import=$PWD/bench/lean-alloc.ts"      (LEAN_ALLOC_START=15000, LEAN_ALLOC_COUNT=30000)
 *   node bench/lean-alloc.ts --summary /tmp/lean-alloc-PID.json [--top=25] [--depth=4]
 *
 * The profiler samples every 1024 bytes allocated on average: the numbers
 * are estimates (a few per cent between runs of the same code).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children: readonly ProfileNode[];
}
interface Profile {
  readonly head: ProfileNode;
  readonly samples: readonly { readonly nodeId: number; readonly size: number }[];
}

function sample(): void {
  // The server's entry is packages/server/src/cli/main.ts of the checkout it runs from.
  const root = join(dirname(process.argv[1]!), '../../../..');
  const start = Number(process.env.LEAN_ALLOC_START ?? 15000);
  const count = Number(process.env.LEAN_ALLOC_COUNT ?? 30000);
  const dir = process.env.LEAN_ALLOC_DIR ?? '/tmp';
  const session = new Session();
  session.connect();
  let stats: { requests: number } | undefined;
  let from = -1;
  const timer = setInterval(() => {
    void (async () => {
      stats ??= ((await import(pathToFileURL(join(root, 'packages/server/src/edge/lean-http.ts')).href)) as { leanStats: { requests: number } }).leanStats;
      const seen = stats.requests;
      if (from < 0 && seen >= start) {
        from = seen;
        await session.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
      } else if (from >= 0 && seen - from >= count) {
        clearInterval(timer);
        const { profile } = (await session.post('HeapProfiler.stopSampling')) as unknown as { profile: Profile };
        const requests = stats.requests - from;
        const bytes = profile.samples.reduce((sum, s) => sum + s.size, 0);
        const file = join(dir, `lean-alloc-${process.pid}.json`);
        writeFileSync(file, JSON.stringify({ root, requests, profile }));
        process.stderr.write(`lean-alloc: ${root}: ${requests} requests, ${(bytes / requests).toFixed(0)} bytes allocated per request (${file})\n`);
      }
    })();
  }, 50);
  timer.unref();
}

function summary(file: string, top: number, depth: number): void {
  const { root, requests, profile } = JSON.parse(readFileSync(file, 'utf8')) as { root: string; requests: number; profile: Profile };
  const self = new Map<number, number>();
  for (const s of profile.samples) self.set(s.nodeId, (self.get(s.nodeId) ?? 0) + s.size);
  const rows = new Map<string, number>();
  let total = 0;
  const walk = (node: ProfileNode, stack: readonly string[]): void => {
    const frame = node.callFrame;
    const here = [...stack, `${frame.functionName || '(anonymous)'}@${frame.url.replace(/.*\//, '')}:${frame.lineNumber + 1}`];
    const size = self.get(node.id) ?? 0;
    if (size > 0) {
      const key = here.slice(-depth).join(' > ');
      rows.set(key, (rows.get(key) ?? 0) + size);
      total += size;
    }
    for (const child of node.children) walk(child, here);
  };
  walk(profile.head, []);
  process.stdout.write(`${root}: ${requests} requests, ${(total / requests).toFixed(0)} bytes per request\n`);
  for (const [key, size] of [...rows].sort((a, b) => b[1] - a[1]).slice(0, top)) process.stdout.write(`${(size / requests).toFixed(1).padStart(8)}  ${key}\n`);
}

if (process.argv.includes('--summary')) {
  const { values, positionals } = parseArgs({ options: { summary: { type: 'boolean' }, top: { type: 'string', default: '25' }, depth: { type: 'string', default: '4' } }, allowPositionals: true });
  summary(positionals[0]!, Number(values.top), Number(values.depth));
} else {
  sample();
}
