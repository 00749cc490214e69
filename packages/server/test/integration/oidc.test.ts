/**
 * OIDC sign-in without a browser: the public provider list; the start
 * redirect (PKCE S256, state and nonce, the redirect URL from the listener's
 * own address whatever `Host` says, the flow cookie's attributes) against a
 * real `oidc-provider` over TLS; a callback with no or a forged state; and
 * SECURITY-TESTS 39 for discovery: a provider whose discovery document
 * redirects to another host is not followed (that host gets no request),
 * and an unreachable provider is a refusal, not a hang. The start's bounds:
 * a flood from one address is answered 429 with Retry-After past its rate,
 * the store's pending sign-ins stay at the cap (counted in the sqlite file),
 * another address still starts, pending ones still complete, and the
 * process stays live.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { call, type Answer } from '../helpers/console.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
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

describe('OIDC start under a flood', { skip: missingService('openssl', existsSync('/usr/bin/openssl')), timeout: 180000 }, () => {
  const PER_ADDRESS = 5;
  const CAP = 8;
  let h: TestHerald;
  let op: TestOidcProvider;
  let stateDir: string;

  /** Pending sign-ins in the console store (the sqlite state file the server writes). */
  function pending(): number {
    const file = openSqliteStore({ stateDir, claim: false, busyTimeoutMs: 5000 });
    try {
      return Number((file.db.prepare('SELECT COUNT(*) AS n FROM console_oidc_flows WHERE expires_at > ?').get(Date.now()) as { n: number }).n);
    } finally {
      file.close();
    }
  }

  const start = (localAddress: string) => call(h.server.adminPort, '/console/oidc/real/start', { localAddress });

  function assertLimited(answer: Answer, what: string): void {
    assert.equal(answer.status, 429, what);
    assert.equal(answer.body.error.code, 'too_many_requests', what);
    assert.match(String(answer.headers['retry-after']), /^[1-9][0-9]*$/, `${what}: Retry-After in whole seconds`);
    assert.equal(answer.headers['set-cookie'], undefined, `${what}: no flow cookie`);
  }

  before(async () => {
    process.env[SECRET_ENV] = 'integration-test-secret';
    op = (await startOidcProvider())!;
    stateDir = mkdtempSync(join(tmpdir(), 'herald-oidc-flood-'));
    h = await startHerald({
      stateDir,
      admin: {
        console: {
          enabled: true,
          oidc: {
            startsPerAddressPerMinute: PER_ADDRESS,
            maxPendingFlows: CAP,
            providers: [
              { id: 'real', label: 'Real', issuer: op.issuer, caFile: op.caFile, clientId: 'herald-console', clientSecretEnv: SECRET_ENV, roles: [{ emailDomain: 'example.com', role: 'viewer' }] },
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
    if (stateDir !== undefined) rmSync(stateDir, { recursive: true, force: true });
    delete process.env[SECRET_ENV];
  });

  test('a flood from one address: 429 with Retry-After past its rate, the store bounded, other addresses still start, pending ones complete, the process live', async () => {
    const flood = await Promise.all(Array.from({ length: 200 }, () => start('127.0.0.1')));
    assert.equal(flood.filter((a) => a.status === 303).length, PER_ADDRESS, 'the first few start');
    const limited = flood.filter((a) => a.status !== 303);
    assert.equal(limited.length, 200 - PER_ADDRESS);
    for (const answer of limited) assertLimited(answer, 'flooding address');
    assert.equal(pending(), PER_ADDRESS, 'only the admitted starts are kept');

    // Another address is not held back by the flood.
    const other = await start('127.0.0.2');
    assert.equal(other.status, 303);
    assert.equal(new URL(String(other.headers.location)).origin, op.issuer);
    assert.equal(pending(), PER_ADDRESS + 1);
    assert.equal((await call(h.server.adminPort, '/health/live')).status, 200);
    assert.equal((await call(Number(new URL(h.url).port), '/health/live')).status, 200);

    // Many addresses together: the store stops at the cap; the refused get 429 and no cookie.
    const spread = await Promise.all(['127.0.0.3', '127.0.0.4', '127.0.0.5'].flatMap((ip) => Array.from({ length: 4 }, () => start(ip))));
    assert.equal(spread.filter((a) => a.status === 303).length, CAP - PER_ADDRESS - 1);
    for (const answer of spread.filter((a) => a.status !== 303)) assertLimited(answer, 'store full');
    assert.equal(pending(), CAP, 'never more than the cap');
    assertLimited(await start('127.0.0.6'), 'a fresh address while the store is full');

    // A pending sign-in still completes: its callback finds the flow (the made-up code then fails at the provider, not at the state).
    const state = new URL(String(other.headers.location)).searchParams.get('state')!;
    const cookie = String(other.headers['set-cookie']).split(';')[0]!;
    const back = await call(h.server.adminPort, `/console/oidc/real/callback?code=not-a-real-code&state=${state}`, { localAddress: '127.0.0.2', headers: { cookie } });
    assert.equal(back.status, 303);
    assert.doesNotMatch(String(back.headers.location), /reason=state/, 'the pending flow was found');
    assert.equal(pending(), CAP - 1, 'taken out');
    assert.equal((await start('127.0.0.6')).status, 303, 'room again');
    assert.equal((await call(h.server.adminPort, '/health/live')).status, 200);
  });
});
