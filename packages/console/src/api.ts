/**
 * The console's one way to reach Herald: `fetch` against the console API
 * under the base path the page was served from (`/console/` → `/console/api/…`),
 * same origin, the session cookie sent by the browser. Every state change
 * (any method but GET) carries the session's CSRF token in `x-csrf-token`.
 * A 401 ends the session in the page (the login view shows); errors come
 * back as {@link ApiFailure} with the server's registered code.
 */
import { session, sessionEnded } from './state.ts';

/** The base path: the directory of the page, without its trailing slash (`/console`, or `` at the root). */
export const basePath = location.pathname.replace(/\/[^/]*$/, '');

export function apiUrl(path: string, query?: Record<string, string | number | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) if (value !== undefined && value !== '') search.set(key, String(value));
  const text = search.toString();
  return `${basePath}/api/${path}${text === '' ? '' : `?${text}`}`;
}

/** A failed console API call: the HTTP status and the error registry's code. */
export class ApiFailure extends Error {
  readonly status: number;
  readonly code: string;
  /** What in the request was wrong, when the server said (the field and why). */
  readonly detail: string | undefined;
  constructor(status: number, code: string, message: string, detail?: string) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

export interface CallOptions {
  readonly method?: 'GET' | 'POST' | 'PATCH' | 'DELETE';
  readonly body?: unknown;
  readonly query?: Record<string, string | number | undefined>;
  /** The login and session probes: a 401 there is an answer, not the end of a session. */
  readonly quiet401?: boolean;
}

/** When the page last reached the console API (ms): the idle clock of the session runs from there. */
export let lastActivity = Date.now();

export async function call<T>(path: string, options: CallOptions = {}): Promise<T> {
  lastActivity = Date.now();
  const method = options.method ?? 'GET';
  const headers: Record<string, string> = { accept: 'application/json' };
  let body: string | undefined;
  if (method !== 'GET') {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(options.body ?? {});
    const csrf = session.value?.csrf;
    if (csrf !== undefined) headers['x-csrf-token'] = csrf;
  }
  let response: Response;
  try {
    response = await fetch(apiUrl(path, options.query), { method, headers, body, credentials: 'same-origin', cache: 'no-store' });
  } catch {
    throw new ApiFailure(0, 'network', 'Herald cannot be reached');
  }
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (response.ok) return parsed as T;
  const error = (parsed as { error?: { code?: string; message?: string; detail?: unknown } } | undefined)?.error;
  const failure = new ApiFailure(response.status, error?.code ?? `http_${response.status}`, error?.message ?? response.statusText, typeof error?.detail === 'string' ? error.detail : undefined);
  if (response.status === 401 && options.quiet401 !== true) sessionEnded('Your session has ended. Sign in again.');
  throw failure;
}

/** A message for people: what failed, in words, with the code for reports. */
export function describeFailure(error: unknown): string {
  if (!(error instanceof ApiFailure)) return 'Something went wrong.';
  switch (error.code) {
    case 'forbidden':
      return 'Your role does not allow this.';
    case 'csrf_failed':
      return 'The request was refused (CSRF check). Reload the page.';
    case 'not_found':
      return 'Not found.';
    case 'mfa_failed':
      return 'The code is wrong, expired or was already used. Wait for the next code and try again.';
    case 'login_locked':
      return 'Too many failed attempts. Wait a while, or ask an owner to unlock the account.';
    case 'network':
      return error.message;
    default:
      return `${error.message} (${error.code})`;
  }
}
