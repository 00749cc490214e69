/**
 * Where `herald keys` and `herald init` keep API keys: the sqlite engine's
 * state file (packages/server/src/store/api-key-table.ts), or
 * `<stateDir>/api-keys.json` for the memory and redis engines
 * (packages/server/src/auth/key-store.ts). Either way a running server
 * sees a change within a second.
 *
 * The state file is opened as a tool (`claim: false`): beside a running
 * Herald that owns it, for the few milliseconds of one transaction, never
 * as its owner. Opening it imports an api-keys.json not imported yet.
 */
import { existsSync } from 'node:fs';
import type { Config } from '../config/schema.ts';
import { keyStorePath, readKeyStore, updateKeyStore, type StoredApiKey } from '../auth/key-store.ts';
import { openSqliteStore, stateFilePath } from '../store/sqlite-store.ts';
import { describeKeyImport, importKeyFile, readKeyTable, updateKeyTable } from '../store/api-key-table.ts';
import type { AuditInput } from '../console/admin-store.ts';
import { SqliteAdminStore } from '../console/sqlite-admin-store.ts';

export type KeyBackendKind = 'state-file' | 'json';

export interface KeyBackend {
  readonly kind: KeyBackendKind;
  /** The file holding the keys, for messages. */
  readonly path: string;
  read(): StoredApiKey[];
  /** Read-modify-write under the backend's lock (a SQLite write transaction, or the JSON store's lock file). */
  update<T>(change: (keys: StoredApiKey[]) => { keys: StoredApiKey[] | null; result: T }): T;
  /**
   * Writes an audit log entry beside the keys (the state file's, which the
   * console reads). The JSON store has no audit log beside it: a no-op there
   * (the memory and redis engines keep theirs in the server or in Redis).
   */
  audit(entry: AuditInput): Promise<void>;
  close(): void;
}

/** How long a `herald keys` write waits for the server's transaction to end. */
export const TOOL_BUSY_TIMEOUT_MS = 5000;

/**
 * The backend of a state directory: the config's engine when there is a
 * config; with `--state-dir` alone, the state file when it exists or when
 * there is no api-keys.json either (sqlite is the default engine), else
 * api-keys.json.
 */
export function keyBackendKind(config: Config | undefined, stateDir: string): KeyBackendKind {
  if (config !== undefined) return config.engine.type === 'sqlite' ? 'state-file' : 'json';
  return existsSync(stateFilePath(stateDir)) || !existsSync(keyStorePath(stateDir)) ? 'state-file' : 'json';
}

/** Opens the backend; `notice` gets a line about an api-keys.json import, if one happened. */
export function openKeyBackend(kind: KeyBackendKind, stateDir: string, notice: (line: string) => void): KeyBackend {
  if (kind === 'json') {
    return {
      kind,
      path: keyStorePath(stateDir),
      read: () => readKeyStore(stateDir),
      update: (change) => updateKeyStore(stateDir, change),
      audit: async () => {},
      close: () => {},
    };
  }
  const store = openSqliteStore({ stateDir, claim: false, busyTimeoutMs: TOOL_BUSY_TIMEOUT_MS });
  try {
    const imported = describeKeyImport(importKeyFile(store.db, stateDir, store.path), store.path);
    if (imported !== undefined) notice(imported.message);
  } catch (error) {
    store.close();
    throw error;
  }
  return {
    kind,
    path: store.path,
    read: () => readKeyTable(store.db, store.path),
    update: (change) => updateKeyTable(store.db, store.path, change),
    audit: (entry) => new SqliteAdminStore(store.db).appendAudit(entry, Date.now()),
    close: () => store.close(),
  };
}

/**
 * The redis engine's command connection for a CLI tool (`herald admin`,
 * `herald webhooks`), with the config's URL, TLS and cluster seeds, as the
 * server connects; `close` ends it. Throws a ConfigError for TLS files
 * that cannot be read.
 */
export async function openRedisTool(config: import('../config/schema.ts').Config): Promise<{ command: import('ioredis').Redis | import('ioredis').Cluster; close(): Promise<void> }> {
  const { openRedisClients } = await import('../app/engine.ts');
  const { readRedisTls } = await import('../app/preflight.ts');
  const { ConfigError } = await import('../config/load.ts');
  const problems: string[] = [];
  const tls = readRedisTls(config, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  const clients = await openRedisClients(config, tls);
  return {
    command: clients.command,
    close: async () => {
      clients.command.disconnect();
      if ('disconnect' in clients.subscriber) clients.subscriber.disconnect();
      else await clients.subscriber.close();
    },
  };
}
