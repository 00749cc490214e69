/**
 * In-process broker: the embedded default. Delivery is synchronous inside
 * `publish`, so per-channel order is the order of acceptance. A stream whose
 * history has fully expired and that no node subscribes to is dropped; the
 * next publication starts a new epoch, which tells recovering clients that
 * their positions no longer hold.
 */
import { randomBytes } from 'node:crypto';
import type { ClientInfo, StreamPosition } from '@herald/protocol';
import type {
  Broker,
  BrokerEventHandler,
  HistoryPage,
  HistoryQuery,
  PresenceStats,
  PresenceStore,
  PublishOptions,
  StoredPublication,
  StreamOptions,
} from './broker.ts';
import { IdempotencyKeys } from './idempotency.ts';

interface Stream {
  readonly epoch: string;
  top: number;
  /** Oldest first; trimmed to size and TTL. */
  publications: StoredPublication[];
  lastPublishAt: number;
}

export function newEpoch(): string {
  return randomBytes(6).toString('base64url');
}

export interface MemoryBrokerOptions {
  readonly now?: () => number;
  /** How often expired streams are swept. */
  readonly sweepIntervalMs?: number;
}

const noHistoryPosition: StreamPosition = Object.freeze({ epoch: '', offset: 0 });

export class MemoryBroker implements Broker {
  #handler: BrokerEventHandler | undefined;
  readonly #streams = new Map<string, Stream>();
  readonly #subscribed = new Set<string>();
  readonly #now: () => number;
  readonly #sweep: NodeJS.Timeout;
  #ttlByChannel = new Map<string, number>();
  readonly #idempotency = new IdempotencyKeys();

  constructor(options: MemoryBrokerOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#sweep = setInterval(() => this.sweep(), options.sweepIntervalMs ?? 5000);
    this.#sweep.unref();
  }

  setEventHandler(handler: BrokerEventHandler): void {
    this.#handler = handler;
  }

  async publish(channel: string, data: string, options: PublishOptions): Promise<StreamPosition> {
    const now = this.#now();
    const once = options.idempotency;
    if (once !== undefined) {
      // Checked and remembered in the same synchronous step: a concurrent duplicate sees it.
      const first = this.#idempotency.get(channel, once.key, now);
      if (first !== undefined) return first;
    }
    let position = noHistoryPosition;
    let publication: StoredPublication;
    if (options.stream.size > 0) {
      const stream = this.#stream(channel, options.stream, now);
      stream.top += 1;
      stream.lastPublishAt = now;
      publication = { offset: stream.top, epoch: stream.epoch, data, info: options.info, time: now };
      stream.publications.push(publication);
      if (stream.publications.length > options.stream.size) {
        stream.publications.splice(0, stream.publications.length - options.stream.size);
      }
      this.#ttlByChannel.set(channel, options.stream.ttlMs);
      position = { epoch: stream.epoch, offset: stream.top };
    } else {
      publication = { offset: 0, data, info: options.info, time: now };
    }
    if (once !== undefined) this.#idempotency.set(channel, once.key, position, now + once.windowMs);
    if (this.#subscribed.has(channel)) this.#handler?.onPublication(channel, publication);
    return position;
  }

  async publishJoin(channel: string, info: ClientInfo): Promise<void> {
    if (this.#subscribed.has(channel)) this.#handler?.onJoin(channel, info);
  }

  async publishLeave(channel: string, info: ClientInfo): Promise<void> {
    if (this.#subscribed.has(channel)) this.#handler?.onLeave(channel, info);
  }

  async subscribe(channel: string): Promise<void> {
    this.#subscribed.add(channel);
  }

  async unsubscribe(channel: string): Promise<void> {
    this.#subscribed.delete(channel);
  }

  async history(channel: string, query: HistoryQuery, options: StreamOptions): Promise<HistoryPage> {
    return this.historyNow(channel, query, options);
  }

  historyNow(channel: string, query: HistoryQuery, options: StreamOptions): HistoryPage {
    if (options.size === 0) return { position: noHistoryPosition, publications: [] };
    const now = this.#now();
    const stream = this.#stream(channel, options, now);
    const position = { epoch: stream.epoch, offset: stream.top };
    if (query.limit === 0) return { position, publications: [] };
    let list = stream.publications;
    if (query.since !== undefined) {
      if (query.since.epoch !== stream.epoch) return { position, publications: [] };
      const after = query.since.offset;
      const first = list.length > 0 ? list[0]!.offset : stream.top + 1;
      list = list.slice(Math.max(0, after + 1 - first));
      return { position, publications: list.slice(0, query.limit) };
    }
    if (query.reverse === true) return { position, publications: list.slice(-query.limit).reverse() };
    return { position, publications: list.slice(0, query.limit) };
  }

  async close(): Promise<void> {
    clearInterval(this.#sweep);
  }

  /** Returns the stream with expired publications removed, creating it if needed. */
  #stream(channel: string, options: StreamOptions, now: number): Stream {
    let stream = this.#streams.get(channel);
    if (stream === undefined) {
      stream = { epoch: newEpoch(), top: 0, publications: [], lastPublishAt: now };
      this.#streams.set(channel, stream);
      this.#ttlByChannel.set(channel, options.ttlMs);
      return stream;
    }
    const cutoff = now - options.ttlMs;
    const list = stream.publications;
    if (list.length > 0 && list[0]!.time <= cutoff) {
      let keep = 0;
      while (keep < list.length && list[keep]!.time <= cutoff) keep++;
      stream.publications = list.slice(keep);
    }
    return stream;
  }

  /** Drops streams that are fully expired and not subscribed on this node. */
  sweep(): void {
    const now = this.#now();
    this.#idempotency.prune(now);
    for (const [channel, stream] of this.#streams) {
      const ttl = this.#ttlByChannel.get(channel) ?? 0;
      if (now - stream.lastPublishAt > ttl && !this.#subscribed.has(channel)) {
        this.#streams.delete(channel);
        this.#ttlByChannel.delete(channel);
      }
    }
  }
}

export class MemoryPresenceStore implements PresenceStore {
  readonly #channels = new Map<string, Map<string, ClientInfo>>();

  async add(channel: string, info: ClientInfo): Promise<void> {
    this.addNow(channel, info);
  }

  addNow(channel: string, info: ClientInfo): void {
    let members = this.#channels.get(channel);
    if (members === undefined) {
      members = new Map();
      this.#channels.set(channel, members);
    }
    members.set(info.client, info);
  }

  async remove(channel: string, clientId: string): Promise<void> {
    const members = this.#channels.get(channel);
    if (members === undefined) return;
    members.delete(clientId);
    if (members.size === 0) this.#channels.delete(channel);
  }

  async get(channel: string): Promise<Record<string, ClientInfo>> {
    const result: Record<string, ClientInfo> = Object.create(null) as Record<string, ClientInfo>;
    for (const [id, info] of this.#channels.get(channel) ?? []) result[id] = info;
    return result;
  }

  async stats(channel: string): Promise<PresenceStats> {
    const members = this.#channels.get(channel);
    if (members === undefined) return { numClients: 0, numUsers: 0 };
    const users = new Set<string>();
    for (const info of members.values()) users.add(info.user);
    return { numClients: members.size, numUsers: users.size };
  }

  async close(): Promise<void> {}
}
