/**
 * Process hygiene and listeners (SECURITY-TESTS C19, listener part):
 * metrics live on the internal listener only (public /metrics is 404),
 * health on both; the internal listener refuses browser requests; the
 * production mode refuses to run as root unless `process.allowRoot`;
 * start-up refuses broken edge settings with a ConfigError.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildConfig, ConfigError } from '../../src/config/load.ts';
import { startServer } from '../../src/app/app.ts';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { connectWs, closeAllClients, http } from '../helpers/herald-ws.ts';

function productionConfig(extra: Record<string, unknown> = {}) {
  return buildConfig(
    {
      mode: 'production',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      log: { level: 'silent' },
      // A state directory of its own (the sqlite engine's file and, in development mode, the secrets).
      stateDir: mkdtempSync(join(tmpdir(), 'herald-listeners-')),
      auth: { hmacSecret: randomBytes(32).toString('base64url') },
      api: { keys: [{ name: 'k', sha256: createHash('sha256').update('k').digest('hex'), scopes: ['admin'] }] },
      ...extra,
    },
    { env: {} },
  );
}

describe('public and internal listeners', { timeout: 30000 }, () => {
  let h: TestHerald;
  let admin: string;

  before(async () => {
    h = await startHerald();
    admin = `http://127.0.0.1:${h.server.adminPort}`;
  });
  after(async () => {
    closeAllClients();
    await h.close();
  });

  test('metrics are on the internal listener only; health is on both', async () => {
    assert.notEqual(h.server.adminPort, h.server.port);
    await connectWs(h, 'alice');
    const publicMetrics = await http(`${h.url}/metrics`);
    assert.equal(publicMetrics.status, 404);
    assert.equal(publicMetrics.body.error.code, 'not_found');
    const metrics = await http(`${admin}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(metrics.text, /^herald_connections\{transport="websocket"\} 1$/m);
    for (const base of [h.url, admin]) {
      const health = await http(`${base}/health`);
      assert.equal(health.status, 200);
      assert.deepEqual(health.body, { status: 'ok' });
    }
    assert.equal((await http(`${admin}/health`)).headers.get('x-content-type-options'), 'nosniff');
  });

  test('the internal listener serves nothing of the public one and refuses browser requests', async () => {
    assert.equal((await http(`${admin}/api/info`, { headers: { authorization: 'Bearer k' }, body: {} })).status, 404);
    assert.equal((await http(`${admin}/connection/sse`)).status, 404);
    const fromPage = await http(`${admin}/metrics`, { headers: { origin: 'https://evil.example' } });
    assert.equal(fromPage.status, 403);
    assert.equal(fromPage.body.error.code, 'origin_not_allowed');
  });
});

describe('process hygiene at start-up', { timeout: 30000 }, () => {
  test('production mode refuses to run as root unless process.allowRoot; development mode does not refuse', async () => {
    await assert.rejects(startServer({ config: productionConfig(), runningAsRoot: true }), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /allowRoot/);
      return true;
    });
    const allowed = await startServer({ config: productionConfig({ process: { allowRoot: true } }), runningAsRoot: true });
    await allowed.close();
    const development = await startServer({ config: productionConfig({ mode: 'development' }), runningAsRoot: true });
    await development.close();
    const unprivileged = await startServer({ config: productionConfig(), runningAsRoot: false });
    await unprivileged.close();
  });

  test('broken edge settings are configuration errors', async () => {
    const broken: Record<string, unknown>[] = [
      { tls: { certFile: '/nonexistent/cert.pem' } },
      { tls: { certFile: '/nonexistent/cert.pem', keyFile: '/nonexistent/key.pem' } },
      { http: { trustedProxies: ['not an address'] } },
    ];
    for (const extra of broken) {
      // Refused by the loader or at start-up, never a running server.
      await assert.rejects(async () => startServer({ config: productionConfig(extra), runningAsRoot: false }), ConfigError, JSON.stringify(extra));
    }
  });

  test('the internal listener binds to admin.host, and a port clash fails start-up without leaving a listener behind', async () => {
    const first = await startServer({ config: productionConfig(), runningAsRoot: false });
    try {
      const clash = productionConfig({ listen: { host: '127.0.0.1', port: first.port } });
      await assert.rejects(startServer({ config: clash, runningAsRoot: false }));
      const answer = await http(`http://127.0.0.1:${first.adminPort}/health`);
      assert.equal(answer.status, 200);
    } finally {
      await first.close();
    }
  });
});
