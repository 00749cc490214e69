/**
 * Soak benchmark: connection churn on every transport for a configurable
 * time, watching the server's memory (issue 14, part 4).
 *
 * One Herald process (`herald serve` from the sources, sqlite engine, the
 * default, its state directory in a temporary directory) pinned to one CPU;
 * this process, pinned to the other, runs:
 *
 * - a steady publisher: `POST /api/publish` at `--rate` publications per
 *   second, each to a random one of `--channels` channels;
 * - `--clients` churning slots per transport (WebSocket, SSE, long polling),
 *   each a loop of the client SDK: connect, subscribe to `--subscriptions`
 *   random channels, receive for 1–`--lifetime-ms` ms, disconnect, wait a
 *   little, then connect again *recovering* from the positions it had (the
 *   SDK's `since`); every `--switch-every`th cycle it picks new channels;
 * - a sampler: every `--poll-seconds` it reads the server's heap (prom-client's
 *   `herald_nodejs_heap_size_used_bytes` on the internal listener's
 *   /metrics) and RSS (/proc/<pid>/status); every `--sample-seconds` it
 *   prints one row (RSS, heap used: minimum and maximum in the window, the
 *   open connections, channels, and the churn done in the window).
 *
 * Judging growth. Heap used right after a collection is the live heap; the
 * lowest heap reading in a window is the nearest the sampler gets to it
 * (garbage accumulates between collections, so single readings jump). The
 * first `--warmup-fraction` of the windows is warm-up (JIT, pools, history
 * filling up to its limit) and is not judged. The rest is split into halves;
 * a series (heap window minimum; RSS at the end of each window) *grows
 * without bound* when both
 *   1. the median of its second half exceeds the median of its first half
 *      by more than the tolerance (heap: 20 % + 2 MiB; RSS: 25 % + 16 MiB,
 *      RSS is looser because the allocator keeps freed pages), and
 *   2. the least-squares slope over the second half is still positive
 *      (a series that stepped up once and stayed flat is a plateau, not a
 *      leak).
 * The benchmark exits 1 when the heap or the RSS grows without bound, or
 * when no client completed a cycle; 0 otherwise. Missed publications on a
 * recovery (`recovered: false`) are reported, not judged: they depend on the
 * history limits, not on memory.
 *
 * Everything is bounded: the client count and the run time are fixed, the
 * server is stopped (SIGTERM, then SIGKILL by PID) at the end or on Ctrl-C.
 *
 *   npm run bench:soak -- [--minutes=5] [--clients=20] [--rate=100]
 *     [--channels=200] [--subscriptions=3] [--lifetime-ms=4000]
 *     [--switch-every=5] [--sample-seconds=30] [--poll-seconds=2]
 *     [--warmup-fraction=0.2] [--server-cpu=0] [--loader-cpu=1]
 *     [--json=file] [--svg=file] [--leak-mib-per-minute=0]
 *
 * `--leak-mib-per-minute=N` checks the judge itself: it preloads into the
 * server (`--import` of a data: URL) a timer that keeps N MiB of heap per
 * minute forever; the run must then end in FAIL.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { HeraldClient, type StreamPosition, type TransportName } from '@herald/client';
import { heraldBenchConfig } from './lib.ts';
import { pinSelf, rssOf, sleep, startServerProcess } from './server-process.ts';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '5' },
    clients: { type: 'string', default: '20' },
    rate: { type: 'string', default: '100' },
    channels: { type: 'string', default: '200' },
    subscriptions: { type: 'string', default: '3' },
    'lifetime-ms': { type: 'string', default: '4000' },
    'switch-every': { type: 'string', default: '5' },
    'sample-seconds': { type: 'string', default: '30' },
    'poll-seconds': { type: 'string', default: '2' },
    'warmup-fraction': { type: 'string', default: '0.2' },
    'server-cpu': { type: 'string', default: '0' },
    'loader-cpu': { type: 'string', default: '1' },
    json: { type: 'string' },
    svg: { type: 'string' },
    'leak-mib-per-minute': { type: 'string', default: '0' },
  },
});

const TRANSPORTS = ['websocket', 'sse', 'long-poll'] as const satisfies readonly TransportName[];
const MiB = 1024 * 1024;
const pinned = cpus().length >= 2;
const options = {
  minutes: Number(values.minutes),
  clients: Number(values.clients),
  rate: Number(values.rate),
  channels: Number(values.channels),
  subscriptions: Number(values.subscriptions),
  lifetimeMs: Number(values['lifetime-ms']),
  switchEvery: Number(values['switch-every']),
  sampleSeconds: Number(values['sample-seconds']),
  pollSeconds: Number(values['poll-seconds']),
  warmupFraction: Number(values['warmup-fraction']),
  leakMiBPerMinute: Number(values['leak-mib-per-minute']),
  serverCpu: pinned ? values['server-cpu'] : undefined,
  loaderCpu: pinned ? values['loader-cpu'] : undefined,
};
for (const [name, value] of Object.entries(options)) {
  if (typeof value === 'number' && !(Number.isFinite(value) && value >= 0)) throw new Error(`--${name}: not a non-negative number`);
}
if (options.minutes <= 0 || options.clients < 1 || options.channels < options.subscriptions || options.sampleSeconds < options.pollSeconds) {
  throw new Error('need --minutes > 0, --clients ≥ 1, --channels ≥ --subscriptions, --sample-seconds ≥ --poll-seconds');
}

const log = (line: string): void => void process.stdout.write(`${line}\n`);

/** Churn counters, reset at every window. */
interface Churn {
  cycles: number;
  connected: number;
  recovered: number;
  notRecovered: number;
  deliveries: number;
  errors: number;
  published: number;
  publishFailed: number;
}
const newChurn = (): Churn => ({ cycles: 0, connected: 0, recovered: 0, notRecovered: 0, deliveries: 0, errors: 0, published: 0, publishFailed: 0 });
let churn = newChurn();
const total = newChurn();
const count = (key: keyof Churn, n = 1): void => {
  churn[key] += n;
  total[key] += n;
};
const errorKinds = new Map<string, number>();
const countError = (kind: string): void => {
  count('errors');
  errorKinds.set(kind, (errorKinds.get(kind) ?? 0) + 1);
};

const channelName = (i: number): string => `bench:soak-${String(i)}`;
function pickChannels(): string[] {
  const picked = new Set<string>();
  while (picked.size < options.subscriptions) picked.add(channelName(Math.floor(Math.random() * options.channels)));
  return [...picked];
}

/** One churning slot: connect, subscribe, receive, disconnect, reconnect recovering; until `until`. */
async function slot(url: string, transport: TransportName, until: number): Promise<void> {
  let positions = new Map<string, StreamPosition>();
  let channels = pickChannels();
  for (let cycle = 1; Date.now() < until; cycle++) {
    if (cycle % options.switchEvery === 0) {
      channels = pickChannels();
      positions = new Map([...positions].filter(([channel]) => channels.includes(channel)));
    }
    const client = new HeraldClient({ url, transports: [transport], reconnectDelayMs: 200, maxReconnectDelayMs: 2000 });
    client.on('connected', () => count('connected'));
    client.on('error', (e) => countError(`client ${transport} ${String(e.code)}`));
    for (const channel of channels) {
      const since = positions.get(channel);
      const sub = client.subscribe(channel, since === undefined ? {} : { since });
      sub.on('subscribed', (e) => {
        if (e.wasRecovering) count(e.recovered ? 'recovered' : 'notRecovered');
        if (!e.wasRecovering || !e.recovered) positions.set(channel, { epoch: e.epoch, offset: e.offset });
      });
      sub.on('publication', (p) => {
        count('deliveries');
        const known = positions.get(channel);
        if (known !== undefined) positions.set(channel, { epoch: known.epoch, offset: p.offset });
      });
      sub.on('error', (e) => countError(`subscription ${transport} ${String(e.code)}`));
    }
    client.connect();
    await sleep(Math.min(1000 + Math.random() * Math.max(0, options.lifetimeMs - 1000), Math.max(0, until - Date.now())));
    client.disconnect();
    count('cycles');
    await sleep(Math.random() * 300);
  }
}

/** The steady publisher: `rate` publications per second over the HTTP API, a few in flight at most. */
async function publisher(port: number, apiKey: string, until: number): Promise<void> {
  const url = `http://127.0.0.1:${String(port)}/api/publish`;
  const headers = { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' };
  const intervalMs = 1000 / options.rate;
  const start = Date.now();
  let sent = 0;
  const inFlight = new Set<Promise<void>>();
  while (Date.now() < until) {
    const due = start + sent * intervalMs;
    if (due > Date.now()) await sleep(due - Date.now());
    if (inFlight.size >= 8) await Promise.race(inFlight);
    const channel = channelName(Math.floor(Math.random() * options.channels));
    const body = JSON.stringify({ channel, data: { n: sent, t: Date.now(), p: 'x'.repeat(64) } });
    const request: Promise<void> = fetch(url, { method: 'POST', headers, body })
      .then(async (answer) => {
        await answer.arrayBuffer();
        count(answer.ok ? 'published' : 'publishFailed');
      })
      .catch(() => count('publishFailed'))
      .finally(() => inFlight.delete(request));
    inFlight.add(request);
    sent++;
  }
  await Promise.all(inFlight);
}

interface Metrics {
  heapUsed: number;
  heapTotal: number;
  connections: number;
  channels: number;
}
async function scrape(adminPort: number): Promise<Metrics> {
  const text = await (await fetch(`http://127.0.0.1:${String(adminPort)}/metrics`)).text();
  const one = (name: string): number => Number(new RegExp(`^${name} ([0-9.e+]+)`, 'm').exec(text)?.[1] ?? Number.NaN);
  const sum = (name: string): number => {
    let s = 0;
    for (const match of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+]+)`, 'gm'))) s += Number(match[1]);
    return s;
  };
  return { heapUsed: one('herald_nodejs_heap_size_used_bytes'), heapTotal: one('herald_nodejs_heap_size_total_bytes'), connections: sum('herald_connections'), channels: sum('herald_channels') };
}

interface Sample {
  /** seconds since the churn started, at the window's end */
  t: number;
  rssMiB: number;
  heapMinMiB: number;
  heapMaxMiB: number;
  heapTotalMiB: number;
  connections: number;
  channels: number;
  churn: Churn;
}

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};
/** Least-squares slope of ys over xs. */
function slope(xs: readonly number[], ys: readonly number[]): number {
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

interface Verdict {
  series: string;
  firstMedian: number;
  secondMedian: number;
  limit: number;
  /** MiB per hour over the second half */
  slopePerHour: number;
  unbounded: boolean;
}
function judge(series: string, samples: readonly Sample[], value: (s: Sample) => number, relative: number, absoluteMiB: number): Verdict {
  const skip = Math.max(1, Math.ceil(samples.length * options.warmupFraction));
  const judged = samples.slice(skip);
  const half = Math.floor(judged.length / 2);
  const first = judged.slice(0, half);
  const second = judged.slice(half);
  if (first.length === 0 || second.length < 2) return { series, firstMedian: Number.NaN, secondMedian: Number.NaN, limit: Number.NaN, slopePerHour: Number.NaN, unbounded: false };
  const firstMedian = median(first.map(value));
  const secondMedian = median(second.map(value));
  const limit = firstMedian * (1 + relative) + absoluteMiB;
  const slopePerHour = slope(second.map((s) => s.t), second.map(value)) * 3600;
  return { series, firstMedian, secondMedian, limit, slopePerHour, unbounded: secondMedian > limit && slopePerHour > 0 };
}

function svg(samples: readonly Sample[]): string {
  const width = 720;
  const height = 360;
  const pad = { left: 56, right: 16, top: 28, bottom: 40 };
  const tMax = Math.max(1, ...samples.map((s) => s.t));
  const yMax = Math.ceil(Math.max(1, ...samples.map((s) => Math.max(s.rssMiB, s.heapMaxMiB))) / 50) * 50;
  const x = (t: number): number => pad.left + (t / tMax) * (width - pad.left - pad.right);
  const y = (v: number): number => height - pad.bottom - (v / yMax) * (height - pad.top - pad.bottom);
  const line = (value: (s: Sample) => number, color: string): string =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" points="${samples.map((s) => `${x(s.t).toFixed(1)},${y(value(s)).toFixed(1)}`).join(' ')}"/>`;
  const parts: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${String(width)}" height="${String(height)}" font-family="sans-serif" font-size="12">`, `<rect width="100%" height="100%" fill="white"/>`];
  for (let v = 0; v <= yMax; v += yMax / 5) {
    parts.push(`<line x1="${String(pad.left)}" x2="${String(width - pad.right)}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#ddd"/>`, `<text x="${String(pad.left - 6)}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${v.toFixed(0)}</text>`);
  }
  for (let m = 0; m <= tMax / 60; m += Math.max(1, Math.round(tMax / 60 / 10))) {
    parts.push(`<text x="${x(m * 60).toFixed(1)}" y="${String(height - pad.bottom + 16)}" text-anchor="middle">${String(m)}</text>`);
  }
  parts.push(
    `<text x="${String(width / 2)}" y="${String(height - 6)}" text-anchor="middle">minutes</text>`,
    `<text x="${String(pad.left)}" y="16">MiB: RSS (red), heap used max (grey) and min ≈ after GC (blue)</text>`,
    line((s) => s.rssMiB, '#c0392b'),
    line((s) => s.heapMaxMiB, '#999'),
    line((s) => s.heapMinMiB, '#2471a3'),
    '</svg>',
  );
  return parts.join('\n') + '\n';
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function main(): Promise<number> {
  if (options.loaderCpu !== undefined) pinSelf(options.loaderCpu);
  log(`bench/soak.ts: ${JSON.stringify(options)}`);
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-soak-'));
  const adminPort = await freePort();
  const config = {
    ...heraldBenchConfig(),
    admin: { host: '127.0.0.1', port: adminPort },
    stateDir: join(dir, 'state'),
    engine: { type: 'sqlite' },
  };
  const nodeArgs: string[] = [];
  if (options.leakMiBPerMinute > 0) {
    // Every second, keep N/60 MiB of doubles (8 bytes each) on the heap.
    const doubles = Math.round((options.leakMiBPerMinute * MiB) / 60 / 8);
    nodeArgs.push('--import', `data:text/javascript,const kept=[];setInterval(()=>kept.push(new Array(${String(doubles)}).fill(1.5)),1000).unref();`);
  }
  const server = await startServerProcess({ kind: 'herald', cpus: options.serverCpu, config, nodeArgs }).catch((error: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  });
  const samples: Sample[] = [];
  try {
    const url = `http://127.0.0.1:${String(server.port)}`;
    const start = Date.now();
    const until = start + options.minutes * 60000;
    log(`server pid ${String(server.pid)} on port ${String(server.port)}, metrics on ${String(adminPort)}; ${String(options.clients)} churning clients per transport for ${String(options.minutes)} min`);
    const work = [publisher(server.port, server.apiKey, until)];
    for (const transport of TRANSPORTS) for (let i = 0; i < options.clients; i++) work.push(slot(url, transport, until));
    const done = Promise.all(work);

    const header = ['min', 'RSS MiB', 'heap min', 'heap max', 'heap total', 'conns', 'channels', 'cycles', 'connected', 'recovered', 'not rec.', 'deliveries', 'published', 'errors'];
    log(header.map((h) => h.padStart(10)).join(' '));
    let windowEnd = start + options.sampleSeconds * 1000;
    let heapMin = Infinity;
    let heapMax = 0;
    let last: Metrics | undefined;
    while (Date.now() < until + 1000) {
      await sleep(options.pollSeconds * 1000);
      try {
        last = await scrape(adminPort);
        heapMin = Math.min(heapMin, last.heapUsed);
        heapMax = Math.max(heapMax, last.heapUsed);
      } catch (error) {
        countError(`metrics scrape: ${(error as Error).message}`);
      }
      if (Date.now() >= windowEnd || Date.now() >= until + 1000) {
        const sample: Sample = {
          t: Math.round((Date.now() - start) / 1000),
          rssMiB: rssOf(server.pid) / MiB,
          heapMinMiB: heapMin / MiB,
          heapMaxMiB: heapMax / MiB,
          heapTotalMiB: (last?.heapTotal ?? Number.NaN) / MiB,
          connections: last?.connections ?? Number.NaN,
          channels: last?.channels ?? Number.NaN,
          churn,
        };
        samples.push(sample);
        churn = newChurn();
        heapMin = Infinity;
        heapMax = 0;
        windowEnd += options.sampleSeconds * 1000;
        const c = sample.churn;
        const cells = [(sample.t / 60).toFixed(1), sample.rssMiB.toFixed(1), sample.heapMinMiB.toFixed(1), sample.heapMaxMiB.toFixed(1), sample.heapTotalMiB.toFixed(1), sample.connections, sample.channels, c.cycles, c.connected, c.recovered, c.notRecovered, c.deliveries, c.published, c.errors];
        log(cells.map((cell) => String(cell).padStart(10)).join(' '));
      }
    }
    await done;

    log('');
    log(`totals: ${JSON.stringify(total)}`);
    if (errorKinds.size > 0) log(`errors by kind: ${JSON.stringify(Object.fromEntries(errorKinds))}`);
    log(`growth rule: the first ${String(Math.round(options.warmupFraction * 100))} % of the windows is warm-up; the rest is split in halves; a series grows without bound when`);
    log('its second half\'s median exceeds the first half\'s by more than the tolerance (heap min: 20 % + 2 MiB, RSS: 25 % + 16 MiB) AND its least-squares slope over the second half is positive.');
    const verdicts = [judge('heap used, window minimum', samples, (s) => s.heapMinMiB, 0.2, 2), judge('RSS', samples, (s) => s.rssMiB, 0.25, 16)];
    for (const v of verdicts) {
      log(`  ${v.series}: first half median ${v.firstMedian.toFixed(1)} MiB, second half median ${v.secondMedian.toFixed(1)} MiB (limit ${v.limit.toFixed(1)}), second-half slope ${v.slopePerHour.toFixed(1)} MiB/h: ${v.unbounded ? 'GROWS WITHOUT BOUND' : 'bounded'}`);
    }
    if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ options, samples, total, verdicts }, null, 2) + '\n');
    if (values.svg !== undefined) writeFileSync(values.svg, svg(samples));
    if (total.cycles === 0 || total.connected === 0) {
      log('FAIL: no client completed a connection cycle');
      return 1;
    }
    if (verdicts.some((v) => v.unbounded)) {
      log('FAIL: memory grows without bound');
      return 1;
    }
    log('PASS: heap and RSS bounded');
    return 0;
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    log(`bench/soak.ts failed: ${(error as Error).stack ?? String(error)}`);
    process.exit(1);
  },
);
