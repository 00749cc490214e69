/**
 * Redis engine vs memory engine, in one run on loopback. For each engine a
 * `herald serve` child process is started (the Redis engine on a private
 * `redis-server` this script starts on a spare port, or on --redis-url), and
 * three things are measured:
 *
 * 1. publish throughput: --publishers concurrent HTTP clients (one keep-alive
 *    connection each) publish 100-byte payloads to one channel through
 *    `/api/publish` for --publish-seconds; publishes/s and API latency;
 * 2. fan-out: --subscribers WebSocket subscribers of `bench:fanout` (opened by
 *    the fan-out benchmark's load generator, bench/fanout-client.ts, in its own
 *    process) receive --messages publications sent at --rate per second
 *    (20/s × 500 = 10 000 deliveries/s offered, what one 2-core machine
 *    sustains without queueing, as in bench/fanout.ts);
 *    deliveries/s, publish → delivery latency (p50, p99, max) and
 *    completeness; then --max-rate per second (3 s worth), more than the
 *    machine carries: the deliveries/s achieved is the fan-out capacity;
 * 3. subscribe cost with many channels: --channels distinct channels
 *    subscribed over WebSocket (128 per connection), latency of each
 *    `subscribe` (p50, p99) and, for Redis, the number of pub/sub channels
 *    Redis then holds (one SUBSCRIBE per Herald channel with local subscribers);
 * 4. drain (both engines): SIGTERM to a node with --drain-clients WebSocket,
 *    SSE and long-poll clients each (the long-poll ones polling in a loop,
 *    so some are between two polls): time until the last client is told 3001
 *    and until the process exits, and the exit time of a node without
 *    clients in the same round (the baseline);
 * 5. recovery after a Redis restart (Redis engine, private Redis only): Redis
 *    is stopped (saving its data) for --outage-seconds and started again on
 *    the same port while a publisher and a recovering WebSocket subscriber
 *    run; times from Redis answering PING again (how long Redis itself took
 *    to start is the baseline) to the first acknowledged publish, the first
 *    delivery, `/health` 200, and the subscriber's `recovered: true`.
 *
 * Phases 1–3 are "throughput"; --phases picks (default: all three groups).
 * The chaos and shutdown tests assert only what happens, in what order; how
 * fast it happens is measured here.
 *
 * Server and Redis CPU are read from /proc, and so is the CPU every other
 * process of the machine used meanwhile ("others"). The engines alternate for
 * --rounds rounds; the table gives, per phase, the medians over the rounds in
 * which other processes stayed under 0.3 cores, and the ratios redis/memory.
 *
 *   node bench/redis.ts [--rounds=3] [--subscribers=500] [--messages=400] [--rate=20] [--max-rate=200]
 *     [--publishers=8] [--publish-seconds=5] [--channels=1000]
 *     [--redis-url=redis://127.0.0.1:PORT] [--quiet-wait=60] [--json=FILE]
 *     [--phases=throughput,drain,recovery] [--drain-clients=100] [--outage-seconds=5]
 *
 * It first waits (up to --quiet-wait seconds) until the machine is idle, and
 * reports the CPU other processes used during each phase ("others").
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { childProcessRegistry, benchSecrets, heraldBenchConfig, makePayload, newHistogram, nowUs, quantile, record, type ConnectedMessage, type FromClient, type ReportMessage, type StatusMessage, type ToClient } from './lib.ts';
import { SOURCE_NODE_ARGS } from '../packages/server/test/helpers/source.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const log = (line: string): void => void process.stderr.write(`${line}\n`);

const { values } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '500' },
    messages: { type: 'string', default: '400' },
    rounds: { type: 'string', default: '3' },
    rate: { type: 'string', default: '20' },
    'max-rate': { type: 'string', default: '200' },
    warmup: { type: 'string', default: '20' },
    publishers: { type: 'string', default: '8' },
    'publish-seconds': { type: 'string', default: '5' },
    channels: { type: 'string', default: '1000' },
    'redis-url': { type: 'string' },
    'quiet-wait': { type: 'string', default: '60' },
    json: { type: 'string' },
    phases: { type: 'string', default: 'throughput,drain,recovery' },
    'drain-clients': { type: 'string', default: '100' },
    'outage-seconds': { type: 'string', default: '5' },
  },
});
const options = {
  subscribers: Number(values.subscribers),
  messages: Number(values.messages),
  rounds: Number(values.rounds),
  rate: Number(values.rate),
  maxRate: Number(values['max-rate']),
  warmup: Number(values.warmup),
  publishers: Number(values.publishers),
  publishSeconds: Number(values['publish-seconds']),
  channels: Number(values.channels),
  redisUrl: values['redis-url'],
  quietWaitS: Number(values['quiet-wait']),
  json: values.json,
  phases: new Set(values.phases.split(',')),
  drainClients: Number(values['drain-clients']),
  outageSeconds: Number(values['outage-seconds']),
};

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100
}

/** utime + stime of a process in seconds. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / clockTicks;
  } catch {
    return 0;
  }
}

/** Busy CPU-seconds of the whole machine so far (all CPUs, from /proc/stat). */
function machineBusySeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  return ((v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[5] ?? 0) + (v[6] ?? 0)) / clockTicks;
}

/**
 * CPU of the given processes over a window, and of everything else on the
 * machine (other processes distort the numbers: the report shows them).
 */
function cpuWindow(pids: readonly (number | undefined)[]): () => { cores: number[]; otherCores: number; seconds: number } {
  const t0 = nowUs();
  const machine0 = machineBusySeconds();
  const ours0 = pids.map(cpuSeconds);
  const self0 = process.cpuUsage();
  return () => {
    const seconds = (nowUs() - t0) / 1e6;
    const ours = pids.map((pid, i) => cpuSeconds(pid) - ours0[i]!);
    const self = process.cpuUsage(self0);
    const known = ours.reduce((a, b) => a + b, 0) + (self.user + self.system) / 1e6;
    return { cores: ours.map((c) => c / seconds), otherCores: Math.max(0, machineBusySeconds() - machine0 - known) / seconds, seconds };
  };
}

/** Waits (up to `maxMs`) until processes other than this one use less than 0.3 cores over 3 s. */
async function waitForQuiet(maxMs: number): Promise<number> {
  const deadline = Date.now() + maxMs;
  for (;;) {
    const window = cpuWindow([]);
    await sleep(3000);
    const busy = window().otherCores;
    if (busy < 0.3 || Date.now() >= deadline) return busy;
  }
}

const { children, killAll } = childProcessRegistry();

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

// ---------------------------------------------------------------- Redis

interface PrivateRedis {
  readonly url: string;
  /** The redis-server process (a new one after `restart`); undefined with --redis-url. */
  readonly pid: number | undefined;
  /**
   * Private Redis only: stops it with SHUTDOWN SAVE (its data survives),
   * waits `outageMs`, starts it again on the same port and directory.
   * Returns when it was launched and when it answered PING (nowUs).
   */
  readonly restart?: (outageMs: number) => Promise<{ launchedUs: number; readyUs: number }>;
  stop(): void;
}

async function waitForPing(url: string): Promise<void> {
  const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  probe.on('error', () => {});
  const deadline = Date.now() + 10000;
  for (;;) {
    try {
      await probe.connect();
      await probe.ping();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error('redis-server did not start (is it installed?)');
      probe.disconnect();
      await sleep(10);
    }
  }
  probe.disconnect();
}

async function startRedis(): Promise<PrivateRedis> {
  if (options.redisUrl !== undefined) return { url: options.redisUrl, pid: undefined, stop: () => {} };
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-redis-'));
  const launch = (): ChildProcess => {
    const launched = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', dir, '--loglevel', 'warning'], {
      stdio: 'ignore',
    });
    children.add(launched);
    return launched;
  };
  let child = launch();
  const url = `redis://127.0.0.1:${port}`;
  await waitForPing(url);
  return {
    url,
    get pid() {
      return child.pid;
    },
    async restart(outageMs) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      const admin = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
      admin.on('error', () => {});
      await admin.connect();
      await admin.call('SHUTDOWN', 'SAVE').catch(() => undefined);
      admin.disconnect();
      await exited;
      await sleep(outageMs);
      const launchedUs = nowUs();
      child = launch();
      await waitForPing(url);
      return { launchedUs, readyUs: nowUs() };
    },
    stop: () => {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------- Herald

type Engine = 'memory' | 'redis';

interface Server {
  readonly engine: Engine;
  readonly child: ChildProcess;
  readonly port: number;
  readonly apiKey: string;
  readonly prefix: string;
  /** nowUs() when the process exited. */
  readonly exited: Promise<number>;
  /** The `stopped` log line, once logged (its `drained`: everything closed before the drain timeout). */
  stopped(): Record<string, unknown> | undefined;
  stop(): Promise<void>;
}

async function startHerald(engine: Engine, redisUrl: string): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-'));
  const configFile = join(dir, 'herald.json');
  const apiKey = randomBytes(24).toString('base64url');
  const prefix = `herald-bench-${randomBytes(4).toString('hex')}`;
  writeFileSync(
    configFile,
    JSON.stringify({
      ...heraldBenchConfig(),
      stateDir: dir,
      log: { level: 'warn' },
      engine: engine === 'redis' ? { type: 'redis', redisUrl, redisPrefix: prefix } : { type: 'memory' },
    }),
    { mode: 0o600 },
  );
  const child = spawn(process.execPath, [...SOURCE_NODE_ARGS, join(ROOT, 'packages/server/src/cli/main.ts'), 'serve', '--config', configFile], {
    cwd: ROOT,
    env: { ...process.env, ...benchSecrets(apiKey), HERALD_LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  const tail: string[] = [];
  let stopped: Record<string, unknown> | undefined;
  const exited = new Promise<number>((resolve) => child.once('exit', () => resolve(nowUs())));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${engine}: no "listening" within 30 s:\n${tail.join('\n')}`)), 30000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      tail.push(line.slice(0, 300));
      if (tail.length > 20) tail.shift();
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        if (entry['msg'] === 'stopped') stopped = entry;
        if (entry['msg'] === 'listening' && typeof entry['port'] === 'number') {
          clearTimeout(timer);
          resolve(entry['port']);
        }
      } catch {
        // not JSON
      }
    });
    createInterface({ input: child.stderr! }).on('line', (line) => tail.push(line.slice(0, 300)));
    child.once('exit', (code) => reject(new Error(`${engine}: herald exited (${code}):\n${tail.join('\n')}`)));
  });
  return {
    engine,
    child,
    port,
    apiKey,
    prefix,
    exited,
    stopped: () => stopped,
    async stop() {
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(10000)]);
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function publish(server: Server, agent: http.Agent, channel: string, data: string): Promise<number> {
  const body = `{"channel":${JSON.stringify(channel)},"data":${data}}`;
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port: server.port,
        path: '/api/publish',
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), authorization: `Bearer ${server.apiKey}` },
      },
      (response) => {
        response.resume();
        response.on('end', () => resolve(response.statusCode ?? 0));
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}

// ---------------------------------------------------------------- phases

interface PublishResult {
  readonly publishes: number;
  readonly errors: number;
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly serverCores: number;
  readonly redisCores: number;
  /** CPU used by processes outside the benchmark meanwhile. */
  readonly otherCores: number;
}

async function publishThroughput(server: Server, redisPid: number | undefined): Promise<PublishResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.publishers });
  const histogram = newHistogram();
  const payload = makePayload(0, 0);
  // warm-up
  for (let i = 0; i < 200; i++) await publish(server, agent, 'bench:throughput', payload);
  let publishes = 0;
  let errors = 0;
  const window = cpuWindow([server.child.pid, redisPid]);
  const started = nowUs();
  const end = started + options.publishSeconds * 1e6;
  await Promise.all(
    Array.from({ length: options.publishers }, async () => {
      while (nowUs() < end) {
        const t = nowUs();
        const status = await publish(server, agent, 'bench:throughput', payload);
        record(histogram, nowUs() - t);
        if (status === 200) publishes++;
        else errors++;
      }
    }),
  );
  const seconds = (nowUs() - started) / 1e6;
  const cpu = window();
  agent.destroy();
  return {
    publishes,
    errors,
    perSecond: publishes / seconds,
    p50Ms: quantile(histogram, 0.5) / 1000,
    p99Ms: quantile(histogram, 0.99) / 1000,
    serverCores: cpu.cores[0]!,
    redisCores: cpu.cores[1]!,
    otherCores: cpu.otherCores,
  };
}

interface FanoutResult {
  readonly subscribers: number;
  readonly deliveries: number;
  readonly expected: number;
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly complete: number;
  readonly duplicates: number;
  readonly outOfOrder: number;
  readonly closed: number;
  readonly serverCores: number;
  readonly redisCores: number;
  readonly otherCores: number;
  /** p99 of the publish API call itself (queued behind the previous one: one connection). */
  readonly apiP99Ms: number;
}

async function fanout(server: Server, redisPid: number | undefined, rate: number, messages: number): Promise<FanoutResult> {
  const worker = fork(join(ROOT, 'bench/fanout-client.ts'), [], { cwd: ROOT, execPath: process.execPath, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(worker);
  const waiters = new Map<string, (message: FromClient) => void>();
  worker.on('message', (message: FromClient) => {
    const waiter = waiters.get(message.type);
    waiters.delete(message.type);
    waiter?.(message);
  });
  const ask = <T extends FromClient>(request: ToClient, answer: T['type'], timeoutMs: number): Promise<T> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`load generator did not answer ${request.type}`)), timeoutMs);
      waiters.set(answer, (message) => {
        clearTimeout(timer);
        resolve(message as T);
      });
      worker.send(request);
    });
  const n = options.subscribers;
  const connected = await ask<ConnectedMessage>(
    { type: 'start', transport: 'websocket', hostPort: `127.0.0.1:${server.port}`, count: n, concurrency: 50, warmup: options.warmup, messages, connectTimeoutMs: 20000 },
    'connected',
    120000,
  );
  if (connected.failed > 0) log(`  ${server.engine}: ${connected.failed} subscribers failed: ${connected.failures.join('; ')}`);
  await sleep(1000);
  // One publisher connection: publications are numbered in send order.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const apiHistogram = newHistogram();
  const send = async (first: number, count: number): Promise<number> => {
    const interval = 1e6 / rate;
    const start = nowUs();
    const inFlight: Promise<unknown>[] = [];
    for (let i = 0; i < count; i++) {
      const due = start + i * interval;
      const wait = due - nowUs();
      if (wait > 1000) await sleep(wait / 1000);
      const t = nowUs();
      inFlight.push(publish(server, agent, 'bench:fanout', makePayload(first + i, t)).then(() => record(apiHistogram, nowUs() - t)));
    }
    await Promise.all(inFlight);
    return start;
  };
  await send(0, options.warmup);
  await sleep(500);
  const window = cpuWindow([server.child.pid, redisPid, worker.pid]);
  const startUs = await send(options.warmup, messages);
  const expected = connected.ready * messages;
  let last = -1;
  let idleSince = Date.now();
  for (;;) {
    const status = await ask<StatusMessage>({ type: 'status' }, 'status', 10000);
    if (status.measured >= expected) break;
    if (status.measured !== last) {
      last = status.measured;
      idleSince = Date.now();
    } else if (Date.now() - idleSince > 5000) break;
    await sleep(100);
  }
  const report = await ask<ReportMessage>({ type: 'report' }, 'report', 10000);
  const seconds = (report.lastDeliveryUs - startUs) / 1e6;
  const cpu = window();
  worker.send({ type: 'stop' } satisfies ToClient);
  agent.destroy();
  return {
    subscribers: connected.ready,
    deliveries: report.measured,
    expected,
    perSecond: report.measured / seconds,
    p50Ms: quantile(report.histogram, 0.5) / 1000,
    p99Ms: quantile(report.histogram, 0.99) / 1000,
    maxMs: quantile(report.histogram, 1) / 1000,
    complete: report.complete,
    duplicates: report.duplicates,
    outOfOrder: report.outOfOrder,
    closed: report.closed,
    serverCores: cpu.cores[0]!,
    redisCores: cpu.cores[1]!,
    otherCores: cpu.otherCores,
    apiP99Ms: quantile(apiHistogram, 0.99) / 1000,
  };
}

interface SubscribeResult {
  readonly channels: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly totalMs: number;
  /** Redis pub/sub channels under the node's prefix after subscribing (Redis only). */
  readonly redisChannels: number | undefined;
}

async function manyChannels(server: Server, redisUrl: string): Promise<SubscribeResult> {
  const perConnection = 128;
  const histogram = newHistogram();
  const sockets: WebSocket[] = [];
  const started = nowUs();
  for (let first = 0; first < options.channels; first += perConnection) {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/connection/websocket`, { perMessageDeflate: false });
    sockets.push(ws);
    const replies = new Map<number, () => void>();
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { id?: number; error?: unknown };
      if (frame.error !== undefined) throw new Error(`reply ${JSON.stringify(frame)}`);
      if (frame.id !== undefined) replies.get(frame.id)?.();
    });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    const call = (id: number, method: string, params: unknown) =>
      new Promise<void>((resolve) => {
        replies.set(id, resolve);
        ws.send(JSON.stringify({ id, method, params }));
      });
    await call(1, 'connect', {});
    // One subscribe at a time per connection: the latency of each.
    for (let i = first; i < Math.min(first + perConnection, options.channels); i++) {
      const t = nowUs();
      await call(i + 2, 'subscribe', { channel: `bench:many-${i}` });
      record(histogram, nowUs() - t);
    }
  }
  const totalMs = (nowUs() - started) / 1000;
  let redisChannels: number | undefined;
  if (server.engine === 'redis') {
    const redis = new Redis(redisUrl);
    redisChannels = (await redis.pubsub('CHANNELS', `${server.prefix}:ch:*`)).length;
    redis.disconnect();
  }
  for (const ws of sockets) ws.terminate();
  return { channels: options.channels, p50Ms: quantile(histogram, 0.5) / 1000, p99Ms: quantile(histogram, 0.99) / 1000, totalMs, redisChannels };
}

// ---------------------------------------------------------------- drain and recovery

/** POSTs JSON to the server; resolves with the status and the parsed answer (never rejects: status 0 on a failure). */
function postJson(port: number, agent: http.Agent, path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
  const text = JSON.stringify(body);
  return new Promise((resolve) => {
    const request = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...headers },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (chunk: Buffer) => chunks.push(chunk));
        response.on('end', () => {
          let parsed: unknown;
          try {
            parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            parsed = undefined;
          }
          resolve({ status: response.statusCode ?? 0, body: parsed });
        });
        response.on('error', () => resolve({ status: 0, body: undefined }));
      },
    );
    request.on('error', () => resolve({ status: 0, body: undefined }));
    request.end(text);
  });
}

interface DrainResult {
  /** Clients per transport (WebSocket, SSE, long polling). */
  readonly clients: number;
  /** Clients told 3001, of 3 × clients. */
  readonly told: number;
  /** SIGTERM → the last client told 3001 (ms). */
  readonly lastToldMs: number;
  /** SIGTERM → process exit (ms). */
  readonly exitMs: number;
  /** SIGTERM → exit of a node of the same engine without clients, in the same round (the baseline, ms). */
  readonly idleExitMs: number;
  /** The node's `stopped` line: everything closed before the drain timeout. */
  readonly drained: boolean;
}

/** Opens `count` clients of each transport on `bench:drain`; `onTold` is called once per client told 3001. */
async function drainClients(port: number, count: number, onTold: () => void): Promise<{ stop(): void }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const sockets: WebSocket[] = [];
  const requests: http.ClientRequest[] = [];
  let stopped = false;
  const opened: Promise<void>[] = [];
  for (let i = 0; i < count; i++) {
    opened.push(
      new Promise<void>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/connection/websocket`, { perMessageDeflate: false });
        sockets.push(ws);
        ws.on('error', reject);
        ws.on('open', () => ws.send('{"id":1,"method":"connect","params":{}}'));
        ws.on('message', (data) => {
          const frame = JSON.parse(String(data)) as { id?: number };
          if (frame.id === 1) ws.send('{"id":2,"method":"subscribe","params":{"channel":"bench:drain"}}');
          if (frame.id === 2) resolve();
        });
        ws.on('close', (code) => {
          if (code === 3001) onTold();
        });
      }),
    );
    opened.push(
      new Promise<void>((resolve, reject) => {
        const request = http.get({ host: '127.0.0.1', port, path: '/connection/sse?channel=bench:drain', headers: { accept: 'text/event-stream' } }, (response) => {
          let text = '';
          let told = false;
          response.on('data', (chunk: Buffer) => {
            text += chunk.toString('utf8');
            if (text.includes('"push":"subscribed"')) resolve();
            if (!told && text.includes('"push":"disconnect","code":3001')) {
              told = true;
              onTold();
            }
            if (text.length > 65536) text = text.slice(-4096);
          });
          response.on('error', () => {});
        });
        request.on('error', reject);
        requests.push(request);
      }),
    );
    opened.push(
      (async () => {
        const open = await postJson(port, agent, '/connection/poll/open', { channels: ['bench:drain'] });
        if (open.status !== 200) throw new Error(`poll/open answered ${open.status}`);
        const session = open.body.session as string;
        let seq = open.body.seq as number;
        // Polls in a loop, at once after each answer: at any moment some sessions are between two polls.
        void (async () => {
          while (!stopped) {
            const answer = await postJson(port, agent, '/connection/poll', { seq }, { 'herald-session': session });
            if (answer.status !== 200) return;
            seq = answer.body.seq as number;
            if ((answer.body.messages as { push?: string; code?: number }[]).some((m) => m.push === 'disconnect')) {
              if ((answer.body.messages as { push?: string; code?: number }[]).some((m) => m.push === 'disconnect' && m.code === 3001)) onTold();
              return;
            }
          }
        })();
      })(),
    );
  }
  await Promise.all(opened);
  return {
    stop() {
      stopped = true;
      for (const ws of sockets) ws.terminate();
      for (const request of requests) request.destroy();
      agent.destroy();
    },
  };
}

async function drain(engine: Engine, redisUrl: string): Promise<DrainResult> {
  const idle = await startHerald(engine, redisUrl);
  let t0 = nowUs();
  idle.child.kill('SIGTERM');
  const idleExitMs = ((await idle.exited) - t0) / 1000;
  await idle.stop();

  const server = await startHerald(engine, redisUrl);
  const toldAt: number[] = [];
  const clients = await drainClients(server.port, options.drainClients, () => toldAt.push(nowUs()));
  try {
    await sleep(500);
    t0 = nowUs();
    server.child.kill('SIGTERM');
    const exitMs = ((await server.exited) - t0) / 1000;
    const stdout = server.child.stdout;
    if (stdout !== null && !stdout.readableEnded) await new Promise((resolve) => stdout.once('end', resolve));
    return {
      clients: options.drainClients,
      told: toldAt.length,
      lastToldMs: toldAt.length === 0 ? Number.NaN : (Math.max(...toldAt) - t0) / 1000,
      exitMs,
      idleExitMs,
      drained: server.stopped()?.['drained'] === true,
    };
  } finally {
    clients.stop();
    await server.stop();
  }
}

interface RecoveryResult {
  readonly outageMs: number;
  /** Redis launched → it answers PING (the baseline: Redis's own start). */
  readonly redisStartMs: number;
  /** Redis answers PING → the first publish acknowledged by Herald. */
  readonly firstAckMs: number;
  /** Redis answers PING → the first publication delivered to the WebSocket subscriber. */
  readonly firstDeliveryMs: number;
  /** Redis answers PING → `/health` 200. */
  readonly healthyMs: number;
  /** Redis answers PING → the subscriber, reset by the resynchronization, subscribed again with `recovered: true`. */
  readonly recoveredMs: number;
  /** Acknowledged publications the subscriber never received (must be 0). */
  readonly lost: number;
}

async function recovery(redis: PrivateRedis): Promise<RecoveryResult> {
  const restart = redis.restart;
  if (restart === undefined) throw new Error('the recovery phase needs the private Redis (no --redis-url)');
  const server = await startHerald('redis', redis.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const channel = 'bench:recovery';
  const acked = new Set<number>();
  const ackedAt: number[] = [];
  const received = new Map<number, number>();
  const resubscribed: { at: number; recovered: boolean }[] = [];
  let position: { epoch: string; offset: number } | undefined;
  let stopped = false;
  let ws: WebSocket | undefined;
  const subscribe = (): void => {
    const socket = new WebSocket(`ws://127.0.0.1:${server.port}/connection/websocket`, { perMessageDeflate: false });
    ws = socket;
    socket.on('error', () => {});
    socket.on('open', () => socket.send('{"id":1,"method":"connect","params":{}}'));
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data)) as { id?: number; push?: string; offset?: number; error?: unknown; result?: { epoch: string; offset: number; recovered?: boolean } };
      if (frame.id === 1) {
        const params = position === undefined ? { channel } : { channel, recover: true, epoch: position.epoch, offset: position.offset };
        socket.send(JSON.stringify({ id: 2, method: 'subscribe', params }));
      } else if (frame.id === 2) {
        if (frame.error !== undefined || frame.result === undefined) {
          socket.close();
          return;
        }
        if (position !== undefined) resubscribed.push({ at: nowUs(), recovered: frame.result.recovered === true });
        position = { epoch: frame.result.epoch, offset: position?.epoch === frame.result.epoch ? position.offset : frame.result.offset };
      } else if (frame.push === 'publication' && frame.offset !== undefined && position !== undefined) {
        position.offset = frame.offset;
        if (!received.has(frame.offset)) received.set(frame.offset, nowUs());
      }
    });
    socket.on('close', () => {
      if (!stopped) setTimeout(subscribe, 50);
    });
  };
  subscribe();
  const publishing = (async () => {
    // Publications before the first subscription are not the subscriber's to miss.
    while (position === undefined) await sleep(5);
    for (let n = 1; !stopped; n++) {
      const answer = await postJson(server.port, agent, '/api/publish', { channel, data: { n } }, { authorization: `Bearer ${server.apiKey}` });
      if (answer.status === 200) {
        acked.add(answer.body.offset as number);
        ackedAt.push(nowUs());
      }
      await sleep(20);
    }
  })();
  const waitFor = async <T>(check: () => T | undefined, what: string): Promise<T> => {
    const deadline = Date.now() + 60000;
    for (;;) {
      const value = check();
      if (value !== undefined) return value;
      if (Date.now() > deadline) throw new Error(`recovery: no ${what} within 60 s`);
      await sleep(5);
    }
  };
  try {
    await waitFor(() => (received.size >= 20 ? true : undefined), 'deliveries before the restart');
    const { launchedUs, readyUs } = await restart(options.outageSeconds * 1000);
    let healthyUs: number | undefined;
    while (healthyUs === undefined) {
      const status = await new Promise<number>((resolve) => {
        http.get({ host: '127.0.0.1', port: server.port, path: '/health', agent }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        }).on('error', () => resolve(0));
      });
      if (status === 200) healthyUs = nowUs();
      else await sleep(5);
    }
    const firstAckUs = await waitFor(() => ackedAt.find((t) => t >= readyUs), 'acknowledged publish after the restart');
    const firstDeliveryUs = await waitFor(() => [...received.values()].find((t) => t >= readyUs), 'delivery after the restart');
    const recoveredUs = await waitFor(() => resubscribed.find((r) => r.at >= readyUs && r.recovered)?.at, 'recovered resubscription');
    await sleep(1000);
    stopped = true;
    await publishing;
    await waitFor(() => ([...acked].every((offset) => received.has(offset)) ? true : undefined), 'every acknowledged publication').catch(() => undefined);
    const ms = (us: number): number => (us - readyUs) / 1000;
    return {
      outageMs: options.outageSeconds * 1000,
      redisStartMs: (readyUs - launchedUs) / 1000,
      firstAckMs: ms(firstAckUs),
      firstDeliveryMs: ms(firstDeliveryUs),
      healthyMs: ms(healthyUs),
      recoveredMs: ms(recoveredUs),
      lost: [...acked].filter((offset) => !received.has(offset)).length,
    };
  } finally {
    stopped = true;
    ws?.terminate();
    agent.destroy();
    await server.stop();
  }
}

// ---------------------------------------------------------------- report

interface EngineResult {
  readonly engine: Engine;
  readonly publish: PublishResult;
  readonly fanout: FanoutResult;
  /** Fan-out offered more than the machine can carry: deliveries/s is the capacity. */
  readonly capacity: FanoutResult;
  readonly subscribe: SubscribeResult;
}

const fmt = (n: number, digits = 0): string => (Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '—');

function table(results: readonly EngineResult[]): string {
  const [memory, redis] = results as [EngineResult, EngineResult];
  const rows: [string, string, string, string][] = [
    [`API publishes/s (${options.publishers} concurrent, 1 channel)`, fmt(memory.publish.perSecond), fmt(redis.publish.perSecond), fmt(redis.publish.perSecond / memory.publish.perSecond, 2)],
    ['API publish latency p50 / p99 (ms)', `${fmt(memory.publish.p50Ms, 2)} / ${fmt(memory.publish.p99Ms, 2)}`, `${fmt(redis.publish.p50Ms, 2)} / ${fmt(redis.publish.p99Ms, 2)}`, fmt(redis.publish.p99Ms / memory.publish.p99Ms, 2)],
    ['  server CPU / Redis CPU / others (cores)', `${fmt(memory.publish.serverCores, 2)} / — / ${fmt(memory.publish.otherCores, 2)}`, `${fmt(redis.publish.serverCores, 2)} / ${fmt(redis.publish.redisCores, 2)} / ${fmt(redis.publish.otherCores, 2)}`, ''],
    [`fan-out deliveries/s (${options.subscribers} WS subscribers, ${options.rate} msg/s)`, fmt(memory.fanout.perSecond), fmt(redis.fanout.perSecond), fmt(redis.fanout.perSecond / memory.fanout.perSecond, 2)],
    ['fan-out latency p50 / p99 / max (ms)', `${fmt(memory.fanout.p50Ms, 2)} / ${fmt(memory.fanout.p99Ms, 2)} / ${fmt(memory.fanout.maxMs, 1)}`, `${fmt(redis.fanout.p50Ms, 2)} / ${fmt(redis.fanout.p99Ms, 2)} / ${fmt(redis.fanout.maxMs, 1)}`, fmt(redis.fanout.p99Ms / memory.fanout.p99Ms, 2)],
    ['  publish API p99 meanwhile (ms)', fmt(memory.fanout.apiP99Ms, 2), fmt(redis.fanout.apiP99Ms, 2), ''],
    ['  delivered / expected, complete subscribers', `${memory.fanout.deliveries}/${memory.fanout.expected}, ${memory.fanout.complete}`, `${redis.fanout.deliveries}/${redis.fanout.expected}, ${redis.fanout.complete}`, ''],
    ['  server CPU / Redis CPU / others (cores)', `${fmt(memory.fanout.serverCores, 2)} / — / ${fmt(memory.fanout.otherCores, 2)}`, `${fmt(redis.fanout.serverCores, 2)} / ${fmt(redis.fanout.redisCores, 2)} / ${fmt(redis.fanout.otherCores, 2)}`, ''],
    [`fan-out capacity, deliveries/s (${options.maxRate} msg/s offered)`, fmt(memory.capacity.perSecond), fmt(redis.capacity.perSecond), fmt(redis.capacity.perSecond / memory.capacity.perSecond, 2)],
    ['  delivered / expected; server CPU / others (cores)', `${memory.capacity.deliveries}/${memory.capacity.expected}; ${fmt(memory.capacity.serverCores, 2)} / ${fmt(memory.capacity.otherCores, 2)}`, `${redis.capacity.deliveries}/${redis.capacity.expected}; ${fmt(redis.capacity.serverCores, 2)} / ${fmt(redis.capacity.otherCores, 2)}`, ''],
    [`subscribe latency p50 / p99 (ms), ${options.channels} channels`, `${fmt(memory.subscribe.p50Ms, 2)} / ${fmt(memory.subscribe.p99Ms, 2)}`, `${fmt(redis.subscribe.p50Ms, 2)} / ${fmt(redis.subscribe.p99Ms, 2)}`, fmt(redis.subscribe.p99Ms / memory.subscribe.p99Ms, 2)],
    ['  Redis pub/sub channels afterwards', '—', String(redis.subscribe.redisChannels ?? '—'), ''],
  ];
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length), ['', 'memory', 'redis', 'redis/memory'][i]!.length));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  return [line(['', 'memory', 'redis', 'redis/memory']), `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`, ...rows.map(line)].join('\n');
}

/** Per-field median over rounds (numbers only; the first round's other fields). */
function median<T>(list: readonly T[]): T {
  const first = list[0] as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(first)) {
    if (typeof value === 'number') {
      const sorted = list.map((item) => (item as Record<string, number>)[key]!).sort((a, b) => a - b);
      out[key] = sorted[Math.floor((sorted.length - 1) / 2)];
    } else if (typeof value === 'object' && value !== null) {
      out[key] = median(list.map((item) => (item as Record<string, unknown>)[key]));
    } else out[key] = value;
  }
  return out as T;
}

/** A phase's measurement is clean when processes outside the benchmark used less than this many cores meanwhile. */
const QUIET_CORES = 0.3;

function cleanRounds(list: readonly EngineResult[], phase: 'publish' | 'fanout' | 'capacity'): EngineResult[] {
  return list.filter((r) => r[phase].otherCores < QUIET_CORES);
}

/** Per phase, the median over clean rounds (over all rounds when none is clean). */
function summarize(list: readonly EngineResult[]): EngineResult {
  const pick = <P extends 'publish' | 'fanout' | 'capacity'>(phase: P): EngineResult[P] => {
    const clean = cleanRounds(list, phase);
    return median((clean.length > 0 ? clean : list).map((r) => r[phase]));
  };
  return { engine: list[0]!.engine, publish: pick('publish'), fanout: pick('fanout'), capacity: pick('capacity'), subscribe: median(list.map((r) => r.subscribe)) };
}

function drainTable(drains: Record<Engine, DrainResult[]>, recoveries: readonly RecoveryResult[]): string {
  const rows: [string, string, string][] = [];
  if (drains.memory.length > 0) {
    const [memory, redis] = [median(drains.memory), median(drains.redis)];
    const n = memory.clients;
    rows.push(
      [`drain: SIGTERM → last of ${3 * n} clients (${n} WS, ${n} SSE, ${n} long-poll) told 3001 (ms)`, fmt(memory.lastToldMs, 1), fmt(redis.lastToldMs, 1)],
      ['  clients told 3001', `${memory.told}/${3 * n}`, `${redis.told}/${3 * n}`],
      ['drain: SIGTERM → exit, with those clients (ms)', fmt(memory.exitMs, 1), fmt(redis.exitMs, 1)],
      ['drain: SIGTERM → exit, no clients (baseline, ms)', fmt(memory.idleExitMs, 1), fmt(redis.idleExitMs, 1)],
      ['  drained before the drain timeout (rounds)', `${drains.memory.filter((d) => d.drained).length}/${drains.memory.length}`, `${drains.redis.filter((d) => d.drained).length}/${drains.redis.length}`],
    );
  }
  if (recoveries.length > 0) {
    const r = median(recoveries);
    rows.push(
      [`Redis restart after a ${fmt(r.outageMs / 1000)} s outage: Redis launched → PING (baseline, ms)`, '—', fmt(r.redisStartMs, 1)],
      ['  Redis answers → first publish acknowledged (ms)', '—', fmt(r.firstAckMs, 1)],
      ['  Redis answers → first delivery to a WebSocket subscriber (ms)', '—', fmt(r.firstDeliveryMs, 1)],
      ['  Redis answers → /health 200 (ms)', '—', fmt(r.healthyMs, 1)],
      ['  Redis answers → subscriber resubscribed with recovered:true (ms)', '—', fmt(r.recoveredMs, 1)],
      ['  acknowledged publications lost (all rounds)', '—', String(recoveries.reduce((sum, x) => sum + x.lost, 0))],
    );
  }
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((row) => row[i]!.length), ['', 'memory', 'redis'][i]!.length));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  return [line(['', 'memory', 'redis']), `|${widths.map((w, i) => (i === 0 ? '-'.repeat(w + 2) : '-'.repeat(w + 1) + ':')).join('|')}|`, ...rows.map(line)].join('\n');
}

async function main(): Promise<void> {
  log(`bench/redis.ts: ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), node ${process.version}; ${JSON.stringify({ ...options, phases: [...options.phases] })}`);
  const busy = await waitForQuiet(options.quietWaitS * 1000);
  if (busy >= 0.3) log(`warning: other processes use ${busy.toFixed(2)} cores: numbers will be distorted (see "others" in the table)`);
  const redis = await startRedis();
  const rounds: Record<Engine, EngineResult[]> = { memory: [], redis: [] };
  const drains: Record<Engine, DrainResult[]> = { memory: [], redis: [] };
  const recoveries: RecoveryResult[] = [];
  try {
    // Engines alternate, round after round: a disturbance hits both alike; the table shows medians.
    for (let round = 1; round <= options.rounds; round++) {
      for (const engine of ['memory', 'redis'] as const) {
        if (!options.phases.has('throughput')) continue;
        const redisPid = engine === 'redis' ? redis.pid : undefined;
        const server = await startHerald(engine, redis.url);
        try {
          log(`round ${round}, ${engine}: publish throughput…`);
          const publishResult = await publishThroughput(server, redisPid);
          log(`round ${round}, ${engine}: fan-out to ${options.subscribers} WebSocket subscribers…`);
          const fanoutResult = await fanout(server, redisPid, options.rate, options.messages);
          log(`round ${round}, ${engine}: fan-out capacity (${options.maxRate} msg/s offered)…`);
          const capacityResult = await fanout(server, redisPid, options.maxRate, options.maxRate * 3);
          log(`round ${round}, ${engine}: subscribing to ${options.channels} channels…`);
          const subscribeResult = await manyChannels(server, redis.url);
          rounds[engine].push({ engine, publish: publishResult, fanout: fanoutResult, capacity: capacityResult, subscribe: subscribeResult });
        } finally {
          await server.stop();
        }
      }
      if (options.phases.has('drain')) {
        for (const engine of ['memory', 'redis'] as const) {
          log(`round ${round}, ${engine}: drain with ${options.drainClients} clients per transport…`);
          drains[engine].push(await drain(engine, redis.url));
        }
      }
      if (options.phases.has('recovery') && redis.restart !== undefined) {
        log(`round ${round}, redis: restart after a ${options.outageSeconds} s outage…`);
        recoveries.push(await recovery(redis));
      }
    }
  } finally {
    redis.stop();
  }
  let medians: EngineResult[] | undefined;
  if (options.phases.has('throughput')) {
    const results = [summarize(rounds.memory), summarize(rounds.redis)];
    medians = results;
    const text = table(results);
    const clean = (['memory', 'redis'] as const)
      .map((engine) => `${engine}: ${(['publish', 'fanout', 'capacity'] as const).map((phase) => `${phase} ${cleanRounds(rounds[engine], phase).length}/${options.rounds}`).join(', ')}`)
      .join('; ');
    process.stdout.write(`${text}\nMedians over the rounds in which other processes used < ${QUIET_CORES} cores (all rounds when none did): ${clean}\n`);
  }
  if (drains.memory.length > 0 || recoveries.length > 0) process.stdout.write(`\n${drainTable(drains, recoveries)}\nMedians over ${options.rounds} round(s).\n`);
  if (options.json !== undefined) writeFileSync(options.json, JSON.stringify({ options: { ...options, phases: [...options.phases] }, rounds, medians, drains, recoveries }, null, 2));
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(error instanceof Error ? (error.stack ?? error.message) : String(error));
    killAll();
    process.exit(1);
  },
);
