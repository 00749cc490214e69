/**
 * Hooks: the closed list of points where the application decides instead of
 * Herald (docs/hooks.md). The core asks a `Hooks` implementation at five
 * points and nowhere else:
 *
 * | event       | asked by                                   | when                                                      |
 * |-------------|--------------------------------------------|-----------------------------------------------------------|
 * | `connect`   | core/client.ts `connect`                   | after a valid token, or instead of one (`withoutToken`)   |
 * | `refresh`   | core/client.ts, at the connection's expiry | instead of the `refresh` push to the client               |
 * | `subscribe` | core/client.ts `#prepare`                  | after the name, anonymous and private-token checks        |
 * | `publish`   | core/node.ts `clientPublish`               | client publishes only (the server API is trusted)         |
 * | `rpc`       | core/node.ts `clientRpc`                   | every `rpc` command                                       |
 *
 * Disconnects are not a hook: they are reported by webhook.
 *
 * Guarantees every implementation gives (the HTTP proxy now in
 * proxy-hooks.ts, a JavaScript sandbox later):
 * - One decision per event: each method resolves exactly once and never
 *   rejects. Whatever goes wrong (timeout, backend down, an answer that
 *   breaks the schema, the in-flight bound) resolves as `unavailable`, with
 *   the hook's failure policy in `failOpen`; what open means per event is
 *   the core's (see each decision type).
 * - Values cross the boundary as JSON: requests are plain data, decisions
 *   are validated copies (size and depth bounded), never live objects of
 *   the other side.
 * - `has` and `capture` are synchronous and cheap: the core asks them on its
 *   paths, so that nothing is paid when no hook is configured.
 * - The implementation owns its budgets (timeouts, calls in flight); the
 *   core never waits on a hook longer than the hook's timeout.
 */
import type { IncomingHttpHeaders } from 'node:http';

export type HookEvent = 'connect' | 'refresh' | 'subscribe' | 'publish' | 'rpc';

/** Events that can be configured per namespace (the channel's, or an rpc method's `ns:` prefix). */
export type NamespacedHookEvent = 'subscribe' | 'publish' | 'rpc';

/**
 * Headers and cookies of the connection's opening request (WebSocket
 * upgrade, SSE GET, long-poll open), captured once: only names some hook's
 * allowlist holds. Each hook is given only the names of its own allowlist.
 */
export interface ForwardedRequest {
  readonly headers: Readonly<Record<string, string>>;
  readonly cookies: Readonly<Record<string, string>>;
}

/** The connection an event comes from, as every hook sees it. */
export interface HookConnection {
  /** The connection id (`client` in the protocol). */
  readonly client: string;
  /** The user id; '' for anonymous (and, at `connect` without a token, not known yet). */
  readonly user: string;
  readonly transport: 'websocket' | 'sse' | 'long_poll';
  /** The client's address (trusted proxies honoured); '' when unknown. */
  readonly address: string;
  /** `conn_info` of the connection (from the token or the connect hook), when it has one. */
  readonly connInfo?: unknown;
  readonly forwarded: ForwardedRequest | undefined;
  /**
   * The app of a connection opened on an app's paths (`/apps/{id}/connection/…`,
   * other than the default app's); absent on the server's own paths. The
   * channels of its events are the app's own names (`orders`, never the
   * server-internal `~{id}~orders`).
   */
  readonly app?: string;
}

export interface ConnectHookRequest extends HookConnection {
  /** The client's `name` param, when given. */
  readonly name?: string | undefined;
  /** True when the connection presented a token (then `user` is its `sub`). */
  readonly tokenPresent: boolean;
}

export interface SubscribeHookRequest extends HookConnection {
  readonly channel: string;
  readonly namespace: string;
}

export interface PublishHookRequest extends HookConnection {
  readonly channel: string;
  readonly namespace: string;
  /** The publication's data as the client sent it. */
  readonly data: unknown;
}

export interface RpcHookRequest extends HookConnection {
  readonly method: string;
  readonly data: unknown;
}

/** Refused by the application: `code` and `message` go to the client (ranges per event, docs/hooks.md). */
export interface HookDenial {
  readonly outcome: 'deny';
  readonly code: number;
  readonly message: string;
}

/** The call failed; `failOpen` is the hook's policy (config `failure`). */
export interface HookUnavailable {
  readonly outcome: 'unavailable';
  readonly failOpen: boolean;
}

/**
 * Open: the connection goes on as if there were no hook (with its token's
 * identity; without a token only where anonymous access is allowed).
 * Closed: it is refused (3011 on WebSocket, 503 on SSE and long polling).
 */
export type ConnectDecision =
  | {
      readonly outcome: 'allow';
      /** Replaces the user id (the token's `sub`); required when the connection had no token. */
      readonly user?: string | undefined;
      /** Epoch ms at which the connection expires (refresh then applies); replaces the token's `exp`. */
      readonly expiresAt?: number | undefined;
      /** Replaces `conn_info`. */
      readonly info?: unknown;
    }
  | HookDenial
  | HookUnavailable;

/**
 * Allow: the connection lives on until `expiresAt` (then the hook is asked
 * again); without `expiresAt` it no longer expires. Deny: closed with 3003.
 * Open failure: asked again after the expiry grace; closed: 3011.
 */
export type RefreshDecision =
  | { readonly outcome: 'allow'; readonly expiresAt?: number | undefined; readonly info?: unknown }
  | HookDenial
  | HookUnavailable;

/** Allow with `info`: attached as `chan_info` to this subscriber's presence, join/leave and publications in the channel. */
export type SubscribeDecision = { readonly outcome: 'allow'; readonly info?: unknown } | HookDenial | HookUnavailable;

/** Allow with `data`: the publication carries that data instead (JSON text, checked against limits.maxMessageBytes by the core). */
export type PublishDecision = { readonly outcome: 'allow'; readonly data?: unknown } | HookDenial | HookUnavailable;

/** The rpc's answer `data`, returned to the client as `{data}`. An rpc never fails open. */
export type RpcDecision = { readonly outcome: 'allow'; readonly data: unknown } | HookDenial | HookUnavailable;

export interface Hooks {
  /** True when `event` has a hook for `namespace` ('' for connect, refresh and un-prefixed rpc methods). Synchronous and cheap. */
  has(event: HookEvent, namespace: string): boolean;
  /** True when connections without a token go to the connect hook (instead of a token). */
  readonly connectWithoutToken: boolean;
  /** The allowlisted headers and cookies of an opening request; undefined when no hook forwards any. */
  capture(headers: IncomingHttpHeaders): ForwardedRequest | undefined;
  connect(request: ConnectHookRequest): Promise<ConnectDecision>;
  refresh(request: HookConnection): Promise<RefreshDecision>;
  subscribe(request: SubscribeHookRequest): Promise<SubscribeDecision>;
  publish(request: PublishHookRequest): Promise<PublishDecision>;
  rpc(request: RpcHookRequest, namespace: string): Promise<RpcDecision>;
  /** Stops: calls in flight resolve (as unavailable at worst), no new ones start. */
  close(): Promise<void>;
}
