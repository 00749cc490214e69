/**
 * Node is the heart of Herald: it owns the hub (local connections and
 * subscriptions), the broker (publications and streams), the presence store
 * and the channel rules, and runs every operation that clients and the
 * server API ask for. Transports create Clients through it; the API calls
 * its methods. It knows nothing of HTTP, WebSocket or config files.
 */
import type { Config, NamespaceConfig } from '../config/schema.ts';
import type { Broker, HistoryPage, PresenceStore } from '../broker/broker.ts';
import { TokenError, type TokenVerifier } from '../auth/jwt.ts';
import type { RevocationList } from '../auth/revocation.ts';
import type { ConnectionDetail, ControlBus, ControlCommand, NodeLiveStats, NodeProcessStats, NodeSnapshot } from '../broker/control.ts';
import { randomUUID } from 'node:crypto';
import { encodePublication, JsonText, type ClientInfo, type HistoryParams, type StreamPosition } from '@herald/protocol';
import { utf8Length } from '@herald/protocol/commands';
import type { ApiResult } from '@herald/protocol/api';
import { diagnostics } from '../observability/diagnostics.ts';
import type { Logger } from './logger.ts';
import { ChannelRules, type ResolvedChannel } from './channel-rules.ts';
import { Client, CommandError } from './client.ts';
import { Hub } from './hub.ts';
import type { Transport } from './transport.ts';
import type { NodeEvents } from './node-events.ts';
import { WriteScheduler } from './write-scheduler.ts';
import { StaleWatch } from './stale-watch.ts';
import type { Hooks } from '../hooks/hooks.ts';
import { nativeName } from '../apps/apps.ts';
import { youngGenerationHold } from '../util/young-generation.ts';

export interface NodeOptions {
  readonly config: Config;
  readonly broker: Broker;
  readonly presence: PresenceStore;
  readonly tokens: TokenVerifier;
  readonly revocations: RevocationList;
  readonly control: ControlBus;
  readonly logger: Logger;
  readonly version: string;
  readonly now?: () => number;
  /** How often this node tells the others its snapshot (ms). */
  readonly snapshotIntervalMs?: number;
  /** The node id; random by default. */
  readonly id?: string;
  /** The engine's health; degraded means publications may not be delivered. */
  readonly health?: () => NodeHealth;
  /** The process's event loop and memory (the watchdog's last sample), for snapshots and `info`. */
  readonly processStats?: () => NodeProcessStats;
  /** Live counts for the console's overview, carried in snapshots. */
  readonly liveStats?: () => NodeLiveStats;
  /** The application's hooks (docs/hooks.md); absent: Herald decides alone. */
  readonly hooks?: Hooks | undefined;
  /** Told of connections, channel subscriptions, presence and publications (webhooks). */
  readonly events?: NodeEvents;
}

/** Most connections one node lists for one user (console), and most channels listed per connection. */
export const MAX_DETAIL_CONNECTIONS = 1000;
export const MAX_DETAIL_CHANNELS = 128;

export type NodeHealth = { readonly status: 'ok' } | { readonly status: 'degraded'; readonly reason: string };

/**
 * Connections a protocol endpoint holds outside the hub (the Pusher
 * socket's, pusher/pusher-endpoint.ts), for the node's totals.
 */
export interface OtherConnections {
  /** Open connections (past their handshake). */
  readonly count: number;
  /** Connections per user (in Client.userKey's form: an app's users are `~{id}~user`), users with none left out. */
  userCounts(): Iterable<[string, number]>;
  /** One user's connections. */
  userCount(user: string): number;
}

/** Most channels or users one snapshot lists; beyond it the list is cut. */
const SNAPSHOT_MAX_ENTRIES = 10000;

export class Node {
  readonly config: Config;
  readonly rules: ChannelRules;
  readonly hub: Hub;
  readonly tokens: TokenVerifier;
  readonly revocations: RevocationList;
  readonly logger: Logger;
  readonly version: string;
  readonly now: () => number;
  readonly startedAt: number;
  readonly tokenExpiryGraceMs: number;
  readonly id: string;
  /** Batched writes for the clients that announced batched frames. */
  readonly writes = new WriteScheduler();
  /** The application's hooks, when any is configured (hooks/hooks.ts). */
  readonly hooks: Hooks | undefined;
  readonly #broker: Broker;
  readonly #presence: PresenceStore;
  readonly #control: ControlBus;
  readonly #peers = new Map<string, NodeSnapshot>();
  readonly #snapshotTimer: NodeJS.Timeout;
  readonly #snapshotIntervalMs: number;
  readonly #health: () => NodeHealth;
  readonly #processStats: (() => NodeProcessStats) | undefined;
  readonly #liveStats: (() => NodeLiveStats) | undefined;
  /** Connection queries of this node waiting for other nodes' answers, by id. */
  readonly #queries = new Map<string, (from: string, connections: readonly ConnectionDetail[]) => void>();
  readonly #controlListeners: ((command: ControlCommand, from: string) => void)[] = [];
  readonly #all = new Set<Client>();
  /** Connections held outside the hub (the Pusher endpoint's sockets), counted with the node's own. */
  #others: OtherConnections | undefined;
  readonly #events: NodeEvents | undefined;
  /** Closed connections whose transport still hands out its final frames (Transport.settled). */
  readonly #settling = new Set<Promise<void>>();
  readonly #pingTimer: NodeJS.Timeout;
  /** New connections until they connect: closed as stale after `limits.staleMs` (one timer for all). */
  readonly stale: StaleWatch;
  #draining = false;

  constructor(options: NodeOptions) {
    this.config = options.config;
    this.rules = new ChannelRules(options.config.channels, options.config.pusher.cacheTtlMs);
    this.#broker = options.broker;
    this.#presence = options.presence;
    this.tokens = options.tokens;
    this.revocations = options.revocations;
    this.hooks = options.hooks;
    this.id = options.id ?? randomUUID();
    this.#control = options.control;
    this.#health = options.health ?? (() => ({ status: 'ok' }));
    this.#processStats = options.processStats;
    this.#liveStats = options.liveStats;
    this.#snapshotIntervalMs = options.snapshotIntervalMs ?? 2000;
    this.#control.setHandler((command, from) => this.#onControl(command, from));
    this.#snapshotTimer = setInterval(() => {
      this.#control.publish({ kind: 'node_snapshot', snapshot: this.snapshot() }).catch(() => undefined);
    }, this.#snapshotIntervalMs);
    this.#snapshotTimer.unref();
    this.logger = options.logger;
    this.version = options.version;
    this.now = options.now ?? Date.now;
    this.startedAt = this.now();
    this.tokenExpiryGraceMs = options.config.auth.expiryGraceMs;
    this.#events = options.events;
    this.hub = new Hub(options.broker, this.id, options.events);
    options.broker.setEventHandler({
      onPublication: (channel, publication) => this.hub.deliverPublication(channel, publication),
      onJoin: (channel, info) => this.hub.deliverJoinLeave('join', channel, info),
      onLeave: (channel, info) => this.hub.deliverJoinLeave('leave', channel, info),
      onStreamReset: (channel) => this.hub.resetChannel(channel),
    });
    this.#pingTimer = setInterval(() => this.#pingAll(), options.config.ping.intervalMs);
    this.#pingTimer.unref();
    this.stale = new StaleWatch(options.config.limits.staleMs);
  }

  /** `draining` during shutdown; `degraded` while the engine cannot deliver. */
  health(): { status: 'ok' | 'draining' | 'degraded'; reason?: string } {
    if (this.#draining) return { status: 'draining' };
    const engine = this.#health();
    return engine.status === 'ok' ? { status: 'ok' } : { status: 'degraded', reason: engine.reason };
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Every connection on this node, connected or not yet (the Pusher endpoint's sockets too). */
  get connectionCount(): number {
    return this.#all.size + (this.#others?.count ?? 0);
  }

  /**
   * Counts connections another protocol endpoint holds (the Pusher
   * socket's) in this node's totals: `connectionCount`, snapshots (`info`,
   * the console's overview) and the per-user counts behind
   * limits.maxConnectionsPerUser. One source per node.
   */
  countOthers(others: OtherConnections): void {
    this.#others = others;
  }

  createClient(transport: Transport): Client {
    youngGenerationHold.opened();
    const client = new Client(this, transport);
    this.#all.add(client);
    if (this.#draining) client.disconnect('shutdown');
    return client;
  }

  /** Called by a client once it has closed and cleaned up. */
  forgetClient(client: Client): void {
    this.#all.delete(client);
    const settled = client.transport.settled?.();
    if (settled !== undefined) {
      this.#settling.add(settled);
      void settled.then(() => this.#settling.delete(settled));
    }
  }

  /** Resolves when no closed connection is still handing out its final frames. */
  async #settled(): Promise<void> {
    while (this.#settling.size > 0) await Promise.all(this.#settling);
  }

  /** Connected (authenticated or anonymous) clients of this node. */
  *connectedClients(): IterableIterator<Client> {
    for (const client of this.#all) if (client.state === 'connected') yield client;
  }

  #pingAll(): void {
    for (const client of this.connectedClients()) client.ping();
  }

  authorizeSubscribe(client: Client, resolved: ResolvedChannel): void {
    if (client.user === '' && !resolved.options.allowAnonymous) throw new CommandError('anonymous_not_allowed');
  }

  /** Private namespaces: a subscription token for this channel and this user. */
  async authorizePrivate(client: Client, resolved: ResolvedChannel, token: string | undefined): Promise<void> {
    if (token === undefined || token === '') throw new CommandError('permission_denied');
    let identity;
    try {
      // The token names the channel as the client does (an app's backend signs its app-local names).
      identity = await client.tokens.verifySubscriptionToken(token, client.user, nativeName(resolved.channel));
    } catch (error) {
      if (error instanceof TokenError) throw new CommandError(error.kind === 'expired' ? 'token_expired' : 'permission_denied');
      throw error;
    }
    if (this.revocations.isRevoked(client.revocable(identity))) throw new CommandError('permission_denied');
  }

  /** Reading history or presence: as subscribing, and in private namespaces only while subscribed. */
  authorizeRead(client: Client, resolved: ResolvedChannel): void {
    this.authorizeSubscribe(client, resolved);
    if (resolved.options.private && client.subscription(resolved.channel) === undefined) throw new CommandError('permission_denied');
  }

  /**
   * The stream's position, and the publications after `since` when given (for recovery): at once when the engine
   * holds the answer in memory (`Broker.historyNow`; it then throws what the promise would reject with), else the
   * broker's promise itself.
   */
  readStream(channel: string, options: NamespaceConfig, since: StreamPosition | undefined): HistoryPage | Promise<HistoryPage> {
    const stream = { size: options.historySize, ttlMs: options.historyTtlMs };
    const query = since === undefined ? { limit: 0 } : { since, limit: options.historySize };
    const broker = this.#broker;
    if (broker.historyNow !== undefined) {
      const page = broker.historyNow(channel, query, stream);
      if (page !== undefined) return page;
    }
    try {
      return broker.history(channel, query, stream);
    } catch (error) {
      return Promise.reject(error as Error);
    }
  }

  /** The stream's position and its newest publications (at most `limit`), newest first (the latest values of a conflated channel; a Pusher cache channel's last event). */
  async readLatest(channel: string, options: NamespaceConfig, limit = options.historySize): Promise<HistoryPage> {
    return this.#broker.history(channel, { limit: Math.min(limit, options.historySize), reverse: true }, { size: options.historySize, ttlMs: options.historyTtlMs });
  }

  /** `info`: the subscriber's info in the channel (with the subscribe hook's `chan_info`); the connection's by default. */
  /** Undefined (nothing to wait for) when the namespace has neither presence nor join/leave, or when a presence store in this process's memory took the member at once. */
  joinPresence(client: Client, channel: string, options: NamespaceConfig, info: ClientInfo = client.info): Promise<void> | undefined {
    if (!options.presence && !options.joinLeave) return undefined;
    const presence = this.#presence;
    if (!options.joinLeave && presence.addNow !== undefined) {
      // A store in this process's memory: done at once (throws what `addMember` would reject with).
      presence.addNow(channel, info);
      this.#events?.presenceJoined(channel, info);
      return undefined;
    }
    return this.addMember(channel, info, options.presence, options.joinLeave);
  }

  /** Undefined (nothing to wait for) when the namespace has neither presence nor join/leave. */
  leavePresence(client: Client, channel: string, options: NamespaceConfig, info: ClientInfo = client.info): Promise<void> | undefined {
    if (!options.presence && !options.joinLeave) return undefined;
    return this.removeMember(channel, info, options.presence, options.joinLeave);
  }

  /**
   * A member enters a channel, for any protocol (the Pusher endpoint calls
   * it directly): into the presence store when `presence`, told to every
   * node's subscribers (a `join`, ChannelTap.deliverJoinLeave) when `announce`.
   */
  async addMember(channel: string, info: ClientInfo, presence: boolean, announce: boolean): Promise<void> {
    if (presence) {
      await this.#presence.add(channel, info);
      this.#events?.presenceJoined(channel, info);
    }
    if (announce) await this.#broker.publishJoin(channel, info);
  }

  /** A member leaves a channel (the counterpart of addMember; `info.client` names the connection). */
  async removeMember(channel: string, info: ClientInfo, presence: boolean, announce: boolean): Promise<void> {
    if (presence) {
      try {
        await this.#presence.remove(channel, info.client);
      } finally {
        // The connection has left whether or not the store answered.
        this.#events?.presenceLeft(channel, info);
      }
    }
    if (announce) await this.#broker.publishLeave(channel, info);
  }

  /** The presence store's members of a channel, whatever its namespace says (the Pusher endpoint). */
  members(channel: string): Promise<Record<string, ClientInfo>> {
    return this.#presence.get(channel);
  }

  /** The presence store's counts for a channel, whatever its namespace says (the Pusher endpoint). */
  memberStats(channel: string): Promise<{ numClients: number; numUsers: number }> {
    return this.#presence.stats(channel);
  }

  /**
   * A channel a client named: the grammar and namespace checks on the name
   * it sent, then its internal name (an app's channel on an app's path,
   * Client.internalChannel).
   */
  resolveFor(client: Client, channel: unknown): ResolvedChannel {
    const resolved = this.resolve(channel);
    return client.scope === undefined ? resolved : { ...resolved, channel: client.internalChannel(resolved.channel) };
  }

  resolve(channel: unknown): ResolvedChannel {
    const resolved = this.rules.resolve(channel);
    if ('reply' in resolved) throw new CommandError(resolved.reply, resolved.detail);
    return resolved;
  }

  /**
   * Accepts a publication; resolves once it has its position and reached
   * local subscribers. With an idempotency key, a repeat within
   * `api.idempotencyWindowMs` resolves with the first position instead.
   */
  publish(
    resolved: ResolvedChannel,
    dataJson: string,
    info: ClientInfo | undefined,
    source: 'api' | 'client',
    idempotencyKey?: string,
  ): Promise<StreamPosition> {
    const options = resolved.options;
    let accepted: Promise<StreamPosition>;
    try {
      accepted = this.#broker.publish(resolved.channel, dataJson, {
        stream: { size: options.historySize, ttlMs: options.historyTtlMs },
        info,
        idempotency: idempotencyKey === undefined ? undefined : { key: idempotencyKey, windowMs: this.config.api.idempotencyWindowMs },
      });
    } catch (error) {
      return Promise.reject(error as Error);
    }
    // Not an async function: one promise per publish on the hot path, not three.
    return accepted.then((position) => {
      this.#events?.published(resolved.channel, dataJson, info);
      if (diagnostics.published.hasSubscribers) diagnostics.published.publish({ node: this.id, channel: resolved.channel, source });
      return position;
    });
  }

  async clientPublish(client: Client, channel: string, data: unknown): Promise<StreamPosition> {
    const resolved = this.resolveFor(client, channel);
    if (!resolved.options.clientPublish) throw new CommandError('permission_denied');
    this.authorizeRead(client, resolved);
    let dataJson = JSON.stringify(data);
    if (dataJson === undefined) throw new CommandError('bad_request');
    if (utf8Length(dataJson) > this.config.limits.maxMessageBytes) throw new CommandError('message_too_large');
    const hooks = this.hooks;
    if (hooks !== undefined && hooks.has('publish', resolved.namespace)) {
      const decision = await hooks.publish({ ...client.hookConnection(), channel: nativeName(resolved.channel), namespace: resolved.namespace, data });
      if (decision.outcome === 'deny') throw CommandError.denied(decision.code, decision.message);
      if (decision.outcome === 'unavailable') {
        if (!decision.failOpen) throw new CommandError('hook_unavailable');
      } else if ('data' in decision) {
        // The backend's data replaces the client's, under the same limit.
        dataJson = JSON.stringify(decision.data) ?? 'null';
        if (utf8Length(dataJson) > this.config.limits.maxMessageBytes) throw new CommandError('message_too_large');
      }
    }
    return this.publish(resolved, dataJson, client.subscription(resolved.channel)?.info ?? client.info, 'client');
  }

  /**
   * The `rpc` command: answered by the application's rpc hook (the
   * namespace's for a method `ns:name`, else the global one); without one,
   * reply error rpc_not_configured.
   */
  async clientRpc(client: Client, method: string, data: unknown): Promise<{ data: unknown }> {
    const colon = method.indexOf(':');
    const namespace = colon > 0 ? method.slice(0, colon) : '';
    const hooks = this.hooks;
    if (hooks === undefined || !hooks.has('rpc', namespace)) throw new CommandError('rpc_not_configured');
    const decision = await hooks.rpc({ ...client.hookConnection(), method, data }, namespace);
    if (decision.outcome === 'deny') throw CommandError.denied(decision.code, decision.message);
    if (decision.outcome === 'unavailable') throw new CommandError('hook_unavailable');
    return { data: decision.data };
  }

  /** The history result `{epoch, offset, publications}`, assembled around the stored data text. */
  async history(resolved: ResolvedChannel, params: Omit<HistoryParams, 'channel'>): Promise<JsonText> {
    const options = resolved.options;
    if (options.historySize === 0) throw new CommandError('not_available');
    const page = await this.#broker.history(
      resolved.channel,
      { limit: Math.min(params.limit ?? 0, options.historySize), since: params.since, reverse: params.reverse },
      { size: options.historySize, ttlMs: options.historyTtlMs },
    );
    const publications = page.publications.map((publication) => encodePublication(publication.offset, publication.data, publication.info));
    return new JsonText(
      '{"epoch":' + JSON.stringify(page.position.epoch) + ',"offset":' + page.position.offset + ',"publications":[' + publications.join(',') + ']}',
    );
  }

  async clientHistory(client: Client, params: HistoryParams): Promise<JsonText> {
    const resolved = this.resolveFor(client, params.channel);
    this.authorizeRead(client, resolved);
    return this.history(resolved, params);
  }

  async presence(resolved: ResolvedChannel): Promise<{ clients: Record<string, ClientInfo> }> {
    if (!resolved.options.presence) throw new CommandError('not_available');
    return { clients: await this.#presence.get(resolved.channel) };
  }

  async presenceStats(resolved: ResolvedChannel): Promise<{ num_clients: number; num_users: number }> {
    if (!resolved.options.presence) throw new CommandError('not_available');
    const stats = await this.#presence.stats(resolved.channel);
    return { num_clients: stats.numClients, num_users: stats.numUsers };
  }

  async clientPresence(client: Client, channel: string): Promise<{ clients: Record<string, ClientInfo> }> {
    const resolved = this.resolveFor(client, channel);
    this.authorizeRead(client, resolved);
    return this.presence(resolved);
  }

  async clientPresenceStats(client: Client, channel: string): Promise<{ num_clients: number; num_users: number }> {
    const resolved = this.resolveFor(client, channel);
    this.authorizeRead(client, resolved);
    return this.presenceStats(resolved);
  }

  #onControl(command: ControlCommand, from: string): void {
    switch (command.kind) {
      case 'disconnect_user':
        for (const client of this.hub.userClients(command.user)) client.disconnect(command.reconnect ? 'force_reconnect' : 'force_disconnect');
        return;
      case 'revoke_token':
        this.revocations.revokeToken(command.tokenId, command.expiresAt);
        for (const client of [...this.connectedClients()]) if (client.tokenId === command.tokenId) client.disconnect('revoked');
        return;
      case 'revoke_user':
        this.revocations.revokeUser(command.user, command.at);
        for (const client of this.hub.userClients(command.user)) client.disconnect('revoked');
        return;
      case 'node_snapshot':
        if (from !== this.id) this.#peers.set(from, command.snapshot);
        return;
      case 'connections_query':
        if (from === this.id) return;
        this.#control.publish({ kind: 'connections_answer', id: command.id, to: from, connections: this.localConnections(command.user) }).catch(() => undefined);
        return;
      case 'connections_answer':
        if (command.to === this.id) this.#queries.get(command.id)?.(from, command.connections);
        return;
      case 'key_usage':
      case 'pusher_terminate':
      case 'apps_changed':
        break;
    }
    for (const listener of this.#controlListeners) listener(command, from);
  }

  /** Called with control commands the node does not handle itself (key usage reports). */
  onControl(listener: (command: ControlCommand, from: string) => void): void {
    this.#controlListeners.push(listener);
  }

  /** Sends a control command to every node, this one included. */
  publishControl(command: ControlCommand): Promise<void> {
    return this.#control.publish(command);
  }

  /** This node's connections of `user` (at most MAX_DETAIL_CONNECTIONS). */
  localConnections(user: string): ConnectionDetail[] {
    const result: ConnectionDetail[] = [];
    for (const client of this.hub.userClients(user)) {
      if (result.length >= MAX_DETAIL_CONNECTIONS) break;
      result.push({
        client: client.id,
        user: client.user,
        transport: client.transport.kind,
        node: this.id,
        channels: client
          .subscriptionList()
          .slice(0, MAX_DETAIL_CHANNELS)
          .map((sub) => sub.channel),
        address: client.address,
        since: client.openedAt,
      });
    }
    return result;
  }

  /**
   * Connections of `user` on every node: this node's now, the others' as
   * they answer a `connections_query` on the control bus. Waits for every
   * node that has a fresh snapshot, at most `timeoutMs`; `missing` names
   * the nodes that did not answer in time (their connections are absent).
   */
  async userConnections(user: string, timeoutMs = 1000): Promise<{ connections: ConnectionDetail[]; missing: string[] }> {
    const connections = this.localConnections(user);
    const waiting = new Set(this.#livePeers().map((peer) => peer.id));
    if (waiting.size === 0) return { connections, missing: [] };
    const id = randomUUID();
    let timer: NodeJS.Timeout | undefined;
    const done = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, timeoutMs);
      this.#queries.set(id, (from, answer) => {
        connections.push(...answer.slice(0, MAX_DETAIL_CONNECTIONS));
        waiting.delete(from);
        if (waiting.size === 0) resolve();
      });
    });
    try {
      await this.#control.publish({ kind: 'connections_query', id, user });
      await done;
    } finally {
      clearTimeout(timer);
      this.#queries.delete(id);
    }
    return { connections, missing: [...waiting] };
  }

  /** Other nodes' snapshots that are still fresh (at most three snapshot intervals old). */
  peerSnapshots(): NodeSnapshot[] {
    return this.#livePeers();
  }

  /** Other nodes' snapshots that are still fresh. */
  #livePeers(): NodeSnapshot[] {
    const cutoff = this.now() - this.#snapshotIntervalMs * 3;
    const live: NodeSnapshot[] = [];
    for (const [id, snapshot] of this.#peers) {
      if (snapshot.at < cutoff) this.#peers.delete(id);
      else live.push(snapshot);
    }
    return live;
  }

  snapshot(): NodeSnapshot {
    const channels: Record<string, number> = {};
    let n = 0;
    for (const [channel, count] of this.hub.channels()) {
      if (n++ >= SNAPSHOT_MAX_ENTRIES) break;
      channels[channel] = count;
    }
    const users: Record<string, number> = Object.create(null) as Record<string, number>;
    n = 0;
    for (const [user, count] of this.hub.userCounts()) {
      if (n++ >= SNAPSHOT_MAX_ENTRIES) break;
      users[user] = count;
    }
    const others = this.#others;
    if (others !== undefined) {
      for (const [user, count] of others.userCounts()) {
        const seen = users[user];
        if (seen === undefined && n++ >= SNAPSHOT_MAX_ENTRIES) break;
        users[user] = (seen ?? 0) + count;
      }
    }
    const otherCount = others?.count ?? 0;
    return {
      id: this.id,
      version: this.version,
      connections: this.#all.size + otherCount,
      authenticated: this.hub.clientCount + otherCount,
      channels,
      users,
      uptimeMs: this.now() - this.startedAt,
      process: this.#processStats?.(),
      live: this.#liveStats?.(),
      at: this.now(),
    };
  }

  /** Subscriber counts per channel across nodes (other nodes as of their last snapshot). */
  channels(prefix: string): Record<string, { num_clients: number }> {
    const counts = new Map<string, number>();
    for (const [channel, count] of this.hub.channels()) counts.set(channel, count);
    for (const peer of this.#livePeers()) {
      for (const [channel, count] of Object.entries(peer.channels)) counts.set(channel, (counts.get(channel) ?? 0) + count);
    }
    const result: Record<string, { num_clients: number }> = Object.create(null) as Record<string, { num_clients: number }>;
    for (const [channel, count] of counts) if (channel.startsWith(prefix)) result[channel] = { num_clients: count };
    return result;
  }

  /** One channel's subscriber count across nodes (other nodes as of their last snapshot): what `channels` answers for it. */
  subscriberCount(channel: string): number {
    let count = this.hub.subscriberCount(channel);
    // Own keys only: a channel may be named `constructor`.
    for (const peer of this.#livePeers()) if (Object.hasOwn(peer.channels, channel)) count += peer.channels[channel]!;
    return count;
  }

  /** Connections of a user (Client.userKey) across nodes and protocols (other nodes as of their last snapshot). */
  userConnectionCount(user: string): number {
    let count = this.hub.userClients(user).length + (this.#others?.userCount(user) ?? 0);
    // Own keys only: a user id may be `constructor`.
    for (const peer of this.#livePeers()) if (Object.hasOwn(peer.users, user)) count += peer.users[user]!;
    return count;
  }

  /** Closes every connection of a user on every node; answers how many were on this one. */
  async disconnectUser(user: string, reconnect: boolean): Promise<number> {
    const local = this.hub.userClients(user).length;
    await this.#control.publish({ kind: 'disconnect_user', user, reconnect });
    return local;
  }

  /** Revokes a token by `jti` on every node and closes the connections that use it. */
  async revokeToken(tokenId: string, expiresAt: number | undefined): Promise<number> {
    let local = 0;
    for (const client of this.connectedClients()) if (client.tokenId === tokenId) local++;
    await this.#control.publish({ kind: 'revoke_token', tokenId, expiresAt });
    return local;
  }

  /** Revokes every token of a user issued until now, on every node, and closes the user's connections. */
  async revokeUser(user: string): Promise<number> {
    const local = this.hub.userClients(user).length;
    await this.#control.publish({ kind: 'revoke_user', user, at: this.now() });
    return local;
  }

  info(): ApiResult<'info'> {
    const self = this.snapshot();
    const nodes = [self, ...this.#livePeers()].map((n) => ({
      id: n.id,
      version: n.version,
      connections: n.connections,
      authenticated: n.authenticated,
      channels: Object.keys(n.channels).length,
      uptime_ms: n.uptimeMs,
      ...(n.process === undefined
        ? {}
        : {
            process: {
              event_loop_delay_max_ms: n.process.eventLoopDelayMaxMs,
              event_loop_delay_p99_ms: n.process.eventLoopDelayP99Ms,
              heap_used_bytes: n.process.heapUsedBytes,
              live_heap_bytes: n.process.liveHeapBytes,
              rss_bytes: n.process.rssBytes,
              over_threshold: [...n.process.over],
            },
          }),
    }));
    return { version: this.version, uptime_ms: self.uptimeMs, nodes };
  }

  /**
   * Graceful drain: every connection is closed with `shutdown` (reconnect),
   * then waits until they have all closed and handed out their final frames
   * (Transport.settled: a long-poll session's next poll, each bounded by
   * `limits.closeGraceMs`), or until `timeoutMs` passes. True when all did.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    this.#draining = true;
    clearInterval(this.#pingTimer);
    clearInterval(this.#snapshotTimer);
    const closing = [...this.#all].map((client) => {
      client.disconnect('shutdown');
      return client.closed;
    });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const done = await Promise.race([
      Promise.all(closing)
        .then(() => this.#settled())
        .then(() => true as const),
      timedOut,
    ]);
    clearTimeout(timer);
    return done;
  }

  async close(): Promise<void> {
    this.#draining = true;
    clearInterval(this.#pingTimer);
    clearInterval(this.#snapshotTimer);
    for (const client of [...this.#all]) client.disconnect('shutdown');
    this.stale.close();
    await this.#broker.close();
    await this.#presence.close();
    await this.#control.close();
  }
}
