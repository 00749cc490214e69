/**
 * Pusher HTTP API request signing, checked as Pusher defines it
 * (docs/pusher.md, "Request signing"). A request carries in its query:
 *
 * - `auth_key`: the key of the app named by the path (`/apps/{id}/…`);
 * - `auth_timestamp`: Unix seconds, within `pusher.authTimestampWindowSeconds`
 *   of the server's clock (either side);
 * - `auth_version`: `1.0`;
 * - `body_md5`: the hex MD5 of the body's bytes, whenever there is a body;
 * - `auth_signature`: hex HMAC-SHA256, keyed with the app's secret, of
 *
 *       METHOD \n PATH \n QUERY
 *
 *   METHOD upper case; PATH the request's path exactly as sent (before `?`);
 *   QUERY every other query parameter, its key lower-cased, sorted by key
 *   (UTF-16 code-unit order, as the `pusher` SDKs sort), `key=value` joined
 *   by `&`, values as decoded from the URL and not encoded again.
 *
 * The signature is compared in constant time. A refusal quotes only what
 * the request itself carried (the string it should have signed, its own
 * signature), never the secret or the expected signature. A valid request
 * may be sent again while its timestamp is within the window (as Pusher:
 * there is no nonce); the window is the replay bound.
 */
import { createHmac, createSecretKey, hash, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { App } from '../apps/apps.ts';

export const AUTH_VERSION = '1.0';

/** Most query parameters one request may carry (the auth ones and a route's own: a handful). */
export const MAX_QUERY_PARAMS = 32;

/** The query parameters every signed request carries (body_md5 besides, with a body). */
export const AUTH_PARAMS = ['auth_key', 'auth_timestamp', 'auth_version', 'auth_signature'] as const;

/** Why a request's signing was refused: `bad_query` answers 400, every other 401. */
export interface SigningRefusal {
  readonly reason: 'bad_query' | 'missing' | 'key' | 'version' | 'timestamp' | 'body_md5' | 'signature';
  /** Pusher's wording, for the answer's body. */
  readonly message: string;
}

export interface SignedRequest {
  /** Upper case. */
  readonly method: string;
  /** The path exactly as sent (no query). */
  readonly path: string;
  /** The parsed query (parseQuery). */
  readonly params: ReadonlyMap<string, string>;
  /** The body's bytes; undefined or empty when there is none. */
  readonly body: Uint8Array | undefined;
}

/**
 * Parses a raw query string (after `?`): `+` is a space, percent-escapes
 * are decoded, keys lower-cased. A repeated key, a malformed escape or more
 * than MAX_QUERY_PARAMS parameters is a refusal.
 */
export function parseQuery(query: string): Map<string, string> | SigningRefusal {
  const params = new Map<string, string>();
  if (query === '') return params;
  const pieces = query.split('&');
  if (pieces.length > MAX_QUERY_PARAMS) return { reason: 'bad_query', message: `Too many query parameters (at most ${MAX_QUERY_PARAMS})` };
  for (const piece of pieces) {
    if (piece === '') continue;
    const eq = piece.indexOf('=');
    let key: string;
    let value: string;
    try {
      key = decode(eq === -1 ? piece : piece.slice(0, eq)).toLowerCase();
      value = eq === -1 ? '' : decode(piece.slice(eq + 1));
    } catch {
      return { reason: 'bad_query', message: 'The query string is not validly percent-encoded' };
    }
    if (params.has(key)) return { reason: 'bad_query', message: `Query parameter given twice: ${JSON.stringify(key.slice(0, 64))}` };
    params.set(key, value);
  }
  return params;
}

/** A query component: `+` is a space, then percent-escapes (throws on a malformed one). Most come plain. */
function decode(text: string): string {
  return text.includes('%') || text.includes('+') ? decodeURIComponent(text.replaceAll('+', ' ')) : text;
}

/** The string a request's signature covers. */
export function stringToSign(method: string, path: string, params: ReadonlyMap<string, string>): string {
  const keys = [...params.keys()].filter((key) => key !== 'auth_signature').sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return `${method}\n${path}\n${keys.map((key) => `${key}=${params.get(key)!}`).join('&')}`;
}

/** Each app's secret as a key object, made once (an app is frozen: a new secret is a new App). */
const keys = new WeakMap<App, KeyObject>();

/** Hex HMAC-SHA256 of `text` keyed with the app's secret. */
export function signString(app: App, text: string): string {
  let key = keys.get(app);
  if (key === undefined) {
    key = createSecretKey(Buffer.from(app.secret, 'utf8'));
    keys.set(app, key);
  }
  return createHmac('sha256', key).update(text, 'utf8').digest('hex');
}

const EMPTY_MD5 = hash('md5', '', 'hex');

const HEX_64 = /^[0-9a-f]{64}$/;
const HEX_32 = /^[0-9a-f]{32}$/;
const TIMESTAMP = /^\d{1,12}$/;

/** Compares two lower-case hex digests of the same length in constant time. */
function sameDigest(expected: string, given: string): boolean {
  return timingSafeEqual(Buffer.from(expected, 'hex'), Buffer.from(given, 'hex'));
}

/**
 * Checks a request's signing for `app` (found by the path's id). Undefined
 * when it holds; else why not. `nowMs` is the server's clock.
 */
export function verifySignedRequest(app: App, request: SignedRequest, nowMs: number, windowSeconds: number): SigningRefusal | undefined {
  const { params } = request;
  for (const name of AUTH_PARAMS) {
    if (!params.has(name)) return { reason: 'missing', message: `Missing parameter: ${name}` };
  }
  // Keys are public; the key of another app (or none) is refused as unknown here.
  if (params.get('auth_key') !== app.key) return { reason: 'key', message: 'Unknown auth_key' };
  if (params.get('auth_version') !== AUTH_VERSION) return { reason: 'version', message: `Version not supported: auth_version must be ${AUTH_VERSION}` };
  const timestamp = params.get('auth_timestamp')!;
  if (!TIMESTAMP.test(timestamp)) return { reason: 'timestamp', message: 'Invalid auth_timestamp: Unix seconds expected' };
  const now = Math.floor(nowMs / 1000);
  if (Math.abs(now - Number(timestamp)) > windowSeconds) {
    return { reason: 'timestamp', message: `Timestamp expired: Given timestamp (${timestamp}) not within ${windowSeconds}s of server time (${now})` };
  }
  const body = request.body;
  const given = params.get('body_md5')?.toLowerCase();
  if (body !== undefined && body.length > 0) {
    if (given === undefined) return { reason: 'missing', message: 'Missing parameter: body_md5 (the request has a body)' };
    const md5 = hash('md5', body, 'hex');
    if (!HEX_32.test(given) || !sameDigest(md5, given)) return { reason: 'body_md5', message: 'Invalid body_md5: the body does not match the MD5 that was signed' };
  } else if (given !== undefined && given !== EMPTY_MD5) {
    return { reason: 'body_md5', message: 'Invalid body_md5: the request has no body' };
  }
  const text = stringToSign(request.method, request.path, params);
  const signature = params.get('auth_signature')!.toLowerCase();
  if (!HEX_64.test(signature) || !sameDigest(signString(app, text), signature)) {
    return {
      reason: 'signature',
      message: `Invalid signature: you should have sent HmacSHA256Hex(${JSON.stringify(text)}, your_secret_key), but you sent ${JSON.stringify(signature.slice(0, 128))}`,
    };
  }
  return undefined;
}
