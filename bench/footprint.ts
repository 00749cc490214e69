/**
 * Fixed footprint: the RSS of an idle server process with no clients.
 * Herald runs a production configuration (the benchmarks' config,
 * bench/lib.ts: the memory engine; and the same on the sqlite engine, now
 * the default, with its state file in the server's temporary directory), once from the built JavaScript (as
 * installed: packages/server/bin/herald.js) and once from the TypeScript
 * sources (as `npm start`); the baselines are the raw `ws` server
 * (bench/raw-ws-server.ts) and an Nchan worker (bench/nchan.ts), in the
 * same run.
 *
 *   node bench/footprint.ts [--rounds=2] [--settle=5] [--cpu=0]
 *     [--targets=herald-js,herald-js-sqlite,herald,raw-ws,nchan] [--json=FILE]
 *   (also herald-js-sqlite-jit: the sqlite target without the start-up hold of the optimizing compilers)
 *
 * Per target and round: start it pinned to `--cpu`, wait for it to listen,
 * let it settle `--settle` seconds, take the median of five RSS samples
 * (/proc/<pid>/status VmRSS), stop it. Targets alternate within a round;
 * the table gives the median over rounds.
 */
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { medianRss, sleep, startServerProcess, type ServerKind } from './server-process.ts';
import { nchanUnavailable, startNchan } from './nchan.ts';
import { heraldBenchConfig } from './lib.ts';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '2' },
    settle: { type: 'string', default: '5' },
    cpu: { type: 'string', default: '0' },
    targets: { type: 'string', default: 'herald-js,herald-js-sqlite,herald,raw-ws,nchan' },
    json: { type: 'string' },
  },
  strict: true,
});
const rounds = Number(values.rounds);
const settleMs = Number(values.settle) * 1000;
const cpus = values.cpu;

/**
 * `herald-js-sqlite`: the built server on the sqlite engine (now the default), its state file in a temporary directory;
 * `herald-js-sqlite-jit`: the same with `--maglev --turbofan` given, which cli/startup-heap.ts reads as the operator's choice:
 * the optimizing compilers are not held while the server starts (as before that hold).
 */
type Target = ServerKind | 'herald-js-sqlite' | 'herald-js-sqlite-jit' | 'nchan';
const targets = values.targets.split(',') as Target[];
const nchanMissing = nchanUnavailable();
if (targets.includes('nchan') && nchanMissing !== undefined) {
  process.stderr.write(`Nchan skipped: ${nchanMissing}\n`);
  targets.splice(targets.indexOf('nchan'), 1);
}

const labels: Record<Target, string> = {
  'herald-js': 'Herald (built JS, production config, memory engine)',
  'herald-js-sqlite': 'Herald (built JS, production config, sqlite engine)',
  'herald-js-sqlite-jit': 'Herald (built JS, production config, sqlite engine, compilers not held at start-up)',
  herald: 'Herald (TypeScript sources, production config)',
  'raw-ws': 'raw ws server',
  'raw-sse': 'raw SSE server',
  'raw-long-poll': 'raw long-poll server',
  'raw-net-long-poll': 'raw long-poll server on node:net (llhttp)',
  nchan: 'Nchan (nginx worker)',
};

async function measure(target: Target): Promise<number> {
  if (target === 'nchan') {
    const nchan = await startNchan({ cpus });
    try {
      await sleep(settleMs);
      return await medianRss(nchan.workerPid, 5, 200);
    } finally {
      await nchan.stop();
    }
  }
  const sqlite = { ...heraldBenchConfig(), engine: { type: 'sqlite' }, stateDir: 'state' };
  const server =
    target === 'herald-js-sqlite' || target === 'herald-js-sqlite-jit'
      ? await startServerProcess({ kind: 'herald-js', cpus, config: sqlite, nodeArgs: target === 'herald-js-sqlite-jit' ? ['--maglev', '--turbofan'] : [] })
      : await startServerProcess({ kind: target, cpus });
  try {
    await sleep(settleMs);
    return await medianRss(server.pid, 5, 200);
  } finally {
    await server.stop();
  }
}

const results = new Map<Target, number[]>();
process.stderr.write(`idle RSS, ${rounds} round(s), settle ${settleMs / 1000} s, server on CPU ${cpus}; node ${process.version}\n`);
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? targets : [...targets].reverse();
  for (const target of order) {
    const rss = await measure(target);
    process.stderr.write(`  round ${round + 1} ${target}: ${(rss / 1048576).toFixed(1)} MiB\n`);
    const list = results.get(target) ?? [];
    list.push(rss);
    results.set(target, list);
  }
}
/** The median; for an even count, the mean of the middle two. */
const median = (list: number[]): number => {
  const sorted = [...list].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const raw = results.has('raw-ws') ? median(results.get('raw-ws')!) : undefined;
const lines = ['| server | idle RSS MiB | vs raw ws |', '|---|---:|---:|'];
for (const target of targets) {
  const value = median(results.get(target)!);
  lines.push(`| ${labels[target]} | ${(value / 1048576).toFixed(1)} | ${raw === undefined ? '—' : `${(value / raw).toFixed(2)}×`} |`);
}
console.log(lines.join('\n'));
if (values.json !== undefined) writeFileSync(values.json, JSON.stringify(Object.fromEntries(results), null, 2));
process.exit(0);
