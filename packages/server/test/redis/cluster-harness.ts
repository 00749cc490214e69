/**
 * A private Redis Cluster for tests: three masters and three replicas
 * (`redis-server --cluster-enabled yes` on spare loopback ports, joined by
 * `redis-cli --cluster create --cluster-replicas 1`), stopped by PID. Nodes
 * declare each other failed after `cluster-node-timeout` (1 s here), so a
 * killed master's replica takes over within seconds.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { freePort, pingRedis } from './harness.ts';
import { sleep, withTimeout } from '../helpers/rt-util.ts';

const run = promisify(execFile);

export interface ClusterNode {
  readonly port: number;
  child: ChildProcess | undefined;
  readonly log: string[];
}

/** `CLUSTER NODES`, one line parsed. */
export interface NodeView {
  readonly id: string;
  readonly port: number;
  readonly master: boolean;
  readonly failed: boolean;
  /** The master's id, for a replica. */
  readonly masterId: string | undefined;
  readonly slots: readonly [number, number][];
}

export class RedisClusterFixture {
  readonly dir: string;
  readonly nodes: ClusterNode[] = [];

  private constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'herald-redis-cluster-'));
  }

  /** Seed URLs (every node). */
  get urls(): string[] {
    return this.nodes.map((node) => `redis://127.0.0.1:${node.port}`);
  }

  static async start(masters = 3): Promise<RedisClusterFixture> {
    const cluster = new RedisClusterFixture();
    try {
      const ports: number[] = [];
      while (ports.length < masters * 2) {
        const port = await freePort();
        // The cluster bus listens on port + 10000: it must be free too.
        if (port + 10000 < 65536 && !ports.includes(port) && (await canBind(port + 10000))) ports.push(port);
      }
      await Promise.all(ports.map((port) => cluster.#launch(port)));
      await run('redis-cli', ['--cluster', 'create', ...ports.map((port) => `127.0.0.1:${port}`), '--cluster-replicas', '1', '--cluster-yes'], { timeout: 30000 });
      await cluster.waitHealthy();
    } catch (error) {
      await cluster.close();
      throw error;
    }
    return cluster;
  }

  async #launch(port: number): Promise<void> {
    const log: string[] = [];
    const child = spawn(
      'redis-server',
      [
        '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes',
        '--cluster-config-file', join(this.dir, `nodes-${port}.conf`), '--cluster-node-timeout', '1000',
        '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--dir', this.dir, '--dbfilename', `dump-${port}.rdb`, '--loglevel', 'warning',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const node: ClusterNode = { port, child, log };
    this.nodes.push(node);
    createInterface({ input: child.stdout! }).on('line', (line) => log.push(line));
    createInterface({ input: child.stderr! }).on('line', (line) => log.push(line));
    const deadline = Date.now() + 10000;
    while (!(await pingRedis(port))) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server on ${port} did not start:\n${log.join('\n')}`);
      await sleep(20);
    }
  }

  /** Runs one command on one node over a short-lived connection. */
  async command(port: number, ...args: (string | number)[]): Promise<unknown> {
    const redis = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false, retryStrategy: () => null });
    redis.on('error', () => {});
    try {
      await redis.connect();
      return await redis.call(String(args[0]), ...args.slice(1).map(String));
    } finally {
      redis.disconnect();
    }
  }

  running(): ClusterNode[] {
    return this.nodes.filter((node) => node.child !== undefined && node.child.exitCode === null && node.child.signalCode === null);
  }

  /** The topology as one running node sees it. */
  async view(): Promise<NodeView[]> {
    const text = String(await this.command(this.running()[0]!.port, 'CLUSTER', 'NODES'));
    return text
      .trim()
      .split('\n')
      .map((line) => {
        const parts = line.split(' ');
        const flags = parts[2]!.split(',');
        const slots: [number, number][] = [];
        for (const range of parts.slice(8)) {
          if (range.startsWith('[')) continue;
          const [from, to] = range.split('-');
          slots.push([Number(from), Number(to ?? from)]);
        }
        return {
          id: parts[0]!,
          port: Number(parts[1]!.split(':')[1]!.split('@')[0]),
          master: flags.includes('master'),
          failed: flags.includes('fail') || flags.includes('fail?'),
          masterId: parts[3] === '-' ? undefined : parts[3],
          slots,
        };
      });
  }

  /** Waits until every running node says `cluster_state:ok` and agrees on one master per slot range. */
  async waitHealthy(timeoutMs = 30000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const states = await Promise.all(this.running().map((node) => this.command(node.port, 'CLUSTER', 'INFO').then(String, () => '')));
      if (states.every((info) => info.includes('cluster_state:ok'))) return;
      if (Date.now() > deadline) throw new Error(`cluster not healthy within ${timeoutMs} ms:\n${states.join('\n---\n')}`);
      await sleep(100);
    }
  }

  /** The master serving `slot`, as the running nodes see it. */
  async masterOf(slot: number): Promise<NodeView> {
    const view = await this.view();
    const master = view.find((node) => node.master && !node.failed && node.slots.some(([from, to]) => slot >= from && slot <= to));
    if (master === undefined) throw new Error(`no master for slot ${slot}`);
    return master;
  }

  async replicaOf(master: NodeView): Promise<NodeView> {
    const replica = (await this.view()).find((node) => node.masterId === master.id && !node.failed);
    if (replica === undefined) throw new Error(`no replica of ${master.port}`);
    return replica;
  }

  /** Waits until `port` is a master serving slots according to every running node. */
  async waitMaster(port: number, timeoutMs = 30000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const views = await Promise.all(
        this.running().map((node) =>
          this.command(node.port, 'CLUSTER', 'NODES').then(
            (text) => String(text).split('\n').some((line) => line.includes(`:${port}@`) && line.includes('master') && !line.includes('fail') && line.split(' ').length > 8),
            () => false,
          ),
        ),
      );
      if (views.every(Boolean)) return;
      if (Date.now() > deadline) throw new Error(`${port} did not become a master within ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  /**
   * Moves one slot (and its keys) to another master, as `redis-cli --cluster
   * reshard` does: IMPORTING / MIGRATING, MIGRATE the keys, then SETSLOT NODE
   * on every master.
   */
  async migrateSlot(slot: number, toPort: number): Promise<void> {
    const view = await this.view();
    const from = await this.masterOf(slot);
    const to = view.find((node) => node.port === toPort);
    if (to === undefined || !to.master || to.id === from.id) throw new Error(`cannot move slot ${slot} from ${from.port} to ${toPort}`);
    await this.command(to.port, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', from.id);
    await this.command(from.port, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', to.id);
    for (;;) {
      const keys = (await this.command(from.port, 'CLUSTER', 'GETKEYSINSLOT', slot, 100)) as string[];
      if (keys.length === 0) break;
      await this.command(from.port, 'MIGRATE', '127.0.0.1', to.port, '', 0, 5000, 'REPLACE', 'KEYS', ...keys);
    }
    for (const node of view.filter((n) => n.master && !n.failed)) await this.command(node.port, 'CLUSTER', 'SETSLOT', slot, 'NODE', to.id);
  }

  /** SIGKILLs one node (by the PID of the child this fixture started). */
  async kill(port: number): Promise<void> {
    const node = this.nodes.find((n) => n.port === port);
    const child = node?.child;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGKILL');
    await withTimeout(exited, 10000, `redis-server ${port} exit`);
  }

  async close(): Promise<void> {
    await Promise.all(
      this.nodes.map(async (node) => {
        const child = node.child;
        if (child !== undefined && child.exitCode === null && child.signalCode === null) {
          const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
          child.kill('SIGKILL');
          await withTimeout(exited, 5000, 'redis-server exit').catch(() => undefined);
        }
        node.child = undefined;
      }),
    );
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** Whether `redis-server` and `redis-cli` can be run. */
export async function redisClusterToolsAvailable(): Promise<boolean> {
  try {
    await run('redis-server', ['--version'], { timeout: 5000 });
    await run('redis-cli', ['--version'], { timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}
