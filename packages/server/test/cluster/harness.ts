/**
 * A real Herald cluster for tests: `herald serve --workers N` as a child
 * process on an ephemeral loopback port, its JSON log lines collected (the
 * workers share the primary's stdout), plus clients that can be pinned to
 * one worker:
 *
 * - `Pinned`: one kept-alive HTTP connection. Each TCP connection is
 *   accepted by one worker (the workers share the listening socket), so
 *   every request on it reaches the same worker; `info` on it names that worker's node (the first entry
 *   of `nodes` is always the answering node).
 * - `RecoveringWs`: a WebSocket subscriber that reconnects and recovers
 *   from its last position, and records every offset, gap and recovery.
 *
 * Everything is bounded: waits time out, `stop()` ends the cluster with
 * SIGTERM and then SIGKILLs what it started if it lingers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { SignJWT } from 'jose';
import { sleep, waitUntil } from '../helpers/rt-util.ts';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export type LogLine = Record<string, any>;

export interface ClusterOptions {
  readonly workers?: number;
  /** Deep-merged into the config file. */
  readonly config?: Record<string, any>;
  /** More environment variables for the cluster (the watchdog's test sets HERALD_TEST_DEBUG_ACTIONS). */
  readonly env?: Record<string, string>;
  /** The admin API key and the HS256 secret; random by default (several "machines" of one deployment share them). */
  readonly apiKey?: string;
  readonly hmacSecret?: string;
}

export class TestCluster {
  readonly dir: string;
  readonly apiKey: string;
  readonly hmacSecret: string;
  readonly process: ChildProcess;
  readonly logs: LogLine[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  port = 0;
  /** The internal listener (shared by the workers, like the public one). */
  adminPort = 0;
  readonly #pinned: Pinned[] = [];

  private constructor(dir: string, apiKey: string, hmacSecret: string, child: ChildProcess) {
    this.dir = dir;
    this.apiKey = apiKey;
    this.hmacSecret = hmacSecret;
    this.process = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        this.logs.push(JSON.parse(line) as LogLine);
      } catch {
        this.logs.push({ text: line });
      }
    });
    createInterface({ input: child.stderr! }).on('line', (line) => this.stderr.push(line));
  }

  static async start(options: ClusterOptions = {}): Promise<TestCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'herald-cluster-'));
    const apiKey = options.apiKey ?? randomBytes(24).toString('base64url');
    const hmacSecret = options.hmacSecret ?? randomBytes(32).toString('base64url');
    const base: Record<string, any> = {
      mode: 'production',
      stateDir: join(dir, 'state'),
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      process: { allowRoot: true },
      log: { level: 'info' },
      // Production mode takes secrets from files or the environment, not from the config file.
      auth: { algorithms: ['HS256'] },
      api: { keys: [{ name: 'test-admin', sha256: createHash('sha256').update(apiKey).digest('hex'), scopes: ['admin'] }], rateLimitPerIp: 100000, rateLimitPerKey: 100000 },
      // Pinned connections must stay on their worker.
      http: { keepAliveTimeoutMs: 120000 },
      limits: { newConnectionsPerIpPerSecond: 10000 },
      channels: {
        defaults: {},
        namespaces: [
          { name: 'public', allowAnonymous: true, clientPublish: true },
          { name: 'chat', presence: true, joinLeave: true, clientPublish: true },
        ],
      },
      cluster: { heartbeatIntervalMs: 250, heartbeatTimeoutMs: 2000, restartDelayMs: 100 },
      shutdown: { drainTimeoutMs: 5000 },
    };
    const configFile = join(dir, 'herald.json');
    writeFileSync(configFile, JSON.stringify(merge(base, options.config ?? {})), { mode: 0o600 });
    const child = spawn(process.execPath, [...SOURCE_NODE_ARGS, join(ROOT, 'src/cli/main.ts'), 'serve', '--config', configFile, '--workers', String(options.workers ?? 2)], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env['PATH'] ?? '', HERALD_AUTH_HMAC_SECRET: hmacSecret, ...options.env },
    });
    const cluster = new TestCluster(dir, apiKey, hmacSecret, child);
    try {
      const ready = await cluster.waitLog((l) => l.msg === 'cluster ready', 40000, 'cluster ready');
      cluster.port = ready.port;
      cluster.adminPort = ready.adminPort;
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.port}/connection/websocket`;
  }

  get configFile(): string {
    return join(this.dir, 'herald.json');
  }

  /** The first log line (from now or ever, by `since`) matching `predicate`. */
  waitLog(predicate: (line: LogLine) => boolean, timeoutMs = 15000, label = 'log line', since = 0): Promise<LogLine> {
    return waitUntil(
      () => {
        for (let i = since; i < this.logs.length; i++) if (predicate(this.logs[i]!)) return this.logs[i];
        if (this.exit !== undefined) throw new Error(`cluster exited (${JSON.stringify(this.exit)}) while waiting for ${label}; ${this.tail()}`);
        return undefined;
      },
      { timeoutMs, intervalMs: 20, label, describe: () => this.tail() },
    );
  }

  tail(): string {
    return 'last log lines:\n' + this.logs.slice(-15).map((l) => JSON.stringify(l).slice(0, 300)).join('\n') + '\nstderr:\n' + this.stderr.slice(-10).join('\n');
  }

  /** Live workers as the primary announced them: worker id → its last `worker ready` line. */
  readyWorkers(): Map<number, LogLine> {
    const ready = new Map<number, LogLine>();
    for (const line of this.logs) if (line.msg === 'worker ready') ready.set(line.worker, line);
    for (const line of this.logs) {
      if (line.msg === 'worker exited unexpectedly; restarting' || line.msg === 'worker crash loop: not restarting this slot') ready.delete(line.worker);
    }
    return ready;
  }

  token(sub: string): Promise<string> {
    return hs256Token(this.hmacSecret, sub);
  }

  /** One API call on a fresh connection (any worker). */
  async api(method: string, body: unknown, timeoutMs = 20000): Promise<{ status: number; body: any }> {
    return request(this.port, undefined, `/api/${method}`, body, { authorization: `Bearer ${this.apiKey}` }, timeoutMs);
  }

  /** A pinned connection to each of `count` distinct workers. */
  async pinToWorkers(count: number): Promise<Pinned[]> {
    const byNode = new Map<string, Pinned>();
    for (let attempt = 0; attempt < 40 && byNode.size < count; attempt++) {
      const pinned = new Pinned(this);
      this.#pinned.push(pinned);
      const node = await pinned.node();
      if (byNode.has(node)) pinned.close();
      else byNode.set(node, pinned);
    }
    if (byNode.size < count) throw new Error(`could not reach ${count} distinct workers (got ${byNode.size})`);
    return [...byNode.values()];
  }

  /** SIGTERM, wait for the exit; SIGKILL the primary and the workers it announced if it lingers. */
  async stop(timeoutMs = 20000): Promise<void> {
    for (const pinned of this.#pinned) pinned.close();
    if (this.exit === undefined) {
      this.process.kill('SIGTERM');
      const timer = setTimeout(() => this.kill(), timeoutMs);
      await this.exited;
      clearTimeout(timer);
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** SIGKILL the primary and every worker pid it announced (only processes this test started). */
  kill(): void {
    for (const line of this.logs) {
      if (line.msg === 'worker started' && typeof line.pid === 'number') {
        try {
          process.kill(line.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    this.process.kill('SIGKILL');
  }
}

export interface WorkersOptions {
  readonly workers?: number;
  /** Names the files it writes in `dir` (`NAME.json`, `NAME-hmac`, the state directory `NAME-state`), so one test file can start several. */
  readonly name?: string;
}

/** A worker's node as the API's `info` lists it (each worker is a node; the answering one first). */
export interface WorkerNode {
  readonly id: string;
  readonly connections: number;
  readonly channels: number;
}

/** `herald serve --workers N` as a HeraldProcess, once every worker is listed by the API's `info`. */
export interface HeraldWorkers {
  readonly herald: HeraldProcess;
  readonly port: number;
  readonly url: string;
  readonly apiKey: string;
  /** The HS256 connection-token secret (`auth.hmacSecretFile`). */
  readonly hmacSecret: string;
  readonly stateDir: string;
  /** An HS256 connection token for `sub`, valid for an hour. */
  token(sub: string): Promise<string>;
  /** Every worker's node from one `info` request (whichever worker answers, from the snapshots it has). */
  nodes(): Promise<WorkerNode[]>;
  /** Channels held per node (Pusher taps included), from one `info` request: node id → count. */
  channelsByNode(): Promise<Map<string, number>>;
  /**
   * Opens connections with `open` into `into` until every worker holds some
   * and there are at least `min` (the primary does not hand them out
   * strictly in turn), waiting after each until the nodes' counts add up.
   */
  spread<T>(into: T[], open: () => Promise<T>, min?: number): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/**
 * The cluster set-up of the tests that need a real `herald serve` process
 * with `--workers` (its stderr, a SIGKILL, development mode) rather than a
 * production `TestCluster`: the cluster hook tests and the Pusher cluster
 * tests. Writes an HS256 secret file and a config in `dir` (loopback,
 * ephemeral ports, a state directory in `dir`, connection and API rate
 * limits raised so that tests may poll `info`), `config` deep-merged into
 * it; the API key comes in HERALD_API_KEY. A process that fails to list
 * every worker is stopped before the error is thrown; HeraldProcess kills
 * what is left when the test file ends.
 */
export async function startHeraldWorkers(dir: string, config: Record<string, any> = {}, options: WorkersOptions = {}): Promise<HeraldWorkers> {
  const name = options.name ?? 'herald';
  const workers = options.workers ?? 2;
  const hmacSecret = randomBytes(32).toString('base64url');
  const hmacFile = join(dir, `${name}-hmac`);
  writeFileSync(hmacFile, hmacSecret, { mode: 0o600 });
  const stateDir = join(dir, `${name}-state`);
  const base: Record<string, any> = {
    auth: { hmacSecretFile: hmacFile },
    listen: { host: '127.0.0.1', port: 0 },
    admin: { port: 0 },
    stateDir,
    log: { level: 'info' },
    process: { allowRoot: true },
    limits: { newConnectionsPerIpPerSecond: 100000 },
    // Tests poll /api/info every 20 ms: the default 600 per IP per minute would answer 429.
    api: { rateLimitPerIp: 100000, rateLimitPerKey: 100000 },
  };
  const configFile = join(dir, `${name}.json`);
  writeFileSync(configFile, JSON.stringify(merge(base, config)), { mode: 0o600 });
  const apiKey = randomBytes(24).toString('base64url');
  const herald = new HeraldProcess(['--config', configFile, '--workers', String(workers)], dir, { HERALD_API_KEY: apiKey });
  try {
    const port = await herald.listeningPort();
    const url = `http://127.0.0.1:${port}`;
    const nodes = async (): Promise<WorkerNode[]> => {
      const response = await fetch(`${url}/api/info`, { method: 'POST', headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' }, body: '{}' });
      if (!response.ok) throw new Error(`info answered ${response.status}: ${await response.text()}`);
      return ((await response.json()) as { nodes: WorkerNode[] }).nodes;
    };
    await eventually(async () => ((await nodes()).length === workers ? true : undefined), `info listing ${workers} workers`, 30000);
    const total = (list: WorkerNode[]) => list.reduce((sum, node) => sum + node.connections, 0);
    return {
      herald,
      port,
      url,
      apiKey,
      hmacSecret,
      stateDir,
      token: (sub) => hs256Token(hmacSecret, sub),
      nodes,
      channelsByNode: async () => new Map((await nodes()).map((node) => [node.id, node.channels])),
      async spread(into, open, min = 4) {
        for (let round = 0; round < 30; round++) {
          into.push(await open());
          const counts = await eventually(async () => {
            const list = await nodes();
            return total(list) === into.length ? list : undefined;
          }, 'node snapshots adding up', 15000);
          if (counts.every((node) => node.connections > 0) && into.length >= min) break;
        }
        // Each worker answers info from the snapshots it has: poll until one view shows every worker holding some.
        await eventually(async () => {
          const list = await nodes();
          return list.length === workers && list.every((node) => node.connections > 0) && total(list) === into.length ? true : undefined;
        }, 'connections on every worker', 30000);
      },
      stop: (signal) => herald.stop(signal),
    };
  } catch (error) {
    await herald.stop('SIGKILL');
    throw error;
  }
}

/** One kept-alive HTTP connection, hence one worker. Fails if the connection is replaced. */
export class Pinned {
  readonly #cluster: TestCluster;
  readonly agent = new http.Agent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1, keepAliveMsecs: 1000 });
  #socket: Socket | undefined;
  #node: string | undefined;

  constructor(cluster: TestCluster) {
    this.#cluster = cluster;
  }

  async post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
    return request(this.#cluster.port, this, path, body, headers);
  }

  api(method: string, body: unknown): Promise<{ status: number; body: any }> {
    return this.post(`/api/${method}`, body, { authorization: `Bearer ${this.#cluster.apiKey}` });
  }

  /** The node id of the worker behind this connection. */
  async node(): Promise<string> {
    if (this.#node !== undefined) return this.#node;
    const info = await this.api('info', {});
    if (info.status !== 200) throw new Error(`info answered ${info.status}`);
    this.#node = info.body.nodes[0].id as string;
    return this.#node;
  }

  /** Live connection count of this worker (exact: the answering node's own entry). */
  async connections(): Promise<number> {
    const info = await this.api('info', {});
    return info.body.nodes[0].connections as number;
  }

  /** Checks (and records) that requests keep using the same socket. */
  adopt(socket: Socket): void {
    if (this.#socket === undefined) this.#socket = socket;
    else if (this.#socket !== socket) throw new Error('the pinned connection was replaced (another worker may answer)');
  }

  close(): void {
    this.agent.destroy();
  }
}

function request(port: number, pinned: Pinned | undefined, path: string, body: unknown, headers: Record<string, string>, timeoutMs = 20000): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? '' : JSON.stringify(body);
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent: pinned?.agent ?? false,
        headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), 'content-length': String(Buffer.byteLength(text)), ...headers },
      },
      (res) => {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (data += chunk));
        res.on('end', () => {
          clearTimeout(timer);
          let parsed: unknown = data;
          try {
            parsed = JSON.parse(data);
          } catch {
            // keep text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', reject);
      },
    );
    const timer = setTimeout(() => req.destroy(new Error(`no answer to ${path} within ${timeoutMs} ms`)), timeoutMs);
    req.on('socket', (socket) => {
      try {
        pinned?.adopt(socket);
      } catch (error) {
        req.destroy(error as Error);
      }
    });
    req.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    req.end(text);
  });
}

export interface Recovery {
  readonly recovered: boolean;
  readonly wasRecovering: boolean;
}

/**
 * A WebSocket subscriber of one channel that reconnects (after any close)
 * and resubscribes with recovery from its last position, as the SDK does.
 */
export class RecoveringWs {
  readonly url: string;
  readonly channel: string;
  /** Offsets received, in arrival order. */
  readonly offsets: number[] = [];
  /** Offsets that did not follow the previous one (never expected). */
  readonly gaps: { expected: number; got: number }[] = [];
  readonly recoveries: Recovery[] = [];
  readonly closeCodes: number[] = [];
  epoch = '';
  offset = 0;
  #ws: WebSocket | undefined;
  #stopped = false;
  #id = 0;
  subscribed = false;

  /** `from`: start by recovering from this position instead of subscribing fresh. */
  constructor(url: string, channel: string, from?: { epoch: string; offset: number }) {
    this.url = url;
    this.channel = channel;
    if (from !== undefined) {
      this.epoch = from.epoch;
      this.offset = from.offset;
      this.#resume = true;
    }
  }

  #resume = false;

  /** Resolves once subscribed the first time. */
  async start(): Promise<void> {
    void this.#run();
    await waitUntil(() => this.subscribed, { timeoutMs: 15000, label: `subscribed to ${this.channel}` });
  }

  get reconnects(): number {
    return this.recoveries.length;
  }

  async #run(): Promise<void> {
    let first = !this.#resume;
    while (!this.#stopped) {
      try {
        await this.#session(first);
        first = false;
      } catch {
        // connection refused or reset: try again
      }
      if (!this.#stopped) await sleep(50 + Math.random() * 100);
    }
  }

  /** One connection, until it closes. */
  #session(first: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, { perMessageDeflate: false });
      this.#ws = ws;
      let opened = false;
      ws.on('open', () => {
        opened = true;
        ws.send(JSON.stringify({ id: ++this.#id, method: 'connect', params: {} }));
      });
      const connectId = this.#id + 1;
      ws.on('message', (raw) => {
        const frame = JSON.parse(String(raw)) as Record<string, any>;
        if (frame.push === 'ping') {
          ws.send('{"method":"pong"}');
          return;
        }
        if (frame.id === connectId && frame.result !== undefined) {
          const params: Record<string, unknown> = { channel: this.channel };
          if (!first) Object.assign(params, { recover: true, epoch: this.epoch, offset: this.offset });
          ws.send(JSON.stringify({ id: ++this.#id, method: 'subscribe', params }));
          return;
        }
        if (frame.id !== undefined && frame.result !== undefined && frame.result.recoverable !== undefined) {
          const result = frame.result;
          if (!first) this.recoveries.push({ recovered: result.recovered === true, wasRecovering: result.was_recovering === true });
          if (first || result.recovered !== true) {
            this.epoch = result.epoch;
            this.offset = result.offset;
          }
          this.subscribed = true;
          return;
        }
        if (frame.id !== undefined && frame.error !== undefined) {
          ws.terminate();
          return;
        }
        if (frame.push === 'publication' && frame.channel === this.channel) {
          if (frame.offset !== this.offset + 1) this.gaps.push({ expected: this.offset + 1, got: frame.offset });
          this.offset = frame.offset;
          this.offsets.push(frame.offset);
          return;
        }
        if (frame.push === 'unsubscribed') ws.terminate();
      });
      ws.on('close', (code) => {
        this.closeCodes.push(code);
        resolve();
      });
      ws.on('error', (error) => {
        if (!opened) reject(error);
      });
    });
  }

  stop(): void {
    this.#stopped = true;
    this.#ws?.terminate();
  }
}

/**
 * Publishes to `channel` on fresh connections (spread over the workers)
 * until stopped; failed publishes are retried and not counted.
 * Returns the acknowledged offsets.
 */
export function publishLoop(cluster: TestCluster, channel: string, intervalMs = 10): { stop(): Promise<number[]>; acked: number[]; failures: number } {
  let stopped = false;
  const state = { acked: [] as number[], failures: 0 };
  let n = 0;
  const done = (async () => {
    while (!stopped) {
      try {
        // A connection held by a worker as it dies is closed (not acknowledged, retried); the bound only keeps the loop going.
        const answer = await cluster.api('publish', { channel, data: { n: n++ } }, 3000);
        if (answer.status === 200) state.acked.push(answer.body.offset);
        else state.failures++;
      } catch {
        state.failures++;
      }
      await sleep(intervalMs);
    }
  })();
  return {
    acked: state.acked,
    get failures() {
      return state.failures;
    },
    async stop() {
      stopped = true;
      await done;
      return state.acked;
    },
  };
}

function hs256Token(secret: string, sub: string): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(sub)
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
    .sign(new TextEncoder().encode(secret));
}

function merge(base: Record<string, any>, extra: Record<string, any>): Record<string, any> {
  const out: Record<string, any> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    if (v && typeof v === 'object' && !Array.isArray(v) && base[k] && typeof base[k] === 'object' && !Array.isArray(base[k])) out[k] = merge(base[k], v);
    else out[k] = v;
  }
  return out;
}
