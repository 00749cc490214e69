/**
 * The redis engine's webhook outbox, shared by every Herald node on one
 * Redis (and every worker of `--workers N --engine redis`). Entries are
 * written by Lua scripts, so a stored entry is whole; they are as durable
 * as Redis makes them (RDB/AOF persistence: docs/operations.md), and
 * survive any Herald node dying.
 *
 * Sending: one queue per endpoint (a sorted set by append order) and a
 * lease per endpoint (`SET … PX`): `head` answers the oldest entries only
 * to the node holding the lease, which it takes; the holder sends one
 * batch, settles it and gives the lease back. A node that dies holding it
 * loses it after `leaseMs`, and the next node to look sends the same batch
 * again (same event ids: at least once).
 *
 * Keys: everything under `<prefix>:{webhooks}:` (one hash tag: on a Redis
 * Cluster every key of these scripts is in one slot). `e` pending entries
 * (seq → record), `q:<endpoint>` pending seqs, `d`/`dr` dead entries and
 * why, `dq:<endpoint>` dead seqs, `seq` the counter, `eps` endpoint names,
 * `lease:<endpoint>`; redis-transitions.ts adds its own beside them.
 */
import type { Cluster, Redis } from 'ioredis';
import type { DeadEntry, NewEntry, OutboxEntry, WebhookOutbox } from './outbox.ts';

/** Where the webhook keys live (one hash tag). */
export function webhookKeyBase(prefix: string): string {
  return `${prefix}:{webhooks}`;
}

/**
 * Lua shared by the outbox and the transitions scripts: KEYS[1] is the key
 * base. A record is `attempts \n nextAt \n createdAt \n endpoint \n eventId \n event`.
 */
export const OUTBOX_LUA = `
local K = KEYS[1]
local function append(ep, id, ev, now, max)
  if redis.call('HLEN', K .. ':e') >= max then return 0 end
  local seq = redis.call('INCR', K .. ':seq')
  redis.call('HSET', K .. ':e', seq, '0\\n' .. now .. '\\n' .. now .. '\\n' .. ep .. '\\n' .. id .. '\\n' .. ev)
  redis.call('ZADD', K .. ':q:' .. ep, seq, seq)
  redis.call('SADD', K .. ':eps', ep)
  return 1
end
local function parse(rec)
  local parts = {}
  local from = 1
  for i = 1, 5 do
    local at = string.find(rec, '\\n', from, true)
    parts[i] = string.sub(rec, from, at - 1)
    from = at + 1
  end
  parts[6] = string.sub(rec, from)
  return parts
end
`;

const appendLua = `${OUTBOX_LUA}
for i = 2, #ARGV, 3 do append(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[1], math.huge) end
return 0
`;

/** ARGV: endpoint, owner, leaseMs, limit. Nil when another node holds the lease; else seq, record, seq, record… */
const claimLua = `${OUTBOX_LUA}
local lease = K .. ':lease:' .. ARGV[1]
local owner = redis.call('GET', lease)
if owner and owner ~= ARGV[2] then return false end
local queue = K .. ':q:' .. ARGV[1]
local seqs = redis.call('ZRANGEBYSCORE', queue, '-inf', '+inf', 'LIMIT', 0, tonumber(ARGV[4]))
if #seqs == 0 then
  if owner then redis.call('DEL', lease) end
  return {}
end
redis.call('SET', lease, ARGV[2], 'PX', ARGV[3])
local records = redis.call('HMGET', K .. ':e', unpack(seqs))
local out = {}
for i = 1, #seqs do
  if records[i] then
    out[#out + 1] = seqs[i]
    out[#out + 1] = records[i]
  else
    redis.call('ZREM', queue, seqs[i])
  end
end
return out
`;

const releaseLua = `${OUTBOX_LUA}
local lease = K .. ':lease:' .. ARGV[1]
if redis.call('GET', lease) == ARGV[2] then redis.call('DEL', lease) end
return 0
`;

const deliveredLua = `${OUTBOX_LUA}
for i = 1, #ARGV do
  local rec = redis.call('HGET', K .. ':e', ARGV[i])
  if rec then
    redis.call('HDEL', K .. ':e', ARGV[i])
    redis.call('ZREM', K .. ':q:' .. parse(rec)[4], ARGV[i])
  end
end
return 0
`;

/** ARGV: nextAt, attempts, seqs… */
const retryLua = `${OUTBOX_LUA}
for i = 3, #ARGV do
  local rec = redis.call('HGET', K .. ':e', ARGV[i])
  if rec then
    local p = parse(rec)
    redis.call('HSET', K .. ':e', ARGV[i], ARGV[2] .. '\\n' .. ARGV[1] .. '\\n' .. p[3] .. '\\n' .. p[4] .. '\\n' .. p[5] .. '\\n' .. p[6])
  end
end
return 0
`;

/** ARGV: now, reason, seqs… */
const buryLua = `${OUTBOX_LUA}
for i = 3, #ARGV do
  local rec = redis.call('HGET', K .. ':e', ARGV[i])
  if rec then
    local ep = parse(rec)[4]
    redis.call('HDEL', K .. ':e', ARGV[i])
    redis.call('ZREM', K .. ':q:' .. ep, ARGV[i])
    redis.call('HSET', K .. ':d', ARGV[i], rec)
    redis.call('HSET', K .. ':dr', ARGV[i], ARGV[1] .. '\\n' .. ARGV[2])
    redis.call('ZADD', K .. ':dq:' .. ep, ARGV[i], ARGV[i])
  end
end
return 0
`;

/** ARGV: now, endpoint ('' any), seqs… (none: every dead entry). Answers how many went back. */
const replayLua = `${OUTBOX_LUA}
local seqs = {}
if #ARGV > 2 then
  for i = 3, #ARGV do seqs[#seqs + 1] = ARGV[i] end
else
  local eps = ARGV[2] ~= '' and {ARGV[2]} or redis.call('SMEMBERS', K .. ':eps')
  for _, ep in ipairs(eps) do
    for _, seq in ipairs(redis.call('ZRANGEBYSCORE', K .. ':dq:' .. ep, '-inf', '+inf')) do seqs[#seqs + 1] = seq end
  end
  table.sort(seqs, function(a, b) return tonumber(a) < tonumber(b) end)
end
local count = 0
for _, seq in ipairs(seqs) do
  local rec = redis.call('HGET', K .. ':d', seq)
  if rec then
    local p = parse(rec)
    if ARGV[2] == '' or p[4] == ARGV[2] then
      redis.call('HDEL', K .. ':d', seq)
      redis.call('HDEL', K .. ':dr', seq)
      redis.call('ZREM', K .. ':dq:' .. p[4], seq)
      append(p[4], p[5], p[6], ARGV[1], math.huge)
      count = count + 1
    end
  end
end
return count
`;

const countsLua = `
return {redis.call('HLEN', KEYS[1] .. ':e'), redis.call('HLEN', KEYS[1] .. ':d')}
`;

/** Endpoints with pending entries. */
const endpointsLua = `
local out = {}
for _, ep in ipairs(redis.call('SMEMBERS', KEYS[1] .. ':eps')) do
  if redis.call('EXISTS', KEYS[1] .. ':q:' .. ep) == 1 then out[#out + 1] = ep end
end
return out
`;

/** Pending entries per endpoint: endpoint, count, endpoint, count… */
const byEndpointLua = `
local out = {}
for _, ep in ipairs(redis.call('SMEMBERS', KEYS[1] .. ':eps')) do
  local n = redis.call('ZCARD', KEYS[1] .. ':q:' .. ep)
  if n > 0 then
    out[#out + 1] = ep
    out[#out + 1] = n
  end
end
return out
`;

/** ARGV: limit, endpoint ('' any). seq, record, deadAt \n reason, … oldest first. */
const listDeadLua = `
local seqs = {}
local eps = ARGV[2] ~= '' and {ARGV[2]} or redis.call('SMEMBERS', KEYS[1] .. ':eps')
for _, ep in ipairs(eps) do
  for _, seq in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1] .. ':dq:' .. ep, '-inf', '+inf', 'LIMIT', 0, tonumber(ARGV[1]))) do seqs[#seqs + 1] = seq end
end
table.sort(seqs, function(a, b) return tonumber(a) < tonumber(b) end)
local out = {}
for i = 1, math.min(#seqs, tonumber(ARGV[1])) do
  local rec = redis.call('HGET', KEYS[1] .. ':d', seqs[i])
  if rec then
    out[#out + 1] = seqs[i]
    out[#out + 1] = rec
    out[#out + 1] = redis.call('HGET', KEYS[1] .. ':dr', seqs[i]) or '0\\n'
  end
end
return out
`;

const SCRIPTS = {
  heraldWhAppend: appendLua,
  heraldWhClaim: claimLua,
  heraldWhRelease: releaseLua,
  heraldWhDelivered: deliveredLua,
  heraldWhRetry: retryLua,
  heraldWhBury: buryLua,
  heraldWhReplay: replayLua,
  heraldWhCounts: countsLua,
  heraldWhEndpoints: endpointsLua,
  heraldWhByEndpoint: byEndpointLua,
  heraldWhListDead: listDeadLua,
} as const;

type Scripts = { [name in keyof typeof SCRIPTS]: (key: string, ...args: (string | number)[]) => Promise<unknown> };

function parseRecord(seq: number, text: string): OutboxEntry {
  const parts: string[] = [];
  let from = 0;
  for (let i = 0; i < 5; i++) {
    const at = text.indexOf('\n', from);
    parts.push(text.slice(from, at));
    from = at + 1;
  }
  return { seq, attempts: Number(parts[0]), nextAt: Number(parts[1]), createdAt: Number(parts[2]), endpoint: parts[3]!, eventId: parts[4]!, event: text.slice(from) };
}

export interface RedisOutboxOptions {
  /** This node's id: the lease's owner. */
  readonly owner: string;
  /** How long a lease holds without being given back (longer than a POST may take). */
  readonly leaseMs: number;
}

export class RedisOutbox implements WebhookOutbox {
  readonly #redis: Scripts;
  readonly #key: string;
  readonly #owner: string;
  readonly #leaseMs: number;

  constructor(redis: Redis | Cluster, prefix: string, options: RedisOutboxOptions) {
    for (const [name, lua] of Object.entries(SCRIPTS)) redis.defineCommand(name, { numberOfKeys: 1, lua });
    this.#redis = redis as unknown as Scripts;
    this.#key = webhookKeyBase(prefix);
    this.#owner = options.owner;
    this.#leaseMs = options.leaseMs;
  }

  async append(entries: readonly NewEntry[], now: number): Promise<void> {
    if (entries.length === 0) return;
    await this.#redis.heraldWhAppend(this.#key, now, ...entries.flatMap((entry) => [entry.endpoint, entry.eventId, entry.event]));
  }

  async head(endpoint: string, limit: number): Promise<OutboxEntry[] | undefined> {
    const flat = (await this.#redis.heraldWhClaim(this.#key, endpoint, this.#owner, this.#leaseMs, limit)) as string[] | null;
    if (flat === null) return undefined;
    const entries: OutboxEntry[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) entries.push(parseRecord(Number(flat[i]), flat[i + 1]!));
    return entries;
  }

  async release(endpoint: string): Promise<void> {
    await this.#redis.heraldWhRelease(this.#key, endpoint, this.#owner);
  }

  async delivered(seqs: readonly number[]): Promise<void> {
    if (seqs.length > 0) await this.#redis.heraldWhDelivered(this.#key, ...seqs);
  }

  async retryLater(seqs: readonly number[], nextAt: number, attempts: number): Promise<void> {
    if (seqs.length > 0) await this.#redis.heraldWhRetry(this.#key, nextAt, attempts, ...seqs);
  }

  async bury(seqs: readonly number[], reason: string, now: number): Promise<void> {
    if (seqs.length > 0) await this.#redis.heraldWhBury(this.#key, now, reason.replaceAll('\n', ' '), ...seqs);
  }

  async listDead(limit: number, endpoint?: string): Promise<DeadEntry[]> {
    const flat = (await this.#redis.heraldWhListDead(this.#key, limit, endpoint ?? '')) as string[];
    const result: DeadEntry[] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      const entry = parseRecord(Number(flat[i]), flat[i + 1]!);
      const why = flat[i + 2]!;
      const at = why.indexOf('\n');
      result.push({ seq: entry.seq, endpoint: entry.endpoint, eventId: entry.eventId, event: entry.event, attempts: entry.attempts, createdAt: entry.createdAt, deadAt: Number(why.slice(0, at)), reason: why.slice(at + 1) });
    }
    return result;
  }

  async replay(now: number, filter: { readonly seqs?: readonly number[]; readonly endpoint?: string }): Promise<number> {
    // An empty seq list replays nothing (the script reads "no seqs" as every dead entry).
    if (filter.seqs !== undefined && filter.seqs.length === 0) return 0;
    return Number(await this.#redis.heraldWhReplay(this.#key, now, filter.endpoint ?? '', ...(filter.seqs ?? [])));
  }

  async counts(): Promise<{ pending: number; dead: number }> {
    const [pending, dead] = (await this.#redis.heraldWhCounts(this.#key)) as [number, number];
    return { pending, dead };
  }

  async endpoints(): Promise<string[]> {
    return (await this.#redis.heraldWhEndpoints(this.#key)) as string[];
  }

  async pendingByEndpoint(): Promise<Record<string, number>> {
    const flat = (await this.#redis.heraldWhByEndpoint(this.#key)) as (string | number)[];
    const counts: Record<string, number> = Object.create(null) as Record<string, number>;
    for (let i = 0; i + 1 < flat.length; i += 2) counts[String(flat[i])] = Number(flat[i + 1]);
    return counts;
  }
}
