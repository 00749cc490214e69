/**
 * Where a passkey ceremony meets the sign-in stages (sign-in.ts): which
 * session waits for a passkey as its second factor, and what a verified
 * passkey does (a passwordless sign-in, or the second factor).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AdminRecord, PasskeyRecord } from './admin-store.ts';
import { cookieOptions, type ConsoleContext } from './console-guard.ts';
import { csrfToken } from './csrf.ts';
import { SESSION_COOKIE, type LiveSession } from './sessions.ts';

/** The session of the request when it waits for its second factor; undefined otherwise. */
export async function passkeySecondFactorSession(_ctx: ConsoleContext, _request: FastifyRequest): Promise<LiveSession | undefined> {
  return undefined;
}

/** A passwordless sign-in passed: a new session (a passkey satisfies MFA). */
export async function finishPasskeySignIn(ctx: ConsoleContext, request: FastifyRequest, reply: FastifyReply, admin: AdminRecord, passkey: PasskeyRecord): Promise<unknown> {
  const address = ctx.clientIp(request);
  await ctx.sessions.end(request.cookies[SESSION_COOKIE]);
  const { id, session } = await ctx.sessions.create(admin, address, ctx.now());
  reply.setCookie(SESSION_COOKIE, id, cookieOptions);
  ctx.countLogin('ok');
  ctx.audit.record({ actor: admin.name, action: 'console.login', address, outcome: 'ok', detail: { role: admin.role, method: 'passkey', passkey: passkey.name } });
  return { admin: { name: admin.name, role: admin.role }, csrf: csrfToken(session.csrfSecret), ...ctx.sessions.expiry(session) };
}

/** The second factor passed on a session that waited for it. */
export async function finishPasskeySecondFactor(ctx: ConsoleContext, request: FastifyRequest, reply: FastifyReply, passkey: PasskeyRecord): Promise<unknown> {
  void passkey;
  void ctx;
  void request;
  return reply.code(500).send();
}
