/**
 * What `herald bench` counts: latency histograms, and a ledger of every
 * (subscriber, publication) delivery that tells distinct deliveries from
 * duplicates and checks that each subscriber sees offsets in order.
 */

/** Bucket i holds values in [GROWTH^i, GROWTH^(i+1)) microseconds: percentiles exact to 1 %. */
const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
const BUCKETS = Math.ceil(Math.log(1e10) / LOG_GROWTH) + 1; // up to about 3 hours

export class Histogram {
  readonly #counts = new Float64Array(BUCKETS);
  #count = 0;
  #max = 0;

  /** Records one value in milliseconds. */
  record(ms: number): void {
    const us = ms * 1000 < 1 ? 1 : ms * 1000;
    const i = Math.min(BUCKETS - 1, Math.floor(Math.log(us) / LOG_GROWTH));
    this.#counts[i] = (this.#counts[i] ?? 0) + 1;
    this.#count++;
    if (ms > this.#max) this.#max = ms;
  }

  get count(): number {
    return this.#count;
  }

  /** The largest value recorded, exactly (ms); 0 when empty. */
  get max(): number {
    return this.#max;
  }

  /** The q-quantile (0 < q < 1) in milliseconds, the middle of its bucket; NaN when empty. */
  quantile(q: number): number {
    if (this.#count === 0) return Number.NaN;
    const rank = Math.max(1, Math.ceil(q * this.#count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i] ?? 0;
      if (seen >= rank) return Math.min(this.#max, Math.sqrt(GROWTH ** i * GROWTH ** (i + 1)) / 1000);
    }
    return this.#max;
  }
}

/**
 * One bit per (subscriber, sequence number). A publication counts once per
 * subscriber; a second copy is a duplicate. Offsets (when the namespace
 * keeps history) must grow on every subscription: anything else is out of
 * order.
 */
export class DeliveryLedger {
  readonly #messages: number;
  readonly #seen: Uint8Array;
  readonly #lastOffset: Float64Array;
  readonly #perSubscriber: Uint32Array;
  delivered = 0;
  duplicates = 0;
  outOfOrder = 0;
  /** Publications of this run whose number is out of range (never expected). */
  unknown = 0;

  constructor(subscribers: number, messages: number) {
    this.#messages = messages;
    this.#seen = new Uint8Array(Math.ceil((subscribers * messages) / 8));
    this.#lastOffset = new Float64Array(subscribers);
    this.#perSubscriber = new Uint32Array(subscribers);
  }

  /** Records a delivery; answers whether it was the first copy. */
  record(subscriber: number, seq: number, offset: number): boolean {
    if (!Number.isInteger(seq) || seq < 0 || seq >= this.#messages || subscriber >= this.#lastOffset.length) {
      this.unknown++;
      return false;
    }
    if (offset > 0) {
      if (offset <= (this.#lastOffset[subscriber] ?? 0)) this.outOfOrder++;
      else this.#lastOffset[subscriber] = offset;
    }
    const bit = subscriber * this.#messages + seq;
    const byte = bit >>> 3;
    const mask = 1 << (bit & 7);
    if (((this.#seen[byte] ?? 0) & mask) !== 0) {
      this.duplicates++;
      return false;
    }
    this.#seen[byte] = (this.#seen[byte] ?? 0) | mask;
    this.delivered++;
    this.#perSubscriber[subscriber] = (this.#perSubscriber[subscriber] ?? 0) + 1;
    return true;
  }

  /** Whether `subscriber` got publication `seq`. */
  has(subscriber: number, seq: number): boolean {
    const bit = subscriber * this.#messages + seq;
    return ((this.#seen[bit >>> 3] ?? 0) & (1 << (bit & 7))) !== 0;
  }

  /** Deliveries of the publications `seqs` to `subscribers`. */
  countOf(subscribers: Iterable<number>, seqs: readonly number[]): number {
    let n = 0;
    for (const sub of subscribers) for (const seq of seqs) if (this.has(sub, seq)) n++;
    return n;
  }

  /** Subscribers (among `subscribers`) that got every one of `accepted` publications. */
  complete(subscribers: Iterable<number>, accepted: readonly number[]): number {
    let complete = 0;
    for (const sub of subscribers) {
      if ((this.#perSubscriber[sub] ?? 0) < accepted.length) continue;
      if (accepted.every((seq) => this.has(sub, seq))) complete++;
    }
    return complete;
  }
}

/** Counts of named things (error reasons), in insertion order. */
export class Tally {
  readonly counts = new Map<string, number>();

  add(what: string, n = 1): void {
    this.counts.set(what, (this.counts.get(what) ?? 0) + n);
  }

  get total(): number {
    let total = 0;
    for (const n of this.counts.values()) total += n;
    return total;
  }
}
