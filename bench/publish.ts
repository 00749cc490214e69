/**
 * Publish benchmark (issue 13, part 1): many channels with one WebSocket
 * subscriber each, publications through the HTTP API with a fixed number of
 * requests in flight over keep-alive connections, 100-byte messages.
 * Targets, all in one run, in alternating order over the rounds:
 *
 * - `herald`: `herald serve` (production mode, the default engine (sqlite,
 *   its state file in a fresh temporary directory), the bench namespace
 *   with history 300 and default presence, API keys on, rate limits on but
 *   raised), one publication per `POST /api/publish`;
 * - `herald-memory`: `herald` on the memory engine (no state file);
 * - `herald-lean`, `herald-memory-lean`: `herald` and `herald-memory` with
 *   `http.leanPublish` on (the publish routes on the lean HTTP/1.1 layer,
 *   packages/server/src/edge/lean-http.ts, instead of node:http), which is
 *   the default since main of 2026-12-07 (so `herald` is the same server);
 * - `herald-node-http`: `herald` with `http.leanPublish` off (node:http, the
 *   default before 2026-12-07);
 * - `herald-broadcast`: `POST /api/broadcast` to `--batch` channels at once;
 * - `herald-batch`: `POST /api/batch` with `--batch` publishes;
 * - `herald-idempotent`: `herald` with an `idempotency_key` on every publish
 *   (a new key each time: what remembering keys costs when nothing repeats);
 * - `herald-pusher`: `herald` with one app (HERALD_APP_ID/KEY/SECRET), one
 *   publication per `POST /apps/bench/events` signed as the `pusher` SDK
 *   signs (HMAC-SHA256, body_md5; the loader signs), its data the payload as
 *   a string; the subscribers are native WebSocket clients of the app's
 *   channels `bench-c{i}` (the default namespace, anonymous, history 300 as
 *   the bench namespace), so they receive `{"event","data"}`: the Pusher HTTP
 *   API's cost against `herald`'s `POST /api/publish` in the same run;
 * - `raw`: bench/raw-http-server.ts, the baseline (Node's HTTP server,
 *   `JSON.parse`, `ws.send` to the channel's subscribers);
 * - `nchan`: nginx + Nchan (bench/nchan.ts), the reference;
 * - `herald-variant`: `herald` again, with `--variant-env` added to its
 *   environment, `--variant-config` merged into its config, or run
 *   from another checkout (`--variant-root`, which has its own `npm ci`):
 *   an A/B comparison of one build under two settings, or of two builds,
 *   in one run (`--config` is merged into every Herald target's config,
 *   e.g. the redis engine for both).
 *
 * The server runs pinned to one core (`--server-cpu`, taskset), this process
 * (subscribers and publishers) to the other (`--loader-cpu`). Per target:
 * start the server, subscribe one WebSocket client to each of `--channels`
 * channels, publish `--warmup` publications, then measure `--publications`
 * publications (channel = publication number modulo channels): from the
 * first request until every answer and every delivery arrived. It prints
 * publications/s, server CPU per publication (utime + stime, and stime, the kernel's part, alone, from
 * /proc/<pid>/stat; Nchan's worker process), the ratio of both to the raw
 * baseline of the same round, and the loader's own CPU per publication
 * (when it nears the server's, the loader is the bound).
 *
 *   node bench/publish.ts [--quick] [--channels=10000] [--publications=40000]
 *     [--warmup=4000] [--in-flight=32] [--batch=100] [--rounds=2]
 *     [--targets=herald,herald-lean,herald-memory,herald-memory-lean,herald-broadcast,herald-batch,raw,nchan]
 *     [--server-cpu=0] [--loader-cpu=1]
 *     [--server-node-args="--cpu-prof --cpu-prof-dir=DIR"] [--json=FILE]
 *     [--targets=herald,herald-variant --variant-env=NAME=VALUE,… --variant-root=DIR]
 *     [--config=JSON] [--variant-config=JSON]
 *
 * `--quick`: 2000 channels, 10 000 publications, one round. With
 * `--server-node-args=--cpu-prof…` the measured windows are printed as
 * CLOCK_MONOTONIC microseconds, the clock of the profile's timestamps, for
 * `node bench/profile-summary.ts PROFILE --window=FROM-TO`.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { benchSecrets, childProcessRegistry, heraldBenchConfig, makePayload, nowUs, PAYLOAD_BYTES, runAlternatingRounds } from './lib.ts';
import { KeepAliveClient } from './http-client.ts';
import { nchanChannelId, nchanUnavailable, startNchan, type NchanServer } from './nchan.ts';
import { SOURCE_NODE_ARGS } from '../packages/server/test/helpers/source.ts';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** Makes `herald-idempotent`'s keys new in every run and round. */
const RUN_ID = randomBytes(6).toString('base64url');

const TARGETS = ['herald', 'herald-lean', 'herald-node-http', 'herald-memory', 'herald-memory-lean', 'herald-broadcast', 'herald-batch', 'raw', 'nchan', 'herald-variant', 'herald-idempotent', 'herald-pusher'] as const;
type Target = (typeof TARGETS)[number];
type ServerKind = 'herald' | 'herald-lean' | 'herald-node-http' | 'herald-memory' | 'herald-memory-lean' | 'raw' | 'nchan' | 'herald-variant' | 'herald-pusher';
/** Targets that are a server of their own; the others run on `herald`'s. */
const OWN_SERVER: ReadonlySet<string> = new Set(['raw', 'nchan', 'herald-variant', 'herald-lean', 'herald-node-http', 'herald-memory', 'herald-memory-lean', 'herald-pusher']);

function kindOf(target: Target): ServerKind {
  return OWN_SERVER.has(target) ? (target as ServerKind) : 'herald';
}

/** The app of `herald-pusher` (its secret made per run). */
const PUSHER_APP = { id: 'bench', key: 'bench-key', secret: randomBytes(16).toString('hex') } as const;

interface Options {
  channels: number;
  publications: number;
  warmup: number;
  inFlight: number;
  batch: number;
  rounds: number;
  targets: Target[];
  serverCpu: string | undefined;
  loaderCpu: string | undefined;
  serverNodeArgs: string[];
  /** Extra environment of the `herald-variant` target (an A/B comparison of one build under two settings). */
  variantEnv: Record<string, string>;
  /** The checkout `herald-variant` runs from (an A/B comparison of two builds); this one by default. */
  variantRoot: string;
  /** Merged into the config of every Herald target (`--config`, JSON). */
  config: Record<string, unknown>;
  /** Merged into the config of `herald-variant` after `config` (`--variant-config`, JSON). */
  variantConfig: Record<string, unknown>;
  json: string | undefined;
  timeoutS: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      channels: { type: 'string' },
      publications: { type: 'string' },
      warmup: { type: 'string' },
      'in-flight': { type: 'string', default: '32' },
      batch: { type: 'string', default: '100' },
      rounds: { type: 'string' },
      targets: { type: 'string', default: TARGETS.filter((t) => t !== 'herald-variant' && t !== 'herald-pusher' && t !== 'herald-lean' && t !== 'herald-node-http' && t !== 'herald-memory-lean').join(',') },
      'server-cpu': { type: 'string', default: '0' },
      'loader-cpu': { type: 'string', default: '1' },
      'server-node-args': { type: 'string', default: '' },
      'variant-env': { type: 'string', default: '' },
      'variant-root': { type: 'string', default: ROOT },
      config: { type: 'string', default: '{}' },
      'variant-config': { type: 'string', default: '{}' },
      json: { type: 'string' },
      timeout: { type: 'string', default: '900' },
    },
  });
  const quick = values.quick;
  const targets = values.targets.split(',').map((t) => t.trim());
  for (const t of targets) if (!(TARGETS as readonly string[]).includes(t)) throw new Error(`unknown target ${t}; known: ${TARGETS.join(', ')}`);
  const pinned = cpus().length >= 2;
  const options: Options = {
    channels: Number(values.channels ?? (quick ? 2000 : 10000)),
    publications: Number(values.publications ?? (quick ? 10000 : 40000)),
    warmup: Number(values.warmup ?? (quick ? 1000 : 4000)),
    inFlight: Number(values['in-flight']),
    batch: Number(values.batch),
    rounds: Number(values.rounds ?? (quick ? 1 : 2)),
    targets: targets as Target[],
    serverCpu: pinned && values['server-cpu'] !== '' ? values['server-cpu'] : undefined,
    loaderCpu: pinned && values['loader-cpu'] !== '' ? values['loader-cpu'] : undefined,
    serverNodeArgs: values['server-node-args'].split(' ').filter(Boolean),
    variantEnv: Object.fromEntries(
      values['variant-env']
        .split(',')
        .filter(Boolean)
        .map((pair) => [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]),
    ),
    variantRoot: values['variant-root'],
    config: JSON.parse(values.config) as Record<string, unknown>,
    variantConfig: JSON.parse(values['variant-config']) as Record<string, unknown>,
    json: values.json,
    timeoutS: Number(values.timeout),
  };
  for (const [name, value] of Object.entries(options)) {
    if (typeof value === 'number' && !(Number.isInteger(value) && value > 0)) throw new Error(`--${name} must be a positive integer`);
  }
  if (options.publications % options.batch !== 0 || options.warmup % options.batch !== 0) {
    throw new Error('--publications and --warmup must be multiples of --batch');
  }
  return options;
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

let clockTicks = 100;
try {
  clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {
  // keep 100
}

/** utime + stime of a process in microseconds (/proc/<pid>/stat, all threads). */
function cpuUs(pid: number): number {
  return systemCpuUs(pid) + userCpuUs(pid);
}

function statFields(pid: number): string[] {
  const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

function userCpuUs(pid: number): number {
  return (Number(statFields(pid)[11]) / clockTicks) * 1e6;
}

/** stime: in the kernel (socket writes and reads, and the loopback's packet processing charged to it). */
function systemCpuUs(pid: number): number {
  return (Number(statFields(pid)[12]) / clockTicks) * 1e6;
}

function selfCpuUs(): number {
  const usage = process.cpuUsage();
  return usage.user + usage.system;
}

const { children, killAll } = childProcessRegistry((signal) => log(`\n${signal}: stopping children`));

// ---------------------------------------------------------------- servers

interface Server {
  readonly kind: ServerKind;
  readonly port: number;
  /** The process whose CPU is measured. */
  readonly pid: number;
  readonly apiKey: string;
  /** Warnings and errors the server logged. */
  readonly problems: string[];
  stop(): Promise<void>;
}

function taskset(cpu: string | undefined, command: string, args: string[]): [string, string[]] {
  return cpu === undefined ? [command, args] : ['taskset', ['-c', cpu, command, ...args]];
}

async function stopChild(child: ChildProcess, graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
  }, graceMs);
  await exited;
  clearTimeout(timer);
  children.delete(child);
}

/** `base` with `extra` merged in, object by object. */
function merge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(extra)) {
    const inner = base[key];
    const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
    out[key] = isObject(value) && isObject(inner) ? merge(inner, value) : value;
  }
  return out;
}

async function startNodeServer(kind: Exclude<ServerKind, 'nchan'>, options: Options): Promise<Server> {
  let args: string[];
  let env: NodeJS.ProcessEnv = process.env;
  let cleanup = (): void => {};
  const apiKey = randomBytes(24).toString('base64url');
  if (kind === 'raw') {
    args = [...options.serverNodeArgs, join(ROOT, 'bench/raw-http-server.ts')];
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'herald-bench-publish-'));
    const configFile = join(dir, 'herald.json');
    // The bench configuration names the memory engine (the engine of the earlier numbers); `herald` runs the default.
    const engine = kind === 'herald-memory' || kind === 'herald-memory-lean' ? { type: 'memory' } : { type: 'sqlite' };
    const lean = kind === 'herald-lean' || kind === 'herald-memory-lean' ? { http: { leanPublish: true } } : kind === 'herald-node-http' ? { http: { leanPublish: false } } : {};
    const base = merge({ ...heraldBenchConfig(), engine, stateDir: join(dir, 'state') }, lean);
    // herald-pusher: the app's channels are the default namespace's, made like the bench namespace.
    const pusher = kind === 'herald-pusher' ? { channels: { defaults: { allowAnonymous: true, historySize: 300 } } } : {};
    const config = merge(merge(merge(base, pusher), options.config), kind === 'herald-variant' ? options.variantConfig : {});
    writeFileSync(configFile, JSON.stringify(config, null, 2), { mode: 0o600 });
    cleanup = () => rmSync(dir, { recursive: true, force: true });
    const root = kind === 'herald-variant' ? options.variantRoot : ROOT;
    args = [...SOURCE_NODE_ARGS, ...options.serverNodeArgs, join(root, 'packages/server/src/cli/main.ts'), 'serve', '--config', configFile];
    env = {
      ...process.env,
      ...benchSecrets(apiKey),
      ...(kind === 'herald-variant' ? options.variantEnv : {}),
      ...(kind === 'herald-pusher' ? { HERALD_APP_ID: PUSHER_APP.id, HERALD_APP_KEY: PUSHER_APP.key, HERALD_APP_SECRET: PUSHER_APP.secret } : {}),
    };
  }
  const [command, argv] = taskset(options.serverCpu, process.execPath, args);
  const child = spawn(command, argv, { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${kind}: could not spawn`);
  const problems: string[] = [];
  const tail: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${kind}: not listening within 30 s:\n${tail.join('\n')}`)), 30000);
    const onLine = (line: string, stderr: boolean): void => {
      tail.push(line.slice(0, 300));
      if (tail.length > 20) tail.shift();
      let entry: Record<string, unknown> | undefined;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        if (stderr && problems.length < 5) problems.push(line.slice(0, 300));
        return;
      }
      if (typeof entry.level === 'number' && entry.level >= 40 && problems.length < 5) problems.push(line.slice(0, 300));
      if (entry.msg === 'listening' && typeof entry.port === 'number') {
        clearTimeout(timer);
        resolve(entry.port);
      }
    };
    createInterface({ input: child.stdout }).on('line', (line) => onLine(line, false));
    createInterface({ input: child.stderr }).on('line', (line) => onLine(line, true));
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${kind}: exited (${String(code ?? signal)}) before listening:\n${tail.join('\n')}`));
    });
  }).catch(async (error: unknown) => {
    await stopChild(child, 1000);
    cleanup();
    throw error;
  });
  return {
    kind,
    port,
    pid,
    apiKey,
    problems,
    async stop() {
      await stopChild(child, 30000);
      cleanup();
    },
  };
}

async function startServer(kind: ServerKind, options: Options): Promise<Server> {
  if (kind !== 'nchan') return await startNodeServer(kind, options);
  const nchan: NchanServer = await startNchan({ ...(options.serverCpu === undefined ? {} : { cpus: options.serverCpu }) });
  return { kind, port: nchan.port, pid: nchan.workerPid, apiKey: '', problems: [], stop: () => nchan.stop() };
}

// ---------------------------------------------------------------- subscribers

function channelName(i: number, kind: ServerKind = 'herald'): string {
  // Pusher's channel names have no ':'.
  return kind === 'herald-pusher' ? `bench-c${String(i)}` : `bench:c${String(i)}`;
}

/** A `herald-pusher` publication: POST /apps/{id}/events with the query the `pusher` SDK signs. */
function pusherRequest(channel: string, payload: string): Request {
  const path = `/apps/${PUSHER_APP.id}/events`;
  const body = `{"name":"bench","data":${JSON.stringify(payload)},"channel":"${channel}"}`;
  const params = `auth_key=${PUSHER_APP.key}&auth_timestamp=${String(Math.floor(Date.now() / 1000))}&auth_version=1.0&body_md5=${createHash('md5').update(body).digest('hex')}`;
  const signature = createHmac('sha256', PUSHER_APP.secret).update(`POST\n${path}\n${params}`).digest('hex');
  return { path: `${path}?${params}&auth_signature=${signature}`, body };
}

class Subscribers {
  delivered = 0;
  #closing = false;
  readonly #sockets: WebSocket[] = [];

  async open(server: Server, channels: number): Promise<void> {
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < channels) {
        const i = next++;
        this.#sockets.push(await this.#subscribe(server, channelName(i, server.kind)));
      }
    };
    await Promise.all(Array.from({ length: 200 }, worker));
  }

  #subscribe(server: Server, channel: string): Promise<WebSocket> {
    const url =
      server.kind !== 'raw' && server.kind !== 'nchan'
        ? `ws://127.0.0.1:${String(server.port)}/connection/websocket`
        : `ws://127.0.0.1:${String(server.port)}/sub/${server.kind === 'nchan' ? nchanChannelId(channel) : encodeURIComponent(channel)}`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      let ready = false;
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`${channel}: not subscribed within 30 s`));
      }, 30000);
      const done = (): void => {
        ready = true;
        clearTimeout(timer);
        resolve(ws);
      };
      ws.on('error', (error) => {
        if (!ready) {
          clearTimeout(timer);
          reject(error);
        }
      });
      ws.on('close', (code) => {
        if (ready && !this.#closing) log(`  subscriber of ${channel} closed: ${String(code)}`);
      });
      if (server.kind === 'raw' || server.kind === 'nchan') {
        ws.on('open', done);
        ws.on('message', () => {
          if (ready) this.delivered++;
        });
        return;
      }
      ws.on('open', () => ws.send('{"id":1,"method":"connect","params":{}}'));
      ws.on('message', (data: Buffer) => {
        if (ready) {
          this.delivered++;
          return;
        }
        const frame = JSON.parse(data.toString()) as { id?: number; error?: unknown };
        if (frame.error !== undefined) {
          clearTimeout(timer);
          reject(new Error(`${channel}: ${JSON.stringify(frame.error)}`));
        } else if (frame.id === 1) ws.send(JSON.stringify({ id: 2, method: 'subscribe', params: { channel } }));
        else if (frame.id === 2) done();
      });
    });
  }

  close(): void {
    this.#closing = true;
    for (const ws of this.#sockets) ws.terminate();
    this.#sockets.length = 0;
  }
}

// ---------------------------------------------------------------- publishing

interface Request {
  readonly path: string;
  readonly body: string;
}

/** The request that publishes publications `first … first+count-1` (count 1 for single publishes). */
function buildRequest(target: Target, first: number, count: number, channels: number): Request {
  const payload = makePayload(first, nowUs());
  switch (target) {
    case 'herald':
    case 'herald-lean':
    case 'herald-node-http':
    case 'herald-memory':
    case 'herald-memory-lean':
    case 'herald-variant':
    case 'raw':
      return { path: target === 'raw' ? '/publish' : '/api/publish', body: `{"channel":"${channelName(first % channels)}","data":${payload}}` };
    case 'nchan':
      return { path: `/pub/${nchanChannelId(channelName(first % channels))}`, body: payload };
    case 'herald-pusher':
      return pusherRequest(channelName(first % channels, 'herald-pusher'), payload);
    case 'herald-idempotent':
      return { path: '/api/publish', body: `{"channel":"${channelName(first % channels)}","data":${payload},"idempotency_key":"${RUN_ID}-${String(first)}"}` };
    case 'herald-broadcast': {
      const names: string[] = [];
      for (let i = 0; i < count; i++) names.push(`"${channelName((first + i) % channels)}"`);
      return { path: '/api/broadcast', body: `{"channels":[${names.join(',')}],"data":${payload}}` };
    }
    case 'herald-batch': {
      const items: string[] = [];
      for (let i = 0; i < count; i++) items.push(`{"channel":"${channelName((first + i) % channels)}","data":${makePayload(first + i, nowUs())}}`);
      return { path: '/api/batch', body: `{"publishes":[${items.join(',')}]}` };
    }
  }
}

interface Phase {
  readonly publications: number;
  readonly seconds: number;
  readonly serverCpuUs: number;
  /** The kernel's part of serverCpuUs (stime). */
  readonly serverSystemUs: number;
  readonly loaderCpuUs: number;
  readonly errors: number;
  readonly firstError: string | undefined;
  readonly missing: number;
  readonly fromUs: number;
  readonly toUs: number;
}

async function publishPhase(
  target: Target,
  server: Server,
  clients: KeepAliveClient[],
  subscribers: Subscribers,
  first: number,
  publications: number,
  options: Options,
): Promise<Phase> {
  const perRequest = target === 'herald-broadcast' || target === 'herald-batch' ? options.batch : 1;
  const headers =
    target === 'nchan' ? 'content-type: text/plain\r\n' : target === 'herald-pusher' ? 'content-type: application/json\r\n' : `content-type: application/json\r\nauthorization: Bearer ${server.apiKey}\r\n`;
  const before = subscribers.delivered;
  let published = 0;
  let errors = 0;
  let firstError: string | undefined;
  let next = first;
  const end = first + publications;
  const fromUs = nowUs();
  const cpu0 = cpuUs(server.pid);
  const system0 = systemCpuUs(server.pid);
  const self0 = selfCpuUs();
  const began = performance.now();
  await Promise.all(
    clients.map(async (client) => {
      while (next < end) {
        const at = next;
        next += perRequest;
        const request = buildRequest(target, at, perRequest, options.channels);
        const answer = await client.request('POST', request.path, request.body, headers);
        const failed = answer.status < 200 || answer.status > 299 || (perRequest > 1 && answer.body.includes('"error"'));
        if (failed) {
          errors++;
          firstError ??= `${String(answer.status)} ${answer.body.slice(0, 300)}`;
        } else published += perRequest;
      }
    }),
  );
  // Publications of a failed request are not waited for (a batch's failed items are: they count as missing).
  const expected = before + published;
  const deadline = performance.now() + 30000;
  while (subscribers.delivered < expected && performance.now() < deadline) await sleep(2);
  const seconds = (performance.now() - began) / 1000;
  const serverCpuUs = cpuUs(server.pid) - cpu0;
  const serverSystemUs = systemCpuUs(server.pid) - system0;
  const loaderCpuUs = selfCpuUs() - self0;
  return {
    publications,
    seconds,
    serverCpuUs,
    serverSystemUs,
    loaderCpuUs,
    errors,
    firstError,
    missing: Math.max(0, expected - subscribers.delivered),
    fromUs,
    toUs: nowUs(),
  };
}

interface Result extends Phase {
  readonly target: Target;
  readonly round: number;
}

async function runServer(kind: ServerKind, targets: Target[], round: number, options: Options, skipped: string[]): Promise<Result[]> {
  const started = Date.now();
  const server = await startServer(kind, options);
  const subscribers = new Subscribers();
  const clients: KeepAliveClient[] = [];
  const results: Result[] = [];
  try {
    await subscribers.open(server, options.channels);
    for (let i = 0; i < options.inFlight; i++) clients.push(await KeepAliveClient.open(server.port));
    log(`  ${kind}: ${String(options.channels)} subscribers in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    let seq = 0;
    for (const target of targets) {
      const warm = await publishPhase(target, server, clients, subscribers, seq, options.warmup, options);
      seq += options.warmup;
      if (warm.errors > 0) {
        skipped.push(`${target} round ${String(round)}: warm-up failed: ${warm.firstError ?? ''}`);
        log(`  ${skipped[skipped.length - 1] ?? ''}`);
        continue;
      }
      const phase = await publishPhase(target, server, clients, subscribers, seq, options.publications, options);
      seq += options.publications;
      const result: Result = { ...phase, target, round };
      results.push(result);
      log(
        `  ${target} round ${String(round)}: ${(phase.publications / phase.seconds).toFixed(0)} pub/s, server ` +
          `${(phase.serverCpuUs / phase.publications).toFixed(1)} µs/pub (system ${(phase.serverSystemUs / phase.publications).toFixed(1)}), loader ${(phase.loaderCpuUs / phase.publications).toFixed(1)} µs/pub` +
          `${phase.errors > 0 ? `, ${String(phase.errors)} errors (${phase.firstError ?? ''})` : ''}${phase.missing > 0 ? `, ${String(phase.missing)} deliveries missing` : ''}` +
          `; window ${String(phase.fromUs)}-${String(phase.toUs)}`,
      );
    }
  } finally {
    for (const client of clients) client.close();
    subscribers.close();
    if (server.problems.length > 0) log(`  ${kind} logged:\n    ${server.problems.join('\n    ')}`);
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
  const rawOf = (round: number): Result | undefined => results.find((r) => r.target === 'raw' && r.round === round);
  const lines = [
    '| target | round | publications/s | server CPU µs/pub | of it system | CPU × raw | pub/s × raw | loader CPU µs/pub | errors | missing |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of results) {
    const raw = rawOf(r.round);
    const cpu = r.serverCpuUs / r.publications;
    const rate = r.publications / r.seconds;
    lines.push(
      `| ${r.target} | ${String(r.round)} | ${rate.toFixed(0)} | ${cpu.toFixed(1)} | ${(r.serverSystemUs / r.publications).toFixed(1)} | ` +
        `${raw === undefined ? '—' : (cpu / (raw.serverCpuUs / raw.publications)).toFixed(2)} | ` +
        `${raw === undefined ? '—' : (rate / (raw.publications / raw.seconds)).toFixed(2)} | ` +
        `${(r.loaderCpuUs / r.publications).toFixed(1)} | ${String(r.errors)} | ${String(r.missing)} |`,
    );
  }
  lines.push('', 'Median over the rounds:', '', '| target | publications/s | server CPU µs/pub | of it system | CPU × raw | pub/s × raw |', '|---|---:|---:|---:|---:|---:|');
  const rawRuns = results.filter((r) => r.target === 'raw');
  const rawCpu = median(rawRuns.map((r) => r.serverCpuUs / r.publications));
  const rawRate = median(rawRuns.map((r) => r.publications / r.seconds));
  for (const target of options.targets) {
    const runs = results.filter((r) => r.target === target);
    if (runs.length === 0) continue;
    const cpu = median(runs.map((r) => r.serverCpuUs / r.publications));
    const system = median(runs.map((r) => r.serverSystemUs / r.publications));
    const rate = median(runs.map((r) => r.publications / r.seconds));
    lines.push(
      `| ${target} | ${rate.toFixed(0)} | ${cpu.toFixed(1)} | ${system.toFixed(1)} | ${rawRuns.length === 0 ? '—' : (cpu / rawCpu).toFixed(2)} | ${rawRuns.length === 0 ? '—' : (rate / rawRate).toFixed(2)} |`,
    );
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const options = parseOptions();
  const hardTimer = setTimeout(() => {
    log(`hard timeout of ${String(options.timeoutS)} s: stopping`);
    killAll();
    process.exit(1);
  }, options.timeoutS * 1000);
  hardTimer.unref();
  if (options.loaderCpu !== undefined) execFileSync('taskset', ['-a', '-p', '-c', options.loaderCpu, String(process.pid)], { stdio: 'ignore' });
  const skipped: string[] = [];
  let targets = options.targets;
  if (targets.includes('nchan') && nchanUnavailable() !== undefined) {
    skipped.push(`nchan: ${nchanUnavailable() ?? ''}`);
    targets = targets.filter((t) => t !== 'nchan');
  }
  const began = Date.now();
  const setup =
    `${String(options.channels)} channels × 1 WebSocket subscriber, ${String(options.inFlight)} requests in flight over keep-alive HTTP, ` +
    `${String(PAYLOAD_BYTES)}-byte messages, ${String(options.publications)} publications measured per target after ${String(options.warmup)} warm-up, ` +
    `batch/broadcast of ${String(options.batch)}; ${String(options.rounds)} round(s); server on CPU ${options.serverCpu ?? 'any'}, loader on CPU ${options.loaderCpu ?? 'any'}; ` +
    `${String(cpus().length)} CPUs; node ${process.version}`;
  log(`publish benchmark: ${setup}`);
  const results = await runAlternatingRounds(targets, kindOf, options.rounds, (kind, own, round) => runServer(kind, own, round, options, skipped), skipped, log);
  const out = [setup, '', report(results, options), ...(skipped.length > 0 ? ['', ...skipped.map((s) => `- ${s}`)] : []), '', `total time ${((Date.now() - began) / 1000).toFixed(0)} s`];
  console.log(out.join('\n'));
  if (options.json !== undefined) writeFileSync(options.json, JSON.stringify({ options, node: process.version, results, skipped }, null, 2));
  clearTimeout(hardTimer);
  process.exit(skipped.some((s) => s.includes('failed')) ? 1 : 0);
}

main().catch((error: unknown) => {
  log(`benchmark failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`);
  killAll();
  process.exit(1);
});
