/**
 * Frames of the Herald protocol (docs/protocol.md is the prose version).
 *
 * A client sends commands; the server answers each command that has an `id`
 * with exactly one reply carrying the same `id`, and sends pushes (no `id`)
 * whenever something happens. The same JSON frames travel over WebSocket
 * (one frame per message), SSE (one frame per event `data:` line) and long
 * polling (frames in a JSON array). A client that announces batched frames
 * may also receive several frames joined by "\n" in one WebSocket message
 * or one SSE event (docs/protocol.md, "Batched frames").
 */
import type { StreamPosition } from './positions.ts';

/**
 * The protocol's major version, sent in every connect result and `connected`
 * push as `protocol`. It changes only with a change that breaks clients
 * (frames or meanings removed or changed); additions (fields, pushes,
 * methods, codes) keep it, and clients ignore what they do not know. A
 * client that speaks another major version must not go on (the SDK stops
 * with its code 9, `protocol_mismatch`).
 */
export const PROTOCOL_VERSION = 1;

export interface ConnectParams {
  /** JWT connection token; absent for anonymous connections. */
  readonly token?: string;
  /** Free-form client name for logs and presence (≤ 64 chars). */
  readonly name?: string;
  /**
   * The client reads batched frames (docs/protocol.md, "Batched frames").
   * Older servers refuse this param: the SDK announces with the
   * connection URL's `batch=1` instead, which every server ignores or reads.
   */
  readonly batch?: boolean;
}

export interface SubscribeParams {
  readonly channel: string;
  /** Subscription token, required in `private` namespaces. */
  readonly token?: string;
  /** Ask for the publications missed since `epoch`/`offset`. */
  readonly recover?: boolean;
  readonly epoch?: string;
  readonly offset?: number;
}

export interface RefreshParams {
  /** A new connection token for the same `sub`. */
  readonly token: string;
}

export interface RefreshResult {
  /** Seconds until the new token expires, when it has `exp`. */
  readonly ttl?: number;
}

export interface ChannelParams {
  readonly channel: string;
}

export interface PublishParams {
  readonly channel: string;
  readonly data: unknown;
}

export interface HistoryParams {
  readonly channel: string;
  /** Maximum publications to return; 0 returns only the stream position. */
  readonly limit?: number;
  /** Return publications after this position (must match the epoch). */
  readonly since?: StreamPosition;
  readonly reverse?: boolean;
}

export interface RpcParams {
  /** The method, for the application's backend (`ns:name` picks a namespace's rpc hook). */
  readonly method: string;
  /** Any JSON, passed to the backend as is. */
  readonly data?: unknown;
}

export interface RpcResult {
  /** The backend's answer. */
  readonly data: unknown;
}

export type Command =
  | { readonly id: number; readonly method: 'connect'; readonly params?: ConnectParams }
  | { readonly id: number; readonly method: 'subscribe'; readonly params: SubscribeParams }
  | { readonly id: number; readonly method: 'unsubscribe'; readonly params: ChannelParams }
  | { readonly id: number; readonly method: 'publish'; readonly params: PublishParams }
  | { readonly id: number; readonly method: 'history'; readonly params: HistoryParams }
  | { readonly id: number; readonly method: 'presence'; readonly params: ChannelParams }
  | { readonly id: number; readonly method: 'presence_stats'; readonly params: ChannelParams }
  | { readonly id: number; readonly method: 'refresh'; readonly params: RefreshParams }
  | { readonly id: number; readonly method: 'rpc'; readonly params: RpcParams }
  | { readonly id: number; readonly method: 'ping'; readonly params?: Record<string, never> }
  | { readonly id?: number; readonly method: 'pong'; readonly params?: Record<string, never> };

export type CommandMethod = Command['method'];

export interface ConnectResult {
  readonly client: string;
  /** Herald's release (semver), for logs and support; compatibility is `protocol`. */
  readonly version: string;
  /** The protocol major version the server speaks: `PROTOCOL_VERSION`. */
  readonly protocol: number;
  /** Server ping interval in seconds; expect some frame at least this often. */
  readonly ping: number;
  /** Seconds until the connection token expires, when it has `exp`. */
  readonly ttl?: number;
  /** True when the server sends this connection batched frames (it announced them); absent otherwise. */
  readonly batch?: boolean;
}

export interface SubscribeResult {
  /** True when the channel keeps history, so positions mean something. */
  readonly recoverable: boolean;
  readonly epoch: string;
  /**
   * Offset of the newest publication in the stream at subscribe time. On a
   * conflated channel not recovered: the offset the latest values that
   * follow continue from.
   */
  readonly offset: number;
  /** The client asked to recover (`recover: true`). */
  readonly was_recovering: boolean;
  /**
   * Every missed publication follows as a `publication` push, before any
   * live one. False: history no longer covers the gap; reload state (on a
   * conflated channel: the latest value per key follows instead).
   */
  readonly recovered: boolean;
  /**
   * The channel is conflated (docs/protocol.md, "Conflation"): a subscriber
   * that falls behind gets only the newest publication per key, and
   * publications may skip offsets, each saying so with `prev`. Absent on
   * other channels.
   */
  readonly conflated?: true;
}

export interface ClientInfo {
  readonly client: string;
  readonly user: string;
  readonly conn_info?: unknown;
  /** Channel info the subscribe hook attached to this subscriber (docs/hooks.md); only in that channel. */
  readonly chan_info?: unknown;
}

export interface Publication {
  readonly offset: number;
  readonly data: unknown;
  readonly info?: ClientInfo;
}

export interface HistoryResult {
  readonly epoch: string;
  readonly offset: number;
  readonly publications: readonly Publication[];
}

export interface PresenceResult {
  readonly clients: Readonly<Record<string, ClientInfo>>;
}

export interface PresenceStatsResult {
  readonly num_clients: number;
  readonly num_users: number;
}

export interface ReplyError {
  readonly code: number;
  readonly message: string;
  /** What in the command was wrong, when Herald can say: `/params/channel: expected string`. */
  readonly detail?: string;
}

export type Reply =
  | { readonly id: number; readonly result: unknown }
  | { readonly id: number; readonly error: ReplyError };

export type Push =
  | { readonly push: 'connected'; readonly client: string; readonly version: string; readonly protocol: number; readonly ping: number; readonly session?: string; readonly ttl?: number; readonly batch?: boolean }
  | ({ readonly push: 'subscribed'; readonly channel: string } & SubscribeResult)
  | {
      readonly push: 'publication';
      readonly channel: string;
      readonly offset: number;
      readonly data: unknown;
      readonly info?: ClientInfo;
      /**
       * Conflated channels: the offset of the previous publication delivered
       * on this channel, when the offsets between were conflated (skipped on
       * purpose, not a gap). Absent when `offset` follows it directly.
       */
      readonly prev?: number;
    }
  | { readonly push: 'join'; readonly channel: string; readonly info: ClientInfo }
  | { readonly push: 'leave'; readonly channel: string; readonly info: ClientInfo }
  | { readonly push: 'unsubscribed'; readonly channel: string; readonly code: number; readonly reason: string }
  | { readonly push: 'ping' }
  | { readonly push: 'refresh'; readonly grace: number }
  | { readonly push: 'disconnect'; readonly code: number; readonly reason: string; readonly reconnect: boolean };

export type ServerFrame = Reply | Push;
