/**
 * Long polling under load: N long-poll clients of one channel, publications
 * of 100 bytes at a steady rate, Herald vs Nchan's long-poll subscriber and
 * a raw Node long-poll server (bench/raw-long-poll-server.ts: the floor of
 * Node's `http` for one request per answer) in one run: server CPU per
 * million deliveries and publish → delivery latency. Targets `raw-net-llhttp`
 * and `raw-net-hand` run the same raw server on `node:net` without node:http's
 * request and response objects (bench/raw-net-long-poll-server.ts: llhttp
 * through Node's binding, or a minimal hand parser): what a leaner HTTP layer
 * than Node's `http` could save per answer.
 *
 *   node bench/long-poll.ts [--clients=2000] [--rates=5,25] [--seconds=10]
 *     [--rounds=1] [--server-cpu=0] [--client-cpu=1] [--targets=raw,herald,nchan] (also raw-net-llhttp, raw-net-hand)
 *     [--server-node-args="--cpu-prof --cpu-prof-dir=DIR"] [--raw-node-args="..."] [--batch] [--json=FILE]
 *     [--before-root=DIR]   (targets `herald-before`, `herald-lean-before` (switch on): Herald from another checkout, e.g. a worktree
 *                            of the code before a change with its own `npm ci`, in the same run)
 *     [--generator=node|c]  (the load generator: this Node process, or bench/long-poll-client.c compiled with `cc -O2` into a
 *                            temporary directory; without a C compiler the run is skipped with a loud line)
 *
 * Per rate, round and target (alternating order): start the server pinned
 * to `--server-cpu`; open N clients from this process (pinned to
 * `--client-cpu`; lean kept-alive HTTP/1.1 connections, bench/raw-clients.ts):
 * Herald `POST /connection/poll/open` with the channel (and `batch: true`
 * with `--batch`, as the SDK opens: frames then go through the write
 * scheduler), then a loop of
 * `POST /connection/poll` acknowledging the last `seq`; Nchan a loop of
 * `GET /sub/<id>` with `If-None-Match`/`If-Modified-Since` from the previous
 * answer (one message per answer, the next one buffered). Publish 3 warm-up
 * messages, then rate × seconds measured ones at their times (open loop, over
 * a pool of 8 kept-alive connections, so a busy server is offered the rate), through Herald's
 * `POST /api/publish` (admin key) or Nchan's `POST /pub/<id>`. Each payload
 * carries its sequence number and a CLOCK_MONOTONIC send time; the clients
 * count distinct deliveries and record the latency. Server CPU is utime +
 * stime of the server process (Nchan: its worker) from the first measured
 * publish until the last delivery (or 5 s without progress).
 *
 * `--generator=c` runs the same phases, clients and publisher in one C
 * process instead (bench/long-poll-client.c: epoll, one request per
 * connection, answers parsed in place), pinned to `--client-cpu` like this
 * one: a few µs per delivery against the Node generator's 15 or more, so
 * that at 25 msg/s its own delay stays far below the 100 ms to be measured.
 * Either way a round prints the generator's CPU per delivery next to the
 * server's, and its own delay: the Node generator's event-loop delay, or
 * the C generator's timer lateness and its longest pass over ready sockets
 * (an answer that arrives during a pass is read at most one pass later).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { CHANNEL, heraldBenchConfig, isPayload, makePayload, newHistogram, nowUs, quantile, record } from './lib.ts';
import { nchanChannelId, nchanUnavailable, startNchan } from './nchan.ts';
import { HttpConnection } from './raw-clients.ts';
import { cpuSecondsOf, pinSelf, ROOT, sleep, startServerProcess, systemCpuSecondsOf } from './server-process.ts';

type Target = 'herald' | 'herald-lean' | 'herald-node-http' | 'herald-before' | 'herald-lean-before' | 'raw' | 'raw-net-llhttp' | 'raw-net-hand' | 'nchan';
/** The raw long-poll protocol (`POST /poll`, `POST /publish`), on node:http or on node:net. */
const isRaw = (target: Target): boolean => target === 'raw' || target === 'raw-net-llhttp' || target === 'raw-net-hand';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '2000' },
    rates: { type: 'string', default: '5,25' },
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '1' },
    'server-cpu': { type: 'string', default: '0' },
    'client-cpu': { type: 'string', default: '1' },
    targets: { type: 'string', default: 'raw,herald,nchan' },
    'server-node-args': { type: 'string', default: '' },
    'raw-node-args': { type: 'string', default: '' },
    'before-root': { type: 'string' },
    batch: { type: 'boolean', default: false },
    generator: { type: 'string', default: 'node' },
    json: { type: 'string' },
  },
  strict: true,
});
const clients = Number(values.clients);
const rates = values.rates.split(',').map(Number);
const seconds = Number(values.seconds);
const rounds = Number(values.rounds);
const targets = values.targets.split(',') as Target[];
const serverNodeArgs = values['server-node-args'].split(' ').filter((a) => a !== '');
const rawNodeArgs = values['raw-node-args'].split(' ').filter((a) => a !== '');
if ((targets.includes('herald-before') || targets.includes('herald-lean-before')) && values['before-root'] === undefined) throw new Error('herald-before and herald-lean-before need --before-root');
if (targets.includes('nchan') && nchanUnavailable() !== undefined) {
  process.stderr.write(`Nchan skipped: ${nchanUnavailable()}\n`);
  targets.splice(targets.indexOf('nchan'), 1);
}
if (values.generator !== 'node' && values.generator !== 'c') throw new Error('--generator is node or c');
pinSelf(values['client-cpu']);

/** `--generator=c`: bench/long-poll-client.c compiled into a temporary directory (removed at exit). */
const cGenerator = values.generator === 'c' ? compileGenerator() : undefined;

function compileGenerator(): string {
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-long-poll-client-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const binary = join(dir, 'long-poll-client');
  const compiled = spawnSync('cc', ['-O2', '-o', binary, join(ROOT, 'bench/long-poll-client.c')], { encoding: 'utf8' });
  if (compiled.error !== undefined) {
    process.stderr.write(`\n*** --generator=c SKIPPED: no C compiler (cc: ${compiled.error.message}); install one (e.g. gcc) or run with --generator=node ***\n\n`);
    process.exit(0);
  }
  if (compiled.status !== 0) throw new Error(`cc -O2 bench/long-poll-client.c failed: ${compiled.stderr}`);
  return binary;
}

const WARMUP = 3;

/** Busy CPU-seconds of the whole machine so far (all CPUs, /proc/stat, CLK_TCK 100). */
function machineBusySeconds(): number {
  const v = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  // user nice system irq softirq
  return ((v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[5] ?? 0) + (v[6] ?? 0)) / 100;
}
const NCHAN_ID = nchanChannelId(CHANNEL);

interface Result {
  target: Target;
  rate: number;
  round: number;
  delivered: number;
  expected: number;
  cpuSeconds: number;
  /** Of `cpuSeconds`, the kernel's (stime). */
  systemCpuSeconds: number;
  p50ms: number;
  p99ms: number;
  polls: number;
  /** Publications per second achieved by the publisher. */
  offered: number;
  /** From the first measured publish until the last delivery (or giving up). */
  seconds: number;
  /** The load generator's own CPU over that time, in cores (1 = its core saturated). */
  clientCores: number;
  /** The load generator's CPU-seconds over that time (user + system; the C generator's and this process's together). */
  clientCpuSeconds: number;
  /** Of `clientCpuSeconds`, the kernel's. */
  clientSystemCpuSeconds: number;
  /**
   * The load generator's event-loop delay p99 over that time, ms: how late
   * it reads answers and sends polls (Node: monitorEventLoopDelay; C: how
   * late the publisher's timer ran, per publication).
   */
  clientLagP99ms: number;
  /** Its longest event-loop delay, ms: a tail of seconds with a low p99 is one long stall of the load generator. */
  clientLagMaxMs: number;
  /** C generator: p99 and longest of its passes over ready sockets, ms (an answer waits at most one pass to be read); Node: NaN. */
  passP99ms: number;
  passMaxMs: number;
  /**
   * C generator: from writing a measured publication to reading the
   * server's answer to it, p50 / p99 / max in ms (how long the server took
   * to read and answer a publication); Node: NaN.
   */
  publishP50ms: number;
  publishP99ms: number;
  publishMaxMs: number;
  /** Latency p99.9 and maximum, ms. */
  p999ms: number;
  maxMs: number;
  /** Cores busy with other processes on the machine over that time (/proc/stat): the benchmark's own are not counted. */
  otherCores: number;
  /**
   * Where the latency goes. A delivery is `held` when its poll was sent
   * before the publication (the server held the poll and answered it), or
   * `queued` when the publication was sent before the poll that fetched it
   * (it waited in the session, between two polls of the client).
   */
  heldShare: number;
  heldP99ms: number;
  queuedP99ms: number;
  /** Of queued deliveries: from sending the poll to reading its answer (the server had the messages already). */
  turnaroundP99ms: number;
  /** Of queued deliveries: from the publication to sending the poll that fetched it (the client between polls). */
  betweenP99ms: number;
  /** The measured phase in CLOCK_MONOTONIC µs (`FROM-TO`, for bench/profile-summary.ts --window). */
  window: string;
  errors: string[];
}

async function run(target: Target, rate: number, round: number): Promise<Result> {
  let port: number;
  let pid: number;
  let apiKey = '';
  let stop: () => Promise<void>;
  if (target === 'nchan') {
    const nchan = await startNchan({ cpus: values['server-cpu'] });
    port = nchan.port;
    pid = nchan.workerPid;
    stop = () => nchan.stop();
  } else {
    const kind = target === 'raw' ? 'raw-long-poll' : isRaw(target) ? 'raw-net-long-poll' : 'herald';
    const server = await startServerProcess({
      kind,
      args: target === 'raw-net-hand' ? ['--parser=hand'] : target === 'raw-net-llhttp' ? ['--parser=llhttp'] : [],
      root: target === 'herald-before' || target === 'herald-lean-before' ? values['before-root'] : undefined,
      // `herald-lean`: the long-poll routes on the lean HTTP layer (http.leanLongPoll, packages/server/src/edge/lean-http.ts); `herald-lean-before` the same from --before-root.
      // `herald-node-http`: the switch off (node:http; `herald` runs the default, the lean layer since main of 2026-12-07).
      config:
        target === 'herald-lean' || target === 'herald-lean-before' || target === 'herald-node-http'
          ? { ...heraldBenchConfig(), http: { ...(heraldBenchConfig().http as object | undefined), leanLongPoll: target !== 'herald-node-http' } }
          : undefined,
      cpus: values['server-cpu'],
      nodeArgs: isRaw(target) ? rawNodeArgs : serverNodeArgs,
      // Herald's warnings and errors (the watchdog's among them) show in the output.
      onLine: (line) => {
        if (/"level":(4|5|6)\d/.test(line)) process.stderr.write(`    ${target} log: ${line.slice(0, 400)}\n`);
      },
    });
    port = server.port;
    pid = server.pid;
    apiKey = server.apiKey;
    stop = () => server.stop();
  }
  if (cGenerator !== undefined) {
    try {
      return await runC(cGenerator, { target, rate, round, port, pid, apiKey });
    } finally {
      await stop();
    }
  }
  const messages = Math.round(rate * seconds);
  const total = WARMUP + messages;
  const seen = new Uint8Array(clients * total);
  const histogram = newHistogram();
  const held = newHistogram();
  const queued = newHistogram();
  const turnaround = newHistogram();
  const between = newHistogram();
  let heldCount = 0;
  let delivered = 0;
  let polls = 0;
  let stopping = false;
  const errors: string[] = [];
  const connections: HttpConnection[] = [];
  /** `sentAt`: when the poll that fetched it was sent; `now`: when its answer was read. */
  const onPayload = (client: number, value: unknown, sentAt: number, now: number): void => {
    if (!isPayload(value) || value.s < 0 || value.s >= total) return;
    const at = client * total + value.s;
    if (seen[at] === 1) return;
    seen[at] = 1;
    if (value.s < WARMUP) return;
    delivered++;
    record(histogram, now - value.t);
    if (value.t >= sentAt) {
      heldCount++;
      record(held, now - value.t);
    } else {
      record(queued, now - value.t);
      record(turnaround, now - sentAt);
      record(between, sentAt - value.t);
    }
  };
  const fail = (error: unknown): void => {
    if (!stopping && errors.length < 5) errors.push(error instanceof Error ? error.message : String(error));
  };
  const json = { 'content-type': 'application/json' };
  const open = async (client: number): Promise<void> => {
    const connection = new HttpConnection(port);
    connections.push(connection);
    if (target === 'nchan') {
      const loop = async (): Promise<void> => {
        let headers: Record<string, string> = {};
        while (!stopping) {
          polls++;
          const sentAt = nowUs();
          const answer = await connection.request('GET', '/sub/' + NCHAN_ID, headers);
          const now = nowUs();
          if (answer.status === 200) onPayload(client, JSON.parse(answer.body), sentAt, now);
          const etag = answer.headers.get('etag');
          const modified = answer.headers.get('last-modified');
          if (etag !== undefined && modified !== undefined) headers = { 'if-none-match': etag, 'if-modified-since': modified };
        }
      };
      loop().catch(fail);
      return;
    }
    if (isRaw(target)) {
      const loop = async (): Promise<void> => {
        let seq = 0;
        while (!stopping) {
          polls++;
          const sentAt = nowUs();
          const answer = await connection.request('POST', '/poll', json, `{"seq":${seq}}`);
          const now = nowUs();
          const parsed = JSON.parse(answer.body) as { seq: number; messages: unknown[] };
          for (const payload of parsed.messages) onPayload(client, payload, sentAt, now);
          seq = parsed.seq;
        }
      };
      loop().catch(fail);
      return;
    }
    const opened = await connection.request('POST', '/connection/poll/open', json, JSON.stringify(values.batch ? { channels: [CHANNEL], batch: true } : { channels: [CHANNEL] }));
    if (opened.status !== 200) throw new Error(`poll/open ${opened.status}: ${opened.body.slice(0, 160)}`);
    const first = JSON.parse(opened.body) as { session: string; seq: number };
    const headers = { ...json, 'herald-session': first.session };
    const loop = async (): Promise<void> => {
      let seq = first.seq;
      while (!stopping) {
        polls++;
        const sentAt = nowUs();
        const answer = await connection.request('POST', '/connection/poll', headers, `{"seq":${seq}}`);
        const now = nowUs();
        if (answer.status !== 200) throw new Error(`poll ${answer.status}: ${answer.body.slice(0, 160)}`);
        const parsed = JSON.parse(answer.body) as { seq: number; messages: Array<{ push?: string; data?: unknown }> };
        for (const frame of parsed.messages) if (frame.push === 'publication') onPayload(client, frame.data, sentAt, now);
        if (parsed.seq > seq) seq = parsed.seq;
      }
    };
    loop().catch(fail);
  };
  try {
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < clients) await open(next++);
    };
    await Promise.all(Array.from({ length: 200 }, lane));
    await sleep(2000);
    // Open loop: each publication goes out at its time on an idle connection
    // of a small pool, whether or not earlier ones were answered, so that a
    // busy server is offered the rate rather than slowing the publisher down.
    const pool = Array.from({ length: 8 }, () => new HttpConnection(port));
    // Connected before anything is measured: a connection opened while the
    // server is busy may lose its SYN (the listen queue) and wait for the
    // kernel's retransmission (1 s, then 2 s), which the publications sent
    // on it would count as latency.
    await Promise.all(pool.map((connection) => connection.open()));
    const idle = [...pool];
    const publish = async (seq: number): Promise<void> => {
      while (idle.length === 0) await sleep(1);
      const publisher = idle.pop()!;
      const payload = makePayload(seq, nowUs());
      const answer =
        target === 'nchan'
          ? await publisher.request('POST', '/pub/' + NCHAN_ID, { 'content-type': 'application/json' }, payload)
          : isRaw(target)
            ? await publisher.request('POST', '/publish', json, payload)
            : await publisher.request('POST', '/api/publish', { ...json, authorization: `Bearer ${apiKey}` }, `{"channel":"${CHANNEL}","data":${payload}}`);
      idle.push(publisher);
      if (answer.status >= 300) throw new Error(`publish ${answer.status}: ${answer.body.slice(0, 160)}`);
    };
    for (let seq = 0; seq < WARMUP; seq++) {
      await publish(seq);
      await sleep(1000 / rate);
    }
    await sleep(2000);
    polls = 0;
    const cpuStart = cpuSecondsOf(pid);
    const systemCpuStart = systemCpuSecondsOf(pid);
    const clientCpuStart = process.cpuUsage();
    const machineStart = machineBusySeconds();
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    const began = performance.now();
    const fromUs = nowUs();
    const inFlight: Promise<void>[] = [];
    for (let i = 0; i < messages; i++) {
      const wait = began + (i * 1000) / rate - performance.now();
      if (wait > 1) await sleep(wait);
      inFlight.push(publish(WARMUP + i).catch(fail));
    }
    await Promise.all(inFlight);
    const publishSeconds = (performance.now() - began) / 1000;
    const expected = clients * messages;
    let last = delivered;
    let lastProgress = Date.now();
    while (delivered < expected && Date.now() - lastProgress < 5000) {
      await sleep(50);
      if (delivered !== last) {
        last = delivered;
        lastProgress = Date.now();
      }
    }
    const cpuSeconds = cpuSecondsOf(pid) - cpuStart;
    const systemCpuSeconds = systemCpuSecondsOf(pid) - systemCpuStart;
    const toUs = nowUs();
    const clientCpu = process.cpuUsage(clientCpuStart);
    const machineBusy = machineBusySeconds() - machineStart;
    lag.disable();
    const elapsed = (performance.now() - began) / 1000;
    const clientCpuSeconds = (clientCpu.user + clientCpu.system) / 1e6;
    for (const connection of pool) connection.close();
    return {
      target,
      rate,
      round,
      delivered,
      expected,
      cpuSeconds,
      systemCpuSeconds,
      p50ms: quantile(histogram, 0.5) / 1000,
      p99ms: quantile(histogram, 0.99) / 1000,
      p999ms: quantile(histogram, 0.999) / 1000,
      maxMs: quantile(histogram, 1) / 1000,
      polls,
      offered: messages / publishSeconds,
      seconds: elapsed,
      clientCores: clientCpuSeconds / elapsed,
      clientCpuSeconds,
      clientSystemCpuSeconds: clientCpu.system / 1e6,
      clientLagP99ms: lag.percentile(99) / 1e6,
      clientLagMaxMs: lag.max / 1e6,
      passP99ms: Number.NaN,
      passMaxMs: Number.NaN,
      publishP50ms: Number.NaN,
      publishP99ms: Number.NaN,
      publishMaxMs: Number.NaN,
      otherCores: Math.max(0, machineBusy - cpuSeconds - clientCpuSeconds) / elapsed,
      heldShare: heldCount / Math.max(1, delivered),
      heldP99ms: quantile(held, 0.99) / 1000,
      queuedP99ms: quantile(queued, 0.99) / 1000,
      turnaroundP99ms: quantile(turnaround, 0.99) / 1000,
      betweenP99ms: quantile(between, 0.99) / 1000,
      window: `${fromUs}-${toUs}`,
      errors,
    };
  } finally {
    stopping = true;
    for (const connection of connections) connection.close();
    await stop();
  }
}

/** What bench/long-poll-client.c prints on its `result` line (ms; null for an empty set). */
interface CResult {
  delivered: number;
  expected: number;
  polls: number;
  heldCount: number;
  publishSeconds: number;
  seconds: number;
  from: number;
  to: number;
  cpuSeconds: number;
  systemCpuSeconds: number;
  p50ms: number | null;
  p99ms: number | null;
  p999ms: number | null;
  maxms: number | null;
  heldP99ms: number | null;
  queuedP99ms: number | null;
  turnaroundP99ms: number | null;
  betweenP99ms: number | null;
  passP99ms: number | null;
  passMaxMs: number | null;
  publishP50ms: number | null;
  publishP99ms: number | null;
  publishMaxMs: number | null;
  lateP99ms: number | null;
  lateMaxMs: number | null;
  errors: string[];
}

/** One round with the C load generator: it runs the phases and prints `start`, `end` (the server's CPU is read at both) and its result. */
async function runC(binary: string, at: { target: Target; rate: number; round: number; port: number; pid: number; apiKey: string }): Promise<Result> {
  const { target, rate, round, port, pid, apiKey } = at;
  const protocol = target === 'nchan' ? 'nchan' : isRaw(target) ? 'raw' : 'herald';
  const args = [`--port=${port}`, `--protocol=${protocol}`, `--clients=${clients}`, `--rate=${rate}`, `--seconds=${seconds}`, `--warmup=${WARMUP}`, `--channel=${CHANNEL}`, `--nchan-id=${NCHAN_ID}`, `--api-key=${apiKey}`];
  // Inherits this process's CPU affinity (pinSelf: --client-cpu).
  const child = spawn(binary, values.batch ? [...args, '--batch'] : args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const sample = () => ({ cpu: cpuSecondsOf(pid), system: systemCpuSecondsOf(pid), machine: machineBusySeconds(), own: process.cpuUsage() });
  let start: ReturnType<typeof sample> | undefined;
  let end: ReturnType<typeof sample> | undefined;
  try {
    const r = await new Promise<CResult>((resolve, reject) => {
      createInterface({ input: child.stdout }).on('line', (line) => {
        if (line.startsWith('start ')) start = sample();
        else if (line.startsWith('end ')) end = sample();
        else if (line.startsWith('result ')) resolve(JSON.parse(line.slice('result '.length)) as CResult);
      });
      child.once('close', (code, signal) => reject(new Error(`long-poll-client exited (${code ?? signal}) without a result`)));
    });
    if (start === undefined || end === undefined) throw new Error('long-poll-client: no start or end line');
    const own = process.cpuUsage(start.own);
    const cpuSeconds = end.cpu - start.cpu;
    const clientCpuSeconds = r.cpuSeconds + (own.user + own.system) / 1e6;
    const ms = (value: number | null): number => value ?? Number.NaN;
    return {
      target,
      rate,
      round,
      delivered: r.delivered,
      expected: r.expected,
      cpuSeconds,
      systemCpuSeconds: end.system - start.system,
      p50ms: ms(r.p50ms),
      p99ms: ms(r.p99ms),
      p999ms: ms(r.p999ms),
      maxMs: ms(r.maxms),
      polls: r.polls,
      offered: Math.round(rate * seconds) / r.publishSeconds,
      seconds: r.seconds,
      clientCores: clientCpuSeconds / r.seconds,
      clientCpuSeconds,
      clientSystemCpuSeconds: r.systemCpuSeconds + own.system / 1e6,
      clientLagP99ms: ms(r.lateP99ms),
      clientLagMaxMs: ms(r.lateMaxMs),
      passP99ms: ms(r.passP99ms),
      passMaxMs: ms(r.passMaxMs),
      publishP50ms: ms(r.publishP50ms),
      publishP99ms: ms(r.publishP99ms),
      publishMaxMs: ms(r.publishMaxMs),
      otherCores: Math.max(0, end.machine - start.machine - cpuSeconds - clientCpuSeconds) / r.seconds,
      heldShare: r.heldCount / Math.max(1, r.delivered),
      heldP99ms: ms(r.heldP99ms),
      queuedP99ms: ms(r.queuedP99ms),
      turnaroundP99ms: ms(r.turnaroundP99ms),
      betweenP99ms: ms(r.betweenP99ms),
      window: `${r.from}-${r.to}`,
      errors: r.errors,
    };
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
}

process.stderr.write(`long polling: ${clients} clients, rates ${rates.join(', ')} msg/s for ${seconds} s, ${rounds} round(s); node ${process.version}; load generator: ${cGenerator === undefined ? 'this Node process' : 'bench/long-poll-client.c'}\n`);
const results: Result[] = [];
for (const rate of rates) {
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? targets : [...targets].reverse();
    for (const target of order) {
      const result = await run(target, rate, round);
      results.push(result);
      process.stderr.write(
        `  ${target} ${rate} msg/s (published ${result.offered.toFixed(1)}/s) round ${round + 1}: ${result.delivered}/${result.expected} in ${result.seconds.toFixed(1)} s, ${((result.cpuSeconds * 1e6) / Math.max(1, result.delivered)).toFixed(2)} CPU-s/M (kernel ${((result.systemCpuSeconds * 1e6) / Math.max(1, result.delivered)).toFixed(2)}), p50 ${result.p50ms.toFixed(1)} ms, p99 ${result.p99ms.toFixed(1)} ms, p99.9 ${result.p999ms.toFixed(1)} ms, max ${result.maxMs.toFixed(1)} ms, server ${(result.cpuSeconds / result.seconds).toFixed(2)} cores, load generator ${result.clientCores.toFixed(2)} cores, ${((result.clientCpuSeconds * 1e6) / Math.max(1, result.delivered)).toFixed(2)} CPU-s/M (kernel ${((result.clientSystemCpuSeconds * 1e6) / Math.max(1, result.delivered)).toFixed(2)}; ${cGenerator === undefined ? 'loop delay' : 'timer late'} p99 ${result.clientLagP99ms.toFixed(1)} ms, max ${result.clientLagMaxMs.toFixed(0)} ms${Number.isNaN(result.passP99ms) ? '' : `; pass over ready sockets p99 ${result.passP99ms.toFixed(1)} ms, max ${result.passMaxMs.toFixed(1)} ms`})${Number.isNaN(result.publishP99ms) ? '' : `, publish → its answer p50 ${result.publishP50ms.toFixed(1)} ms, p99 ${result.publishP99ms.toFixed(1)} ms, max ${result.publishMaxMs.toFixed(1)} ms`}, other load ${result.otherCores.toFixed(2)} cores; held ${(result.heldShare * 100).toFixed(0)} % p99 ${result.heldP99ms.toFixed(1)} ms, queued p99 ${result.queuedP99ms.toFixed(1)} ms (poll → answer ${result.turnaroundP99ms.toFixed(1)}, publication → poll ${result.betweenP99ms.toFixed(1)}); window ${result.window}${result.errors.length > 0 ? `; errors: ${result.errors.join('; ')}` : ''}\n`,
      );
    }
  }
}

const names: Record<Target, string> = {
  herald: 'Herald',
  'herald-lean': 'Herald, http.leanLongPoll',
  'herald-node-http': 'Herald, http.leanLongPoll off (node:http)',
  'herald-before': 'Herald before',
  'herald-lean-before': 'Herald before, http.leanLongPoll',
  raw: 'raw Node long-poll server',
  'raw-net-llhttp': 'raw long-poll on node:net, llhttp',
  'raw-net-hand': 'raw long-poll on node:net, hand parser',
  nchan: 'Nchan',
};
/** The median; for an even count, the mean of the middle two. */
const median = (list: number[]): number => {
  const sorted = [...list].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};
const lines = [
  '| target | clients | msg/s | published msg/s | deliveries/s | delivery ratio | server CPU-s per 1M deliveries | of which kernel | vs Nchan | p50 ms | p99 ms | max ms | polls per delivery | server cores | load generator CPU-s per 1M | its delay p99 / max ms |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
];
for (const rate of rates) {
  const of = (target: Target) => results.filter((r) => r.target === target && r.rate === rate);
  const cpuPerM = (list: Result[]) => median(list.map((r) => (r.cpuSeconds * 1e6) / Math.max(1, r.delivered)));
  const nchan = of('nchan');
  const baseline = nchan.length > 0 ? cpuPerM(nchan) : undefined;
  for (const target of targets) {
    const list = of(target);
    const cpu = cpuPerM(list);
    lines.push(
      `| ${names[target]} | ${clients} | ${rate} | ${median(list.map((r) => r.offered)).toFixed(1)} | ${median(list.map((r) => r.delivered / r.seconds)).toFixed(0)} | ${median(list.map((r) => r.delivered / r.expected)).toFixed(4)} | ${cpu.toFixed(2)} | ${median(list.map((r) => (r.systemCpuSeconds * 1e6) / Math.max(1, r.delivered))).toFixed(2)} | ${baseline === undefined ? '—' : `${(cpu / baseline).toFixed(2)}×`} | ${median(list.map((r) => r.p50ms)).toFixed(1)} | ${median(list.map((r) => r.p99ms)).toFixed(1)} | ${median(list.map((r) => r.maxMs)).toFixed(1)} | ${median(list.map((r) => r.polls / Math.max(1, r.delivered))).toFixed(2)} | ${median(list.map((r) => r.cpuSeconds / r.seconds)).toFixed(2)} | ${median(list.map((r) => (r.clientCpuSeconds * 1e6) / Math.max(1, r.delivered))).toFixed(2)} | ${median(list.map((r) => r.clientLagP99ms)).toFixed(1)} / ${Math.max(...list.map((r) => Math.max(r.clientLagMaxMs, Number.isNaN(r.passMaxMs) ? 0 : r.passMaxMs))).toFixed(0)} |`,
    );
  }
}
console.log(lines.join('\n'));
if (values.json !== undefined) writeFileSync(values.json, JSON.stringify(results, null, 2));
process.exit(0);
