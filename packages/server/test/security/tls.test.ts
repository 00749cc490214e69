/**
 * TLS: with `tls.certFile`/`tls.keyFile` the public listener serves HTTPS
 * and WSS, and only then sends Strict-Transport-Security. The test makes a
 * throwaway self-signed certificate with the `openssl` command (Debian's
 * openssl package); without it the test skips loudly, and fails when
 * HERALD_REQUIRE_SERVICES=1.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'node:https';
import WebSocket from 'ws';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { WsClient, unique } from '../helpers/herald-ws.ts';
import { rawExchange } from './raw-http.ts';
import { makeCertificate } from '../helpers/tls-certificate.ts';

interface HttpsAnswer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
}

function https(url: string, ca: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: init.method ?? 'GET', headers: init.headers ?? {}, ca, timeout: 10000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('https request timed out')));
    req.on('error', reject);
    req.end(init.body);
  });
}

const dir = mkdtempSync(join(tmpdir(), 'herald-tls-'));
const files = makeCertificate(dir);
if (files === undefined) {
  const message = 'SKIPPING TLS tests: the openssl command is missing (apt-get install openssl)';
  if (process.env['HERALD_REQUIRE_SERVICES'] === '1') throw new Error(message + ' and HERALD_REQUIRE_SERVICES=1');
  process.stderr.write(`\n*** ${message} ***\n\n`);
}

describe('TLS listener', { skip: files === undefined, timeout: 30000 }, () => {
  let h: TestHerald;
  let ca: string;
  let base: string;

  before(async () => {
    ca = readFileSync(files!.certFile, 'utf8');
    h = await startHerald({ tls: files });
    base = `https://127.0.0.1:${h.server.port}`;
  });
  after(async () => {
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('HTTPS answers, with Strict-Transport-Security and the other security headers', async () => {
    const answer = await https(`${base}/health`, ca);
    assert.equal(answer.status, 200);
    assert.deepEqual(JSON.parse(answer.text), { status: 'ok' });
    assert.equal(answer.headers['strict-transport-security'], 'max-age=31536000');
    assert.equal(answer.headers['x-content-type-options'], 'nosniff');
    assert.equal(answer.headers['x-powered-by'], undefined);
    // A transport's answer (its short set, edge/security-headers.ts transportSecurityHeaders) carries HSTS too.
    const opened = await https(`${base}/connection/poll/open`, ca, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(opened.status, 200, opened.text);
    assert.equal(opened.headers['strict-transport-security'], 'max-age=31536000');
    assert.equal(opened.headers['x-content-type-options'], 'nosniff');
    assert.equal(opened.headers['x-frame-options'], 'DENY');
    assert.equal(opened.headers['content-security-policy'], "frame-ancestors 'none'");
  });

  test('WSS connects, subscribes and receives a publication made over HTTPS', async () => {
    const channel = unique('chat:tls');
    const ws = new WebSocket(`wss://127.0.0.1:${h.server.port}/connection/websocket`, { ca });
    const client = new WsClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    try {
      await client.connect(await h.token('alice'));
      await client.call('subscribe', { channel });
      const published = await https(`${base}/api/publish`, ca, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${h.apiKey}` },
        body: JSON.stringify({ channel, data: 'over tls' }),
      });
      assert.equal(published.status, 200, published.text);
      // The API's shorter header set keeps HSTS.
      assert.equal(published.headers['strict-transport-security'], 'max-age=31536000');
      await client.waitMarker(channel, 'over tls');
    } finally {
      ws.terminate();
    }
  });

  test('plain HTTP on the TLS port gets no HTTP answer', async () => {
    const answer = await rawExchange(h.server.port, 'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    assert.ok(answer.closed);
    assert.ok(!answer.statuses.includes(200), answer.text.slice(0, 100));
  });
});
