/**
 * Fan-out benchmark: N subscribers on one channel, M publications of 100
 * bytes through the HTTP API, for every Herald transport and for a minimal
 * raw `ws` broadcast server (bench/raw-ws-server.ts) as the baseline, all in
 * one run on loopback.
 *
 *   node bench/fanout.ts [--subscribers=2000,10000] [--messages=50]
 *     [--transports=raw-ws,websocket,sse,long-poll]
 *     [--delivery-rate=10000 | --rate=MSG_PER_S] [--warmup=5] [--client-workers=2]
 *     [--concurrency=100] [--settle=3] [--drain-idle=5] [--quiet-wait=30]
 *     [--long-poll-max=2000] [--raw-frame=payload|envelope]
 *     [--server-node-args="--cpu-prof --cpu-prof-dir=DIR"]
 *     [--timeout=900] [--json=FILE]
 *
 * The publish rate is the same for every target of one N: --rate messages per
 * second, or by default --delivery-rate / N (10 000 deliveries/s offered,
 * which the raw baseline sustains on a 2-core machine without queueing).
 *
 * Per target and N: start the server as a child process, record its RSS,
 * open N subscribers from `--client-workers` forked load-generator processes
 * (bench/fanout-client.ts), let them settle and record the RSS again (idle
 * memory per connection = ΔRSS / N), publish warm-up messages, then publish
 * M messages at a steady rate while reading the server's utime+stime from
 * /proc/<pid>/stat. Every payload carries its sequence number and a
 * CLOCK_MONOTONIC send timestamp; the clients count distinct deliveries and
 * record latency. Everything stops by itself; --timeout is a hard limit.
 *
 * Long polling runs only for N ≤ --long-poll-max (2000 by default): every
 * message costs one HTTP answer and one new poll per subscriber, and with
 * 10 000 subscribers the server and the load generator together need more
 * than the 2 cores of the reference machine.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir, cpus } from 'node:os';
import { join, dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  childProcessRegistry,
  benchSecrets, heraldBenchConfig,
  CHANNEL,
  PAYLOAD_BYTES,
  TRANSPORTS,
  makePayload,
  merge,
  newHistogram,
  nowUs,
  quantile,
  type ConnectedMessage,
  type FromClient,
  type ReportMessage,
  type StatusMessage,
  type ToClient,
  type Transport,
} from './lib.ts';
import { SOURCE_NODE_ARGS } from '../packages/server/test/helpers/source.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

// ---------------------------------------------------------------- options

interface Options {
  subscribers: number[];
  messages: number;
  warmup: number;
  transports: Transport[];
  rate: number | undefined;
  deliveryRate: number;
  clientWorkers: number;
  concurrency: number;
  settleMs: number;
  longPollMax: number;
  timeoutS: number;
  drainIdleMs: number;
  quietWaitMs: number;
  /** extra node flags for the server process, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` */
  serverNodeArgs: string[];
  /**
   * What the raw baseline broadcasts: the bare 100-byte payload (default), or
   * the payload wrapped in a Herald-sized publication envelope, to separate
   * the cost of the protocol's extra bytes from the cost of Herald's code.
   */
  rawFrame: 'payload' | 'envelope';
  json: string | undefined;
}

function rawFrame(text: string): 'payload' | 'envelope' {
  if (text === 'payload' || text === 'envelope') return text;
  throw new Error('--raw-frame must be payload or envelope');
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      subscribers: { type: 'string', default: '2000,10000' },
      messages: { type: 'string', default: '50' },
      warmup: { type: 'string', default: '5' },
      transports: { type: 'string', default: TRANSPORTS.join(',') },
      rate: { type: 'string' },
      'delivery-rate': { type: 'string', default: '10000' },
      'client-workers': { type: 'string', default: '2' },
      concurrency: { type: 'string', default: '100' },
      settle: { type: 'string', default: '3' },
      'long-poll-max': { type: 'string', default: '2000' },
      timeout: { type: 'string', default: '900' },
      'drain-idle': { type: 'string', default: '5' },
      'quiet-wait': { type: 'string', default: '30' },
      'server-node-args': { type: 'string', default: '' },
      'raw-frame': { type: 'string', default: 'payload' },
      json: { type: 'string' },
      help: { type: 'boolean', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(readFileSync(fileURLToPath(import.meta.url), 'utf8').split('*/')[0]);
    process.exit(0);
  }
  const int = (name: string, text: string, min: number): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${text}`);
    return n;
  };
  const transports = values.transports.split(',').map((t) => t.trim());
  for (const t of transports) {
    if (!(TRANSPORTS as readonly string[]).includes(t)) throw new Error(`unknown transport ${t}; known: ${TRANSPORTS.join(', ')}`);
  }
  const rateText = values.rate;
  const rate = rateText === undefined ? undefined : Number(rateText);
  if (rate !== undefined && !(rate > 0)) throw new Error('--rate must be > 0 (messages per second)');
  return {
    subscribers: values.subscribers.split(',').map((s) => int('subscribers', s.trim(), 1)),
    messages: int('messages', values.messages, 1),
    warmup: int('warmup', values.warmup, 0),
    transports: transports as Transport[],
    rate,
    deliveryRate: int('delivery-rate', values['delivery-rate'], 1),
    clientWorkers: int('client-workers', values['client-workers'], 1),
    concurrency: int('concurrency', values.concurrency, 1),
    settleMs: Number(values.settle) * 1000,
    longPollMax: int('long-poll-max', values['long-poll-max'], 0),
    timeoutS: int('timeout', values.timeout, 10),
    drainIdleMs: Number(values['drain-idle']) * 1000,
    quietWaitMs: Number(values['quiet-wait']) * 1000,
    serverNodeArgs: values['server-node-args'].split(' ').filter((a) => a !== ''),
    rawFrame: rawFrame(values['raw-frame']),
    json: values.json,
  };
}

// ---------------------------------------------------------------- helpers

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100
}

/** utime and stime of a process, in seconds (from /proc/<pid>/stat). */
function cpuSeconds(pid: number): { user: number; system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime field 15
  return { user: Number(fields[11]) / clockTicks, system: Number(fields[12]) / clockTicks };
}

/** Resident set size of a process in bytes (VmRSS from /proc/<pid>/status). */
function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  return match?.[1] === undefined ? Number.NaN : Number(match[1]) * 1024;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---------------------------------------------------------------- children

const { children, killAll } = childProcessRegistry((signal) => log(`\n${signal}: stopping children`));

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
    process.kill(child.pid, 'SIGTERM');
    const done = await Promise.race([exited(child).then(() => true), sleep(graceMs).then(() => false)]);
    if (!done && child.exitCode === null && child.signalCode === null) {
      process.kill(child.pid, 'SIGKILL');
      await exited(child);
    }
  }
  children.delete(child);
}

interface Server {
  child: ChildProcess;
  pid: number;
  port: number;
  /** `/api/publish` for Herald, `/publish` for the baseline */
  publishPath: string;
  apiKey: string | undefined;
  logLines: number;
  /** pino warn/error/fatal lines (or any non-JSON stderr), first few */
  problems: string[];
  problemCount: number;
  tail: string[];
  cleanup: () => void;
}

function startServer(target: Transport, nodeArgs: string[]): Promise<Server> {
  let child: ChildProcess;
  let apiKey: string | undefined;
  let cleanup = (): void => {};
  if (target === 'raw-ws') {
    child = spawn(process.execPath, [...nodeArgs, join(ROOT, 'bench/raw-ws-server.ts')], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'herald-bench-'));
    const configFile = join(dir, 'herald.json');
    apiKey = randomBytes(24).toString('base64url');
    const config = heraldBenchConfig();
    writeFileSync(configFile, JSON.stringify(config, null, 2), { mode: 0o600 });
    cleanup = () => rmSync(dir, { recursive: true, force: true });
    child = spawn(process.execPath, [...SOURCE_NODE_ARGS, ...nodeArgs, join(ROOT, 'packages/server/src/cli/main.ts'), 'serve', '--config', configFile], {
      cwd: ROOT,
      env: { ...process.env, ...benchSecrets(apiKey) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  }
  children.add(child);
  const pid = child.pid;
  if (pid === undefined) throw new Error('could not spawn the server');
  const server: Server = {
    child,
    pid,
    port: 0,
    publishPath: target === 'raw-ws' ? '/publish' : '/api/publish',
    apiKey,
    logLines: 0,
    problems: [],
    problemCount: 0,
    tail: [],
    cleanup,
  };
  const noteProblem = (line: string): void => {
    server.problemCount++;
    if (server.problems.length < 5) server.problems.push(line.slice(0, 400));
  };
  const started = new Promise<Server>((resolve, reject) => {
    let listening = false;
    const timer = setTimeout(() => {
      reject(new Error(`${target}: no "listening" log line within 30 s; last output:\n${server.tail.join('\n')}`));
    }, 30000);
    const stdout = child.stdout;
    const stderr = child.stderr;
    if (stdout === null || stderr === null) throw new Error('no stdio pipes');
    createInterface({ input: stdout }).on('line', (line) => {
      server.logLines++;
      server.tail.push(line.slice(0, 400));
      if (server.tail.length > 20) server.tail.shift();
      let entry: Record<string, unknown> | undefined;
      try {
        const parsed: unknown = JSON.parse(line);
        if (typeof parsed === 'object' && parsed !== null) entry = parsed as Record<string, unknown>;
      } catch {
        // not JSON
      }
      if (entry === undefined) return;
      if (typeof entry.level === 'number' && entry.level >= 40) noteProblem(line);
      if (!listening && entry.msg === 'listening' && typeof entry.port === 'number') {
        listening = true;
        server.port = entry.port;
        clearTimeout(timer);
        resolve(server);
      }
    });
    createInterface({ input: stderr }).on('line', (line) => {
      server.tail.push(`stderr: ${line.slice(0, 400)}`);
      if (server.tail.length > 20) server.tail.shift();
      noteProblem(`stderr: ${line}`);
    });
    child.once('exit', (code, signal) => {
      if (!listening) {
        clearTimeout(timer);
        reject(new Error(`${target}: server exited (${code ?? signal}) before listening; output:\n${server.tail.join('\n')}`));
      }
    });
  });
  // a server that never listened is stopped and its config removed here, since runOne never gets it
  return started.catch(async (err: unknown) => {
    await stopChild(child, 1000);
    cleanup();
    throw err;
  });
}

interface Waiter {
  resolve: (message: FromClient) => void;
  reject: (err: Error) => void;
}

interface Worker {
  child: ChildProcess;
  waiters: Map<string, Waiter>;
}

function forkWorker(): Worker {
  const child = fork(join(ROOT, 'bench/fanout-client.ts'), [], { cwd: ROOT, execPath: process.execPath, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  const worker: Worker = { child, waiters: new Map() };
  child.on('message', (message: FromClient) => {
    const waiter = worker.waiters.get(message.type);
    if (waiter !== undefined) {
      worker.waiters.delete(message.type);
      waiter.resolve(message);
    }
  });
  child.once('exit', (code, signal) => {
    for (const waiter of worker.waiters.values()) waiter.reject(new Error(`load generator exited (${code ?? signal})`));
    worker.waiters.clear();
  });
  return worker;
}

function ask<T extends FromClient>(worker: Worker, request: ToClient, answer: T['type'], timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    if (!worker.child.connected) {
      reject(new Error('load generator is gone'));
      return;
    }
    const timer = setTimeout(() => {
      worker.waiters.delete(answer);
      reject(new Error(`load generator did not answer "${request.type}" within ${timeoutMs} ms`));
    }, timeoutMs);
    worker.waiters.set(answer, {
      resolve: (message) => {
        clearTimeout(timer);
        resolve(message as T);
      },
      reject: (err) => {
        clearTimeout(timer);
        reject(err);
      },
    });
    worker.child.send(request);
  });
}

/** Busy CPU-seconds of the whole machine so far (all CPUs, from /proc/stat). */
function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: steal is time this VM did not run
  const busy = (v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[5] ?? 0) + (v[6] ?? 0);
  return busy / clockTicks;
}

function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

// ---------------------------------------------------------------- publishing

// One connection: publications are sent, and so numbered, in sequence order.
const publishAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function publishOnce(server: Server, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
    if (server.apiKey !== undefined) headers.authorization = `Bearer ${server.apiKey}`;
    const req = http.request({ host: '127.0.0.1', port: server.port, path: server.publishPath, method: 'POST', headers, agent: publishAgent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(200) : reject(new Error(`publish ${res.statusCode}: ${text.slice(0, 200)}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

interface PublishStats {
  errors: number;
  firstError: string | undefined;
  startUs: number;
}

/** Publishes seq first … first+count-1 at `rate` messages per second. */
async function publishPaced(server: Server, first: number, count: number, rate: number, rawFrame: Options['rawFrame']): Promise<PublishStats> {
  const stats: PublishStats = { errors: 0, firstError: undefined, startUs: nowUs() };
  const intervalMs = 1000 / rate;
  const start = performance.now();
  const inflight = new Set<Promise<void>>();
  for (let i = 0; i < count; i++) {
    const wait = start + i * intervalMs - performance.now();
    if (wait > 1) await sleep(wait);
    while (inflight.size >= 64) await Promise.race(inflight);
    const payload = makePayload(first + i, nowUs());
    const body =
      server.apiKey !== undefined
        ? `{"channel":"${CHANNEL}","data":${payload}}`
        : rawFrame === 'envelope'
          ? `{"push":"publication","channel":"${CHANNEL}","offset":${first + i + 1},"data":${payload}}`
          : payload;
    const p: Promise<void> = publishOnce(server, body)
      .catch((err: unknown) => {
        // a kept-alive socket the server just closed: one retry
        const code = (err as { code?: unknown }).code;
        if (code === 'ECONNRESET' || code === 'EPIPE') return publishOnce(server, body);
        throw err;
      })
      .then(
        () => undefined,
        (err: unknown) => {
          stats.errors++;
          stats.firstError ??= errorText(err);
        },
      )
      .finally(() => inflight.delete(p));
    inflight.add(p);
  }
  await Promise.all(inflight);
  return stats;
}

// ---------------------------------------------------------------- one run

interface Result {
  target: Transport;
  subscribers: number;
  ready: number;
  failed: number;
  messages: number;
  rate: number;
  expected: number;
  delivered: number;
  ratio: number;
  warmupRatio: number;
  deliveriesPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  serverCpuS: number;
  serverUserS: number;
  serverSystemS: number;
  /** server CPU-seconds per wall-second of the publish phase (1.0 = one core busy) */
  serverCores: number;
  cpuSPerMillion: number;
  clientCpuS: number;
  /** CPU-seconds used by processes outside this benchmark during the publish phase */
  otherCpuS: number;
  /** the same per wall-second: cores busy with unrelated work */
  otherCores: number;
  /** seconds from the first publish request to the last publish answer */
  publishS: number;
  rssStartMiB: number;
  rssIdleMiB: number;
  idleKiBPerConnection: number;
  connectS: number;
  publishErrors: number;
  duplicates: number;
  outOfOrder: number;
  complete: number;
  closed: number;
  closeReasons: Record<string, number>;
  otherFrames: Record<string, number>;
  polls: number;
  serverLogLines: number;
  serverProblems: string[];
  notes: string[];
}

/**
 * Other work on the machine (builds, tests) skews latency and, less, CPU per
 * delivery. Before a run, wait up to --quiet-wait for the CPUs to be mostly
 * idle (< 0.3 busy cores over one second); returns a note when they were not.
 */
async function waitForQuiet(maxMs: number): Promise<string | undefined> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    const before = machineBusySeconds();
    const selfBefore = selfCpuSeconds();
    await sleep(1000);
    const busy = machineBusySeconds() - before - (selfCpuSeconds() - selfBefore);
    if (busy < 0.3) return undefined;
    if (Date.now() >= deadline) return `machine not idle before the run: ${busy.toFixed(2)} cores busy with other processes`;
  }
}

async function runOne(target: Transport, n: number, options: Options, rate: number): Promise<Result> {
  const notes: string[] = [];
  if (options.quietWaitMs > 0) {
    const note = await waitForQuiet(options.quietWaitMs);
    if (note !== undefined) {
      notes.push(note);
      log(`  ${note}`);
    }
  }
  const server = await startServer(target, options.serverNodeArgs);
  const workers: Worker[] = [];
  try {
    await sleep(1500);
    const rssStart = rssBytes(server.pid);
    const workerCount = Math.max(1, Math.min(options.clientWorkers, n));
    for (let i = 0; i < workerCount; i++) workers.push(forkWorker());
    const connectBegan = Date.now();
    const connectTimeoutMs = Math.max(60000, n * 20);
    const connected = await Promise.all(
      workers.map((w, i) =>
        ask<ConnectedMessage>(
          w,
          {
            type: 'start',
            transport: target,
            hostPort: `127.0.0.1:${server.port}`,
            count: Math.floor(n / workerCount) + (i < n % workerCount ? 1 : 0),
            concurrency: Math.max(1, Math.floor(options.concurrency / workerCount)),
            warmup: options.warmup,
            messages: options.messages,
            connectTimeoutMs: 30000,
          },
          'connected',
          connectTimeoutMs,
        ),
      ),
    );
    const connectS = (Date.now() - connectBegan) / 1000;
    const ready = connected.reduce((a, c) => a + c.ready, 0);
    const failed = connected.reduce((a, c) => a + c.failed, 0);
    if (failed > 0) notes.push(`${failed} subscribers failed to connect: ${connected.flatMap((c) => c.failures).slice(0, 3).join(' | ')}`);
    log(`  ${target} N=${n}: ${ready} subscribed in ${connectS.toFixed(1)} s${failed > 0 ? `, ${failed} failed` : ''}; settling ${options.settleMs / 1000} s`);
    await sleep(options.settleMs);
    // median of three samples half a second apart
    const idleSamples: number[] = [];
    for (let i = 0; i < 3; i++) {
      if (i > 0) await sleep(500);
      idleSamples.push(rssBytes(server.pid));
    }
    const rssIdle = idleSamples.sort((a, b) => a - b)[1] ?? Number.NaN;

    const status = async (): Promise<StatusMessage[]> => Promise.all(workers.map((w) => ask<StatusMessage>(w, { type: 'status' }, 'status', 10000)));

    // warm-up: JIT and buffers, not measured
    if (options.warmup > 0) {
      const warm = await publishPaced(server, 0, options.warmup, rate, options.rawFrame);
      if (warm.errors > 0) notes.push(`warm-up publish errors: ${warm.errors} (${warm.firstError ?? ''})`);
      const deadline = Date.now() + 10000;
      while (Date.now() < deadline) {
        const s = await status();
        if (s.reduce((a, x) => a + x.warmup, 0) >= ready * options.warmup) break;
        await sleep(100);
      }
      await sleep(500);
    }

    // measured phase
    const before = await status();
    const clientCpuBefore = before.reduce((a, s) => a + s.cpuUs, 0);
    const cpuBefore = cpuSeconds(server.pid);
    const machineBefore = machineBusySeconds();
    const selfBefore = selfCpuSeconds();
    const expected = ready * options.messages;
    log(`  ${target} N=${n}: publishing ${options.messages} × ${PAYLOAD_BYTES} B at ${rate.toFixed(1)} msg/s`);
    const published = await publishPaced(server, options.warmup, options.messages, rate, options.rawFrame);
    const publishS = (nowUs() - published.startUs) / 1e6;
    if (published.errors > 0) notes.push(`publish errors: ${published.errors} (${published.firstError ?? ''})`);
    let last = -1;
    let lastProgress = Date.now();
    for (;;) {
      const s = await status();
      const got = s.reduce((a, x) => a + x.measured, 0);
      if (got >= expected) break;
      if (got !== last) {
        last = got;
        lastProgress = Date.now();
      } else if (Date.now() - lastProgress > options.drainIdleMs) {
        notes.push(`stopped waiting: no delivery for ${options.drainIdleMs / 1000} s with ${expected - got} missing`);
        break;
      }
      if (server.child.exitCode !== null || server.child.signalCode !== null) {
        notes.push('server exited during the publish phase');
        break;
      }
      await sleep(100);
    }
    const cpuAfter = cpuSeconds(server.pid);
    const cpuEndUs = nowUs();
    const machineAfter = machineBusySeconds();
    const selfAfter = selfCpuSeconds();
    const reports = await Promise.all(workers.map((w) => ask<ReportMessage>(w, { type: 'report' }, 'report', 30000)));

    const histogram = newHistogram();
    for (const r of reports) merge(histogram, r.histogram);
    const delivered = reports.reduce((a, r) => a + r.measured, 0);
    const warmupDelivered = reports.reduce((a, r) => a + r.warmup, 0);
    const lastDeliveryUs = Math.max(...reports.map((r) => r.lastDeliveryUs));
    const durationS = (lastDeliveryUs - published.startUs) / 1e6;
    const closeReasons: Record<string, number> = {};
    const otherFrames: Record<string, number> = {};
    for (const r of reports) {
      for (const [k, v] of Object.entries(r.closeReasons)) closeReasons[k] = (closeReasons[k] ?? 0) + v;
      for (const [k, v] of Object.entries(r.otherFrames)) otherFrames[k] = (otherFrames[k] ?? 0) + v;
    }
    const serverUserS = cpuAfter.user - cpuBefore.user;
    const serverSystemS = cpuAfter.system - cpuBefore.system;
    const serverCpuS = serverUserS + serverSystemS;
    const clientCpuS = (reports.reduce((a, r) => a + r.cpuUs, 0) - clientCpuBefore) / 1e6;
    const otherCpuS = Math.max(0, machineAfter - machineBefore - serverCpuS - clientCpuS - (selfAfter - selfBefore));
    const result: Result = {
      target,
      subscribers: n,
      ready,
      failed,
      messages: options.messages,
      rate,
      expected: n * options.messages,
      delivered,
      ratio: delivered / (n * options.messages),
      warmupRatio: options.warmup === 0 ? 1 : warmupDelivered / (n * options.warmup),
      deliveriesPerSecond: durationS > 0 ? delivered / durationS : 0,
      p50Ms: quantile(histogram, 0.5) / 1000,
      p99Ms: quantile(histogram, 0.99) / 1000,
      maxMs: quantile(histogram, 1) / 1000,
      serverCpuS,
      serverUserS,
      serverSystemS,
      serverCores: serverCpuS / ((cpuEndUs - published.startUs) / 1e6),
      cpuSPerMillion: delivered > 0 ? (serverCpuS / delivered) * 1e6 : Number.NaN,
      clientCpuS,
      otherCpuS,
      otherCores: otherCpuS / ((cpuEndUs - published.startUs) / 1e6),
      publishS,
      rssStartMiB: rssStart / 2 ** 20,
      rssIdleMiB: rssIdle / 2 ** 20,
      idleKiBPerConnection: ready > 0 ? (rssIdle - rssStart) / 1024 / ready : Number.NaN,
      connectS,
      publishErrors: published.errors,
      duplicates: reports.reduce((a, r) => a + r.duplicates, 0),
      outOfOrder: reports.reduce((a, r) => a + r.outOfOrder, 0),
      complete: reports.reduce((a, r) => a + r.complete, 0),
      closed: reports.reduce((a, r) => a + r.closed, 0),
      closeReasons,
      otherFrames,
      polls: reports.reduce((a, r) => a + r.polls, 0),
      serverLogLines: server.logLines,
      serverProblems: server.problems,
      notes,
    };
    if (server.problemCount > 0) notes.push(`server logged ${server.problemCount} warn/error lines`);
    log(
      `  ${target} N=${n}: ratio ${result.ratio.toFixed(4)}, ${Math.round(result.deliveriesPerSecond)} deliveries/s, ` +
        `p50 ${result.p50Ms.toFixed(1)} ms, p99 ${result.p99Ms.toFixed(1)} ms, ` +
        `${result.cpuSPerMillion.toFixed(2)} CPU-s/M, ${result.idleKiBPerConnection.toFixed(1)} KiB/conn`,
    );
    for (const note of notes) log(`    note: ${note}`);
    return result;
  } finally {
    for (const w of workers) {
      if (w.child.connected) w.child.send({ type: 'stop' } satisfies ToClient);
    }
    await Promise.all(workers.map((w) => Promise.race([exited(w.child), sleep(5000)])));
    for (const w of workers) await stopChild(w.child, 1000);
    await stopChild(server.child, 5000);
    server.cleanup();
  }
}

// ---------------------------------------------------------------- report

function fmt(n: number, digits: number): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a';
}

function times(ratio: number): string {
  return Number.isFinite(ratio) ? `${ratio.toFixed(2)}×` : 'no baseline';
}

function table(results: Result[]): string {
  const lines = [
    '| transport | subscribers | msg/s | deliveries/s | delivery ratio | p50 ms | p99 ms | server CPU-s per 1M deliveries | idle KiB per connection | connect s | other load (cores) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    lines.push(
      `| ${r.target} | ${r.ready}${r.failed > 0 ? ` (+${r.failed} failed)` : ''} | ${fmt(r.rate, 1)} | ${Math.round(r.deliveriesPerSecond)} | ${fmt(r.ratio, 4)} | ` +
        `${fmt(r.p50Ms, 1)} | ${fmt(r.p99Ms, 1)} | ${fmt(r.cpuSPerMillion, 2)} | ${fmt(r.idleKiBPerConnection, 1)} | ${fmt(r.connectS, 1)} | ${fmt(r.otherCores, 2)} |`,
    );
  }
  return lines.join('\n');
}

const TARGETS: Record<string, { cpu?: number; memory?: number }> = {
  websocket: { cpu: 1.1, memory: 1.2 },
  sse: { cpu: 1.2 },
  'long-poll': {},
};

function ratios(results: Result[]): string {
  const lines = [
    '| transport | subscribers | CPU per delivery vs raw ws | target | memory per connection vs raw ws | target | ratio 1.0 |',
    '|---|---:|---:|---|---:|---|---|',
  ];
  for (const r of results) {
    if (r.target === 'raw-ws') continue;
    const base = results.find((b) => b.target === 'raw-ws' && b.subscribers === r.subscribers);
    const target = TARGETS[r.target] ?? {};
    const cpu = base === undefined ? Number.NaN : r.cpuSPerMillion / base.cpuSPerMillion;
    const mem = base === undefined ? Number.NaN : r.idleKiBPerConnection / base.idleKiBPerConnection;
    const verdict = (value: number, limit: number | undefined): string =>
      limit === undefined ? '—' : !Number.isFinite(value) ? 'no baseline' : `≤ ${limit} ${value <= limit ? 'met' : '**missed**'}`;
    lines.push(
      `| ${r.target} | ${r.subscribers} | ${times(cpu)} | ${verdict(cpu, target.cpu)} | ${times(mem)} | ${verdict(mem, target.memory)} | ${r.ratio === 1 ? 'met' : '**missed**'} |`,
    );
  }
  return lines.join('\n');
}

function details(results: Result[]): string {
  const lines: string[] = [];
  for (const r of results) {
    const extra: string[] = [
      `server CPU ${fmt(r.serverCpuS, 2)} s (user ${fmt(r.serverUserS, 2)}, system ${fmt(r.serverSystemS, 2)}; ${fmt(r.serverCores, 2)} cores busy)`,
      `load-generator CPU ${fmt(r.clientCpuS, 2)} s`,
      `other processes CPU ${fmt(r.otherCpuS, 2)} s`,
      `publishing took ${fmt(r.publishS, 1)} s`,
      `RSS ${fmt(r.rssStartMiB, 1)} → ${fmt(r.rssIdleMiB, 1)} MiB`,
      `max latency ${fmt(r.maxMs, 1)} ms`,
      `complete subscribers ${r.complete}/${r.ready}`,
      `warm-up ratio ${fmt(r.warmupRatio, 4)}`,
      `server log lines ${r.serverLogLines}`,
    ];
    if (r.polls > 0) extra.push(`polls ${r.polls}`);
    if (r.duplicates > 0) extra.push(`duplicates ${r.duplicates}`);
    if (r.outOfOrder > 0) extra.push(`out of order ${r.outOfOrder}`);
    if (r.publishErrors > 0) extra.push(`publish errors ${r.publishErrors}`);
    if (r.closed > 0) extra.push(`connections lost ${r.closed} ${JSON.stringify(r.closeReasons)}`);
    if (Object.keys(r.otherFrames).length > 0) extra.push(`other frames ${JSON.stringify(r.otherFrames)}`);
    lines.push(`- ${r.target} N=${r.subscribers}: ${extra.join('; ')}`);
    for (const note of r.notes) lines.push(`  - note: ${note}`);
    for (const p of r.serverProblems) lines.push(`  - server: ${p}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const options = parseOptions();
  const hardTimer = setTimeout(() => {
    log(`\nhard timeout of ${options.timeoutS} s reached: stopping everything`);
    killAll();
    process.exit(1);
  }, options.timeoutS * 1000);
  hardTimer.unref();

  const began = Date.now();
  log(
    `fan-out benchmark: subscribers ${options.subscribers.join(', ')}; ${options.messages} messages of ${PAYLOAD_BYTES} B ` +
      `(+${options.warmup} warm-up); transports ${options.transports.join(', ')}; ${options.clientWorkers} load-generator processes; ` +
      `${cpus().length} CPUs; node ${process.version}; CLK_TCK ${clockTicks}`,
  );
  const results: Result[] = [];
  const skipped: string[] = [];
  for (const n of options.subscribers) {
    const rate = options.rate ?? options.deliveryRate / n;
    for (const target of options.transports) {
      if (target === 'long-poll' && n > options.longPollMax) {
        skipped.push(
          `long-poll N=${n} skipped: long polling runs only up to --long-poll-max=${options.longPollMax} subscribers by default, ` +
            'because one HTTP round trip per subscriber per message does not fit on 2 cores at 10 000; pass --long-poll-max=10000 to run it',
        );
        log(`  ${skipped[skipped.length - 1] ?? ''}`);
        continue;
      }
      try {
        results.push(await runOne(target, n, options, rate));
      } catch (err) {
        const message = `${target} N=${n} failed: ${errorText(err)}`;
        skipped.push(message);
        log(`  ${message}`);
      }
    }
  }
  const out = [
    `subscribers ${options.subscribers.join(', ')}; ${options.messages} messages of ${PAYLOAD_BYTES} B (+${options.warmup} warm-up); ` +
      `${options.rate === undefined ? `${options.deliveryRate} deliveries/s offered` : `${options.rate} msg/s`}; ` +
      `raw baseline frame: ${options.rawFrame}; ${options.clientWorkers} load-generator processes; ${cpus().length} CPUs; node ${process.version}`,
    '',
    table(results),
    '',
    ratios(results),
    '',
    details(results),
    ...(skipped.length > 0 ? ['', ...skipped.map((s) => `- ${s}`)] : []),
    '',
    `total time ${((Date.now() - began) / 1000).toFixed(0)} s`,
  ];
  console.log(out.join('\n'));
  if (options.json !== undefined) {
    writeFileSync(options.json, JSON.stringify({ options, cpus: cpus().length, node: process.version, results, skipped }, null, 2));
  }
  clearTimeout(hardTimer);
  publishAgent.destroy();
  process.exit(skipped.some((s) => s.includes('failed')) ? 1 : 0);
}

main().catch((err: unknown) => {
  log(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  killAll();
  process.exit(1);
});
