/**
 * Local connections and subscriptions of this node. The hub is the fan-out:
 * a publication is encoded once and written to each local subscriber.
 * It tells the broker when the first local subscriber of a channel arrives
 * and when the last one leaves.
 */
import { encodePublicationPush, encodePush, type ClientInfo } from '@herald/protocol';
import type { Broker, StoredPublication } from '../broker/broker.ts';
import { diagnostics } from '../observability/diagnostics.ts';
import { EncodedFrame } from './encoded-frame.ts';
import type { Client, Subscription } from './client.ts';
import type { NodeEvents } from './node-events.ts';

/**
 * A channel with local subscribers, and where this node's broker
 * subscription to it stands: in flight (every subscriber waits for the same
 * answer), established, or none (the last attempt failed; the next
 * subscriber tries again).
 */
interface ChannelEntry {
  readonly subs: Set<Subscription>;
  broker: Promise<void> | 'subscribed' | undefined;
}

export class Hub {
  readonly #broker: Broker;
  /** The Node's id, named in diagnostics events. */
  readonly #nodeId: string;
  readonly #channels = new Map<string, ChannelEntry>();
  /** Connected clients by user id; anonymous clients (user '') are only counted. */
  readonly #users = new Map<string, Set<Client>>();
  #clientCount = 0;

  /** Told of connections and of channels gaining their first or losing their last local subscriber (webhooks). */
  readonly #events: NodeEvents | undefined;

  constructor(broker: Broker, nodeId: string, events?: NodeEvents) {
    this.#broker = broker;
    this.#nodeId = nodeId;
    this.#events = events;
  }

  get clientCount(): number {
    return this.#clientCount;
  }

  get channelCount(): number {
    return this.#channels.size;
  }

  /** Called once per client when it connects (and removeClient once when a connected client closes). */
  addClient(client: Client): void {
    this.#clientCount++;
    this.#events?.clientConnected(client.info, client.transport.kind);
    if (client.user === '') return;
    let set = this.#users.get(client.user);
    if (set === undefined) {
      set = new Set();
      this.#users.set(client.user, set);
    }
    set.add(client);
  }

  removeClient(client: Client, code = 0, reason = ''): void {
    this.#clientCount--;
    this.#events?.clientDisconnected(client.info, client.transport.kind, code, reason);
    if (client.user === '') return;
    const set = this.#users.get(client.user);
    if (set === undefined) return;
    set.delete(client);
    if (set.size === 0) this.#users.delete(client.user);
  }

  /** Connection count per user id on this node. */
  *userCounts(): IterableIterator<[string, number]> {
    for (const [user, set] of this.#users) yield [user, set.size];
  }

  userClients(user: string): Client[] {
    return [...(this.#users.get(user) ?? [])];
  }

  /**
   * Adds a local subscriber. Resolves once the broker delivers the channel's
   * publications to this node (so a history read after it misses nothing);
   * rejects when the broker subscription failed, and the caller then removes
   * `sub` again. Adding a subscription that is already there only waits.
   */
  async addSubscription(sub: Subscription): Promise<void> {
    const channel = sub.channel;
    let entry = this.#channels.get(channel);
    if (entry === undefined) {
      entry = { subs: new Set(), broker: undefined };
      this.#channels.set(channel, entry);
      this.#events?.channelSubscribed(channel);
    }
    entry.subs.add(sub);
    if (entry.broker === 'subscribed') return;
    if (entry.broker === undefined) {
      const target = entry;
      const subscribing: Promise<void> = this.#broker.subscribe(channel).then(
        () => {
          if (target.broker === subscribing) target.broker = 'subscribed';
        },
        (error: unknown) => {
          if (target.broker === subscribing) target.broker = undefined;
          throw error;
        },
      );
      entry.broker = subscribing;
    }
    await entry.broker;
  }

  async removeSubscription(sub: Subscription): Promise<void> {
    const entry = this.#channels.get(sub.channel);
    if (entry === undefined || !entry.subs.delete(sub)) return;
    if (entry.subs.size === 0) {
      this.#channels.delete(sub.channel);
      this.#events?.channelUnsubscribed(sub.channel);
      if (entry.broker !== undefined) await this.#broker.unsubscribe(sub.channel);
    }
  }

  /**
   * The hub's own copy of a channel name when the channel has local
   * subscribers, else `channel`: subscriptions share one string per channel.
   */
  channelName(channel: string): string {
    const entry = this.#channels.get(channel);
    if (entry !== undefined) for (const sub of entry.subs) return sub.channel;
    return channel;
  }

  /** Local subscriber count per channel. */
  channels(): Map<string, number> {
    const result = new Map<string, number>();
    for (const [channel, entry] of this.#channels) result.set(channel, entry.subs.size);
    return result;
  }

  subscriberCount(channel: string): number {
    return this.#channels.get(channel)?.subs.size ?? 0;
  }

  encodePublication(channel: string, publication: StoredPublication): EncodedFrame {
    return new EncodedFrame(encodePublicationPush(channel, publication.offset, publication.data, publication.info));
  }

  deliverPublication(channel: string, publication: StoredPublication): void {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return;
    const frame = this.encodePublication(channel, publication);
    const offset = publication.offset;
    const epoch = publication.epoch;
    let count = 0;
    for (const sub of entry.subs) {
      if (epoch !== undefined && sub.recoverable && sub.pending === null && epoch !== sub.epoch) {
        sub.client.insufficientState(sub);
        continue;
      }
      if (sub.client.deliverPublication(sub, offset, frame)) count++;
    }
    if (diagnostics.delivered.hasSubscribers) diagnostics.delivered.publish({ node: this.#nodeId, count });
  }

  deliverJoinLeave(kind: 'join' | 'leave', channel: string, info: ClientInfo): void {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return;
    const frame = new EncodedFrame(encodePush({ push: kind, channel, info }));
    for (const sub of entry.subs) {
      if (sub.pending === null) sub.client.writePush(frame);
    }
  }

  /** Every subscription of a channel must resynchronize (the broker may have lost data). */
  resetChannel(channel: string): void {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return;
    for (const sub of [...entry.subs]) {
      if (sub.recoverable) sub.client.insufficientState(sub);
    }
  }
}
