/**
 * One connection's state machine: new → connected → closed. It runs the
 * client's commands, keeps its subscriptions with their positions, and
 * writes to its transport. Transport-agnostic: WebSocket, SSE and long
 * polling all drive a Client the same way.
 */
import { randomUUID } from 'node:crypto';
import {
  disconnects,
  encodePositionEntry,
  encodePositions,
  encodePush,
  encodeReply,
  encodeReplyError,
  PROTOCOL_VERSION,
  replyErrors,
  shouldReconnect,
  type ClientInfo,
  type Command,
  type ConnectResult,
  type DisconnectName,
  type ReplyErrorName,
  type StreamPosition,
  type SubscribeResult,
} from '@herald/protocol';
import type { HistoryPage, StoredPublication } from '../broker/broker.ts';
import { TokenError } from '../auth/jwt.ts';
import { BrokerUnavailableError } from '../broker/broker.ts';
import { diagnostics } from '../observability/diagnostics.ts';
import { EncodedFrame } from './encoded-frame.ts';
import { conflationKey, latestValues, LatestByKey, withPrev } from './conflation.ts';
import type { Transport } from './transport.ts';
import { Outbox } from './write-scheduler.ts';
import type { NamespaceConfig } from '../config/schema.ts';
import type { ForwardedRequest, HookConnection } from '../hooks/hooks.ts';
import type { Node } from './node.ts';
import { appChannel, isReservedUserId, nativeName } from '../apps/apps.ts';
import type { ConnectionIdentity, TokenVerifier } from '../auth/jwt.ts';
import type { AppScope } from '../transports/app-paths.ts';
import type { ResolvedChannel } from './channel-rules.ts';

/** Where the reply to one command goes (the socket, or an HTTP response). */
export type ReplySink = (frame: string) => void;

/** A live publication held while its subscription is being established. */
interface HeldPublication {
  readonly offset: number;
  readonly frame: EncodedFrame;
}

/** One client's subscription to one channel (one object per subscription: kept small). */
export class Subscription {
  readonly client: Client;
  readonly channel: string;
  /** The channel's namespace options (shared, frozen). */
  readonly options: NamespaceConfig;
  readonly recoverable: boolean;
  epoch = '';
  /** Offset of the last publication written to the client. */
  offset = 0;
  /** While (re)subscribing: live publications held back until history is sent; null once established. */
  pending: HeldPublication[] | null = [];
  pendingBytes = 0;
  /** Conflated channels: the newest publication per key held while the connection is behind (created the first time it is). */
  latest: LatestByKey | undefined = undefined;
  /** Channel info the subscribe hook attached (hooks/hooks.ts); undefined without. */
  chanInfo: unknown = undefined;

  constructor(client: Client, channel: string, options: NamespaceConfig) {
    this.client = client;
    this.channel = channel;
    this.options = options;
    this.recoverable = options.historySize > 0;
  }

  /** The subscriber's info in this channel: the connection's, with the subscribe hook's `chan_info` when it attached one. */
  get info(): ClientInfo {
    const info = this.client.info;
    return this.chanInfo === undefined ? info : { ...info, chan_info: this.chanInfo };
  }
}

export interface SubscribeRequest {
  readonly channel: string;
  readonly token?: string | undefined;
  readonly recover?: boolean | undefined;
  readonly epoch?: string | undefined;
  readonly offset?: number | undefined;
}

export interface SubscribeOutcome {
  readonly result: SubscribeResult;
  /** Writes what follows the reply: recovered, then held publications. */
  readonly flush: () => void;
}

/** What one read of a subscription's stream found: the subscribe result, what was missed, where delivery resumes. */
interface StreamRead {
  readonly result: SubscribeResult;
  readonly missed: readonly StoredPublication[];
  /** Offset after which delivery continues (the recovered-from offset, or the stream top). */
  readonly offset: number;
  /** `missed` are the latest values of a conflated channel: they skip offsets. */
  readonly latest: boolean;
}

/** How far establishing a subscription got, so that a retry does not repeat it. */
interface Establishing {
  joined: boolean;
}

/** Subscriptions to resynchronize as soon as they are established (a reset arrived meanwhile). */
const resyncAfterFlush = new WeakSet<Subscription>();

/** Backoff between attempts to establish a held subscription: 100 ms doubling to 2 s, with jitter. */
function retryDelayMs(attempt: number): number {
  return Math.min(2000, 100 * 2 ** Math.min(attempt, 5)) * (0.5 + Math.random() / 2);
}

export class CommandError extends Error {
  readonly reply: ReplyErrorName;
  /** What in the command was wrong (the reply's `detail`), when known. */
  readonly detail: string | undefined;
  /** The code and message the application's hook refused with, instead of the registry's (`reply` is then permission_denied). */
  readonly entry: { readonly code: number; readonly message: string } | undefined;
  constructor(reply: ReplyErrorName, detail?: string, entry?: { readonly code: number; readonly message: string }) {
    super(reply);
    this.reply = reply;
    this.detail = detail;
    this.entry = entry;
  }

  /** A refusal by a hook: its code (application range) and message go to the client. */
  static denied(code: number, message: string): CommandError {
    return new CommandError('permission_denied', undefined, { code, message });
  }
}

export class DisconnectError extends Error {
  readonly disconnect: DisconnectName;
  /** The code and reason the connect hook refused with, instead of the registry's (`disconnect` is then permission_denied). */
  readonly entry: { readonly code: number; readonly reason: string } | undefined;
  constructor(disconnect: DisconnectName, entry?: { readonly code: number; readonly reason: string }) {
    super(disconnect);
    this.disconnect = disconnect;
    this.entry = entry;
  }
}

const noop = () => {};
const pingFrame = new EncodedFrame(encodePush({ push: 'ping' }));

/** A subscription `Client.addHeld` added, waiting for `Client.establishHeld`. */
export interface HeldSubscription {
  readonly sub: Subscription;
  readonly recovering: boolean;
}

/**
 * The last single-channel position entry made and what it was made of: a
 * publication reaches every subscriber of its channel in one burst, each
 * asking for the same entry, so one string serves them all (and the
 * long-poll transport's cursor JSON cache then sees the same string).
 */
let lastEntryChannel = '';
let lastEntryEpoch = '';
let lastEntryOffset = -1;
let lastEntry = '';
function positionEntry(channel: string, epoch: string, offset: number): string {
  if (offset !== lastEntryOffset || channel !== lastEntryChannel || epoch !== lastEntryEpoch) {
    lastEntry = encodePositionEntry(nativeName(channel), epoch, offset);
    lastEntryChannel = channel;
    lastEntryEpoch = epoch;
    lastEntryOffset = offset;
  }
  return lastEntry;
}

/** Every field of a subscribe result (a field added to SubscribeResult must be added here: `subscribedFrame` compares them all). */
const SUBSCRIBE_RESULT_FIELDS = Object.keys({
  recoverable: true,
  epoch: true,
  offset: true,
  was_recovering: true,
  recovered: true,
  conflated: true,
} satisfies Record<keyof SubscribeResult, true>) as (keyof SubscribeResult)[];

/**
 * The last `subscribed` push made and what it was made of: in a reconnect
 * storm the subscribers of a channel are established one after the other
 * with the same result (the same stream read), so one frame serves them
 * all, as the position entry above.
 */
let lastSubscribedChannel = '';
let lastSubscribedResult: SubscribeResult | undefined;
let lastSubscribedFrame: EncodedFrame | undefined;
function subscribedFrame(channel: string, result: SubscribeResult): EncodedFrame {
  const last = lastSubscribedResult;
  let same = last !== undefined && channel === lastSubscribedChannel;
  for (let i = 0; same && i < SUBSCRIBE_RESULT_FIELDS.length; i++) same = result[SUBSCRIBE_RESULT_FIELDS[i]!] === last![SUBSCRIBE_RESULT_FIELDS[i]!];
  if (!same || lastSubscribedFrame === undefined) {
    lastSubscribedFrame = new EncodedFrame(encodePush({ push: 'subscribed', channel: nativeName(channel), ...result }));
    lastSubscribedChannel = channel;
    lastSubscribedResult = result;
  }
  return lastSubscribedFrame;
}

export class Client {
  readonly id = randomUUID();
  readonly transport: Transport;
  readonly node: Node;
  user = '';
  /** The connect token's `sub` (undefined without a token): what a `refresh` token must name, whatever user the connect hook set. */
  #tokenUser: string | undefined;
  connInfo: unknown = undefined;
  name = '';
  state: 'new' | 'connected' | 'closed' = 'new';
  /** The subscriptions: the only one held directly (the common case), more than one in a map by channel. */
  #subscriptions: Subscription | Map<string, Subscription> | undefined = undefined;
  /** Last inbound activity (command, pong, poll), epoch ms. */
  lastActivity: number;
  /**
   * Whether missing activity means a dead peer. True on WebSocket (pong
   * frames) and long polling (polls); on SSE only once the client has sent a
   * command, so receive-only EventSource listeners are never cut for silence.
   */
  expectsActivity: boolean;
  /**
   * Token the transport handler found outside the protocol (a cookie checked
   * against the origin allowlist); `connect` uses it when it carries none.
   */
  fallbackToken: string | undefined = undefined;
  /** The client announced batched frames outside `connect` (the WebSocket URL's `batch=1`). */
  batchRequested = false;
  /** `jti` of the connection token, for revocation by token id. */
  tokenId: string | undefined = undefined;
  /** The client's address as the transport saw it (trusted proxies honoured); '' when unknown. */
  address = '';
  /** Headers and cookies of the opening request that some hook forwards (hooks/hooks.ts); undefined when none does. */
  forwarded: ForwardedRequest | undefined = undefined;
  /**
   * The app of a connection opened on a non-default app's path
   * (`/apps/{id}/connection/…`, transports/app-paths.ts): its channels are
   * the app's and its tokens are signed with the app's secret. Undefined:
   * the server's own channels and tokens. Set by the transport before any command.
   */
  scope: AppScope | undefined = undefined;
  /** When the connection was opened, epoch ms. */
  readonly openedAt: number;
  #info: ClientInfo | undefined;
  #connecting: Promise<void> | undefined;
  /**
   * The one timer a connection runs: once connected with an expiring token,
   * the refresh timer, then the expiry timer (the grace after the `refresh`
   * push). While `new` the node's stale watch has it instead (`#staleSlot`).
   */
  #timer: NodeJS.Timeout | undefined;
  /** Its slot in the node's stale watch (core/stale-watch.ts) while `new`; -1 after. */
  #staleSlot: number;
  #tokens: number;
  #tokensAt: number;
  #windowStart: number;
  #windowCount = 0;
  /**
   * Run once when the connection has closed and its cleanup is done: undefined
   * until the first listener (most connections have none), the listener
   * itself while it is the only one (an SSE or long-poll session's: no
   * array per session), null once run.
   */
  #closeListeners: (() => void) | (() => void)[] | null | undefined;
  /** Once the client announced batched frames: its queue in the node's write scheduler (write-scheduler.ts). */
  #outbox: Outbox | undefined = undefined;
  /** Conflated subscriptions holding publications until the transport drains (core/conflation.ts). */
  #behind: Subscription[] | undefined;

  constructor(node: Node, transport: Transport) {
    this.node = node;
    this.transport = transport;
    const now = node.now();
    this.lastActivity = now;
    this.openedAt = now;
    this.expectsActivity = transport.kind !== 'sse';
    this.#tokens = node.config.limits.inboundBurst;
    this.#tokensAt = now;
    this.#windowStart = now;
    this.#staleSlot = node.stale.add(this);
    diagnostics.connectionOpened.publish({ node: node.id, transport: transport.kind });
  }

  /** Calls `listener` once the connection has closed and cleaned up (at once if it has). */
  onClosed(listener: () => void): void {
    const listeners = this.#closeListeners;
    if (listeners === null) {
      listener();
      return;
    }
    if (listeners === undefined) this.#closeListeners = listener;
    else if (typeof listeners === 'function') this.#closeListeners = [listeners, listener];
    else listeners.push(listener);
  }

  /** Resolves when the client has closed and cleaned up. */
  get closed(): Promise<void> {
    return new Promise((resolve) => this.onClosed(resolve));
  }

  #cleanedUp(): void {
    this.node.forgetClient(this);
    const listeners = this.#closeListeners;
    this.#closeListeners = null;
    if (typeof listeners === 'function') listeners();
    else if (listeners !== undefined && listeners !== null) for (const listener of listeners) listener();
  }

  get isClosed(): boolean {
    return this.state === 'closed';
  }

  /** The server-internal name of a channel the client named (after the grammar check): the app's channel on an app's path. */
  internalChannel(channel: string): string {
    return this.scope === undefined ? channel : appChannel(this.scope.app, channel);
  }

  /**
   * Who the connection is for the per-user counts (hub, snapshots,
   * limits.maxConnectionsPerUser): the user id on the server's own paths,
   * `~{app id}~` + the user id on an app's path, so that the same id in two
   * apps is two users. '' for an anonymous connection.
   */
  get userKey(): string {
    return this.scope === undefined || this.user === '' ? this.user : this.scope.app.channelPrefix + this.user;
  }

  /**
   * A token's identity as revocations know it: on an app's path the user is
   * `~{app id}~` + its id (userKey's form), so a revocation of the server's
   * `ann` is not app X's `ann`'s, and X's `ann` is revoked by that name
   * (`revoke_user` with it; the console does so for an app's user).
   */
  revocable(identity: ConnectionIdentity): ConnectionIdentity {
    return this.scope === undefined ? identity : { ...identity, user: this.scope.app.channelPrefix + identity.user };
  }

  /** The verifier of this connection's tokens: its app's, else the server's. */
  get tokens(): TokenVerifier {
    return this.scope?.tokens ?? this.node.tokens;
  }

  /** The subscription to `channel` (internal name), if any. */
  subscription(channel: string): Subscription | undefined {
    const subs = this.#subscriptions;
    if (subs === undefined) return undefined;
    if (subs instanceof Subscription) return subs.channel === channel ? subs : undefined;
    return subs.get(channel);
  }

  get subscriptionCount(): number {
    const subs = this.#subscriptions;
    return subs === undefined ? 0 : subs instanceof Subscription ? 1 : subs.size;
  }

  /** The subscriptions now (a copy). */
  subscriptionList(): Subscription[] {
    const subs = this.#subscriptions;
    return subs === undefined ? [] : subs instanceof Subscription ? [subs] : [...subs.values()];
  }

  #addSubscription(sub: Subscription): void {
    const subs = this.#subscriptions;
    if (subs === undefined) this.#subscriptions = sub;
    else if (subs instanceof Subscription) this.#subscriptions = new Map([[subs.channel, subs], [sub.channel, sub]]);
    else subs.set(sub.channel, sub);
  }

  /** Forgets `sub` if it is still the subscription to its channel; true if it was. */
  #dropSubscription(sub: Subscription): boolean {
    const subs = this.#subscriptions;
    if (subs === sub) {
      this.#subscriptions = undefined;
      return true;
    }
    if (subs instanceof Map && subs.get(sub.channel) === sub) {
      subs.delete(sub.channel);
      return true;
    }
    return false;
  }

  get info(): ClientInfo {
    this.#info ??=
      this.connInfo === undefined
        ? { client: this.id, user: this.user }
        : { client: this.id, user: this.user, conn_info: this.connInfo };
    return this.#info;
  }

  #forgetStale(): void {
    if (this.#staleSlot < 0) return;
    this.node.stale.forget(this.#staleSlot);
    this.#staleSlot = -1;
  }

  /** Counts one inbound message against the rate limits. False: reply too_many_requests. */
  admitInbound(): boolean {
    const limits = this.node.config.limits;
    const now = this.node.now();
    this.lastActivity = now;
    this.expectsActivity = true;
    if (now - this.#windowStart >= 1000) {
      this.#windowStart = now;
      this.#windowCount = 0;
    }
    if (++this.#windowCount > limits.inboundHardPerSecond) {
      this.disconnect('too_many_requests');
      return false;
    }
    this.#tokens = Math.min(limits.inboundBurst, this.#tokens + ((now - this.#tokensAt) * limits.inboundRatePerSecond) / 1000);
    this.#tokensAt = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Runs one decoded command; exactly one reply goes to `reply` when it has an id. */
  async handleCommand(command: Command, reply: ReplySink): Promise<void> {
    // The answer to a `ping` push carries no id and gets no reply.
    if (command.id === undefined) return;
    const id = command.id;
    // Commands pipelined behind `connect` wait for it, in arrival order.
    if (this.#connecting !== undefined) await this.#connecting;
    try {
      if (this.isClosed) return;
      if (command.method !== 'connect' && this.state !== 'connected') throw new CommandError('not_connected');
      if (command.method === 'subscribe') {
        const outcome = await this.subscribe(command.params);
        if (!this.isClosed) reply(encodeReply(id, outcome.result));
        outcome.flush();
        return;
      }
      const running = this.#run(command);
      if (command.method === 'connect') {
        const connecting = running.then(noop, noop);
        this.#connecting = connecting;
        void connecting.then(() => {
          if (this.#connecting === connecting) this.#connecting = undefined;
        });
      }
      const result = await running;
      if (!this.isClosed) reply(encodeReply(id, result));
      if (command.method === 'connect' && (result as ConnectResult).batch === true) this.enableBatching();
    } catch (error) {
      if (error instanceof DisconnectError) {
        if (error.entry !== undefined) this.close(error.entry.code, error.entry.reason);
        else this.disconnect(error.disconnect);
        return;
      }
      const name: ReplyErrorName = error instanceof CommandError ? error.reply : error instanceof BrokerUnavailableError ? 'unavailable' : 'internal';
      if (name === 'internal') this.node.logger.error({ err: error, method: command.method }, 'command failed');
      const entry = (error instanceof CommandError ? error.entry : undefined) ?? replyErrors[name];
      diagnostics.commandError.publish({ node: this.node.id, method: command.method, code: entry.code });
      if (!this.isClosed) reply(encodeReplyError(id, entry, error instanceof CommandError ? error.detail : undefined));
    }
  }

  /** Answers a command that failed to decode but had an id; `detail` says what was wrong. */
  replyError(id: number, name: ReplyErrorName, reply: ReplySink, detail?: string): void {
    diagnostics.commandError.publish({ node: this.node.id, method: 'unknown', code: replyErrors[name].code });
    reply(encodeReplyError(id, replyErrors[name], detail));
  }

  async #run(command: Command): Promise<unknown> {
    switch (command.method) {
      case 'connect':
        return this.connect(command.params?.token, command.params?.name, command.params?.batch === true || this.batchRequested);
      case 'unsubscribe':
        await this.unsubscribe(this.internalChannel(command.params.channel));
        return {};
      case 'publish':
        return this.node.clientPublish(this, command.params.channel, command.params.data);
      case 'history':
        return this.node.clientHistory(this, command.params);
      case 'presence':
        return this.node.clientPresence(this, command.params.channel);
      case 'presence_stats':
        return this.node.clientPresenceStats(this, command.params.channel);
      case 'refresh':
        return this.refresh(command.params.token);
      case 'rpc':
        return this.node.clientRpc(this, command.params.method, command.params.data);
      case 'ping':
      case 'pong':
        return {};
      default:
        throw new CommandError('method_not_found');
    }
  }

  /**
   * Authenticates the connection. Throws DisconnectError for bad tokens.
   * `batch`: the client announced batched frames; the result then says
   * `batch: true`, and the caller calls `enableBatching` once it is written.
   * Synchronous (the result, or a throw) when there is nothing to ask: no
   * token to verify and no connect hook.
   */
  connect(token: string | undefined, name?: string, batch = false): ConnectResult | Promise<ConnectResult> {
    if (this.state !== 'new') throw new CommandError('already_connected');
    if (token === undefined || token === '') token = this.fallbackToken;
    const tokenPresent = token !== undefined && token !== '';
    const hooks = this.node.hooks;
    const hooked = hooks !== undefined && hooks.has('connect', '') && (tokenPresent || hooks.connectWithoutToken);
    if (!tokenPresent) {
      // An app's path: a token signed with the app's secret, always.
      if (this.scope !== undefined) throw new DisconnectError('permission_denied');
      if (!this.node.rules.anonymousAllowed && !(hooks !== undefined && hooks.connectWithoutToken)) throw new DisconnectError('permission_denied');
      // Nothing to ask (no token to verify, no hook): connected at once, without a promise (a storm opens thousands).
      if (!hooked) return this.#connected(name, batch, undefined);
    }
    return this.#connectAsking(token, tokenPresent, hooked, name, batch);
  }

  /** `connect` that verifies a token or asks the connect hook. */
  async #connectAsking(token: string | undefined, tokenPresent: boolean, hooked: boolean, name: string | undefined, batch: boolean): Promise<ConnectResult> {
    let expiresAt: number | undefined;
    const hooks = this.node.hooks;
    if (tokenPresent) {
      const identity = await this.#verifyConnectionToken(token!);
      this.user = identity.user;
      this.#tokenUser = identity.user;
      this.connInfo = identity.info;
      this.tokenId = identity.tokenId;
      expiresAt = identity.expiresAt;
    }
    if (hooked && hooks !== undefined) {
      if (this.state !== 'new') throw new DisconnectError('internal');
      const decision = await hooks.connect({ ...this.hookConnection(), name, tokenPresent });
      if (decision.outcome === 'deny') throw new DisconnectError('permission_denied', { code: decision.code, reason: decision.message });
      if (decision.outcome === 'unavailable') {
        if (!decision.failOpen) throw new DisconnectError('hook_unavailable');
      } else {
        // A user id beginning with `~` is another app's user's as the node counts them (isReservedUserId).
        if (decision.user !== undefined && isReservedUserId(decision.user)) {
          this.node.logger.warn({ client: this.id }, 'connect hook answered a user id beginning with "~" (reserved for apps\' users): connection refused');
          throw new DisconnectError('permission_denied');
        }
        if (decision.user !== undefined) this.user = decision.user;
        if (decision.expiresAt !== undefined) expiresAt = decision.expiresAt;
        if ('info' in decision) this.connInfo = decision.info;
      }
      if (this.user === '' && !this.node.rules.anonymousAllowed) throw new DisconnectError('permission_denied');
    }
    if (this.state !== 'new') throw new DisconnectError('internal');
    return this.#connected(name, batch, expiresAt);
  }

  /** The end of `connect`: the connection counts as connected. */
  #connected(name: string | undefined, batch: boolean, expiresAt: number | undefined): ConnectResult {
    this.name = name ?? '';
    this.state = 'connected';
    this.#forgetStale();
    this.node.hub.addClient(this);
    const result: { client: string; version: string; protocol: number; ping: number; ttl?: number; batch?: boolean } = {
      client: this.id,
      version: this.node.version,
      protocol: PROTOCOL_VERSION,
      ping: Math.round(this.node.config.ping.intervalMs / 1000),
    };
    const ttl = this.#scheduleExpiry(expiresAt);
    if (ttl !== undefined) result.ttl = ttl;
    if (batch) result.batch = true;
    return result;
  }

  async #verifyConnectionToken(token: string) {
    let identity;
    try {
      identity = await this.tokens.verifyConnectionToken(token);
    } catch (error) {
      if (error instanceof TokenError) throw new DisconnectError(error.kind === 'expired' ? 'token_expired' : 'invalid_token');
      throw error;
    }
    if (this.node.revocations.isRevoked(this.revocable(identity))) throw new DisconnectError('revoked');
    return identity;
  }

  /**
   * Token expiry on a live connection: at `exp` a `refresh` push asks for a
   * new token; without one, the connection closes with 3003 after the grace.
   * Returns the seconds until expiry.
   */
  #scheduleExpiry(expiresAt: number | undefined): number | undefined {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    if (expiresAt === undefined) return undefined;
    const ttl = Math.max(0, expiresAt - this.node.now());
    const grace = this.node.tokenExpiryGraceMs;
    this.#timer = setTimeout(() => {
      const hooks = this.node.hooks;
      if (hooks !== undefined && hooks.has('refresh', '')) {
        this.#timer = undefined;
        void this.#refreshByHook();
        return;
      }
      this.writePush(new EncodedFrame(encodePush({ push: 'refresh', grace: Math.round(grace / 1000) })));
      this.#timer = setTimeout(() => this.disconnect('token_expired'), grace);
      this.#timer.unref();
    }, ttl);
    this.#timer.unref();
    return Math.floor(ttl / 1000);
  }

  /**
   * The connection expired and a refresh hook is configured: the backend
   * extends it (or not) instead of the client sending a new token.
   */
  async #refreshByHook(): Promise<void> {
    const decision = await this.node.hooks!.refresh(this.hookConnection());
    if (this.isClosed || this.#timer !== undefined) return;
    if (decision.outcome === 'deny') {
      this.disconnect('token_expired');
      return;
    }
    if (decision.outcome === 'unavailable') {
      if (!decision.failOpen) {
        this.disconnect('hook_unavailable');
        return;
      }
      // Open: asked again after the expiry grace.
      this.#scheduleExpiry(this.node.now() + this.node.tokenExpiryGraceMs);
      return;
    }
    if ('info' in decision) {
      this.connInfo = decision.info;
      this.#info = undefined;
    }
    this.#scheduleExpiry(decision.expiresAt);
  }

  /** The connection as hooks see it (hooks/hooks.ts). */
  hookConnection(): HookConnection {
    const kind = this.transport.kind;
    return {
      client: this.id,
      user: this.user,
      transport: kind === 'long-poll' ? 'long_poll' : kind,
      address: this.address,
      ...(this.connInfo === undefined ? {} : { connInfo: this.connInfo }),
      forwarded: this.forwarded,
      ...(this.scope === undefined ? {} : { app: this.scope.app.id }),
    };
  }

  /**
   * Replaces the connection token on a live connection. The token's `sub`
   * must be the one the connection authenticated with (the connect token's,
   * even when the connect hook set another user, who stays); without a
   * connect token, the user the hook set. Another `sub` disconnects.
   */
  async refresh(token: string): Promise<{ ttl?: number }> {
    let identity;
    try {
      identity = await this.#verifyConnectionToken(token);
    } catch (error) {
      if (error instanceof DisconnectError && error.disconnect === 'token_expired') throw new CommandError('token_expired');
      throw error;
    }
    if (identity.user !== (this.#tokenUser ?? this.user)) throw new DisconnectError('invalid_token');
    this.tokenId = identity.tokenId;
    const ttl = this.#scheduleExpiry(identity.expiresAt);
    return ttl === undefined ? {} : { ttl };
  }

  /**
   * Subscribes with optional recovery (the `subscribe` command). Live
   * publications arriving meanwhile are held in `pending`. The caller writes
   * the reply, then calls `flush`, which writes (SSE/long polling: a
   * `subscribed` push first) the recovered publications and then the held
   * ones, merged by offset. A failure removes the subscription again and is
   * thrown (CommandError, or BrokerUnavailableError → reply 116).
   */
  async subscribe(request: SubscribeRequest): Promise<SubscribeOutcome> {
    const prepared = this.#prepare(request);
    const sub = prepared instanceof Promise ? await prepared : prepared;
    const progress: Establishing = { joined: false };
    let read: StreamRead;
    try {
      read = await this.#establish(sub, request.recover === true, progress);
    } catch (error) {
      await this.#abandon(sub, progress);
      throw error;
    }
    return { result: read.result, flush: () => this.#flushSubscription(sub, read) };
  }

  /**
   * SSE, long polling and a WebSocket opened in its upgrade request: a subscription the server holds for the client,
   * named when the connection opened (URL, body or position vector). Its
   * position stays in the connection's vector from the start. While the
   * engine is unavailable the server retries it (in the background, after
   * this first attempt) for `engine.unavailableRetryMs`, then closes the
   * connection with 3002; the client never has to ask again.
   *
   * Two steps, so that a connection's held subscriptions are all in its
   * position vector before the first is established: `addHeld` checks the
   * request and adds the subscription (throws CommandError only for a
   * request that can never succeed); `establishHeld` makes the first attempt.
   * Were one established before the next was added, the `subscribed` frame of
   * the first would carry an id without the others' positions, and a client
   * cut right after it would resume them fresh: a silent gap.
   */
  addHeld(request: SubscribeRequest): HeldSubscription | Promise<HeldSubscription> {
    // Synchronous (it throws, no promise) unless `#prepare` must ask a token or a hook: a storm opens thousands.
    const prepared = this.#prepare(request);
    const recovering = request.recover === true;
    return prepared instanceof Promise ? prepared.then((sub) => ({ sub, recovering })) : { sub: prepared, recovering };
  }

  /**
   * The first attempt to establish a subscription `addHeld` added; see `addHeld`. Undefined when it is done already
   * (nothing waited: the engine and the presence store answered at once), else `#hold`'s promise.
   */
  establishHeld(held: HeldSubscription): Promise<void> | undefined {
    return this.#hold(held.sub, held.recovering, { joined: false }, 0, this.node.now() + this.node.config.engine.unavailableRetryMs, false);
  }

  /**
   * Checks a subscribe request and adds its subscription, pending, at the
   * position it recovers from. Synchronous (a subscription, no promise)
   * unless a subscription token or a subscribe hook must be asked.
   */
  #prepare(request: SubscribeRequest): Subscription | Promise<Subscription> {
    const resolved = this.node.resolveFor(this, request.channel);
    this.node.authorizeSubscribe(this, resolved);
    if (this.subscription(resolved.channel) !== undefined) throw new CommandError('already_subscribed');
    const hooks = this.node.hooks;
    if (resolved.options.private || (hooks !== undefined && hooks.has('subscribe', resolved.namespace))) return this.#prepareAsking(request, resolved);
    return this.#addPrepared(request, resolved, undefined);
  }

  /** `#prepare` for a private channel (its subscription token) or a namespace with a subscribe hook. */
  async #prepareAsking(request: SubscribeRequest, resolved: ResolvedChannel): Promise<Subscription> {
    const channel = resolved.channel;
    if (resolved.options.private) await this.node.authorizePrivate(this, resolved, request.token);
    let chanInfo: unknown;
    const hooks = this.node.hooks;
    if (hooks !== undefined && hooks.has('subscribe', resolved.namespace)) {
      if (this.isClosed) throw new CommandError('not_subscribed');
      const decision = await hooks.subscribe({ ...this.hookConnection(), channel: nativeName(channel), namespace: resolved.namespace });
      if (decision.outcome === 'deny') throw CommandError.denied(decision.code, decision.message);
      if (decision.outcome === 'unavailable') {
        if (!decision.failOpen) throw new CommandError('hook_unavailable');
      } else chanInfo = decision.info;
    }
    return this.#addPrepared(request, resolved, chanInfo);
  }

  #addPrepared(request: SubscribeRequest, resolved: ResolvedChannel, chanInfo: unknown): Subscription {
    const channel = resolved.channel;
    if (this.isClosed) throw new CommandError('not_subscribed');
    if (this.subscription(channel) !== undefined) throw new CommandError('already_subscribed');
    if (this.subscriptionCount >= this.node.config.limits.maxChannelsPerConnection) throw new CommandError('limit_exceeded');
    const sub = new Subscription(this, this.node.hub.channelName(channel), resolved.options);
    if (chanInfo !== undefined) sub.chanInfo = chanInfo;
    if (sub.recoverable && request.recover === true && request.epoch !== undefined && request.offset !== undefined) {
      // Until the subscription is established, the position vector carries the position it recovers from.
      sub.epoch = request.epoch;
      sub.offset = request.offset;
    }
    this.#addSubscription(sub);
    diagnostics.subscribed.publish({ node: this.node.id, transport: this.transport.kind });
    return sub;
  }

  /**
   * One attempt to establish a pending subscription: local subscriber with
   * the broker's subscription in place, presence, then the stream read from
   * the subscription's position (its last delivered one, or the one it
   * recovers from). Idempotent up to where `progress` says it got.
   */
  #establish(sub: Subscription, wasRecovering: boolean, progress: Establishing): StreamRead | Promise<StreamRead> {
    // Each step waits only when it must: in a connect storm on an engine that answers from memory a subscription
    // is established without a promise (thousands at once). A step that throws at once throws here.
    const adding = this.node.hub.addSubscription(sub);
    if (adding !== undefined) return adding.then(() => this.#establishJoining(sub, wasRecovering, progress));
    return this.#establishJoining(sub, wasRecovering, progress);
  }

  /** `#establish` from presence on. */
  #establishJoining(sub: Subscription, wasRecovering: boolean, progress: Establishing): StreamRead | Promise<StreamRead> {
    if (!progress.joined) {
      const joining = this.node.joinPresence(this, sub.channel, sub.options, sub.info);
      if (joining !== undefined) {
        return joining.then(() => {
          progress.joined = true;
          return this.#establishReading(sub, wasRecovering);
        });
      }
      progress.joined = true;
    }
    return this.#establishReading(sub, wasRecovering);
  }

  /** `#establish` from the stream's read on. */
  #establishReading(sub: Subscription, wasRecovering: boolean): StreamRead | Promise<StreamRead> {
    const since = sub.recoverable && sub.epoch !== '' ? { epoch: sub.epoch, offset: sub.offset } : undefined;
    const page = this.node.readStream(sub.channel, sub.options, since);
    if (page instanceof Promise) return page.then((read) => this.#established(sub, wasRecovering, since, read));
    return this.#established(sub, wasRecovering, since, page);
  }

  /** `#establish` once the stream is read: what the subscription recovers, or (conflation) the latest values to read. */
  #established(sub: Subscription, wasRecovering: boolean, since: StreamPosition | undefined, page: HistoryPage): StreamRead | Promise<StreamRead> {
    if (this.isClosed || this.subscription(sub.channel) !== sub) throw new CommandError('not_subscribed');
    let recovered = false;
    let missed: readonly StoredPublication[] = [];
    const top = page.position;
    if (since !== undefined && since.epoch === top.epoch && since.offset <= top.offset) {
      const need = top.offset - since.offset;
      const list = page.publications;
      if (list.length === need && (need === 0 || list[0]!.offset === since.offset + 1)) {
        recovered = true;
        missed = list;
      }
    }
    const conflation = sub.options.conflation;
    if (conflation.enabled && sub.recoverable && !recovered) return this.#establishLatest(sub, wasRecovering, recovered);
    const result: SubscribeResult = {
      recoverable: sub.recoverable,
      epoch: top.epoch,
      offset: top.offset,
      was_recovering: wasRecovering,
      recovered,
      ...(conflation.enabled ? { conflated: true as const } : {}),
    };
    return { result, missed, offset: recovered && since !== undefined ? since.offset : top.offset, latest: false };
  }

  /** A conflated subscription that is fresh, or whose gap history does not cover: the latest value per key, from where they continue. */
  async #establishLatest(sub: Subscription, wasRecovering: boolean, recovered: boolean): Promise<StreamRead> {
    const conflation = sub.options.conflation;
    const newest = await this.node.readLatest(sub.channel, sub.options);
    if (this.isClosed || this.subscription(sub.channel) !== sub) throw new CommandError('not_subscribed');
    const missed = latestValues(newest.publications, conflation.key, conflation.maxKeys);
    const offset = missed.length > 0 ? missed[0]!.offset - 1 : newest.position.offset;
    const result: SubscribeResult = { recoverable: true, epoch: newest.position.epoch, offset, was_recovering: wasRecovering, recovered, conflated: true };
    return { result, missed, offset, latest: true };
  }

  /** Undoes a subscription that could not be established (idempotent against close and unsubscribe). */
  async #abandon(sub: Subscription, progress: Establishing): Promise<void> {
    if (this.#dropSubscription(sub)) diagnostics.unsubscribed.publish({ node: this.node.id, transport: this.transport.kind });
    await this.node.hub.removeSubscription(sub);
    if (progress.joined) await this.node.leavePresence(this, sub.channel, sub.options, sub.info)?.catch(() => undefined);
  }

  /**
   * Establishes a subscription the server holds (SSE and long polling),
   * retrying while the engine is unavailable until `deadline`, then closing
   * the connection with 3002. Returns after one attempt; retries run on a
   * timer. Stops quietly once the subscription is gone (unsubscribed, closed).
   */
  #hold(sub: Subscription, wasRecovering: boolean, progress: Establishing, attempt: number, deadline: number, later: boolean): Promise<void> | undefined {
    let read: StreamRead | Promise<StreamRead>;
    try {
      read = this.#establish(sub, wasRecovering, progress);
    } catch (error) {
      return this.#holdFailed(error, sub, wasRecovering, progress, attempt, deadline);
    }
    // `later`: a resynchronization, which may start inside a delivery, flushes after it as it always did.
    if (read instanceof Promise || later) {
      return Promise.resolve(read).then(
        (done) => this.#flushSubscription(sub, done, true),
        (error: unknown) => this.#holdFailed(error, sub, wasRecovering, progress, attempt, deadline),
      );
    }
    // A held subscription has no subscribe reply: its `subscribed` push says how it was made (on every transport).
    this.#flushSubscription(sub, read, true);
    return undefined;
  }

  /** `#hold`'s attempt failed: gone (undone), engine unavailable (retried until `deadline`, then 3002), or a bug (3000). */
  async #holdFailed(error: unknown, sub: Subscription, wasRecovering: boolean, progress: Establishing, attempt: number, deadline: number): Promise<void> {
    if (this.isClosed || this.subscription(sub.channel) !== sub) {
      await this.#abandon(sub, progress);
      return;
    }
    if (!(error instanceof BrokerUnavailableError)) {
      this.node.logger.error({ err: error, channel: sub.channel }, 'subscription failed');
      this.disconnect('internal');
      return;
    }
    if (this.node.now() >= deadline) {
      this.node.logger.warn({ channel: sub.channel, client: this.id }, 'engine unavailable for engine.unavailableRetryMs: closing the connection (3002)');
      this.disconnect('internal');
      return;
    }
    const timer = setTimeout(() => {
      if (this.isClosed || this.subscription(sub.channel) !== sub) return;
      // The next read covers what was held meanwhile.
      sub.pending = [];
      sub.pendingBytes = 0;
      void this.#hold(sub, wasRecovering, progress, attempt + 1, deadline, true);
    }, retryDelayMs(attempt));
    timer.unref();
  }

  #flushSubscription(sub: Subscription, read: StreamRead, pushSubscribed = this.transport.tracksPositions): void {
    if (this.isClosed || this.subscription(sub.channel) !== sub || sub.pending === null) return;
    const pending = sub.pending;
    sub.pending = null;
    sub.pendingBytes = 0;
    sub.epoch = read.result.epoch;
    sub.offset = read.offset;
    if (pushSubscribed) {
      this.#write(subscribedFrame(sub.channel, read.result), true);
    }
    for (const pub of read.missed) {
      if (pub.offset <= sub.offset) continue;
      const frame = this.node.hub.recoveredFrame(sub.channel, pub);
      if (read.latest) this.writeConflated(sub, pub.offset, frame);
      else this.deliverPublication(sub, pub.offset, frame);
    }
    for (const held of pending) this.deliverPublication(sub, held.offset, held.frame);
    if (resyncAfterFlush.delete(sub)) this.insufficientState(sub);
  }

  /** Writes one publication to this client, keeping the no-gap, no-duplicate invariant. */
  deliverPublication(sub: Subscription, offset: number, frame: EncodedFrame): boolean {
    if (this.isClosed) return false;
    if (sub.pending !== null) {
      sub.pending.push({ offset, frame });
      sub.pendingBytes += frame.text.length;
      if (sub.pendingBytes > this.node.config.limits.outboundQueueBytes) this.disconnect('slow');
      return true;
    }
    const conflated = sub.options.conflation.enabled;
    if (sub.recoverable) {
      // Conflated publications held for the connection count as received.
      const last = sub.latest !== undefined && sub.latest.size > 0 ? sub.latest.top : sub.offset;
      if (offset <= last) return false;
      if (offset !== last + 1) {
        this.insufficientState(sub);
        // Held for the resynchronization (SSE, long polling); dropped with the connection (WebSocket).
        (sub.pending as HeldPublication[] | null)?.push({ offset, frame });
        return false;
      }
      if (conflated) return this.writeConflated(sub, offset, frame);
      sub.offset = offset;
      this.#write(frame, true, true, sub.options.writeDelayMs);
      return true;
    }
    if (conflated) return this.writeConflated(sub, offset, frame);
    this.#write(frame, false, true, sub.options.writeDelayMs);
    return true;
  }

  /**
   * A publication on a conflated channel (core/conflation.ts): written now
   * while the connection keeps up, else held as the newest of its key until
   * the transport drains. Never cuts the connection as slow, except for
   * what goes past `maxKeys`.
   */
  writeConflated(sub: Subscription, offset: number, frame: EncodedFrame): boolean {
    const options = sub.options.conflation;
    if ((sub.latest === undefined || sub.latest.size === 0) && this.transport.bufferedBytes() <= options.lagBytes) {
      this.#writeLatest(sub, offset, frame, false);
      return true;
    }
    const latest = (sub.latest ??= new LatestByKey(options.maxKeys));
    const overflow = latest.put(conflationKey(frame, options.key), { offset, frame });
    if (overflow !== undefined) this.#writeLatest(sub, overflow.offset, overflow.frame, true);
    if (latest.replaced >= 256) this.#countConflated(latest);
    this.#awaitDrain(sub);
    return true;
  }

  /** Writes a conflated publication, with `prev` when it skips offsets. */
  #writeLatest(sub: Subscription, offset: number, frame: EncodedFrame, mayCut: boolean): void {
    if (sub.recoverable) {
      if (offset !== sub.offset + 1) frame = withPrev(frame, sub.offset);
      sub.offset = offset;
    }
    this.#write(frame, sub.recoverable, mayCut, sub.options.writeDelayMs);
  }

  /** Reports the publications `latest` replaced (metrics), in bulk: not one event per publication. */
  #countConflated(latest: LatestByKey): void {
    if (latest.replaced > 0 && diagnostics.conflated.hasSubscribers) diagnostics.conflated.publish({ node: this.node.id, count: latest.replaced });
    latest.replaced = 0;
  }

  #awaitDrain(sub: Subscription): void {
    const behind = this.#behind;
    if (behind !== undefined) {
      if (!behind.includes(sub)) behind.push(sub);
      return;
    }
    this.#behind = [sub];
    this.transport.onDrain(() => this.#drained());
  }

  /** The transport drained: writes what conflated subscriptions held (or waits on, while still behind). */
  #drained(): void {
    const behind = this.#behind;
    this.#behind = undefined;
    if (behind === undefined || this.isClosed) return;
    for (const sub of behind) {
      const latest = sub.latest;
      if (latest === undefined || latest.size === 0 || sub.pending !== null || this.subscription(sub.channel) !== sub) continue;
      if (this.transport.bufferedBytes() > sub.options.conflation.lagBytes) {
        this.#awaitDrain(sub);
        continue;
      }
      for (const held of latest.take()) this.#writeLatest(sub, held.offset, held.frame, false);
      this.#countConflated(latest);
    }
  }

  /**
   * The subscription may have missed publications (a gap in offsets, another
   * epoch, a stream reset by the broker). WebSocket: the connection closes
   * with 3006 and the client recovers on reconnect. SSE and long polling:
   * the server resynchronizes the subscription itself from the last
   * position it delivered, and sends `subscribed` with `recovered` true or
   * false; the position vector keeps that position meanwhile.
   */
  insufficientState(sub: Subscription): void {
    if (this.isClosed || this.subscription(sub.channel) !== sub) return;
    if (!this.transport.tracksPositions) {
      this.disconnect('insufficient_state');
      return;
    }
    if (sub.pending !== null) {
      // Being established: resynchronize once that is done.
      resyncAfterFlush.add(sub);
      return;
    }
    sub.pending = [];
    sub.pendingBytes = 0;
    // Conflated publications held were never delivered: the resynchronization reads them again.
    sub.latest?.clear();
    void this.#hold(sub, true, { joined: true }, 0, this.node.now() + this.node.config.engine.unavailableRetryMs, true);
  }

  writePush(frame: EncodedFrame): void {
    if (!this.isClosed) this.#write(frame, false);
  }

  ping(): void {
    const ping = this.node.config.ping;
    if (this.transport.holdsRequest?.() === true) this.lastActivity = this.node.now();
    if (this.expectsActivity && this.node.now() - this.lastActivity > ping.intervalMs * ping.maxMissed) {
      this.disconnect('no_pong');
      return;
    }
    this.flushWrites();
    this.transport.heartbeat(pingFrame);
  }

  /**
   * The client announced batched frames (docs/protocol.md, "Batched
   * frames"): from now on its frames go through the node's write scheduler.
   * Call it once the frame that answers the announcement has been written.
   */
  enableBatching(): void {
    if (this.#outbox === undefined && !this.isClosed) this.#outbox = new Outbox(this);
  }

  get batching(): boolean {
    return this.#outbox !== undefined;
  }

  /** Hands the frames waiting in the write scheduler to the transport now (before a reply that must follow them). */
  flushWrites(): void {
    if (this.#outbox !== undefined) this.node.writes.flush(this.#outbox);
  }

  /** The slow-consumer check: `queued` bytes wait in the write scheduler besides what the transport buffers. */
  checkBacklog(queued: number): void {
    if (this.transport.bufferedBytes() + queued > this.node.config.limits.outboundQueueBytes) this.disconnect('slow');
  }

  /**
   * `mayCut` false: conflated publications, which never make a connection
   * slow. `delayMs`: the namespace's `writeDelayMs` (batching clients only).
   */
  #write(frame: EncodedFrame, positionsChanged: boolean, mayCut = true, delayMs = 0): void {
    const outbox = this.#outbox;
    if (outbox !== undefined) {
      this.node.writes.write(outbox, frame, positionsChanged, delayMs, mayCut);
      return;
    }
    const transport = this.transport;
    transport.write(frame, positionsChanged && transport.tracksPositions ? this.positionVector() : undefined);
    if (mayCut && transport.bufferedBytes() > this.node.config.limits.outboundQueueBytes) this.disconnect('slow');
  }

  /**
   * The position vector: every recoverable subscription that has a position,
   * established or being (re)established (then the position it recovers
   * from). A channel leaves it only when it is unsubscribed.
   */
  positionVector(): string {
    const subs = this.#subscriptions;
    if (subs === undefined) return '';
    if (subs instanceof Subscription) {
      // The common case, on the delivery path: no intermediate array.
      return subs.recoverable && subs.epoch !== '' ? positionEntry(subs.channel, subs.epoch, subs.offset) : '';
    }
    const entries: [string, StreamPosition][] = [];
    for (const sub of subs.values()) {
      if (sub.recoverable && sub.epoch !== '') entries.push([nativeName(sub.channel), sub]);
    }
    return encodePositions(entries);
  }

  async unsubscribe(channel: string): Promise<void> {
    const sub = this.subscription(channel);
    if (sub === undefined) throw new CommandError('not_subscribed');
    this.#dropSubscription(sub);
    diagnostics.unsubscribed.publish({ node: this.node.id, transport: this.transport.kind });
    await this.node.hub.removeSubscription(sub);
    await this.node.leavePresence(this, sub.channel, sub.options, sub.info);
  }

  /** Closes the connection with a registered disconnect. Idempotent. */
  disconnect(name: DisconnectName): void {
    const entry = disconnects[name];
    this.close(entry.code, entry.reason);
  }

  close(code: number, reason: string): void {
    if (this.state === 'closed') return;
    const wasConnected = this.state === 'connected';
    this.state = 'closed';
    clearTimeout(this.#timer);
    this.#forgetStale();
    // What is queued goes out before the close, except to a reader cut for not reading.
    if (this.#outbox !== undefined) this.node.writes.close(this.#outbox, code !== disconnects.slow.code);
    this.transport.close(code, reason);
    diagnostics.connectionClosed.publish({ node: this.node.id, transport: this.transport.kind, code, reason });
    const subs = this.subscriptionList();
    this.#subscriptions = undefined;
    if (wasConnected) this.node.hub.removeClient(this, code, reason);
    void Promise.all(
      subs.map(async (sub) => {
        diagnostics.unsubscribed.publish({ node: this.node.id, transport: this.transport.kind });
        await this.node.hub.removeSubscription(sub);
        await this.node.leavePresence(this, sub.channel, sub.options, sub.info);
      }),
    )
      .catch((error: unknown) => this.node.logger.warn({ err: error }, 'cleanup after close failed'))
      .finally(() => this.#cleanedUp());
    if (code >= 3500 && !shouldReconnect(code)) this.node.logger.debug({ client: this.id, code, reason }, 'connection closed');
  }
}
