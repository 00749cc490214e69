/**
 * Local connections and subscriptions of this node. The hub is the fan-out:
 * a publication is encoded once and written to each local subscriber.
 * It tells the broker when the first local subscriber of a channel arrives
 * and when the last one leaves.
 */
import { encodePublicationPush, encodePush, type ClientInfo } from '../protocol/index.ts';
import type { Broker, StoredPublication } from '../broker/broker.ts';
import { diagnostics } from '../observability/diagnostics.ts';
import { EncodedFrame } from './encoded-frame.ts';
import type { Client, Subscription } from './client.ts';

export class Hub {
  readonly #broker: Broker;
  /** The Node's id, named in diagnostics events. */
  readonly #nodeId: string;
  readonly #channels = new Map<string, Set<Subscription>>();
  /** Connected clients by user id; anonymous clients (user '') are only counted. */
  readonly #users = new Map<string, Set<Client>>();
  #clientCount = 0;

  constructor(broker: Broker, nodeId: string) {
    this.#broker = broker;
    this.#nodeId = nodeId;
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
    if (client.user === '') return;
    let set = this.#users.get(client.user);
    if (set === undefined) {
      set = new Set();
      this.#users.set(client.user, set);
    }
    set.add(client);
  }

  removeClient(client: Client): void {
    this.#clientCount--;
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

  async addSubscription(sub: Subscription): Promise<void> {
    let set = this.#channels.get(sub.channel);
    if (set === undefined) {
      set = new Set();
      this.#channels.set(sub.channel, set);
      set.add(sub);
      await this.#broker.subscribe(sub.channel);
      return;
    }
    set.add(sub);
  }

  async removeSubscription(sub: Subscription): Promise<void> {
    const set = this.#channels.get(sub.channel);
    if (set === undefined || !set.delete(sub)) return;
    if (set.size === 0) {
      this.#channels.delete(sub.channel);
      await this.#broker.unsubscribe(sub.channel);
    }
  }

  /**
   * The hub's own copy of a channel name when the channel has local
   * subscribers, else `channel`: subscriptions share one string per channel.
   */
  channelName(channel: string): string {
    const set = this.#channels.get(channel);
    if (set !== undefined) for (const sub of set) return sub.channel;
    return channel;
  }

  /** Local subscriber count per channel. */
  channels(): Map<string, number> {
    const result = new Map<string, number>();
    for (const [channel, set] of this.#channels) result.set(channel, set.size);
    return result;
  }

  subscriberCount(channel: string): number {
    return this.#channels.get(channel)?.size ?? 0;
  }

  encodePublication(channel: string, publication: StoredPublication): EncodedFrame {
    return new EncodedFrame(encodePublicationPush(channel, publication.offset, publication.data, publication.info));
  }

  deliverPublication(channel: string, publication: StoredPublication): void {
    const set = this.#channels.get(channel);
    if (set === undefined) return;
    const frame = this.encodePublication(channel, publication);
    const offset = publication.offset;
    const epoch = publication.epoch;
    let count = 0;
    for (const sub of set) {
      if (epoch !== undefined && sub.recoverable && sub.pending === null && epoch !== sub.epoch) {
        sub.client.insufficientState(sub);
        continue;
      }
      if (sub.client.deliverPublication(sub, offset, frame)) count++;
    }
    if (diagnostics.delivered.hasSubscribers) diagnostics.delivered.publish({ node: this.#nodeId, count });
  }

  deliverJoinLeave(kind: 'join' | 'leave', channel: string, info: ClientInfo): void {
    const set = this.#channels.get(channel);
    if (set === undefined) return;
    const frame = new EncodedFrame(encodePush({ push: kind, channel, info }));
    for (const sub of set) {
      if (sub.pending === null) sub.client.writePush(frame);
    }
  }

  /** Every subscription of a channel must resynchronize (the broker may have lost data). */
  resetChannel(channel: string): void {
    const set = this.#channels.get(channel);
    if (set === undefined) return;
    for (const sub of [...set]) {
      if (sub.recoverable) sub.client.insufficientState(sub);
    }
  }
}
