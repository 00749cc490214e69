/**
 * The console store in the sqlite engine's state file (tables of migrations
 * 6 and 11, store/sqlite-store.ts). Used by the server that owns the file (the
 * single process, or the cluster primary for its workers) and by `herald
 * admin` beside it: every read goes to the file, every check-and-write runs
 * in one `BEGIN IMMEDIATE` transaction, so a change by either is seen by the
 * other's next call.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { writeTransaction } from '../store/sqlite-store.ts';
import {
  attemptWith,
  auditLimit,
  forgiven,
  waitFor,
  sessionLive,
  stageOf,
  methodsOf,
  PARTIAL_SESSION_MS,
  type AdminChange,
  type AdminRecord,
  type AdminRole,
  type AdminStore,
  type AttemptVerdict,
  type AuditEntry,
  type AuditInput,
  type AuditQuery,
  counterWentBack,
  type FailureCounter,
  type LimiterCheck,
  type PasskeyChallenge,
  type PasskeyRecord,
  type OidcAdminInput,
  type OidcFlow,
  type OidcLink,
  type ResolvedSession,
  type SessionPolicy,
  type SessionRecord,
  type SweepPolicy,
  type TotpRecord,
} from './admin-store.ts';

interface AdminRow {
  name: string;
  role: string;
  password_hash: string;
  disabled: number;
  created_at: number;
  updated_at: number;
}

interface SessionRow {
  id_hash: string;
  admin: string;
  created_at: number;
  last_seen_at: number;
  csrf_secret: string;
  address: string;
  stage: string;
  methods: string;
}

interface TotpRow {
  admin: string;
  secret: string;
  created_at: number;
  confirmed_at: number;
  last_step: number;
}

interface CounterRow {
  failures: number;
  last_at: number;
  next_at: number;
  locked_until: number;
}

interface AuditRow {
  id: number;
  at: number;
  actor: string;
  action: string;
  target: string | null;
  address: string | null;
  outcome: string;
  detail: string | null;
}

function admin(row: AdminRow): AdminRecord {
  return {
    name: row.name,
    role: row.role as AdminRole,
    passwordHash: row.password_hash,
    disabled: row.disabled !== 0,
    createdAt: Number(row.created_at),
    updatedAt: Number(row.updated_at),
  };
}

function session(row: SessionRow): SessionRecord {
  return {
    idHash: row.id_hash,
    admin: row.admin,
    createdAt: Number(row.created_at),
    lastSeenAt: Number(row.last_seen_at),
    csrfSecret: row.csrf_secret,
    address: row.address,
    stage: stageOf(row.stage),
    methods: methodsOf(row.methods),
  };
}

function totp(row: TotpRow): TotpRecord {
  return { admin: row.admin, secret: row.secret, createdAt: Number(row.created_at), confirmedAt: Number(row.confirmed_at), lastStep: Number(row.last_step) };
}

function counter(row: CounterRow | undefined): FailureCounter | undefined {
  if (row === undefined) return undefined;
  return { failures: Number(row.failures), lastAt: Number(row.last_at), nextAt: Number(row.next_at), lockedUntil: Number(row.locked_until) };
}

function auditEntry(row: AuditRow): AuditEntry {
  let detail: Record<string, unknown> | undefined;
  if (row.detail !== null) {
    try {
      detail = JSON.parse(row.detail) as Record<string, unknown>;
    } catch {
      detail = undefined;
    }
  }
  return {
    id: String(row.id),
    at: Number(row.at),
    actor: row.actor,
    action: row.action,
    outcome: row.outcome as AuditEntry['outcome'],
    ...(row.target === null ? {} : { target: row.target }),
    ...(row.address === null ? {} : { address: row.address }),
    ...(detail === undefined ? {} : { detail }),
  };
}

export class SqliteAdminStore implements AdminStore {
  readonly #db: DatabaseSync;
  readonly #q: Record<string, StatementSync>;

  constructor(db: DatabaseSync) {
    this.#db = db;
    const p = (sql: string) => db.prepare(sql);
    this.#q = {
      getAdmin: p('SELECT * FROM console_admins WHERE name = ?'),
      listAdmins: p('SELECT * FROM console_admins ORDER BY name'),
      countAdmins: p('SELECT count(*) AS n FROM console_admins'),
      insertAdmin: p('INSERT INTO console_admins (name, role, password_hash, disabled, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?)'),
      updateAdmin: p('UPDATE console_admins SET role = ?, password_hash = ?, disabled = ?, updated_at = ? WHERE name = ?'),
      insertSession: p('INSERT INTO console_sessions (id_hash, admin, created_at, last_seen_at, csrf_secret, address, stage, methods) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      getSession: p('SELECT * FROM console_sessions WHERE id_hash = ?'),
      touchSession: p('UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ?'),
      deleteSession: p('DELETE FROM console_sessions WHERE id_hash = ?'),
      deleteSessionsOf: p('DELETE FROM console_sessions WHERE admin = ?'),
      sessionsOf: p('SELECT * FROM console_sessions WHERE admin = ?'),
      getCounter: p('SELECT failures, last_at, next_at, locked_until FROM console_login_failures WHERE key = ?'),
      putCounter: p(
        'INSERT INTO console_login_failures (key, failures, last_at, next_at, locked_until) VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, last_at = excluded.last_at, next_at = excluded.next_at, locked_until = excluded.locked_until',
      ),
      clearCounter: p('DELETE FROM console_login_failures WHERE key = ?'),
      insertAudit: p('INSERT INTO console_audit (at, actor, action, target, address, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)'),
      sweepSessions: p("DELETE FROM console_sessions WHERE last_seen_at <= ? OR created_at <= ? OR (stage <> 'full' AND created_at <= ?)"),
      sweepCounters: p('DELETE FROM console_login_failures WHERE (locked_until > 0 AND locked_until <= ?) OR (locked_until = 0 AND last_at < ?)'),
      sweepAudit: p('DELETE FROM console_audit WHERE at < ?'),
      // TOTP and recovery codes
      getTotp: p('SELECT * FROM console_totp WHERE admin = ?'),
      putTotp: p('INSERT OR REPLACE INTO console_totp (admin, secret, created_at, confirmed_at, last_step) VALUES (?, ?, ?, 0, 0)'),
      confirmTotp: p('UPDATE console_totp SET confirmed_at = ?, last_step = ? WHERE admin = ? AND secret = ? AND confirmed_at = 0'),
      acceptStep: p('UPDATE console_totp SET last_step = ? WHERE admin = ? AND confirmed_at > 0 AND last_step < ?'),
      deleteTotp: p('DELETE FROM console_totp WHERE admin = ?'),
      insertCode: p('INSERT INTO console_recovery_codes (admin, code_hash, created_at, used_at) VALUES (?, ?, ?, 0)'),
      useCode: p('UPDATE console_recovery_codes SET used_at = ? WHERE admin = ? AND code_hash = ? AND used_at = 0'),
      countCodes: p('SELECT count(*) AS n FROM console_recovery_codes WHERE admin = ? AND used_at = 0'),
      deleteCodes: p('DELETE FROM console_recovery_codes WHERE admin = ?'),
    };
  }

  async getAdmin(name: string): Promise<AdminRecord | undefined> {
    const row = this.#q['getAdmin']!.get(name) as AdminRow | undefined;
    return row === undefined ? undefined : admin(row);
  }

  async listAdmins(): Promise<AdminRecord[]> {
    return (this.#q['listAdmins']!.all() as unknown as AdminRow[]).map(admin);
  }

  async createAdmin(input: { name: string; role: AdminRole; passwordHash: string; now: number }): Promise<AdminRecord | undefined> {
    return writeTransaction(this.#db, () => {
      if (this.#q['getAdmin']!.get(input.name) !== undefined) return undefined;
      const first = Number((this.#q['countAdmins']!.get() as { n: number }).n) === 0;
      const role = first ? 'owner' : input.role;
      this.#q['insertAdmin']!.run(input.name, role, input.passwordHash, input.now, input.now);
      return { name: input.name, role, passwordHash: input.passwordHash, disabled: false, createdAt: input.now, updatedAt: input.now };
    });
  }

  async updateAdmin(name: string, change: AdminChange, now: number): Promise<AdminRecord | undefined> {
    return writeTransaction(this.#db, () => {
      const row = this.#q['getAdmin']!.get(name) as AdminRow | undefined;
      if (row === undefined) return undefined;
      const before = admin(row);
      const next: AdminRecord = {
        ...before,
        role: change.role ?? before.role,
        passwordHash: change.passwordHash ?? before.passwordHash,
        disabled: change.disabled ?? before.disabled,
        updatedAt: now,
      };
      this.#q['updateAdmin']!.run(next.role, next.passwordHash, next.disabled ? 1 : 0, now, name);
      return next;
    });
  }

  async createSession(record: SessionRecord): Promise<void> {
    this.#q['insertSession']!.run(record.idHash, record.admin, record.createdAt, record.lastSeenAt, record.csrfSecret, record.address, record.stage, JSON.stringify(record.methods));
  }

  async resolveSession(idHash: string, now: number, policy: SessionPolicy): Promise<ResolvedSession> {
    const row = this.#q['getSession']!.get(idHash) as SessionRow | undefined;
    if (row === undefined) return { state: 'invalid' };
    const found = session(row);
    const adminRow = this.#q['getAdmin']!.get(found.admin) as AdminRow | undefined;
    if (!sessionLive(found, now, policy) || adminRow === undefined || adminRow.disabled !== 0) {
      this.#q['deleteSession']!.run(idHash);
      return { state: 'invalid' };
    }
    if (now - found.lastSeenAt < policy.touchAfterMs) return { state: 'valid', session: found, admin: admin(adminRow) };
    this.#q['touchSession']!.run(now, idHash);
    return { state: 'valid', session: { ...found, lastSeenAt: now }, admin: admin(adminRow) };
  }

  async deleteSession(idHash: string): Promise<void> {
    this.#q['deleteSession']!.run(idHash);
  }

  async deleteSessionsOf(name: string): Promise<number> {
    return Number(this.#q['deleteSessionsOf']!.run(name).changes);
  }

  async countSessions(name: string, now: number, policy: SessionPolicy): Promise<number> {
    return (this.#q['sessionsOf']!.all(name) as unknown as SessionRow[]).filter((row) => sessionLive(session(row), now, policy)).length;
  }

  async attempt(checks: readonly LimiterCheck[], now: number): Promise<AttemptVerdict> {
    // A refusal is decided by a plain read (no write lock): a flood of refused attempts writes nothing.
    let wait = 0;
    for (const check of checks) wait = Math.max(wait, waitFor(counter(this.#q['getCounter']!.get(check.key) as CounterRow | undefined), now));
    if (wait > 0) return { allowed: false, retryAfterMs: wait, lockedNow: [] };
    return writeTransaction(this.#db, () =>
      attemptWith(
        checks,
        now,
        (key) => counter(this.#q['getCounter']!.get(key) as CounterRow | undefined),
        (key, next) => {
          this.#q['putCounter']!.run(key, next.failures, next.lastAt, next.nextAt, next.lockedUntil);
        },
      ),
    );
  }

  async clearAttempts(key: string): Promise<void> {
    this.#q['clearCounter']!.run(key);
  }

  async forgiveAttempt(key: string): Promise<void> {
    writeTransaction(this.#db, () => {
      const next = forgiven(counter(this.#q['getCounter']!.get(key) as CounterRow | undefined));
      if (next === undefined) this.#q['clearCounter']!.run(key);
      else this.#q['putCounter']!.run(key, next.failures, next.lastAt, next.nextAt, next.lockedUntil);
    });
  }

  async getCounter(key: string): Promise<FailureCounter | undefined> {
    return counter(this.#q['getCounter']!.get(key) as CounterRow | undefined);
  }

  async appendAudit(entry: AuditInput, now: number): Promise<void> {
    this.#q['insertAudit']!.run(
      now,
      entry.actor,
      entry.action,
      entry.target ?? null,
      entry.address ?? null,
      entry.outcome,
      entry.detail === undefined ? null : JSON.stringify(entry.detail),
    );
  }

  async queryAudit(query: AuditQuery): Promise<AuditEntry[]> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (query.actor !== undefined) {
      where.push('actor = ?');
      args.push(query.actor);
    }
    if (query.action !== undefined) {
      where.push('action = ?');
      args.push(query.action);
    }
    if (query.since !== undefined) {
      where.push('at >= ?');
      args.push(query.since);
    }
    if (query.until !== undefined) {
      where.push('at < ?');
      args.push(query.until);
    }
    if (query.before !== undefined && /^[0-9]{1,18}$/.test(query.before)) {
      where.push('id < ?');
      args.push(Number(query.before));
    }
    const sql = `SELECT * FROM console_audit ${where.length === 0 ? '' : 'WHERE ' + where.join(' AND ')} ORDER BY id DESC LIMIT ${auditLimit(query)}`;
    return (this.#db.prepare(sql).all(...args) as unknown as AuditRow[]).map(auditEntry);
  }

  async sweep(now: number, policy: SweepPolicy): Promise<void> {
    writeTransaction(this.#db, () => {
      this.#q['sweepSessions']!.run(now - policy.sessions.idleMs, now - policy.sessions.absoluteMs, now - PARTIAL_SESSION_MS);
      this.#q['sweepCounters']!.run(now, now - policy.limiterWindowMs);
      this.#q['sweepAudit']!.run(now - policy.auditRetentionMs);
      // OIDC identities: pending sign-ins past their time.
      this.#oq()['sweepFlows']!.run(now);
    });
  }

  async close(): Promise<void> {}

  // TOTP and recovery codes
  async getTotp(name: string): Promise<TotpRecord | undefined> {
    const row = this.#q['getTotp']!.get(name) as TotpRow | undefined;
    return row === undefined ? undefined : totp(row);
  }

  async beginTotp(name: string, secret: string, now: number): Promise<boolean> {
    return writeTransaction(this.#db, () => {
      const row = this.#q['getTotp']!.get(name) as TotpRow | undefined;
      if (row !== undefined && Number(row.confirmed_at) > 0) return false;
      this.#q['putTotp']!.run(name, secret, now);
      return true;
    });
  }

  async confirmTotp(name: string, secret: string, step: number, codeHashes: readonly string[], now: number): Promise<boolean> {
    return writeTransaction(this.#db, () => {
      if (Number(this.#q['confirmTotp']!.run(now, step, name, secret).changes) !== 1) return false;
      this.#q['deleteCodes']!.run(name);
      for (const hash of codeHashes) this.#q['insertCode']!.run(name, hash, now);
      return true;
    });
  }

  async acceptTotpStep(name: string, step: number): Promise<boolean> {
    return Number(this.#q['acceptStep']!.run(step, name, step).changes) === 1;
  }

  async useRecoveryCode(name: string, codeHash: string, now: number): Promise<boolean> {
    return Number(this.#q['useCode']!.run(now, name, codeHash).changes) === 1;
  }

  async countRecoveryCodes(name: string): Promise<number> {
    return Number((this.#q['countCodes']!.get(name) as { n: number }).n);
  }

  async deleteTotp(name: string): Promise<boolean> {
    return writeTransaction(this.#db, () => {
      this.#q['deleteCodes']!.run(name);
      return Number(this.#q['deleteTotp']!.run(name).changes) === 1;
    });
  }

  // Passkeys (tables of migration 12)
  readonly #passkeyStatements = new Map<string, StatementSync>();

  #pk(sql: string): StatementSync {
    let statement = this.#passkeyStatements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql);
      this.#passkeyStatements.set(sql, statement);
    }
    return statement;
  }

  async addPasskey(record: PasskeyRecord): Promise<boolean> {
    const result = this.#pk(
      'INSERT INTO console_passkeys (id, admin, public_key, counter, transports, name, user_handle, created_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING',
    ).run(record.id, record.admin, record.publicKey, record.counter, JSON.stringify(record.transports), record.name, record.userHandle, record.createdAt, record.lastUsedAt);
    return Number(result.changes) === 1;
  }

  async listPasskeys(admin: string): Promise<PasskeyRecord[]> {
    return (this.#pk('SELECT * FROM console_passkeys WHERE admin = ? ORDER BY created_at, id').all(admin) as unknown as PasskeyRow[]).map(passkey);
  }

  async getPasskey(id: string): Promise<PasskeyRecord | undefined> {
    const row = this.#pk('SELECT * FROM console_passkeys WHERE id = ?').get(id) as PasskeyRow | undefined;
    return row === undefined ? undefined : passkey(row);
  }

  async countPasskeys(admin: string): Promise<number> {
    return Number((this.#pk('SELECT count(*) AS n FROM console_passkeys WHERE admin = ?').get(admin) as { n: number }).n);
  }

  async renamePasskey(admin: string, id: string, name: string): Promise<boolean> {
    return Number(this.#pk('UPDATE console_passkeys SET name = ? WHERE id = ? AND admin = ?').run(name, id, admin).changes) === 1;
  }

  async deletePasskey(admin: string, id: string): Promise<boolean> {
    return Number(this.#pk('DELETE FROM console_passkeys WHERE id = ? AND admin = ?').run(id, admin).changes) === 1;
  }

  async usePasskey(id: string, counter: number, now: number): Promise<boolean> {
    return writeTransaction(this.#db, () => {
      const row = this.#pk('SELECT * FROM console_passkeys WHERE id = ?').get(id) as PasskeyRow | undefined;
      if (row === undefined || counterWentBack(Number(row.counter), counter)) return false;
      this.#pk('UPDATE console_passkeys SET counter = ?, last_used_at = ? WHERE id = ?').run(counter, now, id);
      return true;
    });
  }

  async putPasskeyChallenge(challenge: PasskeyChallenge, now: number): Promise<void> {
    writeTransaction(this.#db, () => {
      this.#pk('DELETE FROM console_passkey_challenges WHERE expires_at <= ?').run(now);
      this.#pk(
        'INSERT INTO console_passkey_challenges (key, purpose, challenge, admin, user_handle, expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET purpose = excluded.purpose, challenge = excluded.challenge, admin = excluded.admin, user_handle = excluded.user_handle, expires_at = excluded.expires_at',
      ).run(challenge.key, challenge.purpose, challenge.challenge, challenge.admin, challenge.userHandle, challenge.expiresAt);
    });
  }

  async takePasskeyChallenge(key: string): Promise<PasskeyChallenge | undefined> {
    const row = this.#pk('DELETE FROM console_passkey_challenges WHERE key = ? RETURNING *').get(key) as ChallengeRow | undefined;
    if (row === undefined) return undefined;
    return { key: row.key, purpose: row.purpose as PasskeyChallenge['purpose'], challenge: row.challenge, admin: row.admin, userHandle: row.user_handle, expiresAt: Number(row.expires_at) };
  }

  // OIDC identities (tables of migration 13)
  #oidc?: Record<string, StatementSync>;

  #oq(): Record<string, StatementSync> {
    const p = (sql: string) => this.#db.prepare(sql);
    this.#oidc ??= {
      getLink: p('SELECT provider, subject, admin, created_at FROM console_oidc_links WHERE provider = ? AND subject = ?'),
      insertLink: p('INSERT INTO console_oidc_links (provider, subject, admin, created_at) VALUES (?, ?, ?, ?)'),
      putFlow: p('INSERT OR REPLACE INTO console_oidc_flows (state_hash, provider, nonce, code_verifier, binding_hash, expires_at) VALUES (?, ?, ?, ?, ?, ?)'),
      takeFlow: p('DELETE FROM console_oidc_flows WHERE state_hash = ? RETURNING provider, nonce, code_verifier, binding_hash, expires_at'),
      sweepFlows: p('DELETE FROM console_oidc_flows WHERE expires_at <= ?'),
      countFlows: p('SELECT COUNT(*) AS n FROM console_oidc_flows WHERE expires_at > ?'),
      linksOf: p('SELECT provider, subject, admin, created_at FROM console_oidc_links WHERE admin = ? ORDER BY provider, subject'),
    };
    return this.#oidc;
  }

  async getOidcLink(provider: string, subject: string): Promise<OidcLink | undefined> {
    const row = this.#oq()['getLink']!.get(provider, subject) as { provider: string; subject: string; admin: string; created_at: number } | undefined;
    return row === undefined ? undefined : { provider: row.provider, subject: row.subject, admin: row.admin, createdAt: Number(row.created_at) };
  }

  async createOidcAdmin(input: OidcAdminInput): Promise<AdminRecord | undefined> {
    const q = this.#oq();
    return writeTransaction(this.#db, () => {
      if (this.#q['getAdmin']!.get(input.name) !== undefined || q['getLink']!.get(input.provider, input.subject) !== undefined) return undefined;
      this.#q['insertAdmin']!.run(input.name, input.role, '', input.now, input.now);
      q['insertLink']!.run(input.provider, input.subject, input.name, input.now);
      return { name: input.name, role: input.role, passwordHash: '', disabled: false, createdAt: input.now, updatedAt: input.now };
    });
  }

  async putOidcFlow(flow: OidcFlow, now: number, max: number): Promise<boolean> {
    // Expired flows go with the sweep (once a minute); the count skips them (expires_at is indexed).
    const q = this.#oq();
    return writeTransaction(this.#db, () => {
      if (Number((q['countFlows']!.get(now) as { n: number }).n) >= max) return false;
      q['putFlow']!.run(flow.stateHash, flow.provider, flow.nonce, flow.codeVerifier, flow.bindingHash, flow.expiresAt);
      return true;
    });
  }

  async takeOidcFlow(stateHash: string, now: number): Promise<OidcFlow | undefined> {
    const row = this.#oq()['takeFlow']!.get(stateHash) as { provider: string; nonce: string; code_verifier: string; binding_hash: string; expires_at: number } | undefined;
    if (row === undefined || Number(row.expires_at) <= now) return undefined;
    return { stateHash, provider: row.provider, nonce: row.nonce, codeVerifier: row.code_verifier, bindingHash: row.binding_hash, expiresAt: Number(row.expires_at) };
  }

  async oidcLinksOf(admin: string): Promise<OidcLink[]> {
    const rows = this.#oq()['linksOf']!.all(admin) as unknown as { provider: string; subject: string; admin: string; created_at: number }[];
    return rows.map((row) => ({ provider: row.provider, subject: row.subject, admin: row.admin, createdAt: Number(row.created_at) }));
  }
}

interface PasskeyRow {
  id: string;
  admin: string;
  public_key: string;
  counter: number;
  transports: string;
  name: string;
  user_handle: string;
  created_at: number;
  last_used_at: number | null;
}

interface ChallengeRow {
  key: string;
  purpose: string;
  challenge: string;
  admin: string | null;
  user_handle: string | null;
  expires_at: number;
}

function passkey(row: PasskeyRow): PasskeyRecord {
  let transports: string[] = [];
  try {
    const parsed: unknown = JSON.parse(row.transports);
    if (Array.isArray(parsed)) transports = parsed.filter((t): t is string => typeof t === 'string');
  } catch {
    transports = [];
  }
  return {
    id: row.id,
    admin: row.admin,
    publicKey: row.public_key,
    counter: Number(row.counter),
    transports,
    name: row.name,
    userHandle: row.user_handle,
    createdAt: Number(row.created_at),
    lastUsedAt: row.last_used_at === null ? null : Number(row.last_used_at),
  };
}
