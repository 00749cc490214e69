/**
 * A real OpenID provider for tests: `oidc-provider` over HTTPS on an
 * ephemeral loopback port, with a certificate the test makes (openssl; the
 * caller passes `caFile` to Herald and lets the browser accept it).
 *
 * Its sign-in page (`/interaction/:uid`) is a plain form: a user id (the
 * `sub`, whose claims the test set with `account`) and an "MFA" box that
 * makes `amr` ["pwd", "mfa"] instead of ["pwd"]. Consent is granted at
 * once. Start the HTTPS server first (`startOidcProvider`: its issuer URL is
 * then known and goes in Herald's config), then `register` the client once
 * Herald's redirect URL is known. `clockBehindMs` makes the token endpoint
 * mint its ID tokens as if its clock were that far behind (an expired ID
 * token, which a provider with a right clock never sends).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exportJWK, generateKeyPair } from 'jose';
import Provider, { type KoaContextWithOIDC } from 'oidc-provider';
import { makeCertificate } from './tls-certificate.ts';

export interface TestAccount {
  readonly email?: string;
  readonly email_verified?: boolean;
  readonly name?: string;
  readonly preferred_username?: string;
  readonly groups?: readonly string[];
}

export interface TestClient {
  readonly clientId: string;
  readonly clientSecret: string;
  readonly redirectUris: readonly string[];
  readonly postLogoutRedirectUris?: readonly string[];
}

export interface TestOidcProvider {
  /** `https://127.0.0.1:PORT` */
  readonly issuer: string;
  /** PEM file of the self-signed certificate (for Herald's `caFile`). */
  readonly caFile: string;
  /** Sets the claims of a user id (its `sub`). */
  account(sub: string, claims: TestAccount): void;
  /** Creates the provider with its one client (once). */
  register(client: TestClient, options?: { clockBehindMs?: number; idTokenTtlSeconds?: number }): Promise<void>;
  /** Authorization codes the token endpoint refused (replays, foreign codes). */
  readonly refusedCodes: () => number;
  close(): Promise<void>;
}

const page = (uid: string) => `<!doctype html>
<html><head><title>Test provider sign-in</title></head>
<body><h1>Test provider</h1>
<form method="post" action="/interaction/${uid}">
<label>User <input id="op-login" name="login" autocomplete="off"></label>
<label><input id="op-mfa" name="mfa" type="checkbox" value="1"> MFA</label>
<button id="op-submit" type="submit">Sign in</button>
</form></body></html>`;

function readBody(req: IncomingMessage): Promise<URLSearchParams> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

/** Undefined when openssl is missing (the caller skips). */
export async function startOidcProvider(): Promise<TestOidcProvider | undefined> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-oidc-provider-'));
  const files = makeCertificate(dir);
  if (files === undefined) {
    rmSync(dir, { recursive: true, force: true });
    return undefined;
  }
  const accounts = new Map<string, TestAccount>();
  let provider: Provider | undefined;
  let refused = 0;

  async function interaction(req: IncomingMessage, res: ServerResponse, op: Provider): Promise<void> {
    const details = await op.interactionDetails(req, res);
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page(details.uid));
      return;
    }
    const form = await readBody(req);
    const accountId = form.get('login') ?? '';
    await op.interactionFinished(req, res, { login: { accountId, amr: form.get('mfa') === '1' ? ['pwd', 'mfa'] : ['pwd'] } }, { mergeWithLastSubmission: false });
  }

  const server: Server = createServer({ cert: readFileSync(files.certFile), key: readFileSync(files.keyFile) }, (req, res) => {
    const op = provider;
    if (op === undefined) {
      res.writeHead(503).end('not configured yet');
      return;
    }
    if ((req.url ?? '').startsWith('/interaction/')) {
      interaction(req, res, op).catch((error: unknown) => {
        if (!res.headersSent) res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(String(error));
      });
      return;
    }
    void op.callback()(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  const issuer = `https://127.0.0.1:${port}`;

  return {
    issuer,
    caFile: files.certFile,
    account(sub, claims) {
      accounts.set(sub, claims);
    },
    refusedCodes: () => refused,
    async register(client, options = {}) {
      if (provider !== undefined) throw new Error('the test provider has its client already');
      const { privateKey } = await generateKeyPair('RS256', { extractable: true });
      const jwk = { ...(await exportJWK(privateKey)), alg: 'RS256', use: 'sig', kid: 'test-key' };
      const op = new Provider(issuer, {
        clients: [
          {
            client_id: client.clientId,
            client_secret: client.clientSecret,
            redirect_uris: [...client.redirectUris],
            post_logout_redirect_uris: [...(client.postLogoutRedirectUris ?? [])],
            grant_types: ['authorization_code'],
            response_types: ['code'],
            token_endpoint_auth_method: 'client_secret_basic',
          },
        ],
        jwks: { keys: [jwk] },
        cookies: { keys: ['test-provider-cookie-key-0123456789abcdef'] },
        scopes: ['openid', 'email', 'profile', 'groups'],
        // amr rides with openid: the ID token carries it whenever the sign-in set it.
        claims: { openid: ['sub', 'amr'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'], groups: ['groups'] },
        conformIdTokenClaims: false,
        features: { devInteractions: { enabled: false } },
        interactions: { url: (_ctx: KoaContextWithOIDC, i: { uid: string }) => `/interaction/${i.uid}` },
        pkce: { required: () => true },
        ttl: { IdToken: options.idTokenTtlSeconds ?? 3600 },
        async findAccount(_ctx: KoaContextWithOIDC, id: string) {
          return { accountId: id, claims: async () => ({ sub: id, ...accounts.get(id) }) };
        },
        // Consent is given at once: the tests are about Herald, not about the provider's screens.
        async loadExistingGrant(ctx: KoaContextWithOIDC) {
          const session = ctx.oidc.session!;
          const clientId = ctx.oidc.client!.clientId;
          const existing = session.grantIdFor(clientId);
          if (existing !== undefined) {
            const found = await ctx.oidc.provider.Grant.find(existing);
            if (found !== undefined) return found;
          }
          const grant = new ctx.oidc.provider.Grant({ clientId, accountId: session.accountId! });
          grant.addOIDCScope('openid email profile groups');
          await grant.save();
          session.grantIdFor(clientId, grant.jti);
          return grant;
        },
      } as ConstructorParameters<typeof Provider>[1]);
      op.on('grant.error', () => {
        refused++;
      });
      const behind = options.clockBehindMs ?? 0;
      if (behind > 0) {
        // The token endpoint's clock runs behind while it mints (only there: the browser's cookies stay right).
        op.use(async (ctx, next) => {
          if (ctx.path !== '/token') return next();
          const real = Date.now;
          Date.now = () => real() - behind;
          try {
            await next();
          } finally {
            Date.now = real;
          }
        });
      }
      provider = op;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
