/**
 * Batched writes benchmark (issue 13, part 3): one channel with
 * `--subscribers` subscribers, publications through the HTTP API in a closed
 * loop with `--in-flight` publishes outstanding (each kept-alive connection
 * sends its next publish when the last is answered), 100-byte messages, so
 * queues build in front of the subscribers. Targets, in one run:
 *
 * - `ws-batch`: Herald over WebSocket, subscribers announcing batched frames
 *   (`/connection/websocket?batch=1`, docs/protocol.md "Batched frames");
 * - `ws`: Herald over WebSocket, one frame per message (no announcement);
 * - `nchan-ws`: nginx + Nchan (bench/nchan.ts) over WebSocket, the reference;
 * - `sse-batch`, `sse`, `nchan-sse`: the same over Server-Sent Events.
 *
 * The server runs pinned to one core (`--server-cpu`, taskset), this process
 * (subscribers and publishers, lean node:net clients from raw-clients.ts and
 * http-client.ts) to the other (`--loader-cpu`). The Herald targets share one
 * `herald serve` (production mode, namespace `bench` with history 300 and
 * default presence, as bench/lib.ts), each with its own subscribers; the
 * Nchan targets share one nginx. Per target: open the subscribers, publish
 * `--warmup` publications and wait for every delivery, then measure
 * `--publications` publications, from the first publish until every
 * delivery arrived (latencies from one subscriber in ten). It prints deliveries/s, server CPU per delivery
 * (utime + stime of the server process, Nchan's worker), the ratio of both
 * to the Nchan target of the same transport, delivery latency p50/p99 (from
 * the publisher's clock in the payload to the subscriber's parse,
 * CLOCK_MONOTONIC), and the loader's own CPU per delivery (when it nears
 * the server's, the loader is the bound).
 *
 *   node bench/batch.ts [--quick] [--subscribers=500] [--in-flight=16]
 *     [--publications=2000] [--warmup=200] [--rounds=1]
 *     [--targets=ws-batch,ws,nchan-ws,sse-batch,sse,nchan-sse]
 *     [--server-cpu=0] [--loader-cpu=1] [--json=FILE]
 *     [--server-node-args="--cpu-prof --cpu-prof-dir=DIR"]
 *
 * Each measured phase prints its window in CLOCK_MONOTONIC microseconds, for
 * `node bench/profile-summary.ts PROFILE --window=FROM-TO`.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import type { Socket } from 'node:net';
import { heraldBenchConfig, makePayload, newHistogram, nowUs, PAYLOAD_BYTES, quantile, record, runAlternatingRounds } from './lib.ts';
import { KeepAliveClient } from './http-client.ts';
import { nchanChannelId, nchanUnavailable, startNchan } from './nchan.ts';
import { openSse, openWebSocket, type RawWebSocket } from './raw-clients.ts';
import { cpuSecondsOf, startServerProcess } from './server-process.ts';

const TARGETS = ['ws-batch', 'ws', 'nchan-ws', 'sse-batch', 'sse', 'nchan-sse'] as const;
type Target = (typeof TARGETS)[number];
type ServerKind = 'herald' | 'nchan';

const kindOf = (target: Target): ServerKind => (target.startsWith('nchan') ? 'nchan' : 'herald');
const transportOf = (target: Target): 'ws' | 'sse' => (target.includes('ws') ? 'ws' : 'sse');

const CHANNEL = 'bench:batch';
/** One subscriber in this many records delivery latencies. */
const LATENCY_SAMPLE = 10;

interface Options {
  subscribers: number;
  inFlight: number;
  publications: number;
  warmup: number;
  rounds: number;
  targets: Target[];
  serverCpu: string | undefined;
  loaderCpu: string | undefined;
  serverNodeArgs: string[];
  json: string | undefined;
  timeoutS: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      subscribers: { type: 'string', default: '500' },
      'in-flight': { type: 'string', default: '16' },
      publications: { type: 'string' },
      warmup: { type: 'string' },
      rounds: { type: 'string', default: '1' },
      targets: { type: 'string', default: TARGETS.join(',') },
      'server-cpu': { type: 'string', default: '0' },
      'loader-cpu': { type: 'string', default: '1' },
      'server-node-args': { type: 'string', default: '' },
      json: { type: 'string' },
      timeout: { type: 'string', default: '600' },
    },
  });
  const targets = values.targets.split(',').map((t) => t.trim());
  for (const t of targets) if (!(TARGETS as readonly string[]).includes(t)) throw new Error(`unknown target ${t}; known: ${TARGETS.join(', ')}`);
  const pinned = cpus().length >= 2;
  const options: Options = {
    subscribers: Number(values.subscribers),
    inFlight: Number(values['in-flight']),
    publications: Number(values.publications ?? (values.quick ? 500 : 2000)),
    warmup: Number(values.warmup ?? (values.quick ? 50 : 200)),
    rounds: Number(values.rounds),
    targets: targets as Target[],
    serverCpu: pinned && values['server-cpu'] !== '' ? values['server-cpu'] : undefined,
    loaderCpu: pinned && values['loader-cpu'] !== '' ? values['loader-cpu'] : undefined,
    serverNodeArgs: values['server-node-args'].split(' ').filter(Boolean),
    json: values.json,
    timeoutS: Number(values.timeout),
  };
  for (const [name, value] of Object.entries(options)) {
    if (typeof value === 'number' && !(Number.isInteger(value) && value > 0)) throw new Error(`--${name} must be a positive integer`);
  }
  return options;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function selfCpuUs(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

// ---------------------------------------------------------------- servers

interface Server {
  readonly kind: ServerKind;
  readonly port: number;
  /** The process whose CPU is measured. */
  readonly pid: number;
  readonly apiKey: string;
  stop(): Promise<void>;
}

async function startServer(kind: ServerKind, options: Options): Promise<Server> {
  if (kind === 'nchan') {
    const nchan = await startNchan(options.serverCpu === undefined ? {} : { cpus: options.serverCpu });
    // nginx is not a child the server-process registry knows: kill it (by PID) if this process exits early.
    const kill = (): void => {
      try {
        process.kill(nchan.masterPid, 'SIGKILL');
        process.kill(nchan.workerPid, 'SIGKILL');
      } catch {
        // gone already
      }
    };
    process.on('exit', kill);
    return {
      kind,
      port: nchan.port,
      pid: nchan.workerPid,
      apiKey: '',
      stop: async () => {
        await nchan.stop();
        process.off('exit', kill);
      },
    };
  }
  const herald = await startServerProcess({ kind: 'herald', cpus: options.serverCpu, config: heraldBenchConfig(), nodeArgs: options.serverNodeArgs });
  return { kind, port: herald.port, pid: herald.pid, apiKey: herald.apiKey, stop: () => herald.stop() };
}

// ---------------------------------------------------------------- subscribers

/**
 * Counts deliveries: every frame that carries a payload (`"t":` of the
 * publisher's clock) is one, whatever its envelope (a Herald publication
 * push, Nchan's bare message). A WebSocket message or SSE event may hold
 * several frames, one per line (a Herald batch).
 */
class Deliveries {
  count = 0;
  /** Frames (messages or events) received, to tell batches from single frames. */
  messages = 0;
  histogram = newHistogram();
  measuring = false;
  ended: string[] = [];

  /** `sample`: this subscriber records latencies (one in LATENCY_SAMPLE, to keep the loader lean). */
  take(text: string, sample: boolean): void {
    this.messages++;
    const now = sample && this.measuring ? nowUs() : 0;
    let at = text.indexOf('"t":');
    while (at !== -1) {
      this.count++;
      if (now !== 0) {
        const end = text.indexOf(',', at + 4);
        record(this.histogram, now - Number(text.slice(at + 4, end)));
      }
      at = text.indexOf('"t":', at + 4);
    }
  }
}

interface Subscribers {
  readonly deliveries: Deliveries;
  close(): void;
}

/** Opens `count` subscribers of the target, 50 connection attempts at a time; resolves once all are subscribed. */
async function openSubscribers(target: Target, server: Server, count: number): Promise<Subscribers> {
  const deliveries = new Deliveries();
  const closers: (() => void)[] = [];
  let closing = false;
  const batch = target.endsWith('batch');
  const nchanPath = `/sub/${nchanChannelId(CHANNEL)}`;
  const one = (index: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const sample = index % LATENCY_SAMPLE === 0;
      let ready = false;
      const timer = setTimeout(() => reject(new Error(`${target}: a subscriber was not ready within 30 s`)), 30000);
      const done = (): void => {
        ready = true;
        clearTimeout(timer);
        resolve();
      };
      const onEnd = (reason: string): void => {
        if (!ready) {
          clearTimeout(timer);
          reject(new Error(`${target}: ${reason}`));
        } else if (!closing && deliveries.ended.length < 5) deliveries.ended.push(reason);
      };
      if (transportOf(target) === 'ws') {
        const herald = server.kind === 'herald';
        let ws: RawWebSocket | undefined = undefined;
        ws = openWebSocket(server.port, herald ? `/connection/websocket${batch ? '?batch=1' : ''}` : nchanPath, {
          onOpen: () => {
            if (!herald) done();
            else ws?.send('{"id":1,"method":"connect","params":{}}');
          },
          onMessage: (text) => {
            if (ready) deliveries.take(text, sample);
            else if (text.startsWith('{"id":1,')) ws?.send(`{"id":2,"method":"subscribe","params":{"channel":"${CHANNEL}"}}`);
            else if (text.startsWith('{"id":2,"result"')) done();
            else if (text.includes('"error"')) onEnd(text.slice(0, 200));
          },
          onEnd,
        });
        closers.push(() => ws?.close());
        return;
      }
      const path = server.kind === 'herald' ? `/connection/sse?channel=${encodeURIComponent(CHANNEL)}${batch ? '&batch=1' : ''}` : nchanPath;
      const socket: Socket = openSse(server.port, path, {}, {
        onOpen: () => {
          if (server.kind === 'nchan') done();
        },
        onEvent: (data) => {
          if (ready) deliveries.take(data, sample);
          else if (data.includes('"push":"subscribed"')) done();
        },
        onEnd,
      });
      closers.push(() => socket.destroy());
    });
  let started = 0;
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (started < count) {
        await one(started++);
      }
    }),
  );
  return {
    deliveries,
    close() {
      closing = true;
      for (const close of closers) close();
    },
  };
}

// ---------------------------------------------------------------- publishing

interface Phase {
  readonly publications: number;
  readonly deliveries: number;
  readonly messages: number;
  readonly seconds: number;
  readonly serverCpuUs: number;
  readonly loaderCpuUs: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
  readonly firstError: string | undefined;
  readonly missing: number;
  /** Cores busy outside the server and this process during the phase (/proc/stat): other load on the machine. */
  readonly otherCores: number;
  readonly fromUs: number;
  readonly toUs: number;
}

/** Busy CPU seconds of the whole machine so far (/proc/stat, all but idle and iowait). */
function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) / 100;
}

async function publishPhase(
  server: Server,
  clients: KeepAliveClient[],
  subscribers: Subscribers,
  first: number,
  publications: number,
  measure: boolean,
  options: Options,
): Promise<Phase> {
  const deliveries = subscribers.deliveries;
  const herald = server.kind === 'herald';
  const path = herald ? '/api/publish' : `/pub/${nchanChannelId(CHANNEL)}`;
  const headers = herald ? `content-type: application/json\r\nauthorization: Bearer ${server.apiKey}\r\n` : 'content-type: text/plain\r\n';
  deliveries.histogram = newHistogram();
  deliveries.measuring = measure;
  const before = deliveries.count;
  const messagesBefore = deliveries.messages;
  let published = 0;
  let errors = 0;
  let firstError: string | undefined;
  let next = first;
  const end = first + publications;
  const fromUs = nowUs();
  const cpu0 = cpuSecondsOf(server.pid);
  const self0 = selfCpuUs();
  const busy0 = machineBusySeconds();
  const began = performance.now();
  await Promise.all(
    clients.map(async (client) => {
      while (next < end) {
        const payload = makePayload(next++, nowUs());
        const answer = await client.request('POST', path, herald ? `{"channel":"${CHANNEL}","data":${payload}}` : payload, headers);
        if (answer.status < 200 || answer.status > 299) {
          errors++;
          firstError ??= `${String(answer.status)} ${answer.body.slice(0, 300)}`;
        } else published++;
      }
    }),
  );
  const expected = before + published * options.subscribers;
  const deadline = performance.now() + 60000;
  while (deliveries.count < expected && performance.now() < deadline) await sleep(2);
  const seconds = (performance.now() - began) / 1000;
  deliveries.measuring = false;
  const serverCpuUs = (cpuSecondsOf(server.pid) - cpu0) * 1e6;
  const loaderCpuUs = selfCpuUs() - self0;
  const otherCores = Math.max(0, (machineBusySeconds() - busy0) * 1e6 - serverCpuUs - loaderCpuUs) / 1e6 / seconds;
  return {
    publications,
    deliveries: deliveries.count - before,
    messages: deliveries.messages - messagesBefore,
    seconds,
    serverCpuUs,
    loaderCpuUs,
    otherCores,
    fromUs,
    toUs: nowUs(),
    p50Ms: quantile(deliveries.histogram, 0.5) / 1000,
    p99Ms: quantile(deliveries.histogram, 0.99) / 1000,
    errors,
    firstError,
    missing: Math.max(0, expected - deliveries.count),
  };
}

interface Result extends Phase {
  readonly target: Target;
  readonly round: number;
}

async function runServer(kind: ServerKind, targets: Target[], round: number, options: Options, skipped: string[]): Promise<Result[]> {
  const server = await startServer(kind, options);
  const results: Result[] = [];
  const clients: KeepAliveClient[] = [];
  let seq = 0;
  try {
    for (let i = 0; i < options.inFlight; i++) clients.push(await KeepAliveClient.open(server.port));
    for (const target of targets) {
      const opened = Date.now();
      const subscribers = await openSubscribers(target, server, options.subscribers);
      try {
        log(`  ${target}: ${String(options.subscribers)} subscribers in ${((Date.now() - opened) / 1000).toFixed(1)} s`);
        const warm = await publishPhase(server, clients, subscribers, seq, options.warmup, false, options);
        seq += options.warmup;
        if (warm.errors > 0 || warm.missing > 0) {
          skipped.push(`${target} round ${String(round)}: warm-up failed: ${warm.firstError ?? `${String(warm.missing)} deliveries missing`}`);
          log(`  ${skipped[skipped.length - 1] ?? ''}`);
          continue;
        }
        await sleep(500);
        const phase = await publishPhase(server, clients, subscribers, seq, options.publications, true, options);
        seq += options.publications;
        results.push({ ...phase, target, round });
        log(
          `  ${target} round ${String(round)}: ${(phase.deliveries / phase.seconds).toFixed(0)} deliveries/s, server ` +
            `${(phase.serverCpuUs / phase.deliveries).toFixed(2)} µs/delivery, p50 ${phase.p50Ms.toFixed(1)} ms, p99 ${phase.p99Ms.toFixed(1)} ms, ` +
            `${(phase.deliveries / phase.messages).toFixed(1)} frames/message, loader ${(phase.loaderCpuUs / phase.deliveries).toFixed(2)} µs/delivery` +
            `${phase.errors > 0 ? `, ${String(phase.errors)} errors (${phase.firstError ?? ''})` : ''}${phase.missing > 0 ? `, ${String(phase.missing)} deliveries missing` : ''}` +
            `, other load ${phase.otherCores.toFixed(2)} cores; window ${String(phase.fromUs)}-${String(phase.toUs)}` +
            `${subscribers.deliveries.ended.length > 0 ? `, subscribers ended: ${subscribers.deliveries.ended.join('; ')}` : ''}`,
        );
      } finally {
        subscribers.close();
        await sleep(500);
      }
    }
  } finally {
    for (const client of clients) client.close();
    await server.stop();
  }
  return results;
}

// ---------------------------------------------------------------- report

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? NaN) : ((sorted[mid - 1] ?? NaN) + (sorted[mid] ?? NaN)) / 2;
}

function report(results: Result[], options: Options): string {
  const lines = [
    '| target | deliveries/s | server CPU µs/delivery | CPU × Nchan | deliveries/s × Nchan | p50 ms | p99 ms | frames/message | loader CPU µs/delivery | other load (cores) | errors | missing |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  const nchanOf = (target: Target): Result[] => results.filter((r) => r.target === (transportOf(target) === 'ws' ? 'nchan-ws' : 'nchan-sse'));
  for (const target of options.targets) {
    const runs = results.filter((r) => r.target === target);
    if (runs.length === 0) continue;
    const cpu = median(runs.map((r) => r.serverCpuUs / r.deliveries));
    const rate = median(runs.map((r) => r.deliveries / r.seconds));
    const nchan = nchanOf(target);
    const nchanCpu = median(nchan.map((r) => r.serverCpuUs / r.deliveries));
    const nchanRate = median(nchan.map((r) => r.deliveries / r.seconds));
    lines.push(
      `| ${target} | ${rate.toFixed(0)} | ${cpu.toFixed(2)} | ${nchan.length === 0 ? '—' : (cpu / nchanCpu).toFixed(2)} | ` +
        `${nchan.length === 0 ? '—' : (rate / nchanRate).toFixed(2)} | ${median(runs.map((r) => r.p50Ms)).toFixed(1)} | ${median(runs.map((r) => r.p99Ms)).toFixed(1)} | ` +
        `${median(runs.map((r) => r.deliveries / r.messages)).toFixed(1)} | ${median(runs.map((r) => r.loaderCpuUs / r.deliveries)).toFixed(2)} | ${median(runs.map((r) => r.otherCores)).toFixed(2)} | ` +
        `${String(runs.reduce((n, r) => n + r.errors, 0))} | ${String(runs.reduce((n, r) => n + r.missing, 0))} |`,
    );
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const options = parseOptions();
  const hardTimer = setTimeout(() => {
    log(`hard timeout of ${String(options.timeoutS)} s: stopping`);
    process.exit(1);
  }, options.timeoutS * 1000);
  hardTimer.unref();
  if (options.loaderCpu !== undefined) execFileSync('taskset', ['-a', '-p', '-c', options.loaderCpu, String(process.pid)], { stdio: 'ignore' });
  const skipped: string[] = [];
  let targets = options.targets;
  if (targets.some((t) => kindOf(t) === 'nchan') && nchanUnavailable() !== undefined) {
    skipped.push(`nchan: ${nchanUnavailable() ?? ''}`);
    targets = targets.filter((t) => kindOf(t) !== 'nchan');
  }
  const began = Date.now();
  const setup =
    `1 channel × ${String(options.subscribers)} subscribers, closed loop with ${String(options.inFlight)} publishes in flight over keep-alive HTTP, ` +
    `${String(PAYLOAD_BYTES)}-byte messages, ${String(options.publications)} publications measured per target after ${String(options.warmup)} warm-up; ` +
    `${String(options.rounds)} round(s); server on CPU ${options.serverCpu ?? 'any'}, loader on CPU ${options.loaderCpu ?? 'any'}; ${String(cpus().length)} CPUs; node ${process.version}`;
  log(`batch benchmark: ${setup}`);
  const results = await runAlternatingRounds(targets, kindOf, options.rounds, (kind, own, round) => runServer(kind, own, round, options, skipped), skipped, log);
  const out = [setup, '', report(results, options), ...(skipped.length > 0 ? ['', ...skipped.map((s) => `- ${s}`)] : []), '', `total time ${((Date.now() - began) / 1000).toFixed(0)} s`];
  console.log(out.join('\n'));
  if (options.json !== undefined) writeFileSync(options.json, JSON.stringify({ options, node: process.version, results, skipped }, null, 2));
  clearTimeout(hardTimer);
  process.exit(skipped.some((s) => s.includes('failed')) ? 1 : 0);
}

main().catch((error: unknown) => {
  log(`benchmark failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  process.exit(1);
});
