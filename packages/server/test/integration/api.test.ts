/**
 * The server HTTP API and the other HTTP endpoints against docs/protocol.md.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, eventually, http, unique, type Json } from '../helpers/herald-ws.ts';

const sha256 = (key: string): string => createHash('sha256').update(key).digest('hex');
const ADMIN = randomBytes(24).toString('base64url');
const PUBLISHER = randomBytes(24).toString('base64url');
const READER = randomBytes(24).toString('base64url');

describe('server API', { timeout: 30000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald({
      api: {
        keys: [
          { name: 'admin', sha256: sha256(ADMIN), scopes: ['admin'] },
          { name: 'publisher', sha256: sha256(PUBLISHER), scopes: ['publish'] },
          { name: 'reader', sha256: sha256(READER), scopes: ['read'] },
        ],
      },
    });
  });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    await h.close();
  });

  const api = (method: string, body: unknown, key = ADMIN) => h.api(method, body, key);

  async function ok(method: string, body: unknown, key = ADMIN): Promise<Json> {
    const answer = await api(method, body, key);
    assert.equal(answer.status, 200, `${method} answered ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  function assertError(answer: { status: number; body: Json }, status: number, code: string): void {
    assert.equal(answer.status, status, `expected ${status} ${code}, got ${answer.status} ${JSON.stringify(answer.body)}`);
    assert.equal(answer.body?.error?.code, code, `expected code ${code}, got ${JSON.stringify(answer.body)}`);
    assert.equal(typeof answer.body.error.message, 'string');
  }

  describe('methods', () => {
    test('publish returns the position and reaches subscribers', async () => {
      const channel = unique('chat:api-pub');
      const c = await connectWs(h, 'alice');
      const sub = await c.call('subscribe', { channel });
      assert.deepEqual(await ok('publish', { channel, data: { title: 'hello' } }), { epoch: sub.epoch, offset: 1 });
      assert.deepEqual(await ok('publish', { channel, data: [1, 2] }), { epoch: sub.epoch, offset: 2 });
      const pubs = await c.waitPublications(channel, 2);
      assert.deepEqual(
        pubs.map((p) => [p.offset, p.data]),
        [
          [1, { title: 'hello' }],
          [2, [1, 2]],
        ],
      );
      // default namespace works for the API too
      const plain = unique('news');
      assert.deepEqual((await ok('publish', { channel: plain, data: 1 })).offset, 1);
    });

    test('publish without history answers offset 0', async () => {
      const result = await ok('publish', { channel: unique('nohistory:api'), data: 1 });
      assert.equal(result.offset, 0);
    });

    test('broadcast publishes to every channel and reports per-channel errors', async () => {
      const c1 = unique('chat:bc');
      const c2 = unique('news-bc');
      const c = await connectWs(h, 'alice');
      await c.call('subscribe', { channel: c1 });
      await c.call('subscribe', { channel: c2 });
      const body = await ok('broadcast', { channels: [c1, c2, 'nope:x', 'bad ns:x'], data: { b: 1 } });
      assert.ok(Array.isArray(body.results), JSON.stringify(body));
      assert.equal(body.results.length, 4);
      const byChannel = new Map<string, Json>(body.results.map((r: Json) => [r.channel, r]));
      assert.equal(byChannel.get(c1)?.offset, 1);
      assert.equal(typeof byChannel.get(c1)?.epoch, 'string');
      assert.equal(byChannel.get(c2)?.offset, 1);
      assert.ok(byChannel.get('nope:x')?.error !== undefined, 'unknown namespace reported');
      assert.equal(byChannel.get('nope:x')?.offset, undefined);
      assert.ok(byChannel.get('bad ns:x')?.error !== undefined, 'invalid channel reported');
      assert.deepEqual((await c.waitPublications(c1, 1))[0].data, { b: 1 });
      assert.deepEqual((await c.waitPublications(c2, 1))[0].data, { b: 1 });
    });

    test('broadcast to more than 1000 channels is a bad request', async () => {
      const channels = Array.from({ length: 1001 }, (_, i) => `news-many-${i}`);
      assertError(await api('broadcast', { channels, data: 1 }), 400, 'bad_request');
    });

    test('history returns publications with limit, since and reverse', async () => {
      const channel = unique('chat:api-hist');
      let epoch = '';
      for (let i = 1; i <= 4; i++) epoch = (await ok('publish', { channel, data: { i } })).epoch;
      assert.deepEqual(await ok('history', { channel }), { epoch, offset: 4, publications: [] });
      const page = await ok('history', { channel, limit: 10 });
      assert.deepEqual(page, {
        epoch,
        offset: 4,
        publications: [1, 2, 3, 4].map((i) => ({ offset: i, data: { i } })),
      });
      assert.deepEqual(
        (await ok('history', { channel, limit: 2, reverse: true })).publications.map((p: Json) => p.offset),
        [4, 3],
      );
      assert.deepEqual(
        (await ok('history', { channel, limit: 10, since: { epoch, offset: 3 } })).publications.map((p: Json) => p.offset),
        [4],
      );
    });

    test('presence and presence_stats show subscribed clients', async () => {
      const channel = unique('chat:api-presence');
      const a = await connectWs(h, 'alice', { info: { role: 'mod' } });
      await a.call('subscribe', { channel });
      const b = await connectWs(h, 'bob');
      await b.call('subscribe', { channel });
      const presence = await ok('presence', { channel });
      assert.deepEqual(Object.keys(presence.clients).sort(), [a.clientId, b.clientId].sort());
      assert.deepEqual(presence.clients[a.clientId], { client: a.clientId, user: 'alice', conn_info: { role: 'mod' } });
      assert.equal(presence.clients[b.clientId].user, 'bob');
      assert.deepEqual(await ok('presence_stats', { channel }), { num_clients: 2, num_users: 2 });
      await b.close();
      await a.push('leave', channel);
      assert.deepEqual(await ok('presence_stats', { channel }), { num_clients: 1, num_users: 1 });
      assert.deepEqual(await ok('presence_stats', { channel: unique('chat:empty') }), { num_clients: 0, num_users: 0 });
    });

    test('channels lists active channels with client counts, filtered by prefix', async () => {
      const prefix = unique('chat:api-ch');
      const a = await connectWs(h, 'alice');
      const b = await connectWs(h, 'bob');
      await a.call('subscribe', { channel: `${prefix}-one` });
      await b.call('subscribe', { channel: `${prefix}-one` });
      await a.call('subscribe', { channel: `${prefix}-two` });
      const other = unique('news-other');
      await a.call('subscribe', { channel: other });

      const all = await ok('channels', {});
      assert.deepEqual(all.channels[`${prefix}-one`], { num_clients: 2 });
      assert.deepEqual(all.channels[`${prefix}-two`], { num_clients: 1 });
      assert.deepEqual(all.channels[other], { num_clients: 1 });

      const filtered = await ok('channels', { prefix });
      assert.deepEqual(filtered.channels, {
        [`${prefix}-one`]: { num_clients: 2 },
        [`${prefix}-two`]: { num_clients: 1 },
      });

      await b.close();
      await a.close();
      // cleanup after a close may lag the close handshake: wait for it
      await eventually(async () => {
        const body = await ok('channels', { prefix });
        return Object.keys(body.channels).length === 0 ? true : undefined;
      }, 'channels without subscribers to disappear');
    });

    test('disconnect closes every connection of the user with 3503', async () => {
      const user = unique('dave');
      const d1 = await connectWs(h, user);
      const d2 = await connectWs(h, user);
      const bystander = await connectWs(h, 'erin');
      const result = await ok('disconnect', { user });
      assert.equal(result.disconnected, 2);
      assert.equal((await d1.waitClose()).code, 3503);
      assert.equal((await d2.waitClose()).code, 3503);
      assert.deepEqual(await bystander.call('ping'), {}, 'other users keep their connection');
      await eventually(
        async () => ((await ok('disconnect', { user })).disconnected === 0 ? true : undefined),
        'a second disconnect to find no connection',
      );
    });

    test('disconnect reaches long-poll sessions too: disconnect 3503, then the session is gone', async () => {
      const user = unique('gina');
      const open = await http(`${h.url}/connection/poll/open`, { body: { token: await h.token(user), channels: [unique('chat:dc')] } });
      assert.equal(open.status, 200, open.text);
      const channels = await ok('channels', {});
      assert.ok(Object.keys(channels.channels).length > 0, 'long-poll subscriptions are listed');
      assert.equal((await ok('disconnect', { user })).disconnected, 1);
      const poll = await http(`${h.url}/connection/poll`, {
        headers: { 'herald-session': open.body.session },
        body: { seq: open.body.seq },
      });
      if (poll.status === 200) {
        const last = poll.body.messages[poll.body.messages.length - 1];
        assert.equal(last?.push, 'disconnect', poll.text);
        assert.equal(last.code, 3503);
        assert.equal(last.reconnect, false);
      } else {
        assert.equal(poll.status, 404, poll.text);
        assert.equal(poll.body?.error?.code, 'session_unknown');
      }
    });

    test('disconnect with reconnect closes with a reconnect code (3000-3499)', async () => {
      const user = unique('frank');
      const c = await connectWs(h, user);
      assert.equal((await ok('disconnect', { user, reconnect: true })).disconnected, 1);
      const { code } = await c.waitClose();
      assert.ok(code >= 3000 && code < 3500, `code ${code} should tell the client to reconnect`);
    });

    test('info answers version, uptime and nodes', async () => {
      const info = await ok('info', {});
      assert.equal(info.version, '0.1.0');
      assert.equal(typeof info.uptime_ms, 'number');
      assert.ok(info.uptime_ms >= 0);
      assert.ok(info.nodes !== undefined, 'nodes is present');
    });
  });

  describe('authentication and scopes', () => {
    test('missing key is 401 unauthorized', async () => {
      const answer = await http(`${h.url}/api/publish`, { body: { channel: 'news', data: 1 } });
      assertError(answer, 401, 'unauthorized');
    });

    test('wrong key is 401 unauthorized, in either header', async () => {
      assertError(await api('info', {}, 'wrong-key'), 401, 'unauthorized');
      assertError(
        await http(`${h.url}/api/info`, { headers: { 'x-api-key': 'wrong-key' }, body: {} }),
        401,
        'unauthorized',
      );
    });

    test('X-API-Key header is accepted', async () => {
      const answer = await http(`${h.url}/api/info`, { headers: { 'x-api-key': ADMIN }, body: {} });
      assert.equal(answer.status, 200, answer.text);
    });

    test('a key in the query string is not accepted', async () => {
      const answer = await http(`${h.url}/api/info?key=${ADMIN}&api_key=${ADMIN}`, { body: {} });
      assertError(answer, 401, 'unauthorized');
    });

    test('publish-only key: publish 200, history/presence/disconnect 403', async () => {
      const channel = unique('chat:scoped');
      await ok('publish', { channel, data: 1 }, PUBLISHER);
      await ok('broadcast', { channels: [channel], data: 2 }, PUBLISHER);
      assertError(await api('history', { channel, limit: 10 }, PUBLISHER), 403, 'forbidden');
      assertError(await api('presence', { channel }, PUBLISHER), 403, 'forbidden');
      assertError(await api('channels', {}, PUBLISHER), 403, 'forbidden');
      assertError(await api('disconnect', { user: 'x' }, PUBLISHER), 403, 'forbidden');
    });

    test('read-only key: history 200, publish and disconnect 403', async () => {
      const channel = unique('chat:scoped-read');
      await ok('history', { channel }, READER);
      await ok('info', {}, READER);
      assertError(await api('publish', { channel, data: 1 }, READER), 403, 'forbidden');
      assertError(await api('disconnect', { user: 'x' }, READER), 403, 'forbidden');
      // the refused publish did not happen
      assert.equal((await ok('history', { channel })).offset, 0);
    });
  });

  describe('bad requests', () => {
    test('body not matching the method schema is 400 bad_request', async () => {
      assertError(await api('publish', { channel: 'news' }), 400, 'bad_request');
      assertError(await api('publish', { channel: 'news', data: 1, extra: true }), 400, 'bad_request');
      assertError(await api('publish', [1, 2]), 400, 'bad_request');
      assertError(await api('history', { channel: 'news', limit: -1 }), 400, 'bad_request');
      assertError(await api('disconnect', {}), 400, 'bad_request');
    });

    test('invalid channel is 400 invalid_channel, unknown namespace 400 unknown_namespace', async () => {
      for (const channel of ['bad ns:x', 'chat:a b', 'chat:nul\u0000', 'x'.repeat(256)]) {
        assertError(await api('publish', { channel, data: 1 }), 400, 'invalid_channel');
      }
      assertError(await api('history', { channel: 'chat:a b' }), 400, 'invalid_channel');
      assertError(await api('publish', { channel: 'nope:x', data: 1 }), 400, 'unknown_namespace');
    });

    test('non-JSON body is 400 invalid_json; a non-JSON content type is 415', async () => {
      const headers = { authorization: `Bearer ${ADMIN}` };
      assertError(
        await http(`${h.url}/api/publish`, { headers: { ...headers, 'content-type': 'application/json' }, body: '{"channel":' }),
        400,
        'invalid_json',
      );
      const text = await http(`${h.url}/api/publish`, {
        headers: { ...headers, 'content-type': 'text/plain' },
        body: '{"channel":"news","data":1}',
      });
      assertError(text, 415, 'unsupported_media_type');
    });

    test('__proto__ in the body is rejected and delivers nothing', async () => {
      const channel = unique('chat:api-proto');
      const c = await connectWs(h, 'alice');
      await c.call('subscribe', { channel });
      const answer = await http(`${h.url}/api/publish`, {
        headers: { authorization: `Bearer ${ADMIN}` },
        body: `{"channel":"${channel}","data":{"__proto__":{"polluted":"yes"}}}`,
      });
      assert.equal(answer.status, 400, answer.text);
      await ok('publish', { channel, data: 'sentinel' });
      const pubs = await c.waitMarker(channel, 'sentinel');
      assert.deepEqual(
        pubs.map((p) => p.data),
        ['sentinel'],
      );
      assert.equal(({} as Record<string, unknown>)['polluted'], undefined);
    });

    test('oversize body is 413 payload_too_large', async () => {
      const answer = await api('publish', { channel: 'news', data: 'x'.repeat(70 * 1024) });
      assertError(answer, 413, 'payload_too_large');
    });

    test('unknown API method is 404 not_found', async () => {
      assertError(await api('frobnicate', {}), 404, 'not_found');
    });
  });

  describe('other endpoints', () => {
    test('GET /health is 200 {"status":"ok"}', async () => {
      const answer = await http(`${h.url}/health`);
      assert.equal(answer.status, 200);
      assert.deepEqual(answer.body, { status: 'ok' });
    });

    test('GET /metrics on the internal listener is Prometheus text with herald_connections', async () => {
      const c = await connectWs(h, 'alice');
      assert.ok(c.isOpen);
      const answer = await http(`http://127.0.0.1:${h.server.adminPort}/metrics`);
      assert.equal(answer.status, 200);
      assert.match(answer.headers.get('content-type') ?? '', /^text\/plain/);
      assert.match(answer.text, /^# HELP herald_connections /m);
      assert.match(answer.text, /^# TYPE herald_connections (gauge|counter|untyped)$/m);
      const samples = [...answer.text.matchAll(/^herald_connections(?:\{[^}]*\})? (\S+)$/gm)];
      assert.ok(samples.length > 0, 'no herald_connections sample');
      const total = samples.reduce((sum, m) => sum + Number(m[1]), 0);
      assert.ok(total >= 1, `herald_connections is ${total} with a connection open`);
      for (const line of answer.text.split('\n')) {
        if (line === '' || line.startsWith('#')) continue;
        assert.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? [-+0-9.eEInfNa]+( \d+)?$/, `not a sample line: ${line}`);
      }
    });
  });
});
