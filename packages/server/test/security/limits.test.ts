/**
 * SECURITY-TESTS E24, E25, E27 (bodies) and C19 (flooding, keys in the URL):
 * connection caps per IP, per user and per node refuse new connections while
 * existing ones keep working; new connections per IP per second; a client
 * flooding commands is throttled (111) then cut (3009) while others are
 * unaffected; the server API is rate limited per IP (before the key is
 * checked) and per key, with 429 `too_many_requests` and `Retry-After`;
 * oversize or malformed bodies get 413/400 and the response really ends.
 * Every cap here is per node.
 */
import { afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, http, openWs, unique, type WsClient } from '../helpers/herald-ws.ts';
import { openSse, sseUrl, type SseStream } from '../helpers/rt-clients.ts';
import { ConnectionLimiter } from '../../src/edge/connection-limits.ts';
import { rawExchange, upgradeHead } from './raw-http.ts';

const heralds: TestHerald[] = [];
const streams: SseStream[] = [];

async function herald(overrides: Record<string, unknown>): Promise<TestHerald> {
  const h = await startHerald(overrides);
  heralds.push(h);
  return h;
}

afterEach(async () => {
  closeAllClients();
  for (const stream of streams.splice(0)) stream.abort();
  for (const h of heralds.splice(0)) await h.close();
});

/** Opens an SSE stream and remembers it for cleanup. */
async function sse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
  const stream = await openSse(url, headers);
  streams.push(stream);
  return stream;
}

/** The HTTP status of a refused upgrade (the ws client sees no 101). */
async function refusedUpgrade(h: TestHerald, headers: Record<string, string> = {}): Promise<{ status: number; body: any; retryAfter: string | undefined }> {
  const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  const answer = await rawExchange(h.server.port, upgradeHead(h.server.port, extra));
  assert.notEqual(answer.status, 101, 'the upgrade should have been refused');
  assert.deepEqual(answer.statuses.length, 1);
  return { status: answer.status, body: JSON.parse(answer.body), retryAfter: answer.headers.get('retry-after') };
}

/** Proves a connection still works: a ping reply and a publication. */
async function stillWorks(h: TestHerald, c: WsClient, channel: string, marker: string): Promise<void> {
  assert.ok(c.isOpen, 'existing connection is still open');
  await c.call('ping');
  assert.equal((await h.api('publish', { channel, data: marker })).status, 200);
  await c.waitMarker(channel, marker);
}

describe('connection limiter (unit, injected clock)', () => {
  test('total, per IP and per second; refused attempts count against the rate; release is idempotent', () => {
    let now = 10_000;
    const limiter = new ConnectionLimiter({ maxConnections: 4, maxConnectionsPerIp: 2, newConnectionsPerIpPerSecond: 3 }, () => now);
    const a1 = limiter.admit('a');
    const a2 = limiter.admit('a');
    assert.ok('release' in a1 && 'release' in a2);
    assert.deepEqual(limiter.admit('a'), { refused: 'connection_limit' });
    assert.deepEqual(limiter.admit('a'), { refused: 'too_many_requests', retryAfterSeconds: 1 }, 'fourth attempt in this second');
    now += 1000;
    a1.release();
    a1.release();
    const a3 = limiter.admit('a');
    assert.ok('release' in a3, 'a place was given back');
    const b1 = limiter.admit('b');
    const b2 = limiter.admit('b');
    assert.ok('release' in b1 && 'release' in b2);
    assert.equal(limiter.total, 4);
    assert.deepEqual(limiter.admit('c'), { refused: 'unavailable', retryAfterSeconds: 1 });
    b1.release();
    assert.ok('release' in limiter.admit('c'));
  });
});

describe('connection caps (E24)', { timeout: 60000 }, () => {
  test('per IP: the connection over the cap is refused (429) on every transport; existing ones are unaffected', async () => {
    const h = await herald({ limits: { maxConnectionsPerIp: 3 } });
    const channel = unique('chat:cap-ip');
    const held: WsClient[] = [];
    for (let i = 0; i < 3; i++) {
      const c = await connectWs(h, `ip-user-${i}`);
      await c.call('subscribe', { channel });
      held.push(c);
    }
    const ws = await refusedUpgrade(h);
    assert.equal(ws.status, 429);
    assert.equal(ws.body.error.code, 'connection_limit');
    const stream = await sse(sseUrl(h.url, { token: await h.token('other'), channels: [channel] }));
    assert.equal(stream.status, 429);
    assert.deepEqual((stream.errorBody as any).error.code, 'connection_limit');
    const poll = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token('other'), channels: [channel] } });
    assert.equal(poll.status, 429);
    assert.equal(poll.body.error.code, 'connection_limit');
    for (const [i, c] of held.entries()) await stillWorks(h, c, channel, `still-${i}`);
    // A place given back is usable again.
    await held[0]!.close();
    await connectWs(h, 'ip-user-new');
  });

  test('per user: the connection over the cap is closed with 3506 before its connect reply; SSE and long polling get 429; others unaffected', async () => {
    const h = await herald({ limits: { maxConnectionsPerUser: 2 } });
    const channel = unique('chat:cap-user');
    const first = await connectWs(h, 'alice');
    const second = await connectWs(h, 'alice');
    await first.call('subscribe', { channel });
    await second.call('subscribe', { channel });

    const third = await openWs(h.wsUrl);
    third.send({ id: 1, method: 'connect', params: { token: await h.token('alice') } });
    const closed = await third.waitClose();
    assert.equal(closed.code, 3506);
    assert.equal(third.frames.filter((f) => f.id === 1).length, 0, 'no connect reply before the close');

    const stream = await sse(sseUrl(h.url, { token: await h.token('alice'), channels: [channel] }));
    assert.equal(stream.status, 429);
    assert.equal((stream.errorBody as any).error.code, 'connection_limit');
    const poll = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token('alice'), channels: [channel] } });
    assert.equal(poll.status, 429);
    assert.equal(poll.body.error.code, 'connection_limit');

    // Other users and anonymous connections are not counted against alice.
    const bob = await connectWs(h, 'bob');
    await bob.call('subscribe', { channel });
    await stillWorks(h, first, channel, 'u1');
    await stillWorks(h, second, channel, 'u2');
    await stillWorks(h, bob, channel, 'u3');
    const presence = await h.api('presence', { channel });
    assert.deepEqual(Object.values(presence.body.clients).map((info: any) => info.user).sort(), ['alice', 'alice', 'bob']);
  });

  test('global: the connection over maxConnections is refused with 503; existing ones are unaffected', async () => {
    const h = await herald({ limits: { maxConnections: 2 } });
    const channel = unique('chat:cap-all');
    const a = await connectWs(h, 'a');
    const b = await connectWs(h, 'b');
    await a.call('subscribe', { channel });
    await b.call('subscribe', { channel });
    const ws = await refusedUpgrade(h);
    assert.equal(ws.status, 503);
    assert.equal(ws.body.error.code, 'unavailable');
    const stream = await sse(sseUrl(h.url, { token: await h.token('c'), channels: [channel] }));
    assert.equal(stream.status, 503);
    const poll = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token('c') } });
    assert.equal(poll.status, 503);
    await stillWorks(h, a, channel, 'g1');
    await stillWorks(h, b, channel, 'g2');
  });

  test('new connections per IP per second: a burst is refused with 429 and Retry-After; connections already open are unaffected', async () => {
    const h = await herald({ limits: { newConnectionsPerIpPerSecond: 3 } });
    const channel = unique('chat:cap-rate');
    const keeper = await connectWs(h, 'keeper');
    await keeper.call('subscribe', { channel });
    // 30 attempts at once: only a burst stretched over ten seconds could all pass.
    const answers = await Promise.all(
      Array.from({ length: 30 }, () => rawExchange(h.server.port, upgradeHead(h.server.port), { until: 'head' })),
    );
    const refused = answers.filter((a) => a.status === 429);
    assert.ok(refused.length > 0, `statuses: ${answers.map((a) => a.status).join(',')}`);
    for (const answer of refused) assert.equal(answer.headers.get('retry-after'), '1');
    for (const answer of answers) assert.ok(answer.status === 101 || answer.status === 429, `status ${answer.status}`);
    await stillWorks(h, keeper, channel, 'r1');
  });

  test('client IP: X-Forwarded-For is ignored from untrusted peers and used from trusted proxies', async () => {
    const untrusted = await herald({ limits: { maxConnectionsPerIp: 1 } });
    await openWs(untrusted.wsUrl, { headers: { 'X-Forwarded-For': '203.0.113.1' } });
    const refused = await refusedUpgrade(untrusted, { 'X-Forwarded-For': '203.0.113.2' });
    assert.equal(refused.status, 429, 'the socket address counts, not the header');

    const proxied = await herald({ limits: { maxConnectionsPerIp: 1 }, http: { trustedProxies: ['127.0.0.1'] } });
    await openWs(proxied.wsUrl, { headers: { 'X-Forwarded-For': '203.0.113.1' } });
    await openWs(proxied.wsUrl, { headers: { 'X-Forwarded-For': '203.0.113.2' } });
    const again = await refusedUpgrade(proxied, { 'X-Forwarded-For': '203.0.113.1' });
    assert.equal(again.status, 429, 'the forwarded address counts when the peer is a trusted proxy');
  });
});

describe('inbound flood (E25)', { timeout: 60000 }, () => {
  test('a client sending 5000 commands at once is throttled (111) then closed (3009); another client is unaffected', async () => {
    const h = await herald({});
    const channel = unique('chat:flood');
    const bystander = await connectWs(h, 'bystander');
    await bystander.call('subscribe', { channel });
    const flooder = await connectWs(h, 'flooder');
    const batch: string[] = [];
    for (let i = 0; i < 5000; i++) batch.push(JSON.stringify({ id: 1000 + i, method: 'ping' }));
    for (const frame of batch) flooder.sendRaw(frame);
    const closed = await flooder.waitClose(20000);
    assert.equal(closed.code, 3009);
    const throttled = flooder.frames.filter((f) => f.error?.code === 111);
    assert.ok(throttled.length > 0, 'throttled with 111 before the cut');
    await stillWorks(h, bystander, channel, 'after-flood');
  });
});

describe('server API rate limits and keys (C19)', { timeout: 60000 }, () => {
  test('per IP, counted before the key is checked: 429 too_many_requests with Retry-After', async () => {
    const h = await herald({ api: { rateLimitPerIp: 5 } });
    const channel = unique('chat:api-ip');
    for (let i = 0; i < 5; i++) {
      const wrong = await h.api('publish', { channel, data: i }, 'not-a-key');
      assert.equal(wrong.status, 401);
    }
    const answer = await http(`${h.url}/api/publish`, { headers: { authorization: `Bearer ${h.apiKey}` }, body: { channel, data: 'x' } });
    assert.equal(answer.status, 429);
    assert.deepEqual(answer.body, { error: { code: 'too_many_requests', message: 'rate limit exceeded' } });
    const retryAfter = Number(answer.headers.get('retry-after'));
    assert.ok(Number.isInteger(retryAfter) && retryAfter >= 1 && retryAfter <= 60, `Retry-After ${answer.headers.get('retry-after')}`);
    // Connections are not API requests: they still open.
    await connectWs(h, 'alice');
  });

  test('per IP over IPv6 (the address grouping loads at the first IPv6 peer): 429 after the limit', async () => {
    const h = await herald({ listen: { host: '::1', port: 0 }, api: { rateLimitPerIp: 3 } });
    const url = `http://[::1]:${h.server.port}/api/publish`;
    const channel = unique('chat:api-ip6');
    for (let i = 0; i < 3; i++) {
      const wrong = await http(url, { headers: { authorization: 'Bearer not-a-key' }, body: { channel, data: i } });
      assert.equal(wrong.status, 401);
    }
    const answer = await http(url, { headers: { authorization: `Bearer ${h.apiKey}` }, body: { channel, data: 'x' } });
    assert.equal(answer.status, 429);
    assert.equal(answer.body.error.code, 'too_many_requests');
  });

  test('per key: the flooding key gets 429, another key keeps working; a key in the query string is never accepted', async () => {
    const key1 = randomBytes(24).toString('base64url');
    const key2 = randomBytes(24).toString('base64url');
    const hash = (key: string) => createHash('sha256').update(key).digest('hex');
    const h = await herald({
      api: {
        keys: [
          { name: 'one', sha256: hash(key1), scopes: ['admin'] },
          { name: 'two', sha256: hash(key2), scopes: ['admin'] },
        ],
        rateLimitPerKey: 3,
        rateLimitPerIp: 1000,
      },
    });
    const channel = unique('chat:api-key');
    for (let i = 0; i < 3; i++) assert.equal((await h.api('publish', { channel, data: i }, key1)).status, 200);
    const limited = await h.api('publish', { channel, data: 'over' }, key1);
    assert.equal(limited.status, 429);
    assert.equal(limited.body.error.code, 'too_many_requests');
    assert.equal((await h.api('publish', { channel, data: 'other key' }, key2)).status, 200);
    const history = await h.api('history', { channel, limit: 10 }, key2);
    assert.deepEqual(
      history.body.publications.map((p: any) => p.data),
      [0, 1, 2, 'other key'],
    );

    for (const query of [`api_key=${key2}`, `key=${key2}`, `token=${key2}`, `authorization=Bearer%20${key2}`]) {
      const answer = await http(`${h.url}/api/publish?${query}`, { body: { channel, data: 'query' } });
      assert.equal(answer.status, 401, query);
      assert.equal(answer.body.error.code, 'unauthorized');
    }
  });
});

describe('oversize and malformed POST bodies (E27)', { timeout: 60000 }, () => {
  const paths = ['/api/publish', '/connection/command', '/connection/poll/open', '/connection/poll'];

  test('an oversize body is answered 413 and the connection is ended, declared or chunked', async () => {
    const h = await herald({});
    for (const path of paths) {
      const declared = await rawExchange(
        h.server.port,
        Buffer.concat([
          Buffer.from(
            `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer ${h.apiKey}\r\n` +
              `Herald-Session: ${'x'.repeat(22)}\r\nContent-Length: ${10 * 1024 * 1024}\r\n\r\n`,
          ),
          Buffer.alloc(128 * 1024, 0x20),
        ]),
      );
      assert.equal(declared.status, 413, `${path}: ${declared.text.slice(0, 200)}`);
      assert.equal(JSON.parse(declared.body).error.code, 'payload_too_large');
      assert.ok(declared.closed, `${path}: connection ended`);

      const chunk = 'a'.repeat(16 * 1024);
      const chunks = Array.from({ length: 16 }, () => `${chunk.length.toString(16)}\r\n${chunk}\r\n`).join('');
      const chunked = await rawExchange(
        h.server.port,
        `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nAuthorization: Bearer ${h.apiKey}\r\n` +
          `Herald-Session: ${'x'.repeat(22)}\r\nTransfer-Encoding: chunked\r\n\r\n${chunks}`,
      );
      assert.equal(chunked.status, 413, `${path} chunked: ${chunked.text.slice(0, 200)}`);
      assert.ok(chunked.closed, `${path} chunked: connection ended`);
    }
  });

  test('malformed bodies are answered 400 with a complete response, and the server keeps serving', async () => {
    const h = await herald({});
    const opened = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token('alice') } });
    assert.equal(opened.status, 200);
    const session = opened.body.session as string;
    for (const path of paths) {
      for (const body of ['{"channel":', '[1,2', '\u0000\u0001', '{"a":1}{"b":2}']) {
        const answer = await http(`${h.url}${path}`, {
          headers: { authorization: `Bearer ${h.apiKey}`, 'herald-session': session },
          body,
        });
        assert.equal(answer.status, 400, `${path} ${JSON.stringify(body)}: ${answer.text}`);
        assert.equal(answer.body.error.code, 'invalid_json');
      }
      const wrongType = await http(`${h.url}${path}`, { headers: { 'content-type': 'application/xml', authorization: `Bearer ${h.apiKey}` }, body: '<a/>' });
      assert.equal(wrongType.status, 415, path);
    }
    const health = await http(`${h.url}/health`);
    assert.equal(health.status, 200);
    await http(`${h.url}/connection/close`, { headers: { 'herald-session': session }, body: {} });
  });
});
