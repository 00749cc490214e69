/**
 * STAND-IN until the mfa-totp part lands its sign-in.ts (same signature):
 * the OIDC routes call startSession; this one makes a full session.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { AdminRecord, AdminRole } from './admin-store.ts';
import { cookieOptions, type ConsoleContext } from './console-guard.ts';
import { csrfToken } from './csrf.ts';
import { SESSION_COOKIE } from './sessions.ts';

export type SignInMethod = 'password' | 'passkey' | 'oidc';

export interface SignInAnswer {
  readonly admin: { readonly name: string; readonly role: AdminRole };
  readonly csrf: string;
  readonly expiresAt: number;
  readonly idleExpiresAt: number;
  readonly stage: 'full' | 'second_factor' | 'enrol';
  readonly methods: readonly string[];
}

export async function startSession(
  ctx: ConsoleContext,
  request: FastifyRequest,
  reply: FastifyReply,
  admin: AdminRecord,
  method: SignInMethod,
  options: { mfaSatisfied?: boolean } = {},
): Promise<SignInAnswer> {
  void options;
  await ctx.sessions.end(request.cookies[SESSION_COOKIE]);
  const { id, session } = await ctx.sessions.create(admin, ctx.clientIp(request), ctx.now());
  reply.setCookie(SESSION_COOKIE, id, cookieOptions);
  ctx.countLogin('ok');
  ctx.audit.record({ actor: admin.name, action: 'console.login', address: ctx.clientIp(request), outcome: 'ok', detail: { method, role: admin.role } });
  return { admin: { name: admin.name, role: admin.role }, csrf: csrfToken(session.csrfSecret), ...ctx.sessions.expiry(session), stage: 'full', methods: [method] };
}
