/**
 * `npm run docs:screenshots`: the console's screenshots in docs/images/,
 * taken from a real Herald with some traffic, driven in Debian's Chromium
 * (playwright-core). Not part of the test run.
 *
 * Starts Herald (loopback, ephemeral ports, a state directory of its own,
 * removed at the end), creates an owner in the state file as
 * `herald admin create` does, connects a handful of clients on the three
 * transports (@herald/client) to a few channels, publishes a steady trickle,
 * then signs in and writes docs/images/console-<view>.png (1280 px wide) and
 * console-overview-390.png (a phone).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { chromium, type Page } from 'playwright-core';
import { HeraldClient } from '@herald/client';
import { buildConfig } from '../packages/server/src/config/load.ts';
import { startServer } from '../packages/server/src/app/app.ts';
import { openSqliteStore } from '../packages/server/src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../packages/server/src/console/sqlite-admin-store.ts';
import { PasswordHasher } from '../packages/server/src/console/passwords.ts';

const CHROMIUM = process.env['CHROMIUM'] ?? '/usr/bin/chromium';
const images = fileURLToPath(new URL('../docs/images/', import.meta.url));
const stateDir = mkdtempSync(join(tmpdir(), 'herald-screenshots-'));
const hmacSecret = randomBytes(32).toString('base64url');
const apiKey = `hk_${randomBytes(24).toString('base64url')}`;
const password = randomBytes(12).toString('base64url');

const config = buildConfig(
  {
    mode: 'production',
    stateDir,
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0, console: { enabled: true } },
    process: { allowRoot: true },
    log: { level: 'silent' },
    auth: { algorithms: ['HS256'], hmacSecret },
    // The trickle below is one key from one address: above the default rate limits.
    api: { keys: [{ name: 'backend', sha256: createHash('sha256').update(apiKey).digest('hex'), scopes: ['admin'] }], rateLimitPerIp: 100000, rateLimitPerKey: 100000 },
    channels: { namespaces: [{ name: 'chat', presence: true, joinLeave: true }, { name: 'orders' }, { name: 'notifications' }] },
  },
  { env: {} },
);
const server = await startServer({ config });
const url = `http://127.0.0.1:${server.port}`;
const consoleUrl = `http://127.0.0.1:${server.adminPort}/console/`;

const file = openSqliteStore({ stateDir, claim: false, busyTimeoutMs: 5000 });
try {
  await new SqliteAdminStore(file.db).createAdmin({ name: 'olivia', role: 'owner', passwordHash: await new PasswordHasher().hash(password), now: Date.now() });
} finally {
  file.close();
}

const secret = new TextEncoder().encode(hmacSecret);
const token = (sub: string) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuedAt().setExpirationTime('2h').sign(secret);
const clients: HeraldClient[] = [];
const people = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy'];
for (const [index, user] of people.entries()) {
  const transport = index % 4 === 3 ? 'sse' : index === 9 ? 'long-poll' : 'websocket';
  const client = new HeraldClient({ url, token: await token(user), transports: [transport] });
  client.subscribe('chat:lobby');
  if (index % 2 === 0) client.subscribe('chat:random');
  client.subscribe(`notifications:${user}`);
  if (index < 3) client.subscribe('orders:1042');
  client.connect();
  clients.push(client);
}

async function publish(channel: string, data: unknown): Promise<void> {
  await fetch(`${url}/api/publish`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` }, body: JSON.stringify({ channel, data }) });
}
const lines = ['hello everyone', 'the build is green', 'who is on call?', 'deploying 1.4.2', 'lunch at noon?', 'order 1042 shipped'];
let n = 0;
let bursty = 0;
const trickle = setInterval(() => {
  n++;
  // A changing rate, so the charts show something: a burst every ten seconds.
  const count = n % 100 < 20 ? 6 : 2 + (bursty++ % 3);
  for (let i = 0; i < count; i++) void publish(i % 3 === 0 ? 'orders:1042' : 'chat:lobby', { user: people[n % people.length], text: lines[(n + i) % lines.length] });
}, 100);

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
mkdirSync(images, { recursive: true });

async function shot(page: Page, name: string, fullPage = false): Promise<void> {
  await page.screenshot({ path: join(images, `console-${name}.png`), fullPage });
  process.stdout.write(`docs/images/console-${name}.png\n`);
}

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.on('pageerror', (error) => process.stderr.write(`page error: ${error.message}\n`));
  await page.goto(consoleUrl);
  await page.fill('#login-name', 'olivia');
  await shot(page, 'login');
  await page.fill('#login-password', password);
  await page.click('form button[type="submit"]');
  await page.waitForSelector('#whoami');
  // Thirty seconds of samples on the charts.
  await page.waitForFunction(() => Number(document.querySelector('#chart-rates')?.getAttribute('data-points')) >= 30, undefined, { timeout: 90000 });
  await shot(page, 'overview', true);

  await page.goto(`${consoleUrl}#/channels/${encodeURIComponent('chat:lobby')}`);
  await page.waitForSelector('#channel-history li');
  await shot(page, 'channel', true);

  await page.goto(`${consoleUrl}#/connections?user=bob`);
  await page.waitForSelector('#connections-table tbody tr');
  await shot(page, 'connections', true);

  await page.goto(`${consoleUrl}#/keys`);
  await page.waitForSelector('#key-name');
  for (const [name, scopes] of [['billing-service', ['publish']], ['analytics', ['read']]] as const) {
    await page.fill('#key-name', name);
    for (const scope of ['publish', 'read', 'admin']) await page.setChecked(`input[name="scope"][value="${scope}"]`, (scopes as readonly string[]).includes(scope));
    await page.click('button:text("Create key")');
    await page.waitForSelector('#secret-value');
    if (name !== 'analytics') await page.click('button:text("Done")');
  }
  await page.waitForSelector('#keys-table tr[data-name="analytics"]');
  await shot(page, 'keys', true);

  await page.goto(`${consoleUrl}#/apps`);
  await page.waitForSelector('#app-name');
  for (const [name, clientEvents] of [['shop-web', true], ['admin-dashboard', false]] as const) {
    await page.fill('#app-name', name);
    await page.setChecked('#app-client-events', clientEvents);
    await page.click('button:text("Create app")');
    await page.waitForSelector('#secret-value');
    if (name !== 'admin-dashboard') await page.click('button:text("Done")');
  }
  await page.waitForSelector('#apps-table tr[data-source="store"] >> nth=1');
  await shot(page, 'apps', true);

  await page.goto(`${consoleUrl}#/audit`);
  await page.waitForSelector('#audit-table tbody tr');
  await shot(page, 'audit', true);

  const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 1 });
  const small = await phone.newPage();
  await small.goto(consoleUrl);
  await small.fill('#login-name', 'olivia');
  await small.fill('#login-password', password);
  await small.click('form button[type="submit"]');
  await small.waitForFunction(() => Number(document.querySelector('#chart-rates')?.getAttribute('data-points')) >= 15, undefined, { timeout: 60000 });
  await shot(small, 'overview-390');
} finally {
  clearInterval(trickle);
  await browser.close();
  for (const client of clients) client.disconnect();
  await server.close();
  rmSync(stateDir, { recursive: true, force: true });
}
