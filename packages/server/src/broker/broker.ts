/**
 * Broker contracts. A broker moves publications between Herald nodes and
 * keeps each channel's stream (history with positions); a presence store
 * keeps who is subscribed. The memory engine implements both for one
 * process; cluster and Redis engines implement the same contracts and run
 * the same contract suite (packages/server/test/unit/broker-contract.test.ts).
 */
import type { ClientInfo, StreamPosition } from '@herald/protocol';

/** The engine cannot reach its backend: nothing was done; callers answer 503 / reply 116. */
export class BrokerUnavailableError extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'BrokerUnavailableError';
  }
}

/** A publication as stored and delivered. `data` is JSON text, serialized once at acceptance. */
export interface StoredPublication {
  /** Position in the channel stream; 0 when the channel keeps no history. */
  readonly offset: number;
  /**
   * Epoch of the stream the offset belongs to ('' without history). A
   * subscriber that sees an epoch other than its own resynchronizes.
   */
  readonly epoch?: string | undefined;
  readonly data: string;
  readonly info?: ClientInfo | undefined;
  /** Acceptance time, epoch milliseconds. */
  readonly time: number;
}

export interface StreamOptions {
  /** Publications kept; 0 means no history and no positions. */
  readonly size: number;
  readonly ttlMs: number;
}

/**
 * A publish that may be a retry: the engine remembers (channel, key) → the
 * first publish's position for `windowMs` (the engine's clock). Within the
 * window a publish with the same channel and key resolves with that position
 * and neither stores nor delivers anything; that holds for concurrent
 * duplicates too (one publication), and across nodes on shared engines
 * (Redis, the cluster link). A publish that fails is not remembered, so its
 * retry publishes.
 */
export interface Idempotency {
  /** 1..128 printable ASCII characters (the API schema checks it). */
  readonly key: string;
  readonly windowMs: number;
}

export interface PublishOptions {
  readonly stream: StreamOptions;
  readonly info?: ClientInfo | undefined;
  readonly idempotency?: Idempotency | undefined;
}

export interface HistoryQuery {
  /** Only publications with offset > since.offset, when the epoch matches. */
  readonly since?: StreamPosition | undefined;
  /** At most this many publications; 0 asks only for the position. */
  readonly limit: number;
  /** Newest first. Ignored when `since` is set. */
  readonly reverse?: boolean | undefined;
}

export interface HistoryPage {
  /** Current stream top: epoch and offset of the newest publication. */
  readonly position: StreamPosition;
  /** In offset order (or reverse order when asked), contiguous. */
  readonly publications: readonly StoredPublication[];
}

/** Called by a broker on the node that subscribed. */
export interface BrokerEventHandler {
  /**
   * A publication for a channel this node subscribed to. Guarantees: per
   * channel, calls happen in offset order, each publication at most once.
   * A broker that cannot keep that (lost connection, lost data) reports it
   * through `onStreamReset` instead of skipping silently.
   */
  onPublication(channel: string, publication: StoredPublication): void;
  onJoin(channel: string, info: ClientInfo): void;
  onLeave(channel: string, info: ClientInfo): void;
  /** The broker may have lost publications of this channel: subscribers must resynchronize. */
  onStreamReset(channel: string): void;
}

export interface Broker {
  /** Set once by the Node before any subscribe. */
  setEventHandler(handler: BrokerEventHandler): void;
  /**
   * Accepts a publication: assigns the next offset when the stream keeps
   * history (atomically, one place per channel), stores it, and delivers it
   * to every subscribed node. Resolves with the publication's position once
   * it is accepted; `{epoch: '', offset: 0}` without history. With
   * `options.idempotency`, a repeat within the window resolves with the
   * first position and publishes nothing (see Idempotency).
   */
  publish(channel: string, data: string, options: PublishOptions): Promise<StreamPosition>;
  publishJoin(channel: string, info: ClientInfo): Promise<void>;
  publishLeave(channel: string, info: ClientInfo): Promise<void>;
  /** Start receiving a channel's events on this node. Idempotent. */
  subscribe(channel: string): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  /** Reads the stream. Creates its epoch if the stream does not exist yet. */
  history(channel: string, query: HistoryQuery, stream: StreamOptions): Promise<HistoryPage>;
  /**
   * `history` answered at once when the engine holds the answer in memory
   * (the memory engine; the sqlite engine's index and its cache of recent
   * pages): the page, or undefined when only `history` can answer (then ask
   * it). Throws what `history` rejects with. Absent on engines that always
   * wait (Redis, a cluster worker's). A connect storm's subscriptions then
   * establish without a promise each (core/client.ts `#establish`).
   */
  historyNow?(channel: string, query: HistoryQuery, stream: StreamOptions): HistoryPage | undefined;
  close(): Promise<void>;
}

export interface PresenceStats {
  readonly numClients: number;
  readonly numUsers: number;
}

export interface PresenceStore {
  add(channel: string, info: ClientInfo): Promise<void>;
  /** `add` done at once (a store in this process's memory); absent on stores that wait (Redis, a cluster worker's). */
  addNow?(channel: string, info: ClientInfo): void;
  remove(channel: string, clientId: string): Promise<void>;
  get(channel: string): Promise<Record<string, ClientInfo>>;
  stats(channel: string): Promise<PresenceStats>;
  close(): Promise<void>;
}
