/**
 * Stored apps in the sqlite engine's state file (migration 14,
 * store/sqlite-store.ts). Used by the server that owns the file (the single
 * process, or the cluster primary for its workers) and by `herald apps`
 * beside it: every read goes to the file, every write runs in one `BEGIN
 * IMMEDIATE` transaction that also counts `apps_version` in herald_meta, so
 * a change by either is seen at the other's next poll.
 */
import type { DatabaseSync, StatementSync } from 'node:sqlite';
import { writeTransaction } from '../store/sqlite-store.ts';
import { changed, readSettings, settingsJson, type AppChange, type AppRecord, type AppStore, type CreateOutcome } from './app-store.ts';

interface AppRow {
  id: string;
  key: string;
  secret: string;
  settings: string;
  created_at: number;
  updated_at: number;
}

const VERSION_KEY = 'apps_version';

function record(row: AppRow): AppRecord {
  return { ...readSettings(row.settings, row.id), id: row.id, key: row.key, secret: row.secret, createdAt: Number(row.created_at), updatedAt: Number(row.updated_at) };
}

export class SqliteAppStore implements AppStore {
  readonly #db: DatabaseSync;
  readonly #q: Record<'list' | 'get' | 'byKey' | 'insert' | 'update' | 'delete' | 'version' | 'bump', StatementSync>;

  constructor(db: DatabaseSync) {
    this.#db = db;
    const p = (sql: string) => db.prepare(sql);
    this.#q = {
      list: p('SELECT * FROM apps ORDER BY id'),
      get: p('SELECT * FROM apps WHERE id = ?'),
      byKey: p('SELECT id FROM apps WHERE key = ?'),
      insert: p('INSERT INTO apps (id, key, secret, settings, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)'),
      update: p('UPDATE apps SET secret = ?, settings = ?, updated_at = ? WHERE id = ?'),
      delete: p('DELETE FROM apps WHERE id = ?'),
      version: p('SELECT value FROM herald_meta WHERE key = ?'),
      bump: p("INSERT INTO herald_meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"),
    };
  }

  async list(): Promise<AppRecord[]> {
    return (this.#q.list.all() as unknown as AppRow[]).map(record);
  }

  async get(id: string): Promise<AppRecord | undefined> {
    const row = this.#q.get.get(id) as AppRow | undefined;
    return row === undefined ? undefined : record(row);
  }

  async create(app: AppRecord): Promise<CreateOutcome> {
    return writeTransaction(this.#db, () => {
      if (this.#q.get.get(app.id) !== undefined) return 'id_taken';
      if (this.#q.byKey.get(app.key) !== undefined) return 'key_taken';
      this.#q.insert.run(app.id, app.key, app.secret, settingsJson(app), app.createdAt, app.updatedAt);
      this.#q.bump.run(VERSION_KEY);
      return 'created';
    });
  }

  async update(id: string, change: AppChange, now: number): Promise<AppRecord | undefined> {
    return writeTransaction(this.#db, () => {
      const row = this.#q.get.get(id) as AppRow | undefined;
      if (row === undefined) return undefined;
      const next = changed(record(row), change, now);
      this.#q.update.run(next.secret, settingsJson(next), now, id);
      this.#q.bump.run(VERSION_KEY);
      return next;
    });
  }

  async delete(id: string): Promise<boolean> {
    return writeTransaction(this.#db, () => {
      const deleted = Number(this.#q.delete.run(id).changes) > 0;
      if (deleted) this.#q.bump.run(VERSION_KEY);
      return deleted;
    });
  }

  async version(): Promise<number> {
    const row = this.#q.version.get(VERSION_KEY) as { value: string } | undefined;
    return row === undefined ? 0 : Number(row.value);
  }

  async close(): Promise<void> {}
}
