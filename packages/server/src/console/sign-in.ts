/**
 * Sign-in stages of the console: every way in (password, passkey, OIDC) ends
 * with `startSession`, and every second factor (TOTP, a recovery code, a
 * passkey after a password) with `completeSecondFactor`.
 *
 * Guarantees:
 * - Each call ends the session the browser brought and makes a new one with
 *   a new id (no fixation; SECURITY-TESTS 20: the id changes when the second
 *   factor passes, and the old one is refused).
 * - A session short of 'full' can reach only the endpoints guarded by
 *   `requireStage` for its stage, `GET B/api/session` and `POST B/api/logout`
 *   (console-guard.ts refuses everything else with 403 `mfa_required`), and
 *   ends PARTIAL_SESSION_MS (5 minutes) after it began.
 * - Stage rule: `mfaSatisfied` (a passkey login; an OIDC login whose provider
 *   is trusted for MFA and asserts it) → 'full'; otherwise an admin with any
 *   second factor enrolled → 'second_factor'; otherwise, when
 *   `admin.console.mfa.require` covers the admin's role → 'enrol'; else 'full'.
 * - Every session started or completed is a `console.login` audit entry
 *   with `detail.method` (and `detail.factor` for a second factor).
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config/schema.ts';
import type { AdminRecord, AdminRole, AdminStore, SessionStage } from './admin-store.ts';
import { cookieOptions, type ConsoleContext } from './console-guard.ts';
import { csrfToken } from './csrf.ts';
import { SESSION_COOKIE } from './sessions.ts';

export type { SessionStage } from './admin-store.ts';
export { PARTIAL_SESSION_MS } from './admin-store.ts';

export type SignInMethod = 'password' | 'passkey' | 'oidc';
export type SecondFactor = 'totp' | 'recovery_code' | 'passkey';

/** The JSON answer of a sign-in step (and of GET B/api/session). */
export interface SignInAnswer {
  readonly admin: { readonly name: string; readonly role: AdminRole };
  readonly csrf: string;
  readonly expiresAt: number;
  readonly idleExpiresAt: number;
  readonly stage: SessionStage;
  /** How the admin signed in so far, e.g. ["password"], ["password", "totp"]. */
  readonly methods: readonly string[];
  /** On a 'second_factor' session: which second factors the admin can give (the page shows those). */
  readonly factors?: { readonly totp: boolean; readonly passkeys: number };
}

/** The second factors an admin has enrolled (`ctx.factors`). */
export interface EnrolledFactors {
  of(admin: string): Promise<{ totp: boolean; passkeys: number }>;
}

/** Enrolled factors read from the console store (TOTP confirmed; passkeys counted). */
export class StoreFactors implements EnrolledFactors {
  readonly #store: AdminStore;

  constructor(store: AdminStore) {
    this.#store = store;
  }

  async of(admin: string): Promise<{ totp: boolean; passkeys: number }> {
    const totp = await this.#store.getTotp(admin);
    return { totp: totp !== undefined && totp.confirmedAt > 0, passkeys: await this.#store.countPasskeys(admin) };
  }
}

export type MfaPolicy = Config['admin']['console']['mfa'];

/** Whether `admin.console.mfa.require` asks a second factor of this role. */
export function mfaRequired(policy: MfaPolicy, role: AdminRole): boolean {
  if (policy.require === 'none') return false;
  if (policy.require === 'all') return true;
  return policy.require.includes(role);
}

/** The stage a session starts at after a first factor (the stage rule above). */
export async function stageAfterFirstFactor(ctx: ConsoleContext, admin: AdminRecord, mfaSatisfied: boolean): Promise<SessionStage> {
  if (mfaSatisfied) return 'full';
  const factors = await ctx.factors.of(admin.name);
  if (factors.totp || factors.passkeys > 0) return 'second_factor';
  return mfaRequired(ctx.config.admin.console.mfa, admin.role) ? 'enrol' : 'full';
}

async function newSession(
  ctx: ConsoleContext,
  request: FastifyRequest,
  reply: FastifyReply,
  admin: AdminRecord,
  stage: SessionStage,
  methods: readonly string[],
  ending: string | undefined,
): Promise<SignInAnswer> {
  // Rotation: whatever session id the browser brought is ended, never adopted.
  await ctx.sessions.end(ending);
  const { id, session } = await ctx.sessions.create(admin, ctx.clientIp(request), ctx.now(), stage, methods);
  reply.setCookie(SESSION_COOKIE, id, cookieOptions);
  return { admin: { name: admin.name, role: admin.role }, csrf: csrfToken(session.csrfSecret), ...ctx.sessions.expiry(session), stage, methods: session.methods };
}

/**
 * After a first factor passed: ends the session the browser brought, makes a
 * new one (new id) at the stage the MFA policy and the admin's enrolled
 * factors require, sets the cookie, audits `console.login` with the method,
 * and returns the JSON answer for the browser (admin, csrf, expiry, stage).
 */
export async function startSession(
  ctx: ConsoleContext,
  request: FastifyRequest,
  reply: FastifyReply,
  admin: AdminRecord,
  method: SignInMethod,
  options: { mfaSatisfied?: boolean } = {},
): Promise<SignInAnswer> {
  const stage = await stageAfterFirstFactor(ctx, admin, options.mfaSatisfied === true);
  const started = await newSession(ctx, request, reply, admin, stage, [method], request.cookies[SESSION_COOKIE]);
  const answer = stage === 'second_factor' ? { ...started, factors: await ctx.factors.of(admin.name) } : started;
  if (stage === 'full') ctx.countLogin('ok');
  ctx.audit.record({ actor: admin.name, action: 'console.login', address: ctx.clientIp(request), outcome: 'ok', detail: { method, role: admin.role, stage } });
  return answer;
}

/**
 * After a second factor passed on a 'second_factor' (or, after enrolment,
 * an 'enrol') session: ends it and makes a new 'full' session (new id:
 * SECURITY-TESTS 20, renewal at MFA), sets the cookie, audits. The route
 * must be guarded by `requireStage` (request.consoleSession is the session).
 */
export async function completeSecondFactor(ctx: ConsoleContext, request: FastifyRequest, reply: FastifyReply, factor: SecondFactor): Promise<SignInAnswer> {
  const live = request.consoleSession;
  if (live === undefined) throw new Error('completeSecondFactor needs a route guarded by requireStage');
  const methods = [...live.session.methods, factor];
  const answer = await newSession(ctx, request, reply, live.admin, 'full', methods, live.id);
  ctx.countLogin('ok');
  ctx.audit.record({
    actor: live.admin.name,
    action: 'console.login',
    address: ctx.clientIp(request),
    outcome: 'ok',
    detail: { method: live.session.methods[0] ?? 'password', factor, role: live.admin.role, stage: 'full' },
  });
  return answer;
}
