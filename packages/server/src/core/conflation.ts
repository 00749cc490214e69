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

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;

function skipSpace(text: string, i: number): number {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
    i++;
  }
}

/** Index just after the string starting at `i` (its opening quote). */
function endOfString(text: string, i: number): number {
  for (i++; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === BACKSLASH) i++;
    else if (c === QUOTE) return i + 1;
  }
  return -1;
}

/** Index just after the JSON value starting at `i`, -1 if it does not end. */
function endOfValue(text: string, i: number): number {
  const first = text.charCodeAt(i);
  if (first === QUOTE) return endOfString(text, i);
  if (first !== OPEN_OBJECT && first !== OPEN_ARRAY) {
    // number, true, false, null
    while (i < text.length) {
      const c = text.charCodeAt(i);
      if (c === COMMA || c === CLOSE_OBJECT || c === CLOSE_ARRAY || c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) break;
      i++;
    }
    return i;
  }
  let depth = 0;
  while (i < text.length) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      i = endOfString(text, i);
      if (i < 0) return -1;
      continue;
    }
    if (c === OPEN_OBJECT || c === OPEN_ARRAY) depth++;
    else if ((c === CLOSE_OBJECT || c === CLOSE_ARRAY) && --depth === 0) return i + 1;
    i++;
  }
  return -1;
}

/**
 * The conflation key in JSON text `json` (valid JSON, as stored), from
 * `start`: the value of the top-level field `field` as JSON ("1" and 1 are
 * different keys), or '' (the whole channel's key) when the data is not an
 * object or has no such field. Scans only up to the field: a key near the
 * start of a large publication costs little. A field given twice: the first.
 */
export function keyOfJson(json: string, field: string, start = 0): string {
  let i = skipSpace(json, start);
  if (json.charCodeAt(i) !== OPEN_OBJECT) return '';
  i = skipSpace(json, i + 1);
  if (json.charCodeAt(i) === CLOSE_OBJECT) return '';
  for (;;) {
    if (json.charCodeAt(i) !== QUOTE) return slowKey(json, field, start);
    const nameEnd = endOfString(json, i);
    if (nameEnd < 0) return slowKey(json, field, start);
    const raw = json.slice(i + 1, nameEnd - 1);
    const name = raw.includes('\\') ? (JSON.parse(json.slice(i, nameEnd)) as string) : raw;
    i = skipSpace(json, nameEnd);
    if (json.charCodeAt(i) !== COLON) return slowKey(json, field, start);
    i = skipSpace(json, i + 1);
    const valueEnd = endOfValue(json, i);
    if (valueEnd < 0) return slowKey(json, field, start);
    // Normalized, so that 1.0 and 1, or "\u0041" and "A", are one key.
    if (name === field) return JSON.stringify(JSON.parse(json.slice(i, valueEnd)));
    i = skipSpace(json, valueEnd);
    const next = json.charCodeAt(i);
    if (next === CLOSE_OBJECT) return '';
    if (next !== COMMA) return slowKey(json, field, start);
    i = skipSpace(json, i + 1);
  }
}

/** What `keyOfJson` answers, by parsing the whole value (for text it did not expect). */
function slowKey(json: string, field: string, start: number): string {
  const from = skipSpace(json, start);
  const end = endOfValue(json, from);
  let data: unknown;
  try {
    data = JSON.parse(json.slice(from, end < 0 ? undefined : end));
  } catch {
    return '';
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data) || !Object.hasOwn(data, field)) return '';
  return JSON.stringify((data as Record<string, unknown>)[field]) ?? '';
}

/** Keys found in publication frames, once per frame (frames are shared by every connection). */
const frameKeys = new WeakMap<EncodedFrame, string>();

/** Where the data starts in a publication frame (`encodePublicationPush`: channel names hold no quote, so this is the data field). */
const DATA_FIELD = ',"data":';

/** The conflation key of a publication frame: the JSON of `data[field]`, or '' (the whole channel, and data without the field). */
export function conflationKey(frame: EncodedFrame, field: string | undefined): string {
  if (field === undefined) return '';
  let key = frameKeys.get(frame);
  if (key === undefined) {
    const text = frame.text;
    key = keyOfJson(text, field, text.indexOf(DATA_FIELD) + DATA_FIELD.length);
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
    const key = field === undefined ? '' : keyOfJson(publication.data, field);
    if (seen.has(key)) continue;
    seen.add(key);
    latest.push(publication);
  }
  return latest.reverse();
}
