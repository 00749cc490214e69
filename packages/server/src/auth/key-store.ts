/**
 * The API key store: `<stateDir>/api-keys.json`, written by `herald keys`
 * and read by the server. It holds SHA-256 hashes only, never a key; the
 * key is printed once by `herald keys create` and exists nowhere else.
 *
 * Guarantees:
 * - The file is validated with a schema on every read (unknown fields, a
 *   `__proto__` key, a bad hash or date, a duplicate name: refused as a
 *   whole, with the problem named).
 * - Writes are atomic (temporary file, then rename) with mode 0600, under a
 *   lock file, so two `herald keys` commands never lose each other's change.
 * - A store writable by group or others is refused: whoever can write it can
 *   add keys.
 * - A running server re-reads the file when it changes (checked at most once
 *   per `intervalMs`, on use), so create, revoke and rotation take effect
 *   without a restart.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { ApiKey, type ApiKeyConfig, type ApiScope } from '../config/schema.ts';
import { ConfigError } from '../config/load.ts';
import { parseJsonSafely } from '@herald/protocol/json';
import { hashApiKey, type KeySource } from './api-keys.ts';

export const KEY_STORE_FILE = 'api-keys.json';
/** Largest store file read (about 4000 keys). */
export const MAX_STORE_BYTES = 1 << 20;
/** Prefix of every generated key, so that leaked keys are easy to grep for. */
export const KEY_PREFIX = 'hk_';

export const StoredKeySchema = Type.Object(
  {
    ...ApiKey.properties,
    created: Type.String({ format: 'date-time', description: 'When `herald keys create` made the key.' }),
    prefix: Type.Optional(
      Type.String({ pattern: '^hk_[A-Za-z0-9_-]{1,8}$', description: 'The first characters of the key (public: identifies it in lists; absent for keys made before prefixes were kept).' }),
    ),
  },
  { additionalProperties: false },
);

export const KeyStoreSchema = Type.Object(
  {
    version: Type.Literal(1),
    keys: Type.Array(StoredKeySchema, { maxItems: 10000 }),
  },
  { additionalProperties: false },
);

export type StoredApiKey = Static<typeof StoredKeySchema>;

const storeCheck = TypeCompiler.Compile(KeyStoreSchema);

export function keyStorePath(stateDir: string): string {
  return join(stateDir, KEY_STORE_FILE);
}

/** Validates parsed store content; returns the keys or the problems found. */
export function validateKeyStore(value: unknown): { keys: StoredApiKey[] } | { problems: string[] } {
  if (!storeCheck.Check(value)) {
    const problems = [...storeCheck.Errors(value)].slice(0, 10).map((e) => `${e.path || '/'}: ${e.message}`);
    return { problems };
  }
  const keys = value.keys;
  const problems: string[] = [];
  const names = new Set<string>();
  for (const key of keys) {
    if (names.has(key.name)) problems.push(`/keys: key name "${key.name}" is used twice`);
    names.add(key.name);
  }
  return problems.length > 0 ? { problems } : { keys };
}

function refuse(path: string, problems: readonly string[]): never {
  throw new ConfigError(problems.map((p) => `${path}: ${p}`));
}

function checkMode(path: string, stats: Stats): void {
  if (process.platform !== 'win32' && (stats.mode & 0o022) !== 0) {
    refuse(path, [`writable by group or others (mode ${(stats.mode & 0o777).toString(8)}); run chmod 600`]);
  }
}

interface Loaded {
  readonly keys: StoredApiKey[];
  /** Identity of the file version read; '' when there is no file. */
  readonly stamp: string;
}

function stampOf(stats: Stats): string {
  return `${stats.ino}:${stats.size}:${stats.mtimeMs}:${stats.ctimeMs}`;
}

function load(stateDir: string): Loaded {
  const path = keyStorePath(stateDir);
  let stats: Stats;
  try {
    stats = statSync(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { keys: [], stamp: '' };
    refuse(path, [`cannot read: ${(error as NodeJS.ErrnoException).code ?? 'error'}`]);
  }
  if (!stats.isFile()) refuse(path, ['not a regular file']);
  checkMode(path, stats);
  if (stats.size > MAX_STORE_BYTES) refuse(path, [`larger than ${MAX_STORE_BYTES} bytes`]);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    refuse(path, [`cannot read: ${(error as NodeJS.ErrnoException).code ?? 'error'}`]);
  }
  const parsed = parseJsonSafely(text);
  if (parsed === undefined) refuse(path, ['not JSON (or contains __proto__/constructor keys)']);
  const result = validateKeyStore(parsed);
  if ('problems' in result) refuse(path, result.problems);
  return { keys: result.keys, stamp: stampOf(stats) };
}

/**
 * Reads the store. No file means no keys. Throws ConfigError (naming the
 * file and every problem) when the file is unreadable, invalid, or writable
 * by group or others.
 */
export function readKeyStore(stateDir: string): StoredApiKey[] {
  return load(stateDir).keys;
}

export interface KeyStoreWatchOptions {
  /** Clock in epoch milliseconds. */
  readonly now?: () => number;
  /** Least time between two checks of the file (default 1000 ms). */
  readonly intervalMs?: number;
  /**
   * Called when a changed file cannot be used; the keys read before stay in
   * force. (Deleting the file removes every store key: that is a valid store.)
   */
  readonly onReloadError?: (problem: string) => void;
}

/**
 * The store as a KeySource for ApiKeyVerifier: read now (throws ConfigError
 * when invalid, so the server refuses to start), then re-read when the file
 * changes, checked with one `stat` at most every `intervalMs`.
 */
export function watchKeyStore(stateDir: string, options: KeyStoreWatchOptions = {}): KeySource {
  const now = options.now ?? Date.now;
  const intervalMs = options.intervalMs ?? 1000;
  const path = keyStorePath(stateDir);
  let current = load(stateDir);
  let checkedAt = now();
  return {
    current(): readonly ApiKeyConfig[] {
      const time = now();
      if (time - checkedAt < intervalMs && time >= checkedAt) return current.keys;
      checkedAt = time;
      let stamp = '';
      try {
        stamp = stampOf(statSync(path));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
          options.onReloadError?.(`${path}: cannot stat: ${(error as NodeJS.ErrnoException).code ?? 'error'}`);
          return current.keys;
        }
      }
      if (stamp === current.stamp) return current.keys;
      try {
        current = load(stateDir);
      } catch (error) {
        options.onReloadError?.(error instanceof ConfigError ? error.problems.join('; ') : String(error));
        // Do not retry the same broken version on every request.
        current = { keys: current.keys, stamp };
      }
      return current.keys;
    },
  };
}

const LOCK_STALE_MS = 30000;
const LOCK_WAIT_MS = 3000;

/** Takes the lock file: waits up to `waitMs` for another holder, takes over one older than 30 s. */
function lockStore(lock: string, waitMs: number): number {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return openSync(lock, 'wx', 0o600);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    let age: number;
    try {
      age = Date.now() - statSync(lock).mtimeMs;
    } catch {
      continue; // released in between: try again
    }
    if (age >= LOCK_STALE_MS) {
      try {
        unlinkSync(lock);
      } catch {
        // someone else took it over; the exclusive open decides
      }
      continue;
    }
    if (Date.now() >= deadline) throw new ConfigError([`${lock}: another \`herald keys\` command is changing the store; try again (or remove the file if none is)`]);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
}

/**
 * Read-modify-write of the store under a lock file (`api-keys.json.lock`,
 * created exclusively; a command waits up to 3 s for another to finish, and
 * takes over a lock older than 30 s as abandoned). `change`
 * gets the current keys and returns the new list (null: leave the file as
 * it is); the list is validated and written atomically with mode 0600.
 */
export function updateKeyStore<T>(
  stateDir: string,
  change: (keys: StoredApiKey[]) => { keys: StoredApiKey[] | null; result: T },
  options: { lockWaitMs?: number } = {},
): T {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = keyStorePath(stateDir);
  const lock = path + '.lock';
  const fd = lockStore(lock, options.lockWaitMs ?? LOCK_WAIT_MS);
  try {
    const { keys, result } = change(readKeyStore(stateDir));
    if (keys !== null) writeKeyStore(stateDir, keys);
    return result;
  } finally {
    closeSync(fd);
    try {
      unlinkSync(lock);
    } catch {
      // already gone
    }
  }
}

/** Writes the store atomically (mode 0600). Validates first: never writes a store the server would refuse. */
export function writeKeyStore(stateDir: string, keys: readonly StoredApiKey[]): void {
  const content = { version: 1 as const, keys: [...keys] };
  const checked = validateKeyStore(content);
  if ('problems' in checked) refuse(keyStorePath(stateDir), checked.problems);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = keyStorePath(stateDir);
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(temporary, 'wx', 0o600);
  try {
    writeSync(fd, JSON.stringify(content, null, 2) + '\n');
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    renameSync(temporary, path);
  } catch (error) {
    try {
      unlinkSync(temporary);
    } catch {
      // nothing to clean
    }
    throw error;
  }
}

/** Characters of a key kept as its public prefix: `hk_` and 6 of its 43 random characters (36 of 256 bits). */
export const PUBLIC_PREFIX_LENGTH = KEY_PREFIX.length + 6;

/** The public prefix of a key (shown in lists, never enough to use it). */
export function publicPrefix(key: string): string {
  return key.slice(0, PUBLIC_PREFIX_LENGTH);
}

/** A new random key: `hk_` and 256 random bits in base64url. */
export function generateApiKey(): string {
  return KEY_PREFIX + randomBytes(32).toString('base64url');
}

/** Names usable on the command line and in logs. */
export const KEY_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/;

export const SCOPES: readonly ApiScope[] = ['publish', 'read', 'admin'];

/** Parses "publish,read": every item a known scope, no duplicates, at least one. */
export function parseScopes(text: string): ApiScope[] | string {
  const items = text.split(',').map((s) => s.trim());
  const scopes: ApiScope[] = [];
  for (const item of items) {
    if (!(SCOPES as readonly string[]).includes(item)) return `unknown scope "${item}" (use ${SCOPES.join(', ')})`;
    if (scopes.includes(item as ApiScope)) return `scope "${item}" is given twice`;
    scopes.push(item as ApiScope);
  }
  return scopes;
}

const units: Record<string, number> = { ms: 1, s: 1000, m: 60000, h: 3600000, d: 86400000 };

/** Parses a duration such as `0`, `90s`, `15m`, `24h`, `7d`; undefined when malformed. At most 10 years. */
export function parseDuration(text: string): number | undefined {
  if (text === '0') return 0;
  const match = /^([0-9]{1,9})(ms|s|m|h|d)$/.exec(text);
  if (match === null) return undefined;
  const ms = Number(match[1]) * (units[match[2] as string] as number);
  return ms <= 3650 * 86400000 ? ms : undefined;
}

/** Whether a key is in force at `now`: no notAfter, or notAfter still ahead. */
export function keyStatus(key: ApiKeyConfig, now: number): 'active' | 'expiring' | 'expired' {
  if (key.notAfter === undefined) return 'active';
  return now < Date.parse(key.notAfter) ? 'expiring' : 'expired';
}

export interface CreateKeyRequest {
  readonly name: string;
  readonly scopes: readonly ApiScope[];
  /** ISO time after which the new key is refused. */
  readonly expires?: string | undefined;
  /** Names taken elsewhere (keys in the config file). */
  readonly reservedNames?: ReadonlySet<string>;
  readonly now: number;
}

/**
 * Adds a key to a store's list. The name must not belong to a key still in
 * force; an expired entry of the same name is replaced. Returns the new list
 * and the key, which the caller shows once and forgets.
 */
export function createKey(keys: readonly StoredApiKey[], request: CreateKeyRequest): { keys: StoredApiKey[]; key: string; entry: StoredApiKey } | { error: string } {
  const { name, now } = request;
  if (!KEY_NAME_PATTERN.test(name)) return { error: 'the name must be 1-64 characters of A-Z a-z 0-9 _ . @ - (starting with a letter or digit)' };
  if (request.reservedNames?.has(name)) return { error: `a key named "${name}" is in the config file` };
  const existing = keys.find((k) => k.name === name);
  if (existing !== undefined && keyStatus(existing, now) !== 'expired') {
    return { error: `a key named "${name}" exists; revoke it first, or rotate: create a key with a new name, then revoke this one with --grace` };
  }
  if (request.scopes.length === 0) return { error: 'at least one scope is needed' };
  let notAfter: string | undefined;
  if (request.expires !== undefined) {
    const at = Date.parse(request.expires);
    if (Number.isNaN(at) || !/^\d{4}-\d{2}-\d{2}(T.*)?$/.test(request.expires)) return { error: `--expires "${request.expires}" is not an ISO 8601 time` };
    if (at <= now) return { error: '--expires is in the past' };
    notAfter = new Date(at).toISOString();
  }
  const key = generateApiKey();
  const entry: StoredApiKey = {
    name,
    sha256: hashApiKey(key),
    scopes: [...request.scopes],
    created: new Date(now).toISOString(),
    prefix: publicPrefix(key),
    ...(notAfter === undefined ? {} : { notAfter }),
  };
  return { keys: [...keys.filter((k) => k.name !== name), entry], key, entry };
}

/**
 * Sets a key's notAfter to `now + graceMs` (0: refused from now on). A
 * revocation never lengthens a key's life: an earlier notAfter is kept.
 */
export function revokeKey(keys: readonly StoredApiKey[], name: string, graceMs: number, now: number): { keys: StoredApiKey[]; entry: StoredApiKey } | { error: string } {
  const index = keys.findIndex((k) => k.name === name);
  const existing = keys[index];
  if (existing === undefined) return { error: `no key named "${name}" in the store` };
  let until = now + graceMs;
  if (existing.notAfter !== undefined) until = Math.min(until, Date.parse(existing.notAfter));
  const entry: StoredApiKey = { ...existing, notAfter: new Date(until).toISOString() };
  const next = [...keys];
  next[index] = entry;
  return { keys: next, entry };
}
