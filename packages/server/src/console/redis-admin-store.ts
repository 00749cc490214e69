/**
 * The console store in Redis (the redis engine): shared by every node, as
 * durable as the Redis's persistence (docs/console.md says so). Every key
 * carries the hash tag `{console}` after the engine's prefix, so the scripts
 * below, which touch several keys, run on one Redis Cluster slot too.
 *
 * Keys (P = `engine.redisPrefix`):
 * - `P:{console}:admins` set of names; `P:{console}:admin:<name>` hash.
 * - `P:{console}:session:<sha256>` hash (Redis expires it at the absolute
 *   lifetime; an idle one is refused at once and deleted then or by the
 *   sweep); `P:{console}:sessions-of:<name>` set of that admin's session hashes.
 * - `P:{console}:limit:<key>` hash {f, l, n, u}, expiring after its window.
 * - `P:{console}:audit` stream, trimmed by time at each sweep.
 * - `P:{console}:totp:<name>` hash {secret, created_at, confirmed_at,
 *   last_step}; `P:{console}:recovery:<name>` hash code hash → used at (0: unused).
 * - `P:{console}:passkey:<credential id>` hash; `P:{console}:passkeys-of:<name>`
 *   set of that admin's credential ids; `P:{console}:passkey-challenge:<key>`
 *   JSON string, expiring a minute after the challenge does.
 * - `P:{console}:oidc-link:<provider>:<sub>` hash {admin, created_at};
 *   `P:{console}:oidc-links-of:<name>` set of `<provider>:<sub>`;
 *   `P:{console}:oidc-flow:<sha256 of state>` hash, expiring with the flow.
 * Check-and-write operations are Lua scripts (atomic on the server).
 */
import type { Cluster, Redis } from 'ioredis';
import {
  auditLimit,
  matchesAudit,
  sessionLive,
  stageOf,
  methodsOf,
  MAX_AUDIT_QUERY,
  type AdminChange,
  type AdminRecord,
  type AdminRole,
  type AdminStore,
  type AttemptVerdict,
  type AuditEntry,
  type AuditInput,
  type AuditQuery,
  type FailureCounter,
  type LimiterCheck,
  type PasskeyChallenge,
  type PasskeyRecord,
  type OidcAdminInput,
  type OidcFlow,
  type OidcLink,
  type ResolvedSession,
  type SessionPolicy,
  type SessionRecord,
  type SweepPolicy,
  type TotpRecord,
} from './admin-store.ts';

const CREATE_ADMIN = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return false end
local role = ARGV[2]
if redis.call('SCARD', KEYS[1]) == 0 then role = 'owner' end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'role', role, 'password_hash', ARGV[3], 'disabled', '0', 'created_at', ARGV[4], 'updated_at', ARGV[4])
return role`;

const UPDATE_ADMIN = `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1`;

/** KEYS: session, sessions-of set; ARGV: id hash. Deletes a session and its index entry. */
const DELETE_SESSION = `
local admin = redis.call('HGET', KEYS[1], 'admin')
redis.call('DEL', KEYS[1])
if admin then redis.call('SREM', ARGV[2] .. admin, ARGV[1]) end
return 1`;

/** KEYS: sessions-of set; ARGV: session key prefix. */
const DELETE_SESSIONS_OF = `
local ids = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, id in ipairs(ids) do n = n + redis.call('DEL', ARGV[1] .. id) end
redis.call('DEL', KEYS[1])
return n`;

/**
 * KEYS: session; ARGV: now, idleMs, absoluteMs, touchAfterMs, admin key prefix, sessions-of prefix, id hash.
 * Answers {session fields..., '|', admin fields...} when valid, false otherwise (an expired session is deleted).
 */
const RESOLVE_SESSION = `
local s = redis.call('HMGET', KEYS[1], 'admin', 'created_at', 'last_seen_at', 'csrf_secret', 'address', 'stage', 'methods')
if not s[1] or not s[2] or not s[3] or not s[4] then return false end
local now = tonumber(ARGV[1])
local a = redis.call('HMGET', ARGV[5] .. s[1], 'role', 'password_hash', 'disabled', 'created_at', 'updated_at')
local live = now - tonumber(s[3]) < tonumber(ARGV[2]) and now - tonumber(s[2]) < tonumber(ARGV[3])
if not live or not a[1] or a[3] == '1' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', ARGV[6] .. s[1], ARGV[7])
  return false
end
if now - tonumber(s[3]) >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'last_seen_at', ARGV[1])
  s[3] = ARGV[1]
end
return {s[1], s[2], s[3], s[4], s[5] or '', a[1], a[2], a[3], a[4], a[5], s[6] or 'full', s[7] or '[]'}`;

/**
 * KEYS: counter keys; ARGV: now, then per key delayAfter, baseDelayMs, maxDelayMs, lockAfter, lockMs, windowMs.
 * Answers {0, wait} when some key must wait (nothing counted), else {1, 0, indexes of keys locked now...}.
 */
const ATTEMPT = `
local now = tonumber(ARGV[1])
local wait = 0
local cur = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('HMGET', k, 'f', 'l', 'n', 'u')
  cur[i] = v
  if v[1] then
    local w = math.max(tonumber(v[3]), tonumber(v[4])) - now
    if w > wait then wait = w end
  end
end
if wait > 0 then return {0, wait} end
local res = {1, 0}
for i, k in ipairs(KEYS) do
  local o = 1 + (i - 1) * 6
  local da, bd, md, la, lm, wm = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3]), tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5]), tonumber(ARGV[o + 6])
  local v = cur[i]
  local f = 0
  if v[1] then
    local l, u = tonumber(v[2]), tonumber(v[4])
    local forgotten = (u > 0 and u <= now) or (u <= now and now - l > wm)
    if not forgotten then f = tonumber(v[1]) end
  end
  f = f + 1
  local delay = 0
  if f >= da then delay = math.min(md, bd * 2 ^ math.min(30, f - da)) end
  local u = 0
  if f >= la then
    u = now + lm
    table.insert(res, i)
  end
  redis.call('HSET', k, 'f', f, 'l', now, 'n', now + delay, 'u', u)
  redis.call('PEXPIRE', k, wm + lm + md)
end
return res`;

const FORGIVE = `
local v = redis.call('HMGET', KEYS[1], 'f', 'u')
if not v[1] then return 0 end
local f, u = tonumber(v[1]), tonumber(v[2])
if f <= 1 then
  if u == 0 then redis.call('DEL', KEYS[1]) end
  return 1
end
redis.call('HSET', KEYS[1], 'f', f - 1)
if u == 0 then redis.call('HSET', KEYS[1], 'n', 0) end
return 1`;

// TOTP and recovery codes
/** KEYS: totp; ARGV: secret, now. */
const BEGIN_TOTP = `
local c = redis.call('HGET', KEYS[1], 'confirmed_at')
if c and c ~= '0' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'secret', ARGV[1], 'created_at', ARGV[2], 'confirmed_at', '0', 'last_step', '0')
return 1`;

/** KEYS: totp, recovery; ARGV: secret, step, now, code hashes... */
const CONFIRM_TOTP = `
local v = redis.call('HMGET', KEYS[1], 'secret', 'confirmed_at')
if v[1] ~= ARGV[1] or v[2] ~= '0' then return 0 end
redis.call('HSET', KEYS[1], 'confirmed_at', ARGV[3], 'last_step', ARGV[2])
redis.call('DEL', KEYS[2])
for i = 4, #ARGV do redis.call('HSET', KEYS[2], ARGV[i], '0') end
return 1`;

/** KEYS: totp; ARGV: step. */
const ACCEPT_TOTP_STEP = `
local v = redis.call('HMGET', KEYS[1], 'confirmed_at', 'last_step')
if not v[1] or v[1] == '0' or tonumber(v[2]) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'last_step', ARGV[1])
return 1`;

/** KEYS: recovery; ARGV: code hash, now. */
const USE_RECOVERY_CODE = `
if redis.call('HGET', KEYS[1], ARGV[1]) ~= '0' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`;
/** KEYS: admins set, admin, link, links-of set; ARGV: name, role, now, provider, subject. Like CREATE_ADMIN without the first-owner rule, with the link. */
const CREATE_OIDC_ADMIN = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return false end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'role', ARGV[2], 'password_hash', '', 'disabled', '0', 'created_at', ARGV[3], 'updated_at', ARGV[3])
redis.call('HSET', KEYS[3], 'admin', ARGV[1], 'created_at', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4] .. ':' .. ARGV[5])
return 1`;

/** KEYS: flow. Answers its fields and deletes it (single use). */
const TAKE_OIDC_FLOW = `
local f = redis.call('HMGET', KEYS[1], 'provider', 'nonce', 'code_verifier', 'binding_hash', 'expires_at')
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if not f[1] then return false end
return f`;

/**
 * KEYS: the flow's hash, the index of pending flows (a sorted set, state hash
 * scored by expiry); ARGV: now, max, state hash, expires at, provider, nonce,
 * code verifier, binding hash. 1 when kept, 0 when max are pending.
 */
const PUT_OIDC_FLOW = `
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
redis.call('PEXPIREAT', KEYS[2], ARGV[4])
redis.call('HSET', KEYS[1], 'provider', ARGV[5], 'nonce', ARGV[6], 'code_verifier', ARGV[7], 'binding_hash', ARGV[8], 'expires_at', ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[4])
return 1`;

type Scripted = {
  heraldConsoleCreateOidcAdmin(admins: string, admin: string, link: string, linksOf: string, name: string, role: string, now: string, provider: string, subject: string): Promise<number | null>;
  heraldConsoleTakeOidcFlow(flow: string, index: string, stateHash: string): Promise<string[] | null>;
  heraldConsolePutOidcFlow(flow: string, index: string, ...args: string[]): Promise<number>;
  heraldConsoleCreateAdmin(admins: string, admin: string, name: string, role: string, hash: string, now: string): Promise<string | null>;
  heraldConsoleUpdateAdmin(admin: string, ...args: string[]): Promise<number>;
  heraldConsoleDeleteSession(session: string, id: string, ofPrefix: string): Promise<number>;
  heraldConsoleDeleteSessionsOf(of: string, sessionPrefix: string): Promise<number>;
  heraldConsoleResolveSession(session: string, ...args: string[]): Promise<string[] | null>;
  heraldConsoleBeginTotp(totp: string, secret: string, now: string): Promise<number>;
  heraldConsoleConfirmTotp(totp: string, recovery: string, ...args: string[]): Promise<number>;
  heraldConsoleAcceptTotpStep(totp: string, step: string): Promise<number>;
  heraldConsoleUseRecoveryCode(recovery: string, hash: string, now: string): Promise<number>;
  heraldConsoleAttempt(...args: (string | number)[]): Promise<number[]>;
  heraldConsoleForgive(key: string): Promise<number>;
};

function defineScripts(redis: Redis | Cluster): void {
  const r = redis as unknown as { heraldConsoleAttempt?: unknown };
  if (r.heraldConsoleAttempt !== undefined) return;
  redis.defineCommand('heraldConsoleCreateAdmin', { numberOfKeys: 2, lua: CREATE_ADMIN });
  redis.defineCommand('heraldConsoleUpdateAdmin', { numberOfKeys: 1, lua: UPDATE_ADMIN });
  redis.defineCommand('heraldConsoleDeleteSession', { numberOfKeys: 1, lua: DELETE_SESSION });
  redis.defineCommand('heraldConsoleDeleteSessionsOf', { numberOfKeys: 1, lua: DELETE_SESSIONS_OF });
  redis.defineCommand('heraldConsoleResolveSession', { numberOfKeys: 1, lua: RESOLVE_SESSION });
  redis.defineCommand('heraldConsoleBeginTotp', { numberOfKeys: 1, lua: BEGIN_TOTP });
  redis.defineCommand('heraldConsoleConfirmTotp', { numberOfKeys: 2, lua: CONFIRM_TOTP });
  redis.defineCommand('heraldConsoleAcceptTotpStep', { numberOfKeys: 1, lua: ACCEPT_TOTP_STEP });
  redis.defineCommand('heraldConsoleUseRecoveryCode', { numberOfKeys: 1, lua: USE_RECOVERY_CODE });
  redis.defineCommand('heraldConsoleAttempt', { lua: ATTEMPT });
  redis.defineCommand('heraldConsoleForgive', { numberOfKeys: 1, lua: FORGIVE });
  redis.defineCommand('heraldConsoleCreateOidcAdmin', { numberOfKeys: 4, lua: CREATE_OIDC_ADMIN });
  redis.defineCommand('heraldConsoleTakeOidcFlow', { numberOfKeys: 2, lua: TAKE_OIDC_FLOW });
  redis.defineCommand('heraldConsolePutOidcFlow', { numberOfKeys: 2, lua: PUT_OIDC_FLOW });
}

function adminOf(name: string, fields: (string | null)[]): AdminRecord | undefined {
  const [role, hash, disabled, created, updated] = fields;
  if (role === null || role === undefined || hash === null || hash === undefined) return undefined;
  return { name, role: role as AdminRole, passwordHash: hash, disabled: disabled === '1', createdAt: Number(created), updatedAt: Number(updated) };
}

export class RedisAdminStore implements AdminStore {
  readonly #redis: Redis | Cluster;
  readonly #s: Scripted;
  readonly #p: string;

  constructor(redis: Redis | Cluster, prefix: string) {
    this.#redis = redis;
    defineScripts(redis);
    this.#s = redis as unknown as Scripted;
    this.#p = `${prefix}:{console}:`;
  }

  #admin(name: string): string {
    return `${this.#p}admin:${name}`;
  }

  #session(idHash: string): string {
    return `${this.#p}session:${idHash}`;
  }

  #limit(key: string): string {
    return `${this.#p}limit:${key}`;
  }

  async getAdmin(name: string): Promise<AdminRecord | undefined> {
    return adminOf(name, await this.#redis.hmget(this.#admin(name), 'role', 'password_hash', 'disabled', 'created_at', 'updated_at'));
  }

  async listAdmins(): Promise<AdminRecord[]> {
    const names = (await this.#redis.smembers(`${this.#p}admins`)).sort();
    const admins = await Promise.all(names.map((name) => this.getAdmin(name)));
    return admins.filter((a): a is AdminRecord => a !== undefined);
  }

  async createAdmin(input: { name: string; role: AdminRole; passwordHash: string; now: number }): Promise<AdminRecord | undefined> {
    const role = await this.#s.heraldConsoleCreateAdmin(`${this.#p}admins`, this.#admin(input.name), input.name, input.role, input.passwordHash, String(input.now));
    if (role === null) return undefined;
    return { name: input.name, role: role as AdminRole, passwordHash: input.passwordHash, disabled: false, createdAt: input.now, updatedAt: input.now };
  }

  async updateAdmin(name: string, change: AdminChange, now: number): Promise<AdminRecord | undefined> {
    const args: string[] = ['updated_at', String(now)];
    if (change.role !== undefined) args.push('role', change.role);
    if (change.passwordHash !== undefined) args.push('password_hash', change.passwordHash);
    if (change.disabled !== undefined) args.push('disabled', change.disabled ? '1' : '0');
    if ((await this.#s.heraldConsoleUpdateAdmin(this.#admin(name), ...args)) === 0) return undefined;
    return this.getAdmin(name);
  }

  async createSession(session: SessionRecord, absoluteMs?: number): Promise<void> {
    const key = this.#session(session.idHash);
    const multi = this.#redis
      .multi()
      .hset(
        key,
        'admin',
        session.admin,
        'created_at',
        String(session.createdAt),
        'last_seen_at',
        String(session.lastSeenAt),
        'csrf_secret',
        session.csrfSecret,
        'address',
        session.address,
        'stage',
        session.stage,
        'methods',
        JSON.stringify(session.methods),
      )
      .sadd(`${this.#p}sessions-of:${session.admin}`, session.idHash);
    if (absoluteMs !== undefined) multi.pexpireat(key, session.createdAt + absoluteMs);
    await multi.exec();
  }

  async resolveSession(idHash: string, now: number, policy: SessionPolicy): Promise<ResolvedSession> {
    const found = await this.#s.heraldConsoleResolveSession(
      this.#session(idHash),
      String(now),
      String(policy.idleMs),
      String(policy.absoluteMs),
      String(policy.touchAfterMs),
      `${this.#p}admin:`,
      `${this.#p}sessions-of:`,
      idHash,
    );
    if (found === null) return { state: 'invalid' };
    const [admin, created, lastSeen, csrf, address, ...rest] = found as [string, string, string, string, string, ...string[]];
    const record = adminOf(admin, rest.slice(0, 5));
    if (record === undefined) return { state: 'invalid' };
    const session: SessionRecord = { idHash, admin, createdAt: Number(created), lastSeenAt: Number(lastSeen), csrfSecret: csrf, address, stage: stageOf(rest[5]), methods: methodsOf(rest[6]) };
    // A partial session's shorter lifetime (PARTIAL_SESSION_MS) is checked here; Redis also expires it by itself then.
    if (!sessionLive(session, now, policy)) {
      await this.deleteSession(idHash);
      return { state: 'invalid' };
    }
    return { state: 'valid', session, admin: record };
  }

  async deleteSession(idHash: string): Promise<void> {
    await this.#s.heraldConsoleDeleteSession(this.#session(idHash), idHash, `${this.#p}sessions-of:`);
  }

  async deleteSessionsOf(admin: string): Promise<number> {
    return Number(await this.#s.heraldConsoleDeleteSessionsOf(`${this.#p}sessions-of:${admin}`, `${this.#p}session:`));
  }

  async countSessions(admin: string, now: number, policy: SessionPolicy): Promise<number> {
    const ids = await this.#redis.smembers(`${this.#p}sessions-of:${admin}`);
    let n = 0;
    for (const idHash of ids) {
      const [created, lastSeen, stage] = await this.#redis.hmget(this.#session(idHash), 'created_at', 'last_seen_at', 'stage');
      if (created === null || lastSeen === null) continue;
      const record = { createdAt: Number(created), lastSeenAt: Number(lastSeen), stage: stageOf(stage ?? 'full') };
      if (sessionLive(record, now, policy)) n++;
    }
    return n;
  }

  async attempt(checks: readonly LimiterCheck[], now: number): Promise<AttemptVerdict> {
    const args: (string | number)[] = [checks.length, ...checks.map((c) => this.#limit(c.key)), now];
    for (const { policy: p } of checks) args.push(p.delayAfter, p.baseDelayMs, p.maxDelayMs, p.lockAfter, p.lockMs, p.windowMs);
    const [allowed, wait, ...locked] = (await this.#s.heraldConsoleAttempt(...args)).map(Number) as [number, number, ...number[]];
    return { allowed: allowed === 1, retryAfterMs: wait, lockedNow: locked.map((i) => checks[i - 1]!.key) };
  }

  async clearAttempts(key: string): Promise<void> {
    await this.#redis.del(this.#limit(key));
  }

  async forgiveAttempt(key: string): Promise<void> {
    await this.#s.heraldConsoleForgive(this.#limit(key));
  }

  async getCounter(key: string): Promise<FailureCounter | undefined> {
    const [f, l, n, u] = await this.#redis.hmget(this.#limit(key), 'f', 'l', 'n', 'u');
    if (f === null || l === null || n === null || u === null) return undefined;
    return { failures: Number(f), lastAt: Number(l), nextAt: Number(n), lockedUntil: Number(u) };
  }

  async appendAudit(entry: AuditInput, now: number): Promise<void> {
    const fields: string[] = ['at', String(now), 'actor', entry.actor, 'action', entry.action, 'outcome', entry.outcome];
    if (entry.target !== undefined) fields.push('target', entry.target);
    if (entry.address !== undefined) fields.push('address', entry.address);
    if (entry.detail !== undefined) fields.push('detail', JSON.stringify(entry.detail));
    await this.#redis.xadd(`${this.#p}audit`, '*', ...fields);
  }

  async queryAudit(query: AuditQuery): Promise<AuditEntry[]> {
    const limit = auditLimit(query);
    const result: AuditEntry[] = [];
    let end = query.before !== undefined && /^[0-9]{1,16}-[0-9]{1,10}$/.test(query.before) ? `(${query.before}` : query.until !== undefined ? String(query.until - 1) : '+';
    const start = query.since !== undefined ? String(query.since) : '-';
    // Filters are applied here: read at most ten pages.
    for (let page = 0; page < 10 && result.length < limit; page++) {
      const rows = await this.#redis.xrevrange(`${this.#p}audit`, end, start, 'COUNT', MAX_AUDIT_QUERY);
      for (const [id, flat] of rows) {
        const f: Record<string, string> = Object.create(null) as Record<string, string>;
        for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i]!] = flat[i + 1]!;
        let detail: Record<string, unknown> | undefined;
        if (f['detail'] !== undefined) {
          try {
            detail = JSON.parse(f['detail']) as Record<string, unknown>;
          } catch {
            detail = undefined;
          }
        }
        const entry: AuditEntry = {
          id,
          at: Number(f['at']),
          actor: f['actor'] ?? '',
          action: f['action'] ?? '',
          outcome: (f['outcome'] ?? 'ok') as AuditEntry['outcome'],
          ...(f['target'] === undefined ? {} : { target: f['target'] }),
          ...(f['address'] === undefined ? {} : { address: f['address'] }),
          ...(detail === undefined ? {} : { detail }),
        };
        if (query.until !== undefined && entry.at >= query.until) continue;
        if (matchesAudit(entry, query)) result.push(entry);
        if (result.length >= limit) break;
      }
      if (rows.length < MAX_AUDIT_QUERY) break;
      end = `(${rows[rows.length - 1]![0]}`;
    }
    return result;
  }

  async sweep(now: number, policy: SweepPolicy): Promise<void> {
    // Sessions expire by themselves in Redis only at the absolute lifetime; idle ones and index entries go here.
    const admins = await this.#redis.smembers(`${this.#p}admins`);
    for (const admin of admins) {
      for (const idHash of await this.#redis.smembers(`${this.#p}sessions-of:${admin}`)) {
        await this.resolveSession(idHash, now, { ...policy.sessions, touchAfterMs: Number.MAX_SAFE_INTEGER });
      }
    }
    await this.#redis.xtrim(`${this.#p}audit`, 'MINID', '~', String(now - policy.auditRetentionMs));
  }

  async close(): Promise<void> {}

  // TOTP and recovery codes
  #totp(name: string): string {
    return `${this.#p}totp:${name}`;
  }

  async getTotp(name: string): Promise<TotpRecord | undefined> {
    const [secret, created, confirmed, lastStep] = await this.#redis.hmget(this.#totp(name), 'secret', 'created_at', 'confirmed_at', 'last_step');
    if (secret === null || secret === undefined) return undefined;
    return { admin: name, secret, createdAt: Number(created ?? 0), confirmedAt: Number(confirmed ?? 0), lastStep: Number(lastStep ?? 0) };
  }

  #recovery(name: string): string {
    return `${this.#p}recovery:${name}`;
  }

  async beginTotp(name: string, secret: string, now: number): Promise<boolean> {
    return (await this.#s.heraldConsoleBeginTotp(this.#totp(name), secret, String(now))) === 1;
  }

  async confirmTotp(name: string, secret: string, step: number, codeHashes: readonly string[], now: number): Promise<boolean> {
    return (await this.#s.heraldConsoleConfirmTotp(this.#totp(name), this.#recovery(name), secret, String(step), String(now), ...codeHashes)) === 1;
  }

  async acceptTotpStep(name: string, step: number): Promise<boolean> {
    return (await this.#s.heraldConsoleAcceptTotpStep(this.#totp(name), String(step))) === 1;
  }

  async useRecoveryCode(name: string, codeHash: string, now: number): Promise<boolean> {
    return (await this.#s.heraldConsoleUseRecoveryCode(this.#recovery(name), codeHash, String(now))) === 1;
  }

  async countRecoveryCodes(name: string): Promise<number> {
    return (await this.#redis.hvals(this.#recovery(name))).filter((usedAt) => usedAt === '0').length;
  }

  async deleteTotp(name: string): Promise<boolean> {
    const [[, deleted] = []] = (await this.#redis.multi().del(this.#totp(name)).del(this.#recovery(name)).exec()) ?? [];
    return deleted === 1;
  }

  // Passkeys
  #passkey(id: string): string {
    return `${this.#p}passkey:${id}`;
  }

  async addPasskey(record: PasskeyRecord): Promise<boolean> {
    const added = await this.#redis.eval(
      ADD_PASSKEY,
      2,
      this.#passkey(record.id),
      `${this.#p}passkeys-of:${record.admin}`,
      record.id,
      record.admin,
      record.publicKey,
      String(record.counter),
      JSON.stringify(record.transports),
      record.name,
      record.userHandle,
      String(record.createdAt),
      record.lastUsedAt === null ? '' : String(record.lastUsedAt),
    );
    return Number(added) === 1;
  }

  async listPasskeys(admin: string): Promise<PasskeyRecord[]> {
    const ids = await this.#redis.smembers(`${this.#p}passkeys-of:${admin}`);
    const found = await Promise.all(ids.map((id) => this.getPasskey(id)));
    return found.filter((p): p is PasskeyRecord => p !== undefined && p.admin === admin).sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  }

  async getPasskey(id: string): Promise<PasskeyRecord | undefined> {
    const [admin, publicKey, counter, transports, name, userHandle, createdAt, lastUsedAt] = await this.#redis.hmget(
      this.#passkey(id),
      'admin',
      'public_key',
      'counter',
      'transports',
      'name',
      'user_handle',
      'created_at',
      'last_used_at',
    );
    if (admin === null || admin === undefined || publicKey === null || publicKey === undefined || counter == null || userHandle === null || userHandle === undefined || createdAt == null) return undefined;
    let list: string[] = [];
    try {
      const parsed: unknown = JSON.parse(transports ?? '[]');
      if (Array.isArray(parsed)) list = parsed.filter((t): t is string => typeof t === 'string');
    } catch {
      list = [];
    }
    return {
      id,
      admin,
      publicKey,
      counter: Number(counter),
      transports: list,
      name: name ?? '',
      userHandle,
      createdAt: Number(createdAt),
      lastUsedAt: lastUsedAt === null || lastUsedAt === '' ? null : Number(lastUsedAt),
    };
  }

  async countPasskeys(admin: string): Promise<number> {
    return (await this.listPasskeys(admin)).length;
  }

  async renamePasskey(admin: string, id: string, name: string): Promise<boolean> {
    return Number(await this.#redis.eval(RENAME_PASSKEY, 1, this.#passkey(id), admin, name)) === 1;
  }

  async deletePasskey(admin: string, id: string): Promise<boolean> {
    return Number(await this.#redis.eval(DELETE_PASSKEY, 2, this.#passkey(id), `${this.#p}passkeys-of:${admin}`, admin, id)) === 1;
  }

  async usePasskey(id: string, counter: number, now: number): Promise<boolean> {
    return Number(await this.#redis.eval(USE_PASSKEY, 1, this.#passkey(id), String(counter), String(now))) === 1;
  }

  async putPasskeyChallenge(challenge: PasskeyChallenge, now: number): Promise<void> {
    // Kept a minute past its expiry, so that a late answer is refused as expired rather than unknown (PX: any Redis version).
    await this.#redis.set(`${this.#p}passkey-challenge:${challenge.key}`, JSON.stringify(challenge), 'PX', Math.max(1, challenge.expiresAt + 60_000 - now));
  }

  async takePasskeyChallenge(key: string): Promise<PasskeyChallenge | undefined> {
    const value = await this.#redis.eval(TAKE, 1, `${this.#p}passkey-challenge:${key}`);
    if (typeof value !== 'string') return undefined;
    try {
      const parsed = JSON.parse(value) as PasskeyChallenge;
      return { key: parsed.key, purpose: parsed.purpose, challenge: parsed.challenge, admin: parsed.admin ?? null, userHandle: parsed.userHandle ?? null, expiresAt: Number(parsed.expiresAt) };
    } catch {
      return undefined;
    }
  }

  // OIDC identities
  #oidcLink(provider: string, subject: string): string {
    return `${this.#p}oidc-link:${provider}:${subject}`;
  }

  async getOidcLink(provider: string, subject: string): Promise<OidcLink | undefined> {
    const [admin, created] = await this.#redis.hmget(this.#oidcLink(provider, subject), 'admin', 'created_at');
    return admin === null || admin === undefined ? undefined : { provider, subject, admin, createdAt: Number(created) };
  }

  async createOidcAdmin(input: OidcAdminInput): Promise<AdminRecord | undefined> {
    const now = String(input.now);
    const made = await this.#s.heraldConsoleCreateOidcAdmin(`${this.#p}admins`, this.#admin(input.name), this.#oidcLink(input.provider, input.subject), `${this.#p}oidc-links-of:${input.name}`, input.name, input.role, now, input.provider, input.subject);
    if (made === null) return undefined;
    return { name: input.name, role: input.role, passwordHash: '', disabled: false, createdAt: input.now, updatedAt: input.now };
  }

  async putOidcFlow(flow: OidcFlow, now: number, max: number): Promise<boolean> {
    const kept = await this.#s.heraldConsolePutOidcFlow(
      `${this.#p}oidc-flow:${flow.stateHash}`,
      `${this.#p}oidc-flows`,
      String(now),
      String(max),
      flow.stateHash,
      String(flow.expiresAt),
      flow.provider,
      flow.nonce,
      flow.codeVerifier,
      flow.bindingHash,
    );
    return kept === 1;
  }

  async takeOidcFlow(stateHash: string, now: number): Promise<OidcFlow | undefined> {
    const f = await this.#s.heraldConsoleTakeOidcFlow(`${this.#p}oidc-flow:${stateHash}`, `${this.#p}oidc-flows`, stateHash);
    if (f === null || f.some((v) => v === null || v === undefined)) return undefined;
    const [provider, nonce, codeVerifier, bindingHash, expires] = f as [string, string, string, string, string];
    const expiresAt = Number(expires);
    return expiresAt > now ? { stateHash, provider, nonce, codeVerifier, bindingHash, expiresAt } : undefined;
  }

  async oidcLinksOf(admin: string): Promise<OidcLink[]> {
    const members = (await this.#redis.smembers(`${this.#p}oidc-links-of:${admin}`)).sort();
    const links = await Promise.all(
      members.map((member) => {
        // Provider ids have no ':'; the subject may.
        const at = member.indexOf(':');
        return this.getOidcLink(member.slice(0, at), member.slice(at + 1));
      }),
    );
    return links.filter((link): link is OidcLink => link !== undefined && link.admin === admin);
  }
}

/** KEYS: passkey, passkeys-of set; ARGV: id, admin, public key, counter, transports, name, user handle, created, last used. */
const ADD_PASSKEY = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'admin', ARGV[2], 'public_key', ARGV[3], 'counter', ARGV[4], 'transports', ARGV[5], 'name', ARGV[6], 'user_handle', ARGV[7], 'created_at', ARGV[8], 'last_used_at', ARGV[9])
redis.call('SADD', KEYS[2], ARGV[1])
return 1`;

/** KEYS: passkey; ARGV: admin, name. */
const RENAME_PASSKEY = `
if redis.call('HGET', KEYS[1], 'admin') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[2])
return 1`;

/** KEYS: passkey, passkeys-of set; ARGV: admin, id. */
const DELETE_PASSKEY = `
if redis.call('HGET', KEYS[1], 'admin') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1`;

/** KEYS: passkey; ARGV: counter, now. Refuses a counter that went back (admin-store.ts counterWentBack). */
const USE_PASSKEY = `
local stored = redis.call('HGET', KEYS[1], 'counter')
if not stored then return 0 end
stored = tonumber(stored)
local next = tonumber(ARGV[1])
if (stored > 0 or next > 0) and next <= stored then return 0 end
redis.call('HSET', KEYS[1], 'counter', ARGV[1], 'last_used_at', ARGV[2])
return 1`;

/** KEYS: key. Reads and deletes it. */
const TAKE = `
local v = redis.call('GET', KEYS[1])
if v then redis.call('DEL', KEYS[1]) end
return v`;
