/**
 * `http.leanLongPoll` (packages/server/src/edge/lean-http.ts): the long-poll
 * routes answered by the lean HTTP/1.1 layer must answer as the front on
 * node:http does, byte for byte but the Date (a server with the switch off
 * beside one with it on); a keep-alive connection goes to node:http at its
 * first other request (a WebSocket upgrade too); pipelined requests are
 * answered in order; `Connection: close`, the keep-alive and headers
 * timeouts hold on the lean path.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { RawHttp, answers, exchange, request } from '../helpers/raw-http.ts';
import { leanStats } from '../../src/edge/lean-http.ts';
import { waitUntil } from '../helpers/rt-util.ts';

const ORIGIN = 'https://app.example';

const opts = { cors: { origins: [ORIGIN] }, api: { maxBodyBytes: 2048 }, limits: { maxJsonDepth: 8 } };

describe('lean long-poll layer', { timeout: 120000 }, () => {
  let front: TestHerald;
  let lean: TestHerald;
  before(async () => {
    front = await startHerald({ ...opts, http: { leanLongPoll: false, keepAliveTimeoutMs: 400, headersTimeoutMs: 400, requestTimeoutMs: 600 } });
    lean = await startHerald({ ...opts, http: { leanLongPoll: true, keepAliveTimeoutMs: 400, headersTimeoutMs: 400, requestTimeoutMs: 600 } });
  });
  after(async () => {
    await front?.close();
    await lean?.close();
  });

  const port = (h: TestHerald): number => Number(new URL(h.url).port);

  test('answers as the front does, byte for byte but the Date', async () => {
    const host = 'Host: 127.0.0.1';
    const cases: [string, Buffer][] = [
      ['unknown session', request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}')],
      ['invalid JSON', request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json'], '{"seq":')],
      ['not JSON', request(['POST /connection/poll/open HTTP/1.1', host, 'Content-Type: text/plain'], '{}')],
      ['too deep', request(['POST /connection/poll/open HTTP/1.1', host, 'Content-Type: application/json'], '['.repeat(20) + ']'.repeat(20))],
      ['declared too large', request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json'], 'x'.repeat(3000))],
      ['bad schema', request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json'], '{"seq":-1}')],
      ['refused origin', request(['POST /connection/poll HTTP/1.1', host, 'Origin: https://evil.example', 'Content-Type: application/json'], '{"seq":0}')],
      ['allowed origin', request(['POST /connection/poll HTTP/1.1', host, `Origin: ${ORIGIN}`, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}')],
      ['connection close', request(['POST /connection/poll HTTP/1.1', host, 'Connection: close', 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}')],
      ['unknown app', request(['POST /apps/nope/connection/poll HTTP/1.1', host, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}')],
      // More header lines than maxHeadersCount (100), the Content-Length after them: node:http's 431, not a request without its body.
      [
        'too many header lines',
        request(
          ['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', 'Herald-Session: nope', ...Array.from({ length: 101 }, (_, i) => `X-Filler-${i}: y`)],
          '{"seq":0}',
        ),
      ],
    ];
    const before = leanStats.requests;
    for (const [name, data] of cases) {
      const a = await exchange(port(front), data, 1);
      const b = await exchange(port(lean), data, 1);
      assert.ok(answers(a.text).length >= 1, `${name}: front answered ${a.text}`);
      assert.deepEqual(answers(b.text), answers(a.text), `${name}: lean ${b.text} vs front ${a.text}`);
      assert.equal(b.ended, a.ended, `${name}: the connection ends alike`);
    }
    assert.ok(leanStats.requests - before >= cases.length - 1, 'the lean layer answered them');
  });

  test("malformed and oversized heads get node:http's answers (400, 431), whole and split in small reads", async () => {
    const head = 'POST /connection/poll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n';
    const cases: [string, Buffer][] = [
      ['header bytes over maxHeaderSize', Buffer.from(`${head}X-Big: ${'a'.repeat(17000)}\r\nContent-Length: 9\r\n\r\n{"seq":0}`)],
      ['Content-Length with Transfer-Encoding', Buffer.from(`${head}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n`)],
      ['two Content-Lengths', Buffer.from(`${head}Content-Length: 9\r\nContent-Length: 10\r\n\r\n{"seq":0}`)],
      ['obs-fold', Buffer.from(`${head}Herald-Session: a\r\n b\r\nContent-Length: 9\r\n\r\n{"seq":0}`)],
      ['bare LF', Buffer.from('POST /connection/poll HTTP/1.1\nHost: 127.0.0.1\nContent-Length: 9\n\n{"seq":0}')],
      ['NUL in a value', Buffer.from(`${head}Herald-Session: a\0b\r\nContent-Length: 9\r\n\r\n{"seq":0}`)],
      ['a method llhttp does not know', Buffer.from('POSTX /connection/poll HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')],
    ];
    for (const [name, data] of cases) {
      const expected = await exchange(port(front), data, 1);
      assert.match(answers(expected.text)[0]?.head ?? '', /^HTTP\/1\.1 4(00|31) /, `${name}: front answered ${expected.text.slice(0, 80)}`);
      // Whole, and in reads of 7 and 13 bytes around the head's end (the parser keeps its state across reads).
      const headEnd = data.indexOf('\r\n\r\n') === -1 ? data.length : data.indexOf('\r\n\r\n');
      const cut = Math.max(0, headEnd - 20);
      for (const parts of [[data], [data.subarray(0, cut), data.subarray(cut, cut + 7), data.subarray(cut + 7, cut + 20), data.subarray(cut + 20)]]) {
        const got = await exchange(port(lean), parts, 1);
        assert.deepEqual(answers(got.text), answers(expected.text), `${name} (${parts.length} writes): lean ${got.text.slice(0, 200)} vs front ${expected.text.slice(0, 200)}`);
        assert.equal(got.ended, true, `${name}: the connection ends`);
      }
    }
  });

  test('a session opened and polled on the lean path; pipelined polls are answered in order', async () => {
    const host = 'Host: 127.0.0.1';
    const opened = await exchange(port(lean), request(['POST /connection/poll/open HTTP/1.1', host, 'Content-Type: application/json'], '{"channels":["public:x"]}'), 1);
    const first = answers(opened.text)[0]!;
    assert.match(first.head, /^HTTP\/1\.1 200 OK/);
    const { session, seq } = JSON.parse(first.body) as { session: string; seq: number };
    const poll = (n: number) => request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', `Herald-Session: ${session}`], `{"seq":${n}}`);
    const bad = request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}');
    const raw = await RawHttp.connect(port(lean));
    // An unknown session, then a poll that is held until a publication, then another unknown one behind it.
    raw.socket.write(Buffer.concat([bad, poll(seq), bad]));
    await raw.until((r) => answers(r.text).length >= 1, 'first answer');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(answers(raw.text).length, 1, 'the third waits behind the held poll');
    const published = await lean.api('publish', { channel: 'public:x', data: { n: 1 } });
    assert.equal(published.status, 200);
    await raw.until((r) => answers(r.text).length >= 3, 'three answers');
    const [a, b, c] = answers(raw.text);
    assert.match(a!.head, /^HTTP\/1\.1 404 /);
    assert.match(b!.head, /^HTTP\/1\.1 200 /);
    assert.match(b!.body, /"n":1/);
    assert.match(c!.head, /^HTTP\/1\.1 404 /);
    raw.destroy();
  });

  test('a head split across reads after a first request, its body in a later read, then a malformed head (400 as the front)', async () => {
    const host = 'Host: 127.0.0.1';
    const pause = () => new Promise((resolve) => setTimeout(resolve, 30));
    const unknown = request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}');
    const malformed = Buffer.from('POST /connection/poll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx');
    const expectedUnknown = answers((await exchange(port(front), unknown, 1)).text)[0]!;
    const expectedMalformed = answers((await exchange(port(front), malformed, 1)).text)[0]!;
    const raw = await RawHttp.connect(port(lean));
    raw.socket.write(unknown);
    await raw.until((r) => answers(r.text).length >= 1, 'first answer');
    await pause();
    const headEnd = unknown.indexOf('\r\n\r\n') + 4;
    for (const part of [unknown.subarray(0, 7), unknown.subarray(7, 40), unknown.subarray(40, headEnd), unknown.subarray(headEnd)]) {
      raw.socket.write(part);
      await pause();
    }
    await raw.until((r) => answers(r.text).length >= 2, 'second answer');
    raw.socket.write(malformed);
    await raw.until((r) => r.ended, 'the connection ends after the 400');
    assert.deepEqual(answers(raw.text), [expectedUnknown, expectedUnknown, expectedMalformed]);
    assert.match(answers(raw.text)[2]!.head, /^HTTP\/1\.1 400 /);
    raw.destroy();
  });

  test('after a first request: a poll alone in a read (held), bytes behind it, two requests in one read, a poll and a request for node:http in one read', async () => {
    const host = 'Host: 127.0.0.1';
    const opened = await exchange(port(lean), request(['POST /connection/poll/open HTTP/1.1', host, 'Content-Type: application/json'], '{"channels":["public:whole"]}'), 1);
    const { session, seq } = JSON.parse(answers(opened.text)[0]!.body) as { session: string; seq: number };
    const poll = (n: number) => request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', `Herald-Session: ${session}`], `{"seq":${n}}`);
    const bad = request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}');
    const expectedBad = answers((await exchange(port(front), bad, 1)).text)[0]!;
    const pause = () => new Promise((resolve) => setTimeout(resolve, 30));
    const raw = await RawHttp.connect(port(lean));
    raw.socket.write(bad);
    await raw.until((r) => answers(r.text).length >= 1, 'first answer');
    await pause();
    // A poll alone in a read (held), then an unknown session's poll while it is held.
    raw.socket.write(poll(seq));
    await pause();
    raw.socket.write(bad);
    await pause();
    assert.equal(answers(raw.text).length, 1, 'the unknown poll waits behind the held one');
    assert.equal((await lean.api('publish', { channel: 'public:whole', data: { n: 7 } })).status, 200);
    await raw.until((r) => answers(r.text).length >= 3, 'three answers');
    await pause();
    // Two requests in one read, then a poll and a request for node:http in one read.
    raw.socket.write(Buffer.concat([bad, bad]));
    await raw.until((r) => answers(r.text).length >= 5, 'five answers');
    await pause();
    const handOffs = leanStats.handOffs;
    raw.socket.write(Buffer.concat([bad, request(['GET /health/live HTTP/1.1', host])]));
    await raw.until((r) => answers(r.text).length >= 7, 'seven answers');
    const all = answers(raw.text);
    assert.deepEqual([all[0], all[2], all[3], all[4], all[5]], [expectedBad, expectedBad, expectedBad, expectedBad, expectedBad]);
    assert.match(all[1]!.head, /^HTTP\/1\.1 200 /);
    assert.match(all[1]!.body, /"n":7/);
    assert.match(all[6]!.head, /^HTTP\/1\.1 200 /);
    assert.equal(leanStats.handOffs, handOffs + 1, 'the health check went to node:http');
    assert.equal(raw.ended, false);
    raw.destroy();
  });

  test('a keep-alive connection goes to node:http at its first other request, then a WebSocket upgrade works on it', async () => {
    const host = 'Host: 127.0.0.1';
    const handOffs = leanStats.handOffs;
    const raw = await RawHttp.connect(port(lean));
    raw.socket.write(request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}'));
    await raw.until((r) => answers(r.text).length >= 1, 'poll answer');
    raw.socket.write(request(['GET /health/live HTTP/1.1', host]));
    await raw.until((r) => answers(r.text).length >= 2, 'health answer');
    assert.match(answers(raw.text)[1]!.head, /^HTTP\/1\.1 200 /);
    assert.equal(leanStats.handOffs, handOffs + 1);
    raw.socket.write(
      request(['GET /connection/websocket HTTP/1.1', host, 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13']),
    );
    await raw.until((r) => r.text.includes('HTTP/1.1 101 '), 'upgrade');
    raw.destroy();
  });

  test('Connection: close ends the connection after the answer; HTTP/1.0 goes to node:http', async () => {
    const host = 'Host: 127.0.0.1';
    const closed = await exchange(port(lean), request(['POST /connection/poll HTTP/1.1', host, 'Connection: close', 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}'), 1);
    assert.equal(closed.ended, true);
    assert.match(answers(closed.text)[0]!.head, /\r\nConnection: close/);
    const handOffs = leanStats.handOffs;
    const old = await exchange(port(lean), request(['POST /connection/poll HTTP/1.0', host, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}'), 1);
    assert.match(answers(old.text)[0]!.head, /^HTTP\/1\.1 404 /);
    assert.equal(leanStats.handOffs, handOffs + 1);
  });

  test('answers past what the socket takes at once (the client not reading) arrive whole and in order, then the close after them', async () => {
    // Thousands of pipelined polls of an unknown session, each answered 404: with the client not reading, the answers
    // fill the kernel's socket buffers and the rest wait in the process (the socket's stream buffer; a write past the
    // stream would wait in libuv's queue); every byte must come, in order, and a `Connection: close` at the end must end
    // the connection after them.
    // A server of its own, with the default timeouts: on a busy machine a head split across reads may wait longer than
    // the 400 ms the suite's servers allow.
    const own = await startHerald({ ...opts, http: { leanLongPoll: true } });
    try {
      await answeredInOrder(own);
    } finally {
      await own.close();
    }
  });

  async function answeredInOrder(server: TestHerald): Promise<void> {
    const host = 'Host: 127.0.0.1';
    const bad = request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}');
    const last = request(['POST /connection/poll HTTP/1.1', host, 'Connection: close', 'Content-Type: application/json', 'Herald-Session: last'], '{"seq":0}');
    const count = 20000;
    const raw = await RawHttp.connect(port(server));
    raw.socket.pause();
    const chunks: Buffer[] = [];
    let ended = false;
    raw.socket.removeAllListeners('data');
    raw.socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    raw.socket.on('end', () => {
      ended = true;
    });
    const before = leanStats.requests;
    raw.socket.write(Buffer.concat([...Array.from({ length: count }, () => bad), last]));
    // The server answers as it reads: wait until it took every request, the answers piling up unread.
    await waitUntil(() => leanStats.requests - before >= count + 1, { timeoutMs: 30000, label: 'every request answered' });
    raw.socket.resume();
    await waitUntil(() => ended, { timeoutMs: 30000, label: 'the connection ended after the last answer' });
    const text = Buffer.concat(chunks).toString('latin1');
    const all = answers(text);
    assert.equal(all.length, count + 1, 'every answer, none cut');
    for (const answer of all.slice(0, count)) assert.match(answer.head, /^HTTP\/1\.1 404 [^]*\r\nConnection: keep-alive/);
    assert.match(all[count]!.head, /^HTTP\/1\.1 404 [^]*\r\nConnection: close/);
    assert.ok(text.endsWith(all[count]!.body), 'nothing after the last answer');
    assert.ok(Buffer.byteLength(text) > 4 << 20, `more than the socket buffers take (${Buffer.byteLength(text)} bytes)`);
  }

  test('the keep-alive timeout ends an idle lean connection, not one with a held poll', async () => {
    const host = 'Host: 127.0.0.1';
    const idle = await RawHttp.connect(port(lean));
    idle.socket.write(request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', 'Herald-Session: nope'], '{"seq":0}'));
    await idle.until((r) => answers(r.text).length >= 1, 'answer');
    await idle.until((r) => r.ended, 'closed after the keep-alive timeout', 5000);

    const opened = await exchange(port(lean), request(['POST /connection/poll/open HTTP/1.1', host, 'Content-Type: application/json'], '{"channels":["public:y"]}'), 1);
    const { session, seq } = JSON.parse(answers(opened.text)[0]!.body) as { session: string; seq: number };
    const held = await RawHttp.connect(port(lean));
    held.socket.write(request(['POST /connection/poll HTTP/1.1', host, 'Content-Type: application/json', `Herald-Session: ${session}`], `{"seq":${seq}}`));
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assert.equal(held.ended, false, 'a held poll is not idle');
    await lean.api('publish', { channel: 'public:y', data: { n: 2 } });
    await held.until((r) => answers(r.text).length >= 1, 'the held poll answered');
    assert.match(answers(held.text)[0]!.body, /"n":2/);
    held.destroy();
  });

  test('slowloris: a head that never ends gets 408 after the headers timeout', async () => {
    const raw = await RawHttp.connect(port(lean));
    raw.socket.write('POST /connection/poll HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    const timer = setInterval(() => raw.socket.write('X-A: b\r\n'), 100);
    try {
      await raw.until((r) => r.ended, 'closed', 5000);
    } finally {
      clearInterval(timer);
    }
    assert.match(raw.text, /^HTTP\/1\.1 408 /);
    const body = await RawHttp.connect(port(lean));
    body.socket.write('POST /connection/poll HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"seq"');
    await body.until((r) => r.ended, 'a body that never ends is cut by the request timeout', 5000);
  });
});
