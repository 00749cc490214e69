/**
 * SECURITY-TESTS A7: request smuggling vectors on the publish API and the
 * long-poll POSTs are answered 400 and the connection is closed; neither the
 * carrier request nor the request smuggled behind it ever runs (checked in
 * the channels' history).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { http, unique } from '../helpers/herald-ws.ts';
import { rawExchange } from './raw-http.ts';

interface Vector {
  readonly name: string;
  /** The raw request: `head` lines (without the request line), and the bytes after the blank line. */
  build(path: string, headers: readonly string[], body: string, smuggled: string): string;
}

const CRLF = '\r\n';

const vectors: Vector[] = [
  {
    name: 'Content-Length with Transfer-Encoding (CL.TE)',
    build: (path, headers, _body, smuggled) => {
      const payload = `0${CRLF}${CRLF}${smuggled}`;
      return [`POST ${path} HTTP/1.1`, ...headers, `Content-Length: ${payload.length}`, 'Transfer-Encoding: chunked', '', payload].join(CRLF);
    },
  },
  {
    name: 'Transfer-Encoding with a short Content-Length (TE.CL)',
    build: (path, headers, body, smuggled) => {
      const chunk = `${body.length.toString(16)}${CRLF}${body}${CRLF}0${CRLF}${CRLF}`;
      return [`POST ${path} HTTP/1.1`, ...headers, 'Transfer-Encoding: chunked', 'Content-Length: 3', '', chunk + smuggled].join(CRLF);
    },
  },
  {
    name: 'duplicate Content-Length, different values',
    build: (path, headers, body, smuggled) =>
      [`POST ${path} HTTP/1.1`, ...headers, `Content-Length: ${body.length}`, `Content-Length: ${body.length + smuggled.length}`, '', body + smuggled].join(CRLF),
  },
  {
    name: 'duplicate Content-Length, same value',
    build: (path, headers, body, smuggled) =>
      [`POST ${path} HTTP/1.1`, ...headers, `Content-Length: ${body.length}`, `Content-Length: ${body.length}`, '', body + smuggled].join(CRLF),
  },
  {
    name: 'obs-fold hiding Transfer-Encoding',
    build: (path, headers, body, smuggled) =>
      [`POST ${path} HTTP/1.1`, ...headers, 'Transfer-Encoding:', ' chunked', `Content-Length: ${body.length}`, '', body + smuggled].join(CRLF),
  },
  {
    name: 'obs-fold in an ordinary header',
    build: (path, headers, body, smuggled) =>
      [`POST ${path} HTTP/1.1`, ...headers, 'X-Folded: a', '\tb', `Content-Length: ${body.length}`, '', body + smuggled].join(CRLF),
  },
  {
    name: 'bare LF line endings',
    build: (path, headers, body, smuggled) => [`POST ${path} HTTP/1.1`, ...headers, `Content-Length: ${body.length}`, '', body + smuggled].join('\n'),
  },
  {
    name: 'one header ended by a bare LF',
    build: (path, headers, body, smuggled) =>
      [`POST ${path} HTTP/1.1`, ...headers, `X-Lf: a\nContent-Length: ${body.length + smuggled.length}`, `Content-Length: ${body.length}`, '', body + smuggled].join(CRLF),
  },
  {
    name: 'unknown transfer coding',
    build: (path, headers, body, smuggled) =>
      [`POST ${path} HTTP/1.1`, ...headers, 'Transfer-Encoding: xchunked', `Content-Length: ${body.length}`, '', body + smuggled].join(CRLF),
  },
  {
    name: 'two Transfer-Encoding headers',
    build: (path, headers, _body, smuggled) =>
      [`POST ${path} HTTP/1.1`, ...headers, 'Transfer-Encoding: chunked', 'Transfer-Encoding: identity', '', `0${CRLF}${CRLF}${smuggled}`].join(CRLF),
  },
];

describe('request smuggling (A7)', { timeout: 60000 }, () => {
  let h: TestHerald;
  let session: string;

  before(async () => {
    h = await startHerald();
    const opened = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token('alice'), channels: ['chat:smuggling-poll'] } });
    assert.equal(opened.status, 200);
    session = opened.body.session;
  });
  after(async () => {
    await http(`${h.url}/connection/close`, { headers: { 'herald-session': session }, body: {} });
    await h.close();
  });

  /** A complete, valid publish that would land in `channel` if it were ever parsed as a request. */
  const smuggledPublish = (channel: string): string => {
    const body = JSON.stringify({ channel, data: 'smuggled' });
    return [
      'POST /api/publish HTTP/1.1',
      'Host: 127.0.0.1',
      `Authorization: Bearer ${h.apiKey}`,
      'Content-Type: application/json',
      `Content-Length: ${body.length}`,
      '',
      body,
    ].join(CRLF);
  };

  const offset = async (channel: string): Promise<number> => {
    const answer = await h.api('history', { channel });
    assert.equal(answer.status, 200);
    return answer.body.offset;
  };

  for (const target of ['/api/publish', '/connection/poll', '/connection/command', '/connection/poll/open']) {
    test(`every vector on ${target} is 400, the connection is closed, and nothing runs`, async () => {
      const carrier = unique('chat:carrier');
      const smuggled = unique('chat:smuggled');
      const headers = ['Host: 127.0.0.1', `Authorization: Bearer ${h.apiKey}`, `Herald-Session: ${session}`, 'Content-Type: application/json'];
      const body =
        target === '/api/publish'
          ? JSON.stringify({ channel: carrier, data: 'carrier' })
          : target === '/connection/poll'
            ? JSON.stringify({ seq: 0 })
            : target === '/connection/command'
              ? JSON.stringify({ id: 1, method: 'publish', params: { channel: carrier, data: 'carrier' } })
              : JSON.stringify({ token: 'x' });
      for (const vector of vectors) {
        const answer = await rawExchange(h.server.port, vector.build(target, headers, body, smuggledPublish(smuggled)));
        assert.deepEqual(answer.statuses, [400], `${vector.name}: ${answer.text.slice(0, 200)}`);
        assert.deepEqual(JSON.parse(answer.body), { error: { code: 'bad_request', message: 'request body does not match the method schema' } });
        assert.ok(answer.closed, `${vector.name}: connection closed`);
      }
      assert.equal(await offset(smuggled), 0, 'the smuggled publish never ran');
      assert.equal(await offset(carrier), 0, 'the carrier request never ran');
      // The server still serves the same request sent properly.
      assert.equal((await h.api('publish', { channel: carrier, data: 'proper' })).status, 200);
      assert.equal(await offset(carrier), 1);
    });
  }
});
