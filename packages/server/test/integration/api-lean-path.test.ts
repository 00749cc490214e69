/**
 * The lean path of the publish routes (packages/server/src/api/lean-routes.ts)
 * answers hostile and ordinary requests exactly as the framework path does:
 * every case is sent, as raw bytes, once to `POST /api/publish` (the lean
 * path) and once to `POST /api/info` (fastify's route), and the two answers
 * must carry the same status, the same headers in the same order (but
 * `date`) and the same body, besides the registered code each case expects:
 * missing and wrong keys, bad JSON, JSON too deep, invalid UTF-8,
 * `__proto__`, an empty body, a body over api.maxBodyBytes (declared or
 * chunked), a refused and an allowed `Origin`, the per-IP and per-key rate
 * limits (counted per node, and in Redis with `limits.scope: "cluster"`:
 * that part needs Redis at HERALD_TEST_REDIS_URL and skips loudly without
 * it), a content type the lean path leaves to fastify. The publish method
 * itself (schema, channel, size and scope errors, a success) answers alike
 * on the lean path and on fastify's route (reached with a JSON type in a
 * spelling the lean path leaves to it).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { apiErrors } from '@herald/protocol';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { deletePrefix } from '../redis/harness.ts';
import { rawExchange } from '../security/raw-http.ts';

const ADMIN = randomBytes(24).toString('base64url');
const sha256 = (key: string): string => createHash('sha256').update(key).digest('hex');
const APP_ORIGIN = 'https://app.example';

interface Answer {
  readonly status: number;
  /** Header lines in order, `date` left out, names lower-cased. */
  readonly headers: readonly string[];
  readonly body: string;
  readonly closed: boolean;
}

function headOf(port: number, path: string, lines: readonly string[]): string {
  return [`POST ${path} HTTP/1.1`, `Host: 127.0.0.1:${String(port)}`, ...lines].join('\r\n') + '\r\n\r\n';
}

/** One request on its own connection, as raw bytes: `head` lines, then `body` (a Content-Length is added unless `chunked`). */
async function send(port: number, path: string, lines: readonly string[], body: string | Buffer, chunked = false): Promise<Answer> {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  const framing = chunked ? ['Transfer-Encoding: chunked'] : [`Content-Length: ${String(bytes.length)}`];
  const payload = chunked
    ? Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`), bytes, Buffer.from('\r\n0\r\n\r\n')])
    : bytes;
  const raw = await rawExchange(port, Buffer.concat([Buffer.from(headOf(port, path, [...lines, 'Connection: close', ...framing])), payload]));
  return parse(raw.text, raw.closed);
}

function parse(text: string, closed: boolean): Answer {
  const end = text.indexOf('\r\n\r\n');
  assert.ok(end > 0, `no answer: ${JSON.stringify(text.slice(0, 200))}`);
  const [statusLine = '', ...lines] = text.slice(0, end).split('\r\n');
  const headers = lines
    .map((line) => {
      const colon = line.indexOf(':');
      return `${line.slice(0, colon).toLowerCase()}: ${line.slice(colon + 1).trim()}`;
    })
    .filter((line) => !line.startsWith('date:'));
  return { status: Number(statusLine.split(' ')[1]), headers, body: text.slice(end + 4), closed };
}

function codeOf(answer: Answer): string | undefined {
  try {
    return (JSON.parse(answer.body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

/** Sends the case to both paths; both must answer the same, with `code`. */
async function same(h: TestHerald, lines: readonly string[], body: string | Buffer, code: keyof typeof apiErrors, chunked = false): Promise<Answer> {
  const lean = await send(h.server.port, '/api/publish', lines, body, chunked);
  const framework = await send(h.server.port, '/api/info', lines, body, chunked);
  assert.equal(codeOf(lean), code, `lean path: ${lean.status} ${lean.body}`);
  assert.equal(lean.status, apiErrors[code].status);
  assert.deepEqual(lean, framework, 'lean path and framework path answer alike');
  return lean;
}

const key = `authorization: Bearer ${ADMIN}`;
const json = 'content-type: application/json';

describe('API lean path: the same answers as the framework path', { timeout: 60000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald({
      api: { keys: [{ name: 'admin', sha256: sha256(ADMIN), scopes: ['admin'] }] },
      cors: { origins: [APP_ORIGIN] },
    });
  });
  after(() => h.close());

  test('missing, wrong and malformed keys: 401', async () => {
    await same(h, [json], '{}', 'unauthorized');
    await same(h, [json, 'authorization: Bearer nope'], '{}', 'unauthorized');
    await same(h, [json, 'x-api-key: nope'], '{}', 'unauthorized');
    await same(h, [json, `authorization: Basic ${ADMIN}`], '{}', 'unauthorized');
    await same(h, [json, `authorization: Bearer ${'k'.repeat(600)}`], '{}', 'unauthorized');
  });

  test('bodies that are not JSON, too deep, not UTF-8, poisoned or empty: 400, connection closed', async () => {
    for (const [body, code] of [
      ['{"channel":', 'invalid_json'],
      ['', 'invalid_json'],
      ['[1,2', 'invalid_json'],
      ['{"channel":"chat:x","data":1}garbage', 'invalid_json'],
      ['['.repeat(100) + ']'.repeat(100), 'json_too_deep'],
      [Buffer.from([0x7b, 0x22, 0xc3, 0x28, 0x22, 0x3a, 0x31, 0x7d]), 'invalid_utf8'],
      ['{"channel":"chat:x","data":{"__proto__":{"polluted":1}}}', 'invalid_json'],
      ['{"constructor":{"prototype":{"polluted":1}}}', 'invalid_json'],
    ] as const) {
      const answer = await same(h, [json, key], body, code);
      assert.ok(answer.headers.includes('connection: close'), `${code}: connection closed after the answer`);
      assert.ok(answer.closed);
    }
    assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
  });

  test('a body over api.maxBodyBytes, declared or chunked: 413, connection closed', async () => {
    const big = `{"channel":"chat:x","data":"${'x'.repeat(70 * 1024)}"}`;
    const declared = await same(h, [json, key], big, 'payload_too_large');
    assert.ok(declared.headers.includes('connection: close'));
    const chunked = await same(h, [json, key], big, 'payload_too_large', true);
    assert.ok(chunked.headers.includes('connection: close'));
  });

  test('content types the lean path leaves to fastify: 415, or read by fastify', async () => {
    await same(h, ['content-type: text/plain', key], '{"channel":"chat:x","data":1}', 'unsupported_media_type');
    const unusual = await send(h.server.port, '/api/publish', ['content-type: Application/JSON ; charset="utf-8"', key], '{"channel":"chat:lean-type","data":1}');
    assert.equal(unusual.status, 200, `a JSON type in another spelling is fastify's to read: ${unusual.body}`);
  });

  test('Origin: refused 403 without CORS headers; allowed: the same CORS and security headers as fastify', async () => {
    const refused = await same(h, [json, key, 'origin: https://evil.example'], '{}', 'origin_not_allowed');
    assert.ok(!refused.headers.some((line) => line.startsWith('vary:') || line.startsWith('access-control-')));

    const lean = await send(h.server.port, '/api/publish', [json, key, `origin: ${APP_ORIGIN}`], '{"channel":"chat:lean-origin","data":1}');
    const framework = await send(h.server.port, '/api/info', [json, key, `origin: ${APP_ORIGIN}`], '{}');
    assert.equal(lean.status, 200, lean.body);
    assert.equal(framework.status, 200, framework.body);
    const withoutLength = (a: Answer) => a.headers.filter((line) => !line.startsWith('content-length:'));
    assert.deepEqual(withoutLength(lean), withoutLength(framework));
    assert.ok(lean.headers.includes(`access-control-allow-origin: ${APP_ORIGIN}`));
    assert.ok(lean.headers.includes('access-control-allow-credentials: true'));
    assert.ok(lean.headers.includes("x-frame-options: DENY"));
    assert.ok(lean.headers.includes('content-type: application/json; charset=utf-8'));
  });

  test('a successful publish, and two requests pipelined on one kept-alive connection', async () => {
    const port = h.server.port;
    const one = `{"channel":"chat:lean-pipe","data":1}`;
    const two = `{"channel":"chat:lean-pipe","data":2}`;
    const request = (body: string, last: boolean) =>
      headOf(port, '/api/publish', [json, key, `Content-Length: ${String(body.length)}`, ...(last ? ['Connection: close'] : [])]) + body;
    const raw = await rawExchange(port, request(one, false) + request(two, true));
    assert.equal([...raw.text.matchAll(/HTTP\/1\.1 200 OK\r\n/g)].length, 2, raw.text);
    assert.match(raw.text, /"offset":1\}[\s\S]*"offset":2\}/);
  });
});

describe('API lean path: the publish method answers as on fastify\'s route', { timeout: 60000 }, () => {
  const READER = randomBytes(24).toString('base64url');
  /** A JSON type in a spelling the lean path leaves to fastify: the same method, run from fastify's route. */
  const fastifyJson = 'content-type: Application/JSON';
  let h: TestHerald;
  before(async () => {
    h = await startHerald({
      api: {
        keys: [
          { name: 'admin', sha256: sha256(ADMIN), scopes: ['admin'] },
          { name: 'reader', sha256: sha256(READER), scopes: ['read'] },
        ],
      },
      limits: { maxMessageBytes: 1024 },
    });
  });
  after(() => h.close());

  /** The body to `/api/publish` on both paths: the same status, headers and body, with `code`. */
  async function samePublish(lines: readonly string[], body: string, code: keyof typeof apiErrors): Promise<void> {
    const lean = await send(h.server.port, '/api/publish', [json, ...lines], body);
    const framework = await send(h.server.port, '/api/publish', [fastifyJson, ...lines], body);
    assert.equal(codeOf(lean), code, `lean path: ${lean.status} ${lean.body}`);
    assert.deepEqual(lean, framework, 'lean path and framework path answer alike');
  }

  test('schema, channel, size and scope errors: the same code, detail and headers', async () => {
    await samePublish([key], '{"channel":"chat:m"}', 'bad_request');
    await samePublish([key], '{"channel":"chat:m","data":1,"extra":true}', 'bad_request');
    await samePublish([key], '{"channel":7,"data":1}', 'bad_request');
    await samePublish([key], '{"channel":"","data":1}', 'bad_request');
    await samePublish([key], '{"channel":"chat:m","data":1,"idempotency_key":"has space"}', 'bad_request');
    await samePublish([key], '[1]', 'bad_request');
    await samePublish([key], 'null', 'bad_request');
    await samePublish([key], '{"channel":"nope:m","data":1}', 'unknown_namespace');
    await samePublish([key], '{"channel":"chat:a\\u0000b","data":1}', 'invalid_channel');
    await samePublish([key], `{"channel":"chat:m","data":"${'x'.repeat(2000)}"}`, 'payload_too_large');
    await samePublish([`authorization: Bearer ${READER}`], '{"channel":"chat:m","data":1}', 'forbidden');
  });

  test('a publish: 200 with the next position on either path', async () => {
    const lean = await send(h.server.port, '/api/publish', [json, key], '{"channel":"chat:m-ok","data":{"n":1}}');
    const framework = await send(h.server.port, '/api/publish', [fastifyJson, key], '{"channel":"chat:m-ok","data":{"n":2}}');
    assert.equal(lean.status, 200, lean.body);
    assert.equal(framework.status, 200, framework.body);
    const withoutLength = (a: Answer) => a.headers.filter((line) => !line.startsWith('content-length:'));
    assert.deepEqual(withoutLength(lean), withoutLength(framework));
    const first = JSON.parse(lean.body) as { epoch: string; offset: number };
    const second = JSON.parse(framework.body) as { epoch: string; offset: number };
    assert.deepEqual(Object.keys(first), ['epoch', 'offset']);
    assert.deepEqual(second, { epoch: first.epoch, offset: first.offset + 1 });
  });
});

const redisMissing = missingService('Redis', await redisAvailable(REDIS_URL));

/** Per node (in the process), and cluster-wide (limits.scope "cluster": counted in Redis, under a prefix per server). */
const scopes = [
  { name: 'per node', skip: false as string | false, cluster: false },
  { name: 'cluster-wide, in Redis', skip: redisMissing, cluster: true },
];

for (const scope of scopes) describe(`API lean path: rate limits count with the framework path (${scope.name})`, { timeout: 60000, skip: scope.skip }, () => {
  const prefixes: string[] = [];
  after(async () => {
    for (const prefix of prefixes) await deletePrefix(REDIS_URL, prefix);
  });
  const start = (overrides: Record<string, unknown>): Promise<TestHerald> => {
    if (!scope.cluster) return startHerald(overrides);
    const prefix = `herald-test-lean-${randomBytes(4).toString('hex')}`;
    prefixes.push(prefix);
    return startHerald({ ...overrides, engine: { type: 'redis', redisUrl: REDIS_URL, redisPrefix: prefix }, limits: { scope: 'cluster' } });
  };

  test('per IP, before the key: the same 429 with Retry-After on both paths', async () => {
    const h = await start({ api: { rateLimitPerIp: 4, rateLimitPerKey: 1000 } });
    try {
      const port = h.server.port;
      const lines = [json, `authorization: Bearer ${h.apiKey}`];
      // Two on each path: the four allowed requests of the minute, counted together.
      for (const path of ['/api/publish', '/api/info', '/api/publish', '/api/info']) {
        const answer = await send(port, path, lines, path === '/api/info' ? '{}' : '{"channel":"chat:lean-rl","data":1}');
        assert.equal(answer.status, 200, `${path}: ${answer.body}`);
      }
      const lean = await same(h, [json], 'not even JSON', 'too_many_requests');
      const retry = lean.headers.find((line) => line.startsWith('retry-after:'));
      assert.ok(retry !== undefined && Number(retry.slice(12)) >= 1, 'Retry-After in seconds');
    } finally {
      await h.close();
    }
  });

  test('per key, after the key: the same 429 on both paths', async () => {
    const h = await start({ api: { rateLimitPerIp: 1000, rateLimitPerKey: 2 } });
    try {
      const lines = [json, `authorization: Bearer ${h.apiKey}`];
      assert.equal((await send(h.server.port, '/api/publish', lines, '{"channel":"chat:lean-rk","data":1}')).status, 200);
      assert.equal((await send(h.server.port, '/api/info', lines, '{}')).status, 200);
      await same(h, lines, '{}', 'too_many_requests');
      await same(h, [json], '{}', 'unauthorized');
    } finally {
      await h.close();
    }
  });
});
