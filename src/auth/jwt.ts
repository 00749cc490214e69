/**
 * Connection-token verification with jose. The algorithm allowlist comes
 * from config and is enforced before any key is chosen; each algorithm
 * family has its own key, so an HS256 token "signed" with the public key
 * never verifies. `jku`/`jwk`/`x5u` headers are never followed.
 */
import { errors, importSPKI, jwtVerify, type CryptoKey, type JWTPayload, type JWSHeaderParameters } from 'jose';

export interface ConnectionIdentity {
  /** The `sub` claim. */
  readonly user: string;
  /** The optional `info` claim, shown in presence as `conn_info`. */
  readonly info?: unknown;
  /** `exp` in epoch milliseconds, when present. */
  readonly expiresAt?: number;
}

export type TokenErrorKind = 'invalid' | 'expired';

export class TokenError extends Error {
  readonly kind: TokenErrorKind;
  constructor(kind: TokenErrorKind, detail: string) {
    super(detail);
    this.name = 'TokenError';
    this.kind = kind;
  }
}

/** Verifies connection tokens. Throws TokenError, never anything else. */
export interface TokenVerifier {
  verifyConnectionToken(token: string): Promise<ConnectionIdentity>;
}

export type JwtAlgorithm = 'HS256' | 'RS256' | 'ES256';

export interface JwtVerifierOptions {
  readonly algorithms: readonly JwtAlgorithm[];
  readonly hmacSecret?: string | undefined;
  /** PEM SPKI public key for RS256/ES256. */
  readonly publicKey?: string | undefined;
  readonly audience?: string | undefined;
  readonly issuer?: string | undefined;
  readonly leewayMs: number;
  readonly now?: () => number;
}

export async function createJwtVerifier(options: JwtVerifierOptions): Promise<TokenVerifier> {
  const keys = new Map<string, Uint8Array | CryptoKey>();
  for (const alg of options.algorithms) {
    if (alg === 'HS256') {
      if (options.hmacSecret === undefined) throw new Error('auth: HS256 is allowed but no HMAC secret is configured');
      keys.set(alg, new TextEncoder().encode(options.hmacSecret));
    } else {
      if (options.publicKey === undefined) throw new Error(`auth: ${alg} is allowed but no public key is configured`);
      try {
        keys.set(alg, await importSPKI(options.publicKey, alg));
      } catch {
        throw new Error(`auth: the public key is not a valid PEM SPKI key for ${alg}`);
      }
    }
  }
  const algorithms = [...options.algorithms];
  const now = options.now ?? Date.now;
  const keyFor = (header: JWSHeaderParameters) => {
    const key = header.alg === undefined ? undefined : keys.get(header.alg);
    if (key === undefined) throw new TokenError('invalid', 'algorithm not allowed');
    return key;
  };
  return {
    async verifyConnectionToken(token: string): Promise<ConnectionIdentity> {
      if (typeof token !== 'string' || token.length === 0 || token.length > 16384) {
        throw new TokenError('invalid', 'malformed token');
      }
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, keyFor, {
          algorithms,
          audience: options.audience,
          issuer: options.issuer,
          clockTolerance: Math.floor(options.leewayMs / 1000),
          currentDate: new Date(now()),
        }));
      } catch (error) {
        if (error instanceof TokenError) throw error;
        if (error instanceof errors.JWTExpired) throw new TokenError('expired', 'token expired');
        throw new TokenError('invalid', error instanceof errors.JOSEError ? error.code : 'invalid token');
      }
      if (typeof payload.sub !== 'string' || payload.sub.length > 256) throw new TokenError('invalid', 'sub claim missing');
      const identity: { user: string; info?: unknown; expiresAt?: number } = { user: payload.sub };
      if (payload['info'] !== undefined) identity.info = payload['info'];
      if (typeof payload.exp === 'number') identity.expiresAt = payload.exp * 1000;
      return identity;
    },
  };
}
