/**
 * Node is the heart of Herald: it owns the hub (local connections and
 * subscriptions), the broker (publications and streams), the presence store
 * and the channel rules, and runs every operation that clients and the
 * server API ask for. Transports create Clients through it; the API calls
 * its methods. It knows nothing of HTTP, WebSocket or config files.
 */
import type { Config } from '../config/schema.ts';
import type { Broker, HistoryPage, PresenceStore, StoredPublication } from '../broker/broker.ts';
import { TokenError, type TokenVerifier } from '../auth/jwt.ts';
import type { RevocationList } from '../auth/revocation.ts';
import type { ClientInfo, HistoryParams, StreamPosition } from '../protocol/index.ts';
import { utf8Length } from '../protocol/command-decoder.ts';
import { diagnostics } from '../observability/diagnostics.ts';
import type { Logger } from '../util/logger.ts';
import { ChannelRules, type ResolvedChannel } from './channel-rules.ts';
import { Client, CommandError } from './client.ts';
import { Hub } from './hub.ts';
import type { Transport } from './transport.ts';

export interface NodeOptions {
  readonly config: Config;
  readonly broker: Broker;
  readonly presence: PresenceStore;
  readonly tokens: TokenVerifier;
  readonly revocations: RevocationList;
  readonly logger: Logger;
  readonly version: string;
  readonly now?: () => number;
}

export interface HistoryReply {
  readonly epoch: string;
  readonly offset: number;
  readonly publications: readonly unknown[];
}

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
  readonly #broker: Broker;
  readonly #presence: PresenceStore;
  readonly #all = new Set<Client>();
  readonly #pingTimer: NodeJS.Timeout;
  #draining = false;

  constructor(options: NodeOptions) {
    this.config = options.config;
    this.rules = new ChannelRules(options.config.channels);
    this.#broker = options.broker;
    this.#presence = options.presence;
    this.tokens = options.tokens;
    this.revocations = options.revocations;
    this.logger = options.logger;
    this.version = options.version;
    this.now = options.now ?? Date.now;
    this.startedAt = this.now();
    this.tokenExpiryGraceMs = options.config.auth.expiryGraceMs;
    this.hub = new Hub(options.broker);
    options.broker.setEventHandler({
      onPublication: (channel, publication) => this.hub.deliverPublication(channel, publication),
      onJoin: (channel, info) => this.hub.deliverJoinLeave('join', channel, info),
      onLeave: (channel, info) => this.hub.deliverJoinLeave('leave', channel, info),
      onStreamReset: (channel) => this.hub.resetChannel(channel),
    });
    this.#pingTimer = setInterval(() => this.#pingAll(), options.config.ping.intervalMs);
    this.#pingTimer.unref();
  }

  get draining(): boolean {
    return this.#draining;
  }

  /** Every connection on this node, connected or not yet. */
  get connectionCount(): number {
    return this.#all.size;
  }

  createClient(transport: Transport): Client {
    const client = new Client(this, transport);
    this.#all.add(client);
    void client.closed.then(() => this.#all.delete(client));
    if (this.#draining) client.disconnect('shutdown');
    return client;
  }

  #pingAll(): void {
    for (const client of this.#all) if (client.state === 'connected') client.ping();
  }

  authorizeSubscribe(client: Client, resolved: ResolvedChannel): void {
    if (client.user === '' && !resolved.options.allowAnonymous) throw new CommandError('permission_denied');
  }

  /** Private namespaces: a subscription token for this channel and this user. */
  async authorizePrivate(client: Client, resolved: ResolvedChannel, token: string | undefined): Promise<void> {
    if (token === undefined || token === '') throw new CommandError('permission_denied');
    let identity;
    try {
      identity = await this.tokens.verifySubscriptionToken(token, client.user, resolved.channel);
    } catch (error) {
      if (error instanceof TokenError) throw new CommandError(error.kind === 'expired' ? 'token_expired' : 'permission_denied');
      throw error;
    }
    if (this.revocations.isRevoked(identity)) throw new CommandError('permission_denied');
  }

  /** Reading history or presence: as subscribing, and in private namespaces only while subscribed. */
  authorizeRead(client: Client, resolved: ResolvedChannel): void {
    this.authorizeSubscribe(client, resolved);
    if (resolved.options.private && !client.subscriptions.has(resolved.channel)) throw new CommandError('permission_denied');
  }

  async readStream(resolved: ResolvedChannel, since: StreamPosition | undefined): Promise<HistoryPage> {
    const options = resolved.options;
    const stream = { size: options.historySize, ttlMs: options.historyTtlMs };
    const query = since === undefined ? { limit: 0 } : { since, limit: options.historySize };
    return this.#broker.history(resolved.channel, query, stream);
  }

  async joinPresence(client: Client, resolved: ResolvedChannel): Promise<void> {
    if (resolved.options.presence) await this.#presence.add(resolved.channel, client.info);
    if (resolved.options.joinLeave) await this.#broker.publishJoin(resolved.channel, client.info);
  }

  async leavePresence(client: Client, resolved: ResolvedChannel): Promise<void> {
    if (resolved.options.presence) await this.#presence.remove(resolved.channel, client.id);
    if (resolved.options.joinLeave) await this.#broker.publishLeave(resolved.channel, client.info);
  }

  resolve(channel: unknown): ResolvedChannel {
    const resolved = this.rules.resolve(channel);
    if (typeof resolved === 'string') throw new CommandError(resolved);
    return resolved;
  }

  /** Accepts a publication; resolves once it has its position and reached local subscribers. */
  async publish(
    resolved: ResolvedChannel,
    dataJson: string,
    info: ClientInfo | undefined,
    source: 'api' | 'client',
  ): Promise<StreamPosition> {
    const options = resolved.options;
    const position = await this.#broker.publish(resolved.channel, dataJson, {
      stream: { size: options.historySize, ttlMs: options.historyTtlMs },
      info,
    });
    if (diagnostics.published.hasSubscribers) diagnostics.published.publish({ channel: resolved.channel, source });
    return position;
  }

  async clientPublish(client: Client, channel: string, data: unknown): Promise<StreamPosition> {
    const resolved = this.resolve(channel);
    if (!resolved.options.clientPublish) throw new CommandError('permission_denied');
    this.authorizeRead(client, resolved);
    const dataJson = JSON.stringify(data);
    if (dataJson === undefined) throw new CommandError('bad_request');
    if (utf8Length(dataJson) > this.config.limits.maxMessageBytes) throw new CommandError('message_too_large');
    return this.publish(resolved, dataJson, client.info, 'client');
  }

  async history(resolved: ResolvedChannel, params: Omit<HistoryParams, 'channel'>): Promise<HistoryReply> {
    const options = resolved.options;
    if (options.historySize === 0) throw new CommandError('not_available');
    const page = await this.#broker.history(
      resolved.channel,
      { limit: Math.min(params.limit ?? 0, options.historySize), since: params.since, reverse: params.reverse },
      { size: options.historySize, ttlMs: options.historyTtlMs },
    );
    return {
      epoch: page.position.epoch,
      offset: page.position.offset,
      publications: page.publications.map(toPublicationJson),
    };
  }

  async clientHistory(client: Client, params: HistoryParams): Promise<HistoryReply> {
    const resolved = this.resolve(params.channel);
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
    const resolved = this.resolve(channel);
    this.authorizeRead(client, resolved);
    return this.presence(resolved);
  }

  async clientPresenceStats(client: Client, channel: string): Promise<{ num_clients: number; num_users: number }> {
    const resolved = this.resolve(channel);
    this.authorizeRead(client, resolved);
    return this.presenceStats(resolved);
  }

  channels(prefix: string): Record<string, { num_clients: number }> {
    const result: Record<string, { num_clients: number }> = Object.create(null) as Record<string, { num_clients: number }>;
    for (const [channel, count] of this.hub.channels()) {
      if (channel.startsWith(prefix)) result[channel] = { num_clients: count };
    }
    return result;
  }

  /** Closes every connection of a user on this node. */
  disconnectUser(user: string, reconnect: boolean): number {
    const clients = this.hub.userClients(user);
    for (const client of clients) client.disconnect(reconnect ? 'force_reconnect' : 'force_disconnect');
    return clients.length;
  }

  /** Revokes a token by `jti` and closes this node's connections that use it. */
  revokeToken(tokenId: string, expiresAt: number | undefined): number {
    this.revocations.revokeToken(tokenId, expiresAt);
    let closed = 0;
    for (const client of [...this.hub.clients()]) {
      if (client.tokenId === tokenId) {
        client.disconnect('revoked');
        closed++;
      }
    }
    return closed;
  }

  /** Revokes every token of a user issued until now and closes the user's connections. */
  revokeUser(user: string): number {
    this.revocations.revokeUser(user, this.now());
    const clients = this.hub.userClients(user);
    for (const client of clients) client.disconnect('revoked');
    return clients.length;
  }

  info(): Record<string, unknown> {
    return {
      version: this.version,
      uptime_ms: this.now() - this.startedAt,
      nodes: [
        {
          connections: this.#all.size,
          authenticated: this.hub.clientCount,
          channels: this.hub.channelCount,
        },
      ],
    };
  }

  /**
   * Graceful drain: every connection is closed with `shutdown` (reconnect),
   * then waits until they have all closed or `timeoutMs` passes.
   */
  async drain(timeoutMs: number): Promise<boolean> {
    this.#draining = true;
    clearInterval(this.#pingTimer);
    const closing = [...this.#all].map((client) => {
      client.disconnect('shutdown');
      return client.closed;
    });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    const done = await Promise.race([Promise.all(closing).then(() => true as const), timedOut]);
    clearTimeout(timer);
    return done;
  }

  async close(): Promise<void> {
    this.#draining = true;
    clearInterval(this.#pingTimer);
    for (const client of [...this.#all]) client.disconnect('shutdown');
    await this.#broker.close();
    await this.#presence.close();
  }
}

function toPublicationJson(publication: StoredPublication): unknown {
  // History is not the hot path: parse the stored JSON text back.
  const data: unknown = JSON.parse(publication.data);
  return publication.info === undefined ? { offset: publication.offset, data } : { offset: publication.offset, data, info: publication.info };
}
