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

/**
 * Revocations persisted in the sqlite engine's state file, so a token
 * revoked before a restart is refused after it. Checks read the in-memory
 * copy (loaded at start). A revocation takes effect in memory first, then
 * is written to the file; a write the disk refuses is reported through
 * `onPersistError` (the revocation holds until the process restarts).
 */
export class SqliteRevocationList implements RevocationList {
  readonly #memory: MemoryRevocationList;
  readonly #db: import('node:sqlite').DatabaseSync;
  readonly #retentionMs: number;
  readonly #now: () => number;
  readonly #putToken: import('node:sqlite').StatementSync;
  readonly #putUser: import('node:sqlite').StatementSync;
  #sweptAt = 0;

  readonly #onPersistError: (error: unknown) => void;

  constructor(db: import('node:sqlite').DatabaseSync, options: MemoryRevocationOptions & { readonly onPersistError?: (error: unknown) => void }) {
    this.#db = db;
    this.#onPersistError = options.onPersistError ?? (() => {});
    this.#memory = new MemoryRevocationList(options);
    this.#retentionMs = options.retentionMs;
    this.#now = options.now ?? Date.now;
    this.#putToken = db.prepare('INSERT INTO revoked_tokens (jti, until) VALUES (?, ?) ON CONFLICT (jti) DO UPDATE SET until = excluded.until');
    this.#putUser = db.prepare('INSERT INTO revoked_users (user, at, until) VALUES (?, ?, ?) ON CONFLICT (user) DO UPDATE SET at = excluded.at, until = excluded.until');
    const now = this.#now();
    this.#sweep(now);
    for (const row of db.prepare('SELECT jti, until FROM revoked_tokens ORDER BY until').all() as { jti: string; until: number }[]) {
      this.#memory.revokeToken(row.jti, Number(row.until));
    }
    for (const row of db.prepare('SELECT user, at, until FROM revoked_users ORDER BY at').all() as { user: string; at: number; until: number }[]) {
      this.#memory.revokeUser(row.user, Number(row.at));
    }
  }

  revokeToken(tokenId: string, expiresAt: number | undefined): void {
    const until = expiresAt ?? this.#now() + this.#retentionMs;
    this.#memory.revokeToken(tokenId, until);
    this.#persist(() => this.#putToken.run(tokenId, until));
  }

  revokeUser(user: string, at: number): void {
    this.#memory.revokeUser(user, at);
    this.#persist(() => this.#putUser.run(user, at, at + this.#retentionMs));
  }

  isRevoked(identity: ConnectionIdentity): boolean {
    return this.#memory.isRevoked(identity);
  }

  #persist(write: () => void): void {
    try {
      const now = this.#now();
      if (now - this.#sweptAt >= 60_000) this.#sweep(now);
      write();
    } catch (error) {
      this.#onPersistError(error);
    }
  }

  #sweep(now: number): void {
    this.#sweptAt = now;
    this.#db.prepare('DELETE FROM revoked_tokens WHERE until <= ?').run(now);
    this.#db.prepare('DELETE FROM revoked_users WHERE until <= ?').run(now);
  }
}

/**
 * The cluster primary's revocations in the sqlite engine's state file (the
 * same tables as SqliteRevocationList): loaded at start and replayed to every
 * worker, saved as they arrive. A write the disk refuses is reported through
 * `onError`; the revocation still reaches every worker.
 */
export function sqliteRevocationStore(
  db: import('node:sqlite').DatabaseSync,
  onError: (error: unknown) => void = () => {},
): import('../cluster/primary-hub.ts').RevocationStore {
  const putToken = db.prepare('INSERT INTO revoked_tokens (jti, until) VALUES (?, ?) ON CONFLICT (jti) DO UPDATE SET until = excluded.until');
  const putUser = db.prepare('INSERT INTO revoked_users (user, at, until) VALUES (?, ?, ?) ON CONFLICT (user) DO UPDATE SET at = excluded.at, until = excluded.until');
  return {
    load(now) {
      db.prepare('DELETE FROM revoked_tokens WHERE until <= ?').run(now);
      db.prepare('DELETE FROM revoked_users WHERE until <= ?').run(now);
      const tokens = (db.prepare('SELECT jti, until FROM revoked_tokens').all() as { jti: string; until: number }[]).map((row) => ({
        command: { kind: 'revoke_token' as const, tokenId: row.jti, expiresAt: Number(row.until) },
        until: Number(row.until),
      }));
      const users = (db.prepare('SELECT user, at, until FROM revoked_users').all() as { user: string; at: number; until: number }[]).map((row) => ({
        command: { kind: 'revoke_user' as const, user: row.user, at: Number(row.at) },
        until: Number(row.until),
      }));
      return [...tokens, ...users].sort((a, b) => a.until - b.until);
    },
    save(command, until) {
      try {
        if (command.kind === 'revoke_token') putToken.run(command.tokenId, until);
        else if (command.kind === 'revoke_user') putUser.run(command.user, command.at, until);
      } catch (error) {
        onError(error);
      }
    },
  };
}
