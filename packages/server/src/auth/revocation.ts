/**
 * Revoked tokens and users. A token is revoked by its `jti` until its own
 * expiry; a user is revoked at a point in time: every token of that user
 * issued at or before it (or without `iat`) is refused from then on.
 * Entries expire (`retentionMs`) so memory stays bounded.
 */
import type { ConnectionIdentity } from './jwt.ts';

export interface RevocationList {
  revokeToken(tokenId: string, expiresAt: number | undefined): void;
  revokeUser(user: string, at: number): void;
  isRevoked(identity: ConnectionIdentity): boolean;
}

export interface MemoryRevocationOptions {
  /** How long revocations are kept when nothing says otherwise. */
  readonly retentionMs: number;
  readonly now?: () => number;
  /** At most this many entries of each kind; the oldest go first. */
  readonly maxEntries?: number;
}

export class MemoryRevocationList implements RevocationList {
  readonly #tokens = new Map<string, number>();
  readonly #users = new Map<string, { at: number; until: number }>();
  readonly #retentionMs: number;
  readonly #now: () => number;
  readonly #maxEntries: number;
  #sweptAt = 0;

  constructor(options: MemoryRevocationOptions) {
    this.#retentionMs = options.retentionMs;
    this.#now = options.now ?? Date.now;
    this.#maxEntries = options.maxEntries ?? 1_000_000;
  }

  revokeToken(tokenId: string, expiresAt: number | undefined): void {
    this.#sweep();
    this.#tokens.delete(tokenId);
    this.#tokens.set(tokenId, expiresAt ?? this.#now() + this.#retentionMs);
    if (this.#tokens.size > this.#maxEntries) this.#tokens.delete(this.#tokens.keys().next().value!);
  }

  revokeUser(user: string, at: number): void {
    this.#sweep();
    this.#users.delete(user);
    this.#users.set(user, { at, until: at + this.#retentionMs });
    if (this.#users.size > this.#maxEntries) this.#users.delete(this.#users.keys().next().value!);
  }

  isRevoked(identity: ConnectionIdentity): boolean {
    const now = this.#now();
    if (identity.tokenId !== undefined) {
      const until = this.#tokens.get(identity.tokenId);
      if (until !== undefined && until > now) return true;
    }
    const user = this.#users.get(identity.user);
    if (user !== undefined && user.until > now) {
      if (identity.issuedAt === undefined || identity.issuedAt <= user.at) return true;
    }
    return false;
  }

  #sweep(): void {
    const now = this.#now();
    if (now - this.#sweptAt < 1000) return;
    this.#sweptAt = now;
    for (const [id, until] of this.#tokens) if (until <= now) this.#tokens.delete(id);
    for (const [user, entry] of this.#users) if (entry.until <= now) this.#users.delete(user);
  }
}
