/**
 * Brute-force limits of the console sign-in, per account name and per
 * client address (IPv6 by its /64), counted in the console store, so every
 * worker and (on Redis) every node shares them.
 *
 * Each attempt is counted before the password is checked (AdminStore.attempt,
 * atomic), so a thousand parallel attempts cannot all pass before the first
 * one is counted; a success clears the account's count. Past
 * `delayAfter` failures each next attempt waits (1 s, doubling up to
 * `maxDelayMs`); at `lockAfter` the key is locked for `lockMs`. Names are
 * counted whether or not an account has them: a lock answers the same for
 * both, so it never tells whether an account exists.
 */
import type { Config } from '../config/schema.ts';
import { limitKey } from '../edge/client-address.ts';
import type { AdminStore, FailureCounter, LimiterPolicy } from './admin-store.ts';

export type LoginConfig = Config['admin']['console']['login'];

export function accountKey(name: string): string {
  return 'account:' + name.toLowerCase();
}

export function addressKey(ip: string): string {
  return 'address:' + limitKey(ip);
}

export interface LimiterVerdict {
  readonly allowed: boolean;
  readonly retryAfterMs: number;
  /** `account:…`/`address:…` keys locked by this attempt. */
  readonly lockedNow: readonly string[];
}

export class LoginLimiter {
  readonly #store: AdminStore;
  readonly account: LimiterPolicy;
  readonly address: LimiterPolicy;

  constructor(store: AdminStore, config: LoginConfig) {
    this.#store = store;
    const common = { baseDelayMs: config.baseDelayMs, maxDelayMs: config.maxDelayMs, lockMs: config.lockMs, windowMs: config.windowMs };
    this.account = { ...common, delayAfter: config.accountDelayAfter, lockAfter: config.accountLockAfter };
    this.address = { ...common, delayAfter: config.addressDelayAfter, lockAfter: config.addressLockAfter };
  }

  /** Counts one attempt of `name` from `ip`, or says how long to wait. */
  attempt(name: string, ip: string, now: number): Promise<LimiterVerdict> {
    return this.#store.attempt(
      [
        { key: accountKey(name), policy: this.account },
        { key: addressKey(ip), policy: this.address },
      ],
      now,
    );
  }

  /** The attempt was a success: the account's failures are forgotten, the address's count of this attempt taken back. */
  async succeeded(name: string, ip: string): Promise<void> {
    await this.#store.clearAttempts(accountKey(name));
    await this.#store.forgiveAttempt(addressKey(ip));
  }

  /**
   * The password passed but a second factor must follow: this attempt's own
   * count is taken back (account and address) and its delay lifted, but the
   * account's earlier failures stay, so wrong second-factor codes add up to a
   * lock however often the password is given again.
   */
  async firstFactorPassed(name: string, ip: string): Promise<void> {
    await this.#store.forgiveAttempt(accountKey(name));
    await this.#store.forgiveAttempt(addressKey(ip));
  }

  /** Lifts the lock and delay of an account name. */
  unlockAccount(name: string): Promise<void> {
    return this.#store.clearAttempts(accountKey(name));
  }

  /** Lifts the lock and delay of a client address. */
  unlockAddress(ip: string): Promise<void> {
    return this.#store.clearAttempts(addressKey(ip));
  }

  accountCounter(name: string): Promise<FailureCounter | undefined> {
    return this.#store.getCounter(accountKey(name));
  }
}
