/**
 * Passkeys (WebAuthn) of the console, under the base path B. Every
 * ceremony is verified by @simplewebauthn/server; nothing here parses
 * WebAuthn structures or checks signatures itself.
 *
 * - `GET B/api/login/passkey` (public) → `{enabled}`: whether the sign-in page offers passkeys.
 * - `POST B/api/login/passkey/options` (public, own Origin) → request options
 *   for a discoverable credential, user verification required. Without a
 *   session the challenge is bound to a fresh `__Host-herald_passkey`
 *   cookie (passwordless sign-in); on a session waiting for its second
 *   factor it is bound to that session and lists the admin's passkeys.
 * - `POST B/api/login/passkey/verify` `{response}` → the sign-in answer of
 *   sign-in.ts (a passkey sign-in satisfies MFA), or 401 `passkey_failed`
 *   with the reason in `detail`.
 * - `GET B/api/passkeys` → the admin's passkeys; `PATCH B/api/passkeys/:id`
 *   `{name}`; `DELETE B/api/passkeys/:id`.
 * - `POST B/api/passkeys/register/options` → creation options (resident
 *   key and user verification required; the admin's passkeys excluded);
 *   `POST B/api/passkeys/register/verify` `{name, response}` → the new passkey.
 *
 * Challenges are single use (taken from the store before anything is
 * checked, so a replay finds none), bound to the session or the pre-login
 * cookie that asked for them, and refused after `challengeTtlMs`. A sign-in
 * is refused for a passkey that is not stored (removed), one of another
 * admin than the session's, a user handle that is not the passkey's, a
 * signature counter that went back, and whatever the library refuses:
 * another origin, another RP id hash, missing UP or UV flags, a wrong
 * signature. Every registration, removal, rename and sign-in (ok or
 * failed) is in the audit log.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { AuthenticationResponseJSON, RegistrationResponseJSON } from '@simplewebauthn/server';
import { sendApiError } from '../transports/http-connection.ts';
import type { PasskeyChallenge, PasskeyPurpose, PasskeyRecord } from './admin-store.ts';
import { cookieOptions, requireRole, requireStage, type ConsoleContext } from './console-guard.ts';
import { sameOrigin } from './csrf.ts';
import type { PasskeySettings } from './passkey-config.ts';
import { passkeySecondFactorSession, finishPasskeySignIn, finishPasskeySecondFactor } from './passkey-sign-in.ts';

// @simplewebauthn/server (about 250 modules) loads at the first ceremony, not at start (docs/performance.md, footprint).
let simpleWebAuthn: Promise<typeof import('@simplewebauthn/server')> | undefined;
const webauthn = () => (simpleWebAuthn ??= import('@simplewebauthn/server'));

/** The cookie a passwordless sign-in's challenge is bound to (a random id; the store keeps its SHA-256). */
export const PASSKEY_COOKIE = '__Host-herald_passkey';

/** Registration answers carry an attestation (with certificates for some formats). */
export const PASSKEY_REGISTER_BODY_LIMIT = 65536;
export const PASSKEY_LOGIN_BODY_LIMIT = 16384;

/** Credential ids are at most 1023 bytes: 1364 base64url characters. */
const CREDENTIAL_ID = /^[A-Za-z0-9_-]{1,1364}$/;
const PASSKEY_COOKIE_VALUE = /^[A-Za-z0-9_-]{43}$/;
export const PASSKEY_NAME_MAX = 64;

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** A passkey as the console lists it (no key material). */
export function passkeyView(p: PasskeyRecord) {
  return { id: p.id, name: p.name, createdAt: p.createdAt, lastUsedAt: p.lastUsedAt, transports: p.transports };
}

function nameInput(value: unknown): string | { problem: string } {
  if (typeof value !== 'string') return { problem: 'name: a string is required' };
  const name = value.trim();
  if (name.length === 0 || [...name].length > PASSKEY_NAME_MAX) return { problem: `name: 1-${PASSKEY_NAME_MAX} characters` };
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return { problem: 'name: no control characters' };
  return name;
}

/** The body `{response, ...allowed}` as an object, or why not. */
function bodyWith(body: unknown, allowed: readonly string[]): Record<string, unknown> | string {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return `the body must be a JSON object {${['response', ...allowed].join(', ')}}`;
  const record = body as Record<string, unknown>;
  for (const key of Object.keys(record)) if (key !== 'response' && !allowed.includes(key)) return `unknown field "${key.slice(0, 32)}"`;
  const response = record['response'];
  if (typeof response !== 'object' || response === null || Array.isArray(response)) return 'response: the object navigator.credentials gave (as JSON) is required';
  const id = (response as Record<string, unknown>)['id'];
  if (typeof id !== 'string' || !CREDENTIAL_ID.test(id)) return 'response.id: a base64url credential id is required';
  return record;
}

function idParam(request: FastifyRequest, reply: FastifyReply): string | undefined {
  const id = (request.params as { id?: string }).id ?? '';
  if (CREDENTIAL_ID.test(id)) return id;
  sendApiError(reply, 'invalid_input', 'id: a base64url credential id');
  return undefined;
}

function reason(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).slice(0, 300);
}

export function registerPasskeyRoutes(app: FastifyInstance, ctx: ConsoleContext, settings: PasskeySettings | undefined): void {
  const base = ctx.basePath;

  function off(reply: FastifyReply): FastifyReply {
    return sendApiError(reply, 'not_found', 'passkeys are off: set admin.console.passkeys.rpId');
  }

  async function issue(key: string, purpose: PasskeyPurpose, challenge: string, admin: string | null, userHandle: string | null): Promise<number> {
    const now = ctx.now();
    const expiresAt = now + settings!.challengeTtlMs;
    await ctx.store.putPasskeyChallenge({ key, purpose, challenge, admin, userHandle, expiresAt }, now);
    return expiresAt;
  }

  /** The challenge of `key` for `purpose`, taken (single use), or why there is none in force. */
  async function take(key: string, purpose: PasskeyPurpose): Promise<PasskeyChallenge | string> {
    const challenge = await ctx.store.takePasskeyChallenge(key);
    if (challenge === undefined || challenge.purpose !== purpose) return 'no challenge in force: it was used already or never issued here';
    if (challenge.expiresAt <= ctx.now()) return 'the challenge expired';
    return challenge;
  }

  app.get(`${base}/api/login/passkey`, async () => ({ enabled: settings !== undefined }));

  // Sign-in: passwordless (no session) or the second factor of a session that waits for one.
  app.post(`${base}/api/login/passkey/options`, { bodyLimit: 1024 }, async (request, reply) => {
    if (!sameOrigin(ctx.origin, request.headers)) return sendApiError(reply, 'csrf_failed', 'Origin is not the console\'s own origin');
    if (settings === undefined) return off(reply);
    const partial = await passkeySecondFactorSession(ctx, request, reply);
    if (partial === 'refused') return reply;
    if (partial !== undefined) {
      const passkeys = await ctx.store.listPasskeys(partial.admin.name);
      if (passkeys.length === 0) return sendApiError(reply, 'invalid_input', 'this admin has no passkey');
      const options = await (await webauthn()).generateAuthenticationOptions({
        rpID: settings.rpId,
        userVerification: 'required',
        timeout: settings.challengeTtlMs,
        allowCredentials: passkeys.map((p) => ({ id: p.id, transports: [...p.transports] })),
      });
      const expiresAt = await issue(`second_factor:${partial.session.idHash}`, 'second_factor', options.challenge, partial.admin.name, null);
      return { options, expiresAt };
    }
    const options = await (await webauthn()).generateAuthenticationOptions({ rpID: settings.rpId, userVerification: 'required', timeout: settings.challengeTtlMs });
    const binding = randomBytes(32).toString('base64url');
    const expiresAt = await issue(`login:${sha256(binding)}`, 'login', options.challenge, null, null);
    reply.setCookie(PASSKEY_COOKIE, binding, { ...cookieOptions, maxAge: Math.ceil(settings.challengeTtlMs / 1000) });
    return { options, expiresAt };
  });

  app.post(`${base}/api/login/passkey/verify`, { bodyLimit: PASSKEY_LOGIN_BODY_LIMIT }, async (request, reply) => {
    if (!sameOrigin(ctx.origin, request.headers)) return sendApiError(reply, 'csrf_failed', 'Origin is not the console\'s own origin');
    if (settings === undefined) return off(reply);
    const body = bodyWith(request.body, []);
    if (typeof body === 'string') return sendApiError(reply, 'invalid_input', body);
    const response = body['response'] as AuthenticationResponseJSON;
    const address = ctx.clientIp(request);
    const partial = await passkeySecondFactorSession(ctx, request, reply);
    if (partial === 'refused') return reply;
    let challenge: PasskeyChallenge | string;
    if (partial !== undefined) {
      challenge = await take(`second_factor:${partial.session.idHash}`, 'second_factor');
    } else {
      const binding = request.cookies[PASSKEY_COOKIE];
      reply.clearCookie(PASSKEY_COOKIE, cookieOptions);
      challenge = binding !== undefined && PASSKEY_COOKIE_VALUE.test(binding) ? await take(`login:${sha256(binding)}`, 'login') : 'no challenge in force: the sign-in was not started in this browser';
    }
    const fail = (why: string, actor: string, passkey?: PasskeyRecord): FastifyReply => {
      ctx.countLogin('failed');
      ctx.audit.record({
        actor,
        action: 'console.login',
        address,
        outcome: 'failed',
        detail: { method: 'passkey', ...(partial === undefined ? {} : { factor: 'second' }), reason: why, credential: response.id.slice(0, 16), ...(passkey === undefined ? {} : { passkey: passkey.name }) },
      });
      return sendApiError(reply, 'passkey_failed', why);
    };
    const claimed = partial?.admin.name ?? 'unknown';
    if (typeof challenge === 'string') return fail(challenge, claimed);
    const passkey = await ctx.store.getPasskey(response.id);
    if (passkey === undefined) return fail('no such passkey: it was removed, or never registered here', claimed);
    if (challenge.admin !== null && passkey.admin !== challenge.admin) return fail('the passkey belongs to another admin', claimed, passkey);
    const userHandle = response.response?.userHandle;
    if (partial === undefined && userHandle === undefined) return fail('no user handle: not a discoverable credential', passkey.admin, passkey);
    if (userHandle !== undefined && userHandle !== passkey.userHandle) return fail('the user handle is not the passkey\'s admin', passkey.admin, passkey);
    let newCounter: number;
    try {
      const verified = await (await webauthn()).verifyAuthenticationResponse({
        response,
        expectedChallenge: challenge.challenge,
        expectedOrigin: [...settings.origins],
        expectedRPID: settings.rpId,
        expectedType: 'webauthn.get',
        requireUserVerification: true,
        credential: { id: passkey.id, publicKey: new Uint8Array(Buffer.from(passkey.publicKey, 'base64url')), counter: passkey.counter, transports: [...passkey.transports] },
      });
      if (!verified.verified) return fail('the signature does not verify', passkey.admin, passkey);
      newCounter = verified.authenticationInfo.newCounter;
    } catch (error) {
      return fail(reason(error), passkey.admin, passkey);
    }
    // Atomic with the counter check: of two sign-ins with the same counter value only one passes.
    if (!(await ctx.store.usePasskey(passkey.id, newCounter, ctx.now()))) return fail('the signature counter went back (a cloned authenticator?), or the passkey was removed', passkey.admin, passkey);
    const admin = await ctx.store.getAdmin(passkey.admin);
    if (admin === undefined || admin.disabled) return fail('the admin is disabled or gone', passkey.admin, passkey);
    if (partial !== undefined) return finishPasskeySecondFactor(ctx, request, reply);
    return finishPasskeySignIn(ctx, request, reply, admin);
  });

  // Registration and management: the signed-in admin's own passkeys.
  // A session at the 'enrol' stage may register its first passkey (which completes its sign-in).
  app.post(`${base}/api/passkeys/register/options`, { preHandler: requireStage('full', 'enrol'), bodyLimit: 1024 }, async (request, reply) => {
    if (settings === undefined) return off(reply);
    const live = request.consoleSession!;
    const existing = await ctx.store.listPasskeys(live.admin.name);
    const userHandle = existing[0]?.userHandle ?? randomBytes(32).toString('base64url');
    const options = await (await webauthn()).generateRegistrationOptions({
      rpName: settings.rpName,
      rpID: settings.rpId,
      userName: live.admin.name,
      userDisplayName: live.admin.name,
      userID: new Uint8Array(Buffer.from(userHandle, 'base64url')),
      timeout: settings.challengeTtlMs,
      attestationType: 'none',
      excludeCredentials: existing.map((p) => ({ id: p.id, transports: [...p.transports] })),
      authenticatorSelection: { residentKey: 'required', requireResidentKey: true, userVerification: 'required' },
    });
    const expiresAt = await issue(`register:${live.session.idHash}`, 'register', options.challenge, live.admin.name, userHandle);
    return { options, expiresAt };
  });

  app.post(`${base}/api/passkeys/register/verify`, { preHandler: requireStage('full', 'enrol'), bodyLimit: PASSKEY_REGISTER_BODY_LIMIT }, async (request, reply) => {
    if (settings === undefined) return off(reply);
    const live = request.consoleSession!;
    const body = bodyWith(request.body, ['name']);
    if (typeof body === 'string') return sendApiError(reply, 'invalid_input', body);
    const count = await ctx.store.countPasskeys(live.admin.name);
    const name = body['name'] === undefined ? `Passkey ${count + 1}` : nameInput(body['name']);
    if (typeof name !== 'string') return sendApiError(reply, 'invalid_input', name.problem);
    const address = ctx.clientIp(request);
    const refuse = (why: string): FastifyReply => {
      ctx.audit.record({ actor: live.admin.name, action: 'passkey.register', address, outcome: 'failed', detail: { reason: why } });
      return sendApiError(reply, 'passkey_failed', why);
    };
    const challenge = await take(`register:${live.session.idHash}`, 'register');
    if (typeof challenge === 'string') return refuse(challenge);
    if (challenge.admin !== live.admin.name || challenge.userHandle === null) return refuse('the challenge was issued to another admin');
    let record: PasskeyRecord;
    try {
      const verified = await (await webauthn()).verifyRegistrationResponse({
        response: body['response'] as RegistrationResponseJSON,
        expectedChallenge: challenge.challenge,
        expectedOrigin: [...settings.origins],
        expectedRPID: settings.rpId,
        expectedType: 'webauthn.create',
        requireUserPresence: true,
        requireUserVerification: true,
      });
      if (!verified.verified) return refuse('the attestation does not verify');
      const { credential } = verified.registrationInfo;
      record = {
        id: credential.id,
        admin: live.admin.name,
        publicKey: Buffer.from(credential.publicKey).toString('base64url'),
        counter: credential.counter,
        transports: (credential.transports ?? []).filter((t) => typeof t === 'string').slice(0, 8),
        name,
        userHandle: challenge.userHandle,
        createdAt: ctx.now(),
        lastUsedAt: null,
      };
    } catch (error) {
      return refuse(reason(error));
    }
    if (!(await ctx.store.addPasskey(record))) return refuse('this passkey is registered already');
    ctx.audit.record({ actor: live.admin.name, action: 'passkey.register', target: record.name, address, outcome: 'ok', detail: { credential: record.id.slice(0, 16), stage: live.session.stage } });
    if (live.session.stage === 'enrol') {
      // Enrolment done: the session becomes a full one (new id), as after any second factor.
      const signedIn = await finishPasskeySecondFactor(ctx, request, reply);
      return reply.code(201).send({ passkey: passkeyView(record), session: signedIn });
    }
    return reply.code(201).send({ passkey: passkeyView(record) });
  });

  app.get(`${base}/api/passkeys`, { preHandler: requireRole('viewer') }, async (request) => ({
    enabled: settings !== undefined,
    passkeys: (await ctx.store.listPasskeys(request.consoleAdmin!.name)).map(passkeyView),
  }));

  app.patch(`${base}/api/passkeys/:id`, { preHandler: requireRole('viewer'), bodyLimit: 1024 }, async (request, reply) => {
    const id = idParam(request, reply);
    if (id === undefined) return reply;
    const body = request.body as Record<string, unknown> | null;
    if (typeof body !== 'object' || body === null || Array.isArray(body) || Object.keys(body).some((k) => k !== 'name')) return sendApiError(reply, 'invalid_input', 'the body must be a JSON object {name}');
    const name = nameInput(body['name']);
    if (typeof name !== 'string') return sendApiError(reply, 'invalid_input', name.problem);
    const admin = request.consoleAdmin!.name;
    if (!(await ctx.store.renamePasskey(admin, id, name))) return sendApiError(reply, 'not_found', 'you have no passkey with this id');
    ctx.audit.record({ actor: admin, action: 'passkey.rename', target: name, address: ctx.clientIp(request), outcome: 'ok', detail: { credential: id.slice(0, 16) } });
    return reply.code(204).send();
  });

  app.delete(`${base}/api/passkeys/:id`, { preHandler: requireRole('viewer') }, async (request, reply) => {
    const id = idParam(request, reply);
    if (id === undefined) return reply;
    const admin = request.consoleAdmin!.name;
    const found = await ctx.store.getPasskey(id);
    if (found === undefined || found.admin !== admin || !(await ctx.store.deletePasskey(admin, id))) return sendApiError(reply, 'not_found', 'you have no passkey with this id');
    ctx.audit.record({ actor: admin, action: 'passkey.remove', target: found.name, address: ctx.clientIp(request), outcome: 'ok', detail: { credential: id.slice(0, 16) } });
    return reply.code(204).send();
  });
}
