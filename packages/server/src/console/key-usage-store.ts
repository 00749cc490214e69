/**
 * Where API keys' last uses are kept across restarts (console/key-usage.ts
 * writes each process's own uses there once a minute, and reads them all at
 * start): the sqlite engine's state file (table `api_key_usage`, through a
 * connection of its own, as `herald keys` opens it, so cluster workers write
 * beside the primary that owns the file), a Redis hash on the redis engine,
 * nowhere on the memory engine.
 *
 * Guarantees: a save never moves a key's last use backwards (concurrent
 * writers of the same key keep the latest); a failed save or load is
 * reported to the caller and changes nothing.
 */
import { openSqliteStore, writeTransaction, type SqliteStore } from '../store/sqlite-store.ts';
import type { Redis, Cluster } from 'ioredis';

export interface KeyUsageStore {
  /** Records uses (key name, epoch ms), keeping the later of the stored and the given time. */
  save(uses: readonly (readonly [string, number])[]): Promise<void>;
  /** Every key's stored last use. */
  load(): Promise<Map<string, number>>;
  close(): void;
}

/** How long a save waits for a write lock held by another connection (the server's group commit, `herald keys`). */
const BUSY_TIMEOUT_MS = 2000;

export class SqliteKeyUsageStore implements KeyUsageStore {
  readonly #stateDir: string;
  #file: SqliteStore | undefined;

  constructor(stateDir: string) {
    this.#stateDir = stateDir;
  }

  // Opened at first use: the state file exists (and is migrated) once the server runs.
  #db(): SqliteStore['db'] {
    this.#file ??= openSqliteStore({ stateDir: this.#stateDir, claim: false, busyTimeoutMs: BUSY_TIMEOUT_MS });
    return this.#file.db;
  }

  async save(uses: readonly (readonly [string, number])[]): Promise<void> {
    const db = this.#db();
    const upsert = db.prepare(
      'INSERT INTO api_key_usage (name, last_used_at) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET last_used_at = max(last_used_at, excluded.last_used_at)',
    );
    writeTransaction(db, () => {
      for (const [name, at] of uses) upsert.run(name, at);
    });
  }

  async load(): Promise<Map<string, number>> {
    const rows = this.#db().prepare('SELECT name, last_used_at FROM api_key_usage').all() as { name: string; last_used_at: number }[];
    return new Map(rows.map((row) => [row.name, Number(row.last_used_at)]));
  }

  close(): void {
    this.#file?.close();
    this.#file = undefined;
  }
}

/** HSET only when later: one script call per save. */
const SAVE_LATER = `for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0')
  if current < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 0`;

export class RedisKeyUsageStore implements KeyUsageStore {
  readonly #redis: Redis | Cluster;
  readonly #key: string;

  constructor(redis: Redis | Cluster, prefix: string) {
    this.#redis = redis;
    this.#key = `${prefix}:{console}:key_usage`;
  }

  async save(uses: readonly (readonly [string, number])[]): Promise<void> {
    if (uses.length === 0) return;
    await this.#redis.eval(SAVE_LATER, 1, this.#key, ...uses.flatMap(([name, at]) => [name, String(at)]));
  }

  async load(): Promise<Map<string, number>> {
    const all = await this.#redis.hgetall(this.#key);
    return new Map(Object.entries(all).map(([name, at]) => [name, Number(at)]));
  }

  close(): void {}
}
