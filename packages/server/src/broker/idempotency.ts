/**
 * Remembered idempotency keys of one process: (channel, key) → the first
 * publish's position, until the window ends. Bounded: beyond `maxKeys` the
 * oldest key is forgotten early (docs/protocol.md "Idempotent publish").
 * The memory engine keeps its keys here; the sqlite engine keeps them in its
 * file and only its publishes in flight here.
 */
import type { StreamPosition } from '@herald/protocol';

/** Keys one engine remembers at most (per process). */
export const MAX_IDEMPOTENCY_KEYS = 100_000;

interface Entry {
  readonly position: StreamPosition;
  readonly expiresAt: number;
}

/** The map key: an idempotency key holds no newline, so the last one separates it from the channel. */
export function idempotencyId(channel: string, key: string): string {
  return `${channel}\n${key}`;
}

export class IdempotencyKeys {
  readonly #entries = new Map<string, Entry>();
  readonly #maxKeys: number;

  constructor(maxKeys = MAX_IDEMPOTENCY_KEYS) {
    this.#maxKeys = maxKeys;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The remembered position, when the key is known and its window has not ended at `now`. */
  get(channel: string, key: string, now: number): StreamPosition | undefined {
    const id = idempotencyId(channel, key);
    const entry = this.#entries.get(id);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now) {
      this.#entries.delete(id);
      return undefined;
    }
    return entry.position;
  }

  set(channel: string, key: string, position: StreamPosition, expiresAt: number): void {
    const id = idempotencyId(channel, key);
    this.#entries.delete(id);
    this.#entries.set(id, { position, expiresAt });
    if (this.#entries.size > this.#maxKeys) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
  }

  /** Forgets keys whose window ended (insertion order is close to expiry order: windows come from one config). */
  prune(now: number): void {
    for (const [id, entry] of this.#entries) {
      if (entry.expiresAt > now) break;
      this.#entries.delete(id);
    }
  }
}
