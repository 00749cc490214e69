/**
 * Laravel Echo with its Pusher connector, and pusher-js, in a real browser
 * (Debian's Chromium through playwright-core), against Herald's Pusher
 * endpoint: public channels, private channels through the page's
 * /broadcasting/auth (signed with the official `pusher` SDK, as a Laravel
 * backend does), presence (here / joining / leaving once per user), and
 * client events (whisper). Events are triggered with the `pusher` SDK
 * through Herald's Pusher HTTP API. The page is served from its own origin,
 * which the app's allowedOrigins names.
 *
 * Without /usr/bin/chromium these tests skip with a loud warning; with
 * HERALD_REQUIRE_SERVICES=1 (CI) they fail instead.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type Pusher from 'pusher';
import { serverSdk, startPusherHerald, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';

const CHROMIUM = '/usr/bin/chromium';
const required = process.env['HERALD_REQUIRE_SERVICES'] === '1';
const available = existsSync(CHROMIUM);
if (!available && !required) {
  console.warn(`\n!!! SKIPPING browser tests: ${CHROMIUM} not found (apt-get install -y chromium). CI sets HERALD_REQUIRE_SERVICES=1 and fails instead.\n`);
}

const require = createRequire(import.meta.url);
const PUSHER_JS = readFileSync(require.resolve('pusher-js/dist/web/pusher.js'), 'utf8');
const ECHO_JS = readFileSync(require.resolve('laravel-echo/iife'), 'utf8');

/** The page's script: Echo on the Pusher connector; the test drives it through window.t. */
function appScript(key: string, port: number): string {
  return `
const params = new URLSearchParams(location.search);
const user = params.get('user');
const log = [];
const EchoClass = window.Echo.default ?? window.Echo;
const echo = new EchoClass({
  broadcaster: 'pusher', key: ${JSON.stringify(key)}, cluster: 'herald',
  wsHost: '127.0.0.1', wsPort: ${port}, forceTLS: false, enabledTransports: ['ws'], disableStats: true,
  authEndpoint: '/broadcasting/auth', auth: { headers: { 'X-User': user } },
  Pusher: window.Pusher,
});
window.t = {
  log,
  state: () => echo.connector.pusher.connection.state,
  listenPublic: (channel) => new Promise((resolve) => echo.channel(channel).subscribed(resolve).listen('.order-created', (e) => log.push(['public', e]))),
  listenPrivate: (channel) => new Promise((resolve) => echo.private(channel).subscribed(resolve).listen('.msg', (e) => log.push(['private', e])).listenForWhisper('typing', (e) => log.push(['whisper', e]))),
  whisper: (channel, data) => echo.private(channel).whisper('typing', data),
  join: (channel) => new Promise((resolve) => echo.join(channel)
    .here((users) => { log.push(['here', users.map((u) => u.name).sort()]); resolve(); })
    .joining((u) => log.push(['joining', u.name]))
    .leaving((u) => log.push(['leaving', u.name]))),
};
`;
}

describe('Laravel Echo and pusher-js in Chromium', { skip: !available && !required, timeout: 120000 }, () => {
  let h: PusherHerald;
  let sdk: Pusher;
  let pages: Server;
  let pageUrl = '';
  let browser: Browser;
  const contexts: BrowserContext[] = [];
  const app = testApp('echo', { clientEvents: true });

  before(async () => {
    if (!available) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing: install it (apt-get install -y chromium)`);
    let script = '';
    // The application: its page, the client libraries, and Laravel's /broadcasting/auth.
    pages = createServer((request, response) => {
      const path = (request.url ?? '/').split('?', 1)[0];
      if (path === '/broadcasting/auth' && request.method === 'POST') {
        let body = '';
        request.on('data', (chunk: Buffer) => (body += chunk.toString()));
        request.on('end', () => {
          const form = new URLSearchParams(body);
          const user = String(request.headers['x-user'] ?? '');
          const socketId = form.get('socket_id') ?? '';
          const channel = form.get('channel_name') ?? '';
          const answer = channel.startsWith('presence-') ? sdk.authorizeChannel(socketId, channel, { user_id: user, user_info: { name: user } }) : sdk.authorizeChannel(socketId, channel);
          response.writeHead(200, { 'content-type': 'application/json' });
          response.end(JSON.stringify(answer));
        });
        return;
      }
      const files: Record<string, [string, string]> = {
        '/': ['text/html', '<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>echo</title><script src="/pusher.js"></script><script src="/echo.js"></script><script src="/app.js"></script>'],
        '/pusher.js': ['text/javascript', PUSHER_JS],
        '/echo.js': ['text/javascript', ECHO_JS],
        '/app.js': ['text/javascript', script],
      };
      const file = files[path ?? ''];
      if (file === undefined) {
        response.writeHead(404).end();
        return;
      }
      response.writeHead(200, { 'content-type': file[0] });
      response.end(file[1]);
    });
    await new Promise<void>((resolve) => pages.listen(0, '127.0.0.1', resolve));
    pageUrl = `http://127.0.0.1:${(pages.address() as AddressInfo).port}`;
    h = await startPusherHerald([{ ...app, allowedOrigins: [pageUrl] }]);
    sdk = serverSdk(h, app);
    script = appScript(app.key, h.server.port);
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  });

  after(async () => {
    for (const context of contexts) await context.close().catch(() => undefined);
    await browser?.close();
    await h?.close();
    await new Promise((resolve) => pages?.close(resolve));
  });

  async function open(user: string): Promise<{ page: Page; context: BrowserContext; problems: string[] }> {
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    const problems: string[] = [];
    page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error') problems.push(`console: ${message.text()}`);
    });
    await page.goto(`${pageUrl}/?user=${user}`);
    await page.waitForFunction(() => (window as any).t.state() === 'connected');
    return { page, context, problems };
  }

  const log = (page: Page): Promise<[string, unknown][]> => page.evaluate(() => (window as any).t.log);
  async function until(page: Page, check: (entries: [string, unknown][]) => boolean, what: string): Promise<[string, unknown][]> {
    const deadline = Date.now() + 10000;
    for (;;) {
      const entries = await log(page);
      if (check(entries)) return entries;
      if (Date.now() > deadline) throw new Error(`${what}: log ${JSON.stringify(entries)}`);
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
  }

  test('public, private, presence and client events', async () => {
    const ann = await open('ann');
    const bob = await open('bob');
    // Public: a trigger through the HTTP API reaches both pages.
    for (const { page } of [ann, bob]) await page.evaluate(() => (window as any).t.listenPublic('orders'));
    assert.equal((await sdk.trigger('orders', 'order-created', { id: 1 })).status, 200);
    for (const { page } of [ann, bob]) await until(page, (l) => l.some(([kind, e]) => kind === 'public' && (e as { id: number }).id === 1), 'public event');
    // Private, through /broadcasting/auth.
    for (const { page } of [ann, bob]) await page.evaluate(() => (window as any).t.listenPrivate('room'));
    assert.equal((await sdk.trigger('private-room', 'msg', { text: 'hi' })).status, 200);
    for (const { page } of [ann, bob]) await until(page, (l) => l.some(([kind]) => kind === 'private'), 'private event');
    // Client events: ann whispers, bob hears it, ann does not hear herself.
    await ann.page.evaluate(() => (window as any).t.whisper('room', { who: 'ann' }));
    await until(bob.page, (l) => l.some(([kind]) => kind === 'whisper'), 'whisper');
    // Presence (Echo hands over each member's user_info): ann first, then bob; ann sees bob join once; bob's here has both.
    await ann.page.evaluate(() => (window as any).t.join('lobby'));
    await bob.page.evaluate(() => (window as any).t.join('lobby'));
    const bobLog = await until(bob.page, (l) => l.some(([kind]) => kind === 'here'), 'here');
    assert.deepEqual(bobLog.find(([kind]) => kind === 'here')![1], ['ann', 'bob']);
    await until(ann.page, (l) => l.some(([kind, id]) => kind === 'joining' && id === 'bob'), 'joining');
    // bob's page closes: ann sees him leave.
    await bob.context.close();
    const annLog = await until(ann.page, (l) => l.some(([kind, id]) => kind === 'leaving' && id === 'bob'), 'leaving');
    assert.equal(annLog.filter(([kind]) => kind === 'whisper').length, 0, 'ann heard her own whisper');
    assert.equal(annLog.filter(([kind]) => kind === 'joining').length, 1);
    assert.deepEqual([...ann.problems, ...bob.problems], []);
  });
});
