/**
 * Sharded pub/sub on a Redis Cluster (SSUBSCRIBE/SPUBLISH): one pub/sub
 * connection per master that owns a subscribed topic's slot, opened on
 * demand. The Cluster client (commands) supplies the slot map; the
 * connections come from a factory the composition root hands in.
 *
 * Guarantees (the same as the single-Redis subscriber's):
 * - `subscribe` resolves once the owning master has answered SSUBSCRIBE, and
 *   rejects when it cannot (no owner known, connection down, timeout).
 * - Whenever a topic may have missed messages (its connection came back, or
 *   its slot moved to another master: a failover or a resharding), it is
 *   subscribed again on its current owner and reported to `onResubscribed`
 *   only after that SSUBSCRIBE is answered, so a resynchronization that
 *   reads history then overlaps live delivery.
 * - Messages are at most once: what a master publishes while the topic is
 *   not subscribed there is not delivered (the report above says when).
 *
 * Ownership is re-read on every slot-map refresh of the Cluster client
 * (periodic, on MOVED, and requested here when a connection closes).
 */
import { Command, type Cluster, type Redis } from 'ioredis';

export interface ShardedPubSubOptions {
  /** The command client: slot map and its refreshes. Not used for pub/sub. */
  readonly cluster: Cluster;
  /** A new lazy (`lazyConnect`) pub/sub connection to one master, without automatic resubscription. */
  readonly connect: (host: string, port: number) => Redis;
  readonly onError?: (error: unknown, what: string) => void;
}

interface Shard {
  readonly key: string;
  readonly redis: Redis;
  readonly topics: Set<string>;
  /** The first connection's promise (later reconnects resubscribe themselves). */
  readonly connected: Promise<void>;
  ready: boolean;
}

/** The slot of a key or shard channel (CRC16 of its hash tag, as Redis computes it). */
export function slotOf(topic: string): number {
  return new Command('spublish', [topic, '']).getSlot();
}

export class ShardedPubSub {
  readonly #cluster: Cluster;
  readonly #connect: (host: string, port: number) => Redis;
  readonly #onError: (error: unknown, what: string) => void;
  /** Topic → the shard it is subscribed (or being subscribed) on. */
  readonly #topics = new Map<string, Shard>();
  /** Topic → its slot, computed once (a slot-map refresh checks every topic). */
  readonly #slots = new Map<string, number>();
  /** Node key (`host:port`) → its connection. */
  readonly #shards = new Map<string, Shard>();
  readonly #listeners: ((topic: string, message: string) => void)[] = [];
  readonly #resubscribed: ((topics: readonly string[]) => void)[] = [];
  readonly #onRefresh = () => this.#rebalance();
  #closed = false;

  constructor(options: ShardedPubSubOptions) {
    this.#cluster = options.cluster;
    this.#connect = options.connect;
    this.#onError = options.onError ?? (() => {});
    this.#cluster.on('refresh', this.#onRefresh);
  }

  /** Every message of every subscribed topic. */
  onMessage(listener: (topic: string, message: string) => void): void {
    this.#listeners.push(listener);
  }

  /** Topics subscribed again after a gap (reconnect, slot moved); called after the SSUBSCRIBE is answered. */
  onResubscribed(listener: (topics: readonly string[]) => void): void {
    this.#resubscribed.push(listener);
  }

  /** `ready` while every connection holding a topic is ready; otherwise why not. */
  get status(): string {
    for (const shard of this.#shards.values()) if (shard.topics.size > 0 && !shard.ready) return `shard ${shard.key} is ${shard.redis.status}`;
    return 'ready';
  }

  /** The master currently serving each topic (tests and diagnostics). */
  get owners(): ReadonlyMap<string, string> {
    return new Map([...this.#topics].map(([topic, shard]) => [topic, shard.key]));
  }

  #slotOf(topic: string): number {
    return this.#slots.get(topic) ?? slotOf(topic);
  }

  /** The master serving the slot of `topic` in the current slot map (`host:port`). */
  ownerOf(topic: string): string | undefined {
    return this.#cluster.slots[this.#slotOf(topic)]?.[0];
  }

  #owner(topic: string): string | undefined {
    return this.ownerOf(topic);
  }

  /** Whether `topic` is subscribed (or being subscribed). */
  has(topic: string): boolean {
    return this.#topics.has(topic);
  }

  /** Every master of the current slot map. */
  masters(): Set<string> {
    const masters = new Set<string>();
    for (const nodes of this.#cluster.slots) if (nodes?.[0] !== undefined) masters.add(nodes[0]);
    return masters;
  }

  /** Whether `topic` is subscribed on a connection that is ready. */
  isReady(topic: string): boolean {
    return this.#topics.get(topic)?.ready === true;
  }

  /** The pub/sub connection holding `topic` (diagnostics and fault tests). */
  connectionOf(topic: string): Redis | undefined {
    return this.#topics.get(topic)?.redis;
  }

  /** The connection holding `topic` starts again: it resubscribes and reports its topics. */
  reconnect(topic: string): void {
    this.#topics.get(topic)?.redis.disconnect(true);
  }

  #shard(key: string): Shard {
    const existing = this.#shards.get(key);
    if (existing !== undefined) return existing;
    const colon = key.lastIndexOf(':');
    const redis = this.#connect(key.slice(0, colon), Number(key.slice(colon + 1)));
    // The first `ready` belongs to `connected` (whoever waits on it
    // subscribes); every later one resubscribes what this connection holds.
    let first = true;
    const created: Shard = {
      key,
      redis,
      topics: new Set(),
      ready: false,
      connected: redis.connect().then(
        () => {
          first = false;
        },
        (error: unknown) => {
          first = false;
          throw error;
        },
      ),
    };
    created.connected.catch(() => undefined);
    redis.on('smessage', (topic: string, message: string) => {
      if (this.#topics.get(topic) !== created) return;
      for (const listener of this.#listeners) listener(topic, message);
    });
    redis.on('error', (error: Error) => {
      // Redis unsubscribed us by itself (the node lost the slot): ioredis has
      // no command waiting for that push and says so. Start again clean.
      if (error.message.startsWith('Command queue state error')) redis.disconnect(true);
    });
    // A MOVED answer to SSUBSCRIBE (the slot map changed): read it again.
    redis.on('moved', () => this.#refresh());
    redis.on('close', () => {
      created.ready = false;
      // The node may be gone for good (failover): read the slot map again.
      this.#refresh();
    });
    redis.on('ready', () => {
      created.ready = true;
      if (first) return;
      const topics = [...created.topics];
      if (topics.length > 0) void this.#resubscribe(created, topics);
    });
    this.#shards.set(key, created);
    return created;
  }

  /** SSUBSCRIBE `topics` on `shard` (grouped by slot, as Redis requires), then report them. */
  async #resubscribe(shard: Shard, topics: readonly string[]): Promise<void> {
    try {
      await this.#ssubscribe(shard, topics);
    } catch (error) {
      this.#onError(error, 'sharded resubscribe');
      // Try again from a fresh connection; its `ready` resubscribes.
      if (shard.redis.status === 'ready') shard.redis.disconnect(true);
      return;
    }
    const current = topics.filter((topic) => this.#topics.get(topic) === shard);
    if (current.length > 0) for (const listener of this.#resubscribed) listener(current);
  }

  async #ssubscribe(shard: Shard, topics: readonly string[]): Promise<void> {
    const bySlot = new Map<number, string[]>();
    for (const topic of topics) {
      const slot = this.#slotOf(topic);
      const group = bySlot.get(slot);
      if (group === undefined) bySlot.set(slot, [topic]);
      else group.push(topic);
    }
    await Promise.all([...bySlot.values()].map((group) => shard.redis.ssubscribe(...group)));
  }

  async subscribe(topic: string): Promise<void> {
    if (this.#closed) throw new Error('sharded pub/sub closed');
    const slot = this.#slotOf(topic);
    const owner = this.#cluster.slots[slot]?.[0];
    if (owner === undefined) throw new Error('no master known for the slot of ' + topic);
    const shard = this.#shard(owner);
    this.#topics.set(topic, shard);
    this.#slots.set(topic, slot);
    shard.topics.add(topic);
    try {
      if (!shard.ready) await shard.connected;
      await shard.redis.ssubscribe(topic);
    } catch (error) {
      if (this.#topics.get(topic) === shard) {
        this.#topics.delete(topic);
        this.#slots.delete(topic);
        shard.topics.delete(topic);
      }
      throw error;
    }
  }

  async unsubscribe(topic: string): Promise<void> {
    const shard = this.#topics.get(topic);
    if (shard === undefined) return;
    this.#topics.delete(topic);
    this.#slots.delete(topic);
    shard.topics.delete(topic);
    if (shard.ready) await shard.redis.sunsubscribe(topic);
  }

  #refresh(): void {
    if (!this.#closed) this.#cluster.refreshSlotsCache();
  }

  /** After a slot-map refresh: topics whose slot has a new master move there. */
  #rebalance(): void {
    if (this.#closed) return;
    const moved = new Map<Shard, string[]>();
    for (const [topic, shard] of this.#topics) {
      const owner = this.#owner(topic);
      if (owner === undefined || owner === shard.key) continue;
      shard.topics.delete(topic);
      const target = this.#shard(owner);
      target.topics.add(topic);
      this.#topics.set(topic, target);
      const list = moved.get(target);
      if (list === undefined) moved.set(target, [topic]);
      else list.push(topic);
    }
    const masters = this.masters();
    for (const [key, shard] of this.#shards) {
      if (shard.topics.size > 0 || masters.has(key)) continue;
      // No slot and no topic left here (a failed-over or removed master).
      this.#shards.delete(key);
      shard.redis.disconnect();
    }
    for (const [target, topics] of moved) {
      void target.connected.then(
        () => (target.ready ? this.#resubscribe(target, topics) : undefined),
        (error: unknown) => this.#onError(error, 'sharded connect'),
      );
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#cluster.off('refresh', this.#onRefresh);
    for (const shard of this.#shards.values()) shard.redis.disconnect();
    this.#shards.clear();
    this.#topics.clear();
    this.#slots.clear();
  }
}
