/**
 * The client's IP address: the socket's peer address, or the nearest
 * untrusted hop of `X-Forwarded-For` when the peer is one of
 * `http.trustedProxies` (addresses, CIDRs, or proxy-addr's names
 * `loopback`, `linklocal`, `uniquelocal`). The same function serves fastify
 * (its `trustProxy`) and the WebSocket upgrade, so both agree.
 */
import type { IncomingMessage } from 'node:http';
import { createRequire } from 'node:module';
import proxyaddr from 'proxy-addr';

export interface ClientAddress {
  /** For fastify's `trustProxy`: is the hop at `address` a trusted proxy? */
  readonly trust: (address: string, hop: number) => boolean;
  /** The client address of a request, as the limits see it. */
  ip(request: IncomingMessage): string;
}

export function createClientAddress(trustedProxies: readonly string[]): ClientAddress {
  let trust: (address: string, hop: number) => boolean;
  try {
    trust = proxyaddr.compile([...trustedProxies]);
  } catch (error) {
    throw new TypeError(`http.trustedProxies: ${(error as Error).message}`, { cause: error });
  }
  // Without trusted proxies the answer is the peer address: no header to parse per connection.
  const ip =
    trustedProxies.length === 0
      ? (request: IncomingMessage): string => request.socket.remoteAddress ?? ''
      : (request: IncomingMessage): string => proxyaddr(request, trust) ?? request.socket.remoteAddress ?? '';
  return { trust, ip };
}

/**
 * The key under which per-IP limits count a client: the address itself, an
 * IPv4-mapped IPv6 address as IPv4, and other IPv6 addresses by their /64
 * (one host usually owns a whole /64). The same grouping as the HTTP API
 * rate limit (@fastify/rate-limit).
 */
export function limitKey(ip: string): string {
  if (ip === '') return 'unknown';
  // Not IPv6 (every IPv6 form has a colon): normalizeIP lower-cases it, without its IPv6 pattern (a large regex, per connection).
  if (!ip.includes(':')) return ip.toLowerCase();
  return normalizeIPv6(ip);
}

const require = createRequire(import.meta.url);
let normalizeIP: typeof import('@fastify/rate-limit').normalizeIP | undefined;

/**
 * @fastify/rate-limit's `normalizeIP` (IPv6 by its /64, an IPv4-mapped
 * address as IPv4) for an address with a colon. The plugin's index, with
 * the `ip-address` package it parses IPv6 with, loads at the first IPv6
 * peer: 0.4 MiB of heap that a server reached over IPv4 only does not
 * keep (docs/performance.md, "Footprint, sixth pass").
 */
export function normalizeIPv6(ip: string): string {
  normalizeIP ??= (require('@fastify/rate-limit') as typeof import('@fastify/rate-limit')).normalizeIP;
  return normalizeIP(ip);
}
