/**
 * OpenID Connect sign-in routes of the console, under the base path B:
 * - `GET B/api/oidc/providers` (public) → `{providers: [{id, label, start}]}`
 *   for the sign-in page's buttons.
 * - `GET B/oidc/:provider/start` → 303 to the provider's authorization
 *   endpoint (code flow, PKCE S256, a new `state` and `nonce`), and the
 *   flow cookie `__Host-herald_oidc` (HttpOnly, Secure, SameSite=Lax: it
 *   must come back on the provider's top-level redirect).
 * - `GET B/oidc/:provider/callback` → the code exchanged, the ID token
 *   verified, the role mapped, the admin found (or made), a session started
 *   (console/sign-in.ts: the second factor follows unless the provider is
 *   trusted for MFA and says so in `amr`) and 303 to `B/`; any failure: 303
 *   to the refusal page `B/#/signin-refused?reason=…` and an audit entry.
 * - `POST B/api/oidc/logout` (any stage) → ends the session like `POST
 *   B/api/logout` and answers `{endSessionUrl}`: the provider's logout page
 *   when the session came from a provider that has one, else null.
 *
 * Bounds: a client address starts at most
 * `admin.console.oidc.startsPerAddressPerMinute` sign-ins a minute (per
 * worker), and the store keeps at most `maxPendingFlows` pending ones in
 * all; past either a start answers 429 `too_many_requests` with
 * Retry-After and writes nothing.
 *
 * Guarantees: `state` is single use and bound to the browser that started
 * (the store keeps the flow under the state's hash with the hash of the
 * flow cookie; the callback takes it out, so a replayed or foreign callback
 * finds nothing); the flow lives `admin.console.oidc.flowTimeoutMs`. The
 * code is exchanged only with the PKCE verifier of that flow, and the ID
 * token must carry that flow's nonce.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Configuration } from 'openid-client';
import { RateLimit } from '../api/rate-limits.ts';
import { limitKey } from '../edge/client-address.ts';
import { sendApiError } from '../transports/http-connection.ts';
import type { AdminRecord } from './admin-store.ts';
import { clearSessionCookie, requireSession, type ConsoleContext } from './console-guard.ts';
import { adminNameCandidates, failureOf, loadOpenidClient, mapRole, mfaAsserted, OidcProvider, sha256Hex, type OidcFailure, type PreparedOidcProvider } from './oidc.ts';
import { startSession } from './sign-in.ts';

export const OIDC_FLOW_COOKIE = '__Host-herald_oidc';

const flowCookieOptions = { path: '/', httpOnly: true, secure: true, sameSite: 'lax' } as const;

/** The longest `state` read from a callback (ours are 43 characters). */
const MAX_STATE_CHARS = 512;

/** Retry-After (seconds) when the store holds `maxPendingFlows`: pending flows leave as they return or expire. */
const FULL_RETRY_AFTER_S = 60;

/** Refusals that are a decision about the user rather than a broken or hostile flow. */
const DENIALS: ReadonlySet<OidcFailure> = new Set(['not_mapped', 'disabled', 'name_taken']);

function hostForUrl(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function registerOidcRoutes(app: FastifyInstance, ctx: ConsoleContext, prepared: readonly PreparedOidcProvider[]): void {
  const base = ctx.basePath;
  const { flowTimeoutMs, startsPerAddressPerMinute, maxPendingFlows } = ctx.config.admin.console.oidc;
  const startLimit = new RateLimit(startsPerAddressPerMinute);
  const providers = new Map(prepared.map((p) => [p.config.id, new OidcProvider(p)]));

  /** The console's origin from the config, or (loopback admin.host) the listener's own address: never the request's Host. */
  function origin(request: FastifyRequest): string {
    return ctx.config.admin.console.origin ?? `${ctx.origin.tls ? 'https' : 'http'}://${hostForUrl(ctx.config.admin.host)}:${request.raw.socket.localPort ?? ctx.config.admin.port}`;
  }
  const redirectUri = (request: FastifyRequest, id: string) => `${origin(request)}${base}/oidc/${id}/callback`;

  function providerOf(request: FastifyRequest, reply: FastifyReply): OidcProvider | undefined {
    const provider = providers.get((request.params as { provider?: string }).provider ?? '');
    if (provider === undefined) sendApiError(reply, 'not_found', 'no such OIDC provider');
    return provider;
  }

  function refuse(request: FastifyRequest, reply: FastifyReply, provider: OidcProvider, reason: OidcFailure, detail: Record<string, unknown> = {}): FastifyReply {
    ctx.countLogin('failed');
    ctx.audit.record({
      actor: typeof detail['subject'] === 'string' ? `${provider.id}:${detail['subject']}` : `oidc:${provider.id}`,
      action: 'oidc.login',
      address: ctx.clientIp(request),
      outcome: DENIALS.has(reason) ? 'denied' : 'failed',
      detail: { provider: provider.id, reason, ...detail },
    });
    reply.clearCookie(OIDC_FLOW_COOKIE, flowCookieOptions);
    return reply.redirect(`${base}/#/signin-refused?reason=${reason}&provider=${encodeURIComponent(provider.id)}`, 303);
  }

  async function discovered(request: FastifyRequest, provider: OidcProvider): Promise<Configuration | undefined> {
    try {
      return await provider.configuration(ctx.now());
    } catch (error) {
      request.log.warn({ err: error, provider: provider.id }, 'OIDC provider discovery failed');
      return undefined;
    }
  }

  app.get(`${base}/api/oidc/providers`, async () => ({
    providers: [...providers.values()].map((p) => ({ id: p.id, label: p.label, start: `${base}/oidc/${p.id}/start` })),
  }));

  app.get(`${base}/oidc/:provider/start`, async (request, reply) => {
    // Counted per worker, before anything else: a flood costs no discovery and no store write.
    const wait = await startLimit.hit(limitKey(ctx.clientIp(request)));
    if (wait !== undefined) return sendApiError(reply.header('retry-after', String(wait)), 'too_many_requests', 'too many sign-ins started from this address');
    const provider = providerOf(request, reply);
    if (provider === undefined) return reply;
    const configuration = await discovered(request, provider);
    if (configuration === undefined) return refuse(request, reply, provider, 'provider_unreachable');
    const client = await loadOpenidClient();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const codeVerifier = client.randomPKCECodeVerifier();
    const binding = randomBytes(32).toString('base64url');
    const now = ctx.now();
    const kept = await ctx.store.putOidcFlow({ stateHash: sha256Hex(state), provider: provider.id, nonce, codeVerifier, bindingHash: sha256Hex(binding), expiresAt: now + flowTimeoutMs }, now, maxPendingFlows);
    if (!kept) {
      request.log.warn({ provider: provider.id, maxPendingFlows }, 'OIDC start refused: the store holds admin.console.oidc.maxPendingFlows pending sign-ins');
      return sendApiError(reply.header('retry-after', String(FULL_RETRY_AFTER_S)), 'too_many_requests', 'too many sign-ins are pending');
    }
    reply.setCookie(OIDC_FLOW_COOKIE, binding, { ...flowCookieOptions, maxAge: Math.ceil(flowTimeoutMs / 1000) });
    const url = client.buildAuthorizationUrl(configuration, {
      redirect_uri: redirectUri(request, provider.id),
      scope: provider.prepared.config.scopes.join(' '),
      code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    return reply.redirect(url.href, 303);
  });

  app.get(`${base}/oidc/:provider/callback`, async (request, reply) => {
    const provider = providerOf(request, reply);
    if (provider === undefined) return reply;
    const rawUrl = request.raw.url ?? '';
    const query = rawUrl.includes('?') ? rawUrl.slice(rawUrl.indexOf('?') + 1) : '';
    const params = new URLSearchParams(query);
    const state = params.get('state');
    if (state === null || state.length > MAX_STATE_CHARS) return refuse(request, reply, provider, 'state', { detail: 'no state' });
    // Single use: the flow is taken out of the store whatever follows.
    const flow = await ctx.store.takeOidcFlow(sha256Hex(state), ctx.now());
    const binding = request.cookies[OIDC_FLOW_COOKIE];
    if (flow === undefined || flow.provider !== provider.id) return refuse(request, reply, provider, 'state', { detail: 'unknown, used or expired state' });
    if (binding === undefined || !sameHash(sha256Hex(binding), flow.bindingHash)) return refuse(request, reply, provider, 'state', { detail: 'started in another browser' });
    if (params.has('error')) return refuse(request, reply, provider, 'provider_error', { error: (params.get('error') ?? '').slice(0, 64) });
    const configuration = await discovered(request, provider);
    if (configuration === undefined) return refuse(request, reply, provider, 'provider_unreachable');
    const client = await loadOpenidClient();

    let claims: Record<string, unknown>;
    try {
      const tokens = await client.authorizationCodeGrant(configuration, new URL(`${redirectUri(request, provider.id)}?${query}`), {
        pkceCodeVerifier: flow.codeVerifier,
        expectedState: state,
        expectedNonce: flow.nonce,
        idTokenExpected: true,
      });
      const idToken = tokens.claims();
      if (idToken === undefined) return refuse(request, reply, provider, 'id_token_invalid', { error: 'no ID token' });
      claims = idToken as unknown as Record<string, unknown>;
    } catch (error) {
      const reason = failureOf(error);
      request.log.warn({ err: error, provider: provider.id, reason }, 'OIDC sign-in refused');
      return refuse(request, reply, provider, reason, { error: String((error as Error).message ?? error).slice(0, 200) });
    }

    const config = provider.prepared.config;
    const subject = String(claims['sub']);
    const who = { subject, ...(typeof claims['email'] === 'string' ? { email: claims['email'] } : {}) };
    const role = mapRole(config, claims);
    if (role === undefined) return refuse(request, reply, provider, 'not_mapped', who);

    let admin: AdminRecord | undefined;
    const link = await ctx.store.getOidcLink(provider.id, subject);
    if (link !== undefined) {
      admin = await ctx.store.getAdmin(link.admin);
      if (admin === undefined || admin.disabled) return refuse(request, reply, provider, 'disabled', { ...who, admin: link.admin });
      if (admin.role !== role) {
        const from = admin.role;
        admin = (await ctx.store.updateAdmin(admin.name, { role }, ctx.now())) ?? admin;
        // As for any role change: the admin's other sessions end.
        const ended = await ctx.sessions.endAll(admin.name);
        ctx.audit.record({ actor: 'herald', action: 'admin.role', target: admin.name, address: ctx.clientIp(request), outcome: 'ok', detail: { from, to: role, sessionsEnded: ended, via: 'oidc', provider: provider.id } });
      }
    } else {
      for (const name of adminNameCandidates(config, claims)) {
        admin = await ctx.store.createOidcAdmin({ name, role, provider: provider.id, subject, now: ctx.now() });
        if (admin !== undefined) {
          ctx.audit.record({ actor: 'herald', action: 'admin.create', target: admin.name, address: ctx.clientIp(request), outcome: 'ok', detail: { role, via: 'oidc', provider: provider.id, subject } });
          break;
        }
        // A first sign-in of the same subject running beside this one may have linked it meanwhile.
        const raced = await ctx.store.getOidcLink(provider.id, subject);
        if (raced !== undefined) {
          admin = await ctx.store.getAdmin(raced.admin);
          break;
        }
      }
      if (admin === undefined) return refuse(request, reply, provider, 'name_taken', who);
    }

    reply.clearCookie(OIDC_FLOW_COOKIE, flowCookieOptions);
    const mfa = mfaAsserted(config, claims);
    const answer = await startSession(ctx, request, reply, admin, 'oidc', { mfaSatisfied: mfa });
    ctx.audit.record({ actor: admin.name, action: 'oidc.login', address: ctx.clientIp(request), outcome: 'ok', detail: { provider: provider.id, subject, role, mfa, stage: answer.stage } });
    return reply.redirect(`${base}/`, 303);
  });

  app.post(`${base}/api/oidc/logout`, { preHandler: requireSession() }, async (request, reply) => {
    const live = request.consoleSession!;
    await ctx.sessions.end(live.id);
    clearSessionCookie(reply);
    ctx.audit.record({ actor: live.admin.name, action: 'console.logout', address: ctx.clientIp(request), outcome: 'ok' });
    let endSessionUrl: string | null = null;
    // Only a session that came from a provider is offered that provider's logout.
    const links = live.session.methods.includes('oidc') ? await ctx.store.oidcLinksOf(live.admin.name) : [];
    for (const link of links) {
      const provider = providers.get(link.provider);
      const configuration = provider === undefined ? undefined : await discovered(request, provider);
      const url = configuration === undefined ? undefined : await provider!.endSessionUrl(configuration, `${origin(request)}${base}/`);
      if (url !== undefined) {
        endSessionUrl = url;
        break;
      }
    }
    return { endSessionUrl };
  });
}
