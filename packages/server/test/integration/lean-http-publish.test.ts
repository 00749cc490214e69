/**
 * `http.leanPublish` (packages/server/src/edge/lean-http.ts with
 * api/lean-routes.ts): the publish routes answered by the lean HTTP/1.1
 * layer must answer as the front on node:http does, byte for byte but the
 * Date (a server with the switch off beside one with it on), whether the
 * body came with its head or later; what the front's routes do not take (a
 * query string, another content type, a chunked body, `Expect`, HTTP/1.0)
 * goes to node:http with its bytes and gets node:http's answer; pipelined
 * publishes are answered in order.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { RawHttp, answers, exchange, request } from '../helpers/raw-http.ts';
import { leanStats } from '../../src/edge/lean-http.ts';

const ORIGIN = 'https://app.example';
const KEY = randomBytes(24).toString('base64url');

const host = 'Host: 127.0.0.1';
const json = 'Content-Type: application/json';
const auth = `Authorization: Bearer ${KEY}`;
const post = (path: string, lines: readonly string[], body: string | Buffer) => request([`POST ${path} HTTP/1.1`, host, ...lines], body);

/** An answer whose body names positions (epochs differ between the two servers): the head, and the body's keys. */
function shape(answer: { head: string; body: string }): { head: string; keys: string[] } {
  return { head: answer.head, keys: Object.keys(JSON.parse(answer.body) as object) };
}

describe('lean HTTP layer: the publish routes', { timeout: 120000 }, () => {
  let front: TestHerald;
  let lean: TestHerald;
  before(async () => {
    const opts = {
      api: { maxBodyBytes: 2048, keys: [{ name: 'admin', sha256: createHash('sha256').update(KEY).digest('hex'), scopes: ['admin'] }] },
      cors: { origins: [ORIGIN] },
      limits: { maxJsonDepth: 8 },
    };
    const timeouts = { headersTimeoutMs: 1000, requestTimeoutMs: 1000 };
    front = await startHerald({ ...opts, http: { ...timeouts, leanLongPoll: false, leanPublish: false } });
    lean = await startHerald({ ...opts, http: { ...timeouts, leanLongPoll: false, leanPublish: true } });
  });
  after(async () => {
    await front?.close();
    await lean?.close();
  });

  const port = (h: TestHerald): number => Number(new URL(h.url).port);

  test('errors are answered as the front answers them, whole or split, byte for byte but the Date', async () => {
    const cases: [string, Buffer][] = [
      ['no key', post('/api/publish', [json], '{"channel":"public:a","data":1}')],
      ['wrong key', post('/api/publish', [json, 'X-API-Key: nope'], '{"channel":"public:a","data":1}')],
      ['invalid JSON', post('/api/publish', [json, auth], '{"channel":')],
      ['empty body', post('/api/publish', [json, auth], '')],
      ['invalid UTF-8', post('/api/publish', [json, auth], Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]))],
      ['too deep', post('/api/publish', [json, auth], '['.repeat(20) + ']'.repeat(20))],
      ['poisoned', post('/api/publish', [json, auth], '{"channel":"public:a","data":{"__proto__":{"x":1}}}')],
      ['declared too large', post('/api/publish', [json, auth], `{"channel":"public:a","data":"${'x'.repeat(3000)}"}`)],
      ['bad schema', post('/api/publish', [json, auth], '{"channel":"public:a"}')],
      ['bad channel', post('/api/broadcast', [json, auth], '{"channels":["nope:\\u0000"],"data":1}')],
      ['refused origin', post('/api/publish', [json, auth, 'Origin: https://evil.example'], '{"channel":"public:a","data":1}')],
      ['allowed origin, no key', post('/api/batch', [json, `Origin: ${ORIGIN}`], '{"publishes":[]}')],
      ['connection close', post('/api/publish', [json, 'Connection: close'], '{}')],
    ];
    for (const [name, data] of cases) {
      const headEnd = data.indexOf('\r\n\r\n') + 4;
      const expected = await exchange(port(front), [data], 1);
      assert.equal(answers(expected.text).length, 1, `${name}: the front answered ${expected.text}`);
      for (const parts of [[data], [data.subarray(0, headEnd), data.subarray(headEnd)]]) {
        const requests = leanStats.requests;
        const got = await exchange(port(lean), parts, 1);
        assert.equal(leanStats.requests - requests, 1, `${name}: the lean layer answered it (${parts.length} writes)`);
        assert.deepEqual(answers(got.text), answers(expected.text), `${name} (${parts.length} writes): lean ${got.text} vs front ${expected.text}`);
        assert.equal(got.ended, expected.ended, `${name}: the connection ends alike`);
      }
    }
  });

  test('a publish, a broadcast and a batch: the same heads and answers', async () => {
    const cases: [string, Buffer][] = [
      ['publish', post('/api/publish', [json, auth], '{"channel":"public:p","data":{"n":1}}')],
      ['publish, allowed origin', post('/api/publish', [json, auth, `Origin: ${ORIGIN}`], '{"channel":"public:p","data":{"n":2}}')],
      ['broadcast', post('/api/broadcast', [json, auth], '{"channels":["public:p","public:q"],"data":{"n":3}}')],
      ['batch', post('/api/batch', [json, auth], '{"publishes":[{"channel":"public:p","data":1},{"channel":"nope:x","data":1}]}')],
    ];
    for (const [name, data] of cases) {
      const expected = answers((await exchange(port(front), [data], 1)).text);
      const requests = leanStats.requests;
      const got = answers((await exchange(port(lean), [data], 1)).text);
      assert.equal(leanStats.requests - requests, 1, `${name}: the lean layer answered it`);
      assert.match(got[0]!.head, /^HTTP\/1\.1 200 OK/, got[0]!.body);
      assert.deepEqual(got.map(shape), expected.map(shape), `${name}: ${JSON.stringify(got)} vs ${JSON.stringify(expected)}`);
    }
  });

  test('what the front routes do not take goes to node:http with its bytes: the same answers', async () => {
    const body = '{"channel":"public:h","data":1}';
    const chunked = Buffer.from([`POST /api/publish HTTP/1.1`, host, json, auth, 'Transfer-Encoding: chunked', '', `${body.length.toString(16)}`, body, '0', '', ''].join('\r\n'));
    const cases: [string, Buffer, number][] = [
      ['query string', post('/api/publish?x=1', [json, auth], body), 1],
      ['text/plain', post('/api/publish', ['Content-Type: text/plain', auth], body), 1],
      ['another JSON spelling', post('/api/publish', ['Content-Type: Application/JSON', auth], body), 1],
      ['chunked', chunked, 1],
      ['Expect: 100-continue', post('/api/publish', [json, auth, 'Expect: 100-continue'], body), 2],
      ['HTTP/1.0', Buffer.from(`POST /api/publish HTTP/1.0\r\n${host}\r\n${json}\r\n${auth}\r\nContent-Length: ${body.length}\r\n\r\n${body}`), 1],
      // An answer of the same length on both servers (`info`'s uptime and heap figures are not).
      ['another API method', post('/api/presence_stats', [json, auth], '{"channel":"public:nobody"}'), 1],
    ];
    for (const [name, data, count] of cases) {
      const expected = answers((await exchange(port(front), [data], count)).text);
      const handOffs = leanStats.handOffs;
      const requests = leanStats.requests;
      const got = answers((await exchange(port(lean), [data], count)).text);
      assert.equal(leanStats.handOffs - handOffs, 1, `${name}: handed to node:http`);
      assert.equal(leanStats.requests - requests, 0, `${name}: not answered by the lean layer`);
      assert.deepEqual(got.map((a) => a.head), expected.map((a) => a.head), `${name}: ${JSON.stringify(got)} vs ${JSON.stringify(expected)}`);
      if (!/ 200 OK/.test(expected[expected.length - 1]!.head)) assert.deepEqual(got, expected, name);
    }
  });

  test('pipelined publishes are answered in order; a request node:http answers after them on the same connection', async () => {
    const publish = (n: number) => post('/api/publish', [json, auth], `{"channel":"public:pipe","data":{"n":${n}}}`);
    const raw = await RawHttp.connect(port(lean));
    const requests = leanStats.requests;
    raw.socket.write(Buffer.concat([publish(1), publish(2), post('/api/publish', [json, auth], '{"channel":'), publish(3)]));
    // The invalid body's answer ends the connection (as fastify's body parser does): the fourth is never run.
    await raw.until((r) => r.ended, 'the connection closed');
    const got = answers(raw.text);
    assert.equal(got.length, 3, raw.text);
    const [a, b, c] = got;
    const offsets = [a, b].map((answer) => (JSON.parse(answer!.body) as { offset: number }).offset);
    assert.deepEqual(offsets, [offsets[0], offsets[0]! + 1], 'answered in order');
    assert.match(c!.head, /^HTTP\/1\.1 400 /);
    assert.equal(leanStats.requests - requests, 3);
    raw.destroy();
    const history = await lean.api('history', { channel: 'public:pipe', limit: 10 }, KEY);
    assert.deepEqual((history.body as { publications: { data: { n: number } }[] }).publications.map((p) => p.data.n), [1, 2], `the request behind the error never ran: ${JSON.stringify(history.body)}`);

    const mixed = await RawHttp.connect(port(lean));
    mixed.socket.write(Buffer.concat([publish(4), Buffer.from(`GET /health/live HTTP/1.1\r\n${host}\r\n\r\n`)]));
    await mixed.until((r) => answers(r.text).length >= 2, 'two answers');
    const [first, second] = answers(mixed.text);
    assert.match(first!.head, /^HTTP\/1\.1 200 OK/);
    assert.match(first!.body, /"offset"/);
    assert.match(second!.head, /^HTTP\/1\.1 200 OK/);
    mixed.destroy();
  });

  test('a body in reads of 1 to 32 bytes is published; a body that stops is cut by the request timeout', async () => {
    let seed = 7;
    const random = (): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const data = post('/api/publish', [json, auth], `{"channel":"public:slow","data":{"text":"${'é'.repeat(600)}"}}`);
    const requests = leanStats.requests;
    const raw = await RawHttp.connect(port(lean));
    await raw.write(data, random);
    await raw.until((r) => answers(r.text).length >= 1, 'the answer');
    assert.match(answers(raw.text)[0]!.head, /^HTTP\/1\.1 200 OK/, raw.text);
    assert.equal(leanStats.requests - requests, 1, 'the lean layer answered it');
    raw.destroy();
    const history = await lean.api('history', { channel: 'public:slow', limit: 1 }, KEY);
    assert.equal((history.body as { publications: { data: { text: string } }[] }).publications[0]?.data.text, 'é'.repeat(600));

    const stalled = await RawHttp.connect(port(lean));
    stalled.socket.write(post('/api/publish', [json, auth], '{"channel":"public:slow","data":1}').subarray(0, -10));
    await stalled.until((r) => r.ended, 'a body that never ends is cut by the request timeout', 5000);
    const after = await lean.api('history', { channel: 'public:slow', limit: 10 }, KEY);
    assert.equal((after.body as { publications: unknown[] }).publications.length, 1, 'the cut request never ran');
  });
});
