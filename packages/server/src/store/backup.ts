/**
 * `herald backup FILE`: an online, consistent copy of the sqlite engine's
 * state file, taken while Herald runs.
 *
 * Guarantees:
 * - The copy is one snapshot: `VACUUM INTO` reads the whole database inside
 *   one read transaction, so it holds every transaction committed before it
 *   began and none after, whatever the server commits meanwhile (WAL: the
 *   server's writes are never blocked by it). SQLite's step-wise backup API
 *   restarts whenever another connection writes, which a busy server does
 *   every few milliseconds; one read transaction does not.
 * - The copy is a valid Herald state file: same schema version and
 *   `application_id`, `PRAGMA quick_check` passes, and it carries no owner
 *   (a Herald started on it is not refused because the original still runs).
 * - Written beside the target under a temporary name (mode 0600), synced,
 *   then put in place in one step: a reader never sees half a backup. An
 *   existing target is never replaced without `force` (the check and the
 *   placing are one `link`, so a file created meanwhile is not replaced
 *   either). The temporary file is removed on failure.
 * - The live state file is checked as at start (a foreign or newer file is
 *   refused) and then only read: a backup never migrates, claims or writes
 *   it, and waits for no writer (`readOnly`; WAL readers never block).
 *   The copy has the live file's schema version; a newer Herald started on
 *   it migrates it as it would the original.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, linkSync, openSync, realpathSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { APPLICATION_ID, inspectStateFile, stateFilePath } from './sqlite-store.ts';

/** A backup that cannot be taken (exists, no state file, the live file as target): one line, exit code 1. */
export class BackupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BackupError';
  }
}

export interface BackupOptions {
  readonly stateDir: string;
  /** Where the copy goes. */
  readonly target: string;
  /** Replace an existing target. */
  readonly force?: boolean;
  /** How long a read waits on a locked file (a checkpoint or recovery in progress; default 5 s). */
  readonly busyTimeoutMs?: number;
}

export interface BackupResult {
  readonly path: string;
  readonly bytes: number;
  /** Schema version of the copy. */
  readonly version: number;
  readonly ms: number;
}

function syncFile(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function syncDir(path: string): void {
  try {
    syncFile(path);
  } catch {
    // Some file systems cannot fsync a directory; the file itself is synced.
  }
}

/** Takes the copy; throws BackupError with the reason when it cannot (ConfigError for a state file Herald refuses). */
export function backupStateFile(options: BackupOptions): BackupResult {
  const started = Date.now();
  const source = stateFilePath(options.stateDir);
  const target = resolve(options.target);
  if (!existsSync(source)) throw new BackupError(`${source}: no state file to back up (the sqlite engine creates it at the first start on this state directory)`);
  const live = realpathSync(source);
  const targetReal = existsSync(target) ? realpathSync(target) : target;
  if ([live, `${live}-wal`, `${live}-shm`].includes(targetReal)) throw new BackupError(`${target}: that is the live state file; back up to another path`);
  if (existsSync(target)) {
    if (options.force !== true) throw new BackupError(`${target}: exists; give --force to replace it, or another file name`);
    if (!statSync(target).isFile()) throw new BackupError(`${target}: exists and is not a regular file`);
  }
  // Refused as at start (foreign, corrupt, newer), then read only: a backup never migrates or writes the live file.
  inspectStateFile(options.stateDir);
  const live_db = new DatabaseSync(source, { readOnly: true, timeout: options.busyTimeoutMs ?? 5000 });
  const temporary = join(dirname(target), `.${basename(target)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let placed = false;
  try {
    // VACUUM INTO writes into an empty file: created here with 0600 so SQLite never uses the umask's mode.
    closeSync(openSync(temporary, 'wx', 0o600));
    live_db.prepare('VACUUM INTO ?').run(temporary);
    const version = finishCopy(temporary);
    syncFile(temporary);
    if (options.force === true) {
      renameSync(temporary, target);
    } else {
      try {
        linkSync(temporary, target);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new BackupError(`${target}: exists; give --force to replace it, or another file name`);
        throw error;
      }
      unlinkSync(temporary);
    }
    placed = true;
    syncDir(dirname(target));
    return { path: target, bytes: statSync(target).size, version, ms: Date.now() - started };
  } finally {
    live_db.close();
    if (!placed) {
      try {
        unlinkSync(temporary);
      } catch {
        // never created, or already placed
      }
    }
  }
}

/** Clears the owner of the copy and checks it is a whole Herald state file; answers its schema version. */
function finishCopy(path: string): number {
  const db = new DatabaseSync(path);
  try {
    db.exec('DELETE FROM herald_owner');
    const id = Number((db.prepare('PRAGMA application_id').get() as { application_id: number }).application_id);
    const version = Number((db.prepare('SELECT max(version) AS version FROM herald_schema').get() as { version: number | null }).version ?? 0);
    const check = (db.prepare('PRAGMA quick_check').all() as { quick_check: string }[]).map((r) => r.quick_check);
    if (id !== APPLICATION_ID || check.length !== 1 || check[0] !== 'ok') throw new Error(`the copy failed its check (application_id ${id}, quick_check ${check.slice(0, 3).join('; ')})`);
    return version;
  } finally {
    db.close();
  }
}
