/**
 * The server API's request limits (`api.rateLimitPerIp`, counted before the
 * key is checked, and `api.rateLimitPerKey`): fixed windows of a minute,
 * counted in @fastify/rate-limit's own stores with its IP grouping
 * (`normalizeIP`, its default: IPv4, an IPv4-mapped address as IPv4, other IPv6 by /64),
 * and judged as the plugin's limiter judges (over the limit when the count
 * passes `max`; Retry-After the rest of the window, in whole seconds).
 *
 * - `limits.scope: "node"`: the plugin's in-memory `LocalStore` (an LRU of
 *   5000 keys per limit), called synchronously: the plugin's
 *   `createRateLimit` wraps the same store in two promises per call, about a
 *   tenth of a publish. A hit answers at once (no promise).
 * - `limits.scope: "cluster"`: the plugin's `RedisStore` (one Lua script,
 *   INCR then PEXPIRE on the first hit of a window) on the engine's Redis
 *   connection, shared by every node: a hit answers a promise. The local
 *   store counts too; while Redis cannot be reached (a refused or timed-out
 *   call) its count decides: the limit then holds per node, never not at all.
 *
 * One instance serves both the fastify route and the lean path
 * (lean-routes.ts), so they count together.
 */
import { normalizeIPv6 } from '../edge/client-address.ts';
import { localCountingStore, type CountingStore, type SharedStoreWatcher, type StoreEntry } from '../util/rate-limit-stores.ts';

/** The shared side of a limit: a store every node counts in, and who hears of its failures. */
export interface SharedCounting {
  readonly store: CountingStore;
  readonly watcher: SharedStoreWatcher;
}

const WINDOW_MS = 60000;

/** Seconds until the window ends (≥ 1) when over `max`, else undefined. */
function judge(entry: StoreEntry, max: number): number | undefined {
  return entry.current > max ? Math.max(1, Math.ceil(entry.ttl / 1000)) : undefined;
}

export class RateLimit {
  readonly #store = localCountingStore();
  readonly #max: number;
  readonly #windowMs: number;
  readonly #shared: SharedCounting | undefined;

  constructor(max: number, shared?: SharedCounting, windowMs = WINDOW_MS) {
    this.#max = max;
    this.#shared = shared;
    this.#windowMs = windowMs;
  }

  /**
   * Counts one request under `key`: undefined while within the limit, else
   * the seconds until the window ends (≥ 1). Synchronous without a shared
   * store; with one, a promise that never rejects.
   */
  hit(key: string): number | undefined | Promise<number | undefined> {
    let entry: StoreEntry = { current: 0, ttl: 0 };
    // LocalStore answers synchronously.
    this.#store.incr(
      key,
      (_error, result) => {
        if (result !== null) entry = result;
      },
      this.#windowMs,
      this.#max,
    );
    const local = judge(entry, this.#max);
    const shared = this.#shared;
    if (shared === undefined) return local;
    return new Promise((resolve) => {
      shared.store.incr(
        key,
        (error, result) => {
          if (error !== null || result === null) {
            shared.watcher.failed(error);
            resolve(local);
          } else {
            shared.watcher.ok();
            resolve(judge(result, this.#max));
          }
        },
        this.#windowMs,
        this.#max,
      );
    });
  }
}

/** The stores of the two API limits when they are cluster-wide. */
export interface SharedApiCounting {
  readonly perIp: SharedCounting;
  readonly perKey: SharedCounting;
}

/** Both API limits: `byIp` with the client address, `byKey` with the key's name. */
export class ApiRateLimits {
  readonly #perIp: RateLimit;
  readonly #perKey: RateLimit;

  constructor(perIp: number, perKey: number, shared?: SharedApiCounting) {
    this.#perIp = new RateLimit(perIp, shared?.perIp);
    this.#perKey = new RateLimit(perKey, shared?.perKey);
  }

  byIp(ip: string): number | undefined | Promise<number | undefined> {
    // Without a colon the address is not IPv6: normalizeIP would only lower-case it (after an IPv6 regex test).
    return this.#perIp.hit(ip.includes(':') ? normalizeIPv6(ip) : ip.toLowerCase());
  }

  byKey(name: string): number | undefined | Promise<number | undefined> {
    return this.#perKey.hit('key:' + name);
  }
}
