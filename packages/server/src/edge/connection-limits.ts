/**
 * Connection caps: connections in total (always per node: a node's
 * capacity), per client IP, new connections per client IP per second. A
 * connection holds its place from admission (before the WebSocket 101, the
 * SSE stream or the long-poll open) until it closes. Per-user caps are
 * judged after `connect`, when the user is known (see edge.ts).
 *
 * With `limits.scope: "node"` the per-IP limits are this node's counts and
 * admission is synchronous. With "cluster" (`share`) they are counted in
 * Redis across every node (shared-connection-counts.ts): admission answers
 * a promise; while Redis cannot be reached this node's own counts decide.
 *
 * Memory is bounded: the per-IP counts hold only IPs with an open
 * connection, and the per-second counts are dropped every second.
 */
import type { ApiErrorCode } from '@herald/protocol';
import type { Releasable } from '../transports/http-connection.ts';
import type { SharedConnectionCounts } from './shared-connection-counts.ts';

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
    limiter.free(this.#key, this);
  }
}

/** A place in cluster scope (limits.scope "cluster"). */
class SharedPlace extends Place {
  /**
   * 0 when counted in the shared counts at admission; else (admitted by
   * this node's counts while Redis was unreachable) the shared counts'
   * generation + 1 then: it is in them once a rewrite happened since.
   */
  readonly shared: number;

  constructor(limiter: ConnectionLimiter, key: string, shared: number) {
    super(limiter, key);
    this.shared = shared;
  }
}

export class ConnectionLimiter {
  readonly #caps: ConnectionCaps;
  readonly #now: () => number;
  readonly #open = new Map<string, number>();
  #total = 0;
  #recent = new Map<string, number>();
  #windowStart = 0;
  #shared: SharedConnectionCounts | undefined;

  constructor(caps: ConnectionCaps, now: () => number = Date.now) {
    this.#caps = caps;
    this.#now = now;
  }

  /** Connections holding a place. */
  get total(): number {
    return this.#total;
  }

  /** Open connections per key on this node (what the shared counts copy after an outage). */
  get openByKey(): ReadonlyMap<string, number> {
    return this.#open;
  }

  /** From now on the per-IP limits are judged by `shared` (limits.scope "cluster"). */
  share(shared: SharedConnectionCounts): void {
    this.#shared = shared;
  }

  /**
   * Admits one new connection from `key` (see limitKey), or says why not:
   * synchronously in node scope, with a promise (never rejected) in cluster
   * scope.
   */
  admit(key: string): Place | Refusal | Promise<Place | Refusal> {
    const now = this.#now();
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#recent = new Map();
    }
    // Every attempt counts, refused ones too: a flood stays throttled.
    const recent = (this.#recent.get(key) ?? 0) + 1;
    this.#recent.set(key, recent);
    if (this.#total >= this.#caps.maxConnections) return { refused: 'unavailable', retryAfterSeconds: 1 };
    const open = this.#open.get(key) ?? 0;
    const shared = this.#shared;
    if (shared !== undefined) {
      // The place is held while Redis answers, so this node's total cap stays exact.
      this.#open.set(key, open + 1);
      this.#total += 1;
      return this.#admitShared(shared, key, recent);
    }
    const refusal = this.#judgeLocally(recent, open);
    if (refusal !== undefined) return refusal;
    this.#open.set(key, open + 1);
    this.#total += 1;
    return new Place(this, key);
  }

  #judgeLocally(recent: number, open: number): Refusal | undefined {
    if (recent > this.#caps.newConnectionsPerIpPerSecond) return { refused: 'too_many_requests', retryAfterSeconds: 1 };
    if (open >= this.#caps.maxConnectionsPerIp) return { refused: 'connection_limit' };
    return undefined;
  }

  async #admitShared(shared: SharedConnectionCounts, key: string, recent: number): Promise<Place | Refusal> {
    const verdict = await shared.admit(key);
    if (verdict === 'admitted') return new SharedPlace(this, key, 0);
    // Not counted in Redis: given back here only.
    this.#giveBack(key);
    if (verdict === 'too_many_requests') return { refused: 'too_many_requests', retryAfterSeconds: 1 };
    if (verdict === 'connection_limit') return { refused: 'connection_limit' };
    // Redis unreachable: this node's own counts decide (as they are now: others came and went meanwhile).
    const refusal = this.#judgeLocally(recent, this.#open.get(key) ?? 0);
    if (refusal !== undefined) return refusal;
    this.#open.set(key, (this.#open.get(key) ?? 0) + 1);
    this.#total += 1;
    shared.markDirty();
    return new SharedPlace(this, key, shared.generation + 1);
  }

  /** Gives back one place of `key` (Place.release calls it exactly once). */
  free(key: string, place: Place): void {
    this.#giveBack(key);
    const shared = this.#shared;
    // In the shared counts when admitted there, or when they were rewritten from this node's counts since.
    if (shared !== undefined && place instanceof SharedPlace && (place.shared === 0 || shared.generation >= place.shared)) shared.release(key);
  }

  #giveBack(key: string): void {
    this.#total -= 1;
    const left = (this.#open.get(key) ?? 1) - 1;
    if (left <= 0) this.#open.delete(key);
    else this.#open.set(key, left);
  }
}

/** What the per-app count reads of an app (apps/apps.ts `App`). */
export interface CountedApp {
  readonly id: string;
  readonly limits: { readonly maxConnections: number };
}

/** Which door a connection of an app came in by: its Pusher socket (`/app/{key}`) or its native paths (`/apps/{id}/connection/…`). */
export type AppConnectionKind = 'pusher' | 'native';

/** An app's connections on this node, by kind. */
export interface AppConnectionSplit {
  readonly pusher: number;
  readonly native: number;
}

/**
 * An app's connections on this node: its Pusher sockets and its native
 * connections on `/apps/{id}/connection/…`, counted together against the
 * app's `limits.maxConnections` (0: no cap of its own). A connection holds
 * its place from admission until it closes; the count keeps only apps with
 * an open connection. The console's Apps view reads the same count, by kind
 * (`split`).
 */
export class AppConnectionCounts {
  readonly #open = new Map<string, { pusher: number; native: number }>();

  /** The app's connections on this node (what its cap is judged by). */
  count(appId: string): number {
    const held = this.#open.get(appId);
    return held === undefined ? 0 : held.pusher + held.native;
  }

  /** The app's connections on this node by kind; they add up to `count`. */
  split(appId: string): AppConnectionSplit {
    const held = this.#open.get(appId);
    return held === undefined ? { pusher: 0, native: 0 } : { pusher: held.pusher, native: held.native };
  }

  /**
   * A place for one more connection of `app`, or undefined when it holds its
   * cap already. `inner` (the connection's place under the server's caps) is
   * released with it.
   */
  admit(app: CountedApp, kind: AppConnectionKind, inner?: Releasable): AppPlace | undefined {
    const held = this.#open.get(app.id);
    const cap = app.limits.maxConnections;
    if (cap > 0 && held !== undefined && held.pusher + held.native >= cap) return undefined;
    if (held === undefined) this.#open.set(app.id, { pusher: kind === 'pusher' ? 1 : 0, native: kind === 'native' ? 1 : 0 });
    else held[kind]++;
    return new AppPlace(this, app.id, kind, inner);
  }

  /** Gives back one place of `appId` (AppPlace.release calls it exactly once). */
  free(appId: string, kind: AppConnectionKind): void {
    const held = this.#open.get(appId);
    if (held === undefined) return;
    held[kind] = Math.max(0, held[kind] - 1);
    if (held.pusher + held.native === 0) this.#open.delete(appId);
  }
}

/** A place in an app's count (and the connection's place under the server's caps, when given: released together). */
export class AppPlace implements Releasable {
  #counts: AppConnectionCounts | undefined;
  readonly #appId: string;
  readonly #kind: AppConnectionKind;
  readonly #inner: Releasable | undefined;

  constructor(counts: AppConnectionCounts, appId: string, kind: AppConnectionKind, inner: Releasable | undefined) {
    this.#counts = counts;
    this.#appId = appId;
    this.#kind = kind;
    this.#inner = inner;
  }

  release(): void {
    const counts = this.#counts;
    if (counts === undefined) return;
    this.#counts = undefined;
    counts.free(this.#appId, this.#kind);
    this.#inner?.release();
  }
}
