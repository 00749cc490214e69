/**
 * Token verification with jose. The algorithm allowlist comes from config
 * and is enforced before any key is chosen; each algorithm family has its
 * own key source (the HMAC secret for HS256; a configured public key or a
 * JWKS endpoint for RS256/ES256), so an HS256 token "signed" with a public
 * key never verifies. `jku`, `jwk` and `x5u` headers are never followed:
 * keys come only from config.
 *
 * Two token types, told apart by the `channel` claim: a connection token
 * must not have one; a subscription token must, equal to the channel.
 */
import { DEFAULT_MAX_JSON_DEPTH, findPoisonedKey, jsonDepthExceeds } from '@herald/protocol/json';
import type { CryptoKey, JWTPayload, JWSHeaderParameters, FlattenedJWSInput } from 'jose';

/** jose, loaded at the first token (or at start for a JWKS or a public key): a server without tokens never loads it. */
let joseModule: Promise<typeof import('jose')> | undefined;
const loadJose = (): Promise<typeof import('jose')> => (joseModule ??= import('jose'));

export interface ConnectionIdentity {
  /** The `sub` claim. */
  readonly user: string;
  /** The optional `info` claim, shown in presence as `conn_info`. */
  readonly info?: unknown;
  /** `exp` in epoch milliseconds, when present. */
  readonly expiresAt?: number;
  /** `iat` in epoch milliseconds, when present. */
  readonly issuedAt?: number;
  /** `jti`, when present: the id a token is revoked by. */
  readonly tokenId?: string;
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

/** Verifies tokens. Throws TokenError, never anything else. */
export interface TokenVerifier {
  verifyConnectionToken(token: string): Promise<ConnectionIdentity>;
  /** A subscription token for `channel`, issued to `user`. */
  verifySubscriptionToken(token: string, user: string, channel: string): Promise<ConnectionIdentity>;
}

export type JwtAlgorithm = 'HS256' | 'RS256' | 'ES256';

export interface JwtVerifierOptions {
  readonly algorithms: readonly JwtAlgorithm[];
  readonly hmacSecret?: string | undefined;
  /** PEM SPKI public key for RS256/ES256. */
  readonly publicKey?: string | undefined;
  /** JWKS endpoint for RS256/ES256 (instead of, or besides, publicKey). */
  readonly jwksUrl?: string | undefined;
  readonly jwksCacheMs?: number | undefined;
  readonly jwksCooldownMs?: number | undefined;
  readonly audience?: string | undefined;
  readonly issuer?: string | undefined;
  readonly leewayMs: number;
  /** `limits.maxJsonDepth`: deeper claims are refused before jose parses them. */
  readonly maxJsonDepth?: number | undefined;
  readonly now?: () => number;
}

const MAX_TOKEN_LENGTH = 16384;

/**
 * Verified tokens kept, by token string: a reconnect storm presents the
 * same tokens again. Only for static keys (HMAC secret, configured public
 * key), never for keys from a JWKS, which may be withdrawn; an entry is used
 * only until the token's `exp` (with the leeway), as jose would judge it;
 * refused tokens are never kept. Revocation is checked by the caller on
 * every use (auth/revocation.ts), cached or not.
 */
const VERIFIED_CACHE_ENTRIES = 4096;

type KeyResolver = (header: JWSHeaderParameters, input: FlattenedJWSInput) => Promise<Uint8Array | CryptoKey> | Uint8Array | CryptoKey;

export async function createJwtVerifier(options: JwtVerifierOptions): Promise<TokenVerifier> {
  const staticKeys = new Map<string, Uint8Array | CryptoKey>();
  const needsJoseNow = options.jwksUrl !== undefined || options.algorithms.some((alg) => alg !== 'HS256');
  const { createRemoteJWKSet, importSPKI } = needsJoseNow ? await loadJose() : { createRemoteJWKSet: undefined, importSPKI: undefined };
  const jwks =
    options.jwksUrl === undefined || createRemoteJWKSet === undefined
      ? undefined
      : createRemoteJWKSet(new URL(options.jwksUrl), {
          cacheMaxAge: options.jwksCacheMs ?? 600000,
          cooldownDuration: options.jwksCooldownMs ?? 30000,
          timeoutDuration: 5000,
        });
  for (const alg of options.algorithms) {
    if (alg === 'HS256') {
      if (options.hmacSecret === undefined) throw new Error('auth: HS256 is allowed but no HMAC secret is configured');
      staticKeys.set(alg, new TextEncoder().encode(options.hmacSecret));
    } else if (options.publicKey !== undefined && importSPKI !== undefined) {
      try {
        staticKeys.set(alg, await importSPKI(options.publicKey, alg));
      } catch {
        throw new Error(`auth: the public key is not a valid PEM SPKI key for ${alg}`);
      }
    } else if (jwks === undefined) {
      throw new Error(`auth: ${alg} is allowed but neither a public key nor a JWKS URL is configured`);
    }
  }
  const algorithms = [...options.algorithms];
  const now = options.now ?? Date.now;
  const maxJsonDepth = options.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  const resolveKey: KeyResolver = (header, input) => {
    const alg = header.alg;
    if (alg === undefined || !algorithms.includes(alg as JwtAlgorithm)) throw new TokenError('invalid', 'algorithm not allowed');
    const key = staticKeys.get(alg);
    if (key !== undefined) return key;
    if (jwks !== undefined && alg !== 'HS256') return jwks(header, input);
    throw new TokenError('invalid', 'no key for algorithm');
  };

  const leewayMs = options.leewayMs;
  const verified = new Map<string, { readonly payload: JWTPayload; readonly until: number }>();
  const remember = (token: string, payload: JWTPayload): void => {
    if (jwks !== undefined) return;
    const until = typeof payload.exp === 'number' ? payload.exp * 1000 + leewayMs : Infinity;
    if (verified.size >= VERIFIED_CACHE_ENTRIES) verified.delete(verified.keys().next().value!);
    verified.set(token, { payload, until });
  };

  async function verify(token: string): Promise<JWTPayload> {
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
      throw new TokenError('invalid', 'malformed token');
    }
    const known = verified.get(token);
    if (known !== undefined) {
      // jose refuses a token once now - leeway reaches `exp`.
      if (now() < known.until) return known.payload;
      verified.delete(token);
    }
    const payload = await verifyWithJose(token);
    remember(token, payload);
    return payload;
  }

  async function verifyWithJose(token: string): Promise<JWTPayload> {
    const { jwtVerify, errors } = await loadJose();
    // Claims reach presence and join/leave pushes: no nesting deeper than any other JSON input.
    if (jsonDepthExceeds(Buffer.from(token.split('.', 2)[1] ?? '', 'base64url').toString('utf8'), maxJsonDepth)) {
      throw new TokenError('invalid', 'claims nested too deep');
    }
    try {
      const { payload } = await jwtVerify(token, resolveKey, {
        algorithms,
        audience: options.audience,
        issuer: options.issuer,
        clockTolerance: options.leewayMs / 1000,
        currentDate: new Date(now()),
      });
      return payload;
    } catch (error) {
      if (error instanceof TokenError) throw error;
      if (error instanceof errors.JWTExpired) throw new TokenError('expired', 'token expired');
      throw new TokenError('invalid', error instanceof errors.JOSEError ? error.code : 'invalid token');
    }
  }

  return {
    async verifyConnectionToken(token: string): Promise<ConnectionIdentity> {
      const payload = await verify(token);
      if (payload['channel'] !== undefined) throw new TokenError('invalid', 'subscription token used to connect');
      return identityOf(payload);
    },
    async verifySubscriptionToken(token: string, user: string, channel: string): Promise<ConnectionIdentity> {
      const payload = await verify(token);
      if (payload['channel'] !== channel) throw new TokenError('invalid', 'token is not for this channel');
      const identity = identityOf(payload);
      if (identity.user !== user) throw new TokenError('invalid', 'token is for another user');
      return identity;
    },
  };
}

function identityOf(payload: JWTPayload): ConnectionIdentity {
  // Claims end up in presence answers: refuse prototype-poisoning keys, as
  // commands and bodies do (jose parsed them without that check).
  if (findPoisonedKey(payload) !== undefined) throw new TokenError('invalid', 'claims contain a __proto__ or constructor.prototype key');
  if (typeof payload.sub !== 'string' || payload.sub.length > 256) throw new TokenError('invalid', 'sub claim missing');
  // The node counts app X's users as `~X~user` (apps.ts, isReservedUserId): a `sub` of that form would be theirs.
  if (payload.sub.charCodeAt(0) === 126 /* ~ */) throw new TokenError('invalid', 'sub claim begins with "~"');
  const identity: { -readonly [K in keyof ConnectionIdentity]: ConnectionIdentity[K] } = { user: payload.sub };
  if (payload['info'] !== undefined) identity.info = payload['info'];
  if (typeof payload.exp === 'number') identity.expiresAt = payload.exp * 1000;
  if (typeof payload.iat === 'number') identity.issuedAt = payload.iat * 1000;
  if (typeof payload.jti === 'string' && payload.jti.length > 0 && payload.jti.length <= 256) identity.tokenId = payload.jti;
  return identity;
}
