/**
 * `herald restore FILE`: puts a `herald backup` copy in place as the state
 * directory's `herald.db`, while Herald is stopped.
 *
 * Guarantees:
 * - Refused while a live Herald owns the state directory (stop it first).
 * - The copy is checked as at start (SQLite, Herald's application id, a
 *   schema this Herald knows, `quick_check`) before anything in the state
 *   directory changes; a refused copy changes nothing.
 * - A state file already there is never deleted: without `force` the restore
 *   is refused; with it, `herald.db` and any `-wal`/`-shm` beside it are
 *   renamed `herald.db.before-restore-<time>` (and `-wal`, `-shm`).
 * - The restored file is one consistent snapshot of the copy (`VACUUM INTO`
 *   from a read-only connection, so a copy with its own WAL is read whole),
 *   mode 0600, written under a temporary name and renamed into place.
 * - By default every stream gets a new epoch and the idempotency keys are
 *   dropped: clients may have seen publications made after the copy, and a
 *   position in the old epoch then answers `recovered: false` (reload)
 *   instead of resuming above publications the restored stream never had.
 *   `keepEpochs` keeps them, for a move of a current copy (no client can be
 *   ahead of it).
 * - Console sessions never survive a restore (a session ended after the copy
 *   was taken must not come back); the owner row is cleared.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, renameSync, statSync, unlinkSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { newEpoch } from '../broker/memory-broker.ts';
import { inspectStateFileAt, liveOwnerOf, stateFilePath, writeTransaction } from './sqlite-store.ts';

/** A restore that cannot be done (Herald running, a state file there, no copy): one line, exit code 1. */
export class RestoreError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RestoreError';
  }
}

export interface RestoreOptions {
  readonly stateDir: string;
  /** The backup copy. */
  readonly source: string;
  /** Move an existing state file aside (refused otherwise). */
  readonly force?: boolean;
  /** Keep every stream's epoch (a move of a current copy), instead of new epochs. */
  readonly keepEpochs?: boolean;
}

export interface RestoreResult {
  readonly path: string;
  /** Where the previous state file went, if there was one. */
  readonly previous: string | undefined;
  readonly streams: number;
  readonly newEpochs: boolean;
}

function sync(path: string): void {
  try {
    const fd = openSync(path, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    // Some file systems cannot fsync a directory.
  }
}

/** Restores the copy; throws RestoreError (or ConfigError for a copy Herald refuses). */
export function restoreStateFile(options: RestoreOptions): RestoreResult {
  const source = resolve(options.source);
  if (!existsSync(source) || !statSync(source).isFile()) throw new RestoreError(`${source}: no such file (give the file \`herald backup\` wrote)`);
  const stateDir = resolve(options.stateDir);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const target = stateFilePath(stateDir);
  if (resolve(source) === target) throw new RestoreError(`${source}: that is the state file itself`);
  const owner = liveOwnerOf(stateDir);
  if (owner !== undefined) throw new RestoreError(`${target}: in use by a running Herald (pid ${owner}); stop it, then restore`);
  if (existsSync(target) && options.force !== true) throw new RestoreError(`${target}: exists; give --force to move it aside (kept as ${basename(target)}.before-restore-<time>)`);
  inspectStateFileAt(source);

  const temporary = join(stateDir, `.${basename(target)}.restore.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let placed = false;
  try {
    closeSync(openSync(temporary, 'wx', 0o600));
    const copy = new DatabaseSync(source, { readOnly: true });
    try {
      copy.prepare('VACUUM INTO ?').run(temporary);
    } finally {
      copy.close();
    }
    const streams = prepare(temporary, options.keepEpochs !== true);
    sync(temporary);
    let previous: string | undefined;
    if (existsSync(target)) {
      previous = `${target}.before-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      for (const suffix of ['', '-wal', '-shm']) if (existsSync(target + suffix)) renameSync(target + suffix, previous + suffix);
    }
    renameSync(temporary, target);
    placed = true;
    sync(stateDir);
    return { path: target, previous, streams, newEpochs: options.keepEpochs !== true };
  } finally {
    if (!placed) {
      try {
        unlinkSync(temporary);
      } catch {
        // never created
      }
    }
  }
}

/** Checks the new file, clears what must not survive a restore, and gives new epochs; answers the number of streams. */
function prepare(path: string, newEpochs: boolean): number {
  const db = new DatabaseSync(path);
  try {
    const check = (db.prepare('PRAGMA quick_check').all() as { quick_check: string }[]).map((r) => r.quick_check);
    if (check.length !== 1 || check[0] !== 'ok') throw new RestoreError(`the copy failed its check (quick_check: ${check.slice(0, 3).join('; ')})`);
    const has = (table: string) => db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?`).get(table) !== undefined;
    writeTransaction(db, () => {
      if (has('herald_owner')) db.exec('DELETE FROM herald_owner');
      if (has('console_sessions')) db.exec('DELETE FROM console_sessions');
      if (newEpochs) {
        const update = db.prepare('UPDATE streams SET epoch = ? WHERE channel = ?');
        for (const row of db.prepare('SELECT channel FROM streams').all() as { channel: string }[]) update.run(newEpoch(), row.channel);
        if (has('idempotency_keys')) db.exec('DELETE FROM idempotency_keys');
      }
    });
    return Number((db.prepare('SELECT count(*) AS n FROM streams').get() as { n: number }).n);
  } finally {
    db.close();
  }
}
