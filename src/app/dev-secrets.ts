/**
 * Development mode: secrets generated once into the state directory. The
 * API key itself is shown once, when it is created; only its hash is kept.
 * There is no built-in fallback secret.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hashApiKey } from '../auth/api-keys.ts';

export interface DevSecrets {
  readonly hmacSecret: string;
  readonly apiKeySha256: string;
  /** Present only on the run that created the key. */
  readonly newApiKey?: string;
  readonly path: string;
}

export function ensureDevSecrets(stateDir: string): DevSecrets {
  const path = join(stateDir, 'dev-secrets.json');
  try {
    const stored = JSON.parse(readFileSync(path, 'utf8')) as { hmacSecret?: unknown; apiKeySha256?: unknown };
    if (typeof stored.hmacSecret === 'string' && stored.hmacSecret.length >= 32 && typeof stored.apiKeySha256 === 'string' && /^[0-9a-f]{64}$/.test(stored.apiKeySha256)) {
      return { hmacSecret: stored.hmacSecret, apiKeySha256: stored.apiKeySha256, path };
    }
  } catch {
    // absent or unreadable: generate below
  }
  const hmacSecret = randomBytes(32).toString('base64url');
  const apiKey = 'hk_' + randomBytes(24).toString('base64url');
  const apiKeySha256 = hashApiKey(apiKey);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  writeFileSync(path, JSON.stringify({ hmacSecret, apiKeySha256 }, null, 2) + '\n', { mode: 0o600 });
  return { hmacSecret, apiKeySha256, newApiKey: apiKey, path };
}

/** Reads the development HMAC secret, if the state directory has one. */
export function readDevHmacSecret(stateDir: string): string | undefined {
  try {
    const stored = JSON.parse(readFileSync(join(stateDir, 'dev-secrets.json'), 'utf8')) as { hmacSecret?: unknown };
    return typeof stored.hmacSecret === 'string' ? stored.hmacSecret : undefined;
  } catch {
    return undefined;
  }
}
