/**
 * The edge: what every request and new connection passes before it reaches
 * a handler. It owns the origin allowlist, the client address (with trusted
 * proxies), the connection caps and the token cookie, and implements the
 * transports' ConnectionGate. Rules, in order, for a new connection
 * (WebSocket upgrade, SSE GET, long-poll open):
 *
 * 1. `Origin` present and not allowed (origins.ts) → 403 `origin_not_allowed`.
 * 2. `limits.maxConnections` held on this node → 503 `unavailable`.
 * 3. More than `limits.newConnectionsPerIpPerSecond` attempts from the
 *    client IP in this second → 429 `too_many_requests` with `Retry-After`.
 * 4. `limits.maxConnectionsPerIp` open from the client IP → 429 `connection_limit`.
 *
 * Rules 3 and 4 count on this node, or in Redis across every node with
 * `limits.scope: "cluster"` (connection-limits.ts); then `open` answers a
 * promise.
 *
 * On an app's native paths (`/apps/{id}/connection/…`, an app other than
 * the default one: transports/app-paths.ts) rule 1 judges by the app's
 * `allowedOrigins` when it has them (origins.ts), and after rule 4:
 * 4a. the app's `limits.maxConnections` held on this node, its Pusher
 *     sockets and native connections together (`appConnections`) → 503
 *     `unavailable` with `Retry-After`.
 * 5. After `connect`: more than `limits.maxConnectionsPerUser` connections
 *    of that user → WebSocket closed with 3506 before the connect reply;
 *    SSE and long polling answered 429 `connection_limit`.
 *
 * The token cookie (`auth.cookieName`) is a credential only when the request
 * carries an allowed `Origin`; without `Origin` it is ignored, so a request
 * that only has the cookie connects anonymously (and is refused where
 * anonymous access is off). Tokens in the protocol (`connect`, `?token=`,
 * `Authorization: Bearer`, the long-poll body) win over the cookie.
 */
import type { IncomingMessage } from 'node:http';
import { parseCookie } from 'cookie';
import type { Config } from '../config/schema.ts';
import type { Client } from '../core/client.ts';
import type { ConnectionGate, GateAnswer, Releasable } from '../transports/http-connection.ts';
import { createClientAddress, limitKey, type ClientAddress } from './client-address.ts';
import { AppConnectionCounts, ConnectionLimiter, type Place, type Refusal } from './connection-limits.ts';
import type { AppScope } from '../transports/app-paths.ts';
import { OriginPolicy, type OriginVerdict } from './origins.ts';

/** Longest cookie value taken as a token (a JWT is far shorter). */
const MAX_COOKIE_TOKEN = 8192;

export class Edge implements ConnectionGate {
  readonly origins: OriginPolicy;
  readonly address: ClientAddress;
  readonly connections: ConnectionLimiter;
  /** Each app's connections on this node (Pusher and native), against its limits.maxConnections. */
  readonly appConnections = new AppConnectionCounts();
  readonly #cookieName: string | undefined;
  readonly #maxPerUser: number;

  /** Throws TypeError for an origin or proxy entry that does not parse. */
  constructor(config: Config, now: () => number = Date.now) {
    this.origins = new OriginPolicy(config.cors.origins);
    this.address = createClientAddress(config.http.trustedProxies);
    this.connections = new ConnectionLimiter(config.limits, now);
    this.#cookieName = config.auth.cookieName;
    this.#maxPerUser = config.limits.maxConnectionsPerUser;
  }

  open(request: IncomingMessage, scope?: AppScope): GateAnswer | Promise<GateAnswer> {
    const origin = this.origins.check(request.headers.origin, request.headers.host, scope?.app);
    if (origin === 'refused') return { refused: 'origin_not_allowed' };
    const ip = this.address.ip(request);
    const place = this.connections.admit(limitKey(ip));
    // A promise only when the limits are cluster-wide (counted in Redis).
    if (place instanceof Promise) return place.then((settled) => this.#answer(request, origin, settled, ip, scope));
    return this.#answer(request, origin, place, ip, scope);
  }

  #answer(request: IncomingMessage, origin: OriginVerdict, place: Place | Refusal, ip: string, scope: AppScope | undefined): GateAnswer {
    if ('refused' in place) return place;
    let held: Place | Releasable = place;
    if (scope !== undefined) {
      // The app as it is now: a changed cap applies to the next connection.
      const appPlace = this.appConnections.admit(scope.app, 'native', place);
      if (appPlace === undefined) {
        place.release();
        return { refused: 'unavailable', retryAfterSeconds: 1 };
      }
      held = appPlace;
    }
    return {
      fallbackToken: origin === 'allowed' || (origin === 'absent' && sameOriginFetch(request)) ? this.cookieToken(request) : undefined,
      place: held,
      address: ip,
    };
  }

  admitUser(client: Client): boolean {
    if (client.user === '') return true;
    // This node's count now, other nodes' as of their last snapshot.
    return client.node.userConnectionCount(client.userKey) <= this.#maxPerUser;
  }

  /** The token cookie's value, when a cookie name is configured and the request has it. */
  cookieToken(request: IncomingMessage): string | undefined {
    const name = this.#cookieName;
    const header = request.headers.cookie;
    if (name === undefined || header === undefined) return undefined;
    const value = parseCookie(header)[name];
    return value === undefined || value === '' || value.length > MAX_COOKIE_TOKEN ? undefined : value;
  }
}

/**
 * Browsers send no Origin on a same-origin GET (an EventSource on the page's
 * own origin), but they do send `Sec-Fetch-Site`, which scripts cannot set:
 * `same-origin` there is as good as an allowed Origin for the cookie.
 */
function sameOriginFetch(request: IncomingMessage): boolean {
  return request.headers['sec-fetch-site'] === 'same-origin';
}
