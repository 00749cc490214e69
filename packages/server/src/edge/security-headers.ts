/**
 * Security headers for every HTTP response (helmet): a strict
 * Content-Security-Policy (same-origin scripts, styles and connections only,
 * no framing, no inline code), `X-Content-Type-Options: nosniff`,
 * `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`, cross-origin
 * isolation headers, and `Strict-Transport-Security` only when Herald itself
 * serves TLS.
 *
 * The values are helmet's own, computed once at start-up by running
 * helmet's middleware against a recorder: the headers are the same on every
 * answer, so neither the middleware chain nor the CSP directives need
 * building per request (as @fastify/helmet did, about a tenth of the
 * publish path's CPU). A page that needs another policy sets its own
 * headers after the hook. The server API's answers and the transports'
 * carry shorter sets (`apiSecurityHeaders`, `transportSecurityHeaders`).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance } from 'fastify';
import helmet, { type HelmetOptions } from 'helmet';

export const contentSecurityPolicy = {
  defaultSrc: ["'none'"],
  scriptSrc: ["'self'"],
  styleSrc: ["'self'"],
  imgSrc: ["'self'", 'data:'],
  fontSrc: ["'self'"],
  connectSrc: ["'self'"],
  manifestSrc: ["'self'"],
  baseUri: ["'none'"],
  formAction: ["'none'"],
  frameAncestors: ["'none'"],
  objectSrc: ["'none'"],
};

export function helmetOptions(tls: boolean): HelmetOptions {
  return {
    contentSecurityPolicy: { useDefaults: false, directives: contentSecurityPolicy },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
    strictTransportSecurity: tls ? { maxAge: 31536000, includeSubDomains: false } : false,
    crossOriginResourcePolicy: { policy: 'same-origin' },
    crossOriginOpenerPolicy: { policy: 'same-origin' },
  };
}

/** The headers helmet sets with these options, by lower-case name. */
export function securityHeaders(tls: boolean): Readonly<Record<string, string>> {
  const headers: Record<string, string> = {};
  const recorder = {
    setHeader(name: string, value: string | number | readonly string[]) {
      headers[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : String(value);
    },
    removeHeader(name: string) {
      delete headers[name.toLowerCase()];
    },
  };
  let failure: unknown;
  helmet(helmetOptions(tls))({} as IncomingMessage, recorder as unknown as ServerResponse, (error?: unknown) => {
    failure = error;
  });
  if (failure !== undefined) throw failure instanceof Error ? failure : new Error(String(failure));
  return Object.freeze(headers);
}

/** The CSP of the server API's answers: nothing may load, nothing may frame them. */
export const apiContentSecurityPolicy = "default-src 'none'; frame-ancestors 'none'";

/**
 * The security headers of the server API's answers (paths under `/api/`,
 * `isApiPath`), by lower-case name. An API answer is JSON to a POST, never a
 * page nor a subresource, so it carries what OWASP's REST Security Cheat
 * Sheet asks of every API response: framing refused (CSP
 * `frame-ancestors 'none'` and `X-Frame-Options: DENY`), `nosniff`, HSTS
 * with TLS; plus, in case a browser ever shows one, `default-src 'none'` and
 * `Referrer-Policy: no-referrer`. The headers that protect pages and their
 * subresources (cross-origin isolation, `Origin-Agent-Cluster`, the legacy
 * DNS-prefetch, download and cross-domain-policy switches) are left out:
 * each costs every answer its validation and its bytes. POST answers are not
 * stored by caches without explicit freshness, so no `Cache-Control`.
 */
export function apiSecurityHeaders(tls: boolean): Readonly<Record<string, string>> {
  const page = securityHeaders(tls);
  const headers: Record<string, string> = { 'content-security-policy': apiContentSecurityPolicy };
  for (const name of ['x-content-type-options', 'x-frame-options', 'referrer-policy', 'strict-transport-security']) {
    const value = page[name];
    if (value !== undefined) headers[name] = value;
  }
  return Object.freeze(headers);
}

/**
 * The CSP of the transports' answers: no framing. Nothing else: such an
 * answer is never a document that loads anything (see
 * `transportSecurityHeaders`).
 */
export const transportContentSecurityPolicy = "frame-ancestors 'none'";

/**
 * The security headers of the transports' HTTP answers (`isTransportPath`:
 * `/connection/…` and `/apps/{id}/connection/…`), by lower-case name: the
 * SSE stream's opening (`text/event-stream`), the long-poll open and poll
 * answers, the commands and close, and every error these routes answer
 * (JSON: the front's, fastify's 404/405, an origin refused). None of them
 * is a page: they are read by `EventSource`, `fetch` or `XMLHttpRequest`,
 * in CORS mode, and their content types are fixed. OWASP's REST Security
 * Cheat Sheet asks of every API response:
 *
 * - `X-Content-Type-Options: nosniff`, kept: the body carries what
 *   publishers and clients wrote (publication data, channel names); a
 *   browser that sniffed a JSON answer or an event stream loaded as a
 *   document, a script or a style could run it as HTML or script. With
 *   `nosniff` and the fixed type it is never rendered as HTML, and a
 *   cross-origin `<script>`/`<link>` load of it is refused (and, for JSON,
 *   withheld from the page by CORB/ORB).
 * - Framing refused, kept: `Content-Security-Policy: frame-ancestors
 *   'none'` (the standard; browsers honour it over the next one) and
 *   `X-Frame-Options: DENY` (for browsers without CSP level 2). A GET of
 *   the SSE route, or a form POST to a poll route, can be navigated to in
 *   a frame of any site; refused, its text cannot be shown under another
 *   page's controls (drag-and-drop clickjacking).
 * - `Strict-Transport-Security` with TLS, kept: browsers take it from any
 *   answer over TLS, an `EventSource`'s or a `fetch`'s too, so a page that
 *   only ever talks to Herald through a transport still learns it.
 * - `Cache-Control: no-store`: the SSE opening sets it itself (sse.ts);
 *   POST answers are not stored without explicit freshness.
 *
 * Left out, each with what it protects:
 *
 * - the rest of the page CSP (`default-src 'none'`, script, style, image
 *   sources, `base-uri`, `form-action`): they govern what a document loads
 *   and runs; with `nosniff` and a JSON or event-stream type the answer
 *   never becomes a document that loads or runs anything;
 * - `Cross-Origin-Resource-Policy: same-origin`: it withholds an answer
 *   from a cross-origin no-cors load (`<img>`, `<script>`); the clients
 *   read in CORS mode, where it does not apply, and a no-cors GET carries
 *   no `Origin`, without which the token cookie is no credential
 *   (edge.ts), so such a load only gets what an anonymous client gets;
 * - `Referrer-Policy`, `Cross-Origin-Opener-Policy`,
 *   `Origin-Agent-Cluster`, `X-DNS-Prefetch-Control`, `X-XSS-Protection`:
 *   properties of a document (its links and subresources, its window, its
 *   agent cluster, its scripts), of which these answers have none;
 * - `X-Download-Options`, `X-Permitted-Cross-Domain-Policies`: Internet
 *   Explorer's downloads and Flash/PDF policy files.
 *
 * The WebSocket upgrade's answers are not HTTP bodies a browser reads: the
 * 101 switches the connection to WebSocket frames and carries only the
 * handshake's headers (written by ws, or by transports/websocket.ts as ws
 * writes it; a browser navigates or frames with a GET that never carries
 * `Upgrade`, so it never gets one), and a refusal of an upgrade is JSON
 * with `nosniff` and `Cache-Control: no-store` (transports/websocket.ts),
 * which the `WebSocket` API never exposes.
 */
export function transportSecurityHeaders(tls: boolean): Readonly<Record<string, string>> {
  const page = securityHeaders(tls);
  const headers: Record<string, string> = { 'content-security-policy': transportContentSecurityPolicy };
  for (const name of ['x-content-type-options', 'x-frame-options', 'strict-transport-security']) {
    const value = page[name];
    if (value !== undefined) headers[name] = value;
  }
  return Object.freeze(headers);
}

/** The three sets, made once at start: pages (and everything else), the server API's, the transports'. */
export interface SecurityHeaderSets {
  readonly page: Readonly<Record<string, string>>;
  readonly api: Readonly<Record<string, string>>;
  readonly transport: Readonly<Record<string, string>>;
}

export function securityHeaderSets(tls: boolean): SecurityHeaderSets {
  return { page: securityHeaders(tls), api: apiSecurityHeaders(tls), transport: transportSecurityHeaders(tls) };
}

/** Whether `url` (a request's, with its query) is the server API's: its answers carry `apiSecurityHeaders`. */
export function isApiPath(url: string): boolean {
  return url.startsWith('/api/');
}

const TRANSPORT_PREFIX = '/connection/';
const APPS_PREFIX = '/apps/';

/**
 * Whether `url` (a request's, with its query) is a transport's:
 * `/connection/…` or `/apps/{id}/connection/…` (transports/app-paths.ts);
 * its answers carry `transportSecurityHeaders`. A path fastify decodes to a
 * transport route (`/%63onnection/sse`) keeps the page set, a superset.
 */
export function isTransportPath(url: string): boolean {
  if (url.startsWith(TRANSPORT_PREFIX)) return true;
  if (!url.startsWith(APPS_PREFIX)) return false;
  const slash = url.indexOf('/', APPS_PREFIX.length);
  return slash > APPS_PREFIX.length && url.startsWith(TRANSPORT_PREFIX, slash);
}

/** The set of the answers to `url`: the API's, the transports', else the page set. */
export function securityHeadersFor(sets: SecurityHeaderSets, url: string): Readonly<Record<string, string>> {
  return isApiPath(url) ? sets.api : isTransportPath(url) ? sets.transport : sets.page;
}

/**
 * Sets the security headers on every answer of `app`, hijacked ones (SSE)
 * included: they copy the reply's headers. The server API's answers get
 * `apiSecurityHeaders`, the transports' `transportSecurityHeaders`, every
 * other answer the page set.
 */
export function useSecurityHeaders(app: FastifyInstance, tls: boolean): void {
  const sets = securityHeaderSets(tls);
  app.addHook('onRequest', (request, reply, done) => {
    reply.headers(securityHeadersFor(sets, request.url));
    done();
  });
}
