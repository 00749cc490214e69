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
 *
 * Verified keys are remembered (at most `CACHE_SIZE`, the longest held
 * first out) by the SHA-256 of the presented key, so a backend that sends
 * the same key on every request costs one hash and one map lookup instead
 * of a comparison with every held key. A lookup by digest tells an
 * attacker nothing about a key's bytes; failures are never remembered (an
 * unknown key always takes the full comparison), a remembered key is still
 * judged against its `notAfter` on every use, and the whole cache is
 * dropped whenever the source's keys change (a key removed or revoked with
 * `herald keys` is refused from the next reload on, as before). Per
 * connection, the key last verified on it is also remembered, so that the
 * same key again on a kept-alive connection costs no hash (see `verify`).
 */
import { createHash, hash, timingSafeEqual } from 'node:crypto';
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

/** The key last verified on a connection. */
interface ConnectionKey {
  readonly presented: string;
  readonly held: HeldKey;
  /** The source's keys it was verified against: once they change, it is verified again. */
  readonly sourceKeys: readonly ApiKeyConfig[];
}

/** Verified keys remembered by the verifier. */
export const CACHE_SIZE = 256;

export class ApiKeyVerifier {
  readonly #fixed: HeldKey[];
  readonly #source: KeySource | undefined;
  readonly #now: () => number;
  #sourceKeys: readonly ApiKeyConfig[] = [];
  #fromSource: HeldKey[] = [];
  /** Base64 SHA-256 of a presented key → the key it matched; the oldest entry leaves first. */
  readonly #verified = new Map<string, HeldKey>();
  /** Per connection, the key last verified on it (see `verify`). */
  readonly #byConnection = new WeakMap<object, ConnectionKey>();
  /** Key name → its last successful use (epoch ms) since the last `takeUses`: memory only, no store write per request. */
  #uses = new Map<string, number>();

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
      this.#verified.clear();
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
   *
   * With `connection` (the request's socket), the key last verified on that
   * connection is remembered with it: the same key presented again on it is
   * recognised by a constant-time comparison of the two strings, without a
   * hash (a backend sends the same key on every request of its kept-alive
   * connections). It is still judged against its `notAfter`, and forgotten
   * when the source's keys change. Another key on the connection takes the
   * full path. What the comparison's time could tell is whether the
   * presented key has the length of the key last verified on the same
   * connection, nothing of its bytes.
   */
  verify(presented: string, connection?: object): ApiPrincipal | null {
    if (typeof presented !== 'string' || presented.length === 0 || presented.length > 512) return null;
    if (connection === undefined) return this.#used(this.#verify(presented));
    const last = this.#byConnection.get(connection);
    if (last !== undefined) {
      this.#refresh();
      if (last.sourceKeys === this.#sourceKeys && sameSecret(last.presented, presented) && this.#now() < last.held.notAfter) return this.#used(last.held);
    }
    const found = this.#verify(presented);
    if (found !== undefined) this.#byConnection.set(connection, { presented, held: found, sourceKeys: this.#sourceKeys });
    return this.#used(found);
  }

  /** Remembers the use of a verified key (one map write, in memory) and answers its principal. */
  #used(held: HeldKey | undefined): ApiPrincipal | null {
    if (held === undefined) return null;
    this.#uses.set(held.principal.name, this.#now());
    return held.principal;
  }

  /** The keys used since the last call, each with its last use (console/key-usage.ts reports them). */
  takeUses(): Map<string, number> {
    const uses = this.#uses;
    this.#uses = new Map();
    return uses;
  }

  /** A key's last use not yet taken by `takeUses`. */
  pendingUse(name: string): number | undefined {
    return this.#uses.get(name);
  }

  #verify(presented: string): HeldKey | undefined {
    const digest = hash('sha256', presented, 'base64');
    const fromSource = this.#refresh();
    const now = this.#now();
    const remembered = this.#verified.get(digest);
    if (remembered !== undefined) {
      if (now < remembered.notAfter) return remembered;
      this.#verified.delete(digest);
    }
    const presentedHash = Buffer.from(digest, 'base64');
    let found: HeldKey | undefined;
    for (const list of [this.#fixed, fromSource]) {
      for (const key of list) {
        const matches = timingSafeEqual(presentedHash, key.hash);
        const live = now < key.notAfter;
        if (matches && live && found === undefined) found = key;
      }
    }
    if (found === undefined) return undefined;
    if (this.#verified.size >= CACHE_SIZE) this.#verified.delete(this.#verified.keys().next().value!);
    this.#verified.set(digest, found);
    return found;
  }
}

/** Whether two strings are equal, in a time that depends on their lengths only (no early exit on the first difference). */
function sameSecret(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let difference = 0;
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return difference === 0;
}

export function allows(principal: ApiPrincipal, scope: ApiScope): boolean {
  return principal.scopes.has('admin') || principal.scopes.has(scope);
}
