/**
 * CSRF defence of the console, two checks on every state-changing request
 * (anything but GET and HEAD, which never change state):
 * 1. `Origin` must be the console's own origin (`admin.console.origin`, or
 *    the request's scheme and Host; over plain HTTP only when Host names
 *    this machine's loopback or `admin.host`: a DNS-rebinding page cannot
 *    pass it, its Host is its own name; with TLS on the listener the
 *    certificate check stops such a page). A request without `Origin` is
 *    refused too.
 * 2. Header `x-csrf-token` must be a token of the session's CSRF secret
 *    (@fastify/csrf: salted HMAC tokens, compared in constant time). The
 *    secret is made with the session and dies with it, so a rotated
 *    session's old tokens fail.
 * The cookie's `SameSite=Strict` is a third, browser-side layer.
 */
import Tokens from '@fastify/csrf';
import type { IncomingHttpHeaders } from 'node:http';
import { isLoopbackHost } from './console-config.ts';

const tokens = Tokens({ secretLength: 32, saltLength: 16 });

export const CSRF_HEADER = 'x-csrf-token';

export function newCsrfSecret(): string {
  return tokens.secretSync();
}

export function csrfToken(secret: string): string {
  return tokens.create(secret);
}

export function csrfValid(secret: string, token: unknown): boolean {
  if (typeof token !== 'string' || token.length === 0 || token.length > 256) return false;
  try {
    return tokens.verify(secret, token);
  } catch {
    return false;
  }
}

export interface OriginRule {
  /** `admin.console.origin`, exact. */
  readonly origin: string | undefined;
  /** Whether the internal listener itself serves TLS. */
  readonly tls: boolean;
  /** `admin.host`. */
  readonly adminHost: string;
}

/** The console's origin for this request, or undefined when the request's Host may not be the console. */
export function consoleOrigin(rule: OriginRule, headers: IncomingHttpHeaders): string | undefined {
  if (rule.origin !== undefined) return rule.origin;
  const host = headers.host;
  if (host === undefined || host.length > 300) return undefined;
  const name = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::[0-9]{1,5})?$/.exec(host)?.[1];
  if (name === undefined) return undefined;
  // Over plain HTTP only this machine's names: a DNS-rebinding page brings its own Host. With TLS on the
  // listener any name passes here: such a page fails the browser's certificate check first.
  if (!rule.tls && !isLoopbackHost(name) && name.replace(/^\[|\]$/g, '') !== rule.adminHost) return undefined;
  return `${rule.tls ? 'https' : 'http'}://${host.toLowerCase()}`;
}

/** Whether the request's `Origin` is the console's own. */
export function sameOrigin(rule: OriginRule, headers: IncomingHttpHeaders): boolean {
  const origin = headers.origin;
  if (origin === undefined) return false;
  const own = consoleOrigin(rule, headers);
  return own !== undefined && origin.toLowerCase() === own.toLowerCase();
}
