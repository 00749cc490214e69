/**
 * Connection caps of one node: connections in total, per client IP, new
 * connections per client IP per second. A connection holds its place from
 * admission (before the WebSocket 101, the SSE stream or the long-poll
 * open) until it closes. Per-user caps are judged after `connect`, when the
 * user is known (see edge.ts).
 *
 * Memory is bounded: the per-IP counts hold only IPs with an open
 * connection, and the per-second counts are dropped every second.
 */
import type { ApiErrorCode } from '@herald/protocol';
import type { Releasable } from '../transports/http-connection.ts';

export interface ConnectionCaps {
  readonly maxConnections: number;
  readonly maxConnectionsPerIp: number;
  readonly newConnectionsPerIpPerSecond: number;
}

export interface Refusal {
  readonly refused: ApiErrorCode;
  /** Seconds for a `Retry-After` header, when waiting helps. */
  readonly retryAfterSeconds?: number;
}

/**
 * A place held by one connection. One small object per connection and no
 * closures: it lives as long as the connection does.
 */
export class Place implements Releasable {
  #limiter: ConnectionLimiter | undefined;
  readonly #key: string;

  constructor(limiter: ConnectionLimiter, key: string) {
    this.#limiter = limiter;
    this.#key = key;
  }

  release(): void {
    const limiter = this.#limiter;
    if (limiter === undefined) return;
    this.#limiter = undefined;
    limiter.free(this.#key);
  }
}

export class ConnectionLimiter {
  readonly #caps: ConnectionCaps;
  readonly #now: () => number;
  readonly #open = new Map<string, number>();
  #total = 0;
  #recent = new Map<string, number>();
  #windowStart = 0;

  constructor(caps: ConnectionCaps, now: () => number = Date.now) {
    this.#caps = caps;
    this.#now = now;
  }

  /** Connections holding a place. */
  get total(): number {
    return this.#total;
  }

  /** Admits one new connection from `key` (see limitKey), or says why not. */
  admit(key: string): Place | Refusal {
    const now = this.#now();
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#recent = new Map();
    }
    // Every attempt counts, refused ones too: a flood stays throttled.
    const recent = (this.#recent.get(key) ?? 0) + 1;
    this.#recent.set(key, recent);
    if (this.#total >= this.#caps.maxConnections) return { refused: 'unavailable', retryAfterSeconds: 1 };
    if (recent > this.#caps.newConnectionsPerIpPerSecond) return { refused: 'too_many_requests', retryAfterSeconds: 1 };
    const open = this.#open.get(key) ?? 0;
    if (open >= this.#caps.maxConnectionsPerIp) return { refused: 'connection_limit' };
    this.#open.set(key, open + 1);
    this.#total += 1;
    return new Place(this, key);
  }

  /** Gives back one place of `key` (Place.release calls it exactly once). */
  free(key: string): void {
    this.#total -= 1;
    const left = (this.#open.get(key) ?? 1) - 1;
    if (left <= 0) this.#open.delete(key);
    else this.#open.set(key, left);
  }
}
