/**
 * Proxy hooks (docs/hooks.md) against a real backend: a node:http server on
 * an ephemeral loopback port that verifies every call's signature with the
 * documented recipe, records what it was sent, and answers as each test
 * says. Herald is the real composition root.
 */
import { test, after, before, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import diagnosticsChannel from 'node:diagnostics_channel';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { openWs, type WsClient } from '../helpers/herald-ws.ts';
import { openSse, pollOpen, postJson, sendCommand, sseUrl } from '../helpers/rt-clients.ts';

type Json = any;

interface Call {
  readonly event: string;
  readonly path: string;
  readonly body: Json;
  readonly headers: IncomingHttpHeaders;
  /** The documented verification passed. */
  readonly verified: boolean;
}

/** What the backend does with a call: answer JSON, answer raw text with a status, or hold it until released. */
type Answer = { json: unknown } | { status: number; text: string; headers?: Record<string, string> } | { hold: Promise<unknown> } | { endless: true };

const secret = randomBytes(32).toString('base64url');

/** The recipe of docs/hooks.md, "Verifying a call". */
function verify(headers: IncomingHttpHeaders, raw: string): boolean {
  const timestamp = Number(headers['x-herald-timestamp']);
  if (!Number.isInteger(timestamp) || Math.abs(Date.now() / 1000 - timestamp) > 300) return false;
  const expected = Buffer.from('v1=' + createHmac('sha256', secret).update(`${timestamp}.${raw}`).digest('hex'));
  const given = Buffer.from(String(headers['x-herald-signature'] ?? ''));
  return given.length === expected.length && timingSafeEqual(given, expected);
}

class Backend {
  readonly calls: Call[] = [];
  handlers = new Map<string, (body: Json) => Answer>();
  server!: Server;
  url = '';

  async start(): Promise<void> {
    this.server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const raw = Buffer.concat(chunks).toString('utf8');
        const body = JSON.parse(raw);
        const event = String(request.headers['x-herald-event']);
        this.calls.push({ event, path: request.url ?? '', body, headers: request.headers, verified: verify(request.headers, raw) });
        const handler = this.handlers.get(event) ?? (() => ({ json: { result: {} } }));
        void this.#answer(response, handler(body));
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async #answer(response: ServerResponse, answer: Answer): Promise<void> {
    if ('hold' in answer) {
      await answer.hold;
      if (!response.destroyed) response.end('{"result":{}}');
      return;
    }
    if ('endless' in answer) {
      // 100 MB and more, no length announced: written until the reader hangs up.
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('{"result":{"info":"');
      const chunk = 'x'.repeat(65536);
      const more = (): void => {
        let written = 0;
        while (!response.destroyed && written < 100 * 1024 * 1024 && response.write(chunk)) written += chunk.length;
        if (!response.destroyed) response.once('drain', more);
      };
      response.on('close', () => response.removeAllListeners('drain'));
      more();
      return;
    }
    if ('json' in answer) {
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(answer.json));
      return;
    }
    response.writeHead(answer.status, { 'content-type': 'application/json', ...answer.headers }).end(answer.text);
  }

  on(event: string, handler: (body: Json) => Answer): void {
    this.handlers.set(event, handler);
  }

  of(event: string): Call[] {
    return this.calls.filter((c) => c.event === event);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

const backend = new Backend();
let secretDir = '';
let secretFile = '';

before(async () => {
  await backend.start();
  secretDir = mkdtempSync(join(tmpdir(), 'herald-hook-secret-'));
  secretFile = join(secretDir, 'hook-secret');
  writeFileSync(secretFile, secret, { mode: 0o600 });
});

after(async () => {
  await backend.close();
  rmSync(secretDir, { recursive: true, force: true });
});

beforeEach(() => {
  backend.calls.length = 0;
  backend.handlers.clear();
});

/** A hook target on the test backend. */
function target(path: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { url: `${backend.url}/${path}`, secretFile, ...extra };
}

async function withHerald(hooks: Record<string, unknown>, run: (h: TestHerald) => Promise<void>, extra: Record<string, any> = {}): Promise<void> {
  const h = await startHerald({ hooks, ...extra });
  try {
    await run(h);
  } finally {
    await h.close();
  }
}

async function ws(h: TestHerald, headers: Record<string, string> = {}): Promise<WsClient> {
  return openWs(h.wsUrl, { headers });
}

test('connect hook: called after a valid token with its user, signed; it sets the user, conn_info and the expiry', async () => {
  await withHerald({ connect: target('connect') }, async (h) => {
    const expireAt = Math.floor(Date.now() / 1000) + 3600;
    backend.on('connect', (body) => ({ json: { result: { user: body.user + '-checked', info: { role: 'editor' }, expire_at: expireAt } } }));
    const client = await ws(h);
    const result = await client.connect(await h.token('alice'));
    assert.ok(result.ttl > 3500 && result.ttl <= 3600, `ttl from the hook's expire_at: ${result.ttl}`);
    const [call] = backend.of('connect');
    assert.ok(call, 'the backend was called');
    assert.equal(call.verified, true, 'the signature verifies with the documented recipe');
    assert.equal(call.body.user, 'alice');
    assert.equal(call.body.token_present, true);
    assert.equal(call.body.transport, 'websocket');
    assert.equal(call.body.client, result.client);
    await client.call('subscribe', { channel: 'chat:hooks-1' });
    const presence = await client.call('presence', { channel: 'chat:hooks-1' });
    assert.deepEqual(presence.clients[result.client], { client: result.client, user: 'alice-checked', conn_info: { role: 'editor' } });
    await client.close();
  });
});

test('connect hook renamed the user: a refresh token for the original sub keeps the connection and the hook\'s user; another sub closes it with 3500', async () => {
  await withHerald({ connect: target('connect') }, async (h) => {
    backend.on('connect', (body) => ({ json: { result: { user: body.user + '-checked' } } }));
    const client = await ws(h);
    const result = await client.connect(await h.token('alice', {}, 60));
    const refreshed = await client.call('refresh', { token: await h.token('alice', {}, 3600) });
    assert.ok(refreshed.ttl > 3500 && refreshed.ttl <= 3600, `ttl from the new token: ${refreshed.ttl}`);
    await client.call('subscribe', { channel: 'chat:hooks-rename' });
    const presence = await client.call('presence', { channel: 'chat:hooks-rename' });
    assert.equal(presence.clients[result.client].user, 'alice-checked', 'the hook\'s user stays');
    assert.equal(backend.of('connect').length, 1, 'a refresh asks no connect hook');
    // The renamed user's own name is not the token's sub: refused like any other sub.
    await assert.rejects(client.call('refresh', { token: await h.token('alice-checked', {}, 3600) }));
    assert.equal((await client.closed).code, 3500);
  });
});

test('connect hook: a denial closes with the backend\'s code and reason; without a token nothing is asked unless withoutToken', async () => {
  await withHerald({ connect: target('connect') }, async (h) => {
    backend.on('connect', () => ({ json: { error: { code: 4403, message: 'banned' } } }));
    const client = await ws(h);
    client.send({ id: 1, method: 'connect', params: { token: await h.token('mallory') } });
    const closed = await client.waitClose();
    assert.deepEqual(closed, { code: 4403, reason: 'banned' });
    // No token, no anonymous namespace asked for: refused before any call.
    const before = backend.of('connect').length;
    const anon = await ws(h);
    await anon.connect();
    assert.equal(backend.of('connect').length, before, 'an anonymous connection is not sent to the hook without withoutToken');
    await anon.close();
    // SSE: the same denial is a 403 connection_denied with the reason as detail.
    const sse = await openSse(sseUrl(h.url, { token: await h.token('mallory') }));
    assert.equal(sse.status, 403);
    assert.equal((sse.errorBody as Json).error.code, 'connection_denied');
    assert.equal((sse.errorBody as Json).error.detail, 'banned');
  });
});

test('connect hook withoutToken: the hook authenticates a connection that has no token', async () => {
  await withHerald({ connect: target('connect', { withoutToken: true, forwardCookies: ['session'] }) }, async (h) => {
    backend.on('connect', (body) => (body.cookies.session === 'good' ? { json: { result: { user: 'cookie-user' } } } : { json: { error: { message: 'no session' } } }));
    const client = await ws(h, { cookie: 'session=good; other=secret' });
    const result = await client.connect();
    const [call] = backend.of('connect');
    assert.equal(call!.body.token_present, false);
    assert.deepEqual(call!.body.cookies, { session: 'good' }, 'only the allowlisted cookie is forwarded');
    await client.call('subscribe', { channel: 'chat:hooks-2' });
    const presence = await client.call('presence', { channel: 'chat:hooks-2' });
    assert.equal(presence.clients[result.client].user, 'cookie-user');
    await client.close();
    // Without the cookie the hook refuses: 3504 (no code given) with its message.
    const refused = await ws(h);
    refused.send({ id: 1, method: 'connect', params: {} });
    assert.deepEqual(await refused.waitClose(), { code: 3504, reason: 'no session' });
  });
});

test('forwarded headers come only from the allowlist: a forged header not in it never reaches the backend', async () => {
  await withHerald({ subscribe: target('subscribe', { forwardHeaders: ['X-Tenant'] }) }, async (h) => {
    const client = await ws(h, { 'x-tenant': 'acme', 'x-user-id': 'admin', authorization: 'Bearer forged', cookie: 'session=s' });
    await client.connect(await h.token('alice'));
    await client.call('subscribe', { channel: 'chat:hooks-3' });
    const [call] = backend.of('subscribe');
    assert.deepEqual(call!.body.headers, { 'x-tenant': 'acme' });
    assert.deepEqual(call!.body.cookies, {});
    assert.ok(!JSON.stringify(call!.body).includes('forged') && !JSON.stringify(call!.body).includes('admin'), 'nothing else of the request is sent');
    await client.close();
  });
});

test('subscribe hook: deny with the backend\'s code and message; allow attaches channel info to presence, join and publications', async () => {
  await withHerald({ subscribe: target('subscribe') }, async (h) => {
    backend.on('subscribe', (body) =>
      body.channel === 'chat:secret' ? { json: { error: { code: 1403, message: 'not a member' } } } : { json: { result: { info: { seat: 7 } } } },
    );
    const client = await ws(h);
    const { client: id } = await client.connect(await h.token('alice'));
    const denied = await client.request('subscribe', { channel: 'chat:secret' });
    assert.deepEqual(denied.error, { code: 1403, message: 'not a member' });
    await client.call('subscribe', { channel: 'chat:open' });
    const call = backend.of('subscribe').find((c) => c.body.channel === 'chat:open')!;
    assert.equal(call.body.user, 'alice');
    assert.equal(call.verified, true);
    const presence = await client.call('presence', { channel: 'chat:open' });
    assert.deepEqual(presence.clients[id], { client: id, user: 'alice', chan_info: { seat: 7 } });
    await client.call('publish', { channel: 'chat:open', data: { text: 'hi' } });
    const [publication] = await client.waitPublications('chat:open', 1);
    assert.deepEqual(publication.info, { client: id, user: 'alice', chan_info: { seat: 7 } });
    // Connect-time subscription on SSE follows the same hook: a denial arrives as an `unsubscribed` push.
    const sse = await openSse(sseUrl(h.url, { token: await h.token('bob'), channels: ['chat:secret'] }));
    const push = await sse.waitForFrame((f) => f.push === 'unsubscribed');
    assert.deepEqual([push.code, push.reason], [1403, 'not a member']);
    sse.abort();
    await client.close();
  });
});

test('namespace hooks: a namespace target replaces the global one, false turns it off', async () => {
  await withHerald(
    { subscribe: target('global'), namespaces: [{ name: 'chat', subscribe: target('chat') }, { name: 'public', subscribe: false }] },
    async (h) => {
      const client = await ws(h);
      await client.connect(await h.token('alice'));
      await client.call('subscribe', { channel: 'chat:a' });
      await client.call('subscribe', { channel: 'public:a' });
      await client.call('subscribe', { channel: 'plain' });
      const calls = backend.of('subscribe').map((c) => [c.body.channel, c.path]);
      assert.deepEqual(calls, [['chat:a', '/chat'], ['plain', '/global']]);
      await client.close();
    },
  );
});

test('publish hook: client publishes are denied with the backend\'s code or carry the replaced data; API publishes are not asked', async () => {
  await withHerald({ publish: target('publish') }, async (h) => {
    backend.on('publish', (body) => {
      if (body.data.text === 'spam') return { json: { error: { code: 1429, message: 'slow down' } } };
      if (body.data.text === 'rude') return { json: { result: { data: { text: '***', moderated: true } } } };
      return { json: { result: {} } };
    });
    const client = await ws(h);
    await client.connect(await h.token('alice'));
    await client.call('subscribe', { channel: 'chat:mod' });
    const denied = await client.request('publish', { channel: 'chat:mod', data: { text: 'spam' } });
    assert.deepEqual(denied.error, { code: 1429, message: 'slow down' });
    await client.call('publish', { channel: 'chat:mod', data: { text: 'rude' } });
    await client.call('publish', { channel: 'chat:mod', data: { text: 'fine' } });
    const api = await h.api('publish', { channel: 'chat:mod', data: { text: 'spam' } });
    assert.equal(api.status, 200, 'API publishes are trusted');
    const publications = await client.waitPublications('chat:mod', 3);
    assert.deepEqual(
      publications.map((p: Json) => p.data),
      [{ text: '***', moderated: true }, { text: 'fine' }, { text: 'spam' }],
    );
    const calls = backend.of('publish');
    assert.equal(calls.length, 3, 'one call per client publish, none for the API');
    assert.deepEqual(calls[0]!.body.data, { text: 'spam' });
    assert.equal(calls[0]!.body.channel, 'chat:mod');
    assert.ok(calls.every((c) => c.verified));
    const metrics = (await h.server.metricsJson()) as Json[];
    const counted = metrics.find((m) => m.name === 'herald_hook_calls_total');
    const value = (outcome: string) => counted.values.find((v: Json) => v.labels.event === 'publish' && v.labels.outcome === outcome)?.value;
    assert.deepEqual([value('allow'), value('deny')], [2, 1], 'hook calls are counted by event and outcome');
    assert.ok(metrics.some((m) => m.name === 'herald_hook_duration_seconds'));
    await client.close();
  });
});

test('rpc: answered by the backend on WebSocket, SSE and long polling; 120 without an rpc hook', async () => {
  await withHerald({ rpc: target('rpc') }, async (h) => {
    backend.on('rpc', (body) =>
      body.method === 'fail' ? { json: { error: { code: 1404, message: 'no such order' } } } : { json: { result: { data: { echo: body.data, user: body.user, via: body.transport } } } },
    );
    const client = await ws(h);
    await client.connect(await h.token('alice'));
    assert.deepEqual(await client.call('rpc', { method: 'orders:get', data: { id: 1 } }), { data: { echo: { id: 1 }, user: 'alice', via: 'websocket' } });
    assert.deepEqual((await client.request('rpc', { method: 'fail' })).error, { code: 1404, message: 'no such order' });
    await client.close();

    const sse = await openSse(sseUrl(h.url, { token: await h.token('bob') }));
    const connected = await sse.waitForFrame((f) => f.push === 'connected');
    const viaSse = await sendCommand(h.url, connected.session, { id: 1, method: 'rpc', params: { method: 'ping', data: 'x' } });
    assert.equal(viaSse.status, 200);
    assert.deepEqual(viaSse.body, [{ id: 1, result: { data: { echo: 'x', user: 'bob', via: 'sse' } } }]);
    sse.abort();

    const opened = await pollOpen(h.url, { token: await h.token('carol') });
    assert.equal(opened.status, 200);
    const session = (opened.body as Json).session;
    const viaPoll = await sendCommand(h.url, session, [{ id: 5, method: 'rpc', params: { method: 'ping', data: [1, 2] } }]);
    assert.deepEqual(viaPoll.body, [{ id: 5, result: { data: { echo: [1, 2], user: 'carol', via: 'long_poll' } } }]);
  });
  await withHerald({}, async (h) => {
    const client = await ws(h);
    await client.connect(await h.token('alice'));
    assert.equal(await client.callError('rpc', { method: 'anything' }), 120);
    await client.close();
  });
});

test('rpc in the client SDK on every transport', async () => {
  const { HeraldClient } = await import('../../../client/src/index.ts');
  await withHerald({ rpc: target('rpc') }, async (h) => {
    backend.on('rpc', (body) => (body.method === 'deny' ? { json: { error: { code: 1403, message: 'no' } } } : { json: { result: { data: { sum: body.data.a + body.data.b, via: body.transport } } } }));
    for (const transport of ['websocket', 'sse', 'long-poll'] as const) {
      const client = new HeraldClient({ url: h.url, token: await h.token('sdk-user'), transports: [transport] });
      client.connect();
      try {
        assert.deepEqual(await client.rpc('math:add', { a: 2, b: 3 }), { sum: 5, via: transport.replace('-', '_') });
        await assert.rejects(client.rpc('deny'), (error: Json) => error.code === 1403 && error.message === 'no');
      } finally {
        client.disconnect();
      }
    }
  });
});

test('refresh hook: at expiry the backend extends the connection, or ends it with 3003', async () => {
  await withHerald({ connect: target('connect'), refresh: target('refresh') }, async (h) => {
    // The connect hook makes the connection expire at once (in the past); the refresh hook then decides.
    backend.on('connect', () => ({ json: { result: { expire_at: Math.floor(Date.now() / 1000) - 1 } } }));
    let refreshes = 0;
    backend.on('refresh', (body) => {
      refreshes++;
      return body.user === 'keep' && refreshes === 1
        ? { json: { result: { expire_at: Math.floor(Date.now() / 1000) + 3600, info: { refreshed: true } } } }
        : { json: { result: { expired: true } } };
    });
    const kept = await ws(h);
    const { client: id } = await kept.connect(await h.token('keep'));
    await waitFor(() => backend.of('refresh').length === 1, 'the refresh call');
    const refresh = backend.of('refresh')[0]!;
    assert.equal(refresh.body.client, id);
    assert.equal(refresh.verified, true);
    await kept.call('subscribe', { channel: 'chat:refresh' });
    const presence = await kept.call('presence', { channel: 'chat:refresh' });
    assert.deepEqual(presence.clients[id].conn_info, { refreshed: true }, 'the connection lives on with the refreshed info');
    assert.equal(kept.frames.some((f: Json) => f.push === 'refresh'), false, 'the client was not asked for a token');
    const ended = await ws(h);
    await ended.connect(await h.token('other'));
    assert.equal((await ended.waitClose()).code, 3003);
    await kept.close();
  });
});

async function waitFor(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (check()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('failures: timeout, backend down, non-2xx, redirect, invalid, oversized and deep answers fail closed by default (119, 3011) and open when configured', async () => {
  const hang = new Promise(() => undefined);
  // [what, answer, the failure's reason on the herald:hook:call diagnostics channel]
  const bad: [string, Answer, string][] = [
    ['timeout', { hold: hang }, 'timeout'],
    ['status 500', { status: 500, text: '{"result":{}}' }, 'status_500'],
    ['redirect', { status: 307, text: '', headers: { location: 'http://127.0.0.1:1/elsewhere' } }, 'status_307'],
    ['not JSON', { status: 200, text: 'allow' }, 'answer_invalid_json'],
    ['wrong schema', { json: { result: { info: 1, extra: true } } }, 'answer_schema'],
    ['both result and error', { json: { result: {}, error: { code: 1000 } } }, 'answer_schema'],
    ['code out of range', { json: { error: { code: 3504 } } }, 'answer_schema'],
    ['oversized', { status: 200, text: JSON.stringify({ result: { info: 'x'.repeat(5000) } }) }, 'answer_too_large'],
    ['endless', { endless: true }, 'answer_too_large'],
    ['too deep', { status: 200, text: '{"result":{"info":' + '['.repeat(100) + ']'.repeat(100) + '}}' }, 'answer_too_deep'],
    ['poisoned', { status: 200, text: '{"result":{"info":{"__proto__":{"admin":true}}}}' }, 'answer_poisoned'],
  ];
  const reasons: string[] = [];
  const record = (event: unknown): void => {
    const call = event as { event: string; outcome: string; reason?: string };
    if (call.event === 'subscribe') reasons.push(call.outcome === 'failed' ? String(call.reason) : call.outcome);
  };
  diagnosticsChannel.subscribe('herald:hook:call', record);
  await withHerald({ subscribe: target('subscribe', { timeoutMs: 300 }), connect: target('connect', { timeoutMs: 300 }), maxAnswerBytes: 1024 }, async (h) => {
    backend.on('connect', () => ({ json: { result: {} } }));
    const client = await ws(h);
    await client.connect(await h.token('alice'));
    for (const [what, answer, reason] of bad) {
      backend.on('subscribe', () => answer);
      reasons.length = 0;
      assert.equal(await client.callError('subscribe', { channel: `chat:${what.replaceAll(' ', '-')}` }), 119, what);
      assert.deepEqual(reasons, [reason], what);
    }
    diagnosticsChannel.unsubscribe('herald:hook:call', record);
    assert.ok(!backend.calls.some((c) => c.path === '/elsewhere'), 'the redirect was not followed');
    // The server is unaffected: a good answer works again.
    backend.on('subscribe', () => ({ json: { result: {} } }));
    await client.call('subscribe', { channel: 'chat:after' });
    // Connect fails closed: 3011 on WebSocket, 503 hook_unavailable on SSE.
    backend.on('connect', () => ({ hold: hang }));
    const refused = await ws(h);
    refused.send({ id: 1, method: 'connect', params: { token: await h.token('bob') } });
    assert.equal((await refused.waitClose()).code, 3011);
    const sse = await openSse(sseUrl(h.url, { token: await h.token('bob') }));
    assert.equal(sse.status, 503);
    assert.equal((sse.errorBody as Json).error.code, 'hook_unavailable');
    await client.close();
  });
  // Fail open: the same failures let the subscription and connection through; the backend is down altogether.
  const down = 'http://127.0.0.1:1/down';
  await withHerald(
    { subscribe: { url: down, secretFile, failure: 'open' }, connect: { url: down, secretFile, failure: 'open' }, publish: { url: down, secretFile, failure: 'open' }, rpc: { url: down, secretFile, failure: 'open' } },
    async (h) => {
      const client = await ws(h);
      await client.connect(await h.token('alice'));
      await client.call('subscribe', { channel: 'chat:open' });
      await client.call('publish', { channel: 'chat:open', data: 1 });
      assert.equal(await client.callError('rpc', { method: 'x' }), 119, 'an rpc never fails open');
      await client.close();
    },
  );
});

test('in-flight bound: one call more than maxInFlight fails at once (the policy applies) while the others wait', async () => {
  await withHerald({ subscribe: target('subscribe', { maxInFlight: 2 }) }, async (h) => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    backend.on('subscribe', () => ({ hold: held }));
    const client = await ws(h);
    await client.connect(await h.token('alice'));
    const first = client.request('subscribe', { channel: 'chat:f1' });
    const second = client.request('subscribe', { channel: 'chat:f2' });
    await waitFor(() => backend.of('subscribe').length === 2, 'two calls in flight');
    const third = await client.request('subscribe', { channel: 'chat:f3' });
    assert.equal(third.error?.code, 119, 'the third call is refused while two are in flight');
    assert.equal(backend.of('subscribe').length, 2, 'the third never reached the backend');
    release();
    assert.equal((await first).error, undefined);
    assert.equal((await second).error, undefined);
    await client.close();
  });
});

test('configuration: a hook without a secret, or with a short one, refuses to start', async () => {
  await assert.rejects(startHerald({ hooks: { subscribe: { url: `${backend.url}/s` } } }), /secretFile and secretEnv/);
  const short = join(secretDir, 'short');
  writeFileSync(short, 'too-short');
  await assert.rejects(startHerald({ hooks: { rpc: { url: `${backend.url}/s`, secretFile: short } } }), /shorter than 32/);
  await assert.rejects(startHerald({ hooks: { rpc: { url: `${backend.url}/s`, secretEnv: 'HERALD_TEST_UNSET_HOOK_SECRET' } } }), /is not set/);
});

test('SSE and long polling forward the allowlisted headers of their opening request; the API sees chan_info in presence', async () => {
  await withHerald({ subscribe: target('subscribe', { forwardHeaders: ['x-tenant'] }) }, async (h) => {
    backend.on('subscribe', () => ({ json: { result: { info: { tier: 'gold' } } } }));
    const sse = await openSse(sseUrl(h.url, { token: await h.token('alice'), channels: ['chat:sse-fwd'] }), { 'x-tenant': 'acme', 'x-forged': 'yes' });
    await sse.waitForFrame((f) => f.push === 'subscribed');
    const opened = await postJson(new URL('/connection/poll/open', h.url).toString(), { token: await h.token('bob'), channels: ['chat:lp-fwd'] }, { 'x-tenant': 'globex', 'x-forged': 'yes' });
    assert.equal(opened.status, 200);
    const calls = backend.of('subscribe');
    assert.deepEqual(
      calls.map((c) => [c.body.transport, c.body.headers]),
      [
        ['sse', { 'x-tenant': 'acme' }],
        ['long_poll', { 'x-tenant': 'globex' }],
      ],
    );
    const presence = await h.api('presence', { channel: 'chat:sse-fwd' });
    assert.deepEqual(Object.values(presence.body.clients).map((c: Json) => c.chan_info), [{ tier: 'gold' }]);
    sse.abort();
  });
});

test('publish hook: replaced data larger than limits.maxMessageBytes is refused (113)', async () => {
  await withHerald({ publish: target('publish') }, async (h) => {
    backend.on('publish', () => ({ json: { result: { data: 'x'.repeat(2000) } } }));
    const client = await ws(h);
    await client.connect(await h.token('alice'));
    await client.call('subscribe', { channel: 'chat:big' });
    assert.equal(await client.callError('publish', { channel: 'chat:big', data: 'small' }), 113);
    await client.close();
  }, { limits: { maxMessageBytes: 1024 } });
});

test('refresh hook failures: closed ends the connection with 3011; open keeps it and asks again', async () => {
  for (const failure of ['closed', 'open'] as const) {
    await withHerald({ connect: target('connect'), refresh: target('refresh', { failure, timeoutMs: 200 }) }, async (h) => {
      backend.on('connect', () => ({ json: { result: { expire_at: Math.floor(Date.now() / 1000) - 1 } } }));
      backend.on('refresh', () => ({ status: 502, text: 'bad gateway' }));
      const client = await ws(h);
      await client.connect(await h.token('alice'));
      if (failure === 'closed') {
        assert.equal((await client.waitClose()).code, 3011);
      } else {
        await waitFor(() => backend.of('refresh').length >= 1, 'the refresh call');
        await client.call('ping');
        assert.equal(client.isOpen, true, 'fail open keeps the connection');
        await client.close();
      }
    }, { auth: { expiryGraceMs: 60000 } });
  }
});
