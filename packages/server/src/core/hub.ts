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
import { nativeName } from '../apps/apps.ts';

/**
 * A channel with local subscribers, and where this node's broker
 * subscription to it stands: in flight (every subscriber waits for the same
 * answer), established, or none (the last attempt failed; the next
 * subscriber tries again).
 */
interface ChannelEntry {
  readonly subs: Set<Subscription>;
  /** Another protocol's subscribers of the channel on this node (the Pusher endpoint), if any. */
  tap: ChannelTap | undefined;
  broker: Promise<void> | 'subscribed' | undefined;
}

/**
 * The subscribers of another protocol on this node (the Pusher endpoint,
 * packages/server/src/pusher): one tap per channel stands for all of that
 * protocol's connections subscribed to it here, and encodes each
 * publication once for them. A tap counts as local subscribers: it holds
 * the broker subscription and the channel's occupancy (node events), and
 * `channels()` and `subscriberCount()` add its `size`. At most one tap per
 * channel.
 */
export interface ChannelTap {
  /** How many connections the tap stands for (subscriber counts, snapshots, `channels()`). */
  readonly size: number;
  /**
   * A publication of the channel: per channel in offset order, each at most
   * once (BrokerEventHandler.onPublication). Answers how many connections it
   * was written to (the deliveries metric).
   */
  deliverPublication(channel: string, publication: StoredPublication): number;
  /** A join or leave of the channel (namespaces with joinLeave, or the Pusher endpoint's presence channels). */
  deliverJoinLeave(kind: 'join' | 'leave', channel: string, info: ClientInfo): void;
  /** The broker may have lost publications of the channel. */
  reset(channel: string): void;
}

export class Hub {
  readonly #broker: Broker;
  /** The Node's id, named in diagnostics events. */
  readonly #nodeId: string;
  readonly #channels = new Map<string, ChannelEntry>();
  /** Frames of publications read from history, by publication object (recoveredFrame). */
  readonly #recovered = new WeakMap<StoredPublication, { readonly channel: string; readonly frame: EncodedFrame }>();
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
    const key = client.userKey;
    if (key === '') return;
    let set = this.#users.get(key);
    if (set === undefined) {
      set = new Set();
      this.#users.set(key, set);
    }
    set.add(client);
  }

  removeClient(client: Client, code = 0, reason = ''): void {
    this.#clientCount--;
    this.#events?.clientDisconnected(client.info, client.transport.kind, code, reason);
    const key = client.userKey;
    if (key === '') return;
    const set = this.#users.get(key);
    if (set === undefined) return;
    set.delete(client);
    if (set.size === 0) this.#users.delete(key);
  }

  /** Connection count per user on this node, by Client.userKey (an app's users are `~{id}~user`). */
  *userCounts(): IterableIterator<[string, number]> {
    for (const [user, set] of this.#users) yield [user, set.size];
  }

  /** This node's connections of a user, by Client.userKey (the server's own users: their id). */
  userClients(user: string): Client[] {
    return [...(this.#users.get(user) ?? [])];
  }

  /**
   * Adds a local subscriber. Resolves once the broker delivers the channel's
   * publications to this node (so a history read after it misses nothing);
   * rejects when the broker subscription failed, and the caller then removes
   * `sub` again. Adding a subscription that is already there only waits.
   * Undefined instead of a promise when the broker subscription is already
   * in place (nothing to wait for: the common case in a reconnect storm).
   */
  addSubscription(sub: Subscription): Promise<void> | undefined {
    const channel = sub.channel;
    const entry = this.#entry(channel);
    entry.subs.add(sub);
    return entry.broker === 'subscribed' ? undefined : this.#brokerSubscribed(channel, entry);
  }

  /**
   * Adds the channel's tap (ChannelTap). Resolves once the broker delivers
   * the channel's publications to this node; rejects when the broker
   * subscription failed, and the caller then removes the tap again. Throws
   * when the channel has another tap.
   */
  async addTap(channel: string, tap: ChannelTap): Promise<void> {
    const entry = this.#entry(channel);
    if (entry.tap !== undefined && entry.tap !== tap) throw new Error(`channel ${channel} has a tap already`);
    entry.tap = tap;
    await this.#brokerSubscribed(channel, entry);
  }

  /** Removes the channel's tap; the last local subscriber gone ends the broker subscription. */
  async removeTap(channel: string, tap: ChannelTap): Promise<void> {
    const entry = this.#channels.get(channel);
    if (entry === undefined || entry.tap !== tap) return;
    entry.tap = undefined;
    await this.#leftOne(channel, entry);
  }

  #entry(channel: string): ChannelEntry {
    let entry = this.#channels.get(channel);
    if (entry === undefined) {
      entry = { subs: new Set(), tap: undefined, broker: undefined };
      this.#channels.set(channel, entry);
      this.#events?.channelSubscribed(channel);
    }
    return entry;
  }

  async #brokerSubscribed(channel: string, entry: ChannelEntry): Promise<void> {
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
    await this.#leftOne(sub.channel, entry);
  }

  async #leftOne(channel: string, entry: ChannelEntry): Promise<void> {
    if (entry.subs.size > 0 || entry.tap !== undefined) return;
    this.#channels.delete(channel);
    this.#events?.channelUnsubscribed(channel);
    if (entry.broker !== undefined) await this.#broker.unsubscribe(channel);
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
    for (const [channel, entry] of this.#channels) result.set(channel, entry.subs.size + (entry.tap?.size ?? 0));
    return result;
  }

  subscriberCount(channel: string): number {
    const entry = this.#channels.get(channel);
    return entry === undefined ? 0 : entry.subs.size + (entry.tap?.size ?? 0);
  }

  /** The frame of a publication for every native subscriber of the channel; an app's channel carries its app-local name (nativeName). */
  encodePublication(channel: string, publication: StoredPublication): EncodedFrame {
    return new EncodedFrame(encodePublicationPush(nativeName(channel), publication.offset, publication.data, publication.info));
  }

  /**
   * `encodePublication` for a publication read from history (recovery):
   * the frame is kept with the publication object, so the subscribers that
   * recover the same history page (a reconnect storm; the engines hand out
   * the same objects while a page is cached) share one frame and its
   * encodings instead of one each.
   */
  recoveredFrame(channel: string, publication: StoredPublication): EncodedFrame {
    const known = this.#recovered.get(publication);
    if (known !== undefined && known.channel === channel) return known.frame;
    const frame = this.encodePublication(channel, publication);
    this.#recovered.set(publication, { channel, frame });
    return frame;
  }

  deliverPublication(channel: string, publication: StoredPublication): void {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return;
    let count = entry.tap === undefined ? 0 : entry.tap.deliverPublication(channel, publication);
    if (entry.subs.size > 0) {
      const frame = this.encodePublication(channel, publication);
      const offset = publication.offset;
      const epoch = publication.epoch;
      for (const sub of entry.subs) {
        if (epoch !== undefined && sub.recoverable && sub.pending === null && epoch !== sub.epoch) {
          sub.client.insufficientState(sub);
          continue;
        }
        if (sub.client.deliverPublication(sub, offset, frame)) count++;
      }
    }
    if (diagnostics.delivered.hasSubscribers) diagnostics.delivered.publish({ node: this.#nodeId, count });
  }

  deliverJoinLeave(kind: 'join' | 'leave', channel: string, info: ClientInfo): void {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return;
    entry.tap?.deliverJoinLeave(kind, channel, info);
    if (entry.subs.size === 0) return;
    const frame = new EncodedFrame(encodePush({ push: kind, channel: nativeName(channel), info }));
    for (const sub of entry.subs) {
      if (sub.pending === null) sub.client.writePush(frame);
    }
  }

  /** Every subscription of a channel must resynchronize (the broker may have lost data). */
  resetChannel(channel: string): void {
    const entry = this.#channels.get(channel);
    if (entry === undefined) return;
    entry.tap?.reset(channel);
    for (const sub of [...entry.subs]) {
      if (sub.recoverable) sub.client.insufficientState(sub);
    }
  }
}
