/**
 * A subscription to one channel. The application holds it to listen
 * (`publication`, `join`, `leave`, `subscribed`, `unsubscribed`, `error`)
 * and to act on the channel; the client drives its state through the
 * `_`-prefixed methods, which are not part of the public API.
 *
 * States: `subscribing` (wanted, not confirmed on the current connection:
 * also while the client reconnects) → `subscribed` → back to `subscribing`
 * when the connection drops, and `unsubscribed` at the end (the application
 * unsubscribed, or the server refused the channel for good). An
 * unsubscribed Subscription is never reused: subscribe again for a new one.
 */
import type { ClientInfo as WireClientInfo, SubscribeResult } from '@herald/protocol';
import type { StreamPosition } from '@herald/protocol';
import { sdkCodes } from './codes.ts';
import { Emitter } from './emitter.ts';
import { PositionTracker, type OffsetVerdict } from './position-tracker.ts';
import type {
  ClientInfo,
  HistoryOptions,
  HistoryResult,
  PresenceStats,
  PublishResult,
  SubscribeOptions,
  SubscriptionEvents,
  SubscriptionState,
} from './types.ts';

/** What a subscription needs from its client. */
export interface SubscriptionHost {
  publish(channel: string, data: unknown): Promise<PublishResult>;
  history<T>(channel: string, options?: HistoryOptions): Promise<HistoryResult<T>>;
  presence(channel: string): Promise<Record<string, ClientInfo>>;
  presenceStats(channel: string): Promise<PresenceStats>;
  /** The application unsubscribed: forget the subscription; tell the server when it may hold it (`wasActive`). */
  release(subscription: Subscription<unknown>, wasActive: boolean): void;
}

export function toClientInfo(info: WireClientInfo): ClientInfo {
  return {
    client: info.client,
    user: info.user,
    ...(info.conn_info === undefined ? {} : { connInfo: info.conn_info }),
    ...(info.chan_info === undefined ? {} : { chanInfo: info.chan_info }),
  };
}

export class Subscription<T = unknown> extends Emitter<SubscriptionEvents<T>> {
  readonly channel: string;
  readonly #host: SubscriptionHost;
  #state: SubscriptionState = 'subscribing';
  /** @internal */
  readonly _tracker: PositionTracker;
  /** @internal The connection generation on which a subscribe is in flight (or was made at open); -1 for none. */
  _requestedGen = -1;
  /** @internal */
  _retryTimer: ReturnType<typeof setTimeout> | undefined;
  /** @internal Consecutive temporary failures, for backoff. */
  _attempt = 0;
  /** @internal Guards the subscribe timeout. */
  _timeoutTimer: ReturnType<typeof setTimeout> | undefined;
  /** @internal Subscription token (private namespaces), if any. */
  _token: string | undefined;
  /** @internal */
  readonly _getToken: ((channel: string) => Promise<string>) | undefined;

  /** @internal Created by `HeraldClient.subscribe`. */
  constructor(host: SubscriptionHost, channel: string, options: SubscribeOptions) {
    super();
    this.#host = host;
    this.channel = channel;
    this._tracker = new PositionTracker(options.since);
    this._token = options.token;
    this._getToken = options.getToken;
  }

  /** @internal Needs a subscription token (so it cannot be subscribed by an SSE/long-poll open). */
  get _private(): boolean {
    return this._token !== undefined || this._getToken !== undefined;
  }

  get state(): SubscriptionState {
    return this.#state;
  }

  /** The position of the last publication delivered, when the channel keeps history. */
  get position(): StreamPosition | undefined {
    return this._tracker.position;
  }

  /** Ends the subscription; the server is told when connected. Idempotent. */
  unsubscribe(): void {
    if (this.#state === 'unsubscribed') return;
    const wasActive = this.#state === 'subscribed' || this._requestedGen !== -1;
    this._end(sdkCodes.unsubscribe_called.code, sdkCodes.unsubscribe_called.reason);
    this.#host.release(this as Subscription<unknown>, wasActive);
  }

  publish(data: T): Promise<PublishResult> {
    return this.#host.publish(this.channel, data);
  }

  history(options?: HistoryOptions): Promise<HistoryResult<T>> {
    return this.#host.history<T>(this.channel, options);
  }

  presence(): Promise<Record<string, ClientInfo>> {
    return this.#host.presence(this.channel);
  }

  presenceStats(): Promise<PresenceStats> {
    return this.#host.presenceStats(this.channel);
  }

  /** @internal The connection dropped, or the subscription must be made again. */
  _setSubscribing(): void {
    if (this.#state === 'subscribed') this.#state = 'subscribing';
    this._requestedGen = -1;
    this._clearTimers();
  }

  /** @internal */
  _clearTimers(): void {
    clearTimeout(this._timeoutTimer);
    this._timeoutTimer = undefined;
  }

  /**
   * @internal Applies a subscribe result (WebSocket reply, or SSE/long-poll
   * `subscribed` push). On SSE and long polling the server also sends
   * `subscribed` for a live subscription it resynchronized itself (after a
   * gap or a stream reset, `was_recovering: true`): applied the same way.
   */
  _applySubscribed(result: SubscribeResult): void {
    if (this.#state !== 'subscribing' && !(this.#state === 'subscribed' && result.was_recovering)) return;
    this._clearTimers();
    clearTimeout(this._retryTimer);
    this._retryTimer = undefined;
    this._attempt = 0;
    this._tracker.onSubscribed(result);
    this.#state = 'subscribed';
    this.emit('subscribed', {
      channel: this.channel,
      recoverable: result.recoverable,
      epoch: result.epoch,
      offset: result.offset,
      wasRecovering: result.was_recovering,
      recovered: result.recovered,
      conflated: result.conflated === true,
    });
  }

  /** @internal Delivers a publication once, in order; 'gap' asks the client to resubscribe. */
  _publication(offset: number, data: unknown, info: WireClientInfo | undefined, prev?: number): OffsetVerdict | 'ignored' {
    if (this.#state !== 'subscribed') return 'ignored';
    const verdict = this._tracker.onPublication(offset, prev);
    if (verdict !== 'deliver') return verdict;
    this.emit(
      'publication',
      info === undefined
        ? { channel: this.channel, offset, data: data as T }
        : { channel: this.channel, offset, data: data as T, info: toClientInfo(info) },
    );
    return verdict;
  }

  /** @internal */
  _joinLeave(kind: 'join' | 'leave', info: WireClientInfo): void {
    if (this.#state === 'subscribed') this.emit(kind, { channel: this.channel, info: toClientInfo(info) });
  }

  /** @internal */
  _error(code: number, message: string): void {
    this.emit('error', { channel: this.channel, code, message });
  }

  /** @internal The subscription is over. */
  _end(code: number, reason: string): void {
    if (this.#state === 'unsubscribed') return;
    this.#state = 'unsubscribed';
    this._requestedGen = -1;
    this._clearTimers();
    clearTimeout(this._retryTimer);
    this._retryTimer = undefined;
    this.emit('unsubscribed', { channel: this.channel, code, reason });
  }
}
