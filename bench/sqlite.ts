/**
 * SQLite engine vs memory engine (issue 14, part 1), in one run, engines
 * alternating over the rounds:
 *
 * 1. **publish throughput of many channels**: `--channels` (10 000) distinct
 *    channels of the `bench` namespace (history 300), one publication each
 *    through `POST /api/publish`, `--in-flight` (32) requests in flight over
 *    kept-alive connections; every channel is new, so the sqlite engine
 *    writes a stream row and a publication for each. Publications/s from the
 *    first request to the last answer, and server CPU per publication.
 *    Repeated `--repeats` times per round on fresh channel names.
 * 2. **fan-out CPU per delivery**: `--subscribers` (1000) WebSocket
 *    subscribers of one channel, `--messages` (200) publications at
 *    `--rate` (20/s) one at a time; server CPU (utime + stime) divided by
 *    the deliveries counted by the subscribers.
 *
 * The server runs pinned to `--server-cpu` (taskset), this process (the
 * load generator) to `--loader-cpu` when the machine has two cores. The
 * sqlite engine runs with its default `synchronous: "normal"`, its state
 * file in a fresh temporary directory per server.
 *
 *   node bench/sqlite.ts [--rounds=3] [--channels=10000] [--in-flight=32]
 *     [--repeats=2] [--subscribers=1000] [--messages=200] [--rate=20]
 *     [--synchronous=normal|full] [--engines=memory,sqlite] [--server-cpu=0]
 *     [--loader-cpu=1] [--json=FILE]
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { benchSecrets, childProcessRegistry, heraldBenchConfig, makePayload, nowUs } from './lib.ts';
import { KeepAliveClient } from './http-client.ts';
import { SOURCE_NODE_ARGS } from '../packages/server/test/helpers/source.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
type Engine = 'memory' | 'sqlite';

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '3' },
    channels: { type: 'string', default: '10000' },
    'in-flight': { type: 'string', default: '32' },
    repeats: { type: 'string', default: '2' },
    subscribers: { type: 'string', default: '1000' },
    messages: { type: 'string', default: '200' },
    rate: { type: 'string', default: '20' },
    synchronous: { type: 'string', default: 'normal' },
    'server-cpu': { type: 'string', default: '0' },
    'loader-cpu': { type: 'string', default: '1' },
    engines: { type: 'string', default: 'memory,sqlite' },
    json: { type: 'string' },
  },
});
const pinned = cpus().length >= 2;
const options = {
  rounds: Number(values.rounds),
  channels: Number(values.channels),
  inFlight: Number(values['in-flight']),
  repeats: Number(values.repeats),
  subscribers: Number(values.subscribers),
  messages: Number(values.messages),
  rate: Number(values.rate),
  synchronous: values.synchronous,
  serverCpu: pinned ? values['server-cpu'] : undefined,
  loaderCpu: pinned ? values['loader-cpu'] : undefined,
};
if (options.synchronous !== 'normal' && options.synchronous !== 'full') throw new Error('--synchronous must be normal or full');

const t0 = Date.now();
function log(line: string): void {
  process.stderr.write(`${((Date.now() - t0) / 1000).toFixed(1)}s ${line}\n`);
}

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100
}

/** utime + stime of a process in microseconds (/proc/<pid>/stat). */
function cpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) / clockTicks) * 1e6;
}

const { children } = childProcessRegistry((signal) => log(`\n${signal}: stopping children`));

interface Server {
  readonly port: number;
  readonly pid: number;
  readonly apiKey: string;
  readonly problems: string[];
  stop(): Promise<void>;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
  }, 15000);
  await exited;
  clearTimeout(timer);
  children.delete(child);
}

async function startHerald(engine: Engine): Promise<Server> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-bench-sqlite-'));
  const config = { ...heraldBenchConfig(), stateDir: join(dir, 'state'), engine: { type: engine, sqliteSynchronous: options.synchronous } };
  const configFile = join(dir, 'herald.json');
  writeFileSync(configFile, JSON.stringify(config), { mode: 0o600 });
  const apiKey = randomBytes(24).toString('base64url');
  const args = [...SOURCE_NODE_ARGS, join(ROOT, 'packages/server/src/cli/main.ts'), 'serve', '--config', configFile];
  const [command, argv] = options.serverCpu === undefined ? [process.execPath, args] : ['taskset', ['-c', options.serverCpu, process.execPath, ...args]];
  const child = spawn(command, argv, { cwd: ROOT, env: { ...process.env, ...benchSecrets(apiKey) }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const problems: string[] = [];
  const tail: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${engine}: not listening within 30 s:\n${tail.join('\n')}`)), 30000);
    const onLine = (line: string): void => {
      tail.push(line.slice(0, 300));
      if (tail.length > 20) tail.shift();
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (typeof entry.level === 'number' && entry.level >= 40 && problems.length < 5) problems.push(line.slice(0, 300));
      if (entry.msg === 'listening' && typeof entry.port === 'number') {
        clearTimeout(timer);
        resolve(entry.port);
      }
    };
    createInterface({ input: child.stdout! }).on('line', onLine);
    createInterface({ input: child.stderr! }).on('line', onLine);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${engine}: exited (${String(code ?? signal)}) before listening:\n${tail.join('\n')}`));
    });
  });
  return {
    port,
    pid: child.pid!,
    apiKey,
    problems,
    async stop() {
      await stopChild(child);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

interface PublishResult {
  readonly perSecond: number;
  readonly cpuUsPerPublish: number;
  readonly errors: number;
}

/** `count` publishes, one per new channel named `prefix<i>`, `inFlight` at a time. */
async function publishMany(server: Server, prefix: string, count: number): Promise<PublishResult> {
  const clients = await Promise.all(Array.from({ length: options.inFlight }, () => KeepAliveClient.open(server.port)));
  const headers = `content-type: application/json\r\nauthorization: Bearer ${server.apiKey}\r\n`;
  let next = 0;
  let errors = 0;
  const cpu0 = cpuUs(server.pid);
  const began = performance.now();
  await Promise.all(
    clients.map(async (client) => {
      while (next < count) {
        const i = next++;
        const answer = await client.request('POST', '/api/publish', `{"channel":"bench:${prefix}${String(i)}","data":${makePayload(i, nowUs())}}`, headers);
        if (answer.status !== 200) {
          if (errors++ === 0) log(`  publish answered ${String(answer.status)}: ${answer.body.slice(0, 200)}`);
        }
      }
    }),
  );
  const seconds = (performance.now() - began) / 1000;
  const cpu = cpuUs(server.pid) - cpu0;
  for (const client of clients) client.close();
  return { perSecond: count / seconds, cpuUsPerPublish: cpu / count, errors };
}

interface FanoutResult {
  readonly delivered: number;
  readonly expected: number;
  readonly cpuUsPerDelivery: number;
}

async function fanout(server: Server): Promise<FanoutResult> {
  const channel = 'bench:fanout';
  let delivered = 0;
  const sockets: WebSocket[] = [];
  const open = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${String(server.port)}/connection/websocket`, { perMessageDeflate: false });
      sockets.push(ws);
      let ready = false;
      ws.on('error', (error) => {
        if (!ready) reject(error);
      });
      ws.on('open', () => ws.send('{"id":1,"method":"connect","params":{}}'));
      ws.on('message', (data: Buffer) => {
        if (ready) {
          delivered++;
          return;
        }
        const frame = JSON.parse(data.toString()) as { id?: number; error?: unknown };
        if (frame.error !== undefined) reject(new Error(JSON.stringify(frame.error)));
        else if (frame.id === 1) ws.send(JSON.stringify({ id: 2, method: 'subscribe', params: { channel } }));
        else if (frame.id === 2) {
          ready = true;
          resolve();
        }
      });
    });
  for (let i = 0; i < options.subscribers; i += 100) await Promise.all(Array.from({ length: Math.min(100, options.subscribers - i) }, open));
  await sleep(500);
  const client = await KeepAliveClient.open(server.port);
  const headers = `content-type: application/json\r\nauthorization: Bearer ${server.apiKey}\r\n`;
  const publish = async (i: number): Promise<void> => {
    const answer = await client.request('POST', '/api/publish', `{"channel":"${channel}","data":${makePayload(i, nowUs())}}`, headers);
    if (answer.status !== 200) throw new Error(`fan-out publish answered ${String(answer.status)}: ${answer.body}`);
  };
  for (let i = 0; i < 10; i++) await publish(i);
  await sleep(500);
  const before = delivered;
  const cpu0 = cpuUs(server.pid);
  const began = performance.now();
  for (let i = 0; i < options.messages; i++) {
    await publish(1000 + i);
    const due = began + ((i + 1) * 1000) / options.rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
  }
  const expected = options.messages * options.subscribers;
  const deadline = performance.now() + 30000;
  while (delivered - before < expected && performance.now() < deadline) await sleep(5);
  const cpu = cpuUs(server.pid) - cpu0;
  client.close();
  for (const ws of sockets) ws.terminate();
  const got = delivered - before;
  return { delivered: got, expected, cpuUsPerDelivery: cpu / Math.max(1, got) };
}

interface RoundResult {
  readonly engine: Engine;
  readonly round: number;
  readonly publish: PublishResult[];
  readonly fanout: FanoutResult;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function main(): Promise<void> {
  for (const engine of values.engines.split(',')) if (engine !== 'memory' && engine !== 'sqlite') throw new Error(`--engines: unknown engine ${engine}`);
  if (options.loaderCpu !== undefined) {
    try {
      execFileSync('taskset', ['-pc', options.loaderCpu, String(process.pid)], { stdio: 'ignore' });
    } catch {
      log('taskset not available: the load generator is not pinned');
    }
  }
  log(`bench/sqlite.ts: ${JSON.stringify(options)}`);
  const results: RoundResult[] = [];
  for (let round = 1; round <= options.rounds; round++) {
    const engines = values.engines.split(',') as Engine[];
    const order: Engine[] = round % 2 === 1 ? engines : [...engines].reverse();
    for (const engine of order) {
      const server = await startHerald(engine);
      try {
        // Warm-up: JIT and the first streams.
        log(`  ${engine} listening`);
        await publishMany(server, 'warm', 2000);
        log(`  ${engine} warm`);
        const publish: PublishResult[] = [];
        for (let r = 0; r < options.repeats; r++) publish.push(await publishMany(server, `r${String(r)}c`, options.channels));
        log(`  ${engine} published`);
        const fan = await fanout(server);
        results.push({ engine, round, publish, fanout: fan });
        log(
          `  round ${String(round)} ${engine}: ${publish.map((p) => p.perSecond.toFixed(0)).join(' / ')} pub/s (${publish.map((p) => p.cpuUsPerPublish.toFixed(0)).join(' / ')} µs CPU/pub` +
            `${publish.some((p) => p.errors > 0) ? `, ${String(publish.reduce((n, p) => n + p.errors, 0))} errors` : ''}); fan-out ${fan.cpuUsPerDelivery.toFixed(2)} µs CPU/delivery, ${String(fan.delivered)}/${String(fan.expected)} delivered`,
        );
        if (server.problems.length > 0) log(`    ${engine} logged:\n    ${server.problems.join('\n    ')}`);
      } finally {
        await server.stop();
      }
    }
  }
  const of = (engine: Engine) => results.filter((r) => r.engine === engine);
  const pubs = (engine: Engine) => median(of(engine).flatMap((r) => r.publish.map((p) => p.perSecond)));
  const pubCpu = (engine: Engine) => median(of(engine).flatMap((r) => r.publish.map((p) => p.cpuUsPerPublish)));
  const fanCpu = (engine: Engine) => median(of(engine).map((r) => r.fanout.cpuUsPerDelivery));
  const delivered = (engine: Engine) => `${String(of(engine).reduce((n, r) => n + r.fanout.delivered, 0))}/${String(of(engine).reduce((n, r) => n + r.fanout.expected, 0))}`;
  const row = (name: string, m: string, s: string, ratio: string) => `| ${name.padEnd(62)} | ${m.padStart(10)} | ${s.padStart(10)} | ${ratio.padStart(13)} |`;
  const lines = [
    row('', 'memory', 'sqlite', 'sqlite/memory'),
    `|${'-'.repeat(64)}|${'-'.repeat(11)}:|${'-'.repeat(11)}:|${'-'.repeat(14)}:|`,
    row(`API publishes/s (${String(options.channels)} channels × 1, ${String(options.inFlight)} in flight)`, pubs('memory').toFixed(0), pubs('sqlite').toFixed(0), (pubs('sqlite') / pubs('memory')).toFixed(2)),
    row('  server CPU per publish (µs)', pubCpu('memory').toFixed(0), pubCpu('sqlite').toFixed(0), (pubCpu('sqlite') / pubCpu('memory')).toFixed(2)),
    row(`fan-out server CPU per delivery (µs; ${String(options.subscribers)} WS, ${String(options.rate)} msg/s)`, fanCpu('memory').toFixed(2), fanCpu('sqlite').toFixed(2), (fanCpu('sqlite') / fanCpu('memory')).toFixed(2)),
    row('  delivered / expected', delivered('memory'), delivered('sqlite'), ''),
  ];
  process.stdout.write(`\nMedians over ${String(options.rounds)} rounds (publish: ${String(options.repeats)} runs per round), synchronous=${options.synchronous}:\n\n${lines.join('\n')}\n`);
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify({ options, results }, null, 2));
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    log(`bench/sqlite.ts failed: ${(error as Error).stack ?? String(error)}`);
    process.exit(1);
  },
);
