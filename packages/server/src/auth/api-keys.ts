/**
 * Server API keys. Only SHA-256 hashes are held; a presented key is hashed
 * and compared against every held hash in constant time (no early exit), so
 * neither timing nor order leaks which key matched.
 *
 * A key with `notAfter` is refused from that instant on: that is how a
 * rotated key's grace period ends and how a revocation takes effect. It is
 * judged at verify time with the verifier's clock, so a key expires on a
 * running server without a restart.
 *
 * Keys come from two places: the config file (fixed for the process) and a
 * `KeySource` that may change while the server runs (the key store written
 * by `herald keys`, see key-store.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { ApiKeyConfig, ApiScope } from '../config/schema.ts';

export interface ApiPrincipal {
  readonly name: string;
  readonly scopes: ReadonlySet<ApiScope>;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/**
 * Keys that can change at run time. `current()` is called on every verify:
 * it must be cheap, and return the same array object while nothing changed
 * (the verifier rebuilds its table only when the reference changes).
 */
export interface KeySource {
  current(): readonly ApiKeyConfig[];
}

export interface ApiKeyVerifierOptions {
  readonly source?: KeySource;
  /** Clock in epoch milliseconds (tests inject one). */
  readonly now?: () => number;
}

interface HeldKey {
  readonly hash: Buffer;
  /** Epoch ms from which the key is refused; Infinity without `notAfter`. */
  readonly notAfter: number;
  readonly principal: ApiPrincipal;
}

function hold(keys: readonly ApiKeyConfig[]): HeldKey[] {
  return keys.map((k) => {
    // A notAfter that does not parse refuses the key (config and store validation reject it earlier).
    const notAfter = k.notAfter === undefined ? Infinity : Date.parse(k.notAfter);
    return {
      hash: Buffer.from(k.sha256, 'hex'),
      notAfter: Number.isNaN(notAfter) ? -Infinity : notAfter,
      principal: { name: k.name, scopes: new Set(k.scopes) },
    };
  });
}

export class ApiKeyVerifier {
  readonly #fixed: HeldKey[];
  readonly #source: KeySource | undefined;
  readonly #now: () => number;
  #sourceKeys: readonly ApiKeyConfig[] = [];
  #fromSource: HeldKey[] = [];

  constructor(keys: readonly ApiKeyConfig[], options: ApiKeyVerifierOptions = {}) {
    this.#fixed = hold(keys);
    this.#source = options.source;
    this.#now = options.now ?? Date.now;
    this.#refresh();
  }

  #refresh(): HeldKey[] {
    if (this.#source === undefined) return this.#fromSource;
    const keys = this.#source.current();
    if (keys !== this.#sourceKeys) {
      this.#sourceKeys = keys;
      this.#fromSource = hold(keys);
    }
    return this.#fromSource;
  }

  /** Keys held (config and store), expired ones included. */
  get size(): number {
    return this.#fixed.length + this.#refresh().length;
  }

  /**
   * The principal of the presented key, or null when it matches no key or
   * only keys past their `notAfter`. Every held hash is compared, whatever
   * matched before.
   */
  verify(presented: string): ApiPrincipal | null {
    if (typeof presented !== 'string' || presented.length === 0 || presented.length > 512) return null;
    const hash = createHash('sha256').update(presented, 'utf8').digest();
    const now = this.#now();
    let found: ApiPrincipal | null = null;
    for (const list of [this.#fixed, this.#refresh()]) {
      for (const key of list) {
        const matches = timingSafeEqual(hash, key.hash);
        const live = now < key.notAfter;
        if (matches && live && found === null) found = key.principal;
      }
    }
    return found;
  }
}

export function allows(principal: ApiPrincipal, scope: ApiScope): boolean {
  return principal.scopes.has('admin') || principal.scopes.has(scope);
}
