/**
 * SECURITY-TESTS A1–A2 and the CORS rules: cross-site WebSocket hijacking
 * and its SSE / long-poll equivalents. A request with an `Origin` that is
 * not exactly on `cors.origins` (nor the server's own origin) is refused
 * with 403 before any handler, on every transport and on the API; the token
 * cookie counts only with an allowed `Origin`; bearer/JWT clients without
 * `Origin` work; preflights are answered with the allowed methods and
 * headers.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, http, openWs, unique } from '../helpers/herald-ws.ts';
import { openSse, sseUrl, type SseStream } from '../helpers/rt-clients.ts';
import { rawExchange, upgradeHead } from './raw-http.ts';

const ORIGIN = 'https://app.example.com';
const COOKIE = 'herald_token';

/** Origins a browser page other than the allowed one could send. */
const FOREIGN = [
  'https://evil.example',
  'null',
  'https://app.example.com.evil.example',
  'https://evilapp.example.com',
  'https://app-example.com',
  'https://app.example.co',
  'http://app.example.com',
  'https://app.example.com:8443',
  'https://app.example.com/',
  'https://APP.EXAMPLE.COM',
  'https://app.example.com, https://evil.example',
  'file://',
];

describe('origin allowlist and cookie auth (A1, A2)', { timeout: 60000 }, () => {
  let h: TestHerald;
  let aliceCookie: string;
  const streams: SseStream[] = [];

  before(async () => {
    h = await startHerald({
      cors: { origins: [ORIGIN] },
      auth: { cookieName: COOKIE },
      // No namespace allows anonymous access: a connection without a usable credential is refused.
      channels: { defaults: {}, namespaces: [{ name: 'chat', presence: true }] },
    });
    aliceCookie = `${COOKIE}=${await h.token('alice')}`;
  });
  afterEach(() => {
    closeAllClients();
    for (const stream of streams.splice(0)) stream.abort();
  });
  after(() => h.close());

  const history = async (channel: string) => {
    const answer = await h.api('history', { channel, limit: 10 });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body;
  };

  test('WebSocket: a foreign, null, look-alike or suffix-matching Origin with the cookie gets 403 before the upgrade', async () => {
    const before = h.server.node.connectionCount;
    for (const origin of FOREIGN) {
      const answer = await rawExchange(h.server.port, upgradeHead(h.server.port, [`Origin: ${origin}`, `Cookie: ${aliceCookie}`]));
      assert.equal(answer.status, 403, `${origin}: ${answer.text}`);
      assert.deepEqual(answer.statuses, [403], `${origin}: no 101 may follow`);
      assert.equal(JSON.parse(answer.body).error.code, 'origin_not_allowed');
      assert.ok(answer.closed, `${origin}: the socket is closed after the refusal`);
    }
    assert.equal(h.server.node.connectionCount, before, 'no connection was created');
  });

  test('WebSocket: the exact allowed Origin with the cookie gets 101 and connects as the cookie user', async () => {
    const channel = unique('chat:cookie-ws');
    const c = await openWs(h.wsUrl, { headers: { Origin: ORIGIN, Cookie: aliceCookie } });
    await c.connect();
    await c.call('subscribe', { channel });
    const presence = await h.api('presence', { channel });
    assert.deepEqual(
      Object.values(presence.body.clients).map((info: any) => info.user),
      ['alice'],
    );
  });

  test('WebSocket: a token in connect wins over the cookie', async () => {
    const channel = unique('chat:cookie-ws');
    const c = await openWs(h.wsUrl, { headers: { Origin: ORIGIN, Cookie: aliceCookie } });
    await c.connect(await h.token('bob'));
    await c.call('subscribe', { channel });
    const presence = await h.api('presence', { channel });
    assert.deepEqual(
      Object.values(presence.body.clients).map((info: any) => info.user),
      ['bob'],
    );
  });

  test('WebSocket: the server\'s own origin (same host) is allowed', async () => {
    const c = await openWs(h.wsUrl, { headers: { Origin: h.url, Cookie: aliceCookie } });
    await c.connect();
    assert.ok(c.isOpen);
  });

  test('WebSocket: without Origin the cookie is ignored (refused: 3504); a JWT in connect works', async () => {
    const cookieOnly = await openWs(h.wsUrl, { headers: { Cookie: aliceCookie } });
    cookieOnly.send({ id: 1, method: 'connect', params: {} });
    const closed = await cookieOnly.waitClose();
    assert.equal(closed.code, 3504);

    const bearer = await openWs(h.wsUrl);
    const result = await bearer.connect(await h.token('carol'));
    assert.equal(typeof result.client, 'string');
  });

  test('SSE: foreign Origins are refused with 403; the exact Origin with the cookie streams as the cookie user', async () => {
    const channel = unique('chat:cookie-sse');
    for (const origin of FOREIGN) {
      const answer = await http(sseUrl(h.url, { channels: [channel] }), { headers: { origin, cookie: aliceCookie } });
      assert.equal(answer.status, 403, origin);
      assert.equal(answer.body.error.code, 'origin_not_allowed');
    }
    const stream = await openSse(sseUrl(h.url, { channels: [channel] }), { origin: ORIGIN, cookie: aliceCookie });
    streams.push(stream);
    assert.equal(stream.status, 200, JSON.stringify(stream.errorBody));
    assert.equal(stream.headers.get('access-control-allow-origin'), ORIGIN);
    assert.equal(stream.headers.get('access-control-allow-credentials'), 'true');
    await stream.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === channel);
    const presence = await h.api('presence', { channel });
    assert.deepEqual(
      Object.values(presence.body.clients).map((info: any) => info.user),
      ['alice'],
    );
  });

  test('SSE: without Origin the cookie is ignored (403 anonymous_not_allowed); ?token= works', async () => {
    const channel = unique('chat:cookie-sse');
    const cookieOnly = await http(sseUrl(h.url, { channels: [channel] }), { headers: { cookie: aliceCookie } });
    assert.equal(cookieOnly.status, 403);
    assert.equal(cookieOnly.body.error.code, 'anonymous_not_allowed');
    const stream = await openSse(sseUrl(h.url, { token: await h.token('dave'), channels: [channel] }));
    streams.push(stream);
    assert.equal(stream.status, 200);
    await stream.waitForFrame((f) => f['push'] === 'subscribed');
  });

  test('long polling: foreign Origins are refused with 403; the exact Origin with the cookie opens as the cookie user', async () => {
    const channel = unique('chat:cookie-lp');
    for (const origin of FOREIGN) {
      const answer = await http(`${h.url}/connection/poll/open`, { headers: { origin, cookie: aliceCookie }, body: { channels: [channel] } });
      assert.equal(answer.status, 403, origin);
      assert.equal(answer.body.error.code, 'origin_not_allowed');
    }
    const opened = await http(`${h.url}/connection/poll/open`, { headers: { origin: ORIGIN, cookie: aliceCookie }, body: { channels: [channel] } });
    assert.equal(opened.status, 200, opened.text);
    assert.equal(opened.headers.get('access-control-allow-origin'), ORIGIN);
    const presence = await h.api('presence', { channel });
    assert.deepEqual(
      Object.values(presence.body.clients).map((info: any) => info.user),
      ['alice'],
    );
    // Commands from a foreign origin are refused even with the session secret.
    const session = opened.body.session as string;
    const command = await http(`${h.url}/connection/command`, {
      headers: { origin: 'https://evil.example', 'herald-session': session },
      body: { id: 1, method: 'presence', params: { channel } },
    });
    assert.equal(command.status, 403);
    await http(`${h.url}/connection/close`, { headers: { 'herald-session': session }, body: {} });
  });

  test('long polling: without Origin the cookie is ignored (403 anonymous_not_allowed); a token in the body works', async () => {
    const channel = unique('chat:cookie-lp');
    const cookieOnly = await http(`${h.url}/connection/poll/open`, { headers: { cookie: aliceCookie }, body: { channels: [channel] } });
    assert.equal(cookieOnly.status, 403);
    assert.equal(cookieOnly.body.error.code, 'anonymous_not_allowed');
    const opened = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token('erin'), channels: [channel] } });
    assert.equal(opened.status, 200, opened.text);
    await http(`${h.url}/connection/close`, { headers: { 'herald-session': opened.body.session }, body: {} });
  });

  test('server API: a foreign Origin is refused before the handler, so nothing is published', async () => {
    const channel = unique('chat:origin-api');
    for (const origin of FOREIGN) {
      const answer = await http(`${h.url}/api/publish`, {
        headers: { origin, authorization: `Bearer ${h.apiKey}` },
        body: { channel, data: { origin } },
      });
      assert.equal(answer.status, 403, origin);
      assert.equal(answer.body.error.code, 'origin_not_allowed');
    }
    assert.equal((await history(channel)).offset, 0, 'nothing was published');
    const allowed = await http(`${h.url}/api/publish`, {
      headers: { origin: ORIGIN, authorization: `Bearer ${h.apiKey}` },
      body: { channel, data: 'ok' },
    });
    assert.equal(allowed.status, 200, allowed.text);
    assert.equal(allowed.headers.get('access-control-allow-origin'), ORIGIN);
    assert.match(allowed.headers.get('vary') ?? '', /origin/i);
  });

  test('preflight: OPTIONS from the allowed origin is answered with the allowed methods and headers', async () => {
    for (const path of ['/api/publish', '/connection/command', '/connection/poll/open', '/connection/poll', '/connection/sse']) {
      const answer = await http(`${h.url}${path}`, {
        method: 'OPTIONS',
        headers: {
          origin: ORIGIN,
          'access-control-request-method': path === '/connection/sse' ? 'GET' : 'POST',
          'access-control-request-headers': 'content-type, herald-session, last-event-id',
        },
      });
      assert.equal(answer.status, 204, `${path}: ${answer.text}`);
      assert.equal(answer.headers.get('access-control-allow-origin'), ORIGIN);
      assert.equal(answer.headers.get('access-control-allow-credentials'), 'true');
      const methods = (answer.headers.get('access-control-allow-methods') ?? '').split(',').map((m) => m.trim());
      assert.deepEqual(methods.sort(), ['GET', 'POST']);
      const headers = (answer.headers.get('access-control-allow-headers') ?? '').split(',').map((m) => m.trim().toLowerCase());
      assert.deepEqual(headers.sort(), ['authorization', 'content-type', 'herald-session', 'last-event-id', 'x-api-key']);
    }
  });

  test('preflight: OPTIONS from a foreign origin is 403 without CORS headers', async () => {
    for (const origin of FOREIGN) {
      const answer = await http(`${h.url}/api/publish`, {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'POST' },
      });
      assert.equal(answer.status, 403, origin);
      assert.equal(answer.headers.get('access-control-allow-origin'), null);
    }
  });
});
