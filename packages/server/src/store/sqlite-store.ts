/**
 * The durable state file of the sqlite engine: `<stateDir>/herald.db`,
 * opened through `node:sqlite` (no native addon).
 *
 * Guarantees:
 * - The state directory is created 0700 and the file 0600 (SQLite gives its
 *   `-wal` and `-shm` files the database file's mode).
 * - WAL journal, `synchronous=NORMAL` by default: a committed transaction
 *   survives a crash of the process, not necessarily a power loss (`FULL`
 *   survives both, at an fsync per commit). A busy timeout bounds how long a
 *   write waits for another connection (`herald keys`) to release the file.
 * - The file is validated before anything is written: a file that is not
 *   SQLite, SQLite of another application (wrong `application_id`, or no
 *   schema table), a schema written by a newer Herald, or a file that fails
 *   `PRAGMA quick_check` is refused with a ConfigError naming the file and
 *   the problem (exit code 2). A refused file is never modified.
 * - Growth is bounded by the sweep (broker/sqlite-broker.ts): expired
 *   history is deleted and, with `auto_vacuum = INCREMENTAL`, the pages it
 *   freed are returned to the file system a bounded number at a time.
 * - One process owns the file: opening claims it (pid and a heartbeat the
 *   broker's sweep renews); a second Herald on the same state directory is
 *   refused while the owner's process lives and its heartbeat is fresh.
 *   A clean close releases the claim; after a crash the next start takes it.
 *   A tool (`herald keys`, `herald backup`; `claim: false`) opens the file
 *   beside its owner for a moment without claiming it: SQLite's WAL lets it
 *   read while the owner writes, and its short write transactions wait for
 *   the owner's (busy timeout) instead of failing.
 * - Migrations run in order, each in its own transaction together with the
 *   version row that records it, so a crash leaves a whole version or none;
 *   a version another connection applied meanwhile is not applied twice.
 */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { ConfigError } from '../config/load.ts';

export const STATE_FILE = 'herald.db';
/** `PRAGMA application_id` of a Herald state file: "HRLD". */
export const APPLICATION_ID = 0x48524c44;

/**
 * A migration number given to a part that has not landed yet (parts built side
 * by side take numbers in advance). The runner skips it without recording it,
 * and applies it when it is filled in, even on a file that has later ones.
 */
const RESERVED = '';

/** Ordered migrations; index + 1 is the schema version. Never edit a landed one: append (or fill a RESERVED one). */
export const MIGRATIONS: readonly string[] = [
  // 1: streams (history with epoch and offsets) and revocations.
  `CREATE TABLE streams (
     channel TEXT PRIMARY KEY,
     epoch TEXT NOT NULL,
     top INTEGER NOT NULL,
     last_publish_at INTEGER NOT NULL,
     ttl_ms INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE publications (
     channel TEXT NOT NULL,
     offset INTEGER NOT NULL,
     time INTEGER NOT NULL,
     data TEXT NOT NULL,
     info TEXT,
     PRIMARY KEY (channel, offset)
   ) WITHOUT ROWID;
   CREATE INDEX publications_time ON publications (time);
   CREATE TABLE revoked_tokens (jti TEXT PRIMARY KEY, until INTEGER NOT NULL) WITHOUT ROWID;
   CREATE TABLE revoked_users (user TEXT PRIMARY KEY, at INTEGER NOT NULL, until INTEGER NOT NULL) WITHOUT ROWID;`,
  // 2: the process that owns the file (one writer: a second Herald on the same state directory is refused).
  `CREATE TABLE herald_owner (id INTEGER PRIMARY KEY CHECK (id = 1), pid INTEGER NOT NULL, heartbeat INTEGER NOT NULL);`,
  // 3: the sweep finds dead streams without reading every stream.
  `CREATE INDEX streams_last_publish ON streams (last_publish_at);`,
  // 4: publish idempotency keys (channel, key) → the first publish's position, until expires_at.
  `CREATE TABLE idempotency_keys (
     channel TEXT NOT NULL,
     key TEXT NOT NULL,
     epoch TEXT NOT NULL,
     offset INTEGER NOT NULL,
     expires_at INTEGER NOT NULL,
     PRIMARY KEY (channel, key)
   ) WITHOUT ROWID;
   CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);`,
  // 5: API keys (SHA-256 only; written by `herald keys`, read by the server) and one-off facts such as the import of api-keys.json.
  `CREATE TABLE api_keys (
     name TEXT PRIMARY KEY,
     sha256 TEXT NOT NULL,
     scopes TEXT NOT NULL,
     created TEXT NOT NULL,
     not_after TEXT
   ) WITHOUT ROWID;
   CREATE TABLE herald_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;`,
  // 6: the admin console (console/sqlite-admin-store.ts): admins, sessions (by the SHA-256 of the id), login-limiter counters, audit log.
  `CREATE TABLE console_admins (
     name TEXT PRIMARY KEY,
     role TEXT NOT NULL,
     password_hash TEXT NOT NULL,
     disabled INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE console_sessions (
     id_hash TEXT PRIMARY KEY,
     admin TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     last_seen_at INTEGER NOT NULL,
     csrf_secret TEXT NOT NULL,
     address TEXT NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX console_sessions_admin ON console_sessions (admin);
   CREATE TABLE console_login_failures (
     key TEXT PRIMARY KEY,
     failures INTEGER NOT NULL,
     last_at INTEGER NOT NULL,
     next_at INTEGER NOT NULL,
     locked_until INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE TABLE console_audit (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     at INTEGER NOT NULL,
     actor TEXT NOT NULL,
     action TEXT NOT NULL,
     target TEXT,
     address TEXT,
     outcome TEXT NOT NULL,
     detail TEXT
   );
   CREATE INDEX console_audit_at ON console_audit (at);`,
  // 7: the public prefix of an API key (the console's key list; null for keys made before).
  `ALTER TABLE api_keys ADD COLUMN prefix TEXT;`,
  // 8: the last use of each API key, written at most once a minute per process (console/key-usage.ts).
  `CREATE TABLE api_key_usage (name TEXT PRIMARY KEY, last_used_at INTEGER NOT NULL) WITHOUT ROWID;`,
  // 9: the webhook outbox (webhooks/sqlite-outbox.ts): one row per event and endpoint, pending or dead.
  `CREATE TABLE webhook_outbox (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     endpoint TEXT NOT NULL,
     event_id TEXT NOT NULL,
     event TEXT NOT NULL,
     attempts INTEGER NOT NULL,
     next_at INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     dead_at INTEGER,
     reason TEXT
   );
   CREATE INDEX webhook_outbox_pending ON webhook_outbox (endpoint, dead_at, seq);`,
  // 10: channels and members webhooks announced as occupied/added and not yet vacated/removed (webhooks/journal.ts):
  // after a crash the next start announces their end.
  `CREATE TABLE webhook_open (
     channel TEXT NOT NULL,
     member TEXT NOT NULL,
     user TEXT NOT NULL,
     client TEXT,
     PRIMARY KEY (channel, member)
   ) WITHOUT ROWID;`,
  // 11: sign-in stages of console sessions (console/sign-in.ts), TOTP secrets and hashed recovery codes (console/totp.ts).
  `ALTER TABLE console_sessions ADD COLUMN stage TEXT NOT NULL DEFAULT 'full';
   ALTER TABLE console_sessions ADD COLUMN methods TEXT NOT NULL DEFAULT '["password"]';
   CREATE TABLE console_totp (
     admin TEXT PRIMARY KEY,
     secret TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     confirmed_at INTEGER NOT NULL DEFAULT 0,
     last_step INTEGER NOT NULL DEFAULT 0
   ) WITHOUT ROWID;
   CREATE TABLE console_recovery_codes (
     admin TEXT NOT NULL,
     code_hash TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     used_at INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (admin, code_hash)
   ) WITHOUT ROWID;`,
  // 12: passkeys of console admins (console/sqlite-admin-store.ts) and the challenges of their ceremonies (single use, expiring).
  `CREATE TABLE console_passkeys (
     id TEXT PRIMARY KEY,
     admin TEXT NOT NULL,
     public_key TEXT NOT NULL,
     counter INTEGER NOT NULL,
     transports TEXT NOT NULL,
     name TEXT NOT NULL,
     user_handle TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     last_used_at INTEGER
   ) WITHOUT ROWID;
   CREATE INDEX console_passkeys_admin ON console_passkeys (admin);
   CREATE TABLE console_passkey_challenges (
     key TEXT PRIMARY KEY,
     purpose TEXT NOT NULL,
     challenge TEXT NOT NULL,
     admin TEXT,
     user_handle TEXT,
     expires_at INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX console_passkey_challenges_expiry ON console_passkey_challenges (expires_at);`,
  // 13: OIDC sign-in of the console (console/sqlite-admin-store.ts): admins linked to a provider's subject, and pending sign-ins (single use).
  `CREATE TABLE console_oidc_links (
     provider TEXT NOT NULL,
     subject TEXT NOT NULL,
     admin TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (provider, subject)
   ) WITHOUT ROWID;
   CREATE INDEX console_oidc_links_admin ON console_oidc_links (admin);
   CREATE TABLE console_oidc_flows (
     state_hash TEXT PRIMARY KEY,
     provider TEXT NOT NULL,
     nonce TEXT NOT NULL,
     code_verifier TEXT NOT NULL,
     binding_hash TEXT NOT NULL,
     expires_at INTEGER NOT NULL
   ) WITHOUT ROWID;
   CREATE INDEX console_oidc_flows_expiry ON console_oidc_flows (expires_at);`,
  // 14: apps created from the console and `herald apps` (apps/sqlite-app-store.ts); the secret as it is (an HMAC key); `apps_version` in herald_meta counts changes.
  `CREATE TABLE apps (
     id TEXT PRIMARY KEY,
     key TEXT NOT NULL UNIQUE,
     secret TEXT NOT NULL,
     settings TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   ) WITHOUT ROWID;`,
  // 15: publications in one log in commit order (broker/sqlite-broker.ts): a commit's rows share the log's last page
  // instead of dirtying a page per channel and the time index's last pages; the index by channel is kept in memory.
  `CREATE TABLE history_log (
     seq INTEGER PRIMARY KEY,
     channel TEXT NOT NULL,
     offset INTEGER NOT NULL,
     time INTEGER NOT NULL,
     data TEXT NOT NULL,
     info TEXT
   );
   INSERT INTO history_log (channel, offset, time, data, info) SELECT channel, offset, time, data, info FROM publications ORDER BY channel, offset;
   DROP TABLE publications;`,
];

/** An owner whose heartbeat is older than this is gone (its pid may belong to another program by now). */
export const OWNER_STALE_MS = 30_000;

export const SCHEMA_VERSION = MIGRATIONS.length;

export type SqliteSynchronous = 'normal' | 'full';

export interface SqliteStoreOptions {
  readonly stateDir: string;
  readonly synchronous?: SqliteSynchronous;
  /** How long a write waits for a lock held by another connection. */
  readonly busyTimeoutMs?: number;
  /** Migrations to apply (tests pass longer lists to simulate a newer Herald). */
  readonly migrations?: readonly string[];
  /**
   * Whether this process claims the file as its owner (default true: a
   * server). False for a tool's short access (`herald keys`, `herald
   * backup`): it may open a file a running Herald owns, never writes the
   * owner row, and refuses to migrate a file whose live owner is an older
   * Herald (that one would refuse the newer schema at its next start).
   */
  readonly claim?: boolean;
}

export interface SqliteStore {
  readonly db: DatabaseSync;
  readonly path: string;
  /** Schema version of the file after opening (the newest this Herald knows). */
  readonly version: number;
  /** Renews this process's claim on the file (run inside the caller's transaction or alone). */
  heartbeat(now?: number): void;
  /** Releases the claim and closes the file. */
  close(): void;
}

/**
 * Runs `run` in one write transaction on `db` and answers what it returns.
 * Every SQLite write of Herald goes through here.
 *
 * - `BEGIN IMMEDIATE`: the write lock is taken before `run` reads anything,
 *   so a read-modify-write sees no other connection's write in between, and
 *   a lock held by another connection (`herald keys`, the key-usage store)
 *   is waited for at the start (busy timeout), never at a later upgrade.
 * - `run` returns normally: COMMIT, then its result is answered. A failed
 *   BEGIN throws SQLite's error (e.g. SQLITE_BUSY after the busy timeout)
 *   and `run` is not called.
 * - `run` or the COMMIT throws: ROLLBACK, then that same error is rethrown;
 *   nothing `run` wrote stays, and `db` is out of any transaction. If SQLite
 *   already rolled back on its own (a disk error) or the ROLLBACK itself
 *   fails, the caller still gets the first error, not the rollback's.
 * - `run` is synchronous: a returned promise (or thenable) is refused with a
 *   TypeError after a ROLLBACK, since its later writes would land outside
 *   the transaction.
 * - No nesting: called while `db` is already in a transaction, it throws
 *   before running `run` and leaves that outer transaction as it was (open,
 *   for its owner to commit or roll back). Compose the bodies instead.
 */
export function writeTransaction<T>(db: DatabaseSync, run: () => T): T {
  if (db.isTransaction) throw new Error('writeTransaction: already inside a transaction (nested write transactions are not supported)');
  db.exec('BEGIN IMMEDIATE');
  try {
    const result = run();
    if (typeof (result as { then?: unknown } | null | undefined)?.then === 'function') {
      throw new TypeError('writeTransaction: run returned a promise; a transaction body must be synchronous');
    }
    db.exec('COMMIT');
    return result;
  } catch (error) {
    try {
      if (db.isTransaction) db.exec('ROLLBACK');
    } catch {
      // SQLite discards the transaction itself; the caller gets the first error.
    }
    throw error;
  }
}

const SQLITE_HEADER = 'SQLite format 3\0';

export function stateFilePath(stateDir: string): string {
  return join(stateDir, STATE_FILE);
}

function refuse(path: string, problem: string): never {
  throw new ConfigError([
    `${path}: ${problem}; Herald refuses to start on it and leaves it untouched (move it away to start with empty state, or point stateDir elsewhere)`,
  ]);
}

/** The first bytes of the file, or undefined when it does not exist. */
function readHeader(path: string): Buffer | undefined {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  try {
    const buffer = Buffer.alloc(100);
    const n = readSync(fd, buffer, 0, 100, 0);
    return buffer.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** Opens (creating when absent) and validates the state file, then migrates it. */
export function openSqliteStore(options: SqliteStoreOptions): SqliteStore {
  const migrations = options.migrations ?? MIGRATIONS;
  mkdirSync(options.stateDir, { recursive: true, mode: 0o700 });
  const path = stateFilePath(options.stateDir);
  const header = readHeader(path);
  if (header === undefined) {
    // Created here with 0600 so SQLite never creates it with the umask's mode.
    closeSync(openSync(path, 'wx', 0o600));
  } else {
    if (!statSync(path).isFile()) refuse(path, 'not a regular file');
    if (header.length > 0 && (header.length < 100 || header.subarray(0, 16).toString('latin1') !== SQLITE_HEADER)) {
      refuse(path, 'not a SQLite database (a foreign or corrupt file)');
    }
  }
  const fresh = header === undefined || header.length === 0;
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path, { timeout: options.busyTimeoutMs ?? 1000 });
  } catch (error) {
    refuse(path, `cannot be opened (${(error as Error).message})`);
  }
  try {
    if (!fresh) {
      validate(db, path, migrations.length);
      chmodSync(path, 0o600);
    }
    // Set before the first table exists: lets the sweep give freed pages back to the file system.
    if (fresh) db.exec('PRAGMA auto_vacuum = INCREMENTAL');
    db.exec('PRAGMA journal_mode = WAL');
    db.exec(`PRAGMA synchronous = ${options.synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
    db.exec('PRAGMA foreign_keys = ON');
    const hasOwnerTable = () => db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'herald_owner'`).get() !== undefined;
    // Claimed before migrating when the file knows owners: a running Herald's file is not migrated under it.
    const owning = options.claim !== false;
    const claimedBefore = owning && hasOwnerTable();
    if (claimedBefore) claim(db, path);
    if (!owning && !fresh && hasOwnerTable()) refuseOlderOwner(db, path, migrations.length);
    const version = migrate(db, migrations);
    const claimed = owning && (claimedBefore || hasOwnerTable());
    if (claimed && !claimedBefore) claim(db, path);
    const beat = claimed ? db.prepare('UPDATE herald_owner SET heartbeat = ? WHERE id = 1 AND pid = ?') : undefined;
    return {
      db,
      path,
      version,
      heartbeat: (now = Date.now()) => {
        beat?.run(now, process.pid);
      },
      close: () => {
        if (!db.isOpen) return;
        try {
          if (claimed) db.prepare('DELETE FROM herald_owner WHERE id = 1 AND pid = ?').run(process.pid);
        } catch {
          // The next start takes over a claim whose process is gone.
        }
        db.close();
      },
    };
  } catch (error) {
    db.close();
    throw error;
  }
}

/**
 * The start-time check of an existing state file, changing nothing (`herald
 * check-config`, and serve's checks before the engine opens it): throws the
 * ConfigError opening it would throw for a file that is not SQLite, of
 * another application, or of a newer Herald. `PRAGMA quick_check` is left to
 * the open (it reads the whole file). No file: nothing to check.
 */
export function inspectStateFile(stateDir: string, known: number = MIGRATIONS.length): void {
  inspectStateFileAt(stateFilePath(stateDir), known);
}

/** inspectStateFile for a state file at any path (a backup copy to restore). */
export function inspectStateFileAt(path: string, known: number = MIGRATIONS.length): void {
  const header = readHeader(path);
  if (header === undefined || header.length === 0) return;
  if (!statSync(path).isFile()) refuse(path, 'not a regular file');
  if (header.length < 100 || header.subarray(0, 16).toString('latin1') !== SQLITE_HEADER) refuse(path, 'not a SQLite database (a foreign or corrupt file)');
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path, { readOnly: true });
  } catch (error) {
    refuse(path, `cannot be opened (${(error as Error).message})`);
  }
  try {
    validate(db, path, known, false);
  } finally {
    db.close();
  }
}

function validate(db: DatabaseSync, path: string, known: number, quick = true): void {
  let applicationId: number;
  let hasSchemaTable: boolean;
  try {
    applicationId = Number((db.prepare('PRAGMA application_id').get() as { application_id: number }).application_id);
    hasSchemaTable = db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'herald_schema'`).get() !== undefined;
  } catch (error) {
    refuse(path, `unreadable as SQLite (${(error as Error).message})`);
  }
  if (applicationId !== APPLICATION_ID || !hasSchemaTable) {
    refuse(path, `a SQLite database of another application (application_id ${applicationId}${hasSchemaTable ? '' : ', no herald_schema table'})`);
  }
  let version: number;
  try {
    const row = db.prepare('SELECT max(version) AS version FROM herald_schema').get() as { version: number | null };
    version = Number(row.version ?? 0);
  } catch (error) {
    refuse(path, `its schema table is unreadable (${(error as Error).message})`);
  }
  if (version > known) refuse(path, `written by a newer Herald (schema version ${version}; this Herald knows up to ${known}): upgrade Herald`);
  if (!quick) return;
  let check: string[];
  try {
    check = (db.prepare('PRAGMA quick_check').all() as { quick_check: string }[]).map((r) => r.quick_check);
  } catch (error) {
    refuse(path, `corrupt (${(error as Error).message})`);
  }
  if (check.length !== 1 || check[0] !== 'ok') refuse(path, `corrupt (quick_check: ${check.slice(0, 3).join('; ')})`);
}

/** Claims the file for this process, or refuses when another live Herald holds it. */
function claim(db: DatabaseSync, path: string): void {
  const now = Date.now();
  writeTransaction(db, () => {
    const owner = db.prepare('SELECT pid, heartbeat FROM herald_owner WHERE id = 1').get() as { pid: number; heartbeat: number } | undefined;
    if (owner !== undefined && owner.pid !== process.pid && now - owner.heartbeat < OWNER_STALE_MS && alive(owner.pid)) {
      throw new ConfigError([
        `${path}: in use by another Herald (pid ${owner.pid}, seen ${Math.max(0, Math.round((now - owner.heartbeat) / 1000))} s ago); one process owns a state directory: stop that one, or give this one its own stateDir (or --engine memory, which keeps nothing on disk)`,
      ]);
    }
    db.prepare('INSERT INTO herald_owner (id, pid, heartbeat) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET pid = excluded.pid, heartbeat = excluded.heartbeat').run(process.pid, now);
  });
}

/** A tool does not migrate the file of a live Herald that predates the migrations. */
function refuseOlderOwner(db: DatabaseSync, path: string, known: number): void {
  const version = Number((db.prepare('SELECT max(version) AS version FROM herald_schema').get() as { version: number | null }).version ?? 0);
  if (version >= known) return;
  const owner = db.prepare('SELECT pid, heartbeat FROM herald_owner WHERE id = 1').get() as { pid: number; heartbeat: number } | undefined;
  if (owner === undefined || Date.now() - owner.heartbeat >= OWNER_STALE_MS || !alive(owner.pid)) return;
  throw new ConfigError([
    `${path}: the Herald running on it (pid ${owner.pid}) is older than this command (schema version ${version}; this one needs ${known}); upgrade and restart that Herald first, then run the command again`,
  ]);
}

/**
 * The pid of the live Herald that owns the state directory's file, if one
 * does (read-only look; no file, no owner row, a stale heartbeat or a dead
 * pid: undefined).
 */
export function liveOwnerOf(stateDir: string): number | undefined {
  const path = stateFilePath(stateDir);
  if (!existsSync(path)) return undefined;
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const hasOwnerTable = db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'herald_owner'`).get() !== undefined;
    if (!hasOwnerTable) return undefined;
    const owner = db.prepare('SELECT pid, heartbeat FROM herald_owner WHERE id = 1').get() as { pid: number; heartbeat: number } | undefined;
    if (owner === undefined || Date.now() - owner.heartbeat >= OWNER_STALE_MS || !alive(owner.pid)) return undefined;
    return Number(owner.pid);
  } finally {
    db.close();
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Applies the migrations the file has not seen, each with its version row in one transaction. */
function migrate(db: DatabaseSync, migrations: readonly string[]): number {
  // A file that is already Herald's is not written here (a tool opens it beside its owner's transactions).
  const stamped =
    Number((db.prepare('PRAGMA application_id').get() as { application_id: number }).application_id) === APPLICATION_ID &&
    db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'herald_schema'`).get() !== undefined;
  if (!stamped) {
    writeTransaction(db, () => {
      db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
      db.exec('CREATE TABLE IF NOT EXISTS herald_schema (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)');
    });
  }
  const current = Number((db.prepare('SELECT max(version) AS version FROM herald_schema').get() as { version: number | null }).version ?? 0);
  const record = db.prepare('INSERT INTO herald_schema (version, applied_at) VALUES (?, ?)');
  const applied = db.prepare('SELECT 1 FROM herald_schema WHERE version = ?');
  // Every version not applied yet, in order: a RESERVED one filled in later runs then, below versions already there.
  const done = new Set((db.prepare('SELECT version FROM herald_schema').all() as { version: number }[]).map((row) => Number(row.version)));
  for (let version = 1; version <= migrations.length; version++) {
    if (done.has(version) || migrations[version - 1] === RESERVED) continue;
    writeTransaction(db, () => {
      // Another connection (a server starting beside `herald keys`) may have applied it meanwhile.
      if (applied.get(version) === undefined) {
        db.exec(migrations[version - 1]!);
        record.run(version, Date.now());
      }
    });
  }
  return Math.max(current, migrations.length);
}

/** A SQLite error caused by the disk or the file lock (full, I/O, busy, locked, read-only), as a short reason. */
export function storageFailure(error: unknown): string | undefined {
  const errcode = (error as { errcode?: unknown }).errcode;
  if (typeof errcode !== 'number') return undefined;
  switch (errcode & 0xff) {
    case 5:
      return 'database file is busy (SQLITE_BUSY)';
    case 6:
      return 'database table is locked (SQLITE_LOCKED)';
    case 8:
      return 'database file is read-only (SQLITE_READONLY)';
    case 10:
      return 'disk I/O error (SQLITE_IOERR)';
    case 13:
      return 'disk or database is full (SQLITE_FULL)';
    case 14:
      return 'cannot open the database file (SQLITE_CANTOPEN)';
    default:
      return `SQLite error ${errcode}: ${(error as { errstr?: string }).errstr ?? (error as Error).message}`;
  }
}
