/**
 * OpenID Connect single sign-on for the console: the providers of
 * `admin.console.oidc.providers`, checked at start, and everything the
 * routes (oidc-routes.ts) ask of them. The protocol is openid-client's
 * (discovery, the authorization code flow with PKCE, the token request, the
 * ID token's signature from the provider's JWKS, issuer, audience, expiry
 * and nonce); nothing here parses or verifies a token itself.
 *
 * Guarantees:
 * - Every URL Herald fetches comes from the config: the issuer names the
 *   discovery document, which names the other endpoints and the JWKS. No
 *   part of a request ever becomes a URL (SECURITY-TESTS 39). Redirects are
 *   never followed; each fetch has a timeout and a size cap; every endpoint
 *   is https (http only for a loopback issuer explicitly allowed).
 * - Who may sign in, and with which role, comes only from the provider's
 *   rules (`roles`, first match wins); no match is a refusal, never an
 *   account. An admin made at first sign-in gets exactly the mapped role
 *   (never promoted to owner as the store's first admin would be).
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as client from 'openid-client';
import { Agent, fetch as undiciFetch } from 'undici';
import type { Config, OidcProviderConfig } from '../config/schema.ts';
import { ADMIN_NAME_PATTERN, type AdminRole } from './admin-store.ts';
import { isLoopbackHost } from './console-config.ts';

/** A provider's config with its client secret and CA read. */
export interface PreparedOidcProvider {
  readonly config: OidcProviderConfig;
  readonly clientSecret: string;
  /** PEM of `caFile`, when set. */
  readonly ca: string | undefined;
}

/** Longest answer read from a provider (discovery document, JWKS, token response). */
export const MAX_PROVIDER_RESPONSE_BYTES = 1 << 20;

/** Each request to a provider must be answered within this. */
export const PROVIDER_TIMEOUT_MS = 10_000;

/** A discovery that failed is tried again after this long at the earliest. */
export const REDISCOVER_AFTER_MS = 5_000;

function plainHttpAllowed(provider: OidcProviderConfig, url: URL): boolean {
  return url.protocol === 'http:' && provider.allowPlainHttpLoopback && isLoopbackHost(url.hostname);
}

/** What is wrong with a URL a provider's config or metadata names, or undefined. */
export function providerUrlProblem(provider: OidcProviderConfig, text: string): string | undefined {
  if (!URL.canParse(text)) return 'not a URL';
  const url = new URL(text);
  if (url.username !== '' || url.password !== '') return 'a URL with a user name or password';
  if (url.protocol === 'https:') return undefined;
  if (url.protocol !== 'http:') return `a ${url.protocol} URL`;
  if (plainHttpAllowed(provider, url)) return undefined;
  return isLoopbackHost(url.hostname)
    ? 'plain http (set allowPlainHttpLoopback to allow it on loopback)'
    : 'plain http to a host that is not loopback (https is required)';
}

/**
 * Reads each provider's client secret (file or environment) and CA, and
 * checks what the schema cannot; every problem is added to `problems` (never
 * a secret). Called by the start-time checks (app/preflight.ts).
 */
export function prepareOidcProviders(config: Config, env: Readonly<Record<string, string | undefined>>, problems: string[]): PreparedOidcProvider[] {
  const c = config.admin.console;
  const prepared: PreparedOidcProvider[] = [];
  if (c.oidc.providers.length > 0 && c.origin === undefined && !isLoopbackHost(config.admin.host)) {
    problems.push(
      `/admin/console/origin: OIDC sign-in needs the console's origin as browsers see it (e.g. "https://herald-admin.example.com"): the redirect URL registered at each provider is made from it (ORIGIN${c.basePath}/oidc/ID/callback)`,
    );
  }
  const ids = new Set<string>();
  c.oidc.providers.forEach((provider, i) => {
    const where = `/admin/console/oidc/providers/${i}`;
    if (ids.has(provider.id)) problems.push(`${where}/id: "${provider.id}" is used by another provider; give each its own id`);
    ids.add(provider.id);
    const issuerProblem = providerUrlProblem(provider, provider.issuer);
    if (issuerProblem !== undefined) problems.push(`${where}/issuer: ${issuerProblem}`);
    if (!provider.scopes.includes('openid')) problems.push(`${where}/scopes: must include "openid"`);
    provider.roles.forEach((rule, j) => {
      const matchers = [rule.subject, rule.email, rule.emailDomain, rule.group].filter((m) => m !== undefined).length;
      if (matchers !== 1) problems.push(`${where}/roles/${j}: give exactly one of subject, email, emailDomain, group (this rule has ${matchers})`);
    });
    let ca: string | undefined;
    if (provider.caFile !== undefined) {
      try {
        ca = readFileSync(provider.caFile, 'utf8');
      } catch (error) {
        problems.push(`${where}/caFile: cannot read ${provider.caFile} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
      }
    }
    let secret: string | undefined;
    if ((provider.clientSecretFile === undefined) === (provider.clientSecretEnv === undefined)) {
      problems.push(`${where}: set exactly one of clientSecretFile and clientSecretEnv (the client secret is never written in the config file)`);
    } else if (provider.clientSecretFile !== undefined) {
      try {
        secret = readFileSync(provider.clientSecretFile, 'utf8').trim();
      } catch (error) {
        problems.push(`${where}/clientSecretFile: cannot read ${provider.clientSecretFile} (${(error as NodeJS.ErrnoException).code ?? 'error'}); check the path and the file's owner and mode`);
      }
      if (secret === '') problems.push(`${where}/clientSecretFile: ${provider.clientSecretFile} is empty`);
    } else {
      secret = env[provider.clientSecretEnv!]?.trim();
      if (secret === undefined || secret === '') problems.push(`${where}/clientSecretEnv: the environment variable ${provider.clientSecretEnv} is not set`);
    }
    if (secret !== undefined && secret !== '') prepared.push({ config: provider, clientSecret: secret, ca });
  });
  return prepared;
}

/** The role the first matching rule gives, or undefined: not allowed in. */
export function mapRole(provider: OidcProviderConfig, claims: Readonly<Record<string, unknown>>): AdminRole | undefined {
  const subject = typeof claims['sub'] === 'string' ? claims['sub'] : undefined;
  const rawEmail = typeof claims['email'] === 'string' ? claims['email'].toLowerCase() : undefined;
  const email = rawEmail !== undefined && (!provider.requireVerifiedEmail || claims['email_verified'] === true) ? rawEmail : undefined;
  const rawGroups = claims[provider.groupsClaim];
  const groups = Array.isArray(rawGroups) ? rawGroups.filter((g): g is string => typeof g === 'string') : typeof rawGroups === 'string' ? [rawGroups] : [];
  for (const rule of provider.roles) {
    if (rule.subject !== undefined && subject === rule.subject) return rule.role;
    if (rule.email !== undefined && email !== undefined && email === rule.email.toLowerCase()) return rule.role;
    if (rule.emailDomain !== undefined && email !== undefined && email.slice(email.lastIndexOf('@') + 1) === rule.emailDomain.toLowerCase()) return rule.role;
    if (rule.group !== undefined && groups.includes(rule.group)) return rule.role;
  }
  return undefined;
}

/** Whether the ID token's `amr` counts as the second factor for this provider. */
export function mfaAsserted(provider: OidcProviderConfig, claims: Readonly<Record<string, unknown>>): boolean {
  const amr = claims['amr'];
  return provider.trustAmrForMfa && Array.isArray(amr) && amr.some((value) => typeof value === 'string' && provider.mfaAmrValues.includes(value));
}

/** Names to try, in order, for the admin made at a subject's first sign-in. */
export function adminNameCandidates(provider: OidcProviderConfig, claims: Readonly<Record<string, unknown>>): string[] {
  const subject = String(claims['sub']);
  const raw = claims[provider.nameClaim];
  let base = (typeof raw === 'string' ? raw : subject).replace(/[^A-Za-z0-9_.@-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64);
  if (!ADMIN_NAME_PATTERN.test(base)) base = `${provider.id}-${createHash('sha256').update(subject).digest('hex').slice(0, 16)}`;
  const tagged = (suffix: string) => `${base.slice(0, 64 - suffix.length)}${suffix}`;
  return [base, tagged(`.${provider.id}`), ...[2, 3, 4, 5].map((n) => tagged(`.${provider.id}-${n}`))].filter((name, i, all) => ADMIN_NAME_PATTERN.test(name) && all.indexOf(name) === i);
}

/** Why a callback failed, for the audit log and the refusal page (`#/signin-refused?reason=`). */
export type OidcFailure =
  | 'provider_error'
  | 'state'
  | 'code_rejected'
  | 'nonce'
  | 'id_token_expired'
  | 'id_token_invalid'
  | 'provider_unreachable'
  | 'not_mapped'
  | 'disabled'
  | 'name_taken';

/** The reason an openid-client error stands for (its cause chain names the claim that failed). */
export function failureOf(error: unknown): OidcFailure {
  if (error instanceof client.ResponseBodyError) return 'code_rejected';
  if (error instanceof client.AuthorizationResponseError) return 'provider_error';
  let claim: unknown;
  const messages: string[] = [];
  let cursor: unknown = error;
  for (let depth = 0; depth < 5 && typeof cursor === 'object' && cursor !== null; depth++) {
    const level = cursor as { claim?: unknown; message?: unknown; cause?: unknown };
    claim ??= level.claim;
    if (typeof level.message === 'string') messages.push(level.message);
    cursor = level.cause;
  }
  const text = messages.join(' ');
  if (claim === 'nonce' || /"nonce"/.test(text)) return 'nonce';
  if (claim === 'exp' || /"exp"/.test(text)) return 'id_token_expired';
  if (claim === 'state' || /"state"/.test(text)) return 'state';
  if (error instanceof TypeError || /fetch failed|aborted|timed? ?out|ECONNREFUSED|larger than/i.test(text)) return 'provider_unreachable';
  return 'id_token_invalid';
}

/**
 * fetch for one provider: its CA, no redirects followed (a 3xx is an error
 * to openid-client), PROVIDER_TIMEOUT_MS, and answers cut at
 * MAX_PROVIDER_RESPONSE_BYTES.
 */
function providerFetch(ca: string | undefined): client.CustomFetch {
  const dispatcher = new Agent({ connect: ca === undefined ? {} : { ca }, headersTimeout: PROVIDER_TIMEOUT_MS, bodyTimeout: PROVIDER_TIMEOUT_MS });
  return async (url, options) => {
    const timeout = AbortSignal.timeout(PROVIDER_TIMEOUT_MS);
    const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
    const response = await undiciFetch(url, {
      method: options.method,
      headers: options.headers as Record<string, string>,
      body: options.body as string | undefined,
      redirect: 'manual',
      signal,
      dispatcher,
    });
    const declared = Number(response.headers.get('content-length') ?? '0');
    if (declared > MAX_PROVIDER_RESPONSE_BYTES) {
      await response.body?.cancel();
      throw new Error(`answer of ${new URL(url).origin} larger than ${MAX_PROVIDER_RESPONSE_BYTES} bytes`);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    if (response.body !== null) {
      for await (const chunk of response.body) {
        size += chunk.byteLength;
        if (size > MAX_PROVIDER_RESPONSE_BYTES) throw new Error(`answer of ${new URL(url).origin} larger than ${MAX_PROVIDER_RESPONSE_BYTES} bytes`);
        chunks.push(chunk);
      }
    }
    const empty = response.status === 204 || response.status === 304 || (response.status >= 100 && response.status < 200);
    return new Response(empty ? null : Buffer.concat(chunks), { status: response.status, statusText: response.statusText, headers: response.headers as unknown as Headers });
  };
}

/** One provider at run time: its discovered metadata (fetched at first use, kept), and the flow's steps. */
export class OidcProvider {
  readonly prepared: PreparedOidcProvider;
  readonly #fetch: client.CustomFetch;
  #discovered: Promise<client.Configuration> | undefined;
  #failedAt = 0;

  constructor(prepared: PreparedOidcProvider) {
    this.prepared = prepared;
    this.#fetch = providerFetch(prepared.ca);
  }

  get id(): string {
    return this.prepared.config.id;
  }

  get label(): string {
    return this.prepared.config.label;
  }

  /** The provider's metadata and client configuration; discovery runs at first use and again after a failure. */
  configuration(now: number): Promise<client.Configuration> {
    if (this.#discovered !== undefined) return this.#discovered;
    if (now - this.#failedAt < REDISCOVER_AFTER_MS) return Promise.reject(new Error('the provider\'s discovery failed a moment ago'));
    const provider = this.prepared.config;
    const issuer = new URL(provider.issuer);
    const execute = plainHttpAllowed(provider, issuer) ? [client.allowInsecureRequests] : [];
    const discovered = client
      .discovery(issuer, provider.clientId, undefined, client.ClientSecretBasic(this.prepared.clientSecret), { [client.customFetch]: this.#fetch, execute, timeout: PROVIDER_TIMEOUT_MS / 1000 })
      .then((configuration) => {
        const metadata = configuration.serverMetadata();
        for (const key of ['authorization_endpoint', 'token_endpoint', 'jwks_uri', 'userinfo_endpoint', 'end_session_endpoint'] as const) {
          const value = metadata[key];
          if (value === undefined) continue;
          const problem = providerUrlProblem(provider, String(value));
          if (problem !== undefined) throw new Error(`the provider's ${key} is ${problem}`);
        }
        if (metadata.authorization_endpoint === undefined || metadata.token_endpoint === undefined || metadata.jwks_uri === undefined) {
          throw new Error('the provider\'s metadata lacks authorization_endpoint, token_endpoint or jwks_uri');
        }
        return configuration;
      });
    this.#discovered = discovered;
    discovered.catch(() => {
      this.#discovered = undefined;
      this.#failedAt = now;
    });
    return discovered;
  }

  /** The provider's logout page, when its metadata names one. */
  endSessionUrl(configuration: client.Configuration, postLogoutRedirectUri: string): string | undefined {
    if (configuration.serverMetadata().end_session_endpoint === undefined) return undefined;
    return client.buildEndSessionUrl(configuration, { client_id: this.prepared.config.clientId, post_logout_redirect_uri: postLogoutRedirectUri }).href;
  }
}

export function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}
