/**
 * Server API keys. Only SHA-256 hashes are held; a presented key is hashed
 * and compared against every stored hash in constant time (no early exit),
 * so neither timing nor order leaks which key matched.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { ApiKeyConfig, ApiScope } from '../config/schema.ts';

export interface ApiPrincipal {
  readonly name: string;
  readonly scopes: ReadonlySet<ApiScope>;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

export class ApiKeyVerifier {
  readonly #keys: { hash: Buffer; principal: ApiPrincipal }[];

  constructor(keys: readonly ApiKeyConfig[]) {
    this.#keys = keys.map((k) => ({
      hash: Buffer.from(k.sha256, 'hex'),
      principal: { name: k.name, scopes: new Set(k.scopes) },
    }));
  }

  get size(): number {
    return this.#keys.length;
  }

  verify(presented: string): ApiPrincipal | null {
    if (presented.length === 0 || presented.length > 512) return null;
    const hash = createHash('sha256').update(presented, 'utf8').digest();
    let found: ApiPrincipal | null = null;
    for (const key of this.#keys) {
      if (timingSafeEqual(hash, key.hash) && found === null) found = key.principal;
    }
    return found;
  }
}

export function allows(principal: ApiPrincipal, scope: ApiScope): boolean {
  return principal.scopes.has('admin') || principal.scopes.has(scope);
}
