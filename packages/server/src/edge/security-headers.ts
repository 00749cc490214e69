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
 * headers after the hook. The server API's answers carry a shorter set
 * (`apiSecurityHeaders`).
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

/** Whether `url` (a request's, with its query) is the server API's: its answers carry `apiSecurityHeaders`. */
export function isApiPath(url: string): boolean {
  return url.startsWith('/api/');
}

/**
 * Sets the security headers on every answer of `app`, hijacked ones (SSE)
 * included: they copy the reply's headers. The server API's answers get
 * `apiSecurityHeaders`, every other answer the page set.
 */
export function useSecurityHeaders(app: FastifyInstance, tls: boolean): void {
  const headers = securityHeaders(tls);
  const api = apiSecurityHeaders(tls);
  app.addHook('onRequest', (request, reply, done) => {
    reply.headers(isApiPath(request.url) ? api : headers);
    done();
  });
}
