/**
 * SECURITY-TESTS.md section I, test 39, across every outbound call Herald
 * makes (proxy hooks, webhooks, JWKS): targets come only from config.
 * A target that redirects to another host (127.0.0.2, a real server
 * there) is not followed; one that answers slowly times out; 100 MB is cut
 * at the cap; a hostile body is refused by schema; and meanwhile the server
 * answers and messages keep flowing to subscribers. A token's own key
 * locations (`jku`, `x5u`, a URL as `kid`) are never fetched.
 * (Signatures, test 40: integration/webhooks.test.ts and redis/webhooks.test.ts.)
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK, generateKeyPair } from 'jose';
import { startHerald } from '../helpers/herald.ts';
import { connectWs, eventually, openWs } from '../helpers/herald-ws.ts';
import { WebhookReceiver } from '../helpers/webhook-receiver.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-outbound-'));
const secret = randomBytes(32).toString('base64url');
const secretFile = join(dir, 'secret');
writeFileSync(secretFile, secret, { mode: 0o600 });

/** A server that records the requests it gets (the "other host" nobody should reach). */
async function recorder(host: string, answer: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => res.writeHead(200).end('{"result":{}}')): Promise<{ server: Server; url: string; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    req.resume();
    answer(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { server, url: `http://${host}:${(server.address() as AddressInfo).port}`, requests };
}

function close(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

describe('outbound calls (SECURITY-TESTS 39)', () => {
  let elsewhere: Awaited<ReturnType<typeof recorder>>;
  before(async () => {
    elsewhere = await recorder('127.0.0.2');
  });
  after(async () => {
    await close(elsewhere.server);
    rmSync(dir, { recursive: true, force: true });
  });

  it('proxy hooks: a redirect to another host is not followed, a slow answer times out, 100 MB is cut, a hostile body is refused; the server and message delivery carry on', async () => {
    const hang: ServerResponse[] = [];
    const backend = await recorder('127.0.0.1', (req, res) => {
      const channel = /channel=([^&]+)/.exec(req.url ?? '')?.[1];
      if (channel === 'redirect') res.writeHead(307, { location: `${elsewhere.url}/steal` }).end();
      else if (channel === 'slow') hang.push(res);
      else if (channel === 'huge') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"result":{"info":"');
        const chunk = 'x'.repeat(65536);
        let written = 0;
        const pump = (): void => {
          while (!res.destroyed && written < 100 * 1024 * 1024 && res.write(chunk)) written += chunk.length;
          if (!res.destroyed && written < 100 * 1024 * 1024) res.once('drain', pump);
        };
        pump();
      } else if (channel === 'hostile') res.writeHead(200, { 'content-type': 'application/json' }).end('{"result":{"info":{"__proto__":{"admin":true}},"constructor":{"prototype":{}}}}');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"result":{}}');
    });
    // One target per namespace, from config only; its query tells this backend how to misbehave.
    const hook = (channel: string) => ({ subscribe: { url: `${backend.url}/subscribe?channel=${channel}`, secretFile, timeoutMs: 500 } });
    const h = await startHerald({
      hooks: { namespaces: ['redirect', 'slow', 'huge', 'hostile'].map((name) => ({ name, ...hook(name) })) },
      channels: { namespaces: ['redirect', 'slow', 'huge', 'hostile'].map((name) => ({ name })).concat([{ name: 'news' }]) },
    });
    try {
      const reader = await connectWs(h, 'reader');
      await reader.call('subscribe', { channel: 'news:live' });
      const client = await connectWs(h, 'alice');
      // The four bad targets at once, while publications flow to the reader.
      const refused = Promise.all(['redirect', 'slow', 'huge', 'hostile'].map((name) => client.callError('subscribe', { channel: `${name}:x` })));
      for (let i = 0; i < 20; i++) assert.equal((await h.api('publish', { channel: 'news:live', data: { i } })).status, 200);
      assert.deepEqual(
        (await reader.waitPublications('news:live', 20)).map((p: { data: { i: number } }) => p.data.i),
        Array.from({ length: 20 }, (_, i) => i),
        'messages flow while the backend misbehaves',
      );
      assert.deepEqual(await refused, [119, 119, 119, 119], 'every bad answer is a failed call (fail closed)');
      assert.deepEqual(elsewhere.requests, [], 'the redirect to another host was not followed');
      assert.ok(backend.requests.every((r) => r.startsWith('POST /subscribe?channel=')), 'only the configured URLs were called');
      assert.equal(({} as Record<string, unknown>)['admin'], undefined, 'no prototype polluted');
      assert.equal((await fetch(`${h.url}/health/ready`)).status, 200, 'the server is ready');
      await reader.close();
      await client.close();
    } finally {
      for (const res of hang) res.destroy();
      await h.close();
      await close(backend.server);
    }
  });

  it('webhooks: a redirect to another host is not followed (a dead letter), the next endpoint still gets its events', async () => {
    const key = { id: 'k1', secret };
    const good = await WebhookReceiver.start([key]);
    const redirecting = await WebhookReceiver.start([key], () => ({ status: 308, headers: { location: `${elsewhere.url}/hooks` } }));
    const endpoint = (name: string, url: string) => ({ name, url, keys: [{ id: 'k1', secretFile }], events: ['channel_occupied'] });
    const h = await startHerald({ webhooks: { endpoints: [endpoint('redirect', redirecting.url), endpoint('good', good.url)], batchWindowMs: 20, pollIntervalMs: 200 } });
    try {
      const client = await connectWs(h, 'alice');
      await client.call('subscribe', { channel: 'chat:redirect' });
      await eventually(async () => (good.events().length === 1 && redirecting.requests.length === 1 ? true : undefined), 'both endpoints tried', 15000);
      await eventually(async () => ((await (await fetch(`http://127.0.0.1:${h.server.adminPort}/metrics`)).text()).includes('herald_webhook_events_total{endpoint="redirect",outcome="dead"} 1') ? true : undefined), 'the redirect is a dead letter', 15000);
      assert.deepEqual(elsewhere.requests, [], 'the redirect to another host was not followed');
      await client.close();
    } finally {
      await h.close();
      await good.close();
      await redirecting.close();
    }
  });

  it('JWKS: only the configured URL is fetched; a token naming its own key location (jku, x5u, a URL as kid) is refused and nothing is fetched there', async () => {
    const pair = await generateKeyPair('RS256', { extractable: true });
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
    const jwks = await recorder('127.0.0.1', (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [jwk] })));
    // The attacker's server publishes the attacker's key.
    const evil = await generateKeyPair('RS256', { extractable: true });
    const evilJwk = { ...(await exportJWK(evil.publicKey)), kid: 'evil', alg: 'RS256', use: 'sig' };
    const attacker = await recorder('127.0.0.2', (_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: [evilJwk] })));
    const h = await startHerald({ auth: { algorithms: ['RS256'], jwksUrl: `${jwks.url}/jwks.json`, jwksCooldownMs: 0 } });
    try {
      const good = await openWs(h.wsUrl);
      await good.connect(await new SignJWT({}).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setSubject('alice').setExpirationTime('1h').sign(pair.privateKey));
      await good.close();
      const forged = [
        { alg: 'RS256', kid: 'evil', jku: `${attacker.url}/jwks.json` },
        { alg: 'RS256', kid: 'evil', x5u: `${attacker.url}/cert.pem` },
        { alg: 'RS256', kid: `${attacker.url}/jwks.json` },
        { alg: 'RS256', kid: '../../evil' },
      ];
      for (const header of forged) {
        const client = await openWs(h.wsUrl);
        client.send({ id: 1, method: 'connect', params: { token: await new SignJWT({}).setProtectedHeader(header).setSubject('mallory').setExpirationTime('1h').sign(evil.privateKey) } });
        assert.equal((await client.waitClose(10000)).code, 3500, JSON.stringify(header));
      }
      assert.deepEqual(attacker.requests, [], 'nothing fetched from a location a token named');
      assert.ok(jwks.requests.length > 0 && jwks.requests.every((r) => r === 'GET /jwks.json'), `only the configured JWKS URL: ${JSON.stringify(jwks.requests)}`);
    } finally {
      await h.close();
      await close(jwks.server);
      await close(attacker.server);
    }
  });
});
