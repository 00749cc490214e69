/**
 * The origin allowlist. One rule for every entry point (HTTP API, SSE, long
 * polling, commands, the WebSocket upgrade):
 *
 * - no `Origin` header: not a browser's cross-origin request; allowed, but a
 *   cookie is never taken as a credential then (see cookie-token.ts);
 * - an `Origin` exactly equal (after normalizing the configured entries to
 *   `scheme://host[:port]`, lower case, default port dropped) to an entry of
 *   `cors.origins`: allowed;
 * - an `Origin` whose `host[:port]` is the request's own `Host` (a page
 *   served from Herald's own origin, as browsers always send `Origin` on
 *   WebSocket and POST): allowed;
 * - anything else, including `null`, look-alikes, suffix or prefix matches,
 *   other schemes or ports, several values: refused (403) before any handler.
 *
 * An app with its own `allowedOrigins` (apps/apps.ts) replaces that rule on
 * its own entry points (its Pusher socket, its native paths
 * `/apps/{id}/connection/…`): an `Origin` is allowed when it matches one of
 * the app's entries (originMatches), and only then; `cors.origins` and the
 * request's own host do not add to it. An app without `allowedOrigins`
 * follows the server's rule.
 */

export type OriginVerdict = 'absent' | 'allowed' | 'refused';

/** What the policy reads of an app (apps/apps.ts `App`). */
export interface OriginScope {
  /** Undefined: the server's rule. */
  readonly allowedOrigins: readonly string[] | undefined;
}

export class OriginPolicy {
  readonly #allowed: ReadonlySet<string>;

  constructor(origins: readonly string[]) {
    const allowed = new Set<string>();
    for (const entry of origins) {
      const normalized = normalizeOrigin(entry);
      if (normalized === undefined) throw new TypeError(`cors.origins: "${entry}" is not an origin (scheme://host[:port])`);
      allowed.add(normalized);
    }
    this.#allowed = allowed;
  }

  /** Judges one request from its `Origin` and `Host` headers, for `app`'s entry points when given. */
  check(origin: string | string[] | undefined, host: string | undefined, app?: OriginScope): OriginVerdict {
    if (origin === undefined) return 'absent';
    if (typeof origin !== 'string') return 'refused';
    const own = app?.allowedOrigins;
    if (own !== undefined) return originMatches(origin, own) ? 'allowed' : 'refused';
    if (this.#allowed.has(origin)) return 'allowed';
    return host !== undefined && sameHost(origin, host) ? 'allowed' : 'refused';
  }
}

/** `scheme://host[:port]` in the form browsers send, or undefined. */
function normalizeOrigin(value: string): string | undefined {
  if (!URL.canParse(value)) return undefined;
  const url = new URL(value);
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username !== '' || url.password !== '') return undefined;
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') return undefined;
  return url.origin;
}

/** True when an http(s) origin names the host the request was sent to. */
function sameHost(origin: string, host: string): boolean {
  if (origin.length > 300 || !(origin.startsWith('http://') || origin.startsWith('https://'))) return false;
  // The Origin header is serialized by the browser: exactly scheme://host[:port].
  const normalized = normalizeOrigin(origin);
  if (normalized !== origin) return false;
  return new URL(origin).host === host.toLowerCase();
}

/**
 * Whether an `Origin` is one of an app's allowed origins: an exact origin,
 * a `*.example.com` or `https://*.example.com` pattern (subdomains only, not
 * the bare domain), or `*`.
 */
function originMatches(origin: string, patterns: readonly string[]): boolean {
  if (!URL.canParse(origin)) return false;
  const url = new URL(origin);
  const host = url.host.toLowerCase();
  for (const raw of patterns) {
    const pattern = raw.toLowerCase().replace(/\/+$/, '');
    if (pattern === '*' || pattern === origin.toLowerCase()) return true;
    const star = pattern.indexOf('*.');
    if (star < 0) continue;
    const scheme = pattern.slice(0, star);
    if (scheme !== '' && scheme !== `${url.protocol}//`) continue;
    const suffix = pattern.slice(star + 1);
    if (host.endsWith(suffix) && host.length > suffix.length) return true;
  }
  return false;
}
