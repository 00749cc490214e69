/**
 * Presence in Redis: a hash of client id → info per channel, with a sorted
 * set of expiry times. Entries expire unless refreshed, so a node that dies
 * leaves no ghosts; each node refreshes the entries it added every third of
 * the TTL. A call Redis cannot answer fails with BrokerUnavailableError
 * (116 / 503), like the broker's; removal is best effort.
 */
import type { Cluster, Redis } from 'ioredis';
import type { ClientInfo } from '@herald/protocol';
import { BrokerUnavailableError, type PresenceStats, type PresenceStore } from './broker.ts';

const getScript = `
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if #expired > 0 then
  redis.call('HDEL', KEYS[1], unpack(expired))
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
`;

export interface RedisPresenceOptions {
  readonly command: Redis | Cluster;
  readonly prefix: string;
  readonly ttlMs: number;
  readonly now?: () => number;
  readonly onError?: (error: unknown, what: string) => void;
}

export class RedisPresenceStore implements PresenceStore {
  readonly #redis: Redis | Cluster;
  readonly #prefix: string;
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #onError: (error: unknown, what: string) => void;
  /** What this node added: refreshed periodically. */
  readonly #local = new Map<string, Map<string, ClientInfo>>();
  readonly #timer: NodeJS.Timeout;

  constructor(options: RedisPresenceOptions) {
    this.#redis = options.command;
    this.#prefix = options.prefix;
    this.#ttlMs = options.ttlMs;
    this.#now = options.now ?? Date.now;
    this.#onError = options.onError ?? (() => {});
    this.#redis.defineCommand('heraldPresence', { numberOfKeys: 2, lua: getScript });
    this.#timer = setInterval(() => void this.#refresh(), Math.max(1000, Math.floor(this.#ttlMs / 3)));
    this.#timer.unref();
  }

  #keys(channel: string): [string, string] {
    return [`${this.#prefix}:{${channel}}:pres`, `${this.#prefix}:{${channel}}:pexp`];
  }

  async #write(channel: string, entries: readonly ClientInfo[]): Promise<void> {
    const [hash, zset] = this.#keys(channel);
    const expireAt = this.#now() + this.#ttlMs;
    const pipeline = this.#redis.multi();
    for (const info of entries) {
      pipeline.hset(hash, info.client, JSON.stringify(info));
      pipeline.zadd(zset, expireAt, info.client);
    }
    pipeline.pexpire(hash, this.#ttlMs);
    pipeline.pexpire(zset, this.#ttlMs);
    await pipeline.exec();
  }

  async add(channel: string, info: ClientInfo): Promise<void> {
    let members = this.#local.get(channel);
    if (members === undefined) {
      members = new Map();
      this.#local.set(channel, members);
    }
    members.set(info.client, info);
    try {
      await this.#write(channel, [info]);
    } catch (error) {
      this.#onError(error, 'presence add');
      throw new BrokerUnavailableError('redis presence add failed');
    }
  }

  async remove(channel: string, clientId: string): Promise<void> {
    const members = this.#local.get(channel);
    if (members !== undefined) {
      members.delete(clientId);
      if (members.size === 0) this.#local.delete(channel);
    }
    const [hash, zset] = this.#keys(channel);
    // Best effort: leaving must not fail while Redis is unreachable; the entry then expires.
    await this.#redis
      .multi()
      .hdel(hash, clientId)
      .zrem(zset, clientId)
      .exec()
      .catch((error: unknown) => this.#onError(error, 'presence remove'));
  }

  async get(channel: string): Promise<Record<string, ClientInfo>> {
    const [hash, zset] = this.#keys(channel);
    let flat: string[];
    try {
      flat = (await (this.#redis as unknown as { heraldPresence(...args: string[]): Promise<string[]> }).heraldPresence(hash, zset, String(this.#now()))) ?? [];
    } catch (error) {
      this.#onError(error, 'presence get');
      throw new BrokerUnavailableError('redis presence get failed');
    }
    const result: Record<string, ClientInfo> = Object.create(null) as Record<string, ClientInfo>;
    for (let i = 0; i + 1 < flat.length; i += 2) {
      try {
        result[flat[i]!] = JSON.parse(flat[i + 1]!) as ClientInfo;
      } catch {
        // a corrupt entry is skipped, not fatal
      }
    }
    return result;
  }

  async stats(channel: string): Promise<PresenceStats> {
    const members = await this.get(channel);
    const users = new Set<string>();
    let clients = 0;
    for (const id in members) {
      clients++;
      users.add(members[id]!.user);
    }
    return { numClients: clients, numUsers: users.size };
  }

  async #refresh(): Promise<void> {
    for (const [channel, members] of this.#local) {
      try {
        await this.#write(channel, [...members.values()]);
      } catch (error) {
        this.#onError(error, 'presence refresh');
      }
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
  }
}
