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

export class TransitionTracker {
  readonly #sink: TransitionSink;
  /** channel → sources holding at least one subscriber. */
  readonly #channels = new Map<string, Set<string>>();
  /** channel → member key → source → connections. */
  readonly #members = new Map<string, Map<string, { ref: MemberRef; bySource: Map<string, number> }>>();
  /**
   * Channels without sources whose members have not all left yet: a
   * connection's last subscriber leaves the hub before its presence entry,
   * and vacated must follow the last member_removed.
   */
  readonly #vacating = new Set<string>();
  /**
   * source → the channels it holds (for dropSource). Its members are found
   * by a scan of `#members` when it drops: a source drops rarely (a worker
   * died), members join and leave all the time.
   */
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
      member = { ref: info.user !== '' ? { user: info.user, info: info.conn_info } : { user: '', client: info.client }, bySource: new Map() };
      members.set(key, member);
    }
    member.bySource.set(source, (member.bySource.get(source) ?? 0) + 1);
    if (isNew) this.#sink.memberAdded(channel, member.ref);
  }

  left(source: string, channel: string, info: ClientInfo): void {
    this.#leave(source, channel, memberKey(info), 1);
  }

  #leave(source: string, channel: string, key: string, count: number): void {
    const members = this.#members.get(channel);
    const member = members?.get(key);
    if (members === undefined || member === undefined) return;
    const left = (member.bySource.get(source) ?? 0) - count;
    if (left > 0) {
      member.bySource.set(source, left);
      return;
    }
    member.bySource.delete(source);
    if (member.bySource.size > 0) return;
    members.delete(key);
    if (members.size === 0) this.#members.delete(channel);
    this.#sink.memberRemoved(channel, member.ref);
    if (members.size === 0 && this.#vacating.delete(channel)) this.#sink.vacated(channel);
  }

  /** A source is gone (a worker died): its members leave, then its channels, each transition once. */
  dropSource(source: string): void {
    const held = this.#bySource.get(source);
    this.#bySource.delete(source);
    for (const [channel, members] of [...this.#members]) {
      for (const [key, member] of [...members]) {
        if (member.bySource.has(source)) this.#leave(source, channel, key, Number.MAX_SAFE_INTEGER);
      }
    }
    if (held !== undefined) for (const channel of held) this.unsubscribed(source, channel);
  }
}
