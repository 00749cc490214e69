/**
 * Webhook transitions on the redis engine: every Herald node on one Redis
 * reports its own first/last subscriber of a channel and its presence
 * entries (core/node-events.ts); one Lua script per batch of reports
 * decides the cluster-wide transitions and writes their events into the
 * shared outbox (redis-outbox.ts) in the same step. So there is exactly one
 * channel_occupied and one channel_vacated per real transition, whichever
 * nodes hold the subscribers, and one member_added / member_removed per
 * user (not per connection); vacated follows the last member_removed.
 *
 * Keys beside the outbox's (`<prefix>:{webhooks}:`): `c:<channel>` nodes
 * holding the channel, `occ` channels announced occupied and not vacated,
 * `mf:<channel>` one field per member connection (member, node, client),
 * `mn:<channel>` connections per member, `n:<node>` what a node holds,
 * `nodes` the nodes' last heartbeats.
 *
 * Guarantees and failure rules:
 * - Every report is idempotent (a set member or a hash field per node and
 *   connection): a batch whose answer was lost can be applied again.
 * - Reports of this node are applied in order, one batch at a time. When a
 *   batch fails (Redis unreachable) the node reconciles later: it compares
 *   what Redis says it holds with what it holds and applies the difference
 *   (transitions that began and ended while Redis was unreachable are not
 *   announced).
 * - Each node writes a heartbeat every third of `nodeTtlMs`. A node not
 *   heard for `nodeTtlMs` (killed, frozen, cut off) is swept by the first
 *   live node to look: its members leave and its channels are released,
 *   member_removed and vacated once each, as if its connections had closed.
 *   A node that finds itself swept (it was only slow) announces again what
 *   it holds.
 * - A node that stops gracefully releases what it holds at once.
 */
import type { Cluster, Redis } from 'ioredis';
import type { ClientInfo } from '@herald/protocol';
import type { Logger } from '../core/logger.ts';
import { OUTBOX_LUA, webhookKeyBase } from './redis-outbox.ts';
import type { WebhookEventName } from './events.ts';
import type { MemberRef } from './transitions.ts';

/**
 * ARGV: node, now, maxPending, sweepTtl ('' for the node's own reports;
 * a TTL: apply only while the node is unheard that long), then ops of 10
 * fields: kind (s subscribed, u unsubscribed, j joined, l left), channel,
 * member key, client, event id 1, event 1, endpoints 1 (comma separated;
 * `name|max`: not written when the endpoint already has max pending),
 * event id 2, event 2, endpoints 2. Answers the endpoints written to ("!"
 * before one whose event was dropped, the outbox being full), or nil when
 * the node to sweep is alive.
 */
const applyLua = `${OUTBOX_LUA}
local node, now, max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local nodes = K .. ':nodes'
if ARGV[4] ~= '' then
  local seen = redis.call('ZSCORE', nodes, node)
  if seen and tonumber(seen) > tonumber(now) - tonumber(ARGV[4]) then return false end
end
local out = {}
local function emit(id, ev, eps)
  for spec in string.gmatch(eps, '[^,]+') do
    local ep, cap = spec, nil
    local bar = string.find(spec, '|', 1, true)
    if bar then
      ep = string.sub(spec, 1, bar - 1)
      cap = tonumber(string.sub(spec, bar + 1))
    end
    if (cap == nil or redis.call('ZCARD', K .. ':q:' .. ep) < cap) and append(ep, id, ev, now, max) == 1 then out[#out + 1] = ep else out[#out + 1] = '!' .. ep end
  end
end
local held = K .. ':n:' .. node
local occ = K .. ':occ'
for i = 5, #ARGV, 10 do
  local kind, ch, member, client = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local holders = K .. ':c:' .. ch
  local counts = K .. ':mn:' .. ch
  local entry = 'm\\0' .. ch .. '\\0' .. member .. '\\0' .. client
  local field = member .. '\\0' .. node .. '\\0' .. client
  if kind == 's' then
    if redis.call('SADD', holders, node) == 1 then
      redis.call('SADD', held, 'c\\0' .. ch)
      if redis.call('SCARD', holders) == 1 and redis.call('SADD', occ, ch) == 1 then emit(ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]) end
    end
  elseif kind == 'u' then
    if redis.call('SREM', holders, node) == 1 then
      redis.call('SREM', held, 'c\\0' .. ch)
      if redis.call('SCARD', holders) == 0 and redis.call('HLEN', counts) == 0 and redis.call('SREM', occ, ch) == 1 then emit(ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]) end
    end
  elseif kind == 'j' then
    if redis.call('SISMEMBER', holders, node) == 1 and redis.call('HSETNX', K .. ':mf:' .. ch, field, '1') == 1 then
      redis.call('SADD', held, entry)
      if redis.call('HINCRBY', counts, member, 1) == 1 then emit(ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]) end
    end
  elseif kind == 'l' then
    if redis.call('HDEL', K .. ':mf:' .. ch, field) == 1 then
      redis.call('SREM', held, entry)
      if redis.call('HINCRBY', counts, member, -1) <= 0 then
        redis.call('HDEL', counts, member)
        emit(ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
        if redis.call('HLEN', counts) == 0 and redis.call('SCARD', holders) == 0 and redis.call('SREM', occ, ch) == 1 then emit(ARGV[i + 7], ARGV[i + 8], ARGV[i + 9]) end
      end
    end
  end
end
if ARGV[4] ~= '' and redis.call('SCARD', held) == 0 then redis.call('ZREM', nodes, node) end
return out
`;

/** ARGV: node, now, ttl. Answers whether the node was known (0: new, or swept), and up to 4 nodes unheard for ttl. */
const heartbeatLua = `
local nodes = KEYS[1] .. ':nodes'
local known = redis.call('ZADD', nodes, ARGV[2], ARGV[1]) == 0 and 1 or 0
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]), 'LIMIT', 0, 4)
return {known, dead}
`;

/** ARGV: node. What the node holds: 'c\\0channel' and 'm\\0channel\\0member\\0client'. */
const holdingsLua = `
return redis.call('SMEMBERS', KEYS[1] .. ':n:' .. ARGV[1])
`;

type Scripts = {
  heraldWhApply(key: string, ...args: (string | number)[]): Promise<string[] | null>;
  heraldWhHeartbeat(key: string, node: string, now: number, ttl: number): Promise<[number, string[]]>;
  heraldWhHoldings(key: string, node: string): Promise<string[]>;
};

/** Ops per script call. */
const BATCH = 100;

type Op =
  | { readonly kind: 's' | 'u'; readonly channel: string; readonly time: number }
  | { readonly kind: 'j' | 'l'; readonly channel: string; readonly member: string; readonly client: string; readonly ref: MemberRef; readonly time: number };

/** A built event: its id, JSON text, and the endpoints that take it (none: not written; `name|max`: an endpoint with a pending cap of its own). */
export interface BuiltEvent {
  readonly id: string;
  readonly json: string;
  readonly endpoints: readonly string[];
}

export interface RedisTransitionsOptions {
  readonly redis: Redis | Cluster;
  readonly prefix: string;
  readonly node: string;
  /** A node unheard this long is swept (engine.presenceTtlMs). */
  readonly nodeTtlMs: number;
  readonly maxPending: number;
  readonly logger: Logger;
  readonly now?: () => number;
  /** The event of a transition, built as every engine builds it (webhooks.ts). */
  readonly build: (name: WebhookEventName, time: number, channel: string, ref?: MemberRef) => BuiltEvent;
  /** Events were written for these endpoints (the dispatcher schedules them), or dropped ('!' before the name). */
  readonly onWritten: (endpoints: readonly string[]) => void;
}

function memberKey(info: ClientInfo): string {
  return info.user !== '' ? 'u' + info.user : 'c' + info.client;
}

function refOf(info: ClientInfo): MemberRef {
  return info.user !== '' ? { user: info.user, info: info.conn_info } : { user: '', client: info.client };
}

/** A member key back to its reference (sweeps and reconciliation, which have no ClientInfo). */
function refOfKey(key: string): MemberRef {
  return key.startsWith('u') ? { user: key.slice(1) } : { user: '', client: key.slice(1) };
}

/** 'm\0channel\0member\0client' (channel and client hold no NUL; the member key may). */
function parseMemberEntry(entry: string): { channel: string; member: string; client: string } {
  const first = entry.indexOf('\u0000', 2);
  const last = entry.lastIndexOf('\u0000');
  return { channel: entry.slice(2, first), member: entry.slice(first + 1, last), client: entry.slice(last + 1) };
}

export class RedisTransitions {
  readonly #redis: Scripts;
  readonly #key: string;
  readonly #options: RedisTransitionsOptions;
  readonly #now: () => number;
  /** What this node holds, as it reported it: channels, and per channel its member connections. */
  readonly #channels = new Set<string>();
  readonly #members = new Map<string, Map<string, { member: string; client: string; ref: MemberRef }>>();
  #queue: Op[] = [];
  #pumping: Promise<void> | undefined;
  /** A batch failed, or this node was swept: reconcile before the next batch. */
  #dirty = true;
  readonly #timer: NodeJS.Timeout;
  #closed = false;
  /** A heartbeat (and its sweeps) is running: a late timer tick does not start a second one beside it. */
  #beating = false;

  constructor(options: RedisTransitionsOptions) {
    this.#options = options;
    options.redis.defineCommand('heraldWhApply', { numberOfKeys: 1, lua: applyLua });
    options.redis.defineCommand('heraldWhHeartbeat', { numberOfKeys: 1, lua: heartbeatLua });
    options.redis.defineCommand('heraldWhHoldings', { numberOfKeys: 1, lua: holdingsLua });
    this.#redis = options.redis as unknown as Scripts;
    this.#key = webhookKeyBase(options.prefix);
    this.#now = options.now ?? Date.now;
    this.#timer = setInterval(() => void this.#beat(), Math.max(200, Math.floor(options.nodeTtlMs / 3)));
    this.#timer.unref();
    void this.#beat();
  }

  subscribed(channel: string): void {
    if (channel.startsWith('|') || this.#closed) return; // the delivery probe's channel
    this.#channels.add(channel);
    this.#push({ kind: 's', channel, time: this.#now() });
  }

  unsubscribed(channel: string): void {
    if (channel.startsWith('|') || this.#closed) return;
    this.#channels.delete(channel);
    this.#push({ kind: 'u', channel, time: this.#now() });
  }

  /** A join counts only while this node holds the channel (as TransitionTracker.joined). */
  joined(channel: string, info: ClientInfo): void {
    if (this.#closed || !this.#channels.has(channel)) return;
    const member = memberKey(info);
    const ref = refOf(info);
    let connections = this.#members.get(channel);
    if (connections === undefined) {
      connections = new Map();
      this.#members.set(channel, connections);
    }
    connections.set(info.client, { member, client: info.client, ref });
    this.#push({ kind: 'j', channel, member, client: info.client, ref, time: this.#now() });
  }

  left(channel: string, info: ClientInfo): void {
    if (this.#closed) return;
    const connections = this.#members.get(channel);
    if (connections?.delete(info.client) !== true) return;
    if (connections.size === 0) this.#members.delete(channel);
    this.#push({ kind: 'l', channel, member: memberKey(info), client: info.client, ref: refOf(info), time: this.#now() });
  }

  #push(op: Op): void {
    this.#queue.push(op);
    this.#kick();
  }

  /**
   * Starts the pump unless it runs. A report pushed after the pump found the
   * queue empty but before it let go (in the same microtask checkpoint: a
   * presence reply parsed from the same Redis read as the last batch's) is
   * picked up by a new pump at once, not left waiting for the next report.
   */
  #kick(): void {
    this.#pumping ??= this.#pump().finally(() => {
      this.#pumping = undefined;
      if (this.#queue.length > 0 && !this.#closed) this.#kick();
    });
  }

  /** Applies the queue in order, one batch at a time; reconciles first when a batch failed. */
  async #pump(): Promise<void> {
    while (this.#queue.length > 0 || this.#dirty) {
      if (this.#dirty) {
        if (!(await this.#reconcile())) return; // Redis unreachable: the heartbeat tries again
        continue;
      }
      const batch = this.#queue.splice(0, BATCH);
      if (!(await this.#apply(this.#options.node, batch, ''))) {
        this.#dirty = true;
        return;
      }
    }
  }

  /** Runs the script; false when Redis did not answer (or the swept node is alive). */
  async #apply(node: string, ops: readonly Op[], sweepTtl: number | ''): Promise<boolean> {
    if (ops.length === 0) return true;
    const args: (string | number)[] = [node, this.#now(), this.#options.maxPending, sweepTtl];
    const none = ['', '', ''];
    for (const op of ops) {
      const event = (name: WebhookEventName, ref?: MemberRef): string[] => {
        const built = this.#options.build(name, op.time, op.channel, ref);
        return built.endpoints.length === 0 ? none : [built.id, built.json, built.endpoints.join(',')];
      };
      if (!('member' in op)) args.push(op.kind, op.channel, '', '', ...event(op.kind === 's' ? 'channel_occupied' : 'channel_vacated'), ...none);
      else if (op.kind === 'j') args.push('j', op.channel, op.member, op.client, ...event('member_added', op.ref), ...none);
      else args.push('l', op.channel, op.member, op.client, ...event('member_removed', op.ref), ...event('channel_vacated'));
    }
    let written: string[] | null;
    try {
      written = await this.#redis.heraldWhApply(this.#key, ...args);
    } catch (error) {
      this.#options.logger.warn({ err: error, reports: ops.length }, 'webhook transitions not written to Redis (reconciled when it answers again)');
      return false;
    }
    if (written === null) return false;
    if (written.length > 0) this.#options.onWritten(written);
    return true;
  }

  /** Applies the difference between what Redis says this node holds and what it holds. */
  async #reconcile(): Promise<boolean> {
    this.#queue = [];
    let holdings: string[];
    try {
      holdings = await this.#redis.heraldWhHoldings(this.#key, this.#options.node);
    } catch {
      return false;
    }
    const time = this.#now();
    const remote = new Set(holdings);
    const ops: Op[] = [];
    for (const entry of holdings) {
      if (!entry.startsWith('m')) continue;
      const { channel, member, client } = parseMemberEntry(entry);
      if (this.#members.get(channel)?.has(client) !== true) ops.push({ kind: 'l', channel, member, client, ref: refOfKey(member), time });
    }
    for (const entry of holdings) if (entry.startsWith('c') && !this.#channels.has(entry.slice(2))) ops.push({ kind: 'u', channel: entry.slice(2), time });
    for (const channel of this.#channels) if (!remote.has('c\u0000' + channel)) ops.push({ kind: 's', channel, time });
    for (const [channel, connections] of this.#members) {
      for (const { member, client, ref } of connections.values()) {
        if (!remote.has(`m\u0000${channel}\u0000${member}\u0000${client}`)) ops.push({ kind: 'j', channel, member, client, ref, time });
      }
    }
    for (let i = 0; i < ops.length; i += BATCH) if (!(await this.#apply(this.#options.node, ops.slice(i, i + BATCH), ''))) return false;
    this.#dirty = false;
    return true;
  }

  /** Ends what a dead (or stopped) node holds: its members leave, then its channels; `ttl` '' for this node itself. False when Redis did not take it all. */
  async #release(node: string, ttl: number | ''): Promise<boolean> {
    const holdings = await this.#redis.heraldWhHoldings(this.#key, node);
    const time = this.#now();
    const ops: Op[] = [];
    for (const entry of holdings) {
      if (!entry.startsWith('m')) continue;
      const { channel, member, client } = parseMemberEntry(entry);
      ops.push({ kind: 'l', channel, member, client, ref: refOfKey(member), time });
    }
    for (const entry of holdings) if (entry.startsWith('c')) ops.push({ kind: 'u', channel: entry.slice(2), time });
    // The last batch (possibly empty) also forgets the node's heartbeat once it holds nothing.
    for (let i = 0; i < ops.length || i === 0; i += BATCH) {
      const batch = ops.slice(i, i + BATCH);
      if (batch.length === 0 && ttl !== '') await this.#redis.heraldWhApply(this.#key, node, time, this.#options.maxPending, ttl);
      else if (!(await this.#apply(node, batch, ttl))) return false;
    }
    if (holdings.length > 0) this.#options.logger.info({ node, entries: holdings.length, swept: ttl !== '' }, 'webhooks: a node\'s channels and members released');
    return true;
  }

  /** The heartbeat; sweeps nodes unheard for the TTL; reconciles when this node was swept or a batch failed. */
  async #beat(): Promise<void> {
    if (this.#closed || this.#beating) return;
    this.#beating = true;
    try {
      await this.#beatOnce();
    } finally {
      this.#beating = false;
    }
  }

  async #beatOnce(): Promise<void> {
    let known: number;
    let dead: string[];
    try {
      [known, dead] = await this.#redis.heraldWhHeartbeat(this.#key, this.#options.node, this.#now(), this.#options.nodeTtlMs);
    } catch {
      return;
    }
    if (known === 0) this.#dirty = true;
    if (this.#dirty) {
      // Reconciled before sweeping: a node that was itself swept (it stalled past the TTL) first
      // announces again what it holds, so a member it shares with the dead node is not removed and re-added.
      this.#kick();
      await this.#pumping?.catch(() => undefined);
    }
    for (const node of dead) {
      if (node === this.#options.node) continue;
      try {
        await this.#release(node, this.#options.nodeTtlMs);
      } catch (error) {
        this.#options.logger.warn({ err: error, node }, 'webhooks: a dead node not swept (tried again at the next heartbeat)');
      }
    }
  }

  /** Stops reporting; applies what is queued, then releases what this node still holds (after its connections closed). */
  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#pumping;
    if (this.#dirty || this.#queue.length > 0) await this.#pump();
    try {
      // Released in full: the heartbeat goes too; otherwise it stays, and the other nodes sweep what is left.
      if (await this.#release(this.#options.node, '')) await (this.#options.redis as Redis).zrem(`${this.#key}:nodes`, this.#options.node);
    } catch (error) {
      this.#options.logger.warn({ err: error }, 'webhooks: this node\'s channels and members not released (the other nodes sweep them after engine.presenceTtlMs)');
    }
  }
}
