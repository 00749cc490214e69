/**
 * The connection limits per client IP counted across every node on one
 * Redis (`limits.scope: "cluster"`): `newConnectionsPerIpPerSecond` in
 * @fastify/rate-limit's RedisStore (a window of one second), and
 * `maxConnectionsPerIp` in per-node counts judged together.
 *
 * Open connections, per node: each node keeps a hash `…:node:<id>` (client
 * IP → its open connections on that node) and an entry in a sorted set of
 * live nodes (score: when the entry runs out). Admission is one Lua script,
 * atomic in Redis: the sum of the IP's counts over the live nodes, against
 * the cap, then this node's count + 1. Closing a connection takes 1 off.
 * A node renews its entry and its hash's expiry every third of
 * `limits.clusterNodeTtlMs` (the heartbeat).
 *
 * Accuracy:
 * - between live nodes the cap is exact (admission is atomic);
 * - a node that dies without closing (SIGKILL, power, lost network) keeps
 *   its connections counted for at most `clusterNodeTtlMs` (its entry in
 *   the live set runs out, then its hash expires); a node that shuts down
 *   deletes its counts at once;
 * - a call that fails (Redis unreachable or too slow, `engine.redisCommandTimeoutMs`)
 *   is judged by this node's own counts (the limit holds per node), and the
 *   node rewrites its whole hash from its own counts at the next heartbeat
 *   that reaches Redis (also when its hash went missing: a Redis restarted
 *   empty). The rewrite counts the admissions whose script went out before
 *   it (commands on one connection run in order) and leaves out the others
 *   (their script adds them); a refused one it counted is taken off again.
 *   Rarer interleavings (a call failing, or an answer arriving, just as a
 *   rewrite goes out) can leave a count one off until the next rewrite.
 *
 * Every key shares one hash tag (the prefix), so the script's keys live in
 * one slot of a Redis Cluster.
 */
import type { Cluster, Redis } from 'ioredis';
import { redisCountingStore, type CountingStore, type SharedStoreWatcher } from '../util/rate-limit-stores.ts';

/** What the shared counts answer for one new connection. */
export type SharedVerdict = 'admitted' | 'too_many_requests' | 'connection_limit' | 'unreachable';

/**
 * The cluster-wide side of the per-IP connection limits, used by
 * ConnectionLimiter (connection-limits.ts) when `limits.scope` is
 * "cluster". `admit` never rejects: a failed call answers 'unreachable' and
 * the caller judges by its own counts. Every 'admitted' is followed by
 * exactly one `release` of the same key (when the connection closes).
 */
export interface SharedConnectionCounts {
  admit(key: string): Promise<SharedVerdict>;
  /** Takes one of this node's connections of `key` off the shared count. */
  release(key: string): void;
  /**
   * Rewrites of this node's counts so far: a connection admitted by the
   * node's own counts (Redis unreachable) is in the shared count once a
   * rewrite happened after its admission.
   */
  readonly generation: number;
  /** This node's counts differ from its shared ones (a connection admitted while Redis was unreachable). */
  markDirty(): void;
  /** Deletes this node's counts (graceful shutdown); stops the heartbeat. */
  close(): Promise<void>;
}

export interface RedisConnectionCountsOptions {
  readonly redis: Redis | Cluster;
  /** engine.redisPrefix. */
  readonly prefix: string;
  readonly nodeId: string;
  readonly maxConnectionsPerIp: number;
  readonly newConnectionsPerIpPerSecond: number;
  /** limits.clusterNodeTtlMs. */
  readonly nodeTtlMs: number;
  /** This node's open connections per key (the truth a rewrite copies). */
  readonly localCounts: () => ReadonlyMap<string, number>;
  readonly watcher: SharedStoreWatcher;
}

const NOW_MS = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/** KEYS: live set, own hash. ARGV: node id, key, cap, ttl, hash name prefix. 1 admitted, 0 at the cap. */
const ADMIT =
  NOW_MS +
  `local sum = tonumber(redis.call('HGET', KEYS[2], ARGV[2])) or 0
local cap = tonumber(ARGV[3])
if sum < cap then
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
    if node ~= ARGV[1] then sum = sum + (tonumber(redis.call('HGET', ARGV[5] .. node, ARGV[2])) or 0) end
  end
end
if sum >= cap then return 0 end
local ttl = tonumber(ARGV[4])
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
`;

/** KEYS: own hash. ARGV: key. */
const RELEASE = `local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return left
`;

/** KEYS: live set, own hash. ARGV: node id, ttl. Renews this node; drops run-out nodes; 1 when the own hash exists. */
const HEARTBEAT =
  NOW_MS +
  `local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
redis.call('PEXPIRE', KEYS[1], ttl)
return redis.call('PEXPIRE', KEYS[2], ttl)
`;

interface CountScripts {
  heraldConnAdmit(live: string, own: string, nodeId: string, key: string, cap: number, ttl: number, hashPrefix: string): Promise<number>;
  heraldConnRelease(own: string, key: string): Promise<number>;
  heraldConnHeartbeat(live: string, own: string, nodeId: string, ttl: number): Promise<number>;
}

/** Fields written per HSET when a node rewrites its hash. */
const REWRITE_CHUNK = 1000;
const SECOND_MS = 1000;

/** The Redis names of the shared connection counts under `prefix`. */
export function connectionCountKeys(prefix: string, nodeId: string): { live: string; hashPrefix: string; own: string; perSecond: string } {
  const base = `${prefix}:limits:{${prefix}}:`;
  return { live: base + 'nodes', hashPrefix: base + 'node:', own: base + 'node:' + nodeId, perSecond: `${prefix}:limits:new-conn:` };
}

export class RedisConnectionCounts implements SharedConnectionCounts {
  readonly #options: RedisConnectionCountsOptions;
  readonly #scripts: CountScripts;
  readonly #keys: ReturnType<typeof connectionCountKeys>;
  readonly #perSecond: CountingStore;
  readonly #heartbeat: NodeJS.Timeout;
  /** This node's hash may differ from its own counts: rewrite it at the next heartbeat. */
  #dirty = false;
  #closed = false;
  #generation = 0;
  /** Admissions held on this node whose script has not gone to Redis yet, per key. */
  readonly #unsent = new Map<string, number>();

  constructor(options: RedisConnectionCountsOptions) {
    this.#options = options;
    const redis = options.redis;
    if (!('heraldConnAdmit' in redis)) {
      redis.defineCommand('heraldConnAdmit', { numberOfKeys: 2, lua: ADMIT });
      redis.defineCommand('heraldConnRelease', { numberOfKeys: 1, lua: RELEASE });
      redis.defineCommand('heraldConnHeartbeat', { numberOfKeys: 2, lua: HEARTBEAT });
    }
    this.#scripts = redis as unknown as CountScripts;
    this.#keys = connectionCountKeys(options.prefix, options.nodeId);
    this.#perSecond = redisCountingStore(redis, this.#keys.perSecond);
    this.#heartbeat = setInterval(() => void this.beat(), Math.max(100, Math.floor(options.nodeTtlMs / 3)));
    this.#heartbeat.unref();
    void this.beat();
  }

  async admit(key: string): Promise<SharedVerdict> {
    const o = this.#options;
    // Held by the caller already, not yet sent to Redis: a rewrite leaves it out (its script adds it).
    this.#unsent.set(key, (this.#unsent.get(key) ?? 0) + 1);
    try {
      const current = await new Promise<number>((resolve, reject) =>
        this.#perSecond.incr(key, (error, entry) => (error !== null || entry === null ? reject(error ?? new Error('no answer')) : resolve(entry.current)), SECOND_MS, o.newConnectionsPerIpPerSecond),
      );
      if (current > o.newConnectionsPerIpPerSecond) {
        o.watcher.ok();
        return 'too_many_requests';
      }
    } catch (error) {
      o.watcher.failed(error);
      return 'unreachable';
    } finally {
      // Sent below (or given back), in this same turn of the event loop.
      this.#sent(key);
    }
    const generation = this.#generation;
    try {
      const k = this.#keys;
      const admitted = await this.#scripts.heraldConnAdmit(k.live, k.own, o.nodeId, key, o.maxConnectionsPerIp, o.nodeTtlMs, k.hashPrefix);
      o.watcher.ok();
      if (admitted === 1) return 'admitted';
      // A rewrite sent after the script counted this refused connection: take it off again.
      if (this.#generation !== generation) this.release(key);
      return 'connection_limit';
    } catch (error) {
      // The script may have run: the rewrite settles it.
      this.#dirty = true;
      o.watcher.failed(error);
      return 'unreachable';
    }
  }

  #sent(key: string): void {
    const left = (this.#unsent.get(key) ?? 1) - 1;
    if (left <= 0) this.#unsent.delete(key);
    else this.#unsent.set(key, left);
  }

  release(key: string): void {
    if (this.#closed) return;
    this.#scripts.heraldConnRelease(this.#keys.own, key).then(
      () => this.#options.watcher.ok(),
      (error: unknown) => {
        this.#dirty = true;
        this.#options.watcher.failed(error);
      },
    );
  }

  get generation(): number {
    return this.#generation;
  }

  markDirty(): void {
    this.#dirty = true;
  }

  /** The heartbeat (exposed for tests): renews this node, rewrites its hash when needed. */
  async beat(): Promise<void> {
    if (this.#closed) return;
    const o = this.#options;
    const k = this.#keys;
    try {
      const exists = await this.#scripts.heraldConnHeartbeat(k.live, k.own, o.nodeId, o.nodeTtlMs);
      // What this node's hash should hold: its open connections, but those whose admission script is not sent yet.
      const counts = new Map(o.localCounts());
      for (const [key, unsent] of this.#unsent) {
        const left = (counts.get(key) ?? 0) - unsent;
        if (left > 0) counts.set(key, left);
        else counts.delete(key);
      }
      // No hash is normal for a node without connections; with some, Redis lost it (restarted empty, or it expired).
      if (this.#dirty || (exists === 0 && counts.size > 0)) {
        this.#dirty = false;
        await this.#rewrite(counts);
      }
      o.watcher.ok();
    } catch (error) {
      this.#dirty = true;
      o.watcher.failed(error);
    }
  }

  async #rewrite(counts: ReadonlyMap<string, number>): Promise<void> {
    // The snapshot and the commands are taken together, before any other command of this node can go out.
    this.#generation += 1;
    const own = this.#keys.own;
    const multi = this.#options.redis.multi().del(own);
    let fields: (string | number)[] = [];
    for (const [key, count] of counts) {
      fields.push(key, count);
      if (fields.length >= 2 * REWRITE_CHUNK) {
        multi.hset(own, ...fields);
        fields = [];
      }
    }
    if (fields.length > 0) multi.hset(own, ...fields);
    multi.pexpire(own, this.#options.nodeTtlMs);
    const results = await multi.exec();
    const failed = results?.find(([error]) => error !== null)?.[0];
    if (results === null || failed !== undefined) throw failed ?? new Error('rewrite aborted');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#heartbeat);
    const k = this.#keys;
    await this.#options.redis
      .multi()
      .del(k.own)
      .zrem(k.live, this.#options.nodeId)
      .exec()
      .catch(() => undefined);
  }
}
