/**
 * Sign-in, sign-out and admin management routes of the console, under the
 * base path B (`admin.console.basePath`):
 * - `POST B/api/login` `{name, password}` → `{admin:{name, role}, csrf,
 *   expiresAt, idleExpiresAt, stage, methods}` and the session cookie (a new
 *   id, always; sign-in.ts startSession). `stage` 'second_factor' or
 *   'enrol': the second factor or enrolment follows (sign-in.ts).
 * - `POST B/api/logout` (any stage), `POST B/api/logout-everywhere` → 204.
 * - `GET B/api/session` → `{admin, csrf, expiresAt, idleExpiresAt, stage,
 *   methods}` (any stage) or 401.
 * - owner: `GET B/api/admins`, `POST B/api/admins/:name/end-sessions`,
 *   `POST B/api/admins/:name/unlock`.
 * Every outcome of a sign-in is in the audit log and in metrics.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendApiError } from '../transports/http-connection.ts';
import { ADMIN_NAME_PATTERN } from './admin-store.ts';
import { clearSessionCookie, requireRole, requireSession, type ConsoleContext } from './console-guard.ts';
import { csrfToken, sameOrigin } from './csrf.ts';
import { accountKey } from './login-limiter.ts';
import { MAX_PASSWORD_BYTES, MAX_PASSWORD_CHARS, PasswordBusyError } from './passwords.ts';
import { startSession, type SignInAnswer } from './sign-in.ts';

/** The largest sign-in body read: a name and a password of the maximum length, JSON-escaped, and some room. */
export const LOGIN_BODY_LIMIT = 8192;

export const NAME_RULE = 'a name is 1-64 characters of A-Z a-z 0-9 _ . @ - (starting with a letter or digit)';

function loginInput(body: unknown): { name: string; password: string } | string {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return 'the body must be a JSON object {name, password}';
  const record = body as Record<string, unknown>;
  for (const key of Object.keys(record)) if (key !== 'name' && key !== 'password') return `unknown field "${key.slice(0, 32)}"`;
  const { name, password } = record;
  if (typeof name !== 'string' || !ADMIN_NAME_PATTERN.test(name)) return `name: ${NAME_RULE}`;
  if (typeof password !== 'string' || password.length === 0) return 'password: a non-empty string is required';
  if ([...password].length > MAX_PASSWORD_CHARS || Buffer.byteLength(password) > MAX_PASSWORD_BYTES) return `password: at most ${MAX_PASSWORD_CHARS} characters (${MAX_PASSWORD_BYTES} bytes)`;
  return { name, password };
}

async function sessionAnswer(ctx: ConsoleContext, request: FastifyRequest): Promise<SignInAnswer> {
  const live = request.consoleSession!;
  return {
    admin: { name: live.admin.name, role: live.admin.role },
    csrf: csrfToken(live.session.csrfSecret),
    ...ctx.sessions.expiry(live.session),
    stage: live.session.stage,
    methods: live.session.methods,
    ...(live.session.stage === 'second_factor' ? { factors: await ctx.factors.of(live.admin.name) } : {}),
  };
}

function nameParam(request: FastifyRequest, reply: FastifyReply): string | undefined {
  const name = (request.params as { name?: string }).name ?? '';
  if (ADMIN_NAME_PATTERN.test(name)) return name;
  sendApiError(reply, 'invalid_input', `name: ${NAME_RULE}`);
  return undefined;
}

/** Refused sign-ins of one name from one address are audited at most once per this interval. */
export const DENIAL_AUDIT_MS = 10_000;

/** Remembers what was audited lately (bounded: cleared when full). */
class RecentKeys {
  readonly #seen = new Map<string, number>();
  note(key: string, now: number): boolean {
    const last = this.#seen.get(key);
    if (last !== undefined && now - last < DENIAL_AUDIT_MS) return false;
    if (this.#seen.size >= 10_000) this.#seen.clear();
    this.#seen.set(key, now);
    return true;
  }
}

export function registerConsoleAuthRoutes(app: FastifyInstance, ctx: ConsoleContext): void {
  const base = ctx.basePath;
  const deniedRecently = new RecentKeys();

  app.post(`${base}/api/login`, { bodyLimit: LOGIN_BODY_LIMIT }, async (request, reply) => {
    if (!sameOrigin(ctx.origin, request.headers)) return sendApiError(reply, 'csrf_failed', 'Origin is not the console\'s own origin');
    const input = loginInput(request.body);
    if (typeof input === 'string') return sendApiError(reply, 'invalid_input', input);
    const { name, password } = input;
    const address = ctx.clientIp(request);
    const verdict = await ctx.limiter.attempt(name, address, ctx.now());
    if (!verdict.allowed) {
      ctx.countLogin('locked');
      // A flood of refused attempts is one audit entry per name and address every DENIAL_AUDIT_MS (metrics count each).
      if (deniedRecently.note(`${name.toLowerCase()}\0${address}`, ctx.now())) {
        ctx.audit.record({ actor: name, action: 'console.login', address, outcome: 'denied', detail: { reason: 'locked', retryAfterMs: verdict.retryAfterMs } });
      }
      reply.header('retry-after', String(Math.max(1, Math.ceil(verdict.retryAfterMs / 1000))));
      return sendApiError(reply, 'login_locked');
    }
    for (const key of verdict.lockedNow) {
      ctx.audit.record({ actor: 'herald', action: 'console.lock', target: key, address, outcome: 'ok', detail: { lockMs: key === accountKey(name) ? ctx.limiter.account.lockMs : ctx.limiter.address.lockMs } });
    }
    let admin;
    let ok: boolean;
    let needsRehash = false;
    try {
      admin = await ctx.store.getAdmin(name);
      if (admin === undefined) {
        ok = await ctx.hasher.verifyUnknown(password);
      } else {
        ({ ok, needsRehash } = await ctx.hasher.verify(password, admin.passwordHash));
      }
    } catch (error) {
      if (!(error instanceof PasswordBusyError)) throw error;
      reply.header('retry-after', '1');
      return sendApiError(reply, 'too_many_requests', 'too many sign-ins are being checked at once');
    }
    if (admin === undefined || !ok || admin.disabled) {
      ctx.countLogin('failed');
      ctx.audit.record({ actor: name, action: 'console.login', address, outcome: 'failed' });
      return sendApiError(reply, 'login_failed');
    }
    if (needsRehash) {
      const passwordHash = await ctx.hasher.hash(password);
      await ctx.store.updateAdmin(admin.name, { passwordHash }, ctx.now());
    }
    const answer = await startSession(ctx, request, reply, admin, 'password');
    // Only a full sign-in forgets the account's failures: wrong second-factor codes keep counting across password re-entries.
    if (answer.stage === 'full') await ctx.limiter.succeeded(name, address);
    else await ctx.limiter.firstFactorPassed(name, address);
    return answer;
  });

  app.post(`${base}/api/logout`, { preHandler: requireSession() }, async (request, reply) => {
    await ctx.sessions.end(request.consoleSession!.id);
    clearSessionCookie(reply);
    ctx.audit.record({ actor: request.consoleAdmin!.name, action: 'console.logout', address: ctx.clientIp(request), outcome: 'ok' });
    return reply.code(204).send();
  });

  app.post(`${base}/api/logout-everywhere`, { preHandler: requireRole('viewer') }, async (request, reply) => {
    const ended = await ctx.sessions.endAll(request.consoleAdmin!.name);
    clearSessionCookie(reply);
    ctx.audit.record({ actor: request.consoleAdmin!.name, action: 'console.logout_everywhere', address: ctx.clientIp(request), outcome: 'ok', detail: { sessions: ended } });
    return reply.code(204).send();
  });

  app.get(`${base}/api/session`, { preHandler: requireSession() }, async (request) => sessionAnswer(ctx, request));

  app.get(`${base}/api/admins`, { preHandler: requireRole('owner') }, async () => {
    const now = ctx.now();
    const admins = await ctx.store.listAdmins();
    return {
      admins: await Promise.all(
        admins.map(async (a) => {
          const counter = await ctx.limiter.accountCounter(a.name);
          return {
            name: a.name,
            role: a.role,
            disabled: a.disabled,
            createdAt: a.createdAt,
            updatedAt: a.updatedAt,
            sessions: await ctx.store.countSessions(a.name, now, ctx.sessions.policy),
            lockedUntil: counter !== undefined && counter.lockedUntil > now ? counter.lockedUntil : null,
            mfa: await ctx.factors.of(a.name),
          };
        }),
      ),
    };
  });

  app.post(`${base}/api/admins/:name/end-sessions`, { preHandler: requireRole('owner') }, async (request, reply) => {
    const name = nameParam(request, reply);
    if (name === undefined) return reply;
    if ((await ctx.store.getAdmin(name)) === undefined) return sendApiError(reply, 'not_found', `no admin named "${name}"`);
    const ended = await ctx.sessions.endAll(name);
    ctx.audit.record({ actor: request.consoleAdmin!.name, action: 'admin.end_sessions', target: name, address: ctx.clientIp(request), outcome: 'ok', detail: { sessions: ended } });
    return { ended };
  });

  app.post(`${base}/api/admins/:name/unlock`, { preHandler: requireRole('owner') }, async (request, reply) => {
    const name = nameParam(request, reply);
    if (name === undefined) return reply;
    await ctx.limiter.unlockAccount(name);
    ctx.audit.record({ actor: request.consoleAdmin!.name, action: 'admin.unlock', target: name, address: ctx.clientIp(request), outcome: 'ok' });
    return reply.code(204).send();
  });
}
