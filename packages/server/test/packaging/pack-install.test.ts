/**
 * The packages as a user gets them (issue 12, "Done when"): every workspace
 * package is built and packed with `npm pack`, the tarballs are installed
 * into an empty directory (`npm install --prefer-offline`, no workspace, no
 * sources), and then:
 *
 * - `npx herald serve` starts the server on Node 24 from the installed
 *   package (dist/, no type stripping), in development mode, without the
 *   clone-only chat demo;
 * - a TypeScript project that uses `@herald/client` and
 *   `@herald/server-sdk` passes `tsc`, and one with a type error does not
 *   (the types are real);
 * - that sample runs: a Node client subscribes, a backend publishes, the
 *   client receives it;
 * - the plain `<script>` build (`herald-client.global.js`) works in
 *   Chromium on a page of another origin that the server allows.
 *
 * The tarballs hold only what runs: no tests, no bench, no TypeScript
 * sources.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { waitUntil } from '../helpers/rt-util.ts';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const PACKAGES = ['protocol', 'client', 'server-sdk', 'server'] as const;
/** The @types/node the workspace uses (package.json devDependencies). */
const NODE_TYPES = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> }).devDependencies['@types/node']!;
const CHROMIUM = '/usr/bin/chromium';
const required = process.env['HERALD_REQUIRE_SERVICES'] === '1';
const chromiumAvailable = existsSync(CHROMIUM);
if (!chromiumAvailable && !required) console.warn(`\n!!! SKIPPING the script-tag check: ${CHROMIUM} not found (apt-get install -y chromium).\n`);

/** PATH with this Node 24 first, so `npx`, `npm` scripts and bins run on it. */
const PATH = `${dirname(process.execPath)}:${process.env['PATH'] ?? ''}`;

/**
 * The environment of a user's shell: this one (proxies, CA certificates)
 * without what `npm test` adds (npm_* configuration, the clone's
 * NODE_OPTIONS source condition), and with Node 24 first on the PATH.
 */
function userEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || key === 'NODE_OPTIONS' || key.toLowerCase().startsWith('npm_') || key.startsWith('HERALD_')) continue;
    env[key] = value;
  }
  return { ...env, PATH, ...extra };
}

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(command: string, args: readonly string[], cwd: string, env: Record<string, string> = {}, timeout = 240000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(command, [...args], { cwd, timeout, env: userEnv(env), maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : -1, stdout, stderr }),
    );
  });
}

function listTarball(tarball: string): Promise<string[]> {
  return run('tar', ['-tzf', tarball], ROOT).then((r) => r.stdout.split('\n').filter((line) => line !== ''));
}

/** The test page: the script-tag bundle, and a page that subscribes with it and shows what arrives. */
function pageServer(bundle: () => Buffer, heraldUrl: () => string): Server {
  return createServer((request, response) => {
    if (request.url === '/herald-client.global.js') {
      response.writeHead(200, { 'content-type': 'text/javascript' }).end(bundle());
      return;
    }
    response
      .writeHead(200, { 'content-type': 'text/html' })
      .end(
        `<!doctype html><meta charset="utf-8"><script src="/herald-client.global.js"></script><p id="out">waiting</p>` +
          `<script>const c = new Herald.HeraldClient({ url: ${JSON.stringify(heraldUrl())}, transports: ['sse'] });` +
          `const s = c.subscribe('public:script-tag'); s.on('subscribed', () => { document.title = 'subscribed'; });` +
          `s.on('publication', (e) => { document.getElementById('out').textContent = e.data.text; }); c.connect();</script>`,
      );
  });
}

describe('packed packages installed into an empty directory', { timeout: 600000 }, () => {
  let dir: string;
  let app: string;
  const tarballs = new Map<string, string>();
  let herald: ChildProcess | undefined;
  const heraldLines: string[] = [];
  let heraldPort = 0;
  let adminPort = 0;
  let apiKey = '';
  let page: Server | undefined;
  let pagePort = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'herald-pack-'));
    // The dist/ each tarball holds, fresh.
    const built = await run(process.execPath, ['scripts/build.ts'], ROOT);
    assert.equal(built.code, 0, `build failed:\n${built.stdout}\n${built.stderr}`);
    for (const name of PACKAGES) {
      const packed = await run('npm', ['pack', '--json', '--pack-destination', dir], join(ROOT, 'packages', name));
      assert.equal(packed.code, 0, `npm pack ${name}:\n${packed.stderr}`);
      const [info] = JSON.parse(packed.stdout) as { filename: string }[];
      tarballs.set(name, join(dir, info!.filename));
    }
    app = join(dir, 'app');
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'herald-user', version: '1.0.0', private: true, type: 'module' }, null, 2));
    const installed = await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...PACKAGES.map((name) => tarballs.get(name)!)], app);
    // A backend in TypeScript has Node's types (the server SDK's declarations use node:crypto's KeyObject).
    const types = await run('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', '--save-dev', `@types/node@${NODE_TYPES}`], app);
    assert.equal(types.code, 0, `npm install @types/node failed:\n${types.stderr}`);
    assert.equal(installed.code, 0, `npm install of the tarballs failed (exit ${installed.code}):\n${installed.stderr}`);
    // A page on another origin, which the server's config allows.
    page = pageServer(
      () => readFileSync(join(app, 'node_modules', '@herald', 'client', 'dist', 'herald-client.global.js')),
      () => `http://127.0.0.1:${heraldPort}`,
    );
    await new Promise<void>((resolve) => page!.listen(0, '127.0.0.1', resolve));
    pagePort = (page.address() as AddressInfo).port;
    writeFileSync(join(app, 'herald.json'), JSON.stringify({ mode: 'development', listen: { port: 0 }, admin: { port: 0 }, cors: { origins: [`http://127.0.0.1:${pagePort}`] } }));
  });

  after(async () => {
    if (herald !== undefined && herald.exitCode === null && herald.pid !== undefined) {
      // npx runs herald as its own child: signal the whole process group.
      const exited = new Promise((resolve) => herald!.once('exit', resolve));
      process.kill(-herald.pid, 'SIGTERM');
      await exited;
    }
    await new Promise<void>((resolve) => (page === undefined ? resolve() : page.close(() => resolve())));
    rmSync(dir, { recursive: true, force: true });
  });

  test('each tarball holds only what runs: JavaScript, types, README and package.json; no sources, tests or bench', async () => {
    for (const [name, tarball] of tarballs) {
      const files = await listTarball(tarball);
      assert.ok(files.includes('package/package.json') && files.includes('package/README.md'), `${name}: package.json and README`);
      assert.ok(files.some((f) => f.startsWith('package/dist/') && f.endsWith('.js')), `${name}: dist JavaScript`);
      assert.ok(files.some((f) => f.endsWith('.d.ts')), `${name}: types`);
      const stray = files.filter((f) => /\/(src|test|bench)\//.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts')) || f.endsWith('.tsbuildinfo'));
      assert.deepEqual(stray, [], `${name} ships no sources, tests or build info`);
    }
    const client = await listTarball(tarballs.get('client')!);
    assert.ok(client.includes('package/dist/herald-client.js') && client.includes('package/dist/herald-client.global.js'), 'the client ships both browser bundles');
    const server = await listTarball(tarballs.get('server')!);
    assert.ok(server.includes('package/bin/herald.js'), 'the server ships its binary');
    assert.ok(server.includes('package/config.schema.json'), 'the server ships the JSON Schema of config files');
    assert.ok(server.includes('package/console-dist/index.html'), 'the server ships the built console');
    assert.ok(server.some((f) => /^package\/console-dist\/assets\/main-[A-Z0-9]+\.js$/.test(f)), 'the console bundle');
    assert.ok(server.some((f) => /^package\/console-dist\/assets\/main-[A-Z0-9]+\.css$/.test(f)), 'the console stylesheet');
  });

  test('`npx herald serve` starts from the installed package on Node 24 (development mode, no chat demo)', async () => {
    const child = spawn('npx', ['herald', 'serve', '--config', 'herald.json'], { cwd: app, env: userEnv(), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    herald = child;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      heraldLines.push(line);
      try {
        const entry = JSON.parse(line) as { msg?: string; port?: number };
        if (entry.msg === 'listening' && typeof entry.port === 'number') heraldPort = entry.port;
        else if (entry.msg?.startsWith('internal listener') === true && typeof entry.port === 'number') adminPort = entry.port;
      } catch {
        // not JSON
      }
    });
    createInterface({ input: child.stderr! }).on('line', (line) => {
      heraldLines.push(line);
      const key = /\b(hk_[A-Za-z0-9_-]{20,})/.exec(line);
      if (key !== null) apiKey = key[1]!;
    });
    await waitUntil(() => heraldPort !== 0 && apiKey !== '', { timeoutMs: 60000, label: 'herald listening, with its development key', describe: () => heraldLines.join('\n') });
    const health = await fetch(`http://127.0.0.1:${heraldPort}/health`);
    assert.equal(health.status, 200);
    const demo = await fetch(`http://127.0.0.1:${heraldPort}/examples/chat/`);
    assert.equal(demo.status, 404, 'the chat demo is a feature of the clone, not of the installed package');
  });

  test('the installed server serves the admin console from its tarball (no build step): the page and its hashed assets', async () => {
    assert.ok(adminPort !== 0, 'the internal listener runs (previous test)');
    const page = await fetch(`http://127.0.0.1:${adminPort}/console/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    const html = await page.text();
    const assets = [...html.matchAll(/(?:src|href)="(assets\/[^"]+)"/g)].map((match) => match[1]!);
    assert.equal(assets.length, 2, `a script and a stylesheet in:\n${html}`);
    for (const asset of assets) {
      const response = await fetch(`http://127.0.0.1:${adminPort}/console/${asset}`);
      assert.equal(response.status, 200, asset);
      assert.ok((await response.arrayBuffer()).byteLength > 1000, `${asset} has content`);
    }
  });

  test('a TypeScript project using @herald/client and @herald/server-sdk passes tsc; a type error fails it', async () => {
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'es2024', module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true, skipLibCheck: false, types: ['node'], lib: ['es2024', 'dom'] }, include: ['sample.ts'] }),
    );
    writeFileSync(
      join(app, 'sample.ts'),
      `import { HeraldClient, type PublicationEvent, type Subscription } from '@herald/client';
import { disconnects, shouldReconnect } from '@herald/protocol';
import { HeraldApi, HeraldApiError, type ApiResult } from '@herald/server-sdk';

interface Note { readonly text: string }
const client: HeraldClient = new HeraldClient({ url: 'http://127.0.0.1:1', transports: ['sse', 'long-poll'] });
const sub: Subscription<Note> = client.subscribe<Note>('public:typed');
sub.on('publication', (event: PublicationEvent<Note>) => { const text: string = event.data.text; void text; });
const reconnect: boolean = shouldReconnect(disconnects.slow.code);
void reconnect;
const api = new HeraldApi({ url: 'http://127.0.0.1:1', apiKey: 'hk_x' });
async function publishNote(note: Note): Promise<number> {
  try {
    const position: ApiResult<'publish'> = await api.publish('public:typed', note);
    return position.offset;
  } catch (error) {
    if (error instanceof HeraldApiError) return -error.status;
    throw error;
  }
}
void publishNote;
`,
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const good = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], app);
    assert.equal(good.code, 0, `tsc on the sample:\n${good.stdout}${good.stderr}`);
    writeFileSync(
      join(app, 'sample.ts'),
      `import { HeraldClient } from '@herald/client';\nconst client = new HeraldClient({ url: 'http://x' });\nclient.subscribe<{ n: number }>('public:typed').on('publication', (e) => { const s: string = e.data.n; void s; });\n`,
    );
    const bad = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], app);
    assert.notEqual(bad.code, 0, 'a type error in a sample is reported: the package types are real, not any');
    assert.match(bad.stdout, /TS2322/);
  });

  test('end to end from the installed packages: a Node client subscribes, a backend publishes, the client receives it', async () => {
    assert.ok(heraldPort !== 0, 'the server runs (previous test)');
    writeFileSync(
      join(app, 'e2e.mjs'),
      `import { HeraldClient } from '@herald/client';
import { HeraldApi } from '@herald/server-sdk';
const [url, key] = process.argv.slice(2);
const client = new HeraldClient({ url });
const sub = client.subscribe('public:packaged');
const received = new Promise((resolve) => sub.on('publication', (e) => resolve(e.data)));
const subscribed = new Promise((resolve) => sub.on('subscribed', resolve));
client.connect();
await subscribed;
await new HeraldApi({ url, apiKey: key }).publish('public:packaged', { hello: 'installed' });
console.log(JSON.stringify(await received));
client.disconnect();
`,
    );
    const result = await run(process.execPath, ['e2e.mjs', `http://127.0.0.1:${heraldPort}`, apiKey], app, {}, 60000);
    assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
    assert.deepEqual(JSON.parse(result.stdout.trim()), { hello: 'installed' });
  });

  test('the script-tag build works in Chromium on a page of an allowed origin', { skip: !chromiumAvailable && !required }, async () => {
    if (!chromiumAvailable) throw new Error(`HERALD_REQUIRE_SERVICES=1 but ${CHROMIUM} is missing`);
    assert.ok(heraldPort !== 0, 'the server runs');
    let browser: Browser | undefined;
    try {
      browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run'] });
      const tab = await browser.newPage();
      await tab.goto(`http://127.0.0.1:${pagePort}/`);
      await tab.waitForFunction(() => document.title === 'subscribed', undefined, { timeout: 30000 });
      const answer = await fetch(`http://127.0.0.1:${heraldPort}/api/publish`, {
        method: 'POST',
        headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ channel: 'public:script-tag', data: { text: 'from a script tag' } }),
      });
      assert.equal(answer.status, 200);
      await tab.waitForFunction(() => document.getElementById('out')?.textContent === 'from a script tag', undefined, { timeout: 30000 });
    } finally {
      await browser?.close();
    }
  });
});
