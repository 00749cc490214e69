/**
 * Token minting for backends (docs/protocol.md "Tokens" and "Token
 * lifecycle"), with jose. Two kinds, which the server never confuses:
 *
 * - a connection token: `sub` (the user), `iat`, `exp`, and optionally
 *   `info` (shown in presence as `conn_info`), `aud`, `iss`, `jti`;
 *   it never has a `channel` claim;
 * - a subscription token, for a channel of a `private` namespace: the same
 *   claims plus `channel`, and `sub` equal to the connection's user.
 *
 * Keys: an HS256 secret (a string of at least 32 characters, the server's
 * `auth.hmacSecret`), or a PEM private key (or a private `KeyObject`) for
 * RS256 (RSA) or ES256 (EC P-256), whose public half the server has
 * (`auth.publicKey` or its JWKS). The algorithm follows from the key;
 * `algorithm` only states it, and a mismatch is refused. Errors never quote
 * the key.
 */
import { createPrivateKey, createSecretKey, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';

export type TokenAlgorithm = 'HS256' | 'RS256' | 'ES256';

/** The server's shortest HS256 secret (`auth.hmacSecret`). */
export const MIN_HMAC_SECRET_CHARS = 32;

export interface TokenOptions {
  /** The user id (`sub`, at most 256 characters). */
  readonly sub: string;
  /** Lifetime in seconds (`exp` = now + ttlSeconds). */
  readonly ttlSeconds: number;
  /** An HS256 secret (≥ 32 characters), a PEM private key (RS256, ES256), or a private or secret KeyObject. */
  readonly key: string | KeyObject;
  /** The algorithm the key is for; by default the one the key implies. */
  readonly algorithm?: TokenAlgorithm;
  /** The `info` claim: any JSON value, shown to others in presence and join/leave as `conn_info`. */
  readonly info?: unknown;
  /** `aud`: must equal the server's `auth.audience` when it has one. */
  readonly audience?: string;
  /** `iss`: must equal the server's `auth.issuer` when it has one. */
  readonly issuer?: string;
  /** `jti`: the id to revoke this token by (`revokeToken`), at most 256 characters. */
  readonly jti?: string;
  /** `kid` header: which of the server's JWKS keys verifies it. */
  readonly keyId?: string;
}

export interface SubscriptionTokenOptions extends TokenOptions {
  /** The private channel this token lets `sub` subscribe to (the `channel` claim). */
  readonly channel: string;
}

interface SigningKey {
  readonly algorithm: TokenAlgorithm;
  readonly key: KeyObject;
}

function fail(what: string, message: string): never {
  throw new TypeError(`${what}: ${message}`);
}

function signingKey(what: string, key: string | KeyObject, stated: TokenAlgorithm | undefined): SigningKey {
  let object: KeyObject;
  if (typeof key === 'string') {
    if (key.includes('-----BEGIN')) {
      if (/-----BEGIN (?:RSA )?PUBLIC KEY-----|-----BEGIN CERTIFICATE-----/.test(key)) fail(what, 'key is a public key or certificate; a token is signed with the private key');
      try {
        object = createPrivateKey(key);
      } catch {
        fail(what, 'key is not a readable PEM private key (PKCS#8, or PKCS#1 RSA / SEC1 EC)');
      }
    } else {
      if (key.length < MIN_HMAC_SECRET_CHARS) fail(what, `an HS256 secret has at least ${MIN_HMAC_SECRET_CHARS} characters (the server refuses shorter ones)`);
      object = createSecretKey(new TextEncoder().encode(key));
    }
  } else if (typeof key === 'object' && key !== null && typeof (key as { type?: unknown }).type === 'string') {
    object = key;
    if (object.type === 'public') fail(what, 'key is a public key; a token is signed with the private key');
    if (object.type === 'secret' && (object.symmetricKeySize ?? 0) < MIN_HMAC_SECRET_CHARS) fail(what, `an HS256 secret has at least ${MIN_HMAC_SECRET_CHARS} bytes`);
  } else {
    fail(what, 'key must be an HS256 secret, a PEM private key or a KeyObject');
  }
  const implied = impliedAlgorithm(what, object);
  if (stated !== undefined && stated !== implied) fail(what, `algorithm ${stated} does not fit the key (it is a ${implied} key)`);
  return { algorithm: implied, key: object };
}

function impliedAlgorithm(what: string, key: KeyObject): TokenAlgorithm {
  if (key.type === 'secret') return 'HS256';
  if (key.asymmetricKeyType === 'rsa') return 'RS256';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  return fail(what, `the key type (${key.asymmetricKeyType ?? 'unknown'}${key.asymmetricKeyDetails?.namedCurve === undefined ? '' : ` ${key.asymmetricKeyDetails.namedCurve}`}) is not one Herald verifies: RSA (RS256) or EC P-256 (ES256)`);
}

function checkedString(what: string, name: string, value: unknown, min: number, max: number): string {
  if (typeof value !== 'string' || value.length < min || value.length > max) {
    fail(what, `${name} must be a string of ${min === 0 ? 'at most' : `${min} to`} ${max} characters`);
  }
  return value;
}

async function mint(what: string, options: TokenOptions, channel: string | undefined): Promise<string> {
  if (typeof options !== 'object' || options === null) fail(what, 'expected an options object');
  const sub = checkedString(what, 'sub', options.sub, 0, 256);
  if (!Number.isSafeInteger(options.ttlSeconds) || options.ttlSeconds <= 0) fail(what, 'ttlSeconds must be a positive integer');
  const { algorithm, key } = signingKey(what, options.key, options.algorithm);
  const claims: Record<string, unknown> = {};
  if (options.info !== undefined) {
    if (JSON.stringify(options.info) === undefined) fail(what, 'info must be a JSON value');
    claims['info'] = options.info;
  }
  if (channel !== undefined) claims['channel'] = channel;
  const now = Math.floor(Date.now() / 1000);
  const header = options.keyId === undefined ? { alg: algorithm, typ: 'JWT' } : { alg: algorithm, typ: 'JWT', kid: checkedString(what, 'keyId', options.keyId, 1, 256) };
  let jwt = new SignJWT(claims).setProtectedHeader(header).setSubject(sub).setIssuedAt(now).setExpirationTime(now + options.ttlSeconds);
  if (options.audience !== undefined) jwt = jwt.setAudience(checkedString(what, 'audience', options.audience, 1, 1024));
  if (options.issuer !== undefined) jwt = jwt.setIssuer(checkedString(what, 'issuer', options.issuer, 1, 1024));
  if (options.jti !== undefined) jwt = jwt.setJti(checkedString(what, 'jti', options.jti, 1, 256));
  return jwt.sign(key);
}

/** A connection token for `sub` (no `channel` claim: the server refuses one that has it for connecting). */
export function mintConnectionToken(options: TokenOptions): Promise<string> {
  return mint('mintConnectionToken', options, undefined);
}

/** A subscription token letting `sub` subscribe to `channel` (a private namespace); it cannot connect. */
export async function mintSubscriptionToken(options: SubscriptionTokenOptions): Promise<string> {
  const channel = checkedString('mintSubscriptionToken', 'channel', (options as { channel?: unknown } | null)?.channel, 1, 1024);
  return mint('mintSubscriptionToken', options, channel);
}
