/**
 * Errors say what is wrong (docs/errors.md): an anonymous subscribe to a
 * namespace without `allowAnonymous` is answered with a code about anonymous
 * access on every transport, not "permission denied" or "API key lacks the
 * scope"; a private channel named at open says a subscription token is
 * needed; schema errors name the field and why; `invalid_channel` states the
 * rule that failed. The code stays stable; the explanation is in `detail`.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, http, openWs, type HttpAnswer } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { apiErrors, replyErrors } from '@herald/protocol';

function assertApiError(answer: HttpAnswer, status: number, code: string, detail?: RegExp): void {
  assert.equal(answer.status, status, answer.text);
  assert.equal(answer.body.error.code, code, answer.text);
  if (detail !== undefined) assert.match(String(answer.body.error.detail), detail, answer.text);
}

describe('errors say what is wrong', { timeout: 60000 }, () => {
  let h: TestHerald;
  let closed: TestHerald;
  before(async () => {
    h = await startHerald({
      channels: {
        namespaces: [
          { name: 'chat', presence: true, clientPublish: true },
          { name: 'public', allowAnonymous: true, clientPublish: true },
          { name: 'secret', private: true },
        ],
      },
    });
    // no namespace allows anonymous access
    closed = await startHerald({ channels: { namespaces: [{ name: 'chat' }] } });
  });
  after(async () => {
    closeAllClients();
    await h?.close();
    await closed?.close();
  });

  test('anonymous subscribe where allowAnonymous is off: a code and message about anonymous access, on every transport', async () => {
    assert.match(apiErrors.anonymous_not_allowed.message, /anonymous/);
    assert.match(replyErrors.anonymous_not_allowed.message, /anonymous/);
    // WebSocket: a reply error, for subscribe and for reads
    const c = await openWs(h.wsUrl);
    await c.connect();
    for (const [method, params] of [['subscribe', { channel: 'chat:x' }], ['history', { channel: 'chat:x' }], ['publish', { channel: 'chat:x', data: 1 }]] as const) {
      const reply = await c.request(method, params);
      assert.equal(reply.error?.code, replyErrors.anonymous_not_allowed.code, `${method}: ${JSON.stringify(reply)}`);
      assert.equal(reply.error?.message, replyErrors.anonymous_not_allowed.message);
    }
    assert.equal((await c.request('subscribe', { channel: 'public:x' })).error, undefined, 'allowed where allowAnonymous is on');
    // SSE and long polling: the open is refused with the API code
    assertApiError(await http(`${h.url}/connection/sse?channel=chat:x`), 403, 'anonymous_not_allowed');
    assertApiError(await http(`${h.url}/connection/poll/open`, { body: { channels: ['public:x', 'chat:x'] } }), 403, 'anonymous_not_allowed');
    // a command over HTTP gets the same reply error as on WebSocket
    const session = await LongPollSession.open(h.url, { channels: ['public:y'] });
    assert.equal((await session.request('subscribe', { channel: 'chat:y' })).error?.code, replyErrors.anonymous_not_allowed.code);
    await session.close();
    // and where no namespace allows anonymous access at all
    assertApiError(await http(`${closed.url}/connection/sse`), 403, 'anonymous_not_allowed');
    assertApiError(await http(`${closed.url}/connection/poll/open`, { body: {} }), 403, 'anonymous_not_allowed');
  });

  test('a private channel named at open says that it needs a subscription token', async () => {
    const token = await h.token('alice');
    assertApiError(await http(`${h.url}/connection/sse?channel=secret:alice&token=${token}`), 403, 'subscription_token_required');
    assertApiError(await http(`${h.url}/connection/poll/open`, { body: { token, channels: ['secret:alice'] } }), 403, 'subscription_token_required');
  });

  test('schema errors name the field and why, on the API, in replies and on the connection endpoints', async () => {
    const key = { authorization: `Bearer ${h.apiKey}` };
    assertApiError(await http(`${h.url}/api/publish`, { headers: key, body: { channel: 1, data: 1 } }), 400, 'bad_request', /^\/channel: expected string$/);
    assertApiError(await http(`${h.url}/api/publish`, { headers: key, body: { channel: 'chat:x', data: 1, extra: true } }), 400, 'bad_request', /^\/extra: unexpected property$/);
    assertApiError(await http(`${h.url}/api/publish`, { headers: key, body: { channel: 'chat:x' } }), 400, 'bad_request', /^\/data: expected required property$/);
    assertApiError(await http(`${h.url}/api/history`, { headers: key, body: { channel: 'chat:x', limit: -1 } }), 400, 'bad_request', /^\/limit: /);
    assertApiError(await http(`${h.url}/connection/poll/open`, { body: { channels: 'chat:x' } }), 400, 'bad_request', /^\/channels: expected array$/);
    assertApiError(await http(`${h.url}/connection/poll/open`, { body: { bogus: 1 } }), 400, 'bad_request', /^\/bogus: unexpected property$/);
    const c = await connectWs(h, 'alice');
    const reply = await c.request('subscribe', { channel: 5 });
    assert.equal(reply.error.code, replyErrors.bad_request.code);
    assert.equal(reply.error.message, replyErrors.bad_request.message, 'the message stays the fixed text of the code');
    assert.equal(reply.error.detail, '/params/channel: expected string');
    assert.equal((await c.request('history', { channel: 'chat:x', since: { epoch: 'e' } })).error.detail, '/params/since/offset: expected required property');
    const session = await LongPollSession.open(h.url, { token: await h.token('bob') });
    const batch = await http(`${h.url}/connection/command`, { headers: { 'herald-session': session.session }, body: [{ id: 1, method: 'ping' }, { id: 'x', method: 'ping' }] });
    assertApiError(batch, 400, 'bad_request', /^\/1\/id: /);
    const replies = await http(`${h.url}/connection/command`, { headers: { 'herald-session': session.session }, body: { id: 2, method: 'unsubscribe', params: {} } });
    assert.equal(replies.body[0].error.detail, '/params/channel: expected required property');
    await session.close();
  });

  test('invalid_channel states the rule that failed', async () => {
    const key = { authorization: `Bearer ${h.apiKey}` };
    const cases: [string, RegExp][] = [
      ['chat:a b', /A-Z a-z 0-9/],
      ['chat:é', /A-Z a-z 0-9/],
      ['x'.repeat(256), /255 bytes/],
      ['Chat:x', /namespace/],
      ['chat:', /empty/],
    ];
    const c = await connectWs(h, 'alice');
    for (const [channel, rule] of cases) {
      assertApiError(await http(`${h.url}/api/publish`, { headers: key, body: { channel, data: 1 } }), 400, 'invalid_channel', rule);
      const reply = await c.request('subscribe', { channel });
      assert.equal(reply.error.code, replyErrors.invalid_channel.code, channel);
      assert.match(reply.error.detail, rule, channel);
      assertApiError(await http(`${h.url}/connection/sse?channel=${encodeURIComponent(channel)}&token=${await h.token('alice')}`), 400, 'invalid_channel', rule);
    }
  });
});
