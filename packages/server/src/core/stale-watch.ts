/**
 * The stale cut (`limits.staleMs`, 3502): a connection that has not
 * completed `connect` that long after it opened is closed. One timer for
 * every connection of a node instead of one per connection (a reconnect
 * storm opens thousands at once): connections are queued in opening order,
 * and since every deadline is the opening time plus the same `staleMs`, the
 * deadlines come in that order too, so the timer only ever waits for the
 * oldest. A connection that connected or closed meanwhile leaves its slot
 * empty (`forget`), and the queue holds no reference to it.
 */
export interface StaleCandidate {
  readonly state: 'new' | 'connected' | 'closed';
  disconnect(name: 'stale'): void;
}

export class StaleWatch {
  readonly #ms: number;
  /** Queued connections from `#base` on (null: connected or closed since). */
  #queue: (StaleCandidate | null)[] = [];
  #deadlines: number[] = [];
  /** Index of the oldest entry still to judge. */
  #head = 0;
  /** Slot number of `#queue[0]` (slots count from the watch's start). */
  #base = 0;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(staleMs: number) {
    this.#ms = staleMs;
  }

  /** Watches a new connection; returns its slot, for `forget`. */
  add(client: StaleCandidate): number {
    const slot = this.#base + this.#queue.length;
    this.#queue.push(client);
    this.#deadlines.push(performance.now() + this.#ms);
    if (this.#timer === undefined && !this.#closed) this.#arm(this.#ms);
    return slot;
  }

  /** The connection in `slot` connected or closed: it is no longer watched. */
  forget(slot: number): void {
    const index = slot - this.#base;
    if (index >= this.#head && index < this.#queue.length) this.#queue[index] = null;
  }

  /** Stops the timer (the node closes); connections still queued are not judged. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue = [];
    this.#deadlines = [];
    this.#base += this.#head;
    this.#head = 0;
  }

  #arm(delayMs: number): void {
    this.#timer = setTimeout(() => this.#fire(), Math.max(1, Math.ceil(delayMs)));
    this.#timer.unref();
  }

  #fire(): void {
    this.#timer = undefined;
    const now = performance.now();
    const queue = this.#queue;
    const deadlines = this.#deadlines;
    while (this.#head < queue.length && deadlines[this.#head]! <= now) {
      const client = queue[this.#head];
      queue[this.#head] = null;
      this.#head++;
      if (client !== null && client !== undefined && client.state === 'new') client.disconnect('stale');
    }
    if (this.#head === queue.length) {
      this.#base += queue.length;
      this.#queue = [];
      this.#deadlines = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > queue.length) {
      queue.splice(0, this.#head);
      deadlines.splice(0, this.#head);
      this.#base += this.#head;
      this.#head = 0;
    }
    if (this.#head < this.#queue.length && !this.#closed) this.#arm(this.#deadlines[this.#head]! - now);
  }
}
