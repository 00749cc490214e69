/**
 * HeraldClient: one connection to Herald over the best transport that
 * works, kept alive across drops, with every subscription recovered.
 *
 * Connection states: `disconnected` → `connecting` → `connected`, back to
 * `connecting` when the connection drops (event `connecting` with the code
 * and reason), and to `disconnected` when the application disconnects or the
 * server ends the connection with a terminal code (event `disconnected`).
 *
 * Transport selection: an attempt tries the transports in `transports`
 * order, starting with the one that worked last. A transport that fails
 * before the connection is established (refused upgrade, network error,
 * HTTP error other than auth, no `connected` within `connectTimeoutMs`, for
 * example behind a proxy that buffers streams) is followed at once by the
 * next; when all have failed the client waits (exponential backoff, full
 * jitter) and starts a new round.
 *
 * Recovery: each subscription keeps the position of the last publication it
 * delivered; on reconnect (and on a gap) it subscribes again asking to
 * recover from there: WebSocket in the subscribe command, SSE in the
 * `last_event_id` of the new stream, long polling in the open's `cursor`.
 * On SSE and long polling the server also resynchronizes a live
 * subscription by itself (after a stream reset) and says so with a
 * `subscribed` push. The application sees every publication once, in
 * order, or a `subscribed` event with `recovered: false` telling it to
 * reload its state.
 */
import { disconnects, PROTOCOL_VERSION, replyErrors } from '@herald/protocol';
import { isChannelNameError, parseChannel } from '@herald/protocol';
import type { ClientInfo as WireClientInfo, ConnectResult, Push, ServerFrame, SubscribeResult } from '@herald/protocol';
import { MAX_VECTOR_ENTRIES, MAX_VECTOR_LENGTH, encodePositions, type StreamPosition } from '@herald/protocol';
import { backoffDelay } from './backoff.ts';
import { closeAction, HeraldError, isTemporaryReplyError, sdkCodes, sdkError } from './codes.ts';
import { Emitter } from './emitter.ts';
import { LongPollTransport } from './long-poll-transport.ts';
import { SseTransport } from './sse-transport.ts';
import { Subscription, toClientInfo } from './subscription.ts';
import {
  transportNames,
  type ClientTransport,
  type Endpoints,
  type FetchFunction,
  type OpenRequest,
  type TransportClose,
  type TransportHandlers,
  type TransportName,
} from './transport.ts';
import type {
  ClientEvents,
  ClientInfo,
  ClientState,
  HistoryOptions,
  HistoryResult,
  PresenceStats,
  PublishResult,
  SubscribeOptions,
} from './types.ts';
import { WebSocketTransport } from './websocket-transport.ts';

export interface ClientOptions {
  /** Herald's base URL (`https://rt.example.com`); defaults to the page's origin in browsers. */
  readonly url?: string;
  /** Connection token (JWT). Without it and without `getToken` the connection is anonymous. */
  readonly token?: string;
  /** Returns a fresh connection token: called before the first connect when `token` is absent, before expiry, and after 3003. */
  readonly getToken?: () => Promise<string>;
  /** Client name sent with `connect` (WebSocket), shown in server logs. */
  readonly name?: string;
  /** Transports to try, in order. Default: websocket, sse, long-poll. */
  readonly transports?: readonly TransportName[];
  /** Overrides the WebSocket endpoint (default: the base URL's `/connection/websocket`). */
  readonly websocketUrl?: string;
  /**
   * Opens WebSocket connections with `connect` and the subscriptions in the
   * upgrade request (default true; docs/protocol.md, "Connect in the upgrade
   * request"): one round trip less and less work for the server in a
   * reconnect storm. The token then travels in the URL's query, as on SSE.
   * False: `connect` and the subscribes as commands after the open (needed
   * for Herald servers older than this option).
   */
  readonly websocketConnectInUrl?: boolean;
  /** WebSocket implementation; default `globalThis.WebSocket`. */
  readonly WebSocket?: typeof WebSocket;
  /** fetch implementation (SSE, long polling, HTTP commands); default `globalThis.fetch`. */
  readonly fetch?: FetchFunction;
  /** A transport that has not connected within this is abandoned for the next (default 5000). */
  readonly connectTimeoutMs?: number;
  /** Replies to commands (publish, history, …) must arrive within this (default 10000). */
  readonly timeoutMs?: number;
  /** Backoff ceiling of the first reconnect attempt (default 500). */
  readonly reconnectDelayMs?: number;
  /** Backoff ceiling never grows past this (default 20000). */
  readonly maxReconnectDelayMs?: number;
  /** Tolerated lateness of the server's ping before the connection is taken as dead (default 10000). */
  readonly maxServerPingDelayMs?: number;
  /** Random source for backoff jitter, [0, 1) (default Math.random; tests pass their own). */
  readonly random?: () => number;
}

interface Resolved {
  readonly token: string | undefined;
  readonly getToken: (() => Promise<string>) | undefined;
  readonly name: string | undefined;
  readonly websocketConnectInUrl: boolean;
  readonly connectTimeoutMs: number;
  readonly timeoutMs: number;
  readonly backoff: { readonly baseDelayMs: number; readonly maxDelayMs: number };
  readonly maxServerPingDelayMs: number;
  readonly random: () => number;
}

type Reply = Extract<ServerFrame, { id: number }>;
type ReplyCallback = (reply: Reply) => void;
type PushOf<K extends string> = Extract<Push, { push: K }>;

interface Pending {
  readonly callback: ReplyCallback;
  readonly timer: ReturnType<typeof setTimeout>;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: HeraldError) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

const MAX_COMMAND_ID = 2 ** 31 - 1;
/** Channels and position vector in an open's URL, encoded, at most (beyond: subscribed by command after the open). */
const MAX_OPEN_QUERY_BYTES = 8192;
/** Refresh the token this long before it expires (at most half its lifetime). */
const REFRESH_MARGIN_MS = 15000;
const TOKEN_RETRY_MS = 5000;

/** Builds the endpoint URLs from the base URL. */
export function endpointsFor(url: string, websocketUrl?: string): Endpoints {
  const base = new URL(url);
  const secure = base.protocol === 'https:' || base.protocol === 'wss:';
  const prefix = base.pathname.replace(/\/+$/, '');
  const http = (path: string) => (secure ? 'https://' : 'http://') + base.host + prefix + path;
  return {
    websocket: websocketUrl ?? (secure ? 'wss://' : 'ws://') + base.host + prefix + '/connection/websocket',
    sse: http('/connection/sse'),
    pollOpen: http('/connection/poll/open'),
    poll: http('/connection/poll'),
    command: http('/connection/command'),
    close: http('/connection/close'),
  };
}

export class HeraldClient extends Emitter<ClientEvents> {
  readonly #o: Resolved;
  readonly #endpoints: Endpoints;
  readonly #fetch: FetchFunction | undefined;
  readonly #WebSocket: typeof WebSocket | undefined;
  readonly #order: readonly TransportName[];
  #state: ClientState = 'disconnected';
  /** Increases with every attempt and every drop; handlers of older ones are ignored. */
  #gen = 0;
  #transport: ClientTransport | undefined;
  #clientId: string | undefined;
  /** Index in #order of the transport that worked last; rounds start there. */
  #preferred = 0;
  /** Transports tried in the current round. */
  #tried = 0;
  /** Failed rounds in a row (backoff exponent). */
  #attempt = 0;
  /** SSE/long polling subscribe at open; false after an open was refused for a channel. */
  #withChannels = true;
  /** The next WebSocket attempt opens by commands: an open in the upgrade request failed before it opened. */
  #wsByCommands = false;
  #expiredInRow = 0;
  #token: string | undefined;
  /** #token came from getToken and has not been tried on a connect yet. */
  #tokenFresh = false;
  #refreshing = false;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  readonly #waiters = new Set<Waiter>();
  readonly #subs = new Map<string, Subscription<unknown>>();
  #reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  #connectTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setTimeout> | undefined;
  #refreshTimer: ReturnType<typeof setTimeout> | undefined;
  #pingMs = 0;
  #lastFrameAt = 0;
  readonly #onOnline = () => {
    if (this.#state === 'connecting' && this.#reconnectTimer !== undefined) {
      clearTimeout(this.#reconnectTimer);
      this.#reconnectTimer = undefined;
      this.#tried = 0;
      void this.#startAttempt();
    }
  };

  constructor(options: ClientOptions = {}) {
    super();
    const location = (globalThis as { location?: { origin?: string } }).location;
    const url = options.url ?? location?.origin;
    if (url === undefined) throw new TypeError('HeraldClient: `url` is required outside a browser page');
    this.#endpoints = endpointsFor(url, options.websocketUrl);
    this.#fetch = options.fetch ?? (typeof globalThis.fetch === 'function' ? globalThis.fetch.bind(globalThis) : undefined);
    this.#WebSocket = options.WebSocket ?? (typeof globalThis.WebSocket === 'function' ? globalThis.WebSocket : undefined);
    const wanted = options.transports ?? transportNames;
    const order: TransportName[] = [];
    for (const name of wanted) {
      if (!transportNames.includes(name)) throw new TypeError(`HeraldClient: unknown transport "${String(name)}"`);
      const available = name === 'websocket' ? this.#WebSocket !== undefined : this.#fetch !== undefined;
      if (available && !order.includes(name)) order.push(name);
    }
    if (order.length === 0) throw new TypeError('HeraldClient: none of the requested transports is available here');
    this.#order = order;
    this.#token = options.token;
    this.#o = {
      token: options.token,
      getToken: options.getToken,
      name: options.name,
      websocketConnectInUrl: options.websocketConnectInUrl ?? true,
      connectTimeoutMs: options.connectTimeoutMs ?? 5000,
      timeoutMs: options.timeoutMs ?? 10000,
      backoff: { baseDelayMs: options.reconnectDelayMs ?? 500, maxDelayMs: options.maxReconnectDelayMs ?? 20000 },
      maxServerPingDelayMs: options.maxServerPingDelayMs ?? 10000,
      random: options.random ?? Math.random,
    };
  }

  get state(): ClientState {
    return this.#state;
  }

  /** The transport of the current connection, while connected. */
  get transport(): TransportName | undefined {
    return this.#state === 'connected' ? this.#transport?.name : undefined;
  }

  /** The server's id for the current connection, while connected. */
  get clientId(): string | undefined {
    return this.#state === 'connected' ? this.#clientId : undefined;
  }

  /** The transports this client tries, in order (requested ones available here). */
  get transports(): readonly TransportName[] {
    return this.#order;
  }

  /** Starts connecting (no-op unless disconnected). */
  connect(): void {
    if (this.#state !== 'disconnected') return;
    this.#preferred = 0;
    this.#tried = 0;
    this.#attempt = 0;
    this.#withChannels = true;
    this.#expiredInRow = 0;
    (globalThis as { addEventListener?: (type: string, listener: () => void) => void }).addEventListener?.('online', this.#onOnline);
    this.#setConnecting(sdkCodes.connect_called.code, sdkCodes.connect_called.reason);
    void this.#startAttempt();
  }

  /** Closes the connection and stops reconnecting. Subscriptions stay and recover on the next `connect()`. */
  disconnect(): void {
    if (this.#state === 'disconnected') return;
    this.#stop(sdkCodes.disconnect_called.code, sdkCodes.disconnect_called.reason);
  }

  /** Resolves once connected (at once if already); rejects on `disconnected` or after `timeoutMs`. */
  ready(timeoutMs = this.#o.timeoutMs): Promise<void> {
    if (this.#state === 'connected') return Promise.resolve();
    if (this.#state === 'disconnected') return Promise.reject(sdkError('disconnected'));
    return this.#whenConnected(timeoutMs);
  }

  /**
   * Subscribes to a channel: now if connected, otherwise as soon as the
   * client connects. Throws if a subscription to this channel exists (see
   * `getSubscription`) or the name is invalid.
   */
  subscribe<T = unknown>(channel: string, options: SubscribeOptions = {}): Subscription<T> {
    if (isChannelNameError(parseChannel(channel))) throw new TypeError(`HeraldClient: invalid channel name "${channel}"`);
    if (this.#subs.has(channel)) throw new Error(`HeraldClient: already subscribed to "${channel}"`);
    const sub = new Subscription<unknown>(this.#host, channel, options);
    this.#subs.set(channel, sub);
    if (this.#state === 'connected') this.#sendSubscribe(sub);
    return sub as Subscription<T>;
  }

  getSubscription<T = unknown>(channel: string): Subscription<T> | undefined {
    return this.#subs.get(channel) as Subscription<T> | undefined;
  }

  subscriptions(): Subscription<unknown>[] {
    return [...this.#subs.values()];
  }

  /** Publishes into a channel (the namespace must allow client publish). */
  publish(channel: string, data: unknown): Promise<PublishResult> {
    return this.#call<PublishResult>('publish', { channel, data });
  }

  async history<T = unknown>(channel: string, options: HistoryOptions = {}): Promise<HistoryResult<T>> {
    const params: Record<string, unknown> = { channel };
    if (options.limit !== undefined) params['limit'] = options.limit;
    if (options.since !== undefined) params['since'] = { epoch: options.since.epoch, offset: options.since.offset };
    if (options.reverse !== undefined) params['reverse'] = options.reverse;
    const result = await this.#call<{ epoch: string; offset: number; publications: { offset: number; data: T; info?: WireClientInfo }[] }>('history', params);
    return {
      epoch: result.epoch,
      offset: result.offset,
      publications: result.publications.map((p) => (p.info === undefined ? { offset: p.offset, data: p.data } : { offset: p.offset, data: p.data, info: toClientInfo(p.info) })),
    };
  }

  /** Who is subscribed: client id → info. */
  async presence(channel: string): Promise<Record<string, ClientInfo>> {
    const result = await this.#call<{ clients: Record<string, WireClientInfo> }>('presence', { channel });
    const clients: Record<string, ClientInfo> = {};
    for (const [id, info] of Object.entries(result.clients)) clients[id] = toClientInfo(info);
    return clients;
  }

  /**
   * Asks the application's backend through Herald's rpc hook (docs/hooks.md)
   * and resolves with its answer's `data`. Rejects with a HeraldError: the
   * backend's own code (1000–1999) when it refused, 119 when it failed, 120
   * when no rpc hook is configured. Waits for the connection like any command.
   */
  async rpc<R = unknown>(method: string, data?: unknown): Promise<R> {
    const result = await this.#call<{ data: R }>('rpc', data === undefined ? { method } : { method, data });
    return result.data;
  }

  async presenceStats(channel: string): Promise<PresenceStats> {
    const result = await this.#call<{ num_clients: number; num_users: number }>('presence_stats', { channel });
    return { numClients: result.num_clients, numUsers: result.num_users };
  }

  readonly #host = {
    publish: (channel: string, data: unknown) => this.publish(channel, data),
    history: <T>(channel: string, options?: HistoryOptions) => this.history<T>(channel, options),
    presence: (channel: string) => this.presence(channel),
    presenceStats: (channel: string) => this.presenceStats(channel),
    release: (sub: Subscription<unknown>, wasActive: boolean) => {
      if (this.#subs.get(sub.channel) === sub) this.#subs.delete(sub.channel);
      clearTimeout(sub._retryTimer);
      if (wasActive && this.#state === 'connected') this.#sendCommand('unsubscribe', { channel: sub.channel }, () => {});
    },
  };

  // ---------------------------------------------------------------- commands

  async #call<R>(method: string, params: object): Promise<R> {
    if (this.#state === 'disconnected') throw sdkError('disconnected');
    const started = Date.now();
    if (this.#state !== 'connected') await this.#whenConnected(this.#o.timeoutMs);
    const left = Math.max(1, this.#o.timeoutMs - (Date.now() - started));
    return new Promise<R>((resolve, reject) => {
      this.#sendCommand(method, params, (reply) => {
        if ('error' in reply) reject(new HeraldError(reply.error.code, reply.error.message, reply.error.detail));
        else resolve(reply.result as R);
      }, left);
    });
  }

  /** Sends a command on the current transport; `callback` gets the reply (or a synthesized error) synchronously. */
  #sendCommand(method: string, params: object, callback: ReplyCallback, timeoutMs = this.#o.timeoutMs): void {
    const transport = this.#transport;
    const id = this.#nextId;
    this.#nextId = id >= MAX_COMMAND_ID ? 1 : id + 1;
    if (transport === undefined) {
      queueMicrotask(() => callback({ id, error: { code: sdkCodes.disconnected.code, message: sdkCodes.disconnected.reason } }));
      return;
    }
    const timer = setTimeout(() => {
      if (this.#pending.delete(id)) callback({ id, error: { code: sdkCodes.timeout.code, message: sdkCodes.timeout.reason } });
    }, timeoutMs);
    this.#pending.set(id, { callback, timer });
    transport.send({ id, method, params });
  }

  #whenConnected(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          this.#waiters.delete(waiter);
          reject(sdkError('timeout'));
        }, timeoutMs),
      };
      this.#waiters.add(waiter);
    });
  }

  #failPending(): void {
    const pending = [...this.#pending];
    this.#pending.clear();
    for (const [id, entry] of pending) {
      clearTimeout(entry.timer);
      entry.callback({ id, error: { code: sdkCodes.disconnected.code, message: sdkCodes.disconnected.reason } });
    }
  }

  // -------------------------------------------------------------- connection

  #setConnecting(code: number, reason: string): void {
    this.#state = 'connecting';
    this.emit('connecting', { code, reason });
  }

  async #startAttempt(): Promise<void> {
    const gen = ++this.#gen;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    const name = this.#order[(this.#preferred + this.#tried) % this.#order.length]!;
    let token = this.#token;
    if (token === undefined && this.#o.getToken !== undefined) {
      try {
        token = await this.#o.getToken();
      } catch (error) {
        if (gen !== this.#gen || this.#state !== 'connecting') return;
        this.emit('error', { code: sdkCodes.token_error.code, message: `getToken failed: ${String(error)}` });
        this.#scheduleRound();
        return;
      }
      this.#token = token;
      this.#tokenFresh = true;
      if (gen !== this.#gen || this.#state !== 'connecting') return;
    }
    // The token is in use now: if it is refused as expired, ask getToken for another.
    this.#tokenFresh = false;
    const handlers: TransportHandlers = {
      onOpen: () => {
        if (gen !== this.#gen) return;
        this.#sendConnect(gen, token);
        // WebSocket: subscribes go right behind `connect`, without waiting for its reply (the server runs commands
        // pipelined behind connect once it is done, in order): one round trip to a subscribed connection, not two.
        if (this.#transport?.pushesConnected === false) for (const sub of this.#subs.values()) this.#sendSubscribe(sub, true);
      },
      onFrame: (frame) => {
        if (gen === this.#gen) this.#onFrame(frame);
      },
      onClose: (close) => {
        if (gen === this.#gen) this.#onClose(close);
      },
    };
    const transport = this.#createTransport(name, handlers);
    this.#transport = transport;
    const request = this.#openRequest(transport, token, gen);
    this.#connectTimer = setTimeout(() => this.#drop(gen, { code: sdkCodes.transport_closed.code, reason: 'connect timeout' }), this.#o.connectTimeoutMs);
    transport.open(request);
  }

  #createTransport(name: TransportName, handlers: TransportHandlers): ClientTransport {
    if (name === 'websocket') {
      const inUrl = this.#o.websocketConnectInUrl && !this.#wsByCommands;
      this.#wsByCommands = false;
      return new WebSocketTransport(this.#endpoints.websocket, this.#WebSocket!, handlers, inUrl);
    }
    if (name === 'sse') return new SseTransport(this.#endpoints, this.#fetch!, handlers);
    return new LongPollTransport(this.#endpoints, this.#fetch!, handlers);
  }

  /** SSE, long polling and a WebSocket opened in its upgrade request subscribe at open: fresh channels, and a position vector for the ones to recover. */
  #openRequest(transport: ClientTransport, token: string | undefined, gen: number): OpenRequest {
    const none: OpenRequest = { token, name: this.#o.name, channels: [], vector: '' };
    if (!transport.pushesConnected || !this.#withChannels) return none;
    // Private channels need their subscription token, which an open cannot carry: they go by command.
    const wanted = [...this.#subs.values()].filter((sub) => sub.state === 'subscribing' && sub._retryTimer === undefined && !sub._private);
    if (wanted.length === 0 || wanted.length > MAX_VECTOR_ENTRIES) return none;
    const entries: [string, StreamPosition][] = [];
    const channels: string[] = [];
    for (const sub of wanted) {
      const position = sub.position;
      if (position === undefined) channels.push(sub.channel);
      else entries.push([sub.channel, position]);
    }
    const vector = encodePositions(entries);
    if (vector.length > MAX_VECTOR_LENGTH) return none;
    // The open's URL stays well within a server's request head (Herald's: 16 KiB with the headers); more goes by command.
    let queryBytes = encodeURIComponent(vector).length;
    for (const channel of channels) queryBytes += encodeURIComponent(channel).length + 9;
    if (queryBytes > MAX_OPEN_QUERY_BYTES) return none;
    for (const sub of wanted) sub._requestedGen = gen;
    return { token, name: this.#o.name, channels, vector };
  }

  #sendConnect(gen: number, token: string | undefined): void {
    const params: { token?: string; name?: string } = {};
    if (token !== undefined && token !== '') params.token = token;
    if (this.#o.name !== undefined) params.name = this.#o.name;
    this.#sendCommand(
      'connect',
      params,
      (reply) => {
        if (gen !== this.#gen) return;
        if ('error' in reply) this.#drop(gen, { code: sdkCodes.transport_closed.code, reason: `connect failed: ${reply.error.message}` });
        else this.#onConnected(reply.result as ConnectResult);
      },
      this.#o.connectTimeoutMs,
    );
  }

  #onConnected(result: ConnectResult): void {
    const transport = this.#transport;
    if (this.#state !== 'connecting' || transport === undefined) return;
    clearTimeout(this.#connectTimer);
    // A server without `protocol` predates it and speaks version 1.
    const protocol = typeof result.protocol === 'number' ? result.protocol : 1;
    if (protocol !== PROTOCOL_VERSION) {
      const message = `the server (Herald ${String(result.version)}) speaks protocol ${protocol}, this SDK protocol ${PROTOCOL_VERSION}: use an @herald/client release for protocol ${protocol}`;
      this.emit('error', { code: sdkCodes.protocol_mismatch.code, message });
      if (this.#state === 'connecting' && this.#transport === transport) this.#stop(sdkCodes.protocol_mismatch.code, message);
      return;
    }
    this.#state = 'connected';
    this.#preferred = this.#order.indexOf(transport.name);
    this.#tried = 0;
    this.#attempt = 0;
    this.#expiredInRow = 0;
    this.#withChannels = true;
    this.#clientId = result.client;
    this.#pingMs = typeof result.ping === 'number' && result.ping > 0 ? result.ping * 1000 : 0;
    this.#lastFrameAt = Date.now();
    this.#armPing();
    this.#scheduleRefresh(result.ttl);
    for (const sub of this.#subs.values()) {
      if (sub.state !== 'subscribing' || sub._retryTimer !== undefined) continue;
      if (sub._requestedGen === this.#gen) this.#armSubscribeTimeout(sub);
      else this.#sendSubscribe(sub);
    }
    const event: { client: string; transport: TransportName; version: string; ttl?: number } = {
      client: result.client,
      transport: transport.name,
      version: result.version,
    };
    if (typeof result.ttl === 'number') event.ttl = result.ttl;
    this.emit('connected', event);
    if (this.#state !== 'connected') return;
    for (const waiter of [...this.#waiters]) {
      this.#waiters.delete(waiter);
      clearTimeout(waiter.timer);
      waiter.resolve();
    }
  }

  /** Ends the current transport as if it had closed with `close`. */
  #drop(gen: number, close: TransportClose): void {
    if (gen !== this.#gen) return;
    this.#transport?.close();
    this.#onClose(close);
  }

  /** Forgets the current transport and everything in flight on it. */
  #detach(): ClientTransport | undefined {
    const transport = this.#transport;
    this.#gen++;
    this.#transport = undefined;
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#pingTimer);
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    this.#failPending();
    for (const sub of this.#subs.values()) {
      sub._setSubscribing();
      clearTimeout(sub._retryTimer);
      sub._retryTimer = undefined;
    }
    return transport;
  }

  #onClose(close: TransportClose): void {
    const wasConnected = this.#state === 'connected';
    const transport = this.#detach();
    const action = closeAction(close.code);
    if (action === 'stop') {
      this.#stop(close.code, close.reason);
      return;
    }
    if (wasConnected) {
      this.#setConnecting(close.code, close.reason);
      if (this.#state !== 'connecting') return;
      this.#tried = 0;
      if (action === 'refresh-token') this.#onTokenExpired();
      else this.#scheduleRound();
      return;
    }
    if (action === 'refresh-token') {
      this.#onTokenExpired();
      return;
    }
    if (close.openInUrlFailed === true) {
      // Refused before the 101 (a browser does not show why) or unreachable: once more at once by commands,
      // whose close code says why (a bad token stops, a refused channel fails alone).
      this.#wsByCommands = true;
      void this.#startAttempt();
      return;
    }
    if (close.channelsRefused === true && this.#withChannels) {
      this.#withChannels = false;
      void this.#startAttempt();
      return;
    }
    if (close.code >= 3000) {
      // Herald answered (e.g. shutting down): the transport works, wait and retry it.
      this.#scheduleRound();
      return;
    }
    this.emit('error', { code: sdkCodes.transport_failed.code, message: `${transport?.name ?? 'transport'}: ${close.reason}`, ...(transport ? { transport: transport.name } : {}) });
    if (this.#state !== 'connecting') return;
    this.#tried++;
    if (this.#tried < this.#order.length) void this.#startAttempt();
    else this.#scheduleRound();
  }

  #onTokenExpired(): void {
    if (this.#o.getToken === undefined) {
      this.#stop(disconnects.token_expired.code, disconnects.token_expired.reason);
      return;
    }
    this.#expiredInRow++;
    if (!this.#tokenFresh) this.#token = undefined;
    this.#tokenFresh = false;
    if (this.#expiredInRow > 1) {
      this.#token = undefined;
      this.#scheduleRound();
    } else {
      void this.#startAttempt();
    }
  }

  #scheduleRound(): void {
    this.#tried = 0;
    const delay = backoffDelay(this.#attempt++, this.#o.backoff, this.#o.random);
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = undefined;
      if (this.#state === 'connecting') void this.#startAttempt();
    }, delay);
  }

  /** To `disconnected`: the application asked, or a terminal code. */
  #stop(code: number, reason: string): void {
    const transport = this.#detach();
    transport?.close();
    (globalThis as { removeEventListener?: (type: string, listener: () => void) => void }).removeEventListener?.('online', this.#onOnline);
    this.#state = 'disconnected';
    for (const waiter of [...this.#waiters]) {
      this.#waiters.delete(waiter);
      clearTimeout(waiter.timer);
      waiter.reject(sdkError('disconnected'));
    }
    this.emit('disconnected', { code, reason });
  }

  #armPing(): void {
    clearTimeout(this.#pingTimer);
    const transport = this.#transport;
    if (this.#state !== 'connected' || this.#pingMs === 0 || transport === undefined || transport.name === 'long-poll') return;
    const gen = this.#gen;
    const limit = this.#pingMs + this.#o.maxServerPingDelayMs;
    const check = () => {
      const silent = Date.now() - this.#lastFrameAt;
      if (silent >= limit) this.#drop(gen, { code: sdkCodes.no_ping.code, reason: sdkCodes.no_ping.reason });
      else this.#pingTimer = setTimeout(check, limit - silent);
    };
    this.#pingTimer = setTimeout(check, limit);
  }

  // ------------------------------------------------------------------ tokens

  #scheduleRefresh(ttl: number | undefined): void {
    clearTimeout(this.#refreshTimer);
    if (typeof ttl !== 'number' || this.#o.getToken === undefined) return;
    const ttlMs = ttl * 1000;
    const delay = Math.max(0, ttlMs - Math.min(ttlMs / 2, REFRESH_MARGIN_MS));
    this.#refreshTimer = setTimeout(() => void this.#refresh(), delay);
  }

  /**
   * Gets a fresh token before the current one expires and hands it to the
   * server with `refresh`. A server without `refresh` (reply 104) closes the
   * connection with 3003 at expiry; the client then reconnects at once with
   * the token fetched here.
   */
  async #refresh(): Promise<void> {
    const getToken = this.#o.getToken;
    if (this.#refreshing || getToken === undefined || this.#state !== 'connected') return;
    // One refresh at a time: a `refresh` push during ours is answered by ours.
    this.#refreshing = true;
    const gen = this.#gen;
    let token: string;
    try {
      token = await getToken();
    } catch (error) {
      this.#refreshing = false;
      this.emit('error', { code: sdkCodes.token_error.code, message: `getToken failed: ${String(error)}` });
      if (gen === this.#gen && this.#state === 'connected') this.#refreshTimer = setTimeout(() => void this.#refresh(), TOKEN_RETRY_MS);
      return;
    }
    this.#token = token;
    this.#tokenFresh = true;
    if (gen !== this.#gen || this.#state !== 'connected') {
      this.#refreshing = false;
      return;
    }
    this.#sendCommand('refresh', { token }, (reply) => {
      this.#refreshing = false;
      if (gen !== this.#gen) return;
      if ('error' in reply) {
        if (reply.error.code !== replyErrors.method_not_found.code) this.emit('error', { code: reply.error.code, message: `refresh failed: ${reply.error.message}` });
        return;
      }
      this.#tokenFresh = false;
      this.#scheduleRefresh((reply.result as { ttl?: number } | undefined)?.ttl);
    });
  }

  // ------------------------------------------------------------------ frames

  #onFrame(frame: ServerFrame): void {
    this.#lastFrameAt = Date.now();
    if ('id' in frame && typeof frame.id === 'number') {
      const pending = this.#pending.get(frame.id);
      if (pending === undefined) return;
      this.#pending.delete(frame.id);
      clearTimeout(pending.timer);
      pending.callback(frame);
      return;
    }
    if (!('push' in frame)) return;
    const kind = (frame as { push: string }).push;
    switch (kind) {
      case 'connected':
        if (this.#transport?.pushesConnected === true) this.#onConnected(frame as PushOf<'connected'>);
        return;
      case 'subscribed':
        this.#onSubscribedPush(frame as PushOf<'subscribed'>);
        return;
      case 'publication': {
        const push = frame as PushOf<'publication'>;
        const sub = this.#subs.get(push.channel);
        if (sub !== undefined && sub._publication(push.offset, push.data, push.info, push.prev) === 'gap') this.#resubscribe(sub, true);
        return;
      }
      case 'join':
      case 'leave': {
        const push = frame as PushOf<'join'>;
        this.#subs.get(push.channel)?._joinLeave(kind, push.info);
        return;
      }
      case 'unsubscribed':
        this.#onUnsubscribedPush(frame as PushOf<'unsubscribed'>);
        return;
      case 'ping':
        if (this.#transport?.answersPing === true && this.#state === 'connected') this.#transport.send({ method: 'pong' });
        return;
      case 'refresh':
        void this.#refresh();
        return;
      default:
        return;
    }
  }

  // ----------------------------------------------------------- subscriptions

  /**
   * `pipelined`: sent behind `connect` before its reply (WebSocket). A subscription that must first fetch
   * its token, or waits for a retry, is left for the connect reply (`#onConnected`).
   */
  #sendSubscribe(sub: Subscription<unknown>, pipelined = false): void {
    if ((this.#state !== 'connected' && !pipelined) || sub.state !== 'subscribing' || this.#subs.get(sub.channel) !== sub) return;
    if (pipelined && (sub._retryTimer !== undefined || (sub._token === undefined && sub._getToken !== undefined))) return;
    const transport = this.#transport!;
    const gen = this.#gen;
    sub._requestedGen = gen;
    if (sub._token === undefined && sub._getToken !== undefined) {
      sub._getToken(sub.channel).then(
        (token) => {
          sub._token = token;
          if (gen === this.#gen && sub._requestedGen === gen) {
            sub._requestedGen = -1;
            this.#sendSubscribe(sub);
          }
        },
        (error: unknown) => {
          if (gen === this.#gen && sub._requestedGen === gen) this.#onSubscribeError(sub, sdkCodes.token_error.code, `getToken failed: ${String(error)}`);
        },
      );
      return;
    }
    const params: Record<string, unknown> = { channel: sub.channel, ...sub._tracker.recoverParams() };
    if (sub._token !== undefined) params['token'] = sub._token;
    this.#sendCommand('subscribe', params, (reply) => {
      if (gen !== this.#gen || sub.state !== 'subscribing') return;
      if ('error' in reply) {
        this.#onSubscribeError(sub, reply.error.code, reply.error.message);
        return;
      }
      // WebSocket: the reply is the result, publications follow it. SSE and
      // long polling: the `subscribed` push on the stream is (it may still be on its way).
      if (transport.pushesSubscribed) this.#armSubscribeTimeout(sub);
      else sub._applySubscribed(reply.result as SubscribeResult);
    });
  }

  #armSubscribeTimeout(sub: Subscription<unknown>): void {
    sub._clearTimers();
    const gen = this.#gen;
    sub._timeoutTimer = setTimeout(() => {
      if (gen === this.#gen && sub.state === 'subscribing') this.#onSubscribeError(sub, sdkCodes.timeout.code, sdkCodes.timeout.reason);
    }, this.#o.timeoutMs);
  }

  #onSubscribeError(sub: Subscription<unknown>, code: number, message: string): void {
    if (this.#subs.get(sub.channel) !== sub || sub.state !== 'subscribing') return;
    sub._requestedGen = -1;
    sub._clearTimers();
    if (code === replyErrors.already_subscribed.code || code === sdkCodes.timeout.code) {
      // The server may hold a subscription we do not know about: start it over.
      sub._error(code, message);
      this.#resubscribe(sub, true, true);
      return;
    }
    const expiredForGood = code === replyErrors.token_expired.code && sub._private && sub._getToken === undefined;
    if (code === replyErrors.token_expired.code && sub._getToken !== undefined) sub._token = undefined;
    if (isTemporaryReplyError(code) && !expiredForGood) {
      sub._error(code, message);
      this.#retrySubscribe(sub);
      return;
    }
    this.#subs.delete(sub.channel);
    sub._error(code, message);
    sub._end(code, message);
  }

  #retrySubscribe(sub: Subscription<unknown>): void {
    clearTimeout(sub._retryTimer);
    const delay = backoffDelay(sub._attempt++, this.#o.backoff, this.#o.random);
    sub._retryTimer = setTimeout(() => {
      sub._retryTimer = undefined;
      this.#sendSubscribe(sub);
    }, delay);
  }

  /** Subscribes again from the subscription's position (after a gap, 3006, or confusion). */
  #resubscribe(sub: Subscription<unknown>, unsubscribeFirst: boolean, backoff = false): void {
    sub._setSubscribing();
    if (this.#state !== 'connected') return;
    if (unsubscribeFirst) this.#sendCommand('unsubscribe', { channel: sub.channel }, () => {});
    if (backoff) this.#retrySubscribe(sub);
    else this.#sendSubscribe(sub);
  }

  #onSubscribedPush(push: PushOf<'subscribed'>): void {
    const sub = this.#subs.get(push.channel);
    if (sub === undefined) {
      // Unsubscribed meanwhile: the server made it at open. Undo it.
      if (this.#state === 'connected') this.#sendCommand('unsubscribe', { channel: push.channel }, () => {});
      return;
    }
    sub._applySubscribed(push);
  }

  #onUnsubscribedPush(push: PushOf<'unsubscribed'>): void {
    const sub = this.#subs.get(push.channel);
    if (sub === undefined) return;
    if (closeAction(push.code) === 'stop') {
      this.#subs.delete(push.channel);
      sub._end(push.code, push.reason);
      return;
    }
    // A code in the reconnect range: the server dropped the subscription; recover it.
    this.#resubscribe(sub, false);
  }
}
