/**
 * @fastify/rate-limit's two stores, bound for Herald's limits (the API's,
 * api/rate-limits.ts, and the new connections per IP in cluster scope,
 * edge/shared-connection-counts.ts): `LocalStore` (in-memory LRU, answers
 * synchronously) and `RedisStore` (one Lua script: INCR, then PEXPIRE on the
 * first hit of a window; answers later). Both count fixed windows.
 */
import { createRequire } from 'node:module';
import type { Cluster, Redis } from 'ioredis';

/** What a store answers for one hit. */
export interface StoreEntry {
  readonly current: number;
  /** Milliseconds left in the window. */
  readonly ttl: number;
}

/** The incr side of @fastify/rate-limit's stores. */
export interface CountingStore {
  incr(key: string, callback: (error: Error | null, entry: StoreEntry | null) => void, timeWindow: number, max: number): void;
}

/**
 * Told about each call to a shared store: `ok` after an answer, `failed`
 * after an error (the caller then judged by its own counts). Used to log
 * the switch to per-node counting and back once, not per request.
 */
export interface SharedStoreWatcher {
  ok(): void;
  failed(error: unknown): void;
}

type LocalStoreCtor = new (continueExceeding: boolean, exponentialBackoff: boolean, cache?: number) => CountingStore;
type RedisStoreCtor = new (continueExceeding: boolean, exponentialBackoff: boolean, redis: Redis | Cluster, key: string) => CountingStore;

// The plugin's package has no `exports` map: its store modules are reachable by path (CommonJS).
const require = createRequire(import.meta.url);
const LocalStore = require('@fastify/rate-limit/store/LocalStore.js') as LocalStoreCtor;
const RedisStore = require('@fastify/rate-limit/store/RedisStore.js') as RedisStoreCtor;

/** The plugin's LocalStore (fixed windows: no continueExceeding, no backoff; an LRU of 5000 keys). */
export function localCountingStore(): CountingStore {
  return new LocalStore(false, false);
}

/** The plugin's RedisStore under `keyPrefix` (fixed windows: no continueExceeding, no backoff). */
export function redisCountingStore(redis: Redis | Cluster, keyPrefix: string): CountingStore {
  return new RedisStore(false, false, redis, keyPrefix);
}
