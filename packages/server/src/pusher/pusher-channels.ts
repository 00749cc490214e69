/**
 * Pusher channels on this node: their types (by name prefix, as Pusher) and
 * the one ChannelTap per internal channel that stands for every Pusher
 * connection subscribed to it here (core/hub.ts). A publication is read
 * once (pusherDelivery) and framed once per tap; each subscriber gets the
 * same bytes, except the connection whose socket id the publication
 * excludes. Presence taps keep the channel's members per user across nodes
 * (from the presence store at first subscribe, then every node's joins and
 * leaves), so member_added / member_removed go out once per user, not once
 * per connection.
 */
import type { ClientInfo } from '@herald/protocol';
import type { App } from '../apps/apps.ts';
import type { StoredPublication } from '../broker/broker.ts';
import type { ChannelTap } from '../core/hub.ts';
import { encodeServerTextFrameOf } from '../util/websocket-frame.ts';
import { pusherDelivery } from './pusher-publication.ts';
import { isCacheChannel } from '../core/channel-rules.ts';

/** What a channel's name makes it (docs/pusher.md, "Channel types"). */
export interface ChannelKind {
  /** Needs a signed `auth` (private-, presence-, private-encrypted-, private-cache-, presence-cache-). */
  readonly signed: boolean;
  readonly presence: boolean;
  /** cache-, private-cache-, presence-cache-: the last event is replayed on subscribe, else pusher:cache_miss. */
  readonly cache: boolean;
  /** private-encrypted-: the server relays ciphertext it cannot read; client events are refused (as Pusher). */
  readonly encrypted: boolean;
  /** `#server-to-user-{id}`: only the connection signed in as `id` may subscribe. */
  readonly serverToUser: string | undefined;
}

export const SERVER_TO_USER_PREFIX = '#server-to-user-';

/** Pusher's channel name characters. */
const namePattern = /^[A-Za-z0-9_\-=@,.;]+$/;

/** The kind of a channel name, or undefined when Pusher would refuse the name. */
export function channelKind(name: string, maxLength: number): ChannelKind | undefined {
  if (name.length === 0 || name.length > maxLength) return undefined;
  if (name.startsWith(SERVER_TO_USER_PREFIX)) {
    const user = name.slice(SERVER_TO_USER_PREFIX.length);
    if (user === '' || !namePattern.test(user)) return undefined;
    return { signed: false, presence: false, cache: false, encrypted: false, serverToUser: user };
  }
  if (!namePattern.test(name)) return undefined;
  const presence = name.startsWith('presence-');
  const encrypted = name.startsWith('private-encrypted-');
  const signed = presence || name.startsWith('private-');
  const cache = isCacheChannel(name);
  return { signed, presence, cache, encrypted, serverToUser: undefined };
}

/** What a tap writes to: one Pusher connection. */
export interface PusherSubscriber {
  readonly socketId: string;
  /** Writes a whole WebSocket frame (no-op when closed; cuts the connection when it is too far behind). */
  writeFrame(frame: Buffer): void;
}

/** A presence member as Pusher shows it. */
interface Member {
  /** Connections (socket ids) of this user in the channel, on every node → when this node learnt of each (ms). */
  readonly clients: Map<string, number>;
  info: unknown;
}

export class PusherChannel implements ChannelTap {
  readonly app: App;
  /** The app-local name (what frames carry). */
  readonly name: string;
  /** The server-internal name (appChannel). */
  readonly internal: string;
  readonly kind: ChannelKind;
  /** Subscribers here → their presence user id on this channel (undefined off presence channels). */
  readonly subscribers = new Map<PusherSubscriber, string | undefined>();
  /** Resolves once the broker delivers the channel here (and, on presence channels, the members are read). */
  ready: Promise<void> | undefined;
  /** Presence channels: members by user id, on every node. */
  readonly members = new Map<string, Member>();
  /** Subscription counting (subscription-counts.ts): the count last sent to this channel's subscribers here (-1: none). */
  countSent = -1;
  /** Subscribers that arrived since the last count was sent: they get the count at the next look even when it holds. */
  readonly countWaiting = new Set<PusherSubscriber>();
  /** Joins and leaves that arrive while the members are read: applied after. */
  #pending: [kind: 'join' | 'leave', info: ClientInfo][] | undefined;
  readonly #channelJson: string;

  readonly #now: () => number;

  constructor(app: App, name: string, internal: string, kind: ChannelKind, now: () => number = Date.now) {
    this.#now = now;
    this.app = app;
    this.name = name;
    this.internal = internal;
    this.kind = kind;
    this.#channelJson = JSON.stringify(name);
  }

  get size(): number {
    return this.subscribers.size;
  }

  /** A frame of an event on this channel (`data` a string, as Pusher sends it). */
  frame(event: string, data: string, userId?: string): string {
    const head = '{"event":' + JSON.stringify(event) + ',"channel":' + this.#channelJson + ',"data":' + JSON.stringify(data);
    return userId === undefined ? head + '}' : head + ',"user_id":' + JSON.stringify(userId) + '}';
  }

  deliverPublication(_channel: string, publication: StoredPublication): number {
    if (this.subscribers.size === 0) return 0;
    const delivery = pusherDelivery(publication);
    const bytes = encodeServerTextFrameOf(this.frame(delivery.event, delivery.data, delivery.userId));
    const excluded = delivery.excludeSocket;
    let count = 0;
    for (const subscriber of this.subscribers.keys()) {
      if (subscriber.socketId === excluded) continue;
      subscriber.writeFrame(bytes);
      count++;
    }
    return count;
  }

  deliverJoinLeave(kind: 'join' | 'leave', _channel: string, info: ClientInfo): void {
    if (!this.kind.presence) return;
    if (this.#pending !== undefined) {
      this.#pending.push([kind, info]);
      return;
    }
    if (kind === 'join') this.#join(info);
    else this.#leave(info);
  }

  reset(): void {
    // Pusher has no recovery: nothing to tell.
  }

  /** Presence: reads the members from the store (`read`), with the joins and leaves that arrive meanwhile. */
  async loadMembers(read: () => Promise<Record<string, ClientInfo>>): Promise<void> {
    this.#pending = [];
    try {
      const members = await read();
      for (const info of Object.values(members)) this.#add(info);
    } finally {
      const pending = this.#pending;
      this.#pending = undefined;
      for (const [kind, info] of pending) {
        if (kind === 'join') this.#join(info);
        else this.#leave(info);
      }
    }
  }

  /** Whether `user` may join: already a member, or the channel holds fewer than `maxMembers` users (the app's limit as it is now). */
  hasRoomFor(user: string, maxMembers: number): boolean {
    return this.members.has(user) || this.members.size < maxMembers;
  }

  /** The presence data of pusher_internal:subscription_succeeded, with `self` in it. */
  presenceData(self: ClientInfo): string {
    const hash: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    // A member without user_info is null in the hash (JSON drops undefined, and pusher-js finds members by key).
    for (const [user, member] of this.members) hash[user] = member.info ?? null;
    if (!(self.user in hash)) hash[self.user] = self.chan_info ?? null;
    const ids = Object.keys(hash);
    return JSON.stringify({ presence: { ids, hash, count: ids.length } });
  }

  #add(info: ClientInfo): boolean {
    let member = this.members.get(info.user);
    if (member === undefined) {
      member = { clients: new Map(), info: info.chan_info };
      this.members.set(info.user, member);
    }
    const first = member.clients.size === 0;
    if (!member.clients.has(info.client)) member.clients.set(info.client, this.#now());
    return first;
  }

  /**
   * Drops members whose connections the presence store no longer has (a
   * node that died never sent their leaves; the store expired them):
   * member_removed for each user left with no connection. Only connections
   * this node knew of before `read` started are judged, so a join that
   * overtakes the read's answer is not taken for a ghost; it never adds
   * (joins arrive as events).
   */
  async reconcile(read: () => Promise<Record<string, ClientInfo>>): Promise<void> {
    if (!this.kind.presence || this.#pending !== undefined || this.members.size === 0) return;
    const startedAt = this.#now();
    const present = await read();
    for (const [user, member] of [...this.members]) {
      for (const [client, since] of [...member.clients]) {
        if (since < startedAt && !(client in present)) this.#leave({ client, user });
      }
    }
  }

  #join(info: ClientInfo): void {
    if (!this.#add(info)) return;
    this.#toOthers(info.user, this.frame('pusher_internal:member_added', JSON.stringify({ user_id: info.user, user_info: info.chan_info })));
  }

  #leave(info: ClientInfo): void {
    const member = this.members.get(info.user);
    if (member === undefined || !member.clients.delete(info.client) || member.clients.size > 0) return;
    this.members.delete(info.user);
    this.#toOthers(info.user, this.frame('pusher_internal:member_removed', JSON.stringify({ user_id: info.user })));
  }

  /** To every subscriber here that is not `user` (a user never hears of its own arrival or departure). */
  #toOthers(user: string, text: string): void {
    let bytes: Buffer | undefined;
    for (const [subscriber, member] of this.subscribers) {
      if (member === user) continue;
      bytes ??= encodeServerTextFrameOf(text);
      subscriber.writeFrame(bytes);
    }
  }
}
