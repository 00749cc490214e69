/**
 * The guard of every console endpoint (console-auth-routes.ts, and the
 * console API of console-api.ts): `requireRole(minimum)` as a fastify
 * preHandler.
 *
 * Order of checks, each answered with a registered error code:
 * 1. State-changing methods (anything but GET/HEAD): `Origin` must be the
 *    console's own (csrf.ts), else 403 `csrf_failed`.
 * 2. The session cookie must name a session in force (sessions.ts), else
 *    401 `unauthenticated` (and the cookie is cleared).
 * 3. State-changing methods: header `x-csrf-token` must be a token of the
 *    session's secret, else 403 `csrf_failed`.
 * 4. The session must be fully signed in (stage 'full', sign-in.ts), else
 *    403 `mfa_required` with the stage in the detail.
 * 5. The admin's role must be at least `minimum` (owner > operator >
 *    viewer), else 403 `forbidden` (recorded in the audit log).
 * `requireStage(...stages)` does 1-3 and admits only sessions at those
 * stages (the second-factor and enrolment endpoints); `requireSession()`
 * admits any stage (GET session, logout).
 * Then `request.consoleAdmin` is set. The role is read from the store with
 * the session on every request, so a demotion is in force at once.
 */
import type { FastifyReply, FastifyRequest, preHandlerAsyncHookHandler } from 'fastify';
import type { Config } from '../config/schema.ts';
import type { Node } from '../core/node.ts';
import { sendApiError } from '../transports/http-connection.ts';
import { roleAtLeast, type AdminRole, type AdminStore, type SessionStage } from './admin-store.ts';
import type { AuditLog } from './audit-log.ts';
import { CSRF_HEADER, csrfValid, sameOrigin, type OriginRule } from './csrf.ts';
import type { LoginLimiter } from './login-limiter.ts';
import type { PasswordHasher } from './passwords.ts';
import type { EnrolledFactors } from './sign-in.ts';
import { SESSION_COOKIE, type ConsoleSessions, type LiveSession } from './sessions.ts';

export type { AdminRole } from './admin-store.ts';
export type { AuditLog } from './audit-log.ts';

export interface ConsoleAdmin {
  readonly name: string;
  readonly role: AdminRole;
  /** The SHA-256 of the session id (safe to log; the id itself stays in the cookie). */
  readonly sessionId: string;
}

/** What the console's routes share; `app.heraldConsole` on the internal listener. */
export interface ConsoleContext {
  readonly config: Config;
  /** This process's Node (channels, connections, publish) for the console API. */
  readonly node: Node;
  /** `admin.console.basePath`, e.g. `/console`. */
  readonly basePath: string;
  readonly store: AdminStore;
  readonly sessions: ConsoleSessions;
  readonly limiter: LoginLimiter;
  readonly hasher: PasswordHasher;
  readonly audit: AuditLog;
  /** The second factors each admin has enrolled (sign-in.ts). */
  readonly factors: EnrolledFactors;
  readonly origin: OriginRule;
  /** The client's address (http.trustedProxies honoured). */
  clientIp(request: FastifyRequest): string;
  now(): number;
  /** Counts a sign-in outcome in metrics. */
  countLogin(outcome: 'ok' | 'failed' | 'locked'): void;
}

declare module 'fastify' {
  interface FastifyInstance {
    heraldConsole: ConsoleContext;
  }
  interface FastifyRequest {
    /** Set by requireRole on console routes. */
    consoleAdmin: ConsoleAdmin | undefined;
    /** The live session behind consoleAdmin (the auth routes need its id). */
    consoleSession: LiveSession | undefined;
  }
}

export function isStateChanging(method: string): boolean {
  return method !== 'GET' && method !== 'HEAD';
}

export const cookieOptions = { path: '/', httpOnly: true, secure: true, sameSite: 'strict' } as const;

export function clearSessionCookie(reply: FastifyReply): void {
  reply.clearCookie(SESSION_COOKIE, cookieOptions);
}

/** The checks 1-3 above; the live session, or undefined when an answer was sent. */
async function liveSession(request: FastifyRequest, reply: FastifyReply): Promise<LiveSession | undefined> {
  const ctx = request.server.heraldConsole;
  const changing = isStateChanging(request.method);
  if (changing && !sameOrigin(ctx.origin, request.headers)) {
    sendApiError(reply, 'csrf_failed', 'Origin is not the console\'s own origin');
    return undefined;
  }
  const live = await ctx.sessions.resolve(request.cookies[SESSION_COOKIE], ctx.now());
  if (live === undefined) {
    clearSessionCookie(reply);
    sendApiError(reply, 'unauthenticated');
    return undefined;
  }
  if (changing && !csrfValid(live.session.csrfSecret, request.headers[CSRF_HEADER])) {
    sendApiError(reply, 'csrf_failed', `missing or wrong ${CSRF_HEADER} header`);
    return undefined;
  }
  return live;
}

function admit(request: FastifyRequest, live: LiveSession): void {
  request.consoleAdmin = { name: live.admin.name, role: live.admin.role, sessionId: live.session.idHash };
  request.consoleSession = live;
}

/** fastify preHandler: 401 without a valid session, 403 `mfa_required` short of a full sign-in, 403 for a lower role; CSRF checks on state changes. Sets request.consoleAdmin. */
export function requireRole(minimum: AdminRole): preHandlerAsyncHookHandler {
  return async function guard(request, reply) {
    const ctx = request.server.heraldConsole;
    const live = await liveSession(request, reply);
    if (live === undefined) return reply;
    if (live.session.stage !== 'full') return sendApiError(reply, 'mfa_required', `stage: ${live.session.stage}`);
    if (!roleAtLeast(live.admin.role, minimum)) {
      ctx.audit.record({
        actor: live.admin.name,
        action: 'console.denied',
        target: `${request.method} ${request.routeOptions.url ?? request.url}`,
        address: ctx.clientIp(request),
        outcome: 'denied',
        detail: { role: live.admin.role, needs: minimum },
      });
      return sendApiError(reply, 'forbidden', `this needs the ${minimum} role`);
    }
    admit(request, live);
  };
}

/**
 * fastify preHandler of the second-factor and enrolment endpoints: like
 * requireRole (Origin, session, CSRF), but admits only sessions at one of
 * `stages` (any role), else 403 `mfa_required` naming the session's stage.
 */
export function requireStage(...stages: SessionStage[]): preHandlerAsyncHookHandler {
  return async function guard(request, reply) {
    const live = await liveSession(request, reply);
    if (live === undefined) return reply;
    if (!stages.includes(live.session.stage)) return sendApiError(reply, 'mfa_required', `stage: ${live.session.stage}; this needs ${stages.join(' or ')}`);
    admit(request, live);
  };
}

/** fastify preHandler of GET B/api/session and POST B/api/logout: any session in force, at any stage. */
export function requireSession(): preHandlerAsyncHookHandler {
  return requireStage('full', 'second_factor', 'enrol');
}
