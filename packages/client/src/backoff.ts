/**
 * Reconnect delays: exponential backoff with full jitter. The ceiling
 * doubles with each failed attempt up to `maxDelayMs`; the delay is uniform
 * in [0, ceiling), so clients that lost the same server spread out instead
 * of returning together.
 */
export interface BackoffOptions {
  /** Ceiling of the first attempt (attempt 0). */
  readonly baseDelayMs: number;
  /** The ceiling never grows past this. */
  readonly maxDelayMs: number;
}

/** The ceiling for `attempt` (0-based): min(max, base · 2^attempt). */
export function backoffCeiling(attempt: number, options: BackoffOptions): number {
  const exponent = Math.min(Math.max(0, Math.floor(attempt)), 30);
  return Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** exponent);
}

/** A delay in [0, backoffCeiling(attempt)). `random` returns [0, 1), like Math.random. */
export function backoffDelay(attempt: number, options: BackoffOptions, random: () => number = Math.random): number {
  const ceiling = backoffCeiling(attempt, options);
  const r = Math.min(Math.max(random(), 0), 1 - Number.EPSILON);
  return Math.floor(r * ceiling);
}
