/**
 * `http.leanSse` (packages/server/src/edge/lean-http.ts): the SSE stream's
 * opening served by the lean HTTP layer, beside a server with the switch
 * off (node:http): the stream works for the real `eventsource` client and
 * the layer counts it; every answer that is not a stream (origin, token,
 * app, malformed heads) is node:http's byte for byte but the Date, and so
 * is the stream's head; after such an answer the connection goes on; once
 * a stream has started, what the client sends is dropped and its end
 * closes the stream.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { RawHttp, answers, exchange, request } from '../helpers/raw-http.ts';
import { RecordedEventSource, sseUrl } from '../helpers/rt-clients.ts';
import { leanStats } from '../../src/edge/lean-http.ts';
import { sleep, waitUntil } from '../helpers/rt-util.ts';

const ORIGIN = 'https://app.example';
const host = 'Host: 127.0.0.1';

describe('SSE opens on the lean HTTP layer', { timeout: 120000 }, () => {
  let plain: TestHerald;
  let lean: TestHerald;
  before(async () => {
    const opts = { cors: { origins: [ORIGIN] }, http: { headersTimeoutMs: 400 } };
    plain = await startHerald({ ...opts, http: { ...opts.http, leanSse: false } });
    lean = await startHerald({ ...opts, http: { ...opts.http, leanSse: true } });
  });
  after(async () => {
    await plain?.close();
    await lean?.close();
  });

  const port = (h: TestHerald): number => Number(new URL(h.url).port);

  test('an EventSource stream is served by the layer: connected, subscribed, a publication; its close ends the client', async () => {
    const requests = leanStats.requests;
    const handOffs = leanStats.handOffs;
    const source = new RecordedEventSource(sseUrl(lean.url, { channels: ['public:lean'] }));
    try {
      await waitUntil(() => source.messages.some((m) => m.data.includes('"push":"subscribed"')), { label: 'subscribed' });
      assert.equal(leanStats.requests - requests, 1, 'the layer served the open');
      assert.equal(leanStats.handOffs - handOffs, 0, 'nothing went to node:http');
      assert.equal(lean.server.node.hub.clientCount, 1);
      const published = await lean.api('publish', { channel: 'public:lean', data: { n: 1 } });
      assert.equal(published.status, 200);
      await waitUntil(() => source.messages.some((m) => m.data.includes('"n":1')), { label: 'the publication' });
      const last = source.messages.at(-1)!;
      assert.ok(last.lastEventId.length > 0, 'the publication carries its position as the event id');
    } finally {
      source.close();
    }
    await waitUntil(() => lean.server.node.hub.clientCount === 0, { label: 'the client closed with its stream' });
  });

  test("answers that are not a stream, and the stream's head, are node:http's byte for byte but the Date", async () => {
    const cases: [string, Buffer, boolean][] = [
      ['refused origin', request(['GET /connection/sse?channel=public:a HTTP/1.1', host, 'Origin: https://evil.example']), false],
      ['invalid token', request(['GET /connection/sse?token=nope HTTP/1.1', host]), false],
      ['bearer token invalid', request(['GET /connection/sse HTTP/1.1', host, 'Authorization: Bearer nope']), false],
      ['unknown app', request(['GET /apps/nope/connection/sse HTTP/1.1', host]), false],
      ['a GET with a body (node:http reads it)', request(['GET /connection/sse?token=nope HTTP/1.1', host], 'xyz'), false],
      ['HEAD (node:http: no stream for a HEAD)', request(['HEAD /connection/sse HTTP/1.1', host]), false],
      ['POST (node:http: 405)', request(['POST /connection/sse HTTP/1.1', host], '{}'), false],
      ['HTTP/1.0', request(['GET /connection/sse?token=nope HTTP/1.0', host]), false],
      ['a stream', request(['GET /connection/sse?channel=public:a HTTP/1.1', host]), true],
      ['a stream for an allowed origin', request(['GET /connection/sse?channel=public:a HTTP/1.1', host, `Origin: ${ORIGIN}`]), true],
      ['a stream with Last-Event-ID', request(['GET /connection/sse HTTP/1.1', host, 'Last-Event-ID: garbage']), true],
    ];
    for (const [name, data, stream] of cases) {
      const expected = await exchange(port(plain), data, 1);
      const got = await exchange(port(lean), data, 1);
      const a = answers(expected.text);
      const b = answers(got.text);
      assert.ok(a.length >= 1, `${name}: node:http answered ${expected.text}`);
      if (stream) {
        // The stream's events carry a session id of their own: the heads are compared.
        assert.equal(b[0]?.head, a[0]!.head, `${name}: the stream's head`);
        assert.match(got.text, /"push":"connected"/, `${name}: the stream started`);
      } else {
        assert.deepEqual(b, a, `${name}: lean ${got.text} vs node:http ${expected.text}`);
        assert.equal(got.ended, expected.ended, `${name}: the connection ends alike`);
      }
    }
  });

  test('after an answer that is not a stream the connection goes on: the next request is answered (node:http for another route, the layer for a stream)', async () => {
    const refused = request(['GET /connection/sse HTTP/1.1', host, 'Origin: https://evil.example']);
    const health = request(['GET /health HTTP/1.1', host]);
    const expected = await exchange(port(plain), [refused, health], 2);
    const got = await exchange(port(lean), [refused, health], 2);
    assert.deepEqual(answers(got.text).map((a) => a.head.split('\r\n')[0]), ['HTTP/1.1 403 Forbidden', 'HTTP/1.1 200 OK']);
    assert.deepEqual(answers(got.text).map((a) => a.head), answers(expected.text).map((a) => a.head));
    // Pipelined: the refused open, then a stream on the same connection.
    const raw = await RawHttp.connect(port(lean));
    try {
      raw.socket.write(Buffer.concat([refused, request(['GET /connection/sse?channel=public:b HTTP/1.1', host])]));
      await raw.until((r) => r.text.includes('"push":"subscribed"'), 'the second request streams');
      assert.match(raw.text, /^HTTP\/1\.1 403 Forbidden\r\n[^]*\r\n\r\n[^]*HTTP\/1\.1 200 OK\r\ncontent-type: text\/event-stream/);
    } finally {
      raw.destroy();
    }
  });

  test("malformed and oversized heads on the stream's path get node:http's answers, whole and split in small reads", async () => {
    const cases: [string, Buffer][] = [
      ['header bytes over maxHeaderSize', Buffer.from(`GET /connection/sse HTTP/1.1\r\n${host}\r\nX-Big: ${'a'.repeat(17000)}\r\n\r\n`)],
      ['obs-fold', Buffer.from(`GET /connection/sse HTTP/1.1\r\n${host}\r\nLast-Event-ID: a\r\n b\r\n\r\n`)],
      ['bare LF', Buffer.from(`GET /connection/sse HTTP/1.1\n${host}\n\n`)],
      ['NUL in a value', Buffer.from(`GET /connection/sse HTTP/1.1\r\n${host}\r\nLast-Event-ID: a\0b\r\n\r\n`)],
      ['no Host', Buffer.from('GET /connection/sse?token=nope HTTP/1.1\r\n\r\n')],
      ['too many header lines', request(['GET /connection/sse HTTP/1.1', host, ...Array.from({ length: 101 }, (_, i) => `X-Filler-${i}: y`)])],
    ];
    for (const [name, data] of cases) {
      const expected = await exchange(port(plain), data, 1);
      for (const parts of [data, [data.subarray(0, 5), data.subarray(5, 40), data.subarray(40)]]) {
        const got = await exchange(port(lean), parts, 1);
        assert.deepEqual(answers(got.text), answers(expected.text), `${name}: lean ${got.text.slice(0, 200)} vs node:http ${expected.text.slice(0, 200)}`);
        assert.equal(got.ended, expected.ended, `${name}: the connection ends alike`);
      }
    }
  });

  test('a head that never ends is cut by the headers timeout, as on node:http', async () => {
    const partial = Buffer.from(`GET /connection/sse HTTP/1.1\r\n${host}\r\nLast-Event-`);
    const expected = await exchange(port(plain), partial, 1);
    const got = await exchange(port(lean), partial, 1);
    assert.ok(expected.ended && got.ended, 'both ended the connection');
    assert.deepEqual(answers(got.text), answers(expected.text));
  });

  test('an open refused after its admission (a bad token) gives its connection place back, as on node:http', async () => {
    // Two places per IP: a refused open that kept its place would leave the third open without one (429).
    const limited = await startHerald({ http: { leanSse: true }, limits: { maxConnectionsPerIp: 2 } });
    try {
      const badToken = request(['GET /connection/sse?token=nope HTTP/1.1', host]);
      for (let i = 0; i < 4; i++) {
        const got = await exchange(port(limited), badToken, 1);
        assert.equal(answers(got.text)[0]?.head.split('\r\n')[0], 'HTTP/1.1 401 Unauthorized', `refused open ${i + 1}: ${got.text}`);
      }
      const raw = await RawHttp.connect(port(limited));
      try {
        raw.socket.write(request(['GET /connection/sse?channel=public:d HTTP/1.1', host]));
        await raw.until((r) => r.text.includes('"push":"subscribed"') || answers(r.text).length > 0 && !r.text.startsWith('HTTP/1.1 200'), 'an answer');
        assert.match(raw.text, /^HTTP\/1\.1 200 OK/, 'a place was free for a stream');
      } finally {
        raw.destroy();
      }
    } finally {
      await limited.close();
    }
  });

  test("an open stream drops what its client sends, stays past the headers timeout, and ends with the client's end", async () => {
    const raw = await RawHttp.connect(port(lean));
    try {
      raw.socket.write(request(['GET /connection/sse?channel=public:c HTTP/1.1', host]));
      await raw.until((r) => r.text.includes('"push":"subscribed"'), 'subscribed');
      const before = raw.text.length;
      // A pipelined request and junk: never answered, never parsed (a parse error would end the stream).
      raw.socket.write(request(['GET /health HTTP/1.1', host]));
      raw.socket.write('\0\0 not HTTP at all\r\n\r\n');
      await sleep(900);
      assert.equal(raw.ended, false, 'the stream is open past the headers timeout (400 ms)');
      assert.equal(raw.text.length, before, 'nothing was answered');
      const published = await lean.api('publish', { channel: 'public:c', data: { after: true } });
      assert.equal(published.status, 200);
      await raw.until((r) => r.text.includes('"after":true'), 'the publication on the stream');
      raw.socket.end();
      await raw.until((r) => r.ended, 'the server closed the stream');
      await waitUntil(() => lean.server.node.hub.clientCount === 0, { label: 'no client left' });
    } finally {
      raw.destroy();
    }
  });
});
