/**
 * OIDC sign-in without a browser: the public provider list; the start
 * redirect (PKCE S256, state and nonce, the redirect URL from the listener's
 * own address whatever `Host` says, the flow cookie's attributes) against a
 * real `oidc-provider` over TLS; a callback with no or a forged state; and
 * SECURITY-TESTS 39 for discovery: a provider whose discovery document
 * redirects to another host is not followed (that host gets no request),
 * and an unreachable provider is a refusal, not a hang.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { existsSync } from 'node:fs';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { call } from '../helpers/console.ts';
import { startOidcProvider, type TestOidcProvider } from '../helpers/oidc-provider.ts';
import { missingService } from '../helpers/services.ts';

const SECRET_ENV = 'HERALD_TEST_OIDC_SECRET';

function listen(server: Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
}

describe('OIDC sign-in routes', { skip: missingService('openssl', existsSync('/usr/bin/openssl')), timeout: 120000 }, () => {
  let h: TestHerald;
  let op: TestOidcProvider;
  let redirector: Server;
  let elsewhere: Server;
  let elsewhereHits = 0;
  let closedPort: number;

  before(async () => {
    process.env[SECRET_ENV] = 'integration-test-secret';
    op = (await startOidcProvider())!;
    elsewhere = createServer((_req, res) => {
      elsewhereHits++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
    const elsewherePort = await listen(elsewhere);
    // A "provider" whose discovery document is a redirect to another host (here another port: another origin).
    redirector = createServer((_req, res) => {
      res.writeHead(302, { location: `http://127.0.0.2:${elsewherePort}/.well-known/openid-configuration` }).end();
    });
    const redirectorPort = await listen(redirector);
    const gone = createServer();
    closedPort = await listen(gone);
    await new Promise<void>((resolve) => gone.close(() => resolve()));
    const provider = (id: string, issuer: string, extra: Record<string, unknown> = {}) => ({
      id,
      label: `Provider ${id}`,
      issuer,
      clientId: 'herald-console',
      clientSecretEnv: SECRET_ENV,
      roles: [{ emailDomain: 'example.com', role: 'viewer' }],
      ...extra,
    });
    h = await startHerald({
      admin: {
        console: {
          enabled: true,
          oidc: {
            providers: [
              provider('real', op.issuer, { caFile: op.caFile }),
              provider('redirecting', `http://127.0.0.1:${redirectorPort}`, { allowPlainHttpLoopback: true }),
              provider('gone', `http://127.0.0.1:${closedPort}`, { allowPlainHttpLoopback: true }),
            ],
          },
        },
      },
    });
    await op.register({ clientId: 'herald-console', clientSecret: 'integration-test-secret', redirectUris: [`http://127.0.0.1:${h.server.adminPort}/console/oidc/real/callback`] });
  });

  after(async () => {
    await h?.close();
    await op?.close();
    redirector?.close();
    elsewhere?.close();
    delete process.env[SECRET_ENV];
  });

  test('the provider list is public and names ids, labels and start URLs only', async () => {
    const answer = await call(h.server.adminPort, '/console/api/oidc/providers');
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, {
      providers: ['real', 'redirecting', 'gone'].map((id) => ({ id, label: `Provider ${id}`, start: `/console/oidc/${id}/start` })),
    });
    assert.doesNotMatch(answer.text, /secret/i);
  });

  test('start: 303 to the provider with PKCE S256, state, nonce and the redirect URL of the listener, whatever Host says; the flow cookie is HttpOnly, Secure, SameSite=Lax', async () => {
    const port = h.server.adminPort;
    const answer = await call(port, '/console/oidc/real/start', { headers: { host: `localhost:${port}` } });
    assert.equal(answer.status, 303);
    const url = new URL(String(answer.headers.location));
    assert.equal(url.origin, op.issuer);
    const q = url.searchParams;
    assert.equal(q.get('response_type'), 'code');
    assert.equal(q.get('client_id'), 'herald-console');
    assert.equal(q.get('redirect_uri'), `http://127.0.0.1:${port}/console/oidc/real/callback`, 'never made from Host');
    assert.equal(q.get('code_challenge_method'), 'S256');
    assert.match(q.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.match(q.get('state') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.match(q.get('nonce') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.match(q.get('scope') ?? '', /\bopenid\b/);
    const cookie = String(answer.headers['set-cookie'] ?? '');
    assert.match(cookie, /^__Host-herald_oidc=[A-Za-z0-9_-]{43};/);
    for (const attribute of [/; HttpOnly/i, /; Secure/i, /; SameSite=Lax/i, /; Path=\//]) assert.match(cookie, attribute);
    // Two starts: two different states and nonces.
    const again = new URL(String((await call(port, '/console/oidc/real/start')).headers.location)).searchParams;
    assert.notEqual(again.get('state'), q.get('state'));
    assert.notEqual(again.get('nonce'), q.get('nonce'));
  });

  test('a callback without a state, or with one Herald never made, is refused (303 to the refusal page)', async () => {
    const port = h.server.adminPort;
    for (const query of ['code=abc', 'code=abc&state=forged-state-0123456789', `code=abc&state=${'x'.repeat(5000)}`]) {
      const answer = await call(port, `/console/oidc/real/callback?${query}`);
      assert.equal(answer.status, 303, query.slice(0, 40));
      assert.equal(answer.headers.location, '/console/#/signin-refused?reason=state&provider=real');
    }
    assert.equal((await call(port, '/console/oidc/nope/callback?state=x')).status, 404);
    assert.equal((await call(port, '/console/oidc/nope/start')).status, 404);
  });

  test('a discovery that redirects to another host is not followed; an unreachable provider is refused', async () => {
    const port = h.server.adminPort;
    const redirected = await call(port, '/console/oidc/redirecting/start');
    assert.equal(redirected.status, 303);
    assert.equal(redirected.headers.location, '/console/#/signin-refused?reason=provider_unreachable&provider=redirecting');
    assert.equal(elsewhereHits, 0, 'the redirect target got no request');
    const gone = await call(port, '/console/oidc/gone/start');
    assert.equal(gone.status, 303);
    assert.equal(gone.headers.location, '/console/#/signin-refused?reason=provider_unreachable&provider=gone');
  });
});
