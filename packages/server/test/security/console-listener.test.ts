/**
 * The internal listener and the console: when the console runs
 * (`admin.console.enabled` auto/true/false against a loopback or public
 * `admin.host`, TLS, a TLS proxy), HTTPS on the internal listener
 * (`admin.tls`), the base path, and an explicit `admin.console.origin`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig, ConfigError } from '../../src/config/load.ts';
import { startChecks } from '../../src/app/preflight.ts';
import { startServer } from '../../src/app/app.ts';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { call, ConsoleClient, createAdmin, PASSWORD, sessionCookie } from '../helpers/console.ts';

function config(admin: Record<string, unknown>) {
  return buildConfig(
    {
      mode: 'production',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { port: 0, ...admin },
      log: { level: 'silent' },
      stateDir: mkdtempSync(join(tmpdir(), 'herald-console-listener-')),
      auth: { hmacSecret: randomBytes(32).toString('base64url') },
      api: { keys: [{ name: 'k', sha256: createHash('sha256').update('k').digest('hex'), scopes: ['admin'] }] },
    },
    { env: {} },
  );
}

async function checks(admin: Record<string, unknown>) {
  const c = config(admin);
  try {
    return await startChecks(c, { runningAsRoot: false, purpose: 'serve' });
  } finally {
    rmSync(c.stateDir, { recursive: true, force: true });
  }
}

describe('when the console runs', { timeout: 30000 }, () => {
  test('auto: on for loopback, off with a warning on a public address without TLS', async () => {
    assert.equal((await checks({ host: '127.0.0.1' })).prepared?.consoleEnabled, true);
    assert.equal((await checks({ host: '::1' })).prepared?.consoleEnabled, true);
    const open = await checks({ host: '0.0.0.0' });
    assert.equal(open.prepared?.consoleEnabled, false);
    assert.ok(open.warnings.some((w) => /admin console off: the internal listener is on 0\.0\.0\.0, not loopback, without TLS/.test(w)), open.warnings.join('\n'));
    assert.equal((await checks({ host: '0.0.0.0', console: { behindTlsProxy: true, origin: 'https://ops.example.com' } })).prepared?.consoleEnabled, true);
    assert.equal((await checks({ host: '127.0.0.1', console: { enabled: false } })).prepared?.consoleEnabled, false);
  });

  test('true on a public address without TLS or a TLS proxy: start is refused, with the fix', async () => {
    const refused = await checks({ host: '0.0.0.0', console: { enabled: true } });
    assert.equal(refused.prepared, undefined);
    assert.ok(refused.problems.some((p) => p.startsWith('/admin/console/enabled:') && p.includes('admin.tls.certFile') && p.includes('behindTlsProxy')), refused.problems.join('\n'));
    const c = config({ host: '0.0.0.0', console: { enabled: true } });
    try {
      await assert.rejects(startServer({ config: c }), (error: unknown) => error instanceof ConfigError && error.problems.some((p) => p.startsWith('/admin/console/enabled')));
    } finally {
      rmSync(c.stateDir, { recursive: true, force: true });
    }
    const noOrigin = await checks({ host: '0.0.0.0', console: { enabled: true, behindTlsProxy: true } });
    assert.ok(noOrigin.problems.some((p) => p.startsWith('/admin/console/origin:')), noOrigin.problems.join('\n'));
    const half = await checks({ host: '127.0.0.1', tls: { certFile: '/nonexistent.pem' } });
    assert.ok(half.problems.some((p) => p.startsWith('/admin/tls:')), half.problems.join('\n'));
  });

  test('disabled: console paths are 404 and still refuse a foreign Origin like every internal path', async () => {
    const h = await startHerald({ admin: { console: { enabled: false } } });
    try {
      const answer = await call(h.server.adminPort, '/console/api/session');
      assert.equal(answer.status, 404);
      const withOrigin = await call(h.server.adminPort, '/console/api/login', { method: 'POST', headers: { origin: `http://127.0.0.1:${h.server.adminPort}` }, body: {} });
      assert.equal(withOrigin.status, 403);
      assert.equal(withOrigin.body.error.code, 'origin_not_allowed');
    } finally {
      await h.close();
    }
  });
});

describe('base path and an explicit origin', { timeout: 30000 }, () => {
  let h: TestHerald;
  let stateDir: string;

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'herald-console-base-'));
    h = await startHerald({ stateDir, admin: { console: { basePath: '/ops/herald', origin: 'https://ops.example.com' } } });
    await createAdmin(stateDir, 'pat', 'owner');
  });
  after(async () => {
    await h.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  test('routes live under the base path; the cookie stays Path=/; only the configured Origin passes', async () => {
    const port = h.server.adminPort;
    assert.equal((await call(port, '/console/api/session')).status, 404);
    const local = await call(port, '/ops/herald/api/login', { method: 'POST', headers: { origin: `http://127.0.0.1:${port}` }, body: { name: 'pat', password: PASSWORD } });
    assert.equal(local.status, 403, 'the loopback origin is not the configured one');
    const c = new ConsoleClient(port, '/ops/herald');
    (c as { origin: string }).origin = 'https://ops.example.com';
    const login = await c.login('pat');
    assert.equal(login.status, 200, login.text);
    assert.match(sessionCookie(login)!, /; Path=\/;/);
    assert.equal((await c.get('/api/session')).status, 200);
    assert.equal((await c.post('/api/logout')).status, 204);
  });
});

function makeCertificate(dir: string): { certFile: string; keyFile: string } | undefined {
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  try {
    execFileSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
      { stdio: 'pipe', timeout: 30000 },
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  return { certFile, keyFile };
}

function https(port: number, path: string, ca: string, init: { method?: string; headers?: Record<string, string>; body?: unknown } = {}) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: any }>((resolve, reject) => {
    const payload = init.body === undefined ? undefined : JSON.stringify(init.body);
    const headers = { ...(payload === undefined ? {} : { 'content-type': 'application/json' }), ...init.headers };
    const req = request({ host: '127.0.0.1', port, path, servername: 'localhost', method: init.method ?? 'GET', headers, ca, timeout: 10000, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('https request timed out')));
    req.on('error', reject);
    req.end(payload);
  });
}

const certDir = mkdtempSync(join(tmpdir(), 'herald-admin-tls-'));
const files = makeCertificate(certDir);
if (files === undefined) {
  const message = 'SKIPPING internal-listener TLS tests: the openssl command is missing (apt-get install openssl)';
  if (process.env['HERALD_REQUIRE_SERVICES'] === '1') throw new Error(message + ' and HERALD_REQUIRE_SERVICES=1');
  process.stderr.write(`\n*** ${message} ***\n\n`);
}

describe('TLS on the internal listener (admin.tls)', { skip: files === undefined, timeout: 30000 }, () => {
  let h: TestHerald;
  let stateDir: string;

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'herald-console-tls-'));
    h = await startHerald({ stateDir, admin: { tls: files } });
    await createAdmin(stateDir, 'tess', 'owner');
  });
  after(async () => {
    await h?.close();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(certDir, { recursive: true, force: true });
  });

  test('HTTPS with HSTS; sign-in with the https origin; plain HTTP gets no answer', async () => {
    const ca = readFileSync(files!.certFile, 'utf8');
    const port = h.server.adminPort;
    const health = await https(port, '/health', ca);
    assert.equal(health.status, 200);
    assert.equal(health.headers['strict-transport-security'], 'max-age=31536000');
    const origin = `https://localhost:${port}`;
    const login = await https(port, '/console/api/login', ca, { method: 'POST', headers: { origin, host: `localhost:${port}` }, body: { name: 'tess', password: PASSWORD } });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    const cookie = String((login.headers['set-cookie'] as string[])[0]).split(';')[0]!;
    const session = await https(port, '/console/api/session', ca, { headers: { cookie, host: `localhost:${port}` } });
    assert.equal(session.status, 200);
    // The http scheme is not this console's origin.
    const wrongScheme = await https(port, '/console/api/login', ca, { method: 'POST', headers: { origin: `http://localhost:${port}`, host: `localhost:${port}` }, body: { name: 'tess', password: PASSWORD } });
    assert.equal(wrongScheme.status, 403);
    // With TLS on the listener, any Host name is the console's origin (a rebinding page fails the certificate check).
    const named = await https(port, '/console/api/login', ca, { method: 'POST', headers: { origin: `https://herald-admin.internal:${port}`, host: `herald-admin.internal:${port}` }, body: { name: 'tess', password: PASSWORD } });
    assert.equal(named.status, 200);
    await assert.rejects(call(port, '/health'));
  });
});
