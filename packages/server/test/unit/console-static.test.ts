/**
 * The console's static files (console/console-static.ts) on a real listener
 * (with the internal listener's answer for unmatched paths):
 * `B` redirects to `B/`; the page has the console's CSP (no `unsafe-inline`,
 * `frame-ancestors 'none'`) and `Cache-Control: no-store`; hashed assets are
 * immutable with their content type; nothing outside the built files is
 * reachable (traversal, unknown names); without a build the routes answer
 * 404 `not_found` and say how to build. And the build itself: the
 * `console-dist/` that scripts/build.ts wrote names only assets it holds,
 * with no inline script or style.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fastify, { type FastifyInstance } from 'fastify';
import { CONSOLE_DIST, registerConsoleStatic } from '../../src/console/console-static.ts';
import { useSecurityHeaders } from '../../src/edge/security-headers.ts';
import { answerUnmatched } from '../../src/app/http-input.ts';

async function serve(basePath: string, dir: string, warnings: string[] = []): Promise<{ app: FastifyInstance; url: string }> {
  const app = fastify();
  useSecurityHeaders(app, false);
  app.setNotFoundHandler(answerUnmatched(app));
  registerConsoleStatic(app, { basePath, dir, warn: (message) => warnings.push(message) });
  const url = await app.listen({ port: 0, host: '127.0.0.1' });
  return { app, url };
}

describe('console static files', () => {
  let dir: string;
  let app: FastifyInstance;
  let url: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'herald-console-static-'));
    mkdirSync(join(dir, 'assets'));
    writeFileSync(join(dir, 'index.html'), '<!doctype html><title>console</title><script type="module" src="assets/main-ABC123.js"></script>');
    writeFileSync(join(dir, 'assets', 'main-ABC123.js'), 'console.log(1)');
    writeFileSync(join(dir, 'assets', 'main-DEF456.css'), 'body{}');
    writeFileSync(join(dir, 'assets', 'notes.txt'), 'not a console asset type');
    writeFileSync(join(dir, 'secret.json'), '{"secret":true}');
    ({ app, url } = await serve('/console', dir));
  });

  after(async () => {
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the base path without its slash redirects to the page', async () => {
    const response = await fetch(`${url}/console`, { redirect: 'manual' });
    assert.equal(response.status, 308);
    assert.equal(response.headers.get('location'), '/console/');
  });

  test('the page: HTML, no-store, a CSP without unsafe-inline that forbids framing', async () => {
    const response = await fetch(`${url}/console/`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/html; charset=utf-8/);
    assert.equal(response.headers.get('cache-control'), 'no-store');
    const csp = response.headers.get('content-security-policy') ?? '';
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /style-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(response.headers.get('x-frame-options'), 'DENY');
    assert.match(await response.text(), /assets\/main-ABC123\.js/);
  });

  test('hashed assets: their content type, cached for good', async () => {
    const script = await fetch(`${url}/console/assets/main-ABC123.js`);
    assert.equal(script.status, 200);
    assert.equal(script.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.match(script.headers.get('cache-control') ?? '', /immutable/);
    assert.equal(await script.text(), 'console.log(1)');
    const style = await fetch(`${url}/console/assets/main-DEF456.css`);
    assert.equal(style.headers.get('content-type'), 'text/css; charset=utf-8');
  });

  test('nothing else: unknown names, other types, traversal → 404 not_found', async () => {
    for (const path of ['/console/assets/main-XYZ.js', '/console/assets/notes.txt', '/console/assets/..%2Fsecret.json', '/console/assets/%2e%2e%2fsecret.json', '/console/secret.json', '/console/index.html']) {
      const response = await fetch(`${url}${path}`);
      assert.equal(response.status, 404, path);
      const body = (await response.json()) as { error: { code: string } };
      assert.equal(body.error.code, 'not_found', path);
    }
  });

  test('at the root path too', async () => {
    const root = await serve('/', dir);
    try {
      assert.equal((await fetch(`${root.url}/`)).status, 200);
      assert.equal((await fetch(`${root.url}/assets/main-ABC123.js`)).status, 200);
    } finally {
      await root.app.close();
    }
  });

  test('not built: 404 not_found and one warning that says how to build', async () => {
    const empty = mkdtempSync(join(tmpdir(), 'herald-console-empty-'));
    const warnings: string[] = [];
    const bare = await serve('/console', empty, warnings);
    try {
      const response = await fetch(`${bare.url}/console/`);
      assert.equal(response.status, 404);
      assert.equal(((await response.json()) as { error: { code: string } }).error.code, 'not_found');
      assert.equal(warnings.length, 1);
      assert.match(warnings[0]!, /npm run build/);
    } finally {
      await bare.app.close();
      rmSync(empty, { recursive: true, force: true });
    }
  });

  test('the built console (scripts/build.ts): the page names assets it holds, and has no inline script or style', { skip: !existsSync(new URL('index.html', CONSOLE_DIST)) && 'console-dist not built' }, async () => {
    const page = readFileSync(new URL('index.html', CONSOLE_DIST), 'utf8');
    const named = [...page.matchAll(/(?:src|href)="assets\/([^"]+)"/g)].map((match) => match[1]!);
    assert.equal(named.filter((name) => name.endsWith('.js')).length, 1, 'one script');
    assert.equal(named.filter((name) => name.endsWith('.css')).length, 1, 'one stylesheet');
    for (const name of named) {
      assert.match(name, /-[A-Z0-9]{8}\.(js|css)$/, `${name} is content-hashed`);
      assert.ok(existsSync(new URL(`assets/${name}`, CONSOLE_DIST)), `${name} exists`);
    }
    assert.doesNotMatch(page, /<script(?![^>]*\bsrc=)[^>]*>/, 'no inline script');
    assert.doesNotMatch(page, /<style|\sstyle=/, 'no inline style');
  });
});
