/**
 * Passkeys in a real browser (Debian's Chromium through playwright-core)
 * with a virtual authenticator (DevTools protocol `WebAuthn.enable` and
 * `WebAuthn.addVirtualAuthenticator`: ctap2, internal, resident keys, user
 * verification) against a real Herald served on `localhost` (browsers
 * refuse IP addresses as RP ids): register from the console's passkeys
 * view, sign in with the passkey and no password, use it as the second
 * factor after the password, then the cases a real
 * authenticator can produce (SECURITY-TESTS D23): another origin with the
 * same RP id (the console relayed on another port of localhost), a signature counter going back (the
 * credential put back with a lower count), a credential removed in the
 * console. Each refusal is checked by its audited reason, so it cannot pass
 * for another one. The cases no authenticator produces (RP id hash, UP/UV
 * flags, replayed or expired challenge) are in
 * test/security/passkeys.test.ts with crafted answers.
 *
 * Without /usr/bin/chromium these tests skip with a loud warning; with
 * HERALD_REQUIRE_SERVICES=1 (CI) they fail instead.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium, type Browser, type BrowserContext, type CDPSession, type Page } from 'playwright-core';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { createAdmin } from '../helpers/console.ts';
import { freePort } from '../helpers/passkeys.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import type { AuditEntry } from '../../src/console/admin-store.ts';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env['HERALD_REQUIRE_SERVICES'] === '1';
const available = existsSync(CHROMIUM);
if (!available && !required) {
  console.warn(`\n!!! SKIPPING passkey browser tests: ${CHROMIUM} not found (apt-get install -y chromium). CI sets HERALD_REQUIRE_SERVICES=1 and fails instead.\n`);
}

const artifacts = new URL('../../test-artifacts/', import.meta.url);

/** A credential as the DevTools protocol gives and takes it. */
interface VirtualCredential {
  credentialId: string;
  isResidentCredential: boolean;
  rpId: string;
  privateKey: string;
  userHandle: string;
  signCount: number;
}

interface Tab {
  readonly page: Page;
  readonly cdp: CDPSession;
  readonly authenticatorId: string;
  /** Page errors and console errors (but the 401s of refused sign-ins) seen so far. */
  readonly problems: string[];
}

describe('passkeys in Chromium with a virtual authenticator', { skip: !available && !required, timeout: 300000 }, () => {
  let browser: Browser;
  let h: TestHerald;
  let stateDir: string;
  let port: number;
  let consoleUrl: string;
  const contexts: BrowserContext[] = [];

  before(async () => {
    if (!available) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing: install it (apt-get install -y chromium)`);
    stateDir = mkdtempSync(join(tmpdir(), 'herald-passkeys-browser-'));
    port = await freePort();
    consoleUrl = `http://localhost:${port}/console/`;
    h = await startHerald({ stateDir, admin: { port, console: { enabled: true, passkeys: { rpId: 'localhost', rpName: 'Herald test', origins: [`http://localhost:${port}`] } } } });
    await createAdmin(stateDir, 'olivia', 'owner');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--no-first-run',
        '--disable-component-update',
        '--disable-sync',
        // The server listens on 127.0.0.1: localhost goes there (a secure context by name).
        '--host-resolver-rules=MAP localhost 127.0.0.1',
      ],
    });
  });

  after(async () => {
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await h?.close();
    if (stateDir !== undefined) rmSync(stateDir, { recursive: true, force: true });
  });

  async function open(url: string): Promise<Tab> {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    contexts.push(context);
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' && !/status of 401/.test(message.text())) problems.push(`console: ${message.text()}`);
    });
    const cdp = await context.newCDPSession(page);
    await cdp.send('WebAuthn.enable');
    const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
      options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
    });
    await page.goto(url);
    return { page, cdp, authenticatorId, problems };
  }

  async function credentials(tab: Tab): Promise<VirtualCredential[]> {
    return ((await tab.cdp.send('WebAuthn.getCredentials', { authenticatorId: tab.authenticatorId })) as unknown as { credentials: VirtualCredential[] }).credentials;
  }

  /** Puts `credential` in the tab's authenticator (replacing one of the same id), e.g. with another sign count. */
  async function putCredential(tab: Tab, credential: VirtualCredential): Promise<void> {
    await tab.cdp.send('WebAuthn.removeCredential', { authenticatorId: tab.authenticatorId, credentialId: credential.credentialId }).catch(() => undefined);
    await tab.cdp.send('WebAuthn.addCredential', {
      authenticatorId: tab.authenticatorId,
      credential: { credentialId: credential.credentialId, isResidentCredential: true, rpId: credential.rpId, privateKey: credential.privateKey, userHandle: credential.userHandle, signCount: credential.signCount },
    });
  }

  async function signOut(page: Page): Promise<void> {
    await page.click('#sign-out');
    await page.waitForSelector('#login-name');
  }

  /** Newest audit entries of `action` once `count` more than `before` are written. */
  async function auditAfter(action: string, before: number): Promise<AuditEntry[]> {
    for (let i = 0; ; i++) {
      const file = openSqliteStore({ stateDir, claim: false });
      try {
        const entries = await new SqliteAdminStore(file.db).queryAudit({ action, limit: 1000 });
        if (entries.length > before || i >= 200) return entries;
      } finally {
        file.close();
      }
      await sleep(50);
    }
  }

  async function auditCount(action: string): Promise<number> {
    return (await auditAfter(action, -1)).length;
  }

  /** Clicks "Sign in with a passkey" and waits for the refusal in words; answers the audited reason. */
  async function refusedSignIn(tab: Tab): Promise<string> {
    const before = await auditCount('console.login');
    await tab.page.click('#passkey-sign-in');
    await tab.page.waitForFunction(() => (document.querySelector('#passkey-error')?.textContent ?? '') !== '');
    assert.match((await tab.page.textContent('#passkey-error')) ?? '', /not accepted/);
    assert.equal(await tab.page.$('#whoami'), null, 'not signed in');
    const [latest] = await auditAfter('console.login', before);
    assert.equal(latest?.outcome, 'failed');
    assert.equal(latest?.detail?.['method'], 'passkey');
    return String(latest?.detail?.['reason']);
  }

  let tab: Tab;
  let registered: VirtualCredential;

  test('register: the passkeys view adds a discoverable passkey with its name; the list shows it', async () => {
    tab = await open(consoleUrl);
    const { page } = tab;
    await page.fill('#login-name', 'olivia');
    await page.fill('#login-password', 'correct horse battery staple');
    await page.click('form button[type="submit"]');
    await page.waitForSelector('#whoami');
    await page.click('a[href="#/passkeys"]');
    await page.waitForSelector('#passkeys-title');
    await page.fill('#passkey-name', 'laptop');
    await page.click('#passkey-add');
    await page.waitForSelector('#passkeys-table tr[data-name="laptop"]');
    assert.equal(await page.textContent('#passkeys-table tr[data-name="laptop"] [data-field="last-used"]'), 'never');
    const held = await credentials(tab);
    assert.equal(held.length, 1);
    assert.equal(held[0]!.isResidentCredential, true, 'a discoverable credential');
    assert.equal(held[0]!.rpId, 'localhost');
    registered = held[0]!;
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: new URL('console-passkeys.png', artifacts).pathname });
    const [entry] = await auditAfter('passkey.register', 0);
    assert.deepEqual([entry?.actor, entry?.outcome, entry?.target], ['olivia', 'ok', 'laptop']);
    assert.deepEqual(tab.problems, []);
  });

  test('sign in with the passkey and no password', async () => {
    const { page } = tab;
    await signOut(page);
    await page.waitForSelector('#passkey-sign-in');
    await page.screenshot({ path: new URL('console-passkey-sign-in.png', artifacts).pathname });
    await page.click('#passkey-sign-in');
    await page.waitForSelector('#whoami');
    assert.match((await page.textContent('#whoami')) ?? '', /olivia\s*owner/);
    await page.click('a[href="#/passkeys"]');
    await page.waitForSelector('#passkeys-table tr[data-name="laptop"]');
    assert.notEqual(await page.textContent('#passkeys-table tr[data-name="laptop"] [data-field="last-used"]'), 'never');
    const [entry] = await auditAfter('console.login', 0);
    assert.equal(entry?.outcome, 'ok');
    assert.equal(entry?.detail?.['method'], 'passkey');
    assert.deepEqual(tab.problems, []);
  });

  test('second factor: after the password the page asks for the passkey, and it completes the sign-in', async () => {
    const { page } = tab;
    await signOut(page);
    const before = await auditCount('console.login');
    await page.fill('#login-name', 'olivia');
    await page.fill('#login-password', 'correct horse battery staple');
    await page.click('form button[type="submit"]');
    await page.waitForSelector('#passkey-step');
    assert.equal(await page.$('#whoami'), null, 'not in the console before the second factor');
    await page.screenshot({ path: new URL('console-passkey-second-factor.png', artifacts).pathname });
    await page.click('#passkey-step');
    await page.waitForSelector('#whoami');
    const entries = await auditAfter('console.login', before + 1);
    assert.ok(entries.some((e) => e.outcome === 'ok' && e.detail?.['factor'] === 'passkey'), 'the second factor is audited');
    assert.deepEqual(tab.problems, []);
  });

  test('another origin with the same RP id (the console through another port of localhost) is refused', async (t) => {
    // A plain TCP relay: the same console, as a look-alike page on another origin would proxy it.
    const sockets = new Set<Socket>();
    const relay = createServer((socket) => {
      const upstream = connect(port, '127.0.0.1');
      for (const s of [socket, upstream]) {
        sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => sockets.delete(s));
      }
      socket.pipe(upstream).pipe(socket);
    });
    await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
    const relayPort = (relay.address() as AddressInfo).port;
    t.after(() => {
      for (const s of sockets) s.destroy();
      relay.close();
    });
    const elsewhere = await open(`http://localhost:${relayPort}/console/`);
    const current = (await credentials(tab))[0]!;
    await putCredential(elsewhere, { ...current, signCount: current.signCount + 100 });
    await elsewhere.page.waitForSelector('#passkey-sign-in');
    const why = await refusedSignIn(elsewhere);
    assert.match(why, /origin/i);
    assert.match(why, new RegExp(`localhost:${relayPort}`));
    assert.deepEqual(elsewhere.problems, []);
  });

  test('a signature counter going back is refused (the credential put back with a lower count), then a higher one passes', async () => {
    const { page } = tab;
    await signOut(page);
    const current = (await credentials(tab))[0]!;
    assert.ok(current.signCount >= 2, `the authenticator counts (${current.signCount})`);
    await putCredential(tab, { ...current, signCount: 0 });
    const why = await refusedSignIn(tab);
    assert.match(why, /counter/i);
    // The same credential with a count past the stored one signs in again: the refusal was the counter alone.
    await putCredential(tab, { ...current, signCount: current.signCount + 10 });
    await page.click('#passkey-sign-in');
    await page.waitForSelector('#whoami');
    assert.deepEqual(tab.problems, []);
  });

  test('a credential removed in the console is refused although the authenticator still holds it', async () => {
    const { page } = tab;
    await page.click('a[href="#/passkeys"]');
    await page.waitForSelector('#passkeys-table tr[data-name="laptop"]');
    await page.click('#passkeys-table tr[data-name="laptop"] [data-action="remove"]');
    await page.click('#passkeys-table tr[data-name="laptop"] [data-action="remove-confirm"]');
    await page.waitForSelector('text=No passkey yet.');
    const [removed] = await auditAfter('passkey.remove', 0);
    assert.deepEqual([removed?.actor, removed?.target], ['olivia', 'laptop']);
    await signOut(page);
    assert.equal((await credentials(tab)).length, 1, 'the authenticator still holds it');
    const why = await refusedSignIn(tab);
    assert.match(why, /no such passkey/);
    assert.equal(registered.credentialId.length > 0, true);
    assert.deepEqual(tab.problems, []);
  });
});
