/**
 * One timer for periodic jobs of one period, so that jobs which look at the
 * same state every second (the Pusher socket's subscription counts and the
 * subscription_count webhooks' sampler) share one wake-up instead of one
 * each.
 *
 * Guarantees: every registered job runs once per tick, in the order it was
 * added; a job added during a tick runs from the next one; a closed job does
 * not run again. The timer runs only while a job is registered and never
 * keeps the process alive (unref). A job that throws does not stop the
 * others of the tick, nor its own next run; its error goes to `onError`.
 */
export class Ticker {
  readonly intervalMs: number;
  readonly #onError: (error: unknown) => void;
  readonly #jobs = new Set<() => void>();
  #timer: NodeJS.Timeout | undefined;

  constructor(intervalMs: number, onError: (error: unknown) => void) {
    this.intervalMs = intervalMs;
    this.#onError = onError;
  }

  /** Runs `job` every tick until the answer's `close`. */
  every(job: () => void): { close(): void } {
    // Each registration is its own entry, even for the same function.
    const entry = (): void => job();
    this.#jobs.add(entry);
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#tick(), this.intervalMs);
      this.#timer.unref();
    }
    return {
      close: () => {
        if (!this.#jobs.delete(entry) || this.#jobs.size > 0 || this.#timer === undefined) return;
        clearInterval(this.#timer);
        this.#timer = undefined;
      },
    };
  }

  /** Whether the timer is set (a job is registered). */
  get running(): boolean {
    return this.#timer !== undefined;
  }

  #tick(): void {
    for (const job of [...this.#jobs]) {
      if (!this.#jobs.has(job)) continue;
      try {
        job();
      } catch (error) {
        this.#onError(error);
      }
    }
  }
}
