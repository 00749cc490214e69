/**
 * Development mode: secrets generated once into the state directory
 * (`dev-secrets.json`, mode 0600, directory 0700): an HS256 token secret
 * and an API key, of which only the hash is kept for good. The key itself
 * stays in the file as `pendingApiKey` until a server has started with it
 * and shown it (`markDevKeyShown`), so a start that fails after the key was
 * made (a port in use, a bad flag) never loses it. There is no built-in
 * fallback secret.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hashApiKey } from '../auth/api-keys.ts';
import { KEY_PREFIX } from '../auth/key-store.ts';

/** Name of the development API key (in logs, `herald keys list`). */
export const DEV_KEY_NAME = 'development';

/** Characters of the key shown by `herald keys list` (prefix included): enough to tell keys apart, far too few to guess the rest. */
const SHOWN_KEY_CHARS = KEY_PREFIX.length + 6;

export interface DevSecrets {
  readonly hmacSecret: string;
  readonly apiKeySha256: string;
  /** The key's first characters, e.g. `hk_a1B2c3` (absent in files written by older versions). */
  readonly apiKeyPrefix?: string;
  /** When the key was made (ISO 8601; absent in files written by older versions). */
  readonly created?: string;
  /** The key itself, until a server has started and shown it. */
  readonly pendingApiKey?: string;
  readonly path: string;
}

export function devSecretsPath(stateDir: string): string {
  return join(stateDir, 'dev-secrets.json');
}

/** The development secrets of `stateDir`, if it has valid ones. */
export function readDevSecrets(stateDir: string): DevSecrets | undefined {
  const path = devSecretsPath(stateDir);
  let stored: Record<string, unknown>;
  try {
    stored = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  const { hmacSecret, apiKeySha256, apiKeyPrefix, created, pendingApiKey } = stored;
  if (typeof hmacSecret !== 'string' || hmacSecret.length < 32 || typeof apiKeySha256 !== 'string' || !/^[0-9a-f]{64}$/.test(apiKeySha256)) return undefined;
  return {
    hmacSecret,
    apiKeySha256,
    path,
    ...(typeof apiKeyPrefix === 'string' ? { apiKeyPrefix } : {}),
    ...(typeof created === 'string' ? { created } : {}),
    ...(typeof pendingApiKey === 'string' && hashApiKey(pendingApiKey) === apiKeySha256 ? { pendingApiKey } : {}),
  };
}

/** Reads the development secrets, generating them on the first run. */
export function ensureDevSecrets(stateDir: string, now: () => number = Date.now): DevSecrets {
  const existing = readDevSecrets(stateDir);
  if (existing !== undefined) return existing;
  const hmacSecret = randomBytes(32).toString('base64url');
  const apiKey = KEY_PREFIX + randomBytes(24).toString('base64url');
  const secrets = {
    hmacSecret,
    apiKeySha256: hashApiKey(apiKey),
    apiKeyPrefix: apiKey.slice(0, SHOWN_KEY_CHARS),
    created: new Date(now()).toISOString(),
    pendingApiKey: apiKey,
  };
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  write(stateDir, secrets);
  return { ...secrets, path: devSecretsPath(stateDir) };
}

/** After a server started and showed the key: forget it, keep its hash. */
export function markDevKeyShown(stateDir: string): void {
  const current = readDevSecrets(stateDir);
  if (current?.pendingApiKey === undefined) return;
  const { path: _path, pendingApiKey: _key, ...rest } = current;
  write(stateDir, rest);
}

function write(stateDir: string, secrets: Omit<DevSecrets, 'path'>): void {
  const path = devSecretsPath(stateDir);
  // Written beside and renamed: a crash never leaves half a file (and a lost token secret).
  const temporary = `${path}.${process.pid}.tmp`;
  writeFileSync(temporary, JSON.stringify(secrets, null, 2) + '\n', { mode: 0o600 });
  renameSync(temporary, path);
}
