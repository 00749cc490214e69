/**
 * OpenID Connect sign-in of the console, in Chromium, against a real
 * OpenID provider (`oidc-provider`, test/helpers/oidc-provider.ts) served
 * over TLS on an ephemeral loopback port with a certificate the test makes
 * (Herald trusts it through the provider's `caFile`; the browser is told
 * to accept it). Through the real redirects: a mapped user's first sign-in
 * makes the admin with the mapped role (never owner, though the store was
 * empty); the role is re-evaluated at the next sign-in (and the admin's
 * other sessions end); an unmapped user and an unverified email are refused
 * with the refusal page; a callback with a wrong state, a replayed callback,
 * a replayed code, a wrong nonce and an expired ID token are refused; and
 * sign-out offers the provider's logout. The cases a real provider does not
 * produce are made by the test: it rewrites the state or code on the way
 * back (the browser's request interception), the nonce on the way out, and
 * a second provider mints its ID tokens with a clock 10 minutes behind.
 * With `admin.console.mfa.require: 'all'`, the second factor follows an
 * OIDC sign-in unless a provider trusted for it asserts MFA in `amr`.
 *
 * Without /usr/bin/chromium or openssl these tests skip with a loud
 * warning; with HERALD_REQUIRE_SERVICES=1 (CI) they fail instead.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { startOidcProvider, type TestOidcProvider } from '../helpers/oidc-provider.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import type { AdminStore, AuditEntry } from '../../src/console/admin-store.ts';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env['HERALD_REQUIRE_SERVICES'] === '1';
const chromiumThere = existsSync(CHROMIUM);
const opensslThere = existsSync('/usr/bin/openssl');
const available = chromiumThere && opensslThere;
if (!available && !required) {
  console.warn(`\n!!! SKIPPING OIDC browser tests: ${chromiumThere ? 'openssl' : CHROMIUM} not found (apt-get install -y chromium openssl). CI sets HERALD_REQUIRE_SERVICES=1 and fails instead.\n`);
}

const CLIENT_SECRET = 'test-client-secret-0123456789abcdefghijklmnop';
/** Screenshots for docs/console.md (copied to docs/images by hand). */
const artifacts = new URL('../../test-artifacts/', import.meta.url);

describe('OIDC sign-in in Chromium', { skip: !available && !required, timeout: 600000 }, () => {
  let browser: Browser;
  let op: TestOidcProvider;
  let skewed: TestOidcProvider;
  let h: TestHerald;
  let dir: string;
  let consoleUrl: string;
  const contexts: BrowserContext[] = [];

  /** Reads the console store of the state file beside the running server. */
  async function withStore<T>(run: (store: AdminStore) => Promise<T>): Promise<T> {
    const file = openSqliteStore({ stateDir: join(dir, 'state'), claim: false, busyTimeoutMs: 5000 });
    try {
      return await run(new SqliteAdminStore(file.db));
    } finally {
      file.close();
    }
  }

  const audit = (action: string) => withStore((store) => store.queryAudit({ action }));

  async function auditEntry(action: string, match: (entry: AuditEntry) => boolean, what: string): Promise<AuditEntry> {
    return eventually(async () => (await audit(action)).find(match), what, 30000);
  }

  before(async () => {
    if (!available) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${chromiumThere ? 'openssl' : CHROMIUM} is missing: install it`);
    dir = mkdtempSync(join(tmpdir(), 'herald-oidc-browser-'));
    const secretFile = join(dir, 'client-secret');
    writeFileSync(secretFile, CLIENT_SECRET + '\n', { mode: 0o600 });
    op = (await startOidcProvider())!;
    skewed = (await startOidcProvider())!;
    const provider = (id: string, p: TestOidcProvider, extra: Record<string, unknown>) => ({
      id,
      issuer: p.issuer,
      clientId: 'herald-console',
      clientSecretFile: secretFile,
      caFile: p.caFile,
      scopes: ['openid', 'email', 'profile', 'groups'],
      ...extra,
    });
    h = await startHerald({
      stateDir: join(dir, 'state'),
      admin: {
        console: {
          enabled: true,
          oidc: {
            providers: [
              provider('corp', op, {
                label: 'Corp SSO',
                roles: [
                  { subject: 'boss', role: 'owner' },
                  { group: 'herald-ops', role: 'operator' },
                  { emailDomain: 'example.com', role: 'viewer' },
                ],
                trustAmrForMfa: true,
              }),
              // The same provider again, not trusted for MFA: its `amr` never stands for the second factor.
              provider('plain', op, { label: 'Plain SSO', roles: [{ emailDomain: 'example.com', role: 'viewer' }] }),
              provider('skewed', skewed, { label: 'Skewed clock', roles: [{ emailDomain: 'example.com', role: 'viewer' }] }),
            ],
          },
          // Every admin needs a second factor: only a trusted provider's `amr` gives it.
          mfa: { require: 'all' },
        },
      },
    });
    const origin = `http://127.0.0.1:${h.server.adminPort}`;
    consoleUrl = `${origin}/console/`;
    for (const [ids, p, options] of [[['corp', 'plain'], op, {}], [['skewed'], skewed, { clockBehindMs: 10 * 60_000, idTokenTtlSeconds: 60 }]] as const) {
      await p.register(
        { clientId: 'herald-console', clientSecret: CLIENT_SECRET, redirectUris: ids.map((id) => `${origin}/console/oidc/${id}/callback`), postLogoutRedirectUris: [consoleUrl] },
        options,
      );
    }
    op.account('alice', { email: 'alice@example.com', email_verified: true, groups: [] });
    op.account('boss', { email: 'boss@corp.test', email_verified: true });
    op.account('mallory', { email: 'mallory@evil.test', email_verified: true, groups: ['outsiders'] });
    op.account('eve', { email: 'eve@example.com', email_verified: false });
    op.account('victor', { email: 'victor@example.com', email_verified: true });
    skewed.account('sam', { email: 'sam@example.com', email_verified: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await h?.close();
    await op?.close();
    await skewed?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** A fresh browser (no cookies at Herald or at the provider) on the console's sign-in page. */
  async function fresh(): Promise<Page> {
    // The provider's certificate is the test's own: the browser accepts it (Herald checks it against caFile).
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(consoleUrl);
    await page.waitForSelector('#login-name');
    return page;
  }

  /** Clicks the provider's button and signs in at the provider as `user` (when it asks). */
  async function viaProvider(page: Page, user: string, providerId = 'corp', mfa = false): Promise<void> {
    await page.click(`#oidc-${providerId}`);
    await page.waitForSelector('#op-login');
    await page.fill('#op-login', user);
    if (mfa) await page.check('#op-mfa');
    await page.click('#op-submit');
  }

  /**
   * The browser's request interception sees only the first request of a
   * redirect chain: this routes that one (`first`), follows its redirects
   * itself (with the browser context's cookies) until `stop` says, lets
   * `tamper` change that URL, and sends the browser there.
   */
  async function tamperRedirects(page: Page, first: (url: URL, method: string) => boolean, stop: (url: URL) => boolean, tamper: (url: URL) => void): Promise<void> {
    let done = false;
    await page.route(
      (url) => !done && first(url, ''),
      async (route) => {
        if (!first(new URL(route.request().url()), route.request().method())) return route.fallback();
        done = true;
        const answer = await route.fetch({ maxRedirects: 0 });
        let url = new URL(answer.headers()['location'] ?? '', route.request().url());
        while (!stop(url)) {
          const next = await page.context().request.get(url.href, { maxRedirects: 0 });
          const location = next.headers()['location'];
          if (location === undefined) throw new Error(`no redirect from ${url.href} (${next.status()})`);
          url = new URL(location, url);
        }
        tamper(url);
        await route.fulfill({ status: 303, headers: { location: url.href } });
      },
    );
  }

  const isCallback = (id: string) => (url: URL) => url.origin === new URL(consoleUrl).origin && url.pathname === `/console/oidc/${id}/callback`;
  const isStart = (id: string) => (url: URL) => url.origin === new URL(consoleUrl).origin && url.pathname === `/console/oidc/${id}/start`;
  /** The provider's sign-in form being sent (the URL matcher knows no method yet: '' passes). */
  const isLoginPost = (url: URL, method: string) => url.origin === op.issuer && url.pathname.startsWith('/interaction/') && method !== 'GET';

  async function signedInAs(page: Page): Promise<string> {
    await page.waitForSelector('#whoami');
    return ((await page.textContent('#whoami')) ?? '').replace(/\s+/g, ' ').trim();
  }

  async function refusal(page: Page): Promise<string> {
    await page.waitForSelector('#signin-refused');
    return (await page.getAttribute('#signin-refused', 'data-reason')) ?? '';
  }

  test('a mapped user signs in through the provider: the admin is made with the mapped role, never owner though the store was empty', async () => {
    const page = await fresh();
    assert.equal(await page.textContent('#oidc-corp'), 'Sign in with Corp SSO');
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: new URL('console-oidc-sign-in.png', artifacts).pathname });
    await viaProvider(page, 'alice', 'corp', true);
    assert.equal(await signedInAs(page), 'alice@example.com viewer');
    const admin = await withStore((store) => store.getAdmin('alice@example.com'));
    assert.equal(admin?.role, 'viewer', 'the first admin of an empty store is not promoted to owner');
    assert.equal(admin?.passwordHash, '', 'no password: only the provider signs this admin in');
    assert.deepEqual(
      (await withStore((store) => store.getOidcLink('corp', 'alice')))?.admin,
      'alice@example.com',
      'the provider and subject are linked to the admin',
    );
    const cookies = await page.context().cookies();
    assert.ok(cookies.some((c) => c.name === '__Host-herald_console' && c.httpOnly && c.secure), 'the console session cookie is set');
    assert.ok(!cookies.some((c) => c.name === '__Host-herald_oidc'), 'the flow cookie is gone after the callback');
    await auditEntry('admin.create', (e) => e.target === 'alice@example.com' && e.detail?.['via'] === 'oidc', 'admin.create for alice');
    await auditEntry('oidc.login', (e) => e.outcome === 'ok' && e.actor === 'alice@example.com' && e.detail?.['mfa'] === true, 'oidc.login ok for alice');
    await auditEntry('console.login', (e) => e.actor === 'alice@example.com' && e.detail?.['method'] === 'oidc', 'console.login with method oidc');
  });

  test('the role is re-evaluated at every sign-in; a changed role ends the admin\'s other sessions', async () => {
    const first = await fresh();
    await viaProvider(first, 'alice', 'corp', true);
    assert.equal(await signedInAs(first), 'alice@example.com viewer');
    op.account('alice', { email: 'alice@example.com', email_verified: true, groups: ['herald-ops'] });
    try {
      const second = await fresh();
      await viaProvider(second, 'alice', 'corp', true);
      assert.equal(await signedInAs(second), 'alice@example.com operator');
      assert.equal((await withStore((store) => store.getAdmin('alice@example.com')))?.role, 'operator');
      // The first browser's session ended with the role change.
      const status = await first.evaluate(async () => (await fetch('/console/api/session', { cache: 'no-store' })).status);
      assert.equal(status, 401);
      await auditEntry('admin.role', (e) => e.target === 'alice@example.com' && e.detail?.['to'] === 'operator' && e.detail?.['via'] === 'oidc', 'admin.role via oidc');
    } finally {
      op.account('alice', { email: 'alice@example.com', email_verified: true, groups: [] });
    }
  });

  test('an exact subject rule gives owner; a user no rule maps, or whose email is not verified, is refused with the refusal page and gets no account', async () => {
    const boss = await fresh();
    await viaProvider(boss, 'boss', 'corp', true);
    assert.equal(await signedInAs(boss), 'boss@corp.test owner');

    const page = await fresh();
    await viaProvider(page, 'mallory');
    assert.equal(await refusal(page), 'not_mapped');
    assert.match((await page.textContent('#refused-reason')) ?? '', /not allowed into this console/);
    await page.screenshot({ path: new URL('console-oidc-refused.png', artifacts).pathname });
    const unverified = await fresh();
    await viaProvider(unverified, 'eve');
    assert.equal(await refusal(unverified), 'not_mapped', 'an unverified email matches no email rule');
    const names = (await withStore((store) => store.listAdmins())).map((a) => a.name);
    assert.ok(!names.some((n) => n.startsWith('mallory') || n.startsWith('eve')), `no account made (${names.join(', ')})`);
    await auditEntry('oidc.login', (e) => e.outcome === 'denied' && e.detail?.['reason'] === 'not_mapped' && e.detail?.['subject'] === 'mallory', 'oidc.login denied for mallory');
    // Back to the sign-in page from the refusal.
    await page.click('#refused-back');
    await page.waitForSelector('#login-name');
  });

  test('a callback with a wrong state is refused, and so is a callback replayed after it was used', async () => {
    const page = await fresh();
    await tamperRedirects(page, isLoginPost, isCallback('corp'), (url) => url.searchParams.set('state', 'x' + (url.searchParams.get('state') ?? '')));
    await viaProvider(page, 'victor', 'corp', true);
    assert.equal(await refusal(page), 'state');
    await auditEntry('oidc.login', (e) => e.outcome === 'failed' && e.detail?.['reason'] === 'state', 'oidc.login failed: state');

    // A good sign-in, its callback URL kept; the same URL again (same browser, same code and state) is refused.
    const second = await fresh();
    let callback = '';
    second.on('request', (request) => {
      if (request.url().includes('/console/oidc/corp/callback?')) callback = request.url();
    });
    await viaProvider(second, 'victor', 'corp', true);
    assert.equal(await signedInAs(second), 'victor@example.com viewer');
    assert.notEqual(callback, '');
    await second.goto(callback);
    assert.equal(await refusal(second), 'state', 'the state is single use');
  });

  test('a replayed authorization code is refused by the provider, and the sign-in with it fails', async () => {
    const page = await fresh();
    let usedCode = '';
    page.on('request', (request) => {
      if (request.url().includes('/console/oidc/corp/callback?')) usedCode ||= new URL(request.url()).searchParams.get('code') ?? '';
    });
    await viaProvider(page, 'victor', 'corp', true);
    assert.equal(await signedInAs(page), 'victor@example.com viewer');
    assert.notEqual(usedCode, '');
    // A new sign-in in the same browser whose callback carries the old code: its state is good, its code is spent.
    await tamperRedirects(page, isStart('corp'), isCallback('corp'), (url) => url.searchParams.set('code', usedCode));
    await page.goto(`${consoleUrl}oidc/corp/start`);
    assert.equal(await refusal(page), 'code_rejected');
    await auditEntry('oidc.login', (e) => e.outcome === 'failed' && e.detail?.['reason'] === 'code_rejected', 'oidc.login failed: code_rejected');
  });

  test('an ID token with another nonce than the one sent is refused', async () => {
    const page = await fresh();
    // On the way to the provider the nonce is replaced: the provider signs the other one into the ID token.
    await tamperRedirects(page, isStart('corp'), (url) => url.origin === op.issuer, (url) => url.searchParams.set('nonce', 'not-the-nonce-herald-sent-0123456789'));
    await viaProvider(page, 'victor', 'corp', true);
    assert.equal(await refusal(page), 'nonce');
    await auditEntry('oidc.login', (e) => e.outcome === 'failed' && e.detail?.['reason'] === 'nonce', 'oidc.login failed: nonce');
  });

  test('an expired ID token (a provider whose clock is 10 minutes behind) is refused', async () => {
    const page = await fresh();
    await viaProvider(page, 'sam', 'skewed');
    assert.equal(await refusal(page), 'id_token_expired');
    assert.equal(await withStore((store) => store.getOidcLink('skewed', 'sam')), undefined, 'no account made');
    await auditEntry('oidc.login', (e) => e.outcome === 'failed' && e.detail?.['reason'] === 'id_token_expired', 'oidc.login failed: id_token_expired');
  });

  test('the second factor follows an OIDC sign-in unless a trusted provider asserts MFA in amr', async () => {
    const session = (page: Page) =>
      page.evaluate(async () => {
        const answer = await fetch('/console/api/session', { cache: 'no-store' });
        const channels = await fetch('/console/api/channels', { cache: 'no-store' });
        return { status: answer.status, body: (await answer.json()) as { stage?: string; methods?: string[] }, channels: channels.status };
      });
    // Trusted provider, no MFA at the provider: enrolment comes next, and nothing else is open.
    const noMfa = await fresh();
    await viaProvider(noMfa, 'victor', 'corp', false);
    await noMfa.waitForURL(/\/console\/$/);
    let answer = await session(noMfa);
    assert.equal(answer.status, 200);
    assert.equal(answer.body.stage, 'enrol');
    assert.deepEqual(answer.body.methods, ['oidc']);
    assert.equal(answer.channels, 403, 'a partial session reaches no console data');
    // A provider not trusted for MFA: its amr ["pwd", "mfa"] does not count.
    const untrusted = await fresh();
    await viaProvider(untrusted, 'victor', 'plain', true);
    await untrusted.waitForURL(/\/console\/$/);
    answer = await session(untrusted);
    assert.equal(answer.body.stage, 'enrol');
    // Trusted and asserted: a full session at once.
    const trusted = await fresh();
    await viaProvider(trusted, 'victor', 'corp', true);
    await trusted.waitForURL(/\/console\/$/);
    answer = await session(trusted);
    assert.equal(answer.body.stage, 'full');
    assert.equal(answer.channels, 200);
    await auditEntry('oidc.login', (e) => e.outcome === 'ok' && e.detail?.['provider'] === 'plain' && e.detail?.['mfa'] === false && e.detail?.['stage'] === 'enrol', 'oidc.login via plain, stage enrol');
  });

  test('sign-out ends the console session and offers the provider\'s logout page', async () => {
    const page = await fresh();
    await viaProvider(page, 'victor', 'corp', true);
    await signedInAs(page);
    await page.click('#sign-out');
    await page.waitForSelector('#provider-logout');
    const href = (await page.getAttribute('#provider-logout a', 'href')) ?? '';
    const url = new URL(href);
    assert.equal(url.origin, op.issuer);
    assert.equal(url.searchParams.get('client_id'), 'herald-console');
    assert.equal(url.searchParams.get('post_logout_redirect_uri'), consoleUrl);
    const status = await page.evaluate(async () => (await fetch('/console/api/session', { cache: 'no-store' })).status);
    assert.equal(status, 401, 'the console session has ended');
  });
});
