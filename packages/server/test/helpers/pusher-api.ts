/**
 * Test helpers for the Pusher HTTP API, beside pusher-socket.ts (a Herald
 * with apps, the `pusher` SDK, pusher-js): raw requests signed by the SDK's
 * own signer (`pusher/lib/requests.js`), for what the SDK never sends
 * (tampered bodies, stale timestamps, another app's key), and the SDK's
 * failures as status and body.
 */
import { createRequire } from 'node:module';
import type { TestHerald } from './herald.ts';

/** The app fields a request is signed with. */
type Signer = { readonly key: string; readonly secret: string };

interface SdkRequests {
  createSignedQueryString(token: { key: string; sign(text: string): string }, request: { method: string; path: string; params?: Record<string, unknown>; body?: string }): string;
}
const requests = createRequire(import.meta.url)('pusher/lib/requests.js') as SdkRequests;
interface SdkToken {
  new (key: string, secret: string): { key: string; sign(text: string): string };
}
const Token = createRequire(import.meta.url)('pusher/lib/token.js') as SdkToken;

/** The query string the SDK signs for a request (auth_key, auth_timestamp, auth_version, body_md5, auth_signature and `params`). */
export function signedQuery(app: Signer, method: string, path: string, options: { params?: Record<string, unknown>; body?: string } = {}): string {
  return requests.createSignedQueryString(new Token(app.key, app.secret), { method, path, params: options.params, body: options.body });
}

export interface RawAnswer {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  /** The body parsed as JSON, when it is. */
  readonly json: any;
}

/** Sends a request as given (query and body untouched). */
export async function rawRequest(herald: TestHerald, method: string, pathAndQuery: string, body?: string, headers: Record<string, string> = {}): Promise<RawAnswer> {
  const response = await fetch(`${herald.url}${pathAndQuery}`, {
    method,
    body,
    headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers },
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** A request signed as the SDK signs it, sent unchanged. */
export function signedRequest(
  herald: TestHerald,
  app: Signer,
  method: string,
  path: string,
  options: { params?: Record<string, unknown>; body?: unknown } = {},
): Promise<RawAnswer> {
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  return rawRequest(herald, method, `${path}?${signedQuery(app, method, path, { params: options.params, body })}`, body);
}

/** The body of a `pusher` SDK RequestError (the server's answer), or rethrows anything else. */
export async function sdkFailure(call: Promise<unknown>): Promise<{ status: number; body: string }> {
  try {
    await call;
  } catch (error) {
    const failure = error as { status?: number; body?: string };
    if (typeof failure.status === 'number') return { status: failure.status, body: failure.body ?? '' };
    throw error;
  }
  throw new Error('the request succeeded');
}
