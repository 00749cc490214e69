/**
 * The webhook outbox: events wait here, one entry per (event, endpoint),
 * from before their first delivery attempt until the endpoint took them
 * (2xx) or they became dead letters. The sqlite engine keeps it in the
 * state file (survives a crash), the memory engine in memory (lost on
 * restart, as documented in docs/operations.md).
 *
 * Guarantees every implementation keeps:
 * - `append` has stored the entries when it returns or its promise
 *   resolves (the sqlite table is committed, Redis answered): the
 *   dispatcher sends only what is stored.
 * - Methods answer at once (sqlite, memory) or with a promise (Redis);
 *   callers await either.
 * - `head` returns an endpoint's oldest pending entries in append order;
 *   the dispatcher sends them in that order and holds the rest back while
 *   the oldest wait for a retry, so events of one channel arrive in order.
 * - entries of an endpoint that a newer config no longer names stay until
 *   the endpoint returns, or are replayed or listed as dead by the CLI.
 */

export interface OutboxEntry {
  /** Append order, unique within the outbox. */
  readonly seq: number;
  readonly endpoint: string;
  readonly eventId: string;
  /** The event's JSON text, as it will appear in the batch body. */
  readonly event: string;
  /** Failed attempts so far. */
  readonly attempts: number;
  /** Not sent before this time (epoch ms). */
  readonly nextAt: number;
  /** When it entered the outbox (epoch ms): retries stop `retryForMs` after it. */
  readonly createdAt: number;
}

export interface DeadEntry {
  readonly seq: number;
  readonly endpoint: string;
  readonly eventId: string;
  readonly event: string;
  readonly attempts: number;
  readonly createdAt: number;
  readonly deadAt: number;
  /** Why: the last status or error (never a secret). */
  readonly reason: string;
}

export interface NewEntry {
  readonly endpoint: string;
  readonly eventId: string;
  readonly event: string;
}

/** A value now, or a promise of it (the Redis outbox). */
export type Awaitable<T> = T | Promise<T>;

export interface WebhookOutbox {
  /** Stores new entries, due now: stored on return (or when the promise resolves). */
  append(entries: readonly NewEntry[], now: number): Awaitable<void>;
  /**
   * The oldest pending entries of an endpoint, at most `limit`, in append
   * order (due or not). An outbox shared by several nodes (Redis) answers
   * them only to the holder of the endpoint's lease, which this call takes
   * (`undefined`: another node holds it and sends them); the holder gives
   * it back with `release`.
   */
  head(endpoint: string, limit: number): Awaitable<OutboxEntry[] | undefined>;
  /** Shared outboxes: gives the endpoint's lease back (after a batch was settled, or nothing was due). */
  release?(endpoint: string): Awaitable<void>;
  /** The endpoint took them: gone. */
  delivered(seqs: readonly number[]): Awaitable<void>;
  /** A failed attempt: tried again at `nextAt`. */
  retryLater(seqs: readonly number[], nextAt: number, attempts: number): Awaitable<void>;
  /** Out of retry time (or refused for good): kept as dead letters. */
  bury(seqs: readonly number[], reason: string, now: number): Awaitable<void>;
  /** Dead letters, oldest first (at most `limit`), optionally of one endpoint. */
  listDead(limit: number, endpoint?: string): Awaitable<DeadEntry[]>;
  /** Dead letters back to pending, due now, with fresh retry time; by seq, or all (of an endpoint). Answers how many. */
  replay(now: number, filter: { readonly seqs?: readonly number[]; readonly endpoint?: string }): Awaitable<number>;
  /** Entries pending and dead (metrics). */
  counts(): Awaitable<{ readonly pending: number; readonly dead: number }>;
  /** Endpoints that have pending entries (the dispatcher also looks at these after a restart). */
  endpoints(): Awaitable<string[]>;
  /** Pending entries per endpoint (per-endpoint caps: an app's webhooks, pusher/pusher-webhooks.ts). */
  pendingByEndpoint(): Awaitable<Record<string, number>>;
}

interface MemoryRow {
  seq: number;
  endpoint: string;
  eventId: string;
  event: string;
  attempts: number;
  nextAt: number;
  createdAt: number;
  deadAt?: number;
  reason?: string;
}

/** The memory engine's outbox: lost on restart. */
export class MemoryOutbox implements WebhookOutbox {
  readonly #pending = new Map<number, MemoryRow>();
  readonly #dead = new Map<number, MemoryRow>();
  #seq = 0;

  append(entries: readonly NewEntry[], now: number): void {
    for (const entry of entries) {
      const seq = ++this.#seq;
      this.#pending.set(seq, { seq, ...entry, attempts: 0, nextAt: now, createdAt: now });
    }
  }

  head(endpoint: string, limit: number): OutboxEntry[] {
    const result: OutboxEntry[] = [];
    // Map iteration is insertion order; replayed rows get a new seq, so this stays append order.
    for (const row of this.#pending.values()) {
      if (row.endpoint !== endpoint) continue;
      result.push({ ...row });
      if (result.length >= limit) break;
    }
    return result;
  }

  delivered(seqs: readonly number[]): void {
    for (const seq of seqs) this.#pending.delete(seq);
  }

  retryLater(seqs: readonly number[], nextAt: number, attempts: number): void {
    for (const seq of seqs) {
      const row = this.#pending.get(seq);
      if (row !== undefined) {
        row.nextAt = nextAt;
        row.attempts = attempts;
      }
    }
  }

  bury(seqs: readonly number[], reason: string, now: number): void {
    for (const seq of seqs) {
      const row = this.#pending.get(seq);
      if (row === undefined) continue;
      this.#pending.delete(seq);
      this.#dead.set(seq, { ...row, deadAt: now, reason });
    }
  }

  listDead(limit: number, endpoint?: string): DeadEntry[] {
    const result: DeadEntry[] = [];
    for (const row of this.#dead.values()) {
      if (endpoint !== undefined && row.endpoint !== endpoint) continue;
      result.push({ seq: row.seq, endpoint: row.endpoint, eventId: row.eventId, event: row.event, attempts: row.attempts, createdAt: row.createdAt, deadAt: row.deadAt ?? 0, reason: row.reason ?? '' });
      if (result.length >= limit) break;
    }
    return result;
  }

  replay(now: number, filter: { readonly seqs?: readonly number[]; readonly endpoint?: string }): number {
    const wanted = filter.seqs === undefined ? undefined : new Set(filter.seqs);
    let count = 0;
    for (const row of [...this.#dead.values()]) {
      if (wanted !== undefined && !wanted.has(row.seq)) continue;
      if (filter.endpoint !== undefined && row.endpoint !== filter.endpoint) continue;
      this.#dead.delete(row.seq);
      const seq = ++this.#seq;
      this.#pending.set(seq, { seq, endpoint: row.endpoint, eventId: row.eventId, event: row.event, attempts: 0, nextAt: now, createdAt: now });
      count++;
    }
    return count;
  }

  counts(): { pending: number; dead: number } {
    return { pending: this.#pending.size, dead: this.#dead.size };
  }

  endpoints(): string[] {
    const names = new Set<string>();
    for (const row of this.#pending.values()) names.add(row.endpoint);
    return [...names];
  }

  pendingByEndpoint(): Record<string, number> {
    const counts: Record<string, number> = Object.create(null) as Record<string, number>;
    for (const row of this.#pending.values()) counts[row.endpoint] = (counts[row.endpoint] ?? 0) + 1;
    return counts;
  }
}
