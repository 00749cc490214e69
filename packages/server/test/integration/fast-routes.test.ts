/**
 * The SSE stream and long polling are served in front of fastify,
 * by the front (packages/server/src/edge/front.ts). Their answers to bodies
 * that do not parse must be what a fastify route of the same listener
 * answers (here `POST /connection/command`): status, code, and whether the
 * connection ends. And the headers every answer carries: security headers,
 * CORS for an allowed origin, `Connection: close` while draining.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, http, postRaw, type HttpAnswer } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';

const ORIGIN = 'https://app.example';

function summary(answer: HttpAnswer): { status: number; code: unknown; connection: string | null } {
  const body = answer.body as { error?: { code?: unknown } };
  return { status: answer.status, code: body.error?.code, connection: answer.headers.get('connection') };
}

describe('routes served in front of fastify', { timeout: 60000 }, () => {
  let h: TestHerald;
  let session: LongPollSession;
  before(async () => {
    h = await startHerald({ cors: { origins: [ORIGIN] }, api: { maxBodyBytes: 2048 }, limits: { maxMessageBytes: 2048, maxJsonDepth: 8 } });
    session = await LongPollSession.open(h.url, { token: await h.token('bob') });
  });
  after(async () => {
    closeAllClients();
    await h?.close();
  });

  test('bodies that do not parse are answered as fastify answers them', async () => {
    const deep = '['.repeat(20) + ']'.repeat(20);
    const cases: [string, Record<string, string>, Buffer][] = [
      ['invalid JSON', {}, Buffer.from('{"seq":')],
      ['empty JSON body', {}, Buffer.alloc(0)],
      ['invalid UTF-8', {}, Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d])],
      ['too deep', {}, Buffer.from(deep)],
      ['too large', {}, Buffer.from(`{"seq":0,"x":"${'x'.repeat(4096)}"}`)],
      ['not JSON', { 'content-type': 'text/plain' }, Buffer.from('{"seq":0}')],
      ['JSON with a charset', { 'content-type': 'application/json; charset=utf-8' }, Buffer.from('[')],
    ];
    for (const [name, headers, body] of cases) {
      const fastify = await postRaw(`${h.url}/connection/command`, { 'herald-session': session.session, ...headers }, body);
      const front = await postRaw(`${h.url}/connection/poll`, { 'herald-session': session.session, ...headers }, body);
      assert.notEqual(fastify.status, 200, `${name}: fastify ${fastify.text}`);
      assert.deepEqual(summary(front), summary(fastify), `${name}: front ${front.text} vs fastify ${fastify.text}`);
      const open = await postRaw(`${h.url}/connection/poll/open`, headers, body);
      assert.deepEqual(summary(open), summary(fastify), `${name} at open: ${open.text} vs fastify ${fastify.text}`);
    }
  });

  test('answers carry the security headers, and CORS headers only for an allowed origin', async () => {
    const allowed = await http(`${h.url}/connection/poll/open`, { headers: { origin: ORIGIN }, body: { channels: ['public:fast'] } });
    assert.equal(allowed.status, 200, allowed.text);
    assert.equal(allowed.headers.get('access-control-allow-origin'), ORIGIN);
    assert.equal(allowed.headers.get('access-control-allow-credentials'), 'true');
    assert.equal(allowed.headers.get('vary'), 'Origin');
    assert.equal(allowed.headers.get('x-content-type-options'), 'nosniff');
    // The transports' security headers (edge/security-headers.ts transportSecurityHeaders): framing refused.
    assert.equal(allowed.headers.get('content-security-policy'), "frame-ancestors 'none'");
    const plain = await http(`${h.url}/connection/poll/open`, { body: { channels: ['public:fast'] } });
    assert.equal(plain.status, 200, plain.text);
    assert.equal(plain.headers.get('access-control-allow-origin'), null);
    assert.equal(plain.headers.get('vary'), 'Origin');
    const refused = await http(`${h.url}/connection/poll/open`, { headers: { origin: 'https://evil.example' }, body: { channels: ['public:fast'] } });
    assert.equal(refused.status, 403);
    assert.equal((refused.body as { error: { code: string } }).error.code, 'origin_not_allowed');
    assert.equal(refused.headers.get('access-control-allow-origin'), null);
    assert.equal(refused.headers.get('x-frame-options'), 'DENY');
  });

  test('an allowed origin is judged on every request: its own host is allowed for that host only, however often it came', async () => {
    // The front keeps one header list per allowed origin: the verdict must still be taken per request.
    const own = new URL(h.url).origin;
    const body = Buffer.from(JSON.stringify({ channels: ['public:fast'] }));
    for (let i = 0; i < 3; i++) {
      const same = await postRaw(`${h.url}/connection/poll/open`, { origin: own }, body);
      assert.equal(same.status, 200, same.text);
      assert.equal(same.headers.get('access-control-allow-origin'), own);
      const elsewhere = await postRaw(`${h.url}/connection/poll/open`, { origin: own, host: 'other.example' }, body);
      assert.equal(elsewhere.status, 403, elsewhere.text);
      assert.equal(elsewhere.headers.get('access-control-allow-origin'), null);
      const listed = await postRaw(`${h.url}/connection/poll/open`, { origin: ORIGIN, host: 'other.example' }, body);
      assert.equal(listed.status, 200, listed.text);
      assert.equal(listed.headers.get('access-control-allow-origin'), ORIGIN);
    }
  });

  test('HEAD /connection/sse is answered as fastify answers another method: no stream, no session', async () => {
    const connections = async (): Promise<number> => ((await h.api('info', {})).body as { nodes: { connections: number }[] }).nodes[0]!.connections;
    const before = await connections();
    const url = `${h.url}/connection/sse?channel=public:head&token=${await h.token('head')}`;
    const head = await http(url, { method: 'HEAD', headers: { origin: ORIGIN } });
    const put = await http(url, { method: 'PUT', headers: { origin: ORIGIN } });
    assert.equal(put.status, 405, put.text);
    assert.equal(head.status, 405);
    assert.equal(head.headers.get('allow'), 'GET');
    assert.equal(head.text, '', 'a HEAD answer has no body');
    assert.notEqual(head.headers.get('content-type'), 'text/event-stream');
    for (const name of ['allow', 'content-type', 'access-control-allow-origin', 'vary', 'x-content-type-options', 'content-security-policy']) {
      assert.equal(head.headers.get(name), put.headers.get(name), name);
    }
    assert.equal(await connections(), before, 'no client was created');
    // An encoded path reaches fastify's GET route, and HEAD on it is refused the same way.
    const encoded = await http(`${h.url}/connection/%73se?token=${await h.token('head')}`, { method: 'HEAD' });
    assert.equal(encoded.status, 405);
    assert.equal(await connections(), before, 'no client was created');
  });

  test('a held poll is answered empty at longPoll.pollTimeoutMs without a timer per poll', async () => {
    const quick = await startHerald({ longPoll: { pollTimeoutMs: 300, sessionTimeoutMs: 5000 } });
    try {
      const opened = await LongPollSession.open(quick.url, {});
      const polls = await Promise.all(
        Array.from({ length: 3 }, async () => {
          const began = Date.now();
          const answer = await http(`${quick.url}/connection/poll`, { headers: { 'herald-session': opened.session }, body: { seq: opened.seq } });
          return { answer, ms: Date.now() - began };
        }),
      );
      // Each poll answers the one before it at once; the last one waits for its deadline.
      for (const { answer } of polls) {
        assert.equal(answer.status, 200, answer.text);
        assert.deepEqual((answer.body as { messages: unknown[] }).messages, []);
      }
      const last = polls.reduce((a, b) => (a.ms > b.ms ? a : b));
      assert.ok(last.ms >= 250, `the held poll waited its deadline (${last.ms} ms)`);
    } finally {
      await quick.close();
    }
  });
});
