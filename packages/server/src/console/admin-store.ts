/**
 * The console's durable state: admin accounts, their sessions (by the
 * SHA-256 of the session id, never the id), the login limiter's counters and
 * the audit log. One interface, three homes chosen by the engine: the sqlite
 * engine's state file (sqlite-admin-store.ts; in cluster mode the primary
 * owns it and workers reach it over IPC), Redis on the redis engine
 * (redis-admin-store.ts), or this process's memory on the memory engine
 * (MemoryAdminStore below: lost on restart).
 *
 * Guarantees every implementation keeps:
 * - Every method reads the shared state when called: no cache. A session
 *   deleted or an admin disabled by one worker, node or `herald admin`
 *   command is refused by the next request anywhere.
 * - `resolveSession`, `attempt` and `createAdmin` are atomic: concurrent
 *   callers (workers, nodes, the CLI) cannot both pass a check that only one
 *   should pass (two sessions past their limit, a thousand parallel logins
 *   past the limiter, two "first" admins both made owner).
 * - Records cross the cluster IPC as they are (plain data, structured-clone
 *   safe); `undefined` results may arrive as `null` there and are mapped back
 *   by the cluster proxy.
 */

export type AdminRole = 'owner' | 'operator' | 'viewer';

export const ADMIN_ROLES: readonly AdminRole[] = ['owner', 'operator', 'viewer'];

/** Whether `role` is at least `minimum` (owner > operator > viewer). */
export function roleAtLeast(role: AdminRole, minimum: AdminRole): boolean {
  return ADMIN_ROLES.indexOf(role) <= ADMIN_ROLES.indexOf(minimum);
}

/** Names usable on the command line, in URLs and in logs. */
export const ADMIN_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/;

export interface AdminRecord {
  readonly name: string;
  readonly role: AdminRole;
  /** PHC string of the argon2id hash, with its parameters (passwords.ts). */
  readonly passwordHash: string;
  readonly disabled: boolean;
  /** Epoch milliseconds. */
  readonly createdAt: number;
  readonly updatedAt: number;
}

/**
 * What a session may do (console/sign-in.ts): 'full' = the console;
 * 'second_factor' = only the second-factor endpoints, logout and GET
 * session; 'enrol' = only enrolment, logout and GET session.
 */
export type SessionStage = 'full' | 'second_factor' | 'enrol';

export const SESSION_STAGES: readonly SessionStage[] = ['full', 'second_factor', 'enrol'];

/** A session short of 'full' ends this long after it began, whatever the policy says. */
export const PARTIAL_SESSION_MS = 5 * 60_000;

export interface SessionRecord {
  /** SHA-256 (hex) of the session id; the id itself is only in the browser's cookie. */
  readonly idHash: string;
  readonly admin: string;
  readonly createdAt: number;
  readonly lastSeenAt: number;
  /** Secret the session's CSRF tokens are made from (csrf.ts). */
  readonly csrfSecret: string;
  /** Client address at login (for the admin list and the audit log). */
  readonly address: string;
  /** What the session may do; a new session (new id) is made when it changes. */
  readonly stage: SessionStage;
  /** How the admin signed in so far, in order (e.g. ["password", "totp"]). */
  readonly methods: readonly string[];
}

export interface SessionPolicy {
  /** A session unused this long is gone. */
  readonly idleMs: number;
  /** A session this old is gone, used or not. */
  readonly absoluteMs: number;
  /** `lastSeenAt` is written only when older than this (fewer writes; idle precision). */
  readonly touchAfterMs: number;
}

export type ResolvedSession =
  | { readonly state: 'valid'; readonly session: SessionRecord; readonly admin: AdminRecord }
  /** Unknown id, expired (deleted now), or its admin is disabled or gone (sessions deleted now). */
  | { readonly state: 'invalid' };

/** A limiter rule for one kind of key (per account, per address). */
export interface LimiterPolicy {
  /** Failures before each next attempt must wait (progressive delay). */
  readonly delayAfter: number;
  /** First delay; doubled with each further failure up to maxDelayMs. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** Failures that lock the key for lockMs. */
  readonly lockAfter: number;
  readonly lockMs: number;
  /** Failures older than this (after the last one) are forgotten. */
  readonly windowMs: number;
}

export interface FailureCounter {
  readonly failures: number;
  readonly lastAt: number;
  /** No attempt before this time (progressive delay). */
  readonly nextAt: number;
  /** Locked until this time (0: not locked). */
  readonly lockedUntil: number;
}

export interface LimiterCheck {
  /** `account:<name>` or `address:<ip>`. */
  readonly key: string;
  readonly policy: LimiterPolicy;
}

export interface AttemptVerdict {
  /** False: some key must wait; nothing was counted. */
  readonly allowed: boolean;
  /** How long until every key allows an attempt (0 when allowed). */
  readonly retryAfterMs: number;
  /** Keys this attempt locked (the lock starts now): for the audit log. */
  readonly lockedNow: readonly string[];
}

export type AuditOutcome = 'ok' | 'denied' | 'failed';

export interface AuditInput {
  readonly actor: string;
  readonly action: string;
  readonly target?: string | undefined;
  readonly address?: string | undefined;
  readonly outcome: AuditOutcome;
  readonly detail?: Record<string, unknown> | undefined;
}

export interface AuditEntry extends AuditInput {
  /** Increasing with time within one store (a sqlite rowid, a Redis stream id). */
  readonly id: string;
  /** Epoch milliseconds. */
  readonly at: number;
}

export interface AuditQuery {
  readonly actor?: string | undefined;
  readonly action?: string | undefined;
  /** Epoch milliseconds, inclusive. */
  readonly since?: number | undefined;
  /** Epoch milliseconds, exclusive. */
  readonly until?: number | undefined;
  /** Entries older than this id only (paging backwards). */
  readonly before?: string | undefined;
  /** Most entries answered (newest first); at most 1000. */
  readonly limit?: number | undefined;
}

export interface SweepPolicy {
  readonly sessions: SessionPolicy;
  /** Audit entries older than this are deleted. */
  readonly auditRetentionMs: number;
  /** Counters idle longer than the largest window are deleted. */
  readonly limiterWindowMs: number;
}

export interface AdminChange {
  readonly role?: AdminRole | undefined;
  readonly passwordHash?: string | undefined;
  readonly disabled?: boolean | undefined;
}

/** An admin's TOTP secret (console/totp.ts); at most one per admin. */
export interface TotpRecord {
  readonly admin: string;
  /** Base32 secret. Kept as it is (a TOTP check needs it): the state file's 0600 permissions, or Redis's access control, protect it. */
  readonly secret: string;
  readonly createdAt: number;
  /** When enrolment completed (a valid code was given); 0 while pending. */
  readonly confirmedAt: number;
  /** The last time step whose code was accepted (a code of this step or before is a replay); 0: none yet. */
  readonly lastStep: number;
}

// Passkeys
/** A passkey (WebAuthn credential) of an admin; binary values in base64url. */
export interface PasskeyRecord {
  /** The credential id (base64url), unique across admins. */
  readonly id: string;
  readonly admin: string;
  /** COSE public key (base64url). */
  readonly publicKey: string;
  /** The authenticator's signature counter last seen (0: it keeps none). */
  readonly counter: number;
  readonly transports: readonly string[];
  /** The admin's name for it ("laptop", "phone"). */
  readonly name: string;
  /** The WebAuthn user handle (base64url) the credential was made for: one per admin. */
  readonly userHandle: string;
  readonly createdAt: number;
  readonly lastUsedAt: number | null;
}

export type PasskeyPurpose = 'register' | 'login' | 'second_factor';

/** A challenge issued for one ceremony, bound to `key` (a session's id hash, or a pre-login cookie's hash). */
export interface PasskeyChallenge {
  readonly key: string;
  readonly purpose: PasskeyPurpose;
  /** base64url, as in the options sent to the browser. */
  readonly challenge: string;
  /** The admin it was issued for (null: a passwordless sign-in, anyone's passkey). */
  readonly admin: string | null;
  /** Registration: the WebAuthn user handle the new passkey is made for (base64url). */
  readonly userHandle: string | null;
  readonly expiresAt: number;
}

/** Whether a signature counter of `next` after `stored` is refused (went back or stood still while the authenticator keeps one). */
export function counterWentBack(stored: number, next: number): boolean {
  return (stored > 0 || next > 0) && next <= stored;
}

/**
 * The console store. Times are epoch milliseconds passed in by the caller
 * (one clock: the server's, or the test's).
 */
export interface AdminStore {
  getAdmin(name: string): Promise<AdminRecord | undefined>;
  /** Every admin, by name. */
  listAdmins(): Promise<AdminRecord[]>;
  /**
   * Adds an admin; the first admin of the store is made an owner whatever
   * role was asked (atomically: two concurrent first admins cannot both be
   * promoted). Undefined when the name is taken.
   */
  createAdmin(input: { readonly name: string; readonly role: AdminRole; readonly passwordHash: string; readonly now: number }): Promise<AdminRecord | undefined>;
  /** Changes an admin; undefined when there is none of that name. */
  updateAdmin(name: string, change: AdminChange, now: number): Promise<AdminRecord | undefined>;

  /** Stores a new session; `absoluteMs` lets a store expire it by itself (Redis). */
  createSession(session: SessionRecord, absoluteMs?: number): Promise<void>;
  /**
   * The session and its admin when the session is in force at `now`:
   * known, within idle and absolute lifetime, its admin present and
   * enabled. An expired session is deleted; `lastSeenAt` is renewed when
   * older than `policy.touchAfterMs`.
   */
  resolveSession(idHash: string, now: number, policy: SessionPolicy): Promise<ResolvedSession>;
  deleteSession(idHash: string): Promise<void>;
  /** Deletes every session of an admin; answers how many there were. */
  deleteSessionsOf(admin: string): Promise<number>;
  /** Sessions of an admin still in force at `now`. */
  countSessions(admin: string, now: number, policy: SessionPolicy): Promise<number>;

  /**
   * One login attempt against every check, atomically: when any key must
   * wait (delay or lock) nothing is counted and the verdict says how long;
   * otherwise every key counts one failure now (a success is cleared
   * afterwards with `clearAttempts`), so parallel attempts cannot all pass
   * before the first one is counted.
   */
  attempt(checks: readonly LimiterCheck[], now: number): Promise<AttemptVerdict>;
  /** Forgets a key's failures (a successful login's account; the owner's unlock). */
  clearAttempts(key: string): Promise<void>;
  /**
   * Takes back the one failure `attempt` counted for a login that then
   * succeeded (the address's count: successful logins from one address do
   * not add up to a lock); lifts its delay, not a lock.
   */
  forgiveAttempt(key: string): Promise<void>;
  /** A key's counter, for the admin list (locked until). */
  getCounter(key: string): Promise<FailureCounter | undefined>;

  appendAudit(entry: AuditInput, now: number): Promise<void>;
  /** Entries matching the query, newest first. */
  queryAudit(query: AuditQuery): Promise<AuditEntry[]>;

  /** Deletes expired sessions, old audit entries, forgotten counters and expired pending OIDC sign-ins (Redis expires those itself). */
  sweep(now: number, policy: SweepPolicy): Promise<void>;
  close(): Promise<void>;

  // TOTP and recovery codes
  /** The admin's TOTP secret, confirmed or pending. */
  getTotp(admin: string): Promise<TotpRecord | undefined>;
  /** Stores a pending secret (replacing a pending one); false when a confirmed one exists (remove it first). */
  beginTotp(admin: string, secret: string, now: number): Promise<boolean>;
  /**
   * Completes enrolment atomically: the pending secret must still be
   * `secret` (a later `beginTotp` voids the earlier one); it becomes
   * confirmed with `step` as the last accepted step, and the admin's recovery
   * codes are replaced by `codeHashes`. False when nothing matched.
   */
  confirmTotp(admin: string, secret: string, step: number, codeHashes: readonly string[], now: number): Promise<boolean>;
  /** Takes a time step for a login, atomically: true only for a confirmed secret and a step after the last accepted one (one of two concurrent uses of a code wins). */
  acceptTotpStep(admin: string, step: number): Promise<boolean>;
  /** Uses a recovery code, atomically: true only when the hash is one of the admin's unused codes. */
  useRecoveryCode(admin: string, codeHash: string, now: number): Promise<boolean>;
  /** The admin's recovery codes not used yet. */
  countRecoveryCodes(admin: string): Promise<number>;
  /** Deletes the admin's TOTP secret and recovery codes; true when there was a secret. */
  deleteTotp(admin: string): Promise<boolean>;

  // Passkeys
  /** Stores a new passkey; false when its credential id is already stored (for any admin). */
  addPasskey(record: PasskeyRecord): Promise<boolean>;
  /** An admin's passkeys, oldest first. */
  listPasskeys(admin: string): Promise<PasskeyRecord[]>;
  getPasskey(id: string): Promise<PasskeyRecord | undefined>;
  countPasskeys(admin: string): Promise<number>;
  /** Renames one of the admin's passkeys; false when the admin has none of that id. */
  renamePasskey(admin: string, id: string, name: string): Promise<boolean>;
  /** Removes one of the admin's passkeys; false when the admin has none of that id. */
  deletePasskey(admin: string, id: string): Promise<boolean>;
  /**
   * Records a sign-in with a passkey, atomically: the counter becomes
   * `counter` and lastUsedAt `now` unless the passkey is gone or the
   * counter went back (counterWentBack), then false and nothing changes.
   */
  usePasskey(id: string, counter: number, now: number): Promise<boolean>;
  /** Stores a challenge, replacing the one of the same key; expired challenges are dropped. */
  putPasskeyChallenge(challenge: PasskeyChallenge, now: number): Promise<void>;
  /** Takes (reads and deletes, atomically: single use) the challenge of a key, expired or not; undefined when there is none. */
  takePasskeyChallenge(key: string): Promise<PasskeyChallenge | undefined>;

  // OIDC identities
  /** The admin linked to a provider's subject (console/oidc.ts). */
  getOidcLink(provider: string, subject: string): Promise<OidcLink | undefined>;
  /**
   * Adds an admin with exactly the role given (never promoted to owner, even
   * as the first admin) and no password, linked to the provider's subject,
   * atomically. Undefined when the name is taken or the subject is linked.
   */
  createOidcAdmin(input: OidcAdminInput): Promise<AdminRecord | undefined>;
  /**
   * Keeps a pending sign-in at a provider until `flow.expiresAt`, unless
   * `max` unexpired ones (at `now`) are pending already: then nothing is
   * kept and the answer is false (the pending ones stay, and can complete).
   * The count and the write are one step (atomic on every backend).
   */
  putOidcFlow(flow: OidcFlow, now: number, max: number): Promise<boolean>;
  /** The pending sign-in of a state's hash, deleted as it is read (single use); undefined when unknown or expired. */
  takeOidcFlow(stateHash: string, now: number): Promise<OidcFlow | undefined>;
  /** The provider subjects linked to an admin. */
  oidcLinksOf(admin: string): Promise<OidcLink[]>;
}

/** The methods of the store, as the cluster IPC names them. */
export type AdminStoreMethod = Exclude<keyof AdminStore, 'close'>;

export const ADMIN_STORE_METHODS: readonly AdminStoreMethod[] = [
  'getAdmin',
  'listAdmins',
  'createAdmin',
  'updateAdmin',
  'createSession',
  'resolveSession',
  'deleteSession',
  'deleteSessionsOf',
  'countSessions',
  'attempt',
  'clearAttempts',
  'forgiveAttempt',
  'getCounter',
  'appendAudit',
  'queryAudit',
  'sweep',
  // TOTP and recovery codes
  'getTotp',
  'beginTotp',
  'confirmTotp',
  'acceptTotpStep',
  'useRecoveryCode',
  'countRecoveryCodes',
  'deleteTotp',
  // Passkeys
  'addPasskey',
  'listPasskeys',
  'getPasskey',
  'countPasskeys',
  'renamePasskey',
  'deletePasskey',
  'usePasskey',
  'putPasskeyChallenge',
  'takePasskeyChallenge',
  // OIDC identities
  'getOidcLink',
  'createOidcAdmin',
  'putOidcFlow',
  'takeOidcFlow',
  'oidcLinksOf',
];

export const MAX_AUDIT_QUERY = 1000;

/** Audit entries the memory store keeps at most. */
export const MAX_MEMORY_AUDIT = 100_000;

/** How long a key must still wait at `now` (0: an attempt is allowed). */
export function waitFor(counter: FailureCounter | undefined, now: number): number {
  if (counter === undefined) return 0;
  return Math.max(0, Math.max(counter.nextAt, counter.lockedUntil) - now);
}

/** Whether a counter is forgotten at `now` (window passed since the last failure, any lock over). */
export function counterForgotten(counter: FailureCounter, now: number, windowMs: number): boolean {
  if (counter.lockedUntil > 0 && counter.lockedUntil <= now) return true;
  return counter.lockedUntil <= now && now - counter.lastAt > windowMs;
}

/** The counter after one more failure at `now`. A lock that ran out starts the count again. */
export function countFailure(counter: FailureCounter | undefined, now: number, policy: LimiterPolicy): FailureCounter {
  const failures = (counter === undefined || counterForgotten(counter, now, policy.windowMs) ? 0 : counter.failures) + 1;
  const delay = failures < policy.delayAfter ? 0 : Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.min(30, failures - policy.delayAfter));
  return { failures, lastAt: now, nextAt: now + delay, lockedUntil: failures >= policy.lockAfter ? now + policy.lockMs : 0 };
}

/** The shared attempt logic over any synchronous counter storage (memory, sqlite in a transaction). */
export function attemptWith(
  checks: readonly LimiterCheck[],
  now: number,
  read: (key: string) => FailureCounter | undefined,
  write: (key: string, counter: FailureCounter) => void,
): AttemptVerdict {
  let wait = 0;
  const current = checks.map((check) => read(check.key));
  for (const counter of current) wait = Math.max(wait, waitFor(counter, now));
  if (wait > 0) return { allowed: false, retryAfterMs: wait, lockedNow: [] };
  const lockedNow: string[] = [];
  checks.forEach((check, i) => {
    const next = countFailure(current[i], now, check.policy);
    if (next.lockedUntil > 0) lockedNow.push(check.key);
    write(check.key, next);
  });
  return { allowed: true, retryAfterMs: 0, lockedNow };
}

/** The counter after `forgiveAttempt`; undefined: delete it. */
export function forgiven(counter: FailureCounter | undefined): FailureCounter | undefined {
  if (counter === undefined || counter.failures <= 1) return counter?.lockedUntil !== undefined && counter.lockedUntil > 0 ? counter : undefined;
  return { ...counter, failures: counter.failures - 1, nextAt: counter.lockedUntil > 0 ? counter.nextAt : 0 };
}

/** A session's absolute lifetime: the policy's, or at most PARTIAL_SESSION_MS short of 'full'. */
export function sessionAbsoluteMs(stage: SessionStage, policy: Pick<SessionPolicy, 'absoluteMs'>): number {
  return stage === 'full' ? policy.absoluteMs : Math.min(policy.absoluteMs, PARTIAL_SESSION_MS);
}

/** Whether a session is in force at `now`. */
export function sessionLive(session: Pick<SessionRecord, 'createdAt' | 'lastSeenAt' | 'stage'>, now: number, policy: SessionPolicy): boolean {
  return now - session.lastSeenAt < policy.idleMs && now - session.createdAt < sessionAbsoluteMs(session.stage, policy);
}

/** The stage read back from a store (anything unknown is the most restricted one). */
export function stageOf(value: unknown): SessionStage {
  return SESSION_STAGES.includes(value as SessionStage) ? (value as SessionStage) : 'enrol';
}

/** The methods read back from a store (JSON array of strings). */
export function methodsOf(value: unknown): string[] {
  if (typeof value !== 'string') return [];
  try {
    const parsed: unknown = JSON.parse(value);
    return Array.isArray(parsed) ? parsed.filter((m): m is string => typeof m === 'string') : [];
  } catch {
    return [];
  }
}

export function matchesAudit(entry: AuditEntry, query: AuditQuery): boolean {
  if (query.actor !== undefined && entry.actor !== query.actor) return false;
  if (query.action !== undefined && entry.action !== query.action) return false;
  if (query.since !== undefined && entry.at < query.since) return false;
  if (query.until !== undefined && entry.at >= query.until) return false;
  return true;
}

export function auditLimit(query: AuditQuery): number {
  return Math.max(1, Math.min(MAX_AUDIT_QUERY, query.limit ?? 100));
}

/** The memory engine's store: this process only, lost on restart. */
export class MemoryAdminStore implements AdminStore {
  readonly #admins = new Map<string, AdminRecord>();
  readonly #sessions = new Map<string, SessionRecord>();
  readonly #counters = new Map<string, FailureCounter>();
  readonly #audit: AuditEntry[] = [];
  #nextAudit = 1;
  // TOTP and recovery codes
  readonly #totp = new Map<string, TotpRecord>();
  /** Admin → code hash → used at (0: unused). */
  readonly #recovery = new Map<string, Map<string, number>>();

  async getAdmin(name: string): Promise<AdminRecord | undefined> {
    return this.#admins.get(name);
  }

  async listAdmins(): Promise<AdminRecord[]> {
    return [...this.#admins.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  async createAdmin(input: { name: string; role: AdminRole; passwordHash: string; now: number }): Promise<AdminRecord | undefined> {
    if (this.#admins.has(input.name)) return undefined;
    const record: AdminRecord = {
      name: input.name,
      role: this.#admins.size === 0 ? 'owner' : input.role,
      passwordHash: input.passwordHash,
      disabled: false,
      createdAt: input.now,
      updatedAt: input.now,
    };
    this.#admins.set(input.name, record);
    return record;
  }

  async updateAdmin(name: string, change: AdminChange, now: number): Promise<AdminRecord | undefined> {
    const existing = this.#admins.get(name);
    if (existing === undefined) return undefined;
    const record: AdminRecord = {
      ...existing,
      ...(change.role === undefined ? {} : { role: change.role }),
      ...(change.passwordHash === undefined ? {} : { passwordHash: change.passwordHash }),
      ...(change.disabled === undefined ? {} : { disabled: change.disabled }),
      updatedAt: now,
    };
    this.#admins.set(name, record);
    return record;
  }

  async createSession(session: SessionRecord): Promise<void> {
    this.#sessions.set(session.idHash, session);
  }

  async resolveSession(idHash: string, now: number, policy: SessionPolicy): Promise<ResolvedSession> {
    const session = this.#sessions.get(idHash);
    if (session === undefined) return { state: 'invalid' };
    const admin = this.#admins.get(session.admin);
    if (!sessionLive(session, now, policy) || admin === undefined || admin.disabled) {
      this.#sessions.delete(idHash);
      return { state: 'invalid' };
    }
    let current = session;
    if (now - session.lastSeenAt >= policy.touchAfterMs) {
      current = { ...session, lastSeenAt: now };
      this.#sessions.set(idHash, current);
    }
    return { state: 'valid', session: current, admin };
  }

  async deleteSession(idHash: string): Promise<void> {
    this.#sessions.delete(idHash);
  }

  async deleteSessionsOf(admin: string): Promise<number> {
    let n = 0;
    for (const [id, session] of this.#sessions) {
      if (session.admin !== admin) continue;
      this.#sessions.delete(id);
      n++;
    }
    return n;
  }

  async countSessions(admin: string, now: number, policy: SessionPolicy): Promise<number> {
    let n = 0;
    for (const session of this.#sessions.values()) if (session.admin === admin && sessionLive(session, now, policy)) n++;
    return n;
  }

  async attempt(checks: readonly LimiterCheck[], now: number): Promise<AttemptVerdict> {
    return attemptWith(
      checks,
      now,
      (key) => this.#counters.get(key),
      (key, counter) => this.#counters.set(key, counter),
    );
  }

  async clearAttempts(key: string): Promise<void> {
    this.#counters.delete(key);
  }

  async forgiveAttempt(key: string): Promise<void> {
    const next = forgiven(this.#counters.get(key));
    if (next === undefined) this.#counters.delete(key);
    else this.#counters.set(key, next);
  }

  async getCounter(key: string): Promise<FailureCounter | undefined> {
    return this.#counters.get(key);
  }

  async appendAudit(entry: AuditInput, now: number): Promise<void> {
    this.#audit.push({ ...entry, id: String(this.#nextAudit++), at: now });
    // Memory is bounded: the oldest entries go first.
    if (this.#audit.length > MAX_MEMORY_AUDIT) this.#audit.splice(0, this.#audit.length - MAX_MEMORY_AUDIT);
  }

  async queryAudit(query: AuditQuery): Promise<AuditEntry[]> {
    const limit = auditLimit(query);
    const before = query.before === undefined ? Infinity : Number(query.before);
    const result: AuditEntry[] = [];
    for (let i = this.#audit.length - 1; i >= 0 && result.length < limit; i--) {
      const entry = this.#audit[i]!;
      if (Number(entry.id) >= before) continue;
      if (matchesAudit(entry, query)) result.push(entry);
    }
    return result;
  }

  async sweep(now: number, policy: SweepPolicy): Promise<void> {
    for (const [id, session] of this.#sessions) if (!sessionLive(session, now, policy.sessions)) this.#sessions.delete(id);
    for (const [key, counter] of this.#counters) if (counterForgotten(counter, now, policy.limiterWindowMs)) this.#counters.delete(key);
    const cutoff = now - policy.auditRetentionMs;
    let drop = 0;
    while (drop < this.#audit.length && this.#audit[drop]!.at < cutoff) drop++;
    if (drop > 0) this.#audit.splice(0, drop);
    // OIDC identities: pending sign-ins past their time.
    for (const [key, flow] of this.#oidcFlows) if (flow.expiresAt <= now) this.#oidcFlows.delete(key);
  }

  async close(): Promise<void> {}

  // TOTP and recovery codes
  async getTotp(admin: string): Promise<TotpRecord | undefined> {
    return this.#totp.get(admin);
  }

  async beginTotp(admin: string, secret: string, now: number): Promise<boolean> {
    if ((this.#totp.get(admin)?.confirmedAt ?? 0) > 0) return false;
    this.#totp.set(admin, { admin, secret, createdAt: now, confirmedAt: 0, lastStep: 0 });
    return true;
  }

  async confirmTotp(admin: string, secret: string, step: number, codeHashes: readonly string[], now: number): Promise<boolean> {
    const pending = this.#totp.get(admin);
    if (pending === undefined || pending.confirmedAt > 0 || pending.secret !== secret) return false;
    this.#totp.set(admin, { ...pending, confirmedAt: now, lastStep: step });
    this.#recovery.set(admin, new Map(codeHashes.map((h) => [h, 0])));
    return true;
  }

  async acceptTotpStep(admin: string, step: number): Promise<boolean> {
    const record = this.#totp.get(admin);
    if (record === undefined || record.confirmedAt === 0 || step <= record.lastStep) return false;
    this.#totp.set(admin, { ...record, lastStep: step });
    return true;
  }

  async useRecoveryCode(admin: string, codeHash: string, now: number): Promise<boolean> {
    const codes = this.#recovery.get(admin);
    if (codes?.get(codeHash) !== 0) return false;
    codes.set(codeHash, now);
    return true;
  }

  async countRecoveryCodes(admin: string): Promise<number> {
    let n = 0;
    for (const usedAt of this.#recovery.get(admin)?.values() ?? []) if (usedAt === 0) n++;
    return n;
  }

  async deleteTotp(admin: string): Promise<boolean> {
    this.#recovery.delete(admin);
    return this.#totp.delete(admin);
  }

  // Passkeys
  readonly #passkeys = new Map<string, PasskeyRecord>();
  readonly #challenges = new Map<string, PasskeyChallenge>();

  async addPasskey(record: PasskeyRecord): Promise<boolean> {
    if (this.#passkeys.has(record.id)) return false;
    this.#passkeys.set(record.id, record);
    return true;
  }

  async listPasskeys(admin: string): Promise<PasskeyRecord[]> {
    return [...this.#passkeys.values()].filter((p) => p.admin === admin).sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  }

  async getPasskey(id: string): Promise<PasskeyRecord | undefined> {
    return this.#passkeys.get(id);
  }

  async countPasskeys(admin: string): Promise<number> {
    return (await this.listPasskeys(admin)).length;
  }

  async renamePasskey(admin: string, id: string, name: string): Promise<boolean> {
    const found = this.#passkeys.get(id);
    if (found === undefined || found.admin !== admin) return false;
    this.#passkeys.set(id, { ...found, name });
    return true;
  }

  async deletePasskey(admin: string, id: string): Promise<boolean> {
    const found = this.#passkeys.get(id);
    if (found === undefined || found.admin !== admin) return false;
    return this.#passkeys.delete(id);
  }

  async usePasskey(id: string, counter: number, now: number): Promise<boolean> {
    const found = this.#passkeys.get(id);
    if (found === undefined || counterWentBack(found.counter, counter)) return false;
    this.#passkeys.set(id, { ...found, counter, lastUsedAt: now });
    return true;
  }

  async putPasskeyChallenge(challenge: PasskeyChallenge, now: number): Promise<void> {
    for (const [key, c] of this.#challenges) if (c.expiresAt <= now) this.#challenges.delete(key);
    this.#challenges.set(challenge.key, challenge);
  }

  async takePasskeyChallenge(key: string): Promise<PasskeyChallenge | undefined> {
    const found = this.#challenges.get(key);
    this.#challenges.delete(key);
    return found;
  }

  // OIDC identities
  readonly #oidcLinks = new Map<string, OidcLink>();
  readonly #oidcFlows = new Map<string, OidcFlow>();

  async getOidcLink(provider: string, subject: string): Promise<OidcLink | undefined> {
    return this.#oidcLinks.get(oidcLinkKey(provider, subject));
  }

  async createOidcAdmin(input: OidcAdminInput): Promise<AdminRecord | undefined> {
    const key = oidcLinkKey(input.provider, input.subject);
    if (this.#admins.has(input.name) || this.#oidcLinks.has(key)) return undefined;
    const record: AdminRecord = { name: input.name, role: input.role, passwordHash: '', disabled: false, createdAt: input.now, updatedAt: input.now };
    this.#admins.set(input.name, record);
    this.#oidcLinks.set(key, { provider: input.provider, subject: input.subject, admin: input.name, createdAt: input.now });
    return record;
  }

  async putOidcFlow(flow: OidcFlow, now: number, max: number): Promise<boolean> {
    if (this.#oidcFlows.size >= max) for (const [key, f] of this.#oidcFlows) if (f.expiresAt <= now) this.#oidcFlows.delete(key);
    if (this.#oidcFlows.size >= max) return false;
    this.#oidcFlows.set(flow.stateHash, flow);
    return true;
  }

  async takeOidcFlow(stateHash: string, now: number): Promise<OidcFlow | undefined> {
    const flow = this.#oidcFlows.get(stateHash);
    this.#oidcFlows.delete(stateHash);
    return flow !== undefined && flow.expiresAt > now ? flow : undefined;
  }

  async oidcLinksOf(admin: string): Promise<OidcLink[]> {
    return [...this.#oidcLinks.values()].filter((link) => link.admin === admin);
  }
}

// OIDC identities

/** An admin linked to a provider's subject: created at the first OIDC sign-in, found by it at the next ones. */
export interface OidcLink {
  /** The provider's id in admin.console.oidc.providers. */
  readonly provider: string;
  /** The ID token's `sub` (unique within the provider's issuer). */
  readonly subject: string;
  readonly admin: string;
  readonly createdAt: number;
}

export interface OidcAdminInput {
  readonly name: string;
  readonly role: AdminRole;
  readonly provider: string;
  readonly subject: string;
  readonly now: number;
}

/** A sign-in sent to a provider and not yet back: what the callback checks (console/oidc.ts). */
export interface OidcFlow {
  /** SHA-256 (hex) of the `state` sent to the provider. */
  readonly stateHash: string;
  readonly provider: string;
  readonly nonce: string;
  /** PKCE code verifier (its S256 challenge went to the provider). */
  readonly codeVerifier: string;
  /** SHA-256 (hex) of the value in the browser's flow cookie: the callback must come from the browser that started. */
  readonly bindingHash: string;
  readonly expiresAt: number;
}

function oidcLinkKey(provider: string, subject: string): string {
  return `${provider}\0${subject}`;
}
