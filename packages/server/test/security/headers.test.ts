/**
 * Security headers on every HTTP response of the public listener: answers,
 * errors, 404s; the server API's answers (`/api/…`) with their shorter set;
 * the transports' answers (`/connection/…`, `/apps/{id}/connection/…`: the
 * SSE stream, long-poll answers, commands, and their errors) with theirs,
 * never without `nosniff` and framing refused. No X-Powered-By, no HSTS
 * without TLS (tls.test.ts checks it with TLS), generic error bodies.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { http, postRaw, type HttpAnswer } from '../helpers/herald-ws.ts';
import { apiErrors } from '@herald/protocol';
import { RawSse } from '../helpers/rt-raw.ts';
import { waitUntil } from '../helpers/rt-util.ts';
import { parseAnswer } from './raw-http.ts';
import { startPusherHerald, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';
import { signToken } from '../helpers/herald-ws.ts';

function assertSecurityHeaders(get: (name: string) => string | null | undefined, where: string): void {
  const csp = get('content-security-policy') ?? '';
  assert.match(csp, /default-src 'none'/, `${where}: CSP`);
  assert.match(csp, /frame-ancestors 'none'/, `${where}: CSP frame-ancestors`);
  assert.match(csp, /script-src 'self'/, `${where}: CSP script-src`);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, `${where}: no unsafe CSP sources`);
  assert.equal(get('x-content-type-options'), 'nosniff', `${where}: nosniff`);
  assert.equal(get('x-frame-options'), 'DENY', `${where}: frame denial`);
  assert.equal(get('referrer-policy'), 'no-referrer', `${where}: referrer policy`);
  assert.equal(get('x-powered-by') ?? null, null, `${where}: no X-Powered-By`);
  assert.equal(get('strict-transport-security') ?? null, null, `${where}: no HSTS without TLS`);
}

/** The server API's shorter set (edge/security-headers.ts apiSecurityHeaders): JSON answers to POSTs, never pages. */
function assertApiSecurityHeaders(get: (name: string) => string | null | undefined, where: string): void {
  assert.equal(get('content-security-policy'), "default-src 'none'; frame-ancestors 'none'", `${where}: API CSP`);
  assert.equal(get('x-content-type-options'), 'nosniff', `${where}: nosniff`);
  assert.equal(get('x-frame-options'), 'DENY', `${where}: frame denial`);
  assert.equal(get('referrer-policy'), 'no-referrer', `${where}: referrer policy`);
  assert.equal(get('x-powered-by') ?? null, null, `${where}: no X-Powered-By`);
  assert.equal(get('strict-transport-security') ?? null, null, `${where}: no HSTS without TLS`);
}

/** The page set's headers that the transports' set leaves out (edge/security-headers.ts transportSecurityHeaders). */
const PAGE_ONLY = [
  'referrer-policy',
  'cross-origin-resource-policy',
  'cross-origin-opener-policy',
  'origin-agent-cluster',
  'x-dns-prefetch-control',
  'x-download-options',
  'x-permitted-cross-domain-policies',
  'x-xss-protection',
];

/**
 * The transports' set (edge/security-headers.ts transportSecurityHeaders):
 * answers read by EventSource, fetch or XHR, never pages. `nosniff` and
 * framing refused (CSP frame-ancestors and X-Frame-Options) on every one.
 */
function assertTransportSecurityHeaders(get: (name: string) => string | null | undefined, where: string): void {
  assert.equal(get('x-content-type-options'), 'nosniff', `${where}: nosniff`);
  assert.equal(get('content-security-policy'), "frame-ancestors 'none'", `${where}: transport CSP, framing refused`);
  assert.equal(get('x-frame-options'), 'DENY', `${where}: frame denial`);
  for (const name of PAGE_ONLY) assert.equal(get(name) ?? null, null, `${where}: no ${name}`);
  assert.equal(get('x-powered-by') ?? null, null, `${where}: no X-Powered-By`);
  assert.equal(get('strict-transport-security') ?? null, null, `${where}: no HSTS without TLS`);
}

function assertGenericError(answer: HttpAnswer, code: keyof typeof apiErrors): void {
  assert.equal(answer.status, apiErrors[code].status, answer.text);
  assert.deepEqual(answer.body, { error: { code, message: apiErrors[code].message } });
  assert.doesNotMatch(answer.text, /\/work\/|node_modules|at [A-Za-z.]+ \(|Error:/, 'no stack trace or path in an error body');
}

describe('security headers', { timeout: 30000 }, () => {
  let h: TestHerald;

  before(async () => {
    h = await startHerald();
  });
  after(() => h.close());

  test('on answers, 404s and errors of every kind, with generic bodies', async () => {
    const health = await http(`${h.url}/health`);
    assert.equal(health.status, 200);
    assertSecurityHeaders((n) => health.headers.get(n), 'GET /health');

    const missing = await http(`${h.url}/nope`);
    assertGenericError(missing, 'not_found');
    assertSecurityHeaders((n) => missing.headers.get(n), '404');

    const badJson = await http(`${h.url}/api/publish`, { headers: { authorization: `Bearer ${h.apiKey}` }, body: '{"channel":' });
    assertGenericError(badJson, 'invalid_json');
    assertApiSecurityHeaders((n) => badJson.headers.get(n), 'invalid JSON');

    const noKey = await http(`${h.url}/api/publish`, { body: { channel: 'news', data: 1 } });
    assertGenericError(noKey, 'unauthorized');
    assertApiSecurityHeaders((n) => noKey.headers.get(n), '401');

    const tooLarge = await postRaw(`${h.url}/api/publish`, { authorization: `Bearer ${h.apiKey}` }, Buffer.alloc(200 * 1024, 0x20));
    assertGenericError(tooLarge, 'payload_too_large');
    assertApiSecurityHeaders((n) => tooLarge.headers.get(n), '413');

    // The API's answers on fastify's route (an unusual JSON spelling, an unknown method) and on the lean path alike.
    const published = await http(`${h.url}/api/publish`, { headers: { authorization: `Bearer ${h.apiKey}` }, body: { channel: 'chat:headers', data: 1 } });
    assert.equal(published.status, 200, published.text);
    assertApiSecurityHeaders((n) => published.headers.get(n), 'publish');
    const info = await postRaw(`${h.url}/api/info`, { authorization: `Bearer ${h.apiKey}`, 'content-type': 'Application/JSON' }, Buffer.from('{}'));
    assert.equal(info.status, 200, info.text);
    assertApiSecurityHeaders((n) => info.headers.get(n), 'info');
    const unknown = await http(`${h.url}/api/nope`, { headers: { authorization: `Bearer ${h.apiKey}` }, body: {} });
    assertGenericError(unknown, 'not_found');
    assertApiSecurityHeaders((n) => unknown.headers.get(n), 'unknown API method');

    const pusherPath = await http(`${h.url}/apps/x/events`, { body: {} });
    assert.notEqual(pusherPath.status, 200, pusherPath.text);
    assertSecurityHeaders((n) => pusherPath.headers.get(n), 'a Pusher HTTP API path under /apps/ that is not a transport');
  });

  test('on the transports\' errors: their short set, nosniff and framing refused', async () => {
    const wrongMethod = await http(`${h.url}/connection/sse`, { method: 'DELETE' });
    assertGenericError(wrongMethod, 'method_not_allowed');
    assert.equal(wrongMethod.headers.get('allow'), 'GET');
    assertTransportSecurityHeaders((n) => wrongMethod.headers.get(n), 'DELETE');

    const session = await http(`${h.url}/connection/command`, { headers: { 'herald-session': 'x'.repeat(22) }, body: { id: 1, method: 'ping' } });
    assertGenericError(session, 'session_unknown');
    assertTransportSecurityHeaders((n) => session.headers.get(n), 'unknown session');

    const poll = await postRaw(`${h.url}/connection/poll`, { 'herald-session': 'x'.repeat(22), 'content-type': 'application/json' }, Buffer.from('{"seq":0}'));
    assertTransportSecurityHeaders((n) => poll.headers.get(n), `poll of an unknown session (${poll.status})`);

    const badToken = await http(`${h.url}/connection/sse?token=nope&channel=chat:headers`);
    assertGenericError(badToken, 'unauthorized');
    assertTransportSecurityHeaders((n) => badToken.headers.get(n), 'SSE refused');

    const badJson = await postRaw(`${h.url}/connection/poll/open`, { 'content-type': 'application/json' }, Buffer.from('{"channels":'));
    assertGenericError(badJson, 'invalid_json');
    assertTransportSecurityHeaders((n) => badJson.headers.get(n), 'long-poll open, invalid JSON');

    const origin = await http(`${h.url}/connection/poll/open`, { headers: { origin: 'https://evil.example' }, body: { channels: ['chat:headers'] } });
    assertGenericError(origin, 'origin_not_allowed');
    assertTransportSecurityHeaders((n) => origin.headers.get(n), 'origin refused');

    const noUpgrade = await http(`${h.url}/connection/websocket`);
    assert.notEqual(noUpgrade.status, 101, noUpgrade.text);
    assertTransportSecurityHeaders((n) => noUpgrade.headers.get(n), `the WebSocket path without an upgrade (${noUpgrade.status})`);

    const encoded = await http(`${h.url}/connection/%73se?token=nope`);
    assertGenericError(encoded, 'unauthorized');
    assertTransportSecurityHeaders((n) => encoded.headers.get(n), 'SSE on an encoded path (fastify\'s route)');

    const unknownApp = await postRaw(`${h.url}/apps/nope/connection/poll/open`, { 'content-type': 'application/json' }, Buffer.from('{}'));
    assert.notEqual(unknownApp.status, 200, unknownApp.text);
    assertTransportSecurityHeaders((n) => unknownApp.headers.get(n), `an unknown app's transport path (${unknownApp.status})`);
  });

  test('on the SSE stream and on long-poll answers', async () => {
    const sse = await RawSse.connect(h.server.port, `/connection/sse?token=${await h.token('alice')}&channel=chat:headers`);
    try {
      assert.match(sse.statusLine, /^HTTP\/1\.1 200 /);
      const head = parseAnswer(sse.headText + '\r\n\r\n', false);
      assertTransportSecurityHeaders((n) => head.headers.get(n), 'SSE');
      assert.match(head.headers.get('content-type') ?? '', /^text\/event-stream/);
      assert.equal(head.headers.get('cache-control'), 'no-store');
    } finally {
      sse.destroy();
    }
    const opened = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token('alice'), channels: ['chat:headers'] } });
    assert.equal(opened.status, 200, opened.text);
    assertTransportSecurityHeaders((n) => opened.headers.get(n), 'long-poll open');
    // A poll in flight, answered when the session is closed (closed once the server holds it).
    const polling = http(`${h.url}/connection/poll`, { headers: { 'herald-session': opened.body.session }, body: { seq: opened.body.seq } });
    const id = (opened.body.messages as { push?: string; client?: string }[]).find((m) => m.push === 'connected')?.client;
    await waitUntil(() => [...h.server.node.connectedClients()].some((c) => c.id === id && c.transport.holdsRequest?.() === true), { label: 'the poll held' });
    await http(`${h.url}/connection/close`, { headers: { 'herald-session': opened.body.session }, body: {} });
    const polled = await polling;
    assert.equal(polled.status, 200, polled.text);
    assertTransportSecurityHeaders((n) => polled.headers.get(n), 'long-poll poll');
  });
});

describe('security headers on an app\'s transport paths', { timeout: 30000 }, () => {
  let h: PusherHerald;
  const main = testApp('main');
  const x = testApp('x');

  before(async () => {
    h = await startPusherHerald([main, x]);
  });
  after(() => h.close());

  test('/apps/{id}/connection/…: the transports\' set; the app\'s Pusher HTTP API keeps the page set', async () => {
    const token = await signToken(x.secret, { sub: 'ann', exp: Math.floor(Date.now() / 1000) + 600 });
    const sse = await RawSse.connect(h.server.port, `/apps/${x.id}/connection/sse?token=${token}&channel=room`);
    try {
      assert.match(sse.statusLine, /^HTTP\/1\.1 200 /, sse.headText);
      assertTransportSecurityHeaders((n) => parseAnswer(sse.headText + '\r\n\r\n', false).headers.get(n), 'an app\'s SSE');
    } finally {
      sse.destroy();
    }
    const opened = await http(`${h.url}/apps/${x.id}/connection/poll/open`, { body: { token, channels: ['room'] } });
    assert.equal(opened.status, 200, opened.text);
    assertTransportSecurityHeaders((n) => opened.headers.get(n), 'an app\'s long-poll open');
    // A poll, answered when the session is closed (held or not by then: an answer either way).
    const polling = http(`${h.url}/apps/${x.id}/connection/poll`, { headers: { 'herald-session': opened.body.session }, body: { seq: opened.body.seq } });
    const closed = await http(`${h.url}/apps/${x.id}/connection/close`, { headers: { 'herald-session': opened.body.session }, body: {} });
    assertTransportSecurityHeaders((n) => closed.headers.get(n), `an app's close (${closed.status})`);
    const polled = await polling;
    assertTransportSecurityHeaders((n) => polled.headers.get(n), `an app's long-poll poll (${polled.status})`);
    const refused = await http(`${h.url}/apps/${x.id}/connection/poll/open`, { body: { channels: ['room'] } });
    assert.notEqual(refused.status, 200, refused.text);
    assertTransportSecurityHeaders((n) => refused.headers.get(n), `an app's anonymous open (${refused.status})`);

    const trigger = await http(`${h.url}/apps/${x.id}/events`, { body: { name: 'e', channel: 'room', data: '1' } });
    assert.notEqual(trigger.status, 200, trigger.text);
    assertSecurityHeaders((n) => trigger.headers.get(n), 'an unsigned Pusher trigger');
  });
});
