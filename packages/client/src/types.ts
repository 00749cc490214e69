/**
 * Public types of the SDK: events and results, in camelCase. Wire frames
 * (snake_case) are in packages/protocol/src/frames.ts.
 */
import type { StreamPosition } from '@herald/protocol';
import type { TransportName } from './transport.ts';

export type { StreamPosition, TransportName };

/** Who published, or who joined or left: the connection's client id and user id (`sub` of its token). */
export interface ClientInfo {
  readonly client: string;
  readonly user: string;
  /** The token's `info` claim (or what the connect hook set), when it has one. */
  readonly connInfo?: unknown;
  /** What the subscribe hook attached for this channel (docs/hooks.md), when it did. */
  readonly chanInfo?: unknown;
}

export interface Publication<T = unknown> {
  /** Position in the channel's stream; 0 in channels without history. */
  readonly offset: number;
  readonly data: T;
  /** Present when a client published (absent for the server API). */
  readonly info?: ClientInfo;
}

export interface PublicationEvent<T = unknown> extends Publication<T> {
  readonly channel: string;
}

export interface JoinLeaveEvent {
  readonly channel: string;
  readonly info: ClientInfo;
}

export interface SubscribedEvent {
  readonly channel: string;
  /** The channel keeps history: positions and recovery work. */
  readonly recoverable: boolean;
  readonly epoch: string;
  /** The stream's newest offset when the subscription was made. */
  readonly offset: number;
  /** The SDK asked to recover (it had a position from an earlier subscription). */
  readonly wasRecovering: boolean;
  /**
   * True: every missed publication follows, in order, before live ones.
   * False with `wasRecovering`: publications were missed and cannot be
   * replayed; reload your state (e.g. from `history()`).
   * On a conflated channel the latest value per key follows instead.
   */
  readonly recovered: boolean;
  /**
   * The channel is conflated (the server's namespace option `conflation`):
   * when this client falls behind, it gets only the newest publication per
   * key, and offsets skip (never reported as a gap).
   */
  readonly conflated: boolean;
}

export interface UnsubscribedEvent {
  readonly channel: string;
  readonly code: number;
  readonly reason: string;
}

export interface ErrorEvent {
  readonly code: number;
  readonly message: string;
}

export interface SubscriptionErrorEvent extends ErrorEvent {
  readonly channel: string;
}

export interface SubscriptionEvents<T> {
  publication: PublicationEvent<T>;
  join: JoinLeaveEvent;
  leave: JoinLeaveEvent;
  subscribed: SubscribedEvent;
  unsubscribed: UnsubscribedEvent;
  error: SubscriptionErrorEvent;
}

export type ClientState = 'disconnected' | 'connecting' | 'connected';
export type SubscriptionState = 'subscribing' | 'subscribed' | 'unsubscribed';

export interface ConnectingEvent {
  readonly code: number;
  readonly reason: string;
}

export interface ConnectedEvent {
  readonly client: string;
  readonly transport: TransportName;
  readonly version: string;
  /** Seconds until the connection token expires, when it has `exp`. */
  readonly ttl?: number;
}

export interface DisconnectedEvent {
  readonly code: number;
  readonly reason: string;
}

export interface ClientErrorEvent extends ErrorEvent {
  /** The transport that failed, for `transport_failed`. */
  readonly transport?: TransportName;
}

export interface ClientEvents {
  connecting: ConnectingEvent;
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  error: ClientErrorEvent;
}

export interface PublishResult {
  readonly epoch: string;
  /** 0 in channels without history. */
  readonly offset: number;
}

export interface HistoryOptions {
  /** Most publications to return (0, the default, returns only the stream position). */
  readonly limit?: number;
  /** Only publications after this position (same epoch). */
  readonly since?: StreamPosition;
  /** Newest first. */
  readonly reverse?: boolean;
}

export interface HistoryResult<T = unknown> {
  readonly epoch: string;
  readonly offset: number;
  readonly publications: readonly Publication<T>[];
}

export interface PresenceStats {
  readonly numClients: number;
  readonly numUsers: number;
}

export interface SubscribeOptions {
  /** Start from a position you already have (e.g. from `history()`): the SDK recovers from it. */
  readonly since?: StreamPosition;
  /** Subscription token for a `private` namespace. */
  readonly token?: string;
  /**
   * Returns a subscription token for a `private` namespace: called before the
   * first subscribe and again after the server answers 109 (token expired).
   */
  readonly getToken?: (channel: string) => Promise<string>;
}
