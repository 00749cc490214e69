/**
 * Console sessions, server side. The browser holds only the session id, a
 * random 256-bit value in the cookie `__Host-herald_console` (HttpOnly,
 * Secure, SameSite=Strict, Path=/); the store holds its SHA-256, the admin,
 * the times and the CSRF secret.
 *
 * Guarantees:
 * - A new id at every sign-in (an id the browser brought is deleted, never
 *   adopted: no fixation) and none is ever reused; a role change, a new
 *   password or disabling an admin ends that admin's sessions.
 * - Every request resolves the id in the store (no cache): a session ended
 *   anywhere (sign out, sign out everywhere, an owner, `herald admin
 *   end-sessions`, the idle timeout, the absolute lifetime) is refused by the
 *   next request on every worker and node.
 */
import { createHash, randomBytes } from 'node:crypto';
import { sessionAbsoluteMs, type AdminRecord, type AdminStore, type SessionPolicy, type SessionRecord, type SessionStage } from './admin-store.ts';
import { newCsrfSecret } from './csrf.ts';

export const SESSION_COOKIE = '__Host-herald_console';

/** 32 random bytes in base64url: 43 characters. */
const SESSION_ID = /^[A-Za-z0-9_-]{43}$/;

export function newSessionId(): string {
  return randomBytes(32).toString('base64url');
}

export function hashSessionId(id: string): string {
  return createHash('sha256').update(id).digest('hex');
}

export function sessionPolicy(idleMs: number, absoluteMs: number): SessionPolicy {
  // lastSeenAt is written at most every tenth of the idle timeout (at most every minute).
  return { idleMs, absoluteMs, touchAfterMs: Math.min(60_000, Math.floor(idleMs / 10)) };
}

export interface LiveSession {
  readonly id: string;
  readonly session: SessionRecord;
  readonly admin: AdminRecord;
}

export class ConsoleSessions {
  readonly #store: AdminStore;
  readonly policy: SessionPolicy;

  constructor(store: AdminStore, policy: SessionPolicy) {
    this.#store = store;
    this.policy = policy;
  }

  /** A new session for `admin` (by default 'full', signed in by password); the id goes in the cookie and nowhere else. */
  async create(
    admin: AdminRecord,
    address: string,
    now: number,
    stage: SessionStage = 'full',
    methods: readonly string[] = ['password'],
  ): Promise<{ id: string; session: SessionRecord }> {
    const id = newSessionId();
    const session: SessionRecord = { idHash: hashSessionId(id), admin: admin.name, createdAt: now, lastSeenAt: now, csrfSecret: newCsrfSecret(), address, stage, methods: [...methods] };
    await this.#store.createSession(session, sessionAbsoluteMs(stage, this.policy));
    return { id, session };
  }

  /** The session of a cookie value when in force; undefined for anything else (malformed, unknown, expired, ended). */
  async resolve(id: string | undefined, now: number): Promise<LiveSession | undefined> {
    if (id === undefined || !SESSION_ID.test(id)) return undefined;
    const resolved = await this.#store.resolveSession(hashSessionId(id), now, this.policy);
    return resolved.state === 'valid' ? { id, session: resolved.session, admin: resolved.admin } : undefined;
  }

  /**
   * Like `resolve`, but never renews the session's last-seen time: for
   * background checks that are not the admin's activity (an open live
   * stream re-checking its session), so an idle tab still times out.
   */
  async check(id: string | undefined, now: number): Promise<LiveSession | undefined> {
    if (id === undefined || !SESSION_ID.test(id)) return undefined;
    const resolved = await this.#store.resolveSession(hashSessionId(id), now, { ...this.policy, touchAfterMs: Number.MAX_SAFE_INTEGER });
    return resolved.state === 'valid' ? { id, session: resolved.session, admin: resolved.admin } : undefined;
  }

  /** Ends one session (a malformed id: nothing to end). */
  async end(id: string | undefined): Promise<void> {
    if (id === undefined || !SESSION_ID.test(id)) return;
    await this.#store.deleteSession(hashSessionId(id));
  }

  /** Ends every session of an admin, on every worker and node at once. */
  endAll(admin: string): Promise<number> {
    return this.#store.deleteSessionsOf(admin);
  }

  /** When a session ends if unused from now on, and at the latest. */
  expiry(session: SessionRecord): { idleExpiresAt: number; expiresAt: number } {
    const expiresAt = session.createdAt + sessionAbsoluteMs(session.stage, this.policy);
    return { expiresAt, idleExpiresAt: Math.min(expiresAt, session.lastSeenAt + this.policy.idleMs) };
  }
}
