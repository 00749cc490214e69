/**
 * The chat example in a real browser (Debian's Chromium through
 * playwright-core), on each transport: two pages join a room and exchange
 * messages, presence shows both, then one page goes offline, the server
 * drops its connection, the other page keeps talking, and when the first
 * comes back it shows exactly what it missed, in order, once. A screenshot
 * of the chat goes to test-artifacts/chat.png.
 *
 * Without /usr/bin/chromium these tests skip with a loud warning; with
 * HERALD_REQUIRE_SERVICES=1 (CI) they fail instead.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { startHerald, type TestHerald } from '../helpers/herald.ts';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env['HERALD_REQUIRE_SERVICES'] === '1';
const available = existsSync(CHROMIUM);
if (!available && !required) {
  console.warn(`\n!!! SKIPPING browser tests: ${CHROMIUM} not found (apt-get install -y chromium). CI sets HERALD_REQUIRE_SERVICES=1 and fails instead.\n`);
}

const artifacts = new URL('../../test-artifacts/', import.meta.url);
const transports = ['websocket', 'sse', 'long-poll'] as const;

describe('chat example in Chromium', { skip: !available && !required, timeout: 120000 }, () => {
  let h: TestHerald;
  let browser: Browser;
  const contexts: BrowserContext[] = [];

  before(async () => {
    if (!available) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing: install it (apt-get install -y chromium)`);
    // Development mode serves the example (src/app/demo.ts); `chat` has presence, join/leave and client publish.
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

  async function openChat(user: string, room: string, transport: string): Promise<{ page: Page; context: BrowserContext; problems: string[] }> {
    const context = await browser.newContext({ viewport: { width: 1100, height: 680 } });
    contexts.push(context);
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' && !message.text().includes('net::ERR_INTERNET_DISCONNECTED')) problems.push(`console: ${message.text()}`);
    });
    await page.goto(`${h.url}/examples/chat/?user=${user}&room=${room}&transport=${transport}`);
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
});
