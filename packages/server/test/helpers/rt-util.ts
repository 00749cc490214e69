/**
 * Small, dependency-free utilities for integration tests: waiting on a
 * condition, deferred promises and a seeded PRNG (so a failing randomized
 * run reproduces from its printed seed).
 */

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
  readonly settled: boolean;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  let settled = false;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Avoid unhandled-rejection noise when nobody awaits a rejected deferred.
  promise.catch(() => {});
  return {
    promise,
    resolve(value: T) {
      settled = true;
      resolve(value);
    },
    reject(error: unknown) {
      settled = true;
      reject(error);
    },
    get settled() {
      return settled;
    },
  };
}

/**
 * Polls `condition` until it returns a truthy value and returns that value.
 * The timeout only bounds a hang; it is not an assertion about speed.
 */
export async function waitUntil<T>(
  condition: () => T | undefined | null | false,
  options: { timeoutMs?: number; intervalMs?: number; label?: string; describe?: () => string } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10000;
  const intervalMs = options.intervalMs ?? 5;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = condition();
    if (value) return value;
    if (Date.now() > deadline) {
      const extra = options.describe ? `\n${options.describe()}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${options.label ?? 'condition'}${extra}`);
    }
    await sleep(intervalMs);
  }
}

/** Rejects with a labelled error when `promise` does not settle within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, label: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${label}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

/** mulberry32: a tiny seeded PRNG returning floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Integer in [min, max] (inclusive) from a PRNG. */
export function randomInt(random: () => number, min: number, max: number): number {
  return min + Math.floor(random() * (max - min + 1));
}

/**
 * The seed for a randomized test: `HERALD_TEST_SEED` when set (to reproduce a
 * failure), otherwise a fresh one.
 */
export function testSeed(): number {
  const fromEnv = process.env['HERALD_TEST_SEED'];
  if (fromEnv !== undefined && fromEnv !== '') {
    const parsed = Number(fromEnv);
    if (Number.isInteger(parsed)) return parsed >>> 0;
  }
  return Math.floor(Math.random() * 2 ** 32) >>> 0;
}
