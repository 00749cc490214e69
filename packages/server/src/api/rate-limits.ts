/**
 * The server API's request limits (`api.rateLimitPerIp`, counted before the
 * key is checked, and `api.rateLimitPerKey`): fixed windows of a minute,
 * counted in @fastify/rate-limit's own in-memory store (its `LocalStore`: an
 * LRU of 5000 keys per limit) with its IP grouping (`normalizeIP`: IPv4, an
 * IPv4-mapped address as IPv4, other IPv6 by /64), and judged as the
 * plugin's limiter judges (over the limit when the count passes `max`;
 * Retry-After the rest of the window, in whole seconds). Called
 * synchronously: the plugin's `createRateLimit` wraps the same store in two
 * promises per call, about a tenth of a publish. One instance serves both
 * the fastify route and the lean path (lean-routes.ts), so they count
 * together.
 */
import { createRequire } from 'node:module';
import { normalizeIP } from '@fastify/rate-limit';

interface StoreEntry {
  readonly current: number;
  readonly ttl: number;
}
interface LocalStoreType {
  incr(key: string, callback: (error: Error | null, entry: StoreEntry) => void, timeWindow: number, max: number): void;
}
type LocalStoreCtor = new (continueExceeding: boolean, exponentialBackoff: boolean, cache?: number) => LocalStoreType;

// The plugin's package has no `exports` map: its store module is reachable by path (CommonJS).
const LocalStore = createRequire(import.meta.url)('@fastify/rate-limit/store/LocalStore.js') as LocalStoreCtor;

/** The plugin's default grouping of IPv6 addresses. */
const IPV6_SUBNET = 64;
const WINDOW_MS = 60000;

export class RateLimit {
  readonly #store = new LocalStore(false, false);
  readonly #max: number;

  constructor(maxPerMinute: number) {
    this.#max = maxPerMinute;
  }

  /** Counts one request under `key`: undefined while within the limit, else the seconds until the window ends (≥ 1). */
  hit(key: string): number | undefined {
    let entry: StoreEntry = { current: 0, ttl: 0 };
    // LocalStore answers synchronously.
    this.#store.incr(
      key,
      (_error, result) => {
        entry = result;
      },
      WINDOW_MS,
      this.#max,
    );
    return entry.current > this.#max ? Math.max(1, Math.ceil(entry.ttl / 1000)) : undefined;
  }
}

/** Both API limits: `byIp` with the client address, `byKey` with the key's name. */
export class ApiRateLimits {
  readonly #perIp: RateLimit;
  readonly #perKey: RateLimit;

  constructor(perIp: number, perKey: number) {
    this.#perIp = new RateLimit(perIp);
    this.#perKey = new RateLimit(perKey);
  }

  byIp(ip: string): number | undefined {
    // Without a colon the address is not IPv6: normalizeIP would only lower-case it (after an IPv6 regex test).
    return this.#perIp.hit(ip.includes(':') ? normalizeIP(ip, IPV6_SUBNET) : ip.toLowerCase());
  }

  byKey(name: string): number | undefined {
    return this.#perKey.hit('key:' + name);
  }
}
