/**
 * TOTP and recovery-code routes of the console, under the base path B:
 * - 'second_factor' session: `POST B/api/login/totp` `{code}`,
 *   `POST B/api/login/recovery-code` `{code}` → the sign-in answer of a
 *   new full session (sign-in.ts completeSecondFactor: a new id).
 * - 'enrol' or full session: `POST B/api/mfa/totp/enrol` → `{secret, uri,
 *   qr, digits, period}` (a pending secret; enrolment completes only with a
 *   valid code), `POST B/api/mfa/totp/confirm` `{code}` → `{recoveryCodes}`
 *   (shown this once) and, on an 'enrol' session, the answer of a new full
 *   session beside them.
 * - full session: `GET B/api/mfa` (own factors), `DELETE B/api/mfa/totp`
 *   `{code}` (a current code or a recovery code).
 * - owner: `POST B/api/admins/:name/reset-mfa` (removes the admin's TOTP and
 *   recovery codes, ends the admin's sessions).
 * Wrong codes at sign-in count in the sign-in limiter (login-limiter.ts) like
 * wrong passwords; every outcome is in the audit log.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sendApiError } from '../transports/http-connection.ts';
import { ADMIN_NAME_PATTERN } from './admin-store.ts';
import { requireRole, requireStage, type ConsoleContext } from './console-guard.ts';
import { completeSecondFactor } from './sign-in.ts';
import { checkTotp, resetMfa, newRecoveryCodes, newTotpSecret, normalRecoveryCode, qrDataUrl, recoveryCodeHash, TOTP_DIGITS, TOTP_PERIOD_S, totpUri } from './totp.ts';

/** Bodies here are one short code. */
const CODE_BODY_LIMIT = 1024;

function codeInput(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return undefined;
  const record = body as Record<string, unknown>;
  if (Object.keys(record).some((key) => key !== 'code')) return undefined;
  return typeof record['code'] === 'string' && record['code'].length <= 64 ? record['code'] : undefined;
}

export function registerTotpRoutes(app: FastifyInstance, ctx: ConsoleContext): void {
  const base = ctx.basePath;
  const issuer = ctx.config.admin.console.mfa.totpIssuer;

  /** A second-factor attempt through the sign-in limiter; false when refused (answer sent). */
  async function limited(request: FastifyRequest, reply: FastifyReply, method: string): Promise<boolean> {
    const name = request.consoleAdmin!.name;
    const address = ctx.clientIp(request);
    const verdict = await ctx.limiter.attempt(name, address, ctx.now());
    for (const key of verdict.lockedNow) ctx.audit.record({ actor: 'herald', action: 'console.lock', target: key, address, outcome: 'ok', detail: { method } });
    if (verdict.allowed) return true;
    ctx.countLogin('locked');
    ctx.audit.record({ actor: name, action: 'console.login', address, outcome: 'denied', detail: { method, reason: 'locked', retryAfterMs: verdict.retryAfterMs } });
    reply.header('retry-after', String(Math.max(1, Math.ceil(verdict.retryAfterMs / 1000))));
    sendApiError(reply, 'login_locked');
    return false;
  }

  function failed(request: FastifyRequest, reply: FastifyReply, method: string, reason: string): FastifyReply {
    ctx.countLogin('failed');
    ctx.audit.record({ actor: request.consoleAdmin!.name, action: 'console.login', address: ctx.clientIp(request), outcome: 'failed', detail: { method, reason } });
    return sendApiError(reply, 'mfa_failed');
  }

  app.post(`${base}/api/login/totp`, { preHandler: requireStage('second_factor'), bodyLimit: CODE_BODY_LIMIT }, async (request, reply) => {
    const code = codeInput(request.body);
    if (code === undefined) return sendApiError(reply, 'invalid_input', 'the body must be {"code": "123456"}');
    const name = request.consoleAdmin!.name;
    if (!(await limited(request, reply, 'totp'))) return reply;
    const record = await ctx.store.getTotp(name);
    if (record === undefined || record.confirmedAt === 0) return failed(request, reply, 'totp', 'not_enrolled');
    const step = await checkTotp(record.secret, code.trim(), ctx.now(), record.lastStep);
    // The step is taken atomically: a code used twice at once passes once.
    if (step === undefined || !(await ctx.store.acceptTotpStep(name, step))) return failed(request, reply, 'totp', 'wrong_or_reused');
    await ctx.limiter.succeeded(name, ctx.clientIp(request));
    return completeSecondFactor(ctx, request, reply, 'totp');
  });

  app.post(`${base}/api/login/recovery-code`, { preHandler: requireStage('second_factor'), bodyLimit: CODE_BODY_LIMIT }, async (request, reply) => {
    const code = codeInput(request.body);
    if (code === undefined) return sendApiError(reply, 'invalid_input', 'the body must be {"code": "XXXX-XXXX-XXXX-XXXX"}');
    const name = request.consoleAdmin!.name;
    if (!(await limited(request, reply, 'recovery_code'))) return reply;
    const ok = normalRecoveryCode(code) !== undefined && (await ctx.store.useRecoveryCode(name, recoveryCodeHash(name, code), ctx.now()));
    if (!ok) return failed(request, reply, 'recovery_code', 'wrong_or_used');
    await ctx.limiter.succeeded(name, ctx.clientIp(request));
    const left = await ctx.store.countRecoveryCodes(name);
    const answer = await completeSecondFactor(ctx, request, reply, 'recovery_code');
    ctx.audit.record({ actor: name, action: 'mfa.recovery_code.use', address: ctx.clientIp(request), outcome: 'ok', detail: { left } });
    return { ...answer, recoveryCodesLeft: left };
  });

  app.post(`${base}/api/mfa/totp/enrol`, { preHandler: requireStage('enrol', 'full'), bodyLimit: CODE_BODY_LIMIT }, async (request, reply) => {
    const name = request.consoleAdmin!.name;
    const secret = await newTotpSecret();
    if (!(await ctx.store.beginTotp(name, secret, ctx.now()))) return sendApiError(reply, 'invalid_input', 'TOTP is already enrolled: remove it first');
    const uri = await totpUri(issuer, name, secret);
    ctx.audit.record({ actor: name, action: 'mfa.totp.enrol', address: ctx.clientIp(request), outcome: 'ok', detail: { step: 'start' } });
    return { secret, uri, qr: await qrDataUrl(uri), digits: TOTP_DIGITS, period: TOTP_PERIOD_S };
  });

  app.post(`${base}/api/mfa/totp/confirm`, { preHandler: requireStage('enrol', 'full'), bodyLimit: CODE_BODY_LIMIT }, async (request, reply) => {
    const code = codeInput(request.body);
    if (code === undefined) return sendApiError(reply, 'invalid_input', 'the body must be {"code": "123456"}');
    const name = request.consoleAdmin!.name;
    const address = ctx.clientIp(request);
    const pending = await ctx.store.getTotp(name);
    if (pending === undefined || pending.confirmedAt > 0) return sendApiError(reply, 'invalid_input', 'no enrolment under way: start one first');
    const step = await checkTotp(pending.secret, code.trim(), ctx.now(), 0);
    const codes = newRecoveryCodes();
    if (step === undefined || !(await ctx.store.confirmTotp(name, pending.secret, step, codes.map((c) => recoveryCodeHash(name, c)), ctx.now()))) {
      ctx.audit.record({ actor: name, action: 'mfa.totp.enrol', address, outcome: 'failed', detail: { step: 'confirm' } });
      return sendApiError(reply, 'mfa_failed');
    }
    ctx.audit.record({ actor: name, action: 'mfa.totp.enrol', address, outcome: 'ok', detail: { step: 'confirm', recoveryCodes: codes.length } });
    if (request.consoleSession!.session.stage === 'full') return { recoveryCodes: codes };
    return { ...(await completeSecondFactor(ctx, request, reply, 'totp')), recoveryCodes: codes };
  });

  app.get(`${base}/api/mfa`, { preHandler: requireRole('viewer') }, async (request) => {
    const name = request.consoleAdmin!.name;
    const record = await ctx.store.getTotp(name);
    const enrolled = record !== undefined && record.confirmedAt > 0;
    return {
      totp: { enrolled, confirmedAt: enrolled ? record.confirmedAt : null, recoveryCodesLeft: enrolled ? await ctx.store.countRecoveryCodes(name) : 0 },
      required: request.server.heraldConsole.config.admin.console.mfa.require,
    };
  });

  app.delete(`${base}/api/mfa/totp`, { preHandler: requireRole('viewer'), bodyLimit: CODE_BODY_LIMIT }, async (request, reply) => {
    const code = codeInput(request.body);
    if (code === undefined) return sendApiError(reply, 'invalid_input', 'the body must be {"code": …}: a current TOTP code or a recovery code');
    const name = request.consoleAdmin!.name;
    const address = ctx.clientIp(request);
    const record = await ctx.store.getTotp(name);
    if (record === undefined || record.confirmedAt === 0) return sendApiError(reply, 'not_found', 'no TOTP enrolled');
    if (!(await limited(request, reply, 'totp'))) return reply;
    const step = await checkTotp(record.secret, code.trim(), ctx.now(), record.lastStep);
    const ok =
      (step !== undefined && (await ctx.store.acceptTotpStep(name, step))) ||
      (normalRecoveryCode(code) !== undefined && (await ctx.store.useRecoveryCode(name, recoveryCodeHash(name, code), ctx.now())));
    if (!ok) {
      ctx.audit.record({ actor: name, action: 'mfa.totp.remove', address, outcome: 'failed' });
      return sendApiError(reply, 'mfa_failed');
    }
    await ctx.limiter.succeeded(name, address);
    await ctx.store.deleteTotp(name);
    ctx.audit.record({ actor: name, action: 'mfa.totp.remove', address, outcome: 'ok' });
    return reply.code(204).send();
  });

  app.post(`${base}/api/admins/:name/reset-mfa`, { preHandler: requireRole('owner') }, async (request, reply) => {
    const name = (request.params as { name?: string }).name ?? '';
    if (!ADMIN_NAME_PATTERN.test(name)) return sendApiError(reply, 'invalid_input', 'name: not an admin name');
    if ((await ctx.store.getAdmin(name)) === undefined) return sendApiError(reply, 'not_found', `no admin named "${name}"`);
    const outcome = await resetMfa(ctx.store, name);
    ctx.audit.record({ actor: request.consoleAdmin!.name, action: 'mfa.reset', target: name, address: ctx.clientIp(request), outcome: 'ok', detail: { ...outcome } });
    return outcome;
  });
}
