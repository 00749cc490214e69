/**
 * Conflation (namespace option `conflation`, docs/protocol.md "Conflation"):
 * latest-value channels such as prices, positions or game state. While a
 * connection is behind (more than `lagBytes` queued to it), a publication on
 * a conflated channel does not queue behind the backlog: it replaces the
 * pending publication of the same key (a top-level field of the data, or
 * the whole channel), kept here per connection and channel. When the
 * connection drains, the pending publications are written, oldest first,
 * each saying with `prev` which offsets it skipped.
 *
 * Guarantees: per connection and channel at most `maxKeys` publications
 * are held (beyond it the oldest is written out at once, under the usual
 * slow-consumer rule); the newest publication of every key is always
 * delivered; offsets stay increasing.
 */
import type { StoredPublication } from '../broker/broker.ts';
import { EncodedFrame } from './encoded-frame.ts';

/** A publication waiting for its connection to drain. */
export interface PendingLatest {
  readonly offset: number;
  readonly frame: EncodedFrame;
}

/** The newest pending publication per key of one subscription, bounded, in offset order. */
export class LatestByKey {
  /** Insertion order is offset order: a replaced key moves to the end. */
  readonly #entries = new Map<string, PendingLatest>();
  readonly #maxKeys: number;
  /** Offset of the newest publication put (the next one must follow it). */
  top = 0;
  /** Publications replaced by a newer one of their key (never written) not yet reported; the caller reports and resets it. */
  replaced = 0;

  constructor(maxKeys: number) {
    this.#maxKeys = maxKeys;
  }

  get size(): number {
    return this.#entries.size;
  }

  /**
   * Holds `pending` as the newest of `key`, replacing the one held. Returns
   * the oldest pending publication when a new key went past `maxKeys`: the
   * caller writes it out now.
   */
  put(key: string, pending: PendingLatest): PendingLatest | undefined {
    const entries = this.#entries;
    this.top = pending.offset;
    if (entries.delete(key)) {
      entries.set(key, pending);
      this.replaced++;
      return undefined;
    }
    entries.set(key, pending);
    if (entries.size <= this.#maxKeys) return undefined;
    const [oldestKey, oldest] = entries.entries().next().value!;
    entries.delete(oldestKey);
    return oldest;
  }

  /** Everything held, oldest first; empties the map. */
  take(): PendingLatest[] {
    const list = [...this.#entries.values()];
    this.#entries.clear();
    return list;
  }

  clear(): void {
    this.#entries.clear();
  }
}

/** The key of a value of the key field (or of the whole channel, ''). */
function keyOf(data: unknown, field: string | undefined): string {
  if (field === undefined || typeof data !== 'object' || data === null || Array.isArray(data) || !Object.hasOwn(data, field)) return '';
  const value = (data as Record<string, unknown>)[field];
  // Quoted strings, numbers and the rest as JSON: "1" and 1 are different keys, and none is ''.
  return JSON.stringify(value) ?? '';
}

/** Keys found in publication frames, parsed once per frame (frames are shared by every connection). */
const frameKeys = new WeakMap<EncodedFrame, string>();

/** The conflation key of a publication frame: the JSON of `data[field]`, or '' (the whole channel, and data without the field). */
export function conflationKey(frame: EncodedFrame, field: string | undefined): string {
  if (field === undefined) return '';
  let key = frameKeys.get(frame);
  if (key === undefined) {
    key = keyOf((JSON.parse(frame.text) as { data?: unknown }).data, field);
    frameKeys.set(frame, key);
  }
  return key;
}

/**
 * A publication frame that says it follows `prev` (the offsets between were
 * conflated). Publication frames end with their closing brace
 * (`encodePublicationPush`), so the field goes in before it.
 */
export function withPrev(frame: EncodedFrame, prev: number): EncodedFrame {
  return new EncodedFrame(frame.text.slice(0, -1) + ',"prev":' + prev + '}');
}

/**
 * The latest publication of each key among `publications` (a channel's
 * history, newest first), at most `maxKeys` keys, oldest first: what a
 * subscriber gets on a conflated channel when history no longer covers the
 * gap it recovers from.
 */
export function latestValues(newestFirst: readonly StoredPublication[], field: string | undefined, maxKeys: number): StoredPublication[] {
  const seen = new Set<string>();
  const latest: StoredPublication[] = [];
  for (const publication of newestFirst) {
    if (latest.length >= maxKeys) break;
    let data: unknown;
    if (field !== undefined) {
      try {
        data = JSON.parse(publication.data);
      } catch {
        data = undefined;
      }
    }
    const key = keyOf(data, field);
    if (seen.has(key)) continue;
    seen.add(key);
    latest.push(publication);
  }
  return latest.reverse();
}
