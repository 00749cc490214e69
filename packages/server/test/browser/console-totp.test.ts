/**
 * The console's TOTP screens in a real browser (Debian's Chromium through
 * playwright-core) against a real Herald whose policy requires a second
 * factor for owners (`admin.console.mfa.require: ["owner"]`):
 * - after the password an owner without one sees the enrolment screen (QR
 *   code image made by the server, the key as text), confirms with a code
 *   the test computes from the key shown (its own RFC 6238 code), sees ten
 *   recovery codes once and then the console;
 * - the next sign-in shows the second-factor screen; a wrong code is refused
 *   in words; the right one opens the console;
 * - a recovery code works instead, once; the Security view tells what is
 *   left; an owner resets another admin's second factor there.
 * Screenshots of each screen go to test-artifacts/ (docs/images has copies).
 * Every page is watched for page errors, console errors and CSP violations.
 *
 * Without /usr/bin/chromium these tests skip with a loud warning; with
 * HERALD_REQUIRE_SERVICES=1 (CI) they fail instead.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { openWatched, type WatchedPage } from '../helpers/browser.ts';
import { awayFromStepEdge, createAdmin, PASSWORD, startConsoleHerald, stepNow, totpAt, type ConsoleHerald } from '../helpers/console.ts';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env['HERALD_REQUIRE_SERVICES'] === '1';
const available = existsSync(CHROMIUM);
if (!available && !required) {
  console.warn(`\n!!! SKIPPING console TOTP browser tests: ${CHROMIUM} not found (apt-get install -y chromium). CI sets HERALD_REQUIRE_SERVICES=1 and fails instead.\n`);
}

const artifacts = fileURLToPath(new URL('../../test-artifacts/', import.meta.url));

describe('console TOTP screens in Chromium', { skip: !available && !required, timeout: 300000 }, () => {
  let browser: Browser;
  let s: ConsoleHerald;
  let url: string;

  before(async () => {
    if (!available) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing: install it (apt-get install -y chromium)`);
    s = await startConsoleHerald({ enabled: true, mfa: { require: ['owner'] }, login: { addressDelayAfter: 1000, addressLockAfter: 10000 } });
    await createAdmin(s.stateDir, 'olivia', 'owner');
    await createAdmin(s.stateDir, 'vera', 'viewer');
    url = `http://127.0.0.1:${s.port}/console/`;
    mkdirSync(artifacts, { recursive: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    await browser?.close();
    await s?.close();
  });

  /** A fresh browser on the console, with page errors, console errors and CSP violations collected. */
  function open(): Promise<WatchedPage> {
    return openWatched(browser, url);
  }

  async function password(page: Page, name: string): Promise<void> {
    await page.fill('#login-name', name);
    await page.fill('#login-password', PASSWORD);
    await page.click('form button[type="submit"]');
  }

  let secret = '';
  let recoveryCodes: string[] = [];
  let confirmStep = 0;

  test('required enrolment: QR code and key, confirmed with a code from the key, recovery codes once, then the console', async () => {
    const { page, problems } = await open();
    await password(page, 'olivia');
    await page.waitForSelector('#totp-qr');
    // The QR code is an image the browser decoded (a data: URL made by the server; the CSP allows data: images only).
    assert.ok(await page.$eval('#totp-qr', (img) => (img as HTMLImageElement).complete && (img as HTMLImageElement).naturalWidth > 0), 'the QR image loaded');
    assert.match((await page.getAttribute('#totp-qr', 'src')) ?? '', /^data:image\/svg\+xml;base64,/);
    secret = ((await page.textContent('#totp-secret')) ?? '').replace(/\s/g, '');
    assert.match(secret, /^[A-Z2-7]{32}$/);
    await page.screenshot({ path: `${artifacts}console-totp-enrol.png` });
    // Nothing else is reachable before enrolment: no views in the page.
    assert.equal(await page.$('#whoami'), null);
    await page.fill('#totp-confirm-code', '000000' === totpAt(secret, stepNow()) ? '111111' : '000000');
    await page.click('#totp-enrol button[type="submit"]');
    await page.waitForSelector('#totp-enrol-error:text("wrong")');
    await awayFromStepEdge();
    confirmStep = stepNow();
    await page.fill('#totp-confirm-code', totpAt(secret, confirmStep));
    await page.click('#totp-enrol button[type="submit"]');
    await page.waitForSelector('#recovery-codes li');
    recoveryCodes = (await page.$$eval('#recovery-codes li', (items) => items.map((li) => li.textContent ?? ''))).map((c) => c.trim());
    assert.equal(recoveryCodes.length, 10);
    for (const code of recoveryCodes) assert.match(code, /^[A-Z2-7]{4}(-[A-Z2-7]{4}){3}$/);
    await page.screenshot({ path: `${artifacts}console-totp-recovery-codes.png` });
    await page.click('#recovery-codes-saved');
    await page.waitForSelector('#whoami');
    assert.match((await page.textContent('#whoami')) ?? '', /olivia\s*owner/);
    await page.waitForSelector('#overview-title');
    assert.deepEqual(await problems(), []);
  });

  test('second-factor screen: a wrong code is refused in words, the right one opens the console; a recovery code works once', async () => {
    assert.notEqual(secret, '', 'the enrolment test ran');
    const { page, problems } = await open();
    await password(page, 'olivia');
    await page.waitForSelector('#second-factor');
    await page.screenshot({ path: `${artifacts}console-totp-second-factor.png` });
    await page.fill('#second-factor-code', totpAt(secret, confirmStep));
    await page.click('#second-factor button[type="submit"]');
    await page.waitForSelector('#second-factor-error:text("already used")');
    assert.equal(await page.$('#whoami'), null);
    // The step after the one enrolment used: within ±1 of now for a minute or more.
    await page.fill('#second-factor-code', totpAt(secret, confirmStep + 1));
    await page.click('#second-factor button[type="submit"]');
    await page.waitForSelector('#whoami');

    await page.goto(`${url}#/security`);
    await page.waitForSelector('#totp-state:text("10 of 10")');
    await page.screenshot({ path: `${artifacts}console-totp-security.png`, fullPage: true });
    assert.deepEqual(await problems(), []);

    const other = await open();
    await password(other.page, 'olivia');
    await other.page.waitForSelector('#second-factor');
    await other.page.click('#second-factor-switch');
    await other.page.fill('#second-factor-code', recoveryCodes[0]!);
    await other.page.click('#second-factor button[type="submit"]');
    await other.page.waitForSelector('#whoami');
    await other.page.goto(`${url}#/security`);
    await other.page.waitForSelector('#totp-state:text("9 of 10")');
    const again = await open();
    await password(again.page, 'olivia');
    await again.page.waitForSelector('#second-factor');
    await again.page.click('#second-factor-switch');
    await again.page.fill('#second-factor-code', recoveryCodes[0]!);
    await again.page.click('#second-factor button[type="submit"]');
    await again.page.waitForSelector('#second-factor-error:text("already used")');
    assert.deepEqual(await other.problems(), []);
  });

  test('a viewer sets up TOTP from the Security view; the owner resets it there', async () => {
    const viewer = await open();
    await password(viewer.page, 'vera');
    await viewer.page.waitForSelector('#whoami');
    await viewer.page.goto(`${url}#/security`);
    await viewer.page.click('#totp-set-up');
    await viewer.page.waitForSelector('#totp-qr');
    const key = ((await viewer.page.textContent('#totp-secret')) ?? '').replace(/\s/g, '');
    await awayFromStepEdge();
    await viewer.page.fill('#totp-confirm-code', totpAt(key, stepNow()));
    await viewer.page.click('#totp-enrol button[type="submit"]');
    await viewer.page.waitForSelector('#recovery-codes li');
    await viewer.page.click('#recovery-codes-saved');
    await viewer.page.waitForSelector('#totp-state:text("10 of 10")');
    assert.deepEqual(await viewer.problems(), []);

    const owner = await open();
    await password(owner.page, 'olivia');
    await owner.page.waitForSelector('#second-factor');
    await owner.page.click('#second-factor-switch');
    await owner.page.fill('#second-factor-code', recoveryCodes[1]!);
    await owner.page.click('#second-factor button[type="submit"]');
    await owner.page.waitForSelector('#whoami');
    await owner.page.goto(`${url}#/security`);
    const row = owner.page.locator('#admin-factors tr[data-name="vera"]');
    await row.locator('td:text("on")').waitFor();
    owner.page.once('dialog', (dialog) => void dialog.accept());
    await row.locator('button:text("Reset")').click();
    await row.locator('td:text("off")').waitFor();
    // Vera's session ended with the reset: her page shows the sign-in at its next call.
    await viewer.page.goto(`${url}#/security`);
    await viewer.page.reload();
    await viewer.page.waitForSelector('#login-name');
    assert.deepEqual(await owner.problems(), []);
  });
});
