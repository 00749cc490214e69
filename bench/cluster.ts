/**
 * Cluster fan-out benchmark: the same WebSocket fan-out with `herald serve`
 * as one process (`--workers 1`) and as a cluster (`--workers 2`: a primary
 * and two workers sharing the port, linked over IPC). Subscribers come from
 * forked load generators (bench/fanout-client.ts, spread over the workers by
 * the kernel: they share the listening socket); publications go through the HTTP API on one
 * kept-alive connection (so one worker accepts them all and the primary
 * forwards each one to the other worker), paced at a fixed offered rate.
 *
 *   node bench/cluster.ts [--subscribers=2000] [--messages=200] [--warmup=10]
 *     [--delivery-rates=20000,60000] [--workers=1,2] [--client-workers=2]
 *     [--drain-idle=5] [--quiet-wait=60] [--timeout=600]
 *
 * Per run: deliveries/s (measured deliveries over the time from the first
 * measured publish to the last delivery), p50/p99 publish → delivery latency,
 * and server CPU (primary + workers) per million deliveries. Everything stops
 * by itself; --timeout is a hard limit.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { childProcessRegistry, CHANNEL, benchSecrets, heraldBenchConfig, makePayload, merge, newHistogram, nowUs, quantile, type FromClient, type ReportMessage, type StatusMessage, type ToClient } from './lib.ts';
import { SOURCE_NODE_ARGS } from '../packages/server/test/helpers/source.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const log = (line: string) => process.stderr.write(line + '\n');

const { values } = parseArgs({
  options: {
    subscribers: { type: 'string', default: '2000' },
    messages: { type: 'string', default: '200' },
    warmup: { type: 'string', default: '10' },
    'delivery-rates': { type: 'string', default: '20000,60000' },
    workers: { type: 'string', default: '1,2' },
    'client-workers': { type: 'string', default: '2' },
    'drain-idle': { type: 'string', default: '5' },
    'quiet-wait': { type: 'string', default: '60' },
    timeout: { type: 'string', default: '600' },
  },
  strict: true,
});
const list = (text: string) => text.split(',').map((s) => Number(s.trim()));
const options = {
  subscribers: Number(values.subscribers),
  messages: Number(values.messages),
  warmup: Number(values.warmup),
  deliveryRates: list(values['delivery-rates']),
  workers: list(values.workers),
  clientWorkers: Number(values['client-workers']),
  drainIdleMs: Number(values['drain-idle']) * 1000,
  quietWaitMs: Number(values['quiet-wait']) * 1000,
  timeoutS: Number(values.timeout),
};

// ---------------------------------------------------------------- processes

const { children, killAll } = childProcessRegistry();
setTimeout(() => {
  log(`hard timeout (${options.timeoutS} s): stopping`);
  killAll();
  process.exit(1);
}, options.timeoutS * 1000).unref();

const exited = (child: ChildProcess) =>
  child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise<void>((resolve) => child.once('exit', () => resolve()));

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100
}

function cpuSeconds(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      total += (Number(fields[11]) + Number(fields[12])) / clockTicks;
    } catch {
      // exited
    }
  }
  return total;
}

/** Busy CPU-seconds of the whole machine so far (all CPUs, from /proc/stat). */
function machineBusySeconds(): number {
  const v = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
  return ((v[0] ?? 0) + (v[1] ?? 0) + (v[2] ?? 0) + (v[5] ?? 0) + (v[6] ?? 0)) / clockTicks;
}

function selfCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

interface Server {
  readonly child: ChildProcess;
  readonly pids: number[];
  readonly port: number;
  readonly apiKey: string;
  readonly dir: string;
  problems: number;
}

async function startServer(workers: number): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-cluster-'));
  const apiKey = randomBytes(24).toString('base64url');
  const config = {
    ...heraldBenchConfig(),
    stateDir: join(dir, 'state'),
    channels: { defaults: {}, namespaces: [{ name: 'bench', allowAnonymous: true, historySize: 300, presence: false }] },
  };
  writeFileSync(join(dir, 'herald.json'), JSON.stringify(config), { mode: 0o600 });
  const child = spawn(process.execPath, [...SOURCE_NODE_ARGS, join(ROOT, 'packages/server/src/cli/main.ts'), 'serve', '--config', join(dir, 'herald.json'), '--workers', String(workers)], {
    cwd: dir,
    env: { ...process.env, ...benchSecrets(apiKey) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.add(child);
  const pids = [child.pid!];
  const server: Server = { child, pids, port: 0, apiKey, dir, problems: 0 };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server not ready within 60 s')), 60000);
    createInterface({ input: child.stdout! }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (typeof entry['level'] === 'number' && entry['level'] >= 40) {
        server.problems++;
        if (server.problems <= 3) log(`  server: ${line.slice(0, 300)}`);
      }
      if (entry['msg'] === 'worker started' && typeof entry['pid'] === 'number') pids.push(entry['pid']);
      const ready = workers > 1 ? entry['msg'] === 'cluster ready' : entry['msg'] === 'listening';
      if (ready && typeof entry['port'] === 'number') {
        clearTimeout(timer);
        resolve({ ...server, port: entry['port'] });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code}) before it was ready`));
    });
  });
}

async function stopServer(server: Server): Promise<void> {
  server.child.kill('SIGTERM');
  await Promise.race([exited(server.child), sleep(15000)]);
  if (server.child.exitCode === null) server.child.kill('SIGKILL');
  children.delete(server.child);
  rmSync(server.dir, { recursive: true, force: true });
}

interface Generator {
  readonly child: ChildProcess;
  readonly waiters: Map<string, (message: FromClient) => void>;
}

function forkGenerator(): Generator {
  const child = fork(join(ROOT, 'bench/fanout-client.ts'), [], { cwd: ROOT, execPath: process.execPath, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.add(child);
  const generator: Generator = { child, waiters: new Map() };
  child.on('message', (message: FromClient) => {
    const waiter = generator.waiters.get(message.type);
    generator.waiters.delete(message.type);
    waiter?.(message);
  });
  return generator;
}

function ask<T extends FromClient>(generator: Generator, request: ToClient, answer: T['type'], timeoutMs: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`load generator: no "${answer}" within ${timeoutMs} ms`)), timeoutMs);
    generator.waiters.set(answer, (message) => {
      clearTimeout(timer);
      resolve(message as T);
    });
    generator.child.send(request);
  });
}

// ---------------------------------------------------------------- publishing

async function publishPaced(server: Server, first: number, count: number, rate: number): Promise<{ startUs: number; errors: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const startUs = nowUs();
  const start = performance.now();
  let errors = 0;
  const inflight = new Set<Promise<void>>();
  for (let i = 0; i < count; i++) {
    const wait = start + (i * 1000) / rate - performance.now();
    if (wait > 1) await sleep(wait);
    while (inflight.size >= 64) await Promise.race(inflight);
    const body = `{"channel":"${CHANNEL}","data":${makePayload(first + i, nowUs())}}`;
    const p: Promise<void> = new Promise<void>((resolve) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: server.port,
          path: '/api/publish',
          method: 'POST',
          agent,
          headers: { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)), authorization: `Bearer ${server.apiKey}` },
        },
        (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode !== 200) errors++;
            resolve();
          });
        },
      );
      req.on('error', () => {
        errors++;
        resolve();
      });
      req.end(body);
    }).finally(() => inflight.delete(p));
    inflight.add(p);
  }
  await Promise.all(inflight);
  agent.destroy();
  return { startUs, errors };
}

// ---------------------------------------------------------------- one run

interface Result {
  readonly workers: number;
  readonly offered: number;
  readonly ready: number;
  readonly delivered: number;
  readonly expected: number;
  readonly deliveriesPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuSPerMillion: number;
  readonly serverCores: number;
  /** Cores busy with processes outside this benchmark during the measured phase. */
  readonly otherCores: number;
  readonly errors: number;
  readonly outOfOrder: number;
  readonly duplicates: number;
}

/** Waits (at most --quiet-wait) until other processes use less than 0.3 cores; logs when they did not. */
async function waitForQuiet(): Promise<void> {
  const deadline = Date.now() + options.quietWaitMs;
  for (;;) {
    const before = machineBusySeconds();
    const self = selfCpuSeconds();
    await sleep(1000);
    const busy = machineBusySeconds() - before - (selfCpuSeconds() - self);
    if (busy < 0.3) return;
    if (Date.now() >= deadline) {
      log(`  note: machine not idle before the run (${busy.toFixed(2)} cores busy with other processes)`);
      return;
    }
  }
}

async function runOne(workers: number, deliveryRate: number): Promise<Result> {
  await waitForQuiet();
  const server = await startServer(workers);
  const generators = Array.from({ length: options.clientWorkers }, forkGenerator);
  try {
    const per = Math.ceil(options.subscribers / generators.length);
    const connected = await Promise.all(
      generators.map((g, i) =>
        ask(
          g,
          {
            type: 'start',
            transport: 'websocket',
            hostPort: `127.0.0.1:${server.port}`,
            count: Math.min(per, options.subscribers - i * per),
            concurrency: 50,
            warmup: options.warmup,
            messages: options.messages,
            connectTimeoutMs: 30000,
          },
          'connected',
          120000,
        ),
      ),
    );
    const ready = connected.reduce((a, c) => a + (c.type === 'connected' ? c.ready : 0), 0);
    const rate = deliveryRate / ready;
    const status = () => Promise.all(generators.map((g) => ask<StatusMessage>(g, { type: 'status' }, 'status', 10000)));
    await sleep(1000);
    await publishPaced(server, 0, options.warmup, rate);
    for (let i = 0; i < 50; i++) {
      if ((await status()).reduce((a, s) => a + s.warmup, 0) >= ready * options.warmup) break;
      await sleep(100);
    }
    await sleep(500);
    const pids = [...server.pids];
    const cpuBefore = cpuSeconds(pids);
    const primaryBefore = cpuSeconds(pids.slice(0, 1));
    const machineBefore = machineBusySeconds();
    const selfBefore = selfCpuSeconds();
    const clientBefore = (await status()).reduce((a, s) => a + s.cpuUs, 0) / 1e6;
    const expected = ready * options.messages;
    log(`  workers=${workers}: ${ready} subscribers, ${options.messages} messages at ${rate.toFixed(1)} msg/s (${deliveryRate} deliveries/s offered)`);
    const published = await publishPaced(server, options.warmup, options.messages, rate);
    let last = -1;
    let progressAt = Date.now();
    for (;;) {
      const got = (await status()).reduce((a, s) => a + s.measured, 0);
      if (got >= expected) break;
      if (got !== last) {
        last = got;
        progressAt = Date.now();
      } else if (Date.now() - progressAt > options.drainIdleMs) break;
      await sleep(100);
    }
    const endUs = nowUs();
    const cpu = cpuSeconds(pids) - cpuBefore;
    const primaryCpu = cpuSeconds(pids.slice(0, 1)) - primaryBefore;
    const machine = machineBusySeconds() - machineBefore;
    const self = selfCpuSeconds() - selfBefore;
    const reports = await Promise.all(generators.map((g) => ask<ReportMessage>(g, { type: 'report' }, 'report', 30000)));
    const client = reports.reduce((a, r) => a + r.cpuUs, 0) / 1e6 - clientBefore;
    const wallS = (endUs - published.startUs) / 1e6;
    const histogram = newHistogram();
    for (const r of reports) merge(histogram, r.histogram);
    const delivered = reports.reduce((a, r) => a + r.measured, 0);
    const lastDeliveryUs = Math.max(...reports.map((r) => r.lastDeliveryUs));
    const durationS = (lastDeliveryUs - published.startUs) / 1e6;
    const result: Result = {
      workers,
      offered: deliveryRate,
      ready,
      delivered,
      expected,
      deliveriesPerSecond: durationS > 0 ? delivered / durationS : 0,
      p50Ms: quantile(histogram, 0.5) / 1000,
      p99Ms: quantile(histogram, 0.99) / 1000,
      cpuSPerMillion: delivered > 0 ? (cpu / delivered) * 1e6 : Number.NaN,
      serverCores: cpu / wallS,
      otherCores: Math.max(0, machine - cpu - client - self) / wallS,
      errors: published.errors,
      outOfOrder: reports.reduce((a, r) => a + r.outOfOrder, 0),
      duplicates: reports.reduce((a, r) => a + r.duplicates, 0),
    };
    log(
      `  workers=${workers}: ${Math.round(result.deliveriesPerSecond)} deliveries/s, p50 ${result.p50Ms.toFixed(1)} ms, p99 ${result.p99Ms.toFixed(1)} ms, ` +
        `${delivered}/${expected} delivered, ${result.cpuSPerMillion.toFixed(2)} CPU-s/M` +
        (workers > 1 ? ` (primary ${((primaryCpu / Math.max(cpu, 1e-9)) * 100).toFixed(0)} % of it)` : '') +
        `, other processes ${result.otherCores.toFixed(2)} cores`,
    );
    return result;
  } finally {
    for (const g of generators) if (g.child.connected) g.child.send({ type: 'stop' } satisfies ToClient);
    await Promise.all(generators.map((g) => Promise.race([exited(g.child), sleep(5000)])));
    for (const g of generators) {
      if (g.child.exitCode === null) g.child.kill('SIGKILL');
      children.delete(g.child);
    }
    await stopServer(server);
  }
}

async function main(): Promise<void> {
  log(`cluster fan-out: ${options.subscribers} WebSocket subscribers, ${options.messages} publications of 100 B, workers ${options.workers.join(' vs ')}`);
  const results: Result[] = [];
  for (const rate of options.deliveryRates) for (const workers of options.workers) results.push(await runOne(workers, rate));
  const rows = results.map(
    (r) =>
      `| ${r.workers === 1 ? '1 (single process)' : `${r.workers} (cluster)`} | ${r.offered} | ${Math.round(r.deliveriesPerSecond)} | ${r.p50Ms.toFixed(1)} | ${r.p99Ms.toFixed(1)} | ` +
      `${r.delivered}/${r.expected} | ${r.cpuSPerMillion.toFixed(2)} | ${r.serverCores.toFixed(2)} | ${r.otherCores.toFixed(2)} |`,
  );
  process.stdout.write(
    [
      '| workers | offered deliveries/s | deliveries/s | p50 ms | p99 ms | delivered | server CPU-s per M | server cores busy | other processes, cores |',
      '|---|---|---|---|---|---|---|---|---|',
      ...rows,
      '',
    ].join('\n'),
  );
  for (const r of results) if (r.errors > 0 || r.outOfOrder > 0 || r.duplicates > 0) log(`  workers=${r.workers} at ${r.offered}: ${r.errors} publish errors, ${r.outOfOrder} out of order, ${r.duplicates} duplicates`);
  process.exit(0);
}

main().catch((error: unknown) => {
  log(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
  killAll();
  process.exit(1);
});
