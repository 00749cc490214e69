/**
 * The admin console in a real browser (Debian's Chromium through
 * playwright-core) against a real Herald: sign-in, the live overview (the
 * charts move after publishes and connections), each action with its
 * effect checked from outside the console (the user's WebSocket really
 * closes, a revoked user's token really stops connecting, a created key
 * really publishes and after revoke really stops, a rotated key's old
 * secret stops), the audit log and its export, sign-out, the idle timeout
 * (a server with a short `admin.console.sessionIdleMs`), a 390 px wide
 * screen and the keyboard alone. Every page is watched for page errors,
 * console errors and Content-Security-Policy violations (the console's CSP
 * has no `unsafe-inline`; uPlot styles through the CSSOM): none allowed.
 *
 * Without /usr/bin/chromium these tests skip with a loud warning; with
 * HERALD_REQUIRE_SERVICES=1 (CI) they fail instead.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, eventually, openWs, unique } from '../helpers/herald-ws.ts';
import { createAdmin, PASSWORD } from '../helpers/console.ts';
import { openWatched, type WatchedPage } from '../helpers/browser.ts';
import { disconnects } from '@herald/protocol';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env['HERALD_REQUIRE_SERVICES'] === '1';
const available = existsSync(CHROMIUM);
if (!available && !required) {
  console.warn(`\n!!! SKIPPING console browser tests: ${CHROMIUM} not found (apt-get install -y chromium). CI sets HERALD_REQUIRE_SERVICES=1 and fails instead.\n`);
}

const artifacts = new URL('../../test-artifacts/', import.meta.url);

type Opened = WatchedPage;

interface Server {
  readonly h: TestHerald;
  readonly stateDir: string;
  /** `http://127.0.0.1:ADMIN_PORT/console/` */
  readonly consoleUrl: string;
}

async function startConsoleHerald(console: Record<string, unknown> = {}): Promise<Server> {
  const stateDir = mkdtempSync(join(tmpdir(), 'herald-console-browser-'));
  const h = await startHerald({ stateDir, admin: { console: { enabled: true, ...console } } });
  await createAdmin(stateDir, 'olivia', 'owner');
  await createAdmin(stateDir, 'otto', 'operator');
  await createAdmin(stateDir, 'vera', 'viewer');
  return { h, stateDir, consoleUrl: `http://127.0.0.1:${h.server.adminPort}/console/` };
}

describe('admin console in Chromium', { skip: !available && !required, timeout: 300000 }, () => {
  let browser: Browser;
  let s: Server;
  const contexts: BrowserContext[] = [];

  before(async () => {
    if (!available) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing: install it (apt-get install -y chromium)`);
    s = await startConsoleHerald();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
  });

  afterEach(() => closeAllClients());

  after(async () => {
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await s?.h.close();
    if (s !== undefined) rmSync(s.stateDir, { recursive: true, force: true });
  });

  async function open(url: string, width = 1280): Promise<Opened> {
    const opened = await openWatched(browser, url, width);
    contexts.push(opened.context);
    return opened;
  }

  async function signIn(opened: Opened, name: string, password = PASSWORD): Promise<void> {
    const { page } = opened;
    await page.fill('#login-name', name);
    await page.fill('#login-password', password);
    await page.click('form button[type="submit"]');
    await page.waitForSelector('#whoami');
  }

  async function consoleAs(name: string, width = 1280, view = ''): Promise<Opened> {
    const opened = await open(`${s.consoleUrl}${view}`, width);
    await signIn(opened, name);
    return opened;
  }

  test('sign-in: a wrong password is refused in words; the right one shows the overview with who is signed in', async () => {
    const opened = await open(s.consoleUrl);
    const { page } = opened;
    await page.fill('#login-name', 'olivia');
    await page.fill('#login-password', 'not the password at all');
    await page.click('form button[type="submit"]');
    await page.waitForSelector('#login-error:text("wrong")');
    assert.equal(await page.inputValue('#login-password'), '', 'the password field is cleared');
    await signIn(opened, 'olivia');
    assert.match((await page.textContent('#whoami')) ?? '', /olivia\s*owner/);
    await page.waitForSelector('#overview-title');
    await page.waitForSelector('#stream-state:text("live")');
    assert.deepEqual(await opened.problems(), []);
  });

  test('the CSP is enforced and watched: an inline script injected into the page does not run, and is reported', async () => {
    const opened = await open(s.consoleUrl);
    const { page } = opened;
    await page.waitForSelector('#login-name');
    assert.deepEqual(await opened.problems(), []);
    await page.evaluate(() => {
      const script = document.createElement('script');
      script.textContent = 'window.inlineRan = true';
      document.head.append(script);
    });
    await page.waitForFunction(() => ((window as unknown as { cspViolations?: string[] }).cspViolations ?? []).length > 0);
    assert.equal(await page.evaluate(() => (window as unknown as { inlineRan?: boolean }).inlineRan), undefined, 'the inline script did not run');
    assert.ok((await opened.problems()).some((problem) => problem.startsWith('csp: script-src')), 'the violation is collected');
  });

  test('overview: the charts move after publishes and a connection (one sample a second over the stream)', async () => {
    const opened = await consoleAs('olivia');
    const { page } = opened;
    await page.waitForFunction(() => Number(document.querySelector('#chart-rates')?.getAttribute('data-points')) >= 2);
    const ws = await connectWs(s.h, 'watcher');
    const channel = `chat:${unique('ov')}`;
    await ws.call('subscribe', { channel });
    // Publish until the chart shows publications and deliveries (each sample covers one second; bounded in count).
    let sent = 0;
    let done = false;
    const publishing = (async () => {
      while (!done && sent < 2000) {
        const answer = await s.h.api('publish', { channel, data: { n: sent } });
        assert.equal(answer.status, 200);
        sent++;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    })();
    try {
      await eventually(
        async () => {
          const last = (await page.getAttribute('#chart-rates', 'data-last')) ?? '';
          const [publications = 0, deliveries = 0] = last.split(',').map(Number);
          return publications > 0 && deliveries > 0 ? last : undefined;
        },
        'publications and deliveries on the chart',
        60000,
      );
    } finally {
      done = true;
      await publishing;
    }
    const connections = await eventually(
      async () => {
        const [websocket = 0] = ((await page.getAttribute('#chart-connections', 'data-last')) ?? '').split(',').map(Number);
        return websocket >= 1 ? websocket : undefined;
      },
      'the WebSocket connection on the chart',
      30000,
    );
    assert.ok(connections >= 1);
    const subscriptions = Number((await page.getAttribute('#chart-subscriptions', 'data-last')) ?? '0');
    assert.ok(subscriptions >= 1, 'the subscription is counted');
    // Per node: the table has this node with its loop delay and memory; the watchdog line is there.
    assert.ok((await page.locator('#nodes-table tbody tr').count()) >= 1);
    await page.waitForSelector('#watchdog-ok, #watchdog-flags');
    assert.ok((await page.locator('#chart-heap canvas').count()) === 1, 'uPlot drew the heap chart');
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: new URL('console-overview.png', artifacts).pathname, fullPage: true });
    assert.deepEqual(await opened.problems(), []);
  });

  test('channels: search, detail with subscribers, presence, stream position and history; a test message reaches a subscriber', async () => {
    const room = unique('room');
    const channel = `chat:${room}`;
    const bob = await connectWs(s.h, 'bob');
    await bob.call('subscribe', { channel });
    assert.equal((await s.h.api('publish', { channel, data: { text: 'first' } })).status, 200);
    const opened = await consoleAs('otto', 1280, '#/channels');
    const { page } = opened;
    await page.fill('#channel-prefix', `chat:${room.slice(0, 6)}`);
    await page.click('form[role="search"] button[type="submit"]');
    await page.click(`#channels-table tr[data-channel="${channel}"] a`);
    await page.waitForSelector('#channel-subscribers');
    assert.equal(await page.textContent('#channel-subscribers'), '1');
    await page.waitForSelector('#channel-presence li:has-text("bob")');
    assert.match((await page.textContent('#channel-stream')) ?? '', /offset 1\b/);
    assert.match((await page.textContent('#channel-history')) ?? '', /first/);
    await page.fill('#publish-data', '{"text":"from the console"}');
    await page.click('button:text("Publish to")');
    await bob.push('publication', channel, (frame) => JSON.stringify(frame).includes('from the console'));
    await page.waitForSelector('#channel-history li:has-text("from the console")');
    assert.deepEqual(await opened.problems(), []);
  });

  test('connections: find a user, disconnect (the WebSocket really closes), revoke the user (the old token stops connecting)', async () => {
    const user = unique('carol');
    const token = await s.h.token(user);
    const first = await connectWs(s.h, user);
    const opened = await consoleAs('otto', 1280, `#/connections?user=${user}`);
    const { page } = opened;
    await page.waitForSelector('#connections-table tbody tr');
    assert.equal(await page.locator('#connections-table tbody tr').count(), 1);
    assert.match((await page.textContent('#connections-table tbody tr')) ?? '', /websocket/i);
    await page.click('button[data-action="disconnect"]');
    await page.click('button[data-action="disconnect-confirm"]');
    await first.waitClose(10000);
    await page.waitForSelector('.status.ok:has-text("disconnected")');

    // Revoke: a token issued before now no longer connects.
    const again = await connectWs(s.h, user);
    await page.click('button[data-action="revoke-user"]');
    await page.click('button[data-action="revoke-user-confirm"]');
    await again.waitClose(10000);
    await page.waitForSelector('.status.ok:has-text("revoked")');
    const late = await openWs(s.h.wsUrl);
    late.send({ id: 1, method: 'connect', params: { token } });
    const refused = await late.waitClose(10000);
    assert.equal(refused.code, disconnects.revoked.code, 'the revoked token is refused');
    assert.deepEqual(await opened.problems(), []);
  });

  test('API keys: create (the secret shown once) really publishes; rotate stops the old secret; revoke stops the new one', async () => {
    const opened = await consoleAs('olivia', 1280, '#/keys');
    const { page } = opened;
    const name = unique('key');
    await page.fill('#key-name', name);
    await page.check('input[name="scope"][value="publish"]');
    await page.click('button:text("Create key")');
    const secret = ((await page.textContent('#secret-value')) ?? '').trim();
    assert.ok(secret.length >= 20, 'a secret is shown');
    await page.click('button:text("Done")');
    assert.equal(await page.locator('#secret-value').count(), 0, 'and not shown again');
    const row = page.locator(`#keys-table tr[data-name="${name}"]`);
    await row.waitFor();
    const prefix = ((await row.locator('td[data-field="prefix"]').textContent()) ?? '').replace('…', '');
    assert.ok(prefix.length >= 4 && secret.startsWith(prefix), 'the list shows the public prefix of the key');
    const channel = `public:${unique('k')}`;
    assert.equal((await s.h.api('publish', { channel, data: 1 }, secret)).status, 200, 'the new key publishes');

    await row.locator('button[data-action="rotate"]').click();
    await row.locator('button[data-action="rotate-confirm"]').click();
    await page.waitForSelector('#secret-value');
    const rotated = ((await page.textContent('#secret-value')) ?? '').trim();
    const rotatedName = (await page.getAttribute('section.secret', 'data-key')) ?? '';
    assert.notEqual(rotated, secret);
    assert.ok(rotatedName !== '' && rotatedName !== name, 'rotation makes a new key');
    await page.click('button:text("Done")');
    await page.waitForSelector(`#keys-table tr[data-name="${name}"][data-status="expired"]`);
    // The key store is shared through the state file: every listener sees the change soon, not within this call.
    await eventually(async () => ((await s.h.api('publish', { channel, data: 2 }, secret)).status === 401 ? true : undefined), 'the old secret refused', 15000);
    assert.equal((await s.h.api('publish', { channel, data: 3 }, rotated)).status, 200, 'the rotated secret publishes');

    const next = page.locator(`#keys-table tr[data-name="${rotatedName}"]`);
    await next.locator('button[data-action="revoke"]').click();
    await next.locator('button[data-action="revoke-confirm"]').click();
    await page.waitForSelector('.status.ok:has-text("revoked")');
    await eventually(async () => ((await s.h.api('publish', { channel, data: 4 }, rotated)).status === 401 ? true : undefined), 'the revoked key refused', 15000);
    assert.match((await next.locator('td[data-field="last-used"]').textContent()) ?? '', /\d/, 'its last use is shown');
    assert.deepEqual(await opened.problems(), []);
  });

  test('audit log: sign-ins and actions are listed, filterable, and exported as JSON lines', async () => {
    // otto signs in and publishes a test message: both are in the log.
    const otto = await consoleAs('otto', 1280, `#/channels/${encodeURIComponent('chat:audited')}`);
    await otto.page.click('button:text("Publish to")');
    await otto.page.waitForSelector('.status.ok:has-text("Published")');
    await otto.context.close();
    const opened = await consoleAs('olivia', 1280, '#/audit');
    const { page } = opened;
    await page.waitForSelector('#audit-table tbody tr');
    await page.fill('#audit-actor', 'otto');
    await page.click('form.filters button[type="submit"]');
    await page.waitForFunction(() => Array.from(document.querySelectorAll('#audit-table tbody tr td:nth-child(2)')).every((td) => td.textContent === 'otto'));
    const actions = await page.$$eval('#audit-table tbody tr', (rows) => rows.map((row) => row.getAttribute('data-action')));
    assert.ok(actions.includes('console.login'), `otto's sign-in is there: ${actions.join(', ')}`);
    assert.ok(actions.some((action) => action?.includes('publish')), `otto's test message is there: ${actions.join(', ')}`);
    const href = await page.getAttribute('#audit-export', 'href');
    assert.ok(href !== null && href.includes('actor=otto'));
    const exported = await page.evaluate(async (url) => {
      const response = await fetch(url);
      return { type: response.headers.get('content-type'), text: await response.text() };
    }, href);
    assert.match(exported.type ?? '', /ndjson/);
    const lines = exported.text.trim().split('\n').map((line) => JSON.parse(line) as { actor: string });
    assert.ok(lines.length > 0 && lines.every((entry) => entry.actor === 'otto'));
    assert.deepEqual(await opened.problems(), []);
  });

  test('hostile input in every form field (SQL-looking, oversized, control characters): answered in words, nothing breaks', async () => {
    const opened = await consoleAs('olivia', 1280, '#/channels');
    const { page } = opened;
    const hostile = ["' OR 1=1 --", 'x'.repeat(5000), 'a\u0000b', '<img src=x onerror=alert(1)>'];
    for (const value of hostile) {
      await page.fill('#channel-prefix', value);
      await page.click('form[role="search"] button[type="submit"]');
      await page.waitForSelector('.status.error, .empty, #channels-table');
    }
    await page.click('nav a[href="#/connections"]');
    for (const value of hostile) {
      await page.fill('#connections-user', value);
      await page.click('form[role="search"] button[type="submit"]');
      await page.waitForSelector('.status.error, .empty, #connections-table');
    }
    await page.click('nav a[href="#/keys"]');
    for (const value of hostile) {
      await page.fill('#key-name', value);
      await page.click('button:text("Create key")');
      await page.waitForSelector('.status.error');
      assert.equal(await page.locator('#secret-value').count(), 0, `no key made from ${JSON.stringify(value.slice(0, 20))}`);
    }
    const names = await page.$$eval('#keys-table tbody tr', (rows) => rows.map((row) => row.getAttribute('data-name') ?? ''));
    assert.deepEqual(names.filter((name) => hostile.includes(name)), [], 'no key has a hostile name');
    assert.match((await page.textContent('.status.error')) ?? '', /invalid|name/i, 'the refusal is said in words');
    await page.click('nav a[href="#/audit"]');
    for (const value of hostile) {
      await page.fill('#audit-actor', value);
      await page.fill('#audit-action', value);
      await page.click('form.filters button[type="submit"]');
      await page.waitForSelector('.status.error, .empty, #audit-table');
    }
    // Markup typed by someone is shown as text, never run: nothing was injected.
    assert.equal(await page.locator('img[src="x"]').count(), 0);
    // Still signed in, still working.
    await page.click('nav a[href="#/overview"]');
    await page.waitForSelector('#stream-state:text("live")');
    // The server refused these with 400: Chromium logs each refused fetch; nothing else may appear.
    assert.deepEqual((await opened.problems()).filter((p) => !/status of 400/.test(p)), []);
  });

  test('roles: a viewer sees no actions and no API keys', async () => {
    const opened = await consoleAs('vera', 1280, '#/connections');
    const { page } = opened;
    await page.waitForSelector('#connections-title');
    assert.equal(await page.locator('nav a[href="#/keys"]').count(), 0);
    assert.equal(await page.locator('nav a[href="#/audit"]').count(), 0);
    assert.equal(await page.locator('#token-id').count(), 0);
    assert.deepEqual(await opened.problems(), []);
  });

  test('sign out: the page shows the sign-in form and the session is gone on the server', async () => {
    const opened = await consoleAs('olivia');
    const { page } = opened;
    await page.click('#sign-out');
    await page.waitForSelector('#login-name');
    assert.match((await page.textContent('#login-notice')) ?? '', /Signed out/);
    const status = await page.evaluate(async () => (await fetch('api/session')).status);
    assert.equal(status, 401);
    await page.reload();
    await page.waitForSelector('#login-name');
    assert.deepEqual(await opened.problems(), []);
  });

  test('390 px wide: every view fits, the navigation is reachable, nothing scrolls sideways', async () => {
    const opened = await consoleAs('olivia', 390);
    const { page } = opened;
    for (const view of ['overview', 'channels', 'connections', 'keys', 'audit']) {
      await page.click(`nav a[href="#/${view}"]`);
      await page.waitForSelector(`#${view === 'keys' ? 'keys' : view}-title`);
      const box = await page.locator(`nav a[href="#/${view}"]`).boundingBox();
      assert.ok(box !== null && box.x >= 0 && box.x + box.width <= 390, `${view}: the link is on screen`);
      assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), `${view}: no horizontal scrolling`);
    }
    await page.click('nav a[href="#/overview"]');
    await page.waitForFunction(() => Number(document.querySelector('#chart-rates')?.getAttribute('data-points')) >= 2);
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: new URL('console-overview-390.png', artifacts).pathname, fullPage: true });
    assert.deepEqual(await opened.problems(), []);
  });

  test('keyboard alone: sign in with Tab and Enter, move between views, confirm an action', async () => {
    const opened = await open(s.consoleUrl);
    const { page } = opened;
    await page.focus('#login-name');
    await page.keyboard.type('olivia');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'login-password');
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.tagName), 'BUTTON');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#whoami');
    // The first Tab reaches "skip to content", then the views in order.
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Skip to content');
    await page.keyboard.press('Tab');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('href')), '#/channels');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#channels-title');
    const unlabeled = await page.evaluate(() =>
      Array.from(document.querySelectorAll('input, textarea, select')).filter((el) => (el as HTMLInputElement).labels?.length === 0 && !el.getAttribute('aria-label')).map((el) => el.outerHTML),
    );
    assert.deepEqual(unlabeled, [], 'every field has a label');
    const fakeButtons = await page.evaluate(() => Array.from(document.querySelectorAll('[onclick], div[role="button"], span[role="button"]')).length);
    assert.equal(fakeButtons, 0, 'buttons are buttons');

    // An action confirmed with the keyboard: Enter asks, the focus moves to "Yes", Enter does it.
    const user = unique('kim');
    const kim = await connectWs(s.h, user);
    await page.click('nav a[href="#/connections"]');
    await page.focus('#connections-user');
    await page.keyboard.type(user);
    await page.keyboard.press('Enter');
    await page.waitForSelector('#connections-table tbody tr');
    await page.focus('button[data-action="disconnect"]');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.activeElement?.getAttribute('data-action') === 'disconnect-confirm');
    await page.keyboard.press('Enter');
    await kim.waitClose(10000);
    assert.deepEqual(await opened.problems(), []);
  });
});

describe('admin console idle timeout in Chromium', { skip: !available && !required, timeout: 120000 }, () => {
  test('a page left alone past the idle timeout shows the sign-in form by itself, and the session is gone', async () => {
    if (!available) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing`);
    const s = await startConsoleHerald({ sessionIdleMs: 2000 });
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
    try {
      const page = await browser.newPage();
      const problems: string[] = [];
      page.on('pageerror', (error) => problems.push(error.message));
      await page.goto(`${s.consoleUrl}#/channels`);
      await page.fill('#login-name', 'olivia');
      await page.fill('#login-password', PASSWORD);
      await page.click('form button[type="submit"]');
      await page.waitForSelector('#whoami');
      // No sleep with a threshold: wait (bounded by the test timeout) for the page to notice on its own.
      await page.waitForSelector('#login-notice', { timeout: 60000 });
      assert.match((await page.textContent('#login-notice')) ?? '', /session has ended/i);
      assert.equal(await page.evaluate(async () => (await fetch('api/session')).status), 401);
      assert.deepEqual(problems, []);
    } finally {
      await browser.close();
      await s.h.close();
      rmSync(s.stateDir, { recursive: true, force: true });
    }
  });
});
