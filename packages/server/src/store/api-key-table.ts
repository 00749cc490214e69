/**
 * API keys in the state file of the sqlite engine (table `api_keys`,
 * schema version 5 of packages/server/src/store/sqlite-store.ts): written by
 * `herald keys` and `herald init`, read by the server. Like the JSON store
 * of the other engines (packages/server/src/auth/key-store.ts) it holds
 * SHA-256 hashes only, never a key.
 *
 * Guarantees:
 * - Rows are validated with the JSON store's schema on every read; a table
 *   holding an invalid row is refused as a whole, with the row named (at
 *   start: the server refuses to start; while running: the keys read before
 *   stay in force and the problem is reported).
 * - A change is one `BEGIN IMMEDIATE` transaction (read, change, write), so
 *   two `herald keys` commands, or one and the running server, never lose
 *   each other's change; SQLite's lock replaces the JSON store's lock file.
 * - A running server sees a change committed by another connection within
 *   `intervalMs` (1 s by default): it compares `PRAGMA data_version`, which
 *   moves only when another connection commits, at most once per interval
 *   (on use, or from the cluster primary's timer), and re-reads the table
 *   only then.
 * - An existing `<stateDir>/api-keys.json` is imported once, by the first
 *   program that opens the state file on the sqlite engine (`herald serve`
 *   or `herald keys`): its keys and a record of the import (the SHA-256 of
 *   its keys) are committed in one transaction, then the file is renamed
 *   `api-keys.json.migrated` (never deleted). A crash between the two leaves
 *   the record: the next start only renames. A JSON store that appears
 *   after the import is not imported (it could bring revoked keys back): it
 *   is left where it is and reported.
 */
import { createHash } from 'node:crypto';
import { existsSync, linkSync, unlinkSync } from 'node:fs';
import { DatabaseSync, type StatementSync } from 'node:sqlite';
import { parseJsonSafely } from '@herald/protocol/json';
import type { ApiKeyConfig } from '../config/schema.ts';
import { ConfigError } from '../config/load.ts';
import type { KeySource } from '../auth/api-keys.ts';
import { APPLICATION_ID, inspectStateFile, stateFilePath, writeTransaction } from './sqlite-store.ts';
import { keyStorePath, readKeyStore, validateKeyStore, type StoredApiKey } from '../auth/key-store.ts';

/** `herald_meta` key of the api-keys.json import record. */
export const KEY_IMPORT_RECORD = 'api_keys_json_import';

interface KeyRow {
  name: string;
  sha256: string;
  scopes: string;
  created: string;
  not_after: string | null;
  prefix: string | null;
}

/** Whether the file has the api_keys table (schema version 5 or later). */
export function hasKeyTable(db: DatabaseSync): boolean {
  return db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'api_keys'`).get() !== undefined;
}

/** Reads and validates every key; throws ConfigError naming the file and the problems. */
export function readKeyTable(db: DatabaseSync, path: string): StoredApiKey[] {
  const rows = db.prepare('SELECT name, sha256, scopes, created, not_after, prefix FROM api_keys ORDER BY created, name').all() as unknown as KeyRow[];
  const keys = rows.map((row) => ({
    name: row.name,
    sha256: row.sha256,
    scopes: parseJsonSafely(row.scopes),
    created: row.created,
    ...(row.not_after === null ? {} : { notAfter: row.not_after }),
    ...(row.prefix === null ? {} : { prefix: row.prefix }),
  }));
  const checked = validateKeyStore({ version: 1, keys });
  if ('problems' in checked) throw new ConfigError(checked.problems.map((p) => `${path} (table api_keys): ${p.replace(/^\/keys\/(\d+)/, (_, i: string) => `row "${rows[Number(i)]?.name ?? i}"`)}`));
  return checked.keys;
}

function writeKeyTable(db: DatabaseSync, keys: readonly StoredApiKey[]): void {
  db.exec('DELETE FROM api_keys');
  const insert = db.prepare('INSERT INTO api_keys (name, sha256, scopes, created, not_after, prefix) VALUES (?, ?, ?, ?, ?, ?)');
  for (const key of keys) insert.run(key.name, key.sha256, JSON.stringify(key.scopes), key.created, key.notAfter ?? null, key.prefix ?? null);
}

/**
 * Read-modify-write of the keys in one write transaction. `change` gets the
 * current keys and returns the new list (null: leave the table as it is);
 * the list is validated before anything is written.
 */
export function updateKeyTable<T>(db: DatabaseSync, path: string, change: (keys: StoredApiKey[]) => { keys: StoredApiKey[] | null; result: T }): T {
  return writeTransaction(db, () => {
    const { keys, result } = change(readKeyTable(db, path));
    if (keys !== null) {
      const checked = validateKeyStore({ version: 1, keys });
      if ('problems' in checked) throw new ConfigError(checked.problems.map((p) => `${path} (table api_keys): ${p}`));
      writeKeyTable(db, keys);
    }
    return result;
  });
}

/** What importing api-keys.json did. */
export type KeyImport =
  /** No api-keys.json: nothing to do. */
  | { readonly kind: 'none' }
  /** Its keys are in the state file now; the JSON file was renamed to `movedTo`. */
  | { readonly kind: 'imported'; readonly keys: number; readonly skipped: readonly string[]; readonly movedTo: string }
  /** An earlier import committed but was interrupted before the rename: renamed now. */
  | { readonly kind: 'renamed'; readonly movedTo: string }
  /** A JSON store that appeared after the import: left in place, not used. */
  | { readonly kind: 'ignored'; readonly file: string; readonly importedAt: string };

function fingerprint(keys: readonly StoredApiKey[]): string {
  return createHash('sha256').update(JSON.stringify(keys)).digest('hex');
}

/** Renames api-keys.json out of the way without ever replacing a file: `.migrated`, else `.migrated-<time>`. */
function moveAside(file: string): string {
  for (let attempt = 0; ; attempt++) {
    const target = attempt === 0 ? `${file}.migrated` : `${file}.migrated-${Date.now()}-${attempt}`;
    try {
      linkSync(file, target);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST' && attempt < 100) continue;
      throw error;
    }
    unlinkSync(file);
    return target;
  }
}

/**
 * Imports `<stateDir>/api-keys.json` into the key table once (see the
 * module comment). Throws ConfigError when the JSON store is invalid (the
 * same refusal as the JSON engines give it): nothing is imported then.
 */
export function importKeyFile(db: DatabaseSync, stateDir: string, dbPath: string): KeyImport {
  const file = keyStorePath(stateDir);
  if (!existsSync(file)) return { kind: 'none' };
  const keys = readKeyStore(stateDir);
  const print = fingerprint(keys);
  const outcome = writeTransaction(db, (): { kind: 'import'; keys: number; skipped: string[] } | { kind: 'rename' } | { kind: 'ignored'; importedAt: string } => {
    const record = db.prepare('SELECT value FROM herald_meta WHERE key = ?').get(KEY_IMPORT_RECORD) as { value: string } | undefined;
    if (record !== undefined) {
      const earlier = parseJsonSafely(record.value) as { sha256?: unknown; at?: unknown } | undefined;
      return earlier?.sha256 === print ? { kind: 'rename' } : { kind: 'ignored', importedAt: typeof earlier?.at === 'string' ? earlier.at : 'earlier' };
    }
    const current = readKeyTable(db, dbPath);
    const taken = new Set(current.map((k) => k.name));
    const skipped = keys.filter((k) => taken.has(k.name)).map((k) => k.name);
    const added = keys.filter((k) => !taken.has(k.name));
    writeKeyTable(db, [...current, ...added]);
    db.prepare('INSERT INTO herald_meta (key, value) VALUES (?, ?)').run(KEY_IMPORT_RECORD, JSON.stringify({ sha256: print, at: new Date().toISOString(), keys: added.length }));
    return { kind: 'import', keys: added.length, skipped };
  });
  if (outcome.kind === 'ignored') return { kind: 'ignored', file, importedAt: outcome.importedAt };
  const movedTo = moveAside(file);
  return outcome.kind === 'rename' ? { kind: 'renamed', movedTo } : { kind: 'imported', keys: outcome.keys, skipped: outcome.skipped, movedTo };
}

/** One line for the log about an import, or undefined when there was nothing to say. */
export function describeKeyImport(outcome: KeyImport, dbPath: string): { level: 'info' | 'warn'; message: string } | undefined {
  switch (outcome.kind) {
    case 'none':
      return undefined;
    case 'imported':
      return {
        level: outcome.skipped.length > 0 ? 'warn' : 'info',
        message:
          `API keys: ${outcome.keys} key${outcome.keys === 1 ? '' : 's'} of api-keys.json moved into ${dbPath}; the file was renamed ${outcome.movedTo}` +
          (outcome.skipped.length > 0 ? ` (names already in the state file were kept from it: ${outcome.skipped.join(', ')})` : ''),
      };
    case 'renamed':
      return { level: 'info', message: `API keys: the import of api-keys.json into ${dbPath} had committed; the file was renamed ${outcome.movedTo} now` };
    case 'ignored':
      return {
        level: 'warn',
        message: `API keys: ${outcome.file} is not used: the sqlite engine keeps keys in ${dbPath} (api-keys.json was imported ${outcome.importedAt}); manage keys with \`herald keys\`, and move this file away`,
      };
  }
}

export interface KeyTableWatchOptions {
  /** Clock in epoch milliseconds. */
  readonly now?: () => number;
  /** Least time between two looks at `PRAGMA data_version` (default 1000 ms). */
  readonly intervalMs?: number;
  /** A changed table that cannot be used; the keys read before stay in force. */
  readonly onReloadError?: (problem: string) => void;
}

/** A KeySource over the key table; `poll()` looks now and tells whether the keys changed (the cluster primary's timer). */
export interface KeyTableSource extends KeySource {
  poll(): boolean;
}

/**
 * The key table as a KeySource: read now (throws ConfigError when invalid),
 * then re-read when another connection committed (see the module comment).
 */
export function watchKeyTable(db: DatabaseSync, path: string, options: KeyTableWatchOptions = {}): KeyTableSource {
  const now = options.now ?? Date.now;
  const intervalMs = options.intervalMs ?? 1000;
  const dataVersion: StatementSync = db.prepare('PRAGMA data_version');
  const version = (): number => Number((dataVersion.get() as { data_version: number }).data_version);
  let seen = version();
  let keys: readonly ApiKeyConfig[] = readKeyTable(db, path);
  let checkedAt = now();
  const poll = (): boolean => {
    checkedAt = now();
    if (!db.isOpen) return false;
    try {
      const next = version();
      if (next === seen) return false;
      seen = next;
      const read = readKeyTable(db, path);
      if (JSON.stringify(read) === JSON.stringify(keys)) return false;
      keys = read;
      return true;
    } catch (error) {
      options.onReloadError?.(error instanceof ConfigError ? error.problems.join('; ') : `${path}: cannot read the API keys: ${(error as Error).message}`);
      return false;
    }
  };
  return {
    poll,
    current(): readonly ApiKeyConfig[] {
      const time = now();
      if (time - checkedAt >= intervalMs || time < checkedAt) poll();
      return keys;
    },
  };
}

/**
 * The keys a server starting on this state directory would have, changing
 * nothing (`herald check-config`, the production rule "at least one key"):
 * the table's, plus api-keys.json's while it has not been imported. Throws
 * ConfigError for a state file Herald refuses (inspectStateFile), an
 * invalid api-keys.json or key table; undefined when the state file cannot
 * be read here (opening it for the engine reports why).
 */
export function peekKeys(stateDir: string): StoredApiKey[] | undefined {
  const path = stateFilePath(stateDir);
  const json = (): StoredApiKey[] => (existsSync(keyStorePath(stateDir)) ? readKeyStore(stateDir) : []);
  if (!existsSync(path)) return json();
  inspectStateFile(stateDir);
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path, { readOnly: true });
  } catch {
    return undefined;
  }
  try {
    let imported: boolean;
    let table: boolean;
    try {
      const id = Number((db.prepare('PRAGMA application_id').get() as { application_id: number }).application_id);
      if (id !== APPLICATION_ID && id !== 0) return undefined;
      table = hasKeyTable(db);
      imported = table && db.prepare('SELECT 1 FROM herald_meta WHERE key = ?').get(KEY_IMPORT_RECORD) !== undefined;
    } catch {
      return undefined;
    }
    return [...(table ? readKeyTable(db, path) : []), ...(imported ? [] : json())];
  } finally {
    db.close();
  }
}
