/**
 * Answers that are not Herald's, from a scripted HTTP server on an
 * ephemeral port: not JSON, not UTF-8, too large, too deep, poisoned, not
 * matching the method's result schema, a proxy's error page, a redirect, a
 * stall, a cut connection, random bytes. Each is a `HeraldApiError` with an
 * SDK code and a detail that says what was wrong; nothing else is thrown,
 * nothing crashes. Also: what the SDK sends (path, headers, no key in the
 * URL) and the constructor's refusals, which never quote the key.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { inspect } from 'node:util';
import fc from 'fast-check';
import { HeraldApi, HeraldApiError } from '../src/index.ts';

type Script = (request: IncomingMessage, response: ServerResponse, body: string) => void;

const KEY = 'sdk-test-key-9f8e7d6c5b4a';

describe('answers that are not Herald API answers', { timeout: 60000 }, () => {
  let server: Server;
  let base = '';
  let script: Script = (_request, response) => response.end();
  const seen: { method: string; url: string; headers: IncomingMessage['headers']; body: string }[] = [];

  before(async () => {
    server = createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        seen.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body });
        script(request, response, body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const api = (options: { timeoutMs?: number; maxResponseBytes?: number; maxResponseDepth?: number } = {}) => new HeraldApi({ url: `${base}/herald`, apiKey: KEY, ...options });

  function answer(status: number, body: string | Buffer, headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' }): Script {
    return (_request, response) => {
      response.writeHead(status, headers);
      response.end(body);
    };
  }

  async function failure(call: Promise<unknown>): Promise<HeraldApiError> {
    try {
      await call;
    } catch (error) {
      assert.ok(error instanceof HeraldApiError, `expected a HeraldApiError, got ${inspect(error)}`);
      assert.ok(!inspect(error, { depth: 10 }).includes(KEY), 'an error never carries the key');
      return error;
    }
    assert.fail('the call succeeded');
  }

  async function invalid(call: Promise<unknown>, status: number, detail: RegExp): Promise<void> {
    const error = await failure(call);
    assert.deepEqual([error.code, error.status], ['invalid_response', status], `${error.code} ${error.status} ${error.detail}`);
    assert.match(error.detail ?? '', detail);
  }

  test('what the SDK sends: POST <url>/api/<method>, the key in Authorization only, a JSON body', async () => {
    script = answer(200, '{"epoch":"e1","offset":7}');
    seen.length = 0;
    assert.deepEqual(await api().publish('chat:x', { a: 1 }), { epoch: 'e1', offset: 7 });
    const request = seen[0]!;
    assert.deepEqual([request.method, request.url], ['POST', '/herald/api/publish']);
    assert.equal(request.headers.authorization, `Bearer ${KEY}`);
    assert.match(request.headers['content-type'] ?? '', /^application\/json/);
    assert.deepEqual(JSON.parse(request.body), { channel: 'chat:x', data: { a: 1 } });
    assert.ok(!request.url.includes(KEY));
  });

  test('extra fields in a result are kept (a newer server may add some)', async () => {
    script = answer(200, '{"epoch":"e1","offset":7,"node":"n1"}');
    assert.deepEqual(await api().publish('chat:x', 1), { epoch: 'e1', offset: 7, node: 'n1' });
  });

  test('not JSON, not UTF-8, not application/json', async () => {
    script = answer(200, 'not json at all');
    await invalid(api().publish('chat:x', 1), 200, /is not JSON/);
    script = answer(200, Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]));
    await invalid(api().publish('chat:x', 1), 200, /not valid UTF-8/);
    script = answer(200, '<html>ok</html>', { 'content-type': 'text/html' });
    await invalid(api().publish('chat:x', 1), 200, /content-type "text\/html"/);
    script = answer(200, '{"epoch":"e","offset":1}', {});
    await invalid(api().publish('chat:x', 1), 200, /not application\/json/);
  });

  test('a result that does not match the method schema names the field', async () => {
    script = answer(200, '{"epoch":5,"offset":1}');
    await invalid(api().publish('chat:x', 1), 200, /publish schema: \/epoch: /);
    script = answer(200, '{"results":[{"channel":"a","offset":"1"}]}');
    await invalid(api().broadcast(['a'], 1), 200, /broadcast schema: \/results\/0/);
    script = answer(200, '[]');
    await invalid(api().info(), 200, /info schema/);
    script = answer(200, 'null');
    await invalid(api().presenceStats('chat:x'), 200, /presence_stats schema/);
    script = answer(200, '{"channels":{"a":{"num_clients":-1}}}');
    await invalid(api().channels(), 200, /channels schema: \/channels\/a\/num_clients/);
  });

  test('prototype-poisoning keys and nesting deeper than maxResponseDepth', async () => {
    script = answer(200, '{"epoch":"e","offset":1,"__proto__":{"polluted":true}}');
    await invalid(api().publish('chat:x', 1), 200, /__proto__/);
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
    script = answer(200, `{"epoch":"e","offset":1,"publications":[{"offset":1,"data":${'['.repeat(40)}${']'.repeat(40)}}]}`);
    await invalid(api({ maxResponseDepth: 20 }).history('chat:x'), 200, /deeper than maxResponseDepth \(20\)/);
    script = answer(200, `{"epoch":"e","offset":1,"publications":[{"offset":1,"data":${'['.repeat(100000)}${']'.repeat(100000)}}]}`);
    await invalid(api().history('chat:x'), 200, /deeper than maxResponseDepth \(1002\)/);
  });

  test('larger than maxResponseBytes, announced or streamed', async () => {
    const big = `{"epoch":"e","offset":1,"pad":"${'x'.repeat(5000)}"}`;
    script = answer(200, big);
    await invalid(api({ maxResponseBytes: 1024 }).publish('chat:x', 1), 200, /larger than maxResponseBytes \(1024\)/);
    script = (_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      for (let i = 0; i < 10; i++) response.write(`${i === 0 ? '{"pad":"' : ''}${'y'.repeat(1000)}`);
      response.end('"}');
    };
    await invalid(api({ maxResponseBytes: 4096 }).publish('chat:x', 1), 200, /larger than maxResponseBytes/);
  });

  test('an error status without Herald\'s error body: a proxy page, an unknown code', async () => {
    script = answer(502, '<html>Bad Gateway</html>', { 'content-type': 'text/html' });
    await invalid(api().publish('chat:x', 1), 502, /HTTP 502/);
    script = answer(500, '{"error":{"code":"no_such_code","message":"x"}}');
    await invalid(api().publish('chat:x', 1), 500, /HTTP 500 without Herald's error body: \/error\/code/);
    script = answer(400, '{"message":"bad"}');
    await invalid(api().publish('chat:x', 1), 400, /\/error/);
  });

  test('Herald\'s error body: code, status, message, detail; Retry-After as seconds or a date', async () => {
    script = answer(400, '{"error":{"code":"bad_request","message":"request body does not match the method schema","detail":"/limit: expected integer"}}');
    const bad = await failure(api().history('chat:x'));
    assert.deepEqual([bad.code, bad.status, bad.message, bad.detail, bad.retryAfter], ['bad_request', 400, 'request body does not match the method schema', '/limit: expected integer', undefined]);
    script = answer(429, '{"error":{"code":"too_many_requests","message":"rate limit exceeded"}}', { 'content-type': 'application/json', 'retry-after': '17' });
    assert.equal((await failure(api().info())).retryAfter, 17);
    const at = new Date(Date.now() + 120000).toUTCString();
    script = answer(429, '{"error":{"code":"too_many_requests","message":"rate limit exceeded"}}', { 'content-type': 'application/json', 'retry-after': at });
    const retry = (await failure(api().info())).retryAfter!;
    assert.ok(retry > 60 && retry <= 121, `retryAfter ${retry}`);
  });

  test('a redirect is not followed', async () => {
    seen.length = 0;
    script = answer(302, '', { location: `${base}/elsewhere` });
    await invalid(api().publish('chat:x', 1), 302, /HTTP 302/);
    assert.deepEqual(seen.map((s) => s.url), ['/herald/api/publish']);
  });

  test('no answer, or an answer that stalls: timeout; a cut connection: network_error', async () => {
    script = () => undefined;
    const silent = await failure(api({ timeoutMs: 200 }).info());
    assert.deepEqual([silent.code, silent.status], ['timeout', 0]);
    script = (_request, response) => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.write('{"version":');
    };
    assert.equal((await failure(api({ timeoutMs: 200 }).info())).code, 'timeout');
    script = (request, response) => {
      response.writeHead(200, { 'content-type': 'application/json', 'content-length': '100' });
      response.write('{"version":', () => request.socket.destroy());
    };
    const cut = await failure(api().info());
    assert.equal(cut.code, 'network_error');
    script = (request) => request.socket.destroy();
    assert.equal((await failure(api().info())).code, 'network_error');
    server.closeAllConnections();
  });

  test('random bytes with any status and content type: always a HeraldApiError', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(200, 400, 401, 429, 500, 503),
        fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain'),
        fc.oneof(fc.uint8Array({ maxLength: 200 }).map((bytes) => Buffer.from(bytes)), fc.json().map((text) => Buffer.from(text))),
        async (status, type, body) => {
          script = answer(status, body, { 'content-type': type });
          try {
            await api().history('chat:x', { limit: 5 });
          } catch (error) {
            return error instanceof HeraldApiError && typeof error.code === 'string';
          }
          return status === 200;
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe('HeraldApi refuses bad options without quoting the key', () => {
  test('url and apiKey', () => {
    const refused = (options: ConstructorParameters<typeof HeraldApi>[0], message: RegExp) => {
      assert.throws(
        () => new HeraldApi(options),
        (error: unknown) => error instanceof TypeError && message.test(error.message) && !error.message.includes('s3cr3t'),
      );
    };
    refused({ url: 'not a url', apiKey: 's3cr3t-key' }, /absolute http\(s\) URL/);
    refused({ url: 'ftp://h/', apiKey: 's3cr3t-key' }, /http or https/);
    refused({ url: 'http://user:s3cr3t@h/', apiKey: 's3cr3t-key' }, /credentials/);
    refused({ url: 'http://h/?key=s3cr3t', apiKey: 's3cr3t-key' }, /query/);
    refused({ url: 'http://h/', apiKey: 's3cr3t-key\r\nx-evil: 1' }, /visible ASCII/);
    refused({ url: 'http://h/', apiKey: '' }, /apiKey/);
    refused({ url: 'http://h/', apiKey: 's3cr3t-key', timeoutMs: 0 }, /timeoutMs/);
  });

  test('a request that cannot be JSON is a TypeError before anything is sent', async () => {
    const api = new HeraldApi({ url: 'http://127.0.0.1:9/', apiKey: 'k' });
    await assert.rejects(api.publish('chat:x', { n: 1n }), (error: unknown) => error instanceof TypeError && /cannot be written as JSON/.test(error.message));
  });
});
