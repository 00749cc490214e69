/**
 * Redis broker: streams (epoch, offset, history) in Redis with offsets
 * assigned atomically by a Lua script that also publishes, so per-channel
 * order is Redis's order; publications fan out through Redis pub/sub to
 * every node subscribed to the channel (one SUBSCRIBE per channel, on
 * demand). A stream whose data is lost (FLUSHALL, eviction, expiry) gets a
 * new epoch, so recovering clients get `recovered: false`, never wrong
 * history; a new epoch starts with an empty history list (the list may have
 * outlived the epoch's record, e.g. under allkeys-* eviction).
 *
 * Failure rules: every call has a timeout (the clients' commandTimeout) and
 * fails fast while disconnected (no offline queue), so a publish Herald
 * cannot deliver is rejected (the API answers 503), never acknowledged.
 * After the subscriber connection comes back and the engine has subscribed
 * again (packages/server/src/broker/redis-engine.ts), every subscribed channel is reset
 * (`resetAll`: subscribers resynchronize through recovery): messages may
 * have been lost meanwhile. Resetting only once the SUBSCRIBE is answered
 * means a resynchronization reads history that overlaps live delivery.
 */
import type { Cluster, Redis } from 'ioredis';
import type { ClientInfo, StreamPosition } from '@herald/protocol';
import { BrokerUnavailableError, type Broker, type BrokerEventHandler, type HistoryPage, type HistoryQuery, type PublishOptions, type StoredPublication, type StreamOptions } from './broker.ts';
import { newEpoch } from './memory-broker.ts';
import { ShardedPubSub } from './redis-sharded-pubsub.ts';

export { BrokerUnavailableError };

/**
 * KEYS[3], when given, is the publish's idempotency key: a known key answers
 * the first publish's position and publishes nothing; a new one is stored
 * (PX the window, ARGV[9]) in the same script as the publish, so two nodes
 * racing with one key publish once.
 */
const publishScript = `
if KEYS[3] then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local i = string.find(seen, '\\n', 1, true)
    return {tonumber(string.sub(seen, 1, i - 1)), string.sub(seen, i + 1)}
  end
end
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[1], 'e', epoch)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 't', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local entry = offset .. '\\n' .. ARGV[3] .. '\\n' .. ARGV[2] .. '\\n' .. ARGV[1]
redis.call('RPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('PUBLISH', ARGV[8], 'p' .. epoch .. '\\n' .. entry)
if KEYS[3] then redis.call('SET', KEYS[3], offset .. '\\n' .. epoch, 'PX', ARGV[9]) end
return {offset, epoch}
`;

/** A publication without history, once per idempotency key (KEYS[1]) within the window (ARGV[1]). */
const publishOnceScript = `
if redis.call('SET', KEYS[1], '0\\n', 'NX', 'PX', ARGV[1]) then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 0
`;

const historyScript = `
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 't', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('DEL', KEYS[2])
end
local top = redis.call('HGET', KEYS[1], 't') or '0'
local list = {}
if ARGV[3] == '1' then list = redis.call('LRANGE', KEYS[2], 0, -1) end
return {epoch, top, list}
`;

/** Scripts that publish, for a Redis Cluster: SPUBLISH to a topic in the keys' slot. */
function sharded(lua: string): string {
  return lua.replaceAll("redis.call('PUBLISH'", "redis.call('SPUBLISH'");
}

export interface RedisBrokerOptions {
  /** Commands and scripts (one Redis, or a Redis Cluster). Created and owned by the composition root. */
  readonly command: Redis | Cluster;
  /**
   * Pub/sub only. Created and owned by the composition root. A
   * `ShardedPubSub` (Redis Cluster) puts every channel's topic in the slot of
   * its stream keys (`{channel}` hash tag) and publishes with SPUBLISH.
   */
  readonly subscriber: Redis | ShardedPubSub;
  readonly prefix: string;
  readonly streamMetaTtlMs: number;
  readonly now?: () => number;
  readonly onError?: (error: unknown, what: string) => void;
}

/** Messages on a channel's pub/sub topic: p(ublication), j(oin), l(eave). */
function decodeEntry(text: string, epoch: string | undefined): StoredPublication | undefined {
  const a = text.indexOf('\n');
  const b = text.indexOf('\n', a + 1);
  const c = text.indexOf('\n', b + 1);
  if (a < 0 || b < 0 || c < 0) return undefined;
  const offset = Number(text.slice(0, a));
  const time = Number(text.slice(a + 1, b));
  const infoText = text.slice(b + 1, c);
  const data = text.slice(c + 1);
  if (!Number.isSafeInteger(offset) || !Number.isFinite(time)) return undefined;
  let info: ClientInfo | undefined;
  if (infoText !== '') {
    try {
      info = JSON.parse(infoText) as ClientInfo;
    } catch {
      return undefined;
    }
  }
  return { offset, epoch, data, info, time };
}

export class RedisBroker implements Broker {
  readonly #command: Redis | Cluster;
  readonly #subscriber: Redis | ShardedPubSub;
  readonly #sharded: boolean;
  readonly #prefix: string;
  readonly #metaTtlMs: number;
  readonly #now: () => number;
  readonly #onError: (error: unknown, what: string) => void;
  /** Channels subscribed (or being subscribed) → the attempt that added them. */
  readonly #channels = new Map<string, number>();
  #attempts = 0;
  #handler: BrokerEventHandler | undefined;

  constructor(options: RedisBrokerOptions) {
    this.#command = options.command;
    this.#subscriber = options.subscriber;
    this.#prefix = options.prefix;
    this.#metaTtlMs = options.streamMetaTtlMs;
    this.#now = options.now ?? Date.now;
    this.#onError = options.onError ?? (() => {});
    this.#sharded = options.subscriber instanceof ShardedPubSub;
    const publishLua = this.#sharded ? sharded(publishScript) : publishScript;
    this.#command.defineCommand('heraldPublish', { numberOfKeys: 2, lua: publishLua });
    this.#command.defineCommand('heraldPublishOnce', { numberOfKeys: 3, lua: publishLua });
    this.#command.defineCommand('heraldPublishNoHistoryOnce', { numberOfKeys: 1, lua: this.#sharded ? sharded(publishOnceScript) : publishOnceScript });
    this.#command.defineCommand('heraldHistory', { numberOfKeys: 2, lua: historyScript });
    const listener = (topic: string, message: string) => this.#onMessage(topic, message);
    if (options.subscriber instanceof ShardedPubSub) options.subscriber.onMessage(listener);
    else options.subscriber.on('message', listener);
  }

  /** The pub/sub topic of a channel; on a cluster in the slot of the channel's keys. */
  topic(channel: string): string {
    return this.#sharded ? `${this.#prefix}:ch:{${channel}}` : `${this.#prefix}:ch:${channel}`;
  }

  /** The channel of a topic (`topic`'s inverse), or undefined for another topic. */
  channelOf(topic: string): string | undefined {
    const prefix = this.#sharded ? `${this.#prefix}:ch:{` : `${this.#prefix}:ch:`;
    if (!topic.startsWith(prefix)) return undefined;
    if (!this.#sharded) return topic.slice(prefix.length);
    return topic.endsWith('}') ? topic.slice(prefix.length, -1) : undefined;
  }

  /** PUBLISH, or SPUBLISH on a cluster. */
  #publishRaw(topic: string, message: string): Promise<unknown> {
    return this.#sharded ? this.#command.spublish(topic, message) : this.#command.publish(topic, message);
  }

  #keys(channel: string): [string, string] {
    // The hash tag keeps a stream's keys in one Redis Cluster slot.
    return [`${this.#prefix}:{${channel}}:meta`, `${this.#prefix}:{${channel}}:hist`];
  }

  #onceKey(channel: string, key: string): string {
    return `${this.#prefix}:{${channel}}:once:${key}`;
  }

  setEventHandler(handler: BrokerEventHandler): void {
    this.#handler = handler;
  }

  #onMessage(topic: string, message: string): void {
    const channel = this.channelOf(topic);
    if (channel === undefined || !this.#channels.has(channel)) return;
    const kind = message.charCodeAt(0);
    try {
      if (kind === 112 /* p */) {
        const newline = message.indexOf('\n');
        const epoch = message.slice(1, newline);
        const publication = decodeEntry(message.slice(newline + 1), epoch === '' ? undefined : epoch);
        if (publication !== undefined) this.#handler?.onPublication(channel, publication);
      } else if (kind === 106 /* j */) {
        this.#handler?.onJoin(channel, JSON.parse(message.slice(1)) as ClientInfo);
      } else if (kind === 108 /* l */) {
        this.#handler?.onLeave(channel, JSON.parse(message.slice(1)) as ClientInfo);
      }
    } catch (error) {
      this.#onError(error, 'decode pub/sub message');
    }
  }

  async #call<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      this.#onError(error, what);
      throw new BrokerUnavailableError(`redis ${what} failed`);
    }
  }

  async publish(channel: string, data: string, options: PublishOptions): Promise<StreamPosition> {
    const time = this.#now();
    const info = options.info === undefined ? '' : JSON.stringify(options.info);
    const once = options.idempotency;
    const commands = this.#command as unknown as HeraldCommands;
    if (options.stream.size === 0) {
      const message = `p\n0\n${time}\n${info}\n${data}`;
      if (once === undefined) await this.#call('publish', () => this.#publishRaw(this.topic(channel), message));
      else await this.#call('publish', () => commands.heraldPublishNoHistoryOnce(this.#onceKey(channel, once.key), String(Math.max(once.windowMs, 1)), this.topic(channel), message));
      return { epoch: '', offset: 0 };
    }
    const [meta, hist] = this.#keys(channel);
    const ttl = Math.max(options.stream.ttlMs, 1);
    const args = [data, info, String(time), String(options.stream.size), String(Math.max(this.#metaTtlMs, ttl)), newEpoch(), String(ttl), this.topic(channel)];
    const result = (await this.#call('publish', () =>
      once === undefined
        ? commands.heraldPublish(meta, hist, ...args)
        : commands.heraldPublishOnce(meta, hist, this.#onceKey(channel, once.key), ...args, String(Math.max(once.windowMs, 1))),
    )) as [number, string];
    return { epoch: String(result[1]), offset: Number(result[0]) };
  }

  async publishJoin(channel: string, info: ClientInfo): Promise<void> {
    await this.#call('publish join', () => this.#publishRaw(this.topic(channel), 'j' + JSON.stringify(info)));
  }

  /** Best effort: a leave that cannot be published must not fail an unsubscribe or a close. */
  async publishLeave(channel: string, info: ClientInfo): Promise<void> {
    await this.#publishRaw(this.topic(channel), 'l' + JSON.stringify(info)).catch((error: unknown) => this.#onError(error, 'publish leave'));
  }

  async subscribe(channel: string): Promise<void> {
    if (this.#channels.has(channel)) return;
    const attempt = ++this.#attempts;
    this.#channels.set(channel, attempt);
    try {
      const subscriber = this.#subscriber;
      const topic = this.topic(channel);
      await this.#call('subscribe', () => (subscriber instanceof ShardedPubSub ? subscriber.subscribe(topic) : subscriber.subscribe(topic)));
    } catch (error) {
      // Only this attempt's entry: an unsubscribe and a new subscribe may have come meanwhile.
      if (this.#channels.get(channel) === attempt) this.#channels.delete(channel);
      throw error;
    }
  }

  async unsubscribe(channel: string): Promise<void> {
    if (!this.#channels.delete(channel)) return;
    const subscriber = this.#subscriber;
    const topic = this.topic(channel);
    await (subscriber instanceof ShardedPubSub ? subscriber.unsubscribe(topic) : subscriber.unsubscribe(topic)).catch((error: unknown) => this.#onError(error, 'unsubscribe'));
  }

  async history(channel: string, query: HistoryQuery, options: StreamOptions): Promise<HistoryPage> {
    if (options.size === 0) return { position: { epoch: '', offset: 0 }, publications: [] };
    const [meta, hist] = this.#keys(channel);
    const wantList = query.limit > 0 ? '1' : '0';
    const [epochRaw, topRaw, list] = (await this.#call('history', () =>
      (this.#command as unknown as HeraldCommands).heraldHistory(meta, hist, newEpoch(), String(Math.max(this.#metaTtlMs, options.ttlMs)), wantList),
    )) as [string, string, string[]];
    const epoch = String(epochRaw);
    const position = { epoch, offset: Number(topRaw) };
    if (query.limit === 0) return { position, publications: [] };
    const cutoff = this.#now() - options.ttlMs;
    let publications: StoredPublication[] = [];
    for (const text of list) {
      const publication = decodeEntry(text, epoch);
      if (publication !== undefined && publication.time > cutoff) publications.push(publication);
    }
    if (query.since !== undefined) {
      if (query.since.epoch !== epoch) return { position, publications: [] };
      const after = query.since.offset;
      publications = publications.filter((p) => p.offset > after).slice(0, query.limit);
      return { position, publications };
    }
    if (query.reverse === true) return { position, publications: publications.slice(-query.limit).reverse() };
    return { position, publications: publications.slice(0, query.limit) };
  }

  /** Channels this node subscribes to. */
  get channels(): ReadonlySet<string> {
    return new Set(this.#channels.keys());
  }

  /** Every local subscriber of every channel resynchronizes (after a reconnect or a lost probe). */
  resetAll(): void {
    for (const channel of [...this.#channels.keys()]) this.#handler?.onStreamReset(channel);
  }

  /** Local subscribers of these channels resynchronize (their shard's subscription came back). */
  reset(channels: Iterable<string>): void {
    for (const channel of channels) if (this.#channels.has(channel)) this.#handler?.onStreamReset(channel);
  }

  async close(): Promise<void> {
    this.#channels.clear();
  }
}

interface HeraldCommands {
  heraldPublish(...args: string[]): Promise<unknown>;
  heraldPublishOnce(...args: string[]): Promise<unknown>;
  heraldPublishNoHistoryOnce(...args: string[]): Promise<unknown>;
  heraldHistory(...args: string[]): Promise<unknown>;
}
