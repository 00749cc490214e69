/**
 * Where a passkey ceremony meets the sign-in stages (sign-in.ts): which
 * session waits for a passkey as its second factor, and what a verified
 * passkey does (a passwordless sign-in satisfies MFA; after a password it
 * is the second factor).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { sendApiError } from '../transports/http-connection.ts';
import type { AdminRecord } from './admin-store.ts';
import type { ConsoleContext } from './console-guard.ts';
import { CSRF_HEADER, csrfValid } from './csrf.ts';
import { SESSION_COOKIE, type LiveSession } from './sessions.ts';
import { completeSecondFactor, startSession, type SignInAnswer } from './sign-in.ts';

/**
 * The session of the request when it waits for its second factor, admitted
 * like `requireStage('second_factor')` (its CSRF token checked; the caller
 * checked the Origin); undefined when the request has no such session (a
 * passwordless sign-in); 'refused' when the answer (403) was sent.
 */
export async function passkeySecondFactorSession(ctx: ConsoleContext, request: FastifyRequest, reply: FastifyReply): Promise<LiveSession | 'refused' | undefined> {
  const live = await ctx.sessions.resolve(request.cookies[SESSION_COOKIE], ctx.now());
  if (live === undefined || live.session.stage !== 'second_factor') return undefined;
  if (!csrfValid(live.session.csrfSecret, request.headers[CSRF_HEADER])) {
    sendApiError(reply, 'csrf_failed', `missing or wrong ${CSRF_HEADER} header`);
    return 'refused';
  }
  request.consoleAdmin = { name: live.admin.name, role: live.admin.role, sessionId: live.session.idHash };
  request.consoleSession = live;
  return live;
}

/** A passwordless sign-in passed: a new 'full' session (a passkey is possession and, verified, inherence: MFA). */
export function finishPasskeySignIn(ctx: ConsoleContext, request: FastifyRequest, reply: FastifyReply, admin: AdminRecord): Promise<SignInAnswer> {
  return startSession(ctx, request, reply, admin, 'passkey', { mfaSatisfied: true });
}

/** The second factor passed on the session `passkeySecondFactorSession` admitted, or a passkey enrolled on an 'enrol' session. */
export function finishPasskeySecondFactor(ctx: ConsoleContext, request: FastifyRequest, reply: FastifyReply): Promise<SignInAnswer> {
  return completeSecondFactor(ctx, request, reply, 'passkey');
}
