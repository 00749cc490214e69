/**
 * Turns what nodes report (node-events.ts: this node's first and last
 * subscriber of a channel, per-connection presence) into cluster-wide
 * transitions: a channel is occupied when its first source (a process
 * holding subscribers) arrives and vacated when its last leaves; a member
 * is added when a user's first connection joins a presence channel and
 * removed when the user's last connection leaves it.
 *
 * One tracker must see every source's reports, in order per source: the
 * single process itself, or the cluster primary for its workers. When a
 * source dies, `dropSource` ends what it held: member_removed and vacated
 * follow for the transitions its death completes, once.
 */
import type { ClientInfo } from '@herald/protocol';

export interface TransitionSink {
  occupied(channel: string): void;
  vacated(channel: string): void;
  memberAdded(channel: string, member: MemberRef): void;
  memberRemoved(channel: string, member: MemberRef): void;
}

/** A member: a user id, or for an anonymous connection its client id (user ''). */
export interface MemberRef {
  readonly user: string;
  readonly client?: string | undefined;
  readonly info?: unknown;
}

function memberKey(info: ClientInfo): string {
  return info.user !== '' ? 'u' + info.user : 'c' + info.client;
}

/**
 * A member of a channel: the connections each source holds of it. Kept per
 * connection of a presence channel (every idle presence subscriber has
 * one), so the usual case, one source (the single process, or one worker),
 * holds no Map and no ref object: the ref is made when an event needs it.
 */
class Member {
  /** The first connection's info: the member's ref (`refOf`). */
  readonly info: ClientInfo;
  /** The one source holding it, while there is one and `more` is undefined. */
  #source: string | undefined = undefined;
  #count = 0;
  /** Sources → connections, once a second source holds it. */
  #more: Map<string, number> | undefined = undefined;

  constructor(info: ClientInfo) {
    this.info = info;
  }

  countOf(source: string): number {
    if (this.#more !== undefined) return this.#more.get(source) ?? 0;
    return this.#source === source ? this.#count : 0;
  }

  /** Sets `source`'s count (0 removes it). */
  set(source: string, count: number): void {
    if (this.#more === undefined) {
      if (this.#source === undefined || this.#source === source) {
        this.#source = count > 0 ? source : undefined;
        this.#count = count;
        return;
      }
      if (count === 0) return;
      this.#more = new Map([[this.#source, this.#count]]);
      this.#source = undefined;
    }
    if (count > 0) this.#more.set(source, count);
    else this.#more.delete(source);
  }

  /** Whether no source holds it any more. */
  get empty(): boolean {
    return this.#more === undefined ? this.#source === undefined : this.#more.size === 0;
  }
}

/** The ref of a member from its first connection's info. */
function refOf(info: ClientInfo): MemberRef {
  return info.user !== '' ? { user: info.user, info: info.conn_info } : { user: '', client: info.client };
}

export class TransitionTracker {
  readonly #sink: TransitionSink;
  /** channel → sources holding at least one subscriber. */
  readonly #channels = new Map<string, Set<string>>();
  /** channel → member key → its member. */
  readonly #members = new Map<string, Map<string, Member>>();
  /**
   * Channels without sources whose members have not all left yet: a
   * connection's last subscriber leaves the hub before its presence entry,
   * and vacated must follow the last member_removed.
   */
  readonly #vacating = new Set<string>();
  /** source → the channels it holds (for dropSource; its members are found in #members). */
  readonly #bySource = new Map<string, Set<string>>();

  constructor(sink: TransitionSink) {
    this.#sink = sink;
  }

  #source(source: string): Set<string> {
    let held = this.#bySource.get(source);
    if (held === undefined) {
      held = new Set();
      this.#bySource.set(source, held);
    }
    return held;
  }

  subscribed(source: string, channel: string): void {
    if (channel.startsWith('|')) return; // the delivery probe's channel, outside the channel grammar
    let sources = this.#channels.get(channel);
    if (sources === undefined) {
      sources = new Set();
      this.#channels.set(channel, sources);
    }
    if (sources.has(source)) return;
    sources.add(source);
    this.#source(source).add(channel);
    if (sources.size === 1 && !this.#vacating.delete(channel)) this.#sink.occupied(channel);
  }

  unsubscribed(source: string, channel: string): void {
    if (channel.startsWith('|')) return;
    const sources = this.#channels.get(channel);
    if (sources === undefined || !sources.delete(source)) return;
    this.#bySource.get(source)?.delete(channel);
    if (sources.size === 0) {
      this.#channels.delete(channel);
      if (this.#members.has(channel)) this.#vacating.add(channel);
      else this.#sink.vacated(channel);
    }
  }

  /**
   * A join is counted only while its source holds the channel: a connection
   * that closed while subscribing has already left the hub, and its late
   * join (and the leave that follows it) must not revive a vacated channel.
   */
  joined(source: string, channel: string, info: ClientInfo): void {
    if (this.#channels.get(channel)?.has(source) !== true) return;
    let members = this.#members.get(channel);
    if (members === undefined) {
      members = new Map();
      this.#members.set(channel, members);
    }
    const key = memberKey(info);
    let member = members.get(key);
    const isNew = member === undefined;
    if (member === undefined) {
      member = new Member(info);
      members.set(key, member);
    }
    member.set(source, member.countOf(source) + 1);
    if (isNew) this.#sink.memberAdded(channel, refOf(member.info));
  }

  left(source: string, channel: string, info: ClientInfo): void {
    this.#leave(source, channel, memberKey(info), 1);
  }

  #leave(source: string, channel: string, key: string, count: number): void {
    const members = this.#members.get(channel);
    const member = members?.get(key);
    if (members === undefined || member === undefined) return;
    const held = member.countOf(source);
    if (held === 0) return;
    member.set(source, Math.max(0, held - count));
    if (!member.empty) return;
    members.delete(key);
    if (members.size === 0) this.#members.delete(channel);
    this.#sink.memberRemoved(channel, refOf(member.info));
    if (members.size === 0 && this.#vacating.delete(channel)) this.#sink.vacated(channel);
  }

  /** A source is gone (a worker died): its members leave, then its channels, each transition once. */
  dropSource(source: string): void {
    const channels = this.#bySource.get(source);
    this.#bySource.delete(source);
    // Found by a scan: a source drops rarely, members join and leave all the time.
    const held: [string, string][] = [];
    for (const [channel, members] of this.#members) {
      for (const [key, member] of members) if (member.countOf(source) > 0) held.push([channel, key]);
    }
    for (const [channel, key] of held) this.#leave(source, channel, key, Number.MAX_SAFE_INTEGER);
    if (channels !== undefined) for (const channel of channels) this.unsubscribed(source, channel);
  }
}
