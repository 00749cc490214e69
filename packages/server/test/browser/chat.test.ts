/**
 * The chat example in a real browser (Debian's Chromium through
 * playwright-core), on each transport: two pages join a room and exchange
 * messages, presence shows both, then one page goes offline, the server
 * drops its connection, the other page keeps talking, and when the first
 * comes back it shows exactly what it missed, in order, once. A screenshot
 * of the chat goes to test-artifacts/chat.png (390 px wide: chat-390.png).
 *
 * And what a first-time user needs: the page says who they are and how they
 * are connected (not internal ids or offsets), which characters a name may
 * use; rooms are shared between users; rooms and people are reachable on a
 * 390 px wide screen; and "offline" shows on every transport, whether the
 * browser goes offline or the server goes away (a real `herald serve`
 * process, killed with SIGKILL).
 *
 * Without /usr/bin/chromium these tests skip with a loud warning; with
 * HERALD_REQUIRE_SERVICES=1 (CI) they fail instead.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { HeraldProcess } from '../helpers/herald-process.ts';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env['HERALD_REQUIRE_SERVICES'] === '1';
const available = existsSync(CHROMIUM);
if (!available && !required) {
  console.warn(`\n!!! SKIPPING browser tests: ${CHROMIUM} not found (apt-get install -y chromium). CI sets HERALD_REQUIRE_SERVICES=1 and fails instead.\n`);
}

const artifacts = new URL('../../test-artifacts/', import.meta.url);
const transports = ['websocket', 'sse', 'long-poll'] as const;

describe('chat example in Chromium', { skip: !available && !required, timeout: 300000 }, () => {
  let h: TestHerald;
  let browser: Browser;
  const contexts: BrowserContext[] = [];

  before(async () => {
    if (!available) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing: install it (apt-get install -y chromium)`);
    // Development mode serves the example (packages/server/src/app/demo.ts); `chat` has presence, join/leave and client publish.
    h = await startHerald({ mode: 'development' });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'],
    });
  });

  after(async () => {
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await h?.close();
  });

  async function openPage(url: string, width = 1100): Promise<{ page: Page; context: BrowserContext; problems: string[] }> {
    const context = await browser.newContext({ viewport: { width, height: width < 500 ? 844 : 680 } });
    contexts.push(context);
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' && !message.text().includes('net::ERR_INTERNET_DISCONNECTED')) problems.push(`console: ${message.text()}`);
    });
    await page.goto(url);
    return { page, context, problems };
  }

  async function openChat(user: string, room: string, transport: string, options: { width?: number; base?: string } = {}): Promise<{ page: Page; context: BrowserContext; problems: string[] }> {
    const { page, context, problems } = await openPage(`${options.base ?? h.url}/examples/chat/?user=${user}&room=${room}&transport=${transport}`, options.width);
    await page.waitForSelector('body[data-connection="connected"]');
    assert.equal(await page.getAttribute('body', 'data-transport'), transport);
    return { page, context, problems };
  }

  async function send(page: Page, text: string): Promise<void> {
    await page.fill('#text', text);
    await page.press('#text', 'Enter');
  }

  /** The messages a page shows, as `offset user: text`, in page order. */
  async function shown(page: Page): Promise<string[]> {
    return page.$$eval('#messages li.msg', (items) =>
      items.map((li) => `${(li as HTMLElement).dataset['offset']} ${li.querySelector('.author')?.textContent}: ${li.querySelector('.text')?.textContent}`),
    );
  }

  async function waitForMessages(page: Page, count: number): Promise<void> {
    await page.waitForFunction((n) => document.querySelectorAll('#messages li.msg').length >= n, count);
  }

  for (const [index, transport] of transports.entries()) {
    test(`${transport}: two pages chat, presence shows both, a page that was offline gets what it missed`, async () => {
      const room = `r${randomBytes(3).toString('hex')}`;
      const alice = await openChat('alice', room, transport);
      const bob = await openChat(`bob-${transport.replace('-', '')}`, room, transport);
      const bobName = `bob-${transport.replace('-', '')}`;

      for (const page of [alice.page, bob.page]) {
        await page.waitForSelector(`#online li[data-user="alice"]`);
        await page.waitForSelector(`#online li[data-user="${bobName}"]`);
        assert.equal(await page.textContent('#online-count'), '2');
      }

      await send(alice.page, `hello from alice over ${transport}`);
      await waitForMessages(bob.page, 1);
      await send(bob.page, 'hi alice!');
      await waitForMessages(alice.page, 2);
      const expected = [`1 alice: hello from alice over ${transport}`, `2 ${bobName}: hi alice!`];
      assert.deepEqual(await shown(alice.page), expected);
      await waitForMessages(bob.page, 2);
      assert.deepEqual(await shown(bob.page), expected);
      if (index === 0) {
        mkdirSync(artifacts, { recursive: true });
        await alice.page.screenshot({ path: new URL('chat.png', artifacts).pathname });
      }

      // bob goes offline; the server drops his connection; alice keeps talking
      await bob.context.setOffline(true);
      const dropped = await h.api('disconnect', { user: bobName, reconnect: true });
      assert.equal(dropped.body.disconnected, 1);
      await bob.page.waitForSelector('body[data-connection="connecting"]');
      await alice.page.waitForSelector(`#online li[data-user="${bobName}"]`, { state: 'detached' });
      for (let n = 1; n <= 3; n++) await send(alice.page, `missed ${n}`);
      await waitForMessages(alice.page, 5);
      // still offline: bob's page keeps trying, and has not seen the new messages
      assert.equal(await bob.page.getAttribute('body', 'data-connection'), 'connecting');
      assert.equal((await shown(bob.page)).length, 2);
      await bob.context.setOffline(false);

      await bob.page.waitForSelector('body[data-connection="connected"]');
      await waitForMessages(bob.page, 5);
      const all = [...expected, '3 alice: missed 1', '4 alice: missed 2', '5 alice: missed 3'];
      assert.deepEqual(await shown(bob.page), all, 'every message once, in order');
      assert.deepEqual(await shown(alice.page), all);
      assert.equal(await bob.page.locator('#messages li.note', { hasText: 'missed messages recovered' }).count(), 1);
      await alice.page.waitForSelector(`#online li[data-user="${bobName}"]`);

      assert.deepEqual(alice.problems, [], 'no page errors');
      assert.deepEqual(bob.problems.filter((p) => !p.includes('Failed to load resource')), [], 'no page errors');
      await alice.context.close();
      await bob.context.close();
    });
  }

  test('the page says who you are and how you are connected, never internal ids or offsets; it shows which characters a name may use', async () => {
    const join = await openPage(`${h.url}/examples/chat/`);
    const hint = join.page.locator('#user-hint');
    assert.ok(await hint.isVisible(), 'the allowed characters are shown before anyone types');
    assert.match((await hint.textContent()) ?? '', /letters, digits, "\.", "_" or "-"/);
    assert.equal(await join.page.getAttribute('#user-input', 'aria-describedby'), 'user-hint');
    await join.page.fill('#user-input', 'al ice');
    await join.page.click('#join-form button[type="submit"]');
    assert.ok(await join.page.locator('#join-error').isVisible(), 'a bad name is explained');
    await join.context.close();

    const room = `r${randomBytes(3).toString('hex')}`;
    const alice = await openChat('alice', room, 'websocket');
    const footer = (await alice.page.textContent('#statusline')) ?? '';
    assert.match(footer, /alice/);
    assert.match(footer, /WebSocket/);
    assert.doesNotMatch(footer, /[0-9a-f]{8}-[0-9a-f]{4}-/, 'no client id');
    assert.match((await alice.page.textContent('#room-hint')) ?? '', /letters, digits/);
    await send(alice.page, 'hello');
    await waitForMessages(alice.page, 1);
    assert.equal(await alice.page.getAttribute('#messages li.msg', 'data-offset'), '1');
    assert.doesNotMatch((await alice.page.textContent('#messages li.msg .meta')) ?? '', /#\d/, 'no stream offsets in the message');
    await alice.page.fill('#room-input', 'no spaces');
    await alice.page.press('#room-input', 'Enter');
    assert.ok(await alice.page.locator('#room-error').isVisible(), 'a bad room name is explained');
    assert.deepEqual(alice.problems, []);
    await alice.context.close();
  });

  test('rooms are shared: a room one user opens appears for the others at once, and for those who come later', async () => {
    const lobby = `l${randomBytes(3).toString('hex')}`;
    const fresh = `team-${randomBytes(3).toString('hex')}`;
    const alice = await openChat('alice', lobby, 'sse');
    const bob = await openChat('bob', lobby, 'long-poll');
    await bob.page.waitForSelector(`#rooms button[data-room="${lobby}"]`);
    await alice.page.fill('#room-input', fresh);
    await alice.page.press('#room-input', 'Enter');
    await alice.page.waitForSelector(`#room-title:text("# ${fresh}")`);
    await send(alice.page, `welcome to ${fresh}`);
    await waitForMessages(alice.page, 1);
    await bob.page.waitForSelector(`#rooms button[data-room="${fresh}"]`);
    const carol = await openChat('carol', lobby, 'websocket');
    await carol.page.waitForSelector(`#rooms button[data-room="${fresh}"]`);
    await carol.page.click(`#rooms button[data-room="${fresh}"]`);
    await waitForMessages(carol.page, 1);
    assert.deepEqual(await shown(carol.page), [`1 alice: welcome to ${fresh}`]);
    await carol.page.waitForSelector('#online li[data-user="alice"]');
    for (const p of [alice, bob, carol]) {
      assert.deepEqual(p.problems.filter((x) => !x.includes('Failed to load resource')), []);
      await p.context.close();
    }
  });

  test('390 px wide: rooms and who is online are reachable, nothing overflows', async () => {
    const room = `m${randomBytes(3).toString('hex')}`;
    const bob = await openChat('bob', room, 'websocket');
    const alice = await openChat('alice', room, 'websocket', { width: 390 });
    const page = alice.page;
    const toggle = page.locator('#panel-toggle');
    assert.ok(await toggle.isVisible(), 'a button opens rooms and people');
    assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
    await toggle.click();
    assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
    const inView = async (selector: string) => {
      const box = await page.locator(selector).first().boundingBox();
      return box !== null && box.width > 0 && box.x >= 0 && box.x + box.width <= 390;
    };
    await page.waitForSelector('#online li[data-user="bob"]', { state: 'visible' });
    assert.ok(await inView('#online li[data-user="bob"]'), 'bob is listed on screen');
    assert.ok(await inView('#rooms button[data-room="random"]'), 'rooms are on screen');
    mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: new URL('chat-390.png', artifacts).pathname });
    await page.click('#rooms button[data-room="random"]');
    await page.waitForSelector('#room-title:text("# random")');
    assert.equal(await toggle.getAttribute('aria-expanded'), 'false', 'choosing a room closes the panel');
    assert.ok(await page.locator('#text').isVisible(), 'the composer is visible');
    assert.ok(await inView('#status'), 'the status is on screen');
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= 390), 'no horizontal scrolling');
    assert.deepEqual(alice.problems, []);
    await alice.context.close();
    await bob.context.close();
  });

  for (const transport of transports) {
    test(`${transport}: offline shows, when the browser goes offline and when the server is gone`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'herald-chat-offline-'));
      const server = new HeraldProcess(['--port', '0', '--admin-port', '0'], dir);
      try {
        const port = await server.listeningPort();
        const dana = await openChat('dana', 'lobby', transport, { base: `http://127.0.0.1:${port}` });
        const page = dana.page;
        await dana.context.setOffline(true);
        await page.waitForSelector('#status-text:text("Offline")');
        assert.match((await page.textContent('#statusline')) ?? '', /offline/i);
        assert.equal(await page.getAttribute('body', 'data-network'), 'offline');
        assert.ok(await page.locator('#text').isDisabled(), 'nothing can be sent while offline');
        await dana.context.setOffline(false);
        await page.waitForSelector('body[data-connection="connected"][data-network="online"]');
        await page.waitForSelector('#status-text:text("Connected")');

        await server.stop('SIGKILL');
        await page.waitForSelector('#status-text:text-matches("Reconnecting|Offline")');
        assert.match((await page.textContent('#statusline')) ?? '', /reconnecting|unreachable|offline/i);
        assert.notEqual(await page.getAttribute('body', 'data-connection'), 'connected');
        assert.ok(await page.locator('#text').isDisabled(), 'nothing can be sent meanwhile');
        await dana.context.close();
      } finally {
        await server.stop('SIGKILL');
        rmSync(dir, { recursive: true, force: true });
      }
    });
  }
});

