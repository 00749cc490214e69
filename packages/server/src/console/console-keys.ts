/**
 * API keys as the console shows and changes them: the keys of the state
 * directory (the same backend as `herald keys`: the state file on the
 * sqlite engine, api-keys.json on the others; cli/key-backend.ts) plus the
 * config file's keys (read only). A change is one short write under the
 * backend's lock; every worker and the server's verifier see it within a
 * second (as after `herald keys`).
 */
import type { ApiKeyConfig, ApiScope, Config } from '../config/schema.ts';
import { createKey, KEY_NAME_PATTERN, keyStatus, revokeKey, SCOPES, type StoredApiKey } from '../auth/key-store.ts';
import { keyBackendKind, openKeyBackend } from '../cli/key-backend.ts';
import { DEV_KEY_NAME } from '../app/dev-secrets.ts';

export interface KeyView {
  /** The key's name: names are unique, so it is the id in routes. */
  readonly id: string;
  readonly name: string;
  /** The key's first characters (`hk_` and 6 more); null for keys made before prefixes were kept, and config keys. */
  readonly prefix: string | null;
  readonly scopes: readonly ApiScope[];
  /** Epoch ms; null for config keys. */
  readonly createdAt: number | null;
  /** Epoch ms of the last use known (console/key-usage.ts); null: not used since the nodes started. */
  readonly lastUsedAt: number | null;
  /** Epoch ms after which it is refused; null: no end. */
  readonly notAfter: number | null;
  readonly status: 'active' | 'expiring' | 'expired';
  /** `notAfter` once it has passed (revoked or expired), else null. */
  readonly revokedAt: number | null;
  /** `store`: made by `herald keys` or the console; `config`: in the config file (change it there). */
  readonly source: 'store' | 'config';
}

/** A refusal, with the error code the console answers. */
export class KeyActionError extends Error {
  readonly code: 'invalid_input' | 'not_found';
  constructor(code: 'invalid_input' | 'not_found', message: string) {
    super(message);
    this.code = code;
  }
}

/** Longest grace a rotation or revocation may give the old key: 30 days. */
export const MAX_GRACE_SECONDS = 30 * 86400;

export function parseScopeList(value: unknown): ApiScope[] {
  if (!Array.isArray(value) || value.length === 0 || value.length > SCOPES.length) throw new KeyActionError('invalid_input', `scopes: a non-empty list of ${SCOPES.join(', ')}`);
  const scopes: ApiScope[] = [];
  for (const item of value) {
    if (typeof item !== 'string' || !(SCOPES as readonly string[]).includes(item) || scopes.includes(item as ApiScope)) {
      throw new KeyActionError('invalid_input', `scopes: each of ${SCOPES.join(', ')} at most once`);
    }
    scopes.push(item as ApiScope);
  }
  return scopes;
}

export function parseKeyName(value: unknown, field = 'name'): string {
  if (typeof value !== 'string' || !KEY_NAME_PATTERN.test(value)) {
    throw new KeyActionError('invalid_input', `${field}: 1-64 characters of A-Z a-z 0-9 _ . @ - (starting with a letter or digit)`);
  }
  return value;
}

export function parseGrace(value: unknown): number {
  if (value === undefined) return 0;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_GRACE_SECONDS) {
    throw new KeyActionError('invalid_input', `graceSeconds: an integer from 0 to ${MAX_GRACE_SECONDS}`);
  }
  return value;
}

function time(iso: string | undefined): number | null {
  if (iso === undefined) return null;
  const at = Date.parse(iso);
  return Number.isNaN(at) ? null : at;
}

/** The name a rotation gives the new key: `name-r2`, `name-r3`… (the first free one). */
export function rotatedName(name: string, taken: ReadonlySet<string>): string {
  const match = /^(.*)-r(\d{1,6})$/.exec(name);
  const base = match === null ? name : match[1]!;
  let n = match === null ? 2 : Number(match[2]) + 1;
  for (;;) {
    const candidate = `${base.slice(0, 64 - `-r${n}`.length)}-r${n}`;
    if (!taken.has(candidate)) return candidate;
    n++;
  }
}

export class ConsoleKeys {
  readonly #config: Config;
  readonly #lastUsed: (name: string) => number | undefined;
  readonly #now: () => number;

  constructor(config: Config, lastUsed: (name: string) => number | undefined, now: () => number) {
    this.#config = config;
    this.#lastUsed = lastUsed;
    this.#now = now;
  }

  #with<T>(work: (backend: ReturnType<typeof openKeyBackend>) => T): T {
    const stateDir = this.#config.stateDir;
    const backend = openKeyBackend(keyBackendKind(this.#config, stateDir), stateDir, () => {});
    try {
      return work(backend);
    } finally {
      backend.close();
    }
  }

  #view(key: StoredApiKey | ApiKeyConfig, source: 'store' | 'config', now: number): KeyView {
    const stored = key as Partial<StoredApiKey>;
    return {
      id: key.name,
      name: key.name,
      prefix: stored.prefix ?? null,
      scopes: key.scopes,
      createdAt: time(stored.created),
      lastUsedAt: this.#lastUsed(key.name) ?? null,
      notAfter: time(key.notAfter),
      status: keyStatus(key, now),
      revokedAt: keyStatus(key, now) === 'expired' ? time(key.notAfter) : null,
      source,
    };
  }

  list(): KeyView[] {
    const now = this.#now();
    const stored = this.#with((backend) => backend.read());
    return [...this.#config.api.keys.map((k) => this.#view(k, 'config', now)), ...stored.map((k) => this.#view(k, 'store', now))];
  }

  #reserved(): Set<string> {
    return new Set(this.#config.api.keys.map((k) => k.name));
  }

  create(name: string, scopes: readonly ApiScope[]): { key: KeyView; secret: string } {
    const now = this.#now();
    const reservedNames = this.#reserved();
    const outcome = this.#with((backend) =>
      backend.update((keys) => {
        const made = createKey(keys, { name, scopes, reservedNames, now });
        return { keys: 'error' in made ? null : made.keys, result: made };
      }),
    );
    if ('error' in outcome) throw new KeyActionError('invalid_input', outcome.error);
    return { key: this.#view(outcome.entry, 'store', now), secret: outcome.key };
  }

  /** A new key with the old one's scopes; the old one is refused after `graceSeconds`. */
  rotate(name: string, graceSeconds: number, newName: string | undefined): { key: KeyView; secret: string; old: KeyView } {
    const now = this.#now();
    const reservedNames = this.#reserved();
    this.#refuseSpecial(name);
    type Rotation = { missing: true } | { error: string } | { made: { entry: StoredApiKey; key: string }; old: StoredApiKey };
    const outcome = this.#with((backend) =>
      backend.update<Rotation>((keys) => {
        const old = keys.find((k) => k.name === name);
        if (old === undefined) return { keys: null, result: { missing: true } };
        if (keyStatus(old, now) === 'expired') return { keys: null, result: { error: `key "${name}" is expired already` } };
        const taken = new Set([...keys.map((k) => k.name), ...reservedNames]);
        const made = createKey(keys, { name: newName ?? rotatedName(name, taken), scopes: old.scopes, reservedNames, now });
        if ('error' in made) return { keys: null, result: made };
        const revoked = revokeKey(made.keys, name, graceSeconds * 1000, now);
        if ('error' in revoked) return { keys: null, result: revoked };
        return { keys: revoked.keys, result: { made, old: revoked.entry } };
      }),
    );
    if ('missing' in outcome) throw new KeyActionError('not_found', `no key named "${name}" in the key store`);
    if ('error' in outcome) throw new KeyActionError('invalid_input', outcome.error);
    return { key: this.#view(outcome.made.entry, 'store', now), secret: outcome.made.key, old: this.#view(outcome.old, 'store', now) };
  }

  revoke(name: string, graceSeconds: number): KeyView {
    const now = this.#now();
    this.#refuseSpecial(name);
    const outcome = this.#with((backend) =>
      backend.update((keys) => {
        const result = revokeKey(keys, name, graceSeconds * 1000, now);
        return { keys: 'error' in result ? null : result.keys, result };
      }),
    );
    if ('error' in outcome) throw new KeyActionError('not_found', `no key named "${name}" in the key store`);
    return this.#view(outcome.entry, 'store', now);
  }

  #refuseSpecial(name: string): void {
    if (this.#reserved().has(name)) throw new KeyActionError('invalid_input', `"${name}" is a key of the config file: change it there`);
    if (name === DEV_KEY_NAME) throw new KeyActionError('invalid_input', `"${name}" is the development key`);
  }
}
