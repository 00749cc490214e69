/**
 * The console's Apps view in Chromium (playwright-core) against a real
 * Herald, each action checked from outside the console: an app created in
 * the view is served at once (a Pusher protocol client connects with its
 * key; its secret, shown once, is the one the server signs with), its
 * connections are the ones its cap counts (Pusher sockets and native
 * connections on its paths; the default app's Pusher sockets alone), an edit
 * reaches the server's registry (limits, origins, subscription counts, disabled), a rotated
 * secret replaces the old one, a deleted app's key is refused (4001).
 * Config apps are read only; an operator has no Apps view. The Connections
 * view finds a user of the app it is told (default: the default app):
 * another app's `ann` is found and disconnected apart from the server's
 * `ann`, shown with that app's channel names. The Channels view lists the
 * channels of the app it is told by that app's names and opens one (its
 * subscribers, presence, history; a test message reaches that app's
 * subscribers alone). No page error,
 * console error or CSP violation allowed.
 *
 * Without /usr/bin/chromium these tests skip with a loud warning; with
 * HERALD_REQUIRE_SERVICES=1 (CI) they fail instead.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { createAdmin, PASSWORD } from '../helpers/console.ts';
import { openWatched, type WatchedPage } from '../helpers/browser.ts';
import { RawPusher } from '../helpers/pusher-socket.ts';
import { closeAllClients, openWs, signToken, type WsClient } from '../helpers/herald-ws.ts';
import { disconnects } from '@herald/protocol';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env['HERALD_REQUIRE_SERVICES'] === '1';
const available = existsSync(CHROMIUM);
if (!available && !required) {
  console.warn(`\n!!! SKIPPING the Apps view browser test: ${CHROMIUM} not found (apt-get install -y chromium). CI sets HERALD_REQUIRE_SERVICES=1 and fails instead.\n`);
}

describe('console Apps view in Chromium', { skip: !available && !required, timeout: 180000 }, () => {
  let browser: Browser;
  let h: TestHerald;
  let dir: string;
  let consoleUrl: string;
  const shopSecret = randomBytes(16).toString('hex');
  const contexts: BrowserContext[] = [];
  const raws: RawPusher[] = [];

  before(async () => {
    if (!available) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing: install it (apt-get install -y chromium)`);
    dir = mkdtempSync(join(tmpdir(), 'herald-apps-browser-'));
    writeFileSync(join(dir, 'cfg.secret'), randomBytes(16).toString('hex'), { mode: 0o600 });
    writeFileSync(join(dir, 'shop.secret'), shopSecret, { mode: 0o600 });
    const stateDir = join(dir, 'state');
    const list = [
      { id: 'cfg', key: 'cfg-key', name: 'From config', secretFile: join(dir, 'cfg.secret') },
      { id: 'shop', key: 'shop-key', name: 'Shop', secretFile: join(dir, 'shop.secret') },
    ];
    h = await startHerald({ stateDir, admin: { console: { enabled: true } }, apps: { default: 'cfg', list } });
    await createAdmin(stateDir, 'olivia', 'owner');
    await createAdmin(stateDir, 'otto', 'operator');
    consoleUrl = `http://127.0.0.1:${h.server.adminPort}/console/`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    for (const raw of raws) raw.close();
    closeAllClients();
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await h?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  async function consoleAs(name: string, view: string): Promise<WatchedPage> {
    const opened = await openWatched(browser, `${consoleUrl}${view}`);
    contexts.push(opened.context);
    await opened.page.fill('#login-name', name);
    await opened.page.fill('#login-password', PASSWORD);
    await opened.page.click('form button[type="submit"]');
    await opened.page.waitForSelector('#whoami');
    return opened;
  }

  function pusherSocket(key: string): RawPusher {
    const raw = new RawPusher(`ws://127.0.0.1:${h.server.port}/app/${key}?protocol=7&client=test&version=1.0.0`);
    raws.push(raw);
    return raw;
  }

  test('an owner creates, edits, rotates and deletes an app; the server follows each step', async () => {
    const opened = await consoleAs('olivia', '#/apps');
    const { page } = opened;
    await page.waitForSelector('#apps-title');
    // The config's app: listed, read only.
    const configRow = page.locator('tr[data-app="cfg"]');
    await configRow.waitFor();
    assert.match((await configRow.textContent()) ?? '', /change it in the config file/);
    assert.equal(await configRow.locator('button').count(), 0);

    // Create: the secret shown once is the one the server has.
    await page.fill('#app-name', 'Shop');
    await page.check('#app-client-events');
    await page.click('#create-app button[type="submit"]');
    await page.waitForSelector('#secret-value');
    const secret = ((await page.textContent('#secret-value')) ?? '').trim();
    assert.match(secret, /^[0-9a-f]{32}$/);
    const row = page.locator('tr[data-source="store"]');
    await row.waitFor();
    const id = (await row.getAttribute('data-app'))!;
    const key = ((await row.locator('[data-field="key"]').textContent()) ?? '').trim();
    const served = h.server.apps.byKey(key);
    assert.equal(served?.id, id);
    assert.equal(served?.secret, secret);
    assert.equal(served?.clientEvents, true);
    assert.equal(served?.subscriptionCount, false, 'subscription counts left unchecked');
    assert.match(await pusherSocket(key).established(), /^\d+\.\d+$/, 'a Pusher client connects with the new key');
    await page.click('.secret button:text("Done")');

    // Connections, as the app's maxConnections counts them on this node: its Pusher socket and a
    // native connection on its paths; the default app's Pusher socket (its native paths are the server's).
    const native = await openWs(`ws://127.0.0.1:${h.server.port}/apps/${id}/connection/websocket`);
    await native.connect(await signToken(secret, { sub: 'ann', exp: Math.floor(Date.now() / 1000) + 600 }));
    await pusherSocket('cfg-key').established();
    await page.reload();
    await row.waitFor();
    assert.equal(((await row.locator('[data-field="connections"]').textContent()) ?? '').trim(), '2 (1 Pusher, 1 native)');
    assert.match(((await configRow.locator('[data-field="connections"]').textContent()) ?? '').trim(), /^1 Pusher \(its native connections are the server's/);
    await native.close();

    // Edit: limits, origins, disabled.
    await row.locator('button[data-action="edit"]').click();
    await page.waitForSelector('#edit-app');
    await page.fill('#edit-name', 'Shop (paused)');
    await page.uncheck('#edit-enabled');
    await page.check('#edit-subscription-count');
    await page.fill('#limit-maxConnections', '5');
    await page.fill('#limit-maxPendingWebhookEvents', '500');
    await page.fill('#edit-origins', 'https://shop.example');
    await page.click('#edit-app button[type="submit"]');
    await page.waitForSelector(`tr[data-app="${id}"][data-enabled="false"]`);
    const edited = h.server.apps.byId(id)!;
    assert.equal(edited.name, 'Shop (paused)');
    assert.equal(edited.enabled, false);
    assert.equal(edited.subscriptionCount, true);
    assert.equal(((await row.locator('[data-field="subscription-count"]').textContent()) ?? '').trim(), 'on');
    assert.equal(edited.limits.maxConnections, 5);
    assert.equal(edited.limits.maxPendingWebhookEvents, 500);
    assert.equal(edited.limits.maxEventPayloadBytes, 10240);
    assert.deepEqual(edited.allowedOrigins, ['https://shop.example']);
    // A bad value is refused in words, naming the field.
    await row.locator('button[data-action="edit"]').click();
    await page.fill('#edit-webhooks', '[{"url": "ftp://nope", "events": ["channel_occupied"]}]');
    await page.click('#edit-app button[type="submit"]');
    await page.waitForSelector('#edit-app .status.error:text("webhooks")');
    await page.click('#edit-app button:text("Cancel")');

    // Rotate: a new secret, shown once, in force at once.
    await row.locator('button[data-action="rotate"]').click();
    await row.locator('button[data-action="rotate-confirm"]').click();
    await page.waitForFunction((old) => {
      const value = document.querySelector('#secret-value')?.textContent?.trim();
      return value !== undefined && value !== old;
    }, secret);
    const rotated = ((await page.textContent('#secret-value')) ?? '').trim();
    assert.match(rotated, /^[0-9a-f]{32}$/);
    assert.equal(h.server.apps.byId(id)?.secret, rotated);
    await page.click('.secret button:text("Done")');

    // Delete, confirmed: the row goes, the key is refused.
    await row.locator('button[data-action="delete"]').click();
    await row.locator('button[data-action="delete-confirm"]').click();
    await page.waitForSelector(`tr[data-app="${id}"]`, { state: 'detached' });
    assert.equal(h.server.apps.byKey(key), undefined);
    assert.equal((await pusherSocket(key).closed).code, 4001);
    // The one refused request (the bad webhook) is the browser's 400 line, nothing else.
    assert.deepEqual(
      (await opened.problems()).filter((p) => !p.includes('status of 400')),
      [],
    );

  });

  test('an operator finds, and disconnects, the user ann of the app Shop; the server\'s ann stays', async () => {
    const native = async (url: string, token: string): Promise<WsClient> => {
      const client = await openWs(url);
      await client.connect(token);
      await client.call('subscribe', { channel: 'room' });
      return client;
    };
    const serverAnn = await native(h.wsUrl, await h.token('ann'));
    const now = Math.floor(Date.now() / 1000);
    const shopAnn = await native(`ws://127.0.0.1:${h.server.port}/apps/shop/connection/websocket`, await signToken(shopSecret, { sub: 'ann', iat: now, exp: now + 600 }));

    const opened = await consoleAs('otto', '#/connections');
    const { page } = opened;
    await page.waitForSelector('#connections-app option[value="shop"]', { state: 'attached' });
    // The default app's ann first (no choice made): one connection.
    await page.fill('#connections-user', 'ann');
    await page.click('form[role="search"] button[type="submit"]');
    await page.waitForSelector('#connections-table tbody tr');
    assert.equal(await page.locator('#connections-table tbody tr').count(), 1);
    const serverClient = await page.getAttribute('#connections-table tbody tr', 'data-client');
    // Shop's ann: another connection, on Shop's channel as Shop names it.
    await page.selectOption('#connections-app', 'shop');
    await page.click('form[role="search"] button[type="submit"]');
    await page.waitForFunction((before) => {
      const rows = document.querySelectorAll('#connections-table tbody tr');
      return rows.length === 1 && rows[0]!.getAttribute('data-client') !== before;
    }, serverClient);
    const row = ((await page.textContent('#connections-table tbody tr')) ?? '').trim();
    assert.match(row, /^ann\s*websocket.*room/);
    assert.ok(!((await page.textContent('main')) ?? '').includes('~'), 'no server-internal name on the page');

    await page.click('button[data-action="disconnect"]');
    await page.click('button[data-action="disconnect-confirm"]');
    assert.equal((await shopAnn.waitClose(10000)).code, disconnects.force_disconnect.code);
    await page.waitForSelector('.status.ok:has-text("ann of Shop (shop) disconnected")');
    await page.waitForSelector('.empty:has-text("No connection for ann of Shop (shop)")');
    // The server's ann is another user: still connected, and found from a link that names no app.
    await page.goto(`${consoleUrl}#/connections?user=ann`);
    await page.waitForSelector('#connections-table tbody tr');
    assert.equal(await page.getAttribute('#connections-table tbody tr', 'data-client'), serverClient);
    assert.equal(serverAnn.closeInfo, undefined);
    assert.deepEqual(await opened.problems(), []);
  });

  test('the Channels view lists Shop\'s channels by Shop\'s names and opens one: its subscribers, presence, history; a test message reaches Shop\'s subscriber alone', async () => {
    const room = `chat:${randomBytes(4).toString('hex')}`;
    const now = Math.floor(Date.now() / 1000);
    const subscriber = async (url: string, token: string): Promise<WsClient> => {
      const client = await openWs(url);
      await client.connect(token);
      await client.call('subscribe', { channel: room });
      return client;
    };
    const serverBob = await subscriber(h.wsUrl, await h.token('bob'));
    const shopBob = await subscriber(`ws://127.0.0.1:${h.server.port}/apps/shop/connection/websocket`, await signToken(shopSecret, { sub: 'bob', iat: now, exp: now + 600 }));
    assert.equal((await h.api('publish', { channel: room, data: { text: 'server only' } })).status, 200);

    const opened = await consoleAs('otto', '#/channels');
    const { page } = opened;
    await page.waitForSelector('#channels-app option[value="shop"]', { state: 'attached' });
    // The default app's channels first: the server's room, once.
    await page.fill('#channel-prefix', room);
    await page.click('form[role="search"] button[type="submit"]');
    await page.waitForSelector(`#channels-table tr[data-channel="${room}"]`);
    assert.equal(await page.locator('#channels-table tbody tr').count(), 1);
    // Shop's: its own room, by Shop's name; then opened.
    await page.selectOption('#channels-app', 'shop');
    await page.click('form[role="search"] button[type="submit"]');
    await page.waitForSelector(`#channels-table tr[data-channel="${room}"] a[href$="?app=shop"]`);
    assert.ok(!((await page.textContent('main')) ?? '').includes('~'), 'no server-internal name in the list');
    await page.click(`#channels-table tr[data-channel="${room}"] a`);
    await page.waitForSelector('#channel-subscribers');
    assert.match((await page.textContent('#channel-name')) ?? '', new RegExp(`^${room} of Shop \\(shop\\)$`));
    assert.equal(await page.textContent('#channel-subscribers'), '1');
    await page.waitForSelector('#channel-presence li:has-text("bob")');
    assert.equal(await page.getAttribute('#channel-presence li a', 'href'), '#/connections?user=bob&app=shop');
    assert.match(await page.textContent('body').then((t) => t ?? ''), /No publications in history/, 'Shop\'s room has not the server\'s publication');

    // A test message: Shop's bob gets it, the server's bob does not (its next publication is the marker).
    await page.fill('#publish-data', '{"text":"from the console to the shop"}');
    await page.click('form.card button[type="submit"]');
    await shopBob.push('publication', room, (frame) => JSON.stringify(frame).includes('from the console to the shop'));
    await page.waitForSelector('#channel-history li:has-text("from the console to the shop")');
    assert.ok(!((await page.textContent('main')) ?? '').includes('~'), 'no server-internal name in the detail');
    assert.equal((await h.api('publish', { channel: room, data: 'marker' })).status, 200);
    assert.equal((await serverBob.waitMarker(room, 'marker')).length, 2, 'the server\'s bob got its two publications, none of Shop\'s');
    // Back to the list keeps the app.
    await page.click('a:text("All channels")');
    await page.waitForSelector(`#channels-table tr[data-channel="${room}"] a[href$="?app=shop"]`);
    assert.deepEqual(await opened.problems(), []);
  });

  test('an operator has no Apps view: no link, and the view says the role does not allow it', async () => {
    const opened = await consoleAs('otto', '#/apps');
    const { page } = opened;
    assert.equal(await page.locator('nav a[href="#/apps"]').count(), 0);
    await page.waitForSelector('#apps-title');
    await page.waitForSelector('.status.error:text("role does not allow")');
    assert.deepEqual(
      (await opened.problems()).filter((p) => !p.includes('403')),
      [],
    );
  });
});
