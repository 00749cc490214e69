/**
 * How the public listener judges HTTP requests before any handler runs
 * (docs/errors.md, docs/security.md "Hostile input"): bodies that are not
 * strict UTF-8 are refused with their own code instead of being repaired
 * with U+FFFD; a body that is not JSON is 415; a known path asked with the
 * wrong method is 405 with `Allow`; route schemas neither coerce types nor
 * drop unknown keys.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, http, postRaw, unique } from '../helpers/herald-ws.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';

/** Byte sequences that are not UTF-8 (RFC 3629), placed inside a JSON string. */
const invalidUtf8: Record<string, number[]> = {
  'lone continuation byte': [0x80],
  'bytes that never appear': [0xff, 0xfe],
  'overlong slash': [0xc0, 0xaf],
  'overlong NUL': [0xe0, 0x80, 0x80],
  'encoded surrogate': [0xed, 0xa0, 0x80],
  'above U+10FFFF': [0xf4, 0x90, 0x80, 0x80],
  'truncated sequence': [0xe2, 0x82],
};

function body(before: string, bytes: number[], after: string): Buffer {
  return Buffer.concat([Buffer.from(before), Buffer.from(bytes), Buffer.from(after)]);
}

describe('HTTP bodies', { timeout: 60000 }, () => {
  let h: TestHerald;
  let session: LongPollSession;
  before(async () => {
    h = await startHerald();
    session = await LongPollSession.open(h.url, { token: await h.token('bob') });
  });
  after(async () => {
    closeAllClients();
    await h?.close();
  });

  test('invalid UTF-8 is 400 invalid_utf8 on every JSON endpoint, and nothing runs', async () => {
    const channel = unique('chat:utf8');
    const watcher = await connectWs(h, 'watcher');
    await watcher.call('subscribe', { channel });
    const json = { 'content-type': 'application/json' };
    for (const [name, bytes] of Object.entries(invalidUtf8)) {
      const requests: [string, Record<string, string>, Buffer][] = [
        ['/api/publish', { ...json, authorization: `Bearer ${h.apiKey}` }, body(`{"channel":"${channel}","data":"`, bytes, '"}')],
        ['/connection/command', { ...json, 'herald-session': session.session }, body(`{"id":1,"method":"publish","params":{"channel":"${channel}","data":"`, bytes, '"}}')],
        ['/connection/poll/open', json, body('{"channels":["public:x"],"cursor":"', bytes, '"}')],
        ['/connection/poll', { ...json, 'herald-session': session.session }, body('{"seq":0,"x":"', bytes, '"}')],
      ];
      for (const [path, headers, payload] of requests) {
        const answer = await postRaw(`${h.url}${path}`, headers, payload);
        assert.equal(answer.status, 400, `${name} on ${path}: ${answer.status} ${answer.text}`);
        assert.equal(answer.body.error.code, 'invalid_utf8', `${name} on ${path}: ${answer.text}`);
      }
    }
    // valid multi-byte text still goes through, unchanged
    const text = 'é ü ✓ 😀 \u2028';
    const ok = await postRaw(`${h.url}/api/publish`, { ...json, authorization: `Bearer ${h.apiKey}` }, Buffer.from(JSON.stringify({ channel, data: text })));
    assert.equal(ok.status, 200, ok.text);
    const [publication] = await watcher.waitPublications(channel, 1);
    assert.equal(publication.data, text);
    const history = await h.api('history', { channel, limit: 10 });
    assert.equal(history.body.publications.length, 1, 'only the valid publication was published');
  });

  test('a body that is not JSON is 415 unsupported_media_type on every endpoint that takes one', async () => {
    const channel = unique('chat:media');
    const endpoints: [string, Record<string, string>, string][] = [
      ['/api/publish', { authorization: `Bearer ${h.apiKey}` }, `{"channel":"${channel}","data":1}`],
      ['/connection/command', { 'herald-session': session.session }, `{"id":1,"method":"publish","params":{"channel":"${channel}","data":1}}`],
      ['/connection/poll/open', {}, '{"channels":["public:x"]}'],
      ['/connection/poll', { 'herald-session': session.session }, '{"seq":0}'],
    ];
    for (const [path, headers, text] of endpoints) {
      for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/jsonx', undefined]) {
        // a Uint8Array body makes fetch send no content type of its own
        const response = await fetch(`${h.url}${path}`, {
          method: 'POST',
          headers: type === undefined ? headers : { ...headers, 'content-type': type },
          body: new TextEncoder().encode(text),
        });
        const answer = (await response.json()) as { error: { code: string } };
        assert.equal(response.status, 415, `${path} as ${type ?? 'no content type'}: ${JSON.stringify(answer)}`);
        assert.equal(answer.error.code, 'unsupported_media_type');
      }
    }
    const charset = await http(`${h.url}/api/publish`, {
      headers: { authorization: `Bearer ${h.apiKey}`, 'content-type': 'application/json; charset=utf-8' },
      body: `{"channel":"${channel}","data":1}`,
    });
    assert.equal(charset.status, 200, charset.text);
    assert.equal((await h.api('history', { channel, limit: 10 })).body.publications.length, 1, 'only the JSON publish ran');
  });

  test('long-poll bodies are validated like commands: no type coercion, unknown keys refused', async () => {
    const opens = [
      '{"channels":"public:x"}',
      '{"channels":["public:x"],"bogus":1}',
      '{"bogus":1}',
      '{"token":12345}',
      '{"cursor":false}',
      '{"channels":[1]}',
      '[]',
      '"x"',
    ];
    for (const text of opens) {
      const answer = await http(`${h.url}/connection/poll/open`, { body: text });
      assert.equal(answer.status, 400, `${text}: ${answer.status} ${answer.text.slice(0, 200)}`);
      assert.equal(answer.body.error.code, 'bad_request', text);
    }
    for (const text of ['{"seq":"0"}', '{"seq":0,"bogus":1}', '{"seq":1.5}', '{"seq":-1}', '{"seq":[0]}', '{"seq":null}', '{}']) {
      const answer = await http(`${h.url}/connection/poll`, { headers: { 'herald-session': session.session }, body: text });
      assert.equal(answer.status, 400, `${text}: ${answer.status} ${answer.text.slice(0, 200)}`);
      assert.equal(answer.body.error.code, 'bad_request', text);
    }
    // what the schema allows still works
    const opened = await http(`${h.url}/connection/poll/open`, { body: { channels: ['public:x'] } });
    assert.equal(opened.status, 200, opened.text);
    // seq 0 acknowledges nothing: answered at once with what the open answered
    const polled = await http(`${h.url}/connection/poll`, { headers: { 'herald-session': opened.body.session }, body: { seq: 0 } });
    assert.equal(polled.status, 200, polled.text);
  });

  test('a known path with the wrong method is 405 with Allow; an unknown path stays 404', async () => {
    const cases: [string, string, string][] = [
      ['GET', '/api/publish', 'POST'],
      ['PUT', '/api/publish', 'POST'],
      ['DELETE', '/connection/sse', 'GET'],
      ['POST', '/connection/sse', 'GET'],
      ['GET', '/connection/command', 'POST'],
      ['PATCH', '/connection/close', 'POST'],
      ['GET', '/connection/poll', 'POST'],
      ['GET', '/connection/poll/open', 'POST'],
      ['POST', '/health', 'GET, HEAD'],
      ['DELETE', '/health', 'GET, HEAD'],
    ];
    for (const [method, path, allow] of cases) {
      const answer = await http(`${h.url}${path}`, { method });
      assert.equal(answer.status, 405, `${method} ${path}: ${answer.status} ${answer.text}`);
      assert.equal(answer.body.error.code, 'method_not_allowed', `${method} ${path}`);
      assert.equal(answer.headers.get('allow'), allow, `${method} ${path}`);
    }
    const head = await fetch(`${h.url}/api/publish`, { method: 'HEAD' });
    assert.equal(head.status, 405);
    assert.equal(head.headers.get('allow'), 'POST');
    // HEAD would open a stream on the SSE path: refused there too (fast-routes.test.ts).
    const sseHead = await fetch(`${h.url}/connection/sse`, { method: 'HEAD' });
    assert.equal(sseHead.status, 405);
    assert.equal(sseHead.headers.get('allow'), 'GET');
    for (const [method, path] of [['GET', '/nope'], ['POST', '/api'], ['DELETE', '/connection/sse/x'], ['GET', '/health/']]) {
      const answer = await http(`${h.url}${path}`, { method });
      assert.equal(answer.status, 404, `${method} ${path}: ${answer.text}`);
      assert.equal(answer.body.error.code, 'not_found');
      assert.equal(answer.headers.get('allow'), null);
    }
    // the internal listener answers the same way
    const admin = `http://127.0.0.1:${h.server.adminPort}`;
    const metrics = await http(`${admin}/metrics`, { method: 'POST', body: '{}' });
    assert.equal(metrics.status, 405, metrics.text);
    assert.equal(metrics.headers.get('allow'), 'GET, HEAD');
    assert.equal((await http(`${admin}/nope`)).status, 404);
  });
});
