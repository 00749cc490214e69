/**
 * Test harness for the Redis engine suites (packages/server/test/redis/*.test.ts):
 *
 * - `RedisServer`: a private `redis-server` child on a spare loopback port,
 *   which a test may stop, restart on the same port, FLUSHALL or CLIENT KILL
 *   freely (never the machine's shared Redis).
 * - `RedisProxy`: a TCP proxy between Herald and Redis that can add latency,
 *   stall (hold every byte), or silently swap the upstream connection of a
 *   pub/sub client (its TCP connection stays up, Redis sees a fresh client: a
 *   silently lost subscription).
 * - `startRedisHerald`: an in-process Herald on the Redis engine (the same
 *   composition root as `herald serve`), sharing a token secret with its
 *   peers so one token works on every node.
 * - `spawnRedisHerald`: `herald serve --config FILE` as a child process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { Redis } from 'ioredis';
import { startHerald } from '../helpers/herald.ts';
import { buildConfig } from '../../src/config/load.ts';
import { startServer, type HeraldServer } from '../../src/app/app.ts';
import { createRedisEngine, openRedisClients, type RedisClients } from '../../src/app/engine.ts';
import { deferred, sleep, withTimeout } from '../helpers/rt-util.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The Node running the tests (Node 24 from the workspace root's node_modules/.bin). */
export const NODE_BIN = process.execPath;

/** A port that was free a moment ago (bind 0, read, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

/** A unique key prefix for one test (valid for engine.redisPrefix). */
export function uniquePrefix(label: string): string {
  return `herald-test-${label}-${randomBytes(4).toString('hex')}`;
}

/** Resolves true when something answers PING on host:port within `timeoutMs`. */
export function pingRedis(port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString().startsWith('+PONG')));
  });
}

// ---------------------------------------------------------------------------
// A private redis-server

export class RedisServer {
  readonly port: number;
  readonly dir: string;
  child: ChildProcess | undefined;
  readonly log: string[] = [];
  /** More `redis-server` arguments (TLS, ACL users); the plain `port` stays open for the test's own commands. */
  readonly extraArgs: readonly string[];

  private constructor(port: number, extraArgs: readonly string[]) {
    this.port = port;
    this.extraArgs = extraArgs;
    this.dir = mkdtempSync(join(tmpdir(), 'herald-redis-'));
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts `redis-server` on a spare loopback port (no automatic persistence). */
  static async start(extraArgs: readonly string[] = []): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), extraArgs);
    await server.launch();
    return server;
  }

  /** Starts (again) on the same port; loads `dump.rdb` when a previous stop saved one. */
  async launch(): Promise<void> {
    const child = spawn(
      'redis-server',
      ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', this.dir, '--dbfilename', 'dump.rdb', '--loglevel', 'warning', ...this.extraArgs],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    createInterface({ input: child.stdout! }).on('line', (line) => this.log.push(line));
    createInterface({ input: child.stderr! }).on('line', (line) => this.log.push(line));
    const deadline = Date.now() + 10000;
    while (!(await pingRedis(this.port))) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server on ${this.port} did not start:\n${this.log.join('\n')}`);
      await sleep(20);
    }
  }

  /** Runs one command on a short-lived connection of its own. */
  async command(...args: (string | number)[]): Promise<unknown> {
    const redis = new Redis({ port: this.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
    redis.on('error', () => {});
    try {
      await redis.connect();
      return await redis.call(String(args[0]), ...args.slice(1).map(String));
    } finally {
      redis.disconnect();
    }
  }

  /**
   * Stops the server. `save`: `SHUTDOWN SAVE` (data survives the restart,
   * like a maintenance restart of a persistent Redis); otherwise SIGKILL
   * (data is lost).
   */
  async stop(options: { save: boolean }): Promise<void> {
    const child = this.child;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    if (options.save) {
      await this.command('SHUTDOWN', 'SAVE').catch(() => undefined);
    } else {
      child.kill('SIGKILL');
    }
    await withTimeout(exited, 10000, `redis-server ${this.port} exit`);
    this.child = undefined;
  }

  async close(): Promise<void> {
    const child = this.child;
    if (child !== undefined && child.exitCode === null && child.pid !== undefined) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGKILL');
      await withTimeout(exited, 5000, 'redis-server exit').catch(() => undefined);
    }
    this.child = undefined;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------
// A misbehaving TCP proxy in front of Redis

interface Pipe {
  readonly client: Socket;
  upstream: Socket;
  /** Bytes held (delay or stall), both directions. */
  held: number;
  /** Wires a (new) upstream socket to the client. */
  attach?: (upstream: Socket) => void;
  /** The client sent SUBSCRIBE on this connection (it is a pub/sub connection). */
  subscriber: boolean;
  /** Restart functions of its two directions (after a stall). */
  readonly kicks: (() => void)[];
}

/**
 * Forwards bytes both ways after `delayMs` (order kept even when the delay
 * changes); `stalled` holds every byte until it is cleared, `stallCommands`
 * only those of connections that never sent SUBSCRIBE.
 */
export class RedisProxy {
  readonly targetPort: number;
  delayMs = 0;
  #stalled = false;
  #stallCommands = false;
  readonly pipes = new Set<Pipe>();
  /** Connections accepted from Herald so far. */
  accepted = 0;
  #server: Server | undefined;
  port = 0;
  readonly #queues = new Set<() => void>();

  constructor(targetPort: number) {
    this.targetPort = targetPort;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get stalled(): boolean {
    return this.#stalled;
  }

  set stalled(value: boolean) {
    this.#stalled = value;
    if (!value) for (const kick of this.#queues) kick();
  }

  /** Holds the bytes of command connections only (pub/sub connections flow). */
  get stallCommands(): boolean {
    return this.#stallCommands;
  }

  set stallCommands(value: boolean) {
    this.#stallCommands = value;
    if (!value) for (const kick of this.#queues) kick();
  }

  #holds(pipe: Pipe): boolean {
    return this.#stalled || (this.#stallCommands && !pipe.subscriber);
  }

  /** Bytes currently held by the proxy (both directions, all connections). */
  get heldBytes(): number {
    let total = 0;
    for (const pipe of this.pipes) total += pipe.held;
    return total;
  }

  async listen(): Promise<void> {
    this.#server = createServer((client) => this.#accept(client));
    await new Promise<void>((resolve) => this.#server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as AddressInfo).port;
  }

  #accept(client: Socket): void {
    this.accepted++;
    client.setNoDelay(true);
    const pipe: Pipe = { client, upstream: this.#connectUpstream(), held: 0, subscriber: false, kicks: [] };
    this.pipes.add(pipe);
    this.#wire(pipe);
    client.on('error', () => {});
    client.on('close', () => {
      this.pipes.delete(pipe);
      for (const kick of pipe.kicks) this.#queues.delete(kick);
      pipe.upstream.destroy();
    });
  }

  #connectUpstream(): Socket {
    const upstream = connect(this.targetPort, '127.0.0.1');
    upstream.setNoDelay(true);
    upstream.on('error', () => {});
    return upstream;
  }

  /** A direction: FIFO queue of chunks, each released at max(arrival + delay, previous release). */
  #forwarder(pipe: Pipe, write: (chunk: Buffer) => void): (chunk: Buffer) => void {
    const queue: { due: number; chunk: Buffer }[] = [];
    let lastDue = 0;
    let timer: NodeJS.Timeout | undefined;
    const pump = (): void => {
      timer = undefined;
      while (queue.length > 0 && !this.#holds(pipe)) {
        const head = queue[0]!;
        const wait = head.due - Date.now();
        if (wait > 0) {
          timer = setTimeout(pump, wait);
          return;
        }
        queue.shift();
        pipe.held -= head.chunk.length;
        write(head.chunk);
      }
    };
    const kick = (): void => {
      if (timer === undefined) pump();
    };
    this.#queues.add(kick);
    pipe.kicks.push(kick);
    return (chunk) => {
      if (this.delayMs === 0 && !this.#holds(pipe) && queue.length === 0) {
        write(chunk);
        return;
      }
      lastDue = Math.max(Date.now() + this.delayMs, lastDue);
      queue.push({ due: lastDue, chunk });
      pipe.held += chunk.length;
      if (timer === undefined && !this.#holds(pipe)) pump();
    };
  }

  #wire(pipe: Pipe): void {
    const toUpstream = this.#forwarder(pipe, (chunk) => pipe.upstream.write(chunk));
    const toClient = this.#forwarder(pipe, (chunk) => {
      if (!pipe.client.destroyed) pipe.client.write(chunk);
    });
    pipe.client.on('data', (chunk: Buffer) => {
      if (!pipe.subscriber && /\r\n\$9\r\nsubscribe\r\n/i.test(chunk.toString('latin1'))) pipe.subscriber = true;
      toUpstream(chunk);
    });
    const attach = (upstream: Socket) => {
      upstream.on('data', toClient);
      // Redis closing the upstream closes the client, unless the proxy swapped it on purpose.
      upstream.on('close', () => {
        if (pipe.upstream === upstream) pipe.client.destroy();
      });
    };
    attach(pipe.upstream);
    pipe.attach = attach;
  }

  /**
   * Replaces the upstream connection of every pub/sub client by a fresh one,
   * silently: Herald's socket stays open, but Redis now sees a new client
   * with no subscriptions. (Command connections are left alone: swapping one
   * with replies in flight would misalign them, which no real network does.)
   * Returns how many were swapped.
   */
  swapSubscriberUpstreams(): number {
    let swapped = 0;
    for (const pipe of this.pipes) {
      if (!pipe.subscriber) continue;
      swapped++;
      const old = pipe.upstream;
      pipe.upstream = this.#connectUpstream();
      pipe.attach?.(pipe.upstream);
      old.destroy();
    }
    return swapped;
  }

  /** Cuts every connection (both sides). */
  dropAll(): void {
    for (const pipe of this.pipes) {
      pipe.client.destroy();
      pipe.upstream.destroy();
    }
    this.pipes.clear();
  }

  async close(): Promise<void> {
    this.#stalled = false;
    this.#stallCommands = false;
    this.dropAll();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }
}

// ---------------------------------------------------------------------------
// Herald nodes on the Redis engine

/** What a follower or publisher needs to reach one node. */
export interface Target {
  readonly name: string;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `ws://127.0.0.1:PORT/connection/websocket` */
  readonly wsUrl: string;
  readonly apiKey: string;
}

/** Namespaces of every Redis test node: the test helper's, plus `chaos` with a long history. */
export const NAMESPACES = [
  { name: 'chat', presence: true, joinLeave: true, clientPublish: true },
  { name: 'public', allowAnonymous: true, clientPublish: true },
  { name: 'nohistory', historySize: 0 },
  { name: 'chaos', historySize: 20000, historyTtlMs: 600000, presence: true },
  { name: 'short', historySize: 20, historyTtlMs: 600000 },
];

/** A shared HS256 secret for the nodes of one test, and tokens signed with it. */
export class Tokens {
  readonly secret = randomBytes(32).toString('base64url');

  sign(sub: string, claims: Record<string, unknown> = {}, ttlSeconds = 3600): Promise<string> {
    return new SignJWT({ ...claims })
      .setProtectedHeader({ alg: 'HS256' })
      .setSubject(sub)
      .setIssuedAt()
      .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
      .sign(new TextEncoder().encode(this.secret));
  }
}

export interface RedisHerald extends Target {
  readonly server: HeraldServer;
  /** The engine's Redis clients, when the test built the engine itself (`ownEngine`). */
  readonly clients: RedisClients | undefined;
  /** Health changes the engine reported (`ownEngine` only). */
  readonly healthChanges: { readonly healthy: boolean; readonly reason: string; readonly at: number }[];
  /** Flips of the engine's delivery probe (`ownEngine` only): the failure, or undefined once it passes again. */
  readonly probeChanges: { readonly failure: string | undefined; readonly at: number }[];
  /** GET /health on the public listener. */
  health(): Promise<{ status: number; body: any }>;
  /** GET /health/ready on the public listener. */
  ready(): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

export interface RedisHeraldOptions {
  readonly redisUrl: string;
  readonly prefix: string;
  readonly tokens: Tokens;
  /** More `engine.*` options. */
  readonly engine?: Record<string, unknown>;
  readonly overrides?: Record<string, any>;
  /**
   * Build the engine in the test with the composition root's own functions
   * (`openRedisClients`, `createRedisEngine`) and hand it to `startServer`,
   * so the test can look at its Redis clients and health reports.
   */
  readonly ownEngine?: boolean;
}

/** An in-process Herald on the Redis engine at `redisUrl` under `prefix`. */
export async function startRedisHerald(name: string, options: RedisHeraldOptions): Promise<RedisHerald> {
  const overrides = {
    auth: { hmacSecret: options.tokens.secret },
    engine: { type: 'redis', redisUrl: options.redisUrl, redisPrefix: options.prefix, ...(options.engine ?? {}) },
    channels: { defaults: {}, namespaces: NAMESPACES },
    ...(options.overrides ?? {}),
  };
  let server: HeraldServer;
  let apiKey: string;
  let clients: RedisClients | undefined;
  const healthChanges: { healthy: boolean; reason: string; at: number }[] = [];
  const probeChanges: { failure: string | undefined; at: number }[] = [];
  if (options.ownEngine === true) {
    apiKey = randomBytes(24).toString('base64url');
    const config = buildConfig(
      {
        mode: 'production',
        listen: { host: '127.0.0.1', port: 0 },
        admin: { host: '127.0.0.1', port: 0 },
        process: { allowRoot: true },
        limits: { newConnectionsPerIpPerSecond: 100000 },
        log: { level: 'silent' },
        api: { keys: [{ name: 'test-admin', sha256: createHash('sha256').update(apiKey).digest('hex'), scopes: ['admin'] }], rateLimitPerIp: 1000000, rateLimitPerKey: 1000000 },
        ...overrides,
      },
      { env: {} },
    );
    clients = await openRedisClients(config);
    const engine = await createRedisEngine(
      config,
      clients,
      () => {},
      (healthy, reason) => healthChanges.push({ healthy, reason, at: Date.now() }),
    );
    engine.deliveryProbe?.onChange((failure) => probeChanges.push({ failure, at: Date.now() }));
    server = await startServer({ config, engine });
  } else {
    const h = await startHerald(overrides);
    server = h.server;
    apiKey = h.apiKey;
  }
  const url = `http://127.0.0.1:${server.port}`;
  return {
    name,
    server,
    url,
    wsUrl: `ws://127.0.0.1:${server.port}/connection/websocket`,
    apiKey,
    clients,
    healthChanges,
    probeChanges,
    async health() {
      const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(5000) });
      return { status: response.status, body: await response.json().catch(() => undefined) };
    },
    async ready() {
      const response = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(5000) });
      return { status: response.status, body: await response.json().catch(() => undefined) };
    },
    close: () => server.close(),
  };
}

/** POST /api/<method> on a target, bounded by `timeoutMs`. Network failures answer status 0. */
export async function callApi(
  target: Target,
  method: string,
  body: unknown,
  timeoutMs = 10000,
): Promise<{ status: number; body: any; ms: number; error?: string }> {
  const started = Date.now();
  try {
    const response = await fetch(`${target.url}/api/${method}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${target.apiKey}` },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // keep the text
    }
    return { status: response.status, body: parsed, ms: Date.now() - started };
  } catch (error) {
    return { status: 0, body: undefined, ms: Date.now() - started, error: (error as Error).message };
  }
}

// ---------------------------------------------------------------------------
// Herald as a child process

export interface SpawnedHerald extends Target {
  readonly child: ChildProcess;
  readonly port: number;
  readonly stdout: string[];
  readonly stderr: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
}

const spawnedDirs: string[] = [];
const spawnedChildren: ChildProcess[] = [];

/** `herald serve --config FILE` on the Redis engine; resolves once it logs "listening". */
export async function spawnRedisHerald(
  name: string,
  options: {
    redisUrl: string;
    prefix: string;
    tokens: Tokens;
    drainTimeoutMs?: number;
    engine?: Record<string, unknown>;
    limits?: Record<string, unknown>;
    http?: Record<string, unknown>;
    /** More top-level config sections (e.g. webhooks). */
    overrides?: Record<string, unknown>;
    /** More `herald serve` arguments (e.g. --workers 2). */
    args?: readonly string[];
  },
): Promise<SpawnedHerald> {
  const apiKey = randomBytes(24).toString('base64url');
  const dir = mkdtempSync(join(tmpdir(), 'herald-redis-node-'));
  spawnedDirs.push(dir);
  const configPath = join(dir, 'herald.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      mode: 'production',
      stateDir: dir,
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      process: { allowRoot: true },
      log: { level: 'info' },
      limits: { newConnectionsPerIpPerSecond: 100000, ...(options.limits ?? {}) },
      ...(options.http === undefined ? {} : { http: options.http }),
      auth: { algorithms: ['HS256'] },
      api: {
        keys: [{ name: 'unused', sha256: createHash('sha256').update(randomBytes(16)).digest('hex'), scopes: ['read'] }],
        rateLimitPerIp: 1000000,
        rateLimitPerKey: 1000000,
      },
      engine: { type: 'redis', redisUrl: options.redisUrl, redisPrefix: options.prefix, ...(options.engine ?? {}) },
      channels: { defaults: {}, namespaces: NAMESPACES },
      shutdown: { drainTimeoutMs: options.drainTimeoutMs ?? 10000 },
      ...(options.overrides ?? {}),
    }),
  );
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('HERALD_')) env[k] = v;
  env['HERALD_API_KEY'] = apiKey;
  // Production mode takes secrets from files or the environment, not from the config file.
  env['HERALD_AUTH_HMAC_SECRET'] = options.tokens.secret;
  const child = spawn(NODE_BIN, [...SOURCE_NODE_ARGS, 'src/cli/main.ts', 'serve', '--config', configPath, ...(options.args ?? [])], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  spawnedChildren.push(child);
  const stdout: string[] = [];
  const stderr: string[] = [];
  const exited = deferred<{ code: number | null; signal: NodeJS.Signals | null; at: number }>();
  child.on('exit', (code, signal) => exited.resolve({ code, signal, at: Date.now() }));
  const listening = deferred<number>();
  createInterface({ input: child.stdout! }).on('line', (line) => {
    stdout.push(line);
    try {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry['msg'] === 'listening' && typeof entry['port'] === 'number') listening.resolve(entry['port']);
    } catch {
      // not JSON
    }
  });
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  void exited.promise.then((e) => listening.reject(new Error(`herald ${name} exited (${e.code}/${e.signal}) before listening:\n${stdout.join('\n')}\n${stderr.join('\n')}`)));
  const port = await withTimeout(listening.promise, 30000, `herald ${name} "listening"`);
  return {
    name,
    child,
    port,
    url: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/connection/websocket`,
    apiKey,
    stdout,
    stderr,
    exited: exited.promise,
  };
}

/** SIGKILLs spawned Herald children still running (by PID) and removes their directories. */
export function cleanupSpawned(): void {
  for (const child of spawnedChildren) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  spawnedChildren.length = 0;
  for (const dir of spawnedDirs) rmSync(dir, { recursive: true, force: true });
  spawnedDirs.length = 0;
}

/** Deletes every key under `prefix` on a Redis (the shared one: never FLUSHALL it). */
export async function deletePrefix(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } catch {
    // best effort
  } finally {
    redis.disconnect();
  }
}
