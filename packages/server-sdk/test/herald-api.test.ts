/**
 * `HeraldApi` against a real Herald on an ephemeral port: every method, and
 * every way a call fails (401, 403, 413, 429 with retryAfter, 400 with
 * detail, 503, nothing listening), each as a `HeraldApiError` with the
 * registered code and the HTTP status.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { apiErrors } from '@herald/protocol';
import { HeraldApi, HeraldApiError } from '../src/index.ts';
import { startHerald, type TestHerald } from '../../server/test/helpers/herald.ts';
import { closeAllClients, connectWs, unique } from '../../server/test/helpers/herald-ws.ts';
import { poll, pollOpen } from '../../server/test/helpers/rt-clients.ts';

const sha256 = (key: string): string => createHash('sha256').update(key).digest('hex');
const ADMIN = randomBytes(24).toString('base64url');
const PUBLISHER = randomBytes(24).toString('base64url');
const READER = randomBytes(24).toString('base64url');

/** The HeraldApiError `call` rejects with. */
async function failure(call: Promise<unknown>): Promise<HeraldApiError> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof HeraldApiError, `expected a HeraldApiError, got ${inspect(error)}`);
    return error;
  }
  assert.fail('the call succeeded');
}

function assertApiError(error: HeraldApiError, status: number, code: keyof typeof apiErrors): void {
  assert.deepEqual([error.status, error.code], [status, code], `${error.code} ${error.status}: ${error.message} ${error.detail ?? ''}`);
  assert.equal(error.message, apiErrors[code].message);
  assert.equal(error.name, 'HeraldApiError');
}

describe('HeraldApi against a running server', { timeout: 60000 }, () => {
  let h: TestHerald;
  let admin: HeraldApi;
  before(async () => {
    h = await startHerald({
      api: {
        keys: [
          { name: 'admin', sha256: sha256(ADMIN), scopes: ['admin'] },
          { name: 'publisher', sha256: sha256(PUBLISHER), scopes: ['publish'] },
          { name: 'reader', sha256: sha256(READER), scopes: ['read'] },
        ],
      },
      limits: { maxMessageBytes: 1024 },
    });
    admin = new HeraldApi({ url: h.url, apiKey: ADMIN });
  });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    await h.close();
  });

  describe('every method', () => {
    test('publish: the position, and subscribers receive it', async () => {
      const channel = unique('chat:sdk-pub');
      const c = await connectWs(h, 'alice');
      const sub = await c.call('subscribe', { channel });
      assert.deepEqual(await admin.publish(channel, { title: 'hello' }), { epoch: sub.epoch, offset: 1 });
      assert.deepEqual((await c.waitPublications(channel, 1))[0].data, { title: 'hello' });
      assert.deepEqual(await admin.publish(unique('nohistory:sdk'), 1), { epoch: '', offset: 0 }, 'no history: offset 0');
    });

    test('broadcast: one result per channel, errors per channel', async () => {
      const c1 = unique('chat:sdk-bc');
      const c2 = unique('news-sdk-bc');
      const { results } = await new HeraldApi({ url: h.url, apiKey: PUBLISHER }).broadcast([c1, c2, 'nope:x'], { b: 1 });
      assert.equal(results.length, 3);
      assert.deepEqual(results[0], { channel: c1, epoch: (results[0] as { epoch: string }).epoch, offset: 1 });
      assert.equal((results[1] as { offset: number }).offset, 1);
      assert.deepEqual(results[2], { channel: 'nope:x', error: { code: 'unknown_namespace', message: 'channel namespace is not configured' } });
    });

    test('publishMany: in order, one result per publish, errors per publish', async () => {
      const channel = unique('chat:sdk-batch');
      const c = await connectWs(h, 'alice');
      const sub = await c.call('subscribe', { channel });
      const { results } = await new HeraldApi({ url: h.url, apiKey: PUBLISHER }).publishMany([
        { channel, data: { n: 1 } },
        { channel: 'nope:x', data: 1 },
        { channel, data: { n: 2 } },
      ]);
      assert.deepEqual(results, [
        { channel, epoch: sub.epoch, offset: 1 },
        { channel: 'nope:x', error: { code: 'unknown_namespace', message: 'channel namespace is not configured' } },
        { channel, epoch: sub.epoch, offset: 2 },
      ]);
      assert.deepEqual((await c.waitPublications(channel, 2)).map((p) => p.data), [{ n: 1 }, { n: 2 }]);
      assertApiError(await failure(new HeraldApi({ url: h.url, apiKey: READER }).publishMany([{ channel, data: 1 }])), 403, 'forbidden');
    });

    test('history: limit, since and reverse', async () => {
      const channel = unique('chat:sdk-hist');
      let epoch = '';
      for (let i = 1; i <= 4; i++) epoch = (await admin.publish(channel, { i })).epoch;
      const reader = new HeraldApi({ url: h.url, apiKey: READER });
      assert.deepEqual(await reader.history(channel), { epoch, offset: 4, publications: [] });
      assert.deepEqual(await reader.history(channel, { limit: 10 }), { epoch, offset: 4, publications: [1, 2, 3, 4].map((i) => ({ offset: i, data: { i } })) });
      assert.deepEqual((await reader.history(channel, { limit: 2, reverse: true })).publications.map((p) => p.offset), [4, 3]);
      assert.deepEqual((await reader.history(channel, { limit: 10, since: { epoch, offset: 3 } })).publications.map((p) => p.offset), [4]);
    });

    test('presence, presenceStats and channels', async () => {
      const channel = unique('chat:sdk-presence');
      const a = await connectWs(h, 'alice', { info: { role: 'mod' } });
      await a.call('subscribe', { channel });
      const b = await connectWs(h, 'bob');
      await b.call('subscribe', { channel });
      const { clients } = await admin.presence(channel);
      assert.deepEqual(clients[a.clientId], { client: a.clientId, user: 'alice', conn_info: { role: 'mod' } });
      assert.equal(clients[b.clientId]?.user, 'bob');
      assert.deepEqual(await admin.presenceStats(channel), { num_clients: 2, num_users: 2 });
      assert.deepEqual(await admin.channels(channel), { channels: { [channel]: { num_clients: 2 } } });
      const all = await admin.channels();
      assert.equal(all.channels[channel]?.num_clients, 2);
    });

    test('disconnect: with and without reconnect', async () => {
      const user = unique('sdk-dc');
      const a = await connectWs(h, user);
      const b = await connectWs(h, user);
      assert.deepEqual(await admin.disconnect(user, { reconnect: true }), { disconnected: 2 });
      assert.deepEqual([(await a.waitClose()).code, (await b.waitClose()).code], [3007, 3007]);
      const c = await connectWs(h, user);
      assert.deepEqual(await admin.disconnect(user), { disconnected: 1 });
      assert.equal((await c.waitClose()).code, 3503);
      assert.deepEqual(await admin.disconnect(unique('nobody')), { disconnected: 0 });
    });

    test('revokeToken (unix seconds or a Date) and revokeUser', async () => {
      const user = unique('sdk-rv');
      const jti = unique('jti');
      const a = await connectWs(h, user, { jti });
      assert.deepEqual(await admin.revokeToken(jti, Math.floor(Date.now() / 1000) + 3600), { disconnected: 1 });
      assert.equal((await a.waitClose()).code, 3507);
      assert.deepEqual(await admin.revokeToken(unique('jti'), new Date(Date.now() + 60000)), { disconnected: 0 });
      const b = await connectWs(h, user);
      assert.deepEqual(await admin.revokeUser(user), { disconnected: 1 });
      assert.equal((await b.waitClose()).code, 3507);
    });

    test('info', async () => {
      const info = await admin.info();
      assert.match(info.version, /^\d+\.\d+\.\d+/);
      assert.equal(info.nodes.length, 1);
      assert.ok(info.uptime_ms >= 0);
    });

    test('call: any method by name', async () => {
      assert.deepEqual(await admin.call('presence_stats', { channel: unique('chat:empty') }), { num_clients: 0, num_users: 0 });
    });
  });

  describe('every error path', () => {
    test('401 unauthorized: a key Herald does not know', async () => {
      const wrong = randomBytes(24).toString('base64url');
      const error = await failure(new HeraldApi({ url: h.url, apiKey: wrong }).publish('chat:x', 1));
      assertApiError(error, 401, 'unauthorized');
      assert.equal(error.method, 'publish');
      assert.ok(!inspect(error).includes(wrong) && !JSON.stringify(error).includes(wrong), 'the error never carries the key');
    });

    test('403 forbidden: a key without the scope', async () => {
      const reader = new HeraldApi({ url: h.url, apiKey: READER });
      assertApiError(await failure(reader.publish('chat:x', 1)), 403, 'forbidden');
      assertApiError(await failure(reader.disconnect('alice')), 403, 'forbidden');
      assertApiError(await failure(new HeraldApi({ url: h.url, apiKey: PUBLISHER }).history('chat:x')), 403, 'forbidden');
    });

    test('413 payload_too_large: data over limits.maxMessageBytes, and a body over api.maxBodyBytes', async () => {
      assertApiError(await failure(admin.publish('chat:big', 'x'.repeat(2000))), 413, 'payload_too_large');
      assertApiError(await failure(admin.publish('chat:big', 'x'.repeat(70000))), 413, 'payload_too_large');
    });

    test('400 with detail: what in the request was wrong', async () => {
      const limit = await failure(admin.history('chat:x', { limit: 10001 }));
      assertApiError(limit, 400, 'bad_request');
      assert.match(limit.detail ?? '', /^\/limit: /);
      const channel = await failure(admin.publish('chat:bad name', 1));
      assertApiError(channel, 400, 'invalid_channel');
      assert.ok((channel.detail ?? '').length > 0, 'invalid_channel says which rule failed');
      assertApiError(await failure(admin.publish('nope:x', 1)), 400, 'unknown_namespace');
      assertApiError(await failure(admin.history(unique('nohistory:sdk'), { limit: 1 })), 400, 'not_available');
      const noData = await failure(admin.publish('chat:x', undefined));
      assertApiError(noData, 400, 'bad_request');
      assert.equal(noData.detail, '/data: expected required property');
    });

    test('a connection refused: network_error with status 0, never the key', async () => {
      const probe = await startHerald();
      const url = probe.url;
      await probe.close();
      const error = await failure(new HeraldApi({ url, apiKey: ADMIN }).info());
      assert.deepEqual([error.code, error.status], ['network_error', 0]);
      assert.ok(error.detail?.startsWith(url), error.detail);
      assert.ok(!inspect(error, { depth: 10 }).includes(ADMIN));
    });

    test('the key is not shown by console.log or JSON.stringify of the client', () => {
      assert.ok(!inspect(admin, { showHidden: true, depth: 10 }).includes(ADMIN));
      assert.ok(!JSON.stringify(admin).includes(ADMIN));
    });
  });
});

describe('429 too_many_requests carries retryAfter', { timeout: 30000 }, () => {
  test('over api.rateLimitPerKey: the code, the status and Retry-After in seconds', async () => {
    const h = await startHerald({ api: { rateLimitPerKey: 2 } });
    try {
      const api = new HeraldApi({ url: h.url, apiKey: h.apiKey });
      await api.info();
      await api.info();
      const error = await failure(api.info());
      assertApiError(error, 429, 'too_many_requests');
      assert.ok(Number.isInteger(error.retryAfter) && error.retryAfter! >= 1 && error.retryAfter! <= 60, `retryAfter ${error.retryAfter}`);
    } finally {
      await h.close();
    }
  });
});

describe('503 unavailable while Herald drains', { timeout: 30000 }, () => {
  test('a publish during a drain is refused with 503, not accepted', async () => {
    // The drain waits for the long-poll session's next poll: only that poll ends it, never a timer.
    const h = await startHerald({ limits: { closeGraceMs: 60000 }, longPoll: { pollTimeoutMs: 60000, sessionTimeoutMs: 60000 } });
    const opened = (await pollOpen(h.url, { token: await h.token('drainee') })) as { status: number; body: { session: string; seq: number } };
    assert.equal(opened.status, 200);
    const drained = h.server.shutdown(60000);
    try {
      const error = await failure(new HeraldApi({ url: h.url, apiKey: h.apiKey }).publish('chat:drain', 1));
      assertApiError(error, 503, 'unavailable');
    } finally {
      await poll(h.url, opened.body.session, opened.body.seq);
      assert.equal(await drained, true);
    }
  });
});
