/**
 * Stored apps in Redis (the redis engine): shared by every node, as durable
 * as the Redis's persistence. Every key carries the hash tag `{apps}` after
 * the engine's prefix, so the scripts below run on one Redis Cluster slot.
 *
 * Keys (P = `engine.redisPrefix`):
 * - `P:{apps}:apps` hash id → the record as JSON (the secret in it as it is).
 * - `P:{apps}:keys` hash key → id (keys unique across stored apps).
 * - `P:{apps}:version` counter, increased by every change.
 */
import type { Cluster, Redis } from 'ioredis';
import { changed, readSettings, type AppChange, type AppRecord, type AppStore, type CreateOutcome } from './app-store.ts';

/** KEYS: apps, keys, version; ARGV: id, key, record JSON. */
const CREATE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 'id_taken' end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 'key_taken' end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('INCR', KEYS[3])
return 'created'`;

/** KEYS: apps, version; ARGV: id, record JSON. */
const UPDATE = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('INCR', KEYS[2])
return 1`;

/** KEYS: apps, keys, version; ARGV: id, key. */
const DELETE = `
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[1] then redis.call('HDEL', KEYS[2], ARGV[2]) end
redis.call('INCR', KEYS[3])
return 1`;

interface Scripted {
  heraldAppsCreate(apps: string, keys: string, version: string, id: string, key: string, json: string): Promise<string>;
  heraldAppsUpdate(apps: string, version: string, id: string, json: string): Promise<number>;
  heraldAppsDelete(apps: string, keys: string, version: string, id: string, key: string): Promise<number>;
}

function parse(json: string, id: string): AppRecord | undefined {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (typeof raw['key'] !== 'string' || typeof raw['secret'] !== 'string') return undefined;
  return {
    ...readSettings(JSON.stringify(raw), id),
    id,
    key: raw['key'],
    secret: raw['secret'],
    createdAt: Number(raw['createdAt'] ?? 0),
    updatedAt: Number(raw['updatedAt'] ?? 0),
  };
}

export class RedisAppStore implements AppStore {
  readonly #redis: Redis | Cluster;
  readonly #s: Scripted;
  readonly #apps: string;
  readonly #keys: string;
  readonly #version: string;

  constructor(redis: Redis | Cluster, prefix: string) {
    this.#redis = redis;
    if (!('heraldAppsCreate' in redis)) {
      redis.defineCommand('heraldAppsCreate', { numberOfKeys: 3, lua: CREATE });
      redis.defineCommand('heraldAppsUpdate', { numberOfKeys: 2, lua: UPDATE });
      redis.defineCommand('heraldAppsDelete', { numberOfKeys: 3, lua: DELETE });
    }
    this.#s = redis as unknown as Scripted;
    const p = `${prefix}:{apps}:`;
    this.#apps = p + 'apps';
    this.#keys = p + 'keys';
    this.#version = p + 'version';
  }

  async list(): Promise<AppRecord[]> {
    const all = await this.#redis.hgetall(this.#apps);
    const records: AppRecord[] = [];
    for (const [id, json] of Object.entries(all)) {
      const parsed = parse(json, id);
      if (parsed !== undefined) records.push(parsed);
    }
    return records.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  async get(id: string): Promise<AppRecord | undefined> {
    const json = await this.#redis.hget(this.#apps, id);
    return json === null ? undefined : parse(json, id);
  }

  async create(record: AppRecord): Promise<CreateOutcome> {
    return (await this.#s.heraldAppsCreate(this.#apps, this.#keys, this.#version, record.id, record.key, JSON.stringify(record))) as CreateOutcome;
  }

  async update(id: string, change: AppChange, now: number): Promise<AppRecord | undefined> {
    const existing = await this.get(id);
    if (existing === undefined) return undefined;
    const next = changed(existing, change, now);
    return (await this.#s.heraldAppsUpdate(this.#apps, this.#version, id, JSON.stringify(next))) === 1 ? next : undefined;
  }

  async delete(id: string): Promise<boolean> {
    const existing = await this.get(id);
    return (await this.#s.heraldAppsDelete(this.#apps, this.#keys, this.#version, id, existing?.key ?? '')) === 1;
  }

  async version(): Promise<number> {
    return Number((await this.#redis.get(this.#version)) ?? 0);
  }

  async close(): Promise<void> {}
}
