/**
 * Test helpers for the Pusher HTTP API: a Herald with apps (secrets in
 * files of their own, read at start), the official `pusher` server SDK
 * pointed at it, and raw requests signed by the SDK's own signer
 * (`pusher/lib/requests.js`), for what the SDK never sends (tampered
 * bodies, stale timestamps, another app's key).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Pusher from 'pusher';
import { startHerald, type TestHerald } from './herald.ts';

export interface ApiApp {
  readonly id: string;
  readonly key: string;
  readonly secret: string;
  readonly [option: string]: unknown;
}

/** An app with a random key and secret; `options` go to its apps.list entry. */
export function apiApp(id: string, options: Record<string, unknown> = {}): ApiApp {
  return { id, key: `key-${id}-${randomBytes(4).toString('hex')}`, secret: randomBytes(16).toString('hex'), ...options };
}

/** A Herald with these apps; the first is the default app (its channels are the native protocol's). */
export async function startApiHerald(apps: readonly ApiApp[], overrides: Record<string, any> = {}): Promise<TestHerald> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-pusher-api-secrets-'));
  const list = apps.map((app) => {
    const { secret, ...entry } = app;
    const secretFile = join(dir, `${app.id}.secret`);
    writeFileSync(secretFile, secret, { mode: 0o600 });
    return { ...entry, secretFile };
  });
  try {
    return await startHerald({ ...overrides, apps: { default: apps[0]?.id, list } });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The official server SDK for `app`, pointed at the test server. */
export function sdk(herald: TestHerald, app: Pick<ApiApp, 'id' | 'key' | 'secret'>): Pusher {
  return new Pusher({ appId: app.id, key: app.key, secret: app.secret, host: '127.0.0.1', port: String(herald.server.port), useTLS: false });
}

interface SdkRequests {
  createSignedQueryString(token: { key: string; sign(text: string): string }, request: { method: string; path: string; params?: Record<string, unknown>; body?: string }): string;
}
const requests = createRequire(import.meta.url)('pusher/lib/requests.js') as SdkRequests;
interface SdkToken {
  new (key: string, secret: string): { key: string; sign(text: string): string };
}
const Token = createRequire(import.meta.url)('pusher/lib/token.js') as SdkToken;

/** The query string the SDK signs for a request (auth_key, auth_timestamp, auth_version, body_md5, auth_signature and `params`). */
export function signedQuery(app: Pick<ApiApp, 'key' | 'secret'>, method: string, path: string, options: { params?: Record<string, unknown>; body?: string } = {}): string {
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
  app: Pick<ApiApp, 'key' | 'secret'>,
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
