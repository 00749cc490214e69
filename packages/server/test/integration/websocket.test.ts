/**
 * The WebSocket transport against docs/protocol.md, over real sockets.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PROTOCOL_VERSION } from '@herald/protocol';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, eventually, openWs, signToken, unique, type Json, type WsClient } from '../helpers/herald-ws.ts';

const offsets = (pubs: Json[]): number[] => pubs.map((p) => p.offset);

describe('websocket', { timeout: 30000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald();
  });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    await h.close();
  });

  /** Publishes through the server API; asserts 200. */
  async function apiPublish(channel: string, data: unknown): Promise<Json> {
    const answer = await h.api('publish', { channel, data });
    assert.equal(answer.status, 200, `API publish answered ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer.body;
  }

  describe('connect and tokens', () => {
    test('connect with a valid token answers client id, version, protocol, ping and ttl', async () => {
      const c = await openWs(h.wsUrl);
      const result = await c.connect(await h.token('alice'));
      assert.equal(typeof result.client, 'string');
      assert.ok(result.client.length > 0, 'client id is empty');
      assert.equal(typeof result.version, 'string');
      assert.equal(result.protocol, PROTOCOL_VERSION, 'the protocol major version the server speaks');
      assert.equal(result.ping, 25, 'ping is ping.intervalMs in seconds (default 25)');
      assert.equal(typeof result.ttl, 'number', 'a token with exp gives ttl');
      assert.ok(result.ttl > 3500 && result.ttl <= 3600, `ttl ${result.ttl} should be about 3600 s`);
      const other = await connectWs(h, 'alice');
      assert.notEqual(other.clientId, c.clientId, 'two connections share a client id');
    });

    test('token signed with another secret closes 3500', async () => {
      const c = await openWs(h.wsUrl);
      const token = await signToken('another-secret-of-at-least-32-bytes!!', {
        sub: 'mallory',
        exp: Math.floor(Date.now() / 1000) + 3600,
      });
      c.send({ id: 1, method: 'connect', params: { token } });
      const closed = await c.waitClose();
      assert.equal(closed.code, 3500);
      assert.equal(c.frames.filter((f) => f.result !== undefined).length, 0, 'a forged token got a result');
    });

    test('unsigned (alg none) and garbage tokens close 3500', async () => {
      const header = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url');
      const payload = Buffer.from(JSON.stringify({ sub: 'mallory', exp: Math.floor(Date.now() / 1000) + 3600 })).toString(
        'base64url',
      );
      for (const token of [`${header}.${payload}.`, 'not-a-jwt', `${header}.${payload}`]) {
        const c = await openWs(h.wsUrl);
        c.send({ id: 1, method: 'connect', params: { token } });
        const closed = await c.waitClose();
        assert.equal(closed.code, 3500, `token ${token} closed with ${closed.code}`);
      }
    });

    test('expired token closes 3003', async () => {
      const c = await openWs(h.wsUrl);
      // expired a minute ago: well beyond the 5 s leeway
      c.send({ id: 1, method: 'connect', params: { token: await h.token('alice', {}, -60) } });
      const closed = await c.waitClose();
      assert.equal(closed.code, 3003);
    });

    test('a token signed with an algorithm outside auth.algorithms closes 3500', async () => {
      // the right secret, but HS512: the token header must not choose the algorithm
      const token = await signToken(h.hmacSecret, { sub: 'alice', exp: Math.floor(Date.now() / 1000) + 3600 }, 'HS512');
      const c = await openWs(h.wsUrl);
      c.send({ id: 1, method: 'connect', params: { token } });
      assert.equal((await c.waitClose()).code, 3500);
    });

    test('a token without sub closes 3500', async () => {
      const token = await signToken(h.hmacSecret, { exp: Math.floor(Date.now() / 1000) + 3600 });
      const c = await openWs(h.wsUrl);
      c.send({ id: 1, method: 'connect', params: { token } });
      assert.equal((await c.waitClose()).code, 3500);
    });

    test('a token without exp connects without ttl', async () => {
      const token = await signToken(h.hmacSecret, { sub: 'alice' });
      const c = await openWs(h.wsUrl);
      const result = await c.connect(token);
      assert.equal(typeof result.client, 'string');
      assert.equal(result.ttl, undefined);
    });

    test('exp within auth.leewayMs (5 s) is still accepted', async () => {
      const token = await signToken(h.hmacSecret, { sub: 'alice', exp: Math.floor(Date.now() / 1000) - 2 });
      const c = await openWs(h.wsUrl);
      const result = await c.connect(token);
      assert.equal(typeof result.client, 'string');
    });

    test('nbf in the future (beyond leeway) is refused and does not connect', async () => {
      const now = Math.floor(Date.now() / 1000);
      const token = await signToken(h.hmacSecret, { sub: 'alice', nbf: now + 600, exp: now + 3600 });
      const c = await openWs(h.wsUrl);
      c.send({ id: 1, method: 'connect', params: { token } });
      const { code } = await c.waitClose();
      // not yet valid is not expired: an invalid token
      assert.equal(code, 3500);
      assert.equal(c.frames.filter((f) => f.result !== undefined).length, 0);
    });

    test('commands before connect get error 115, connect still works after', async () => {
      const c = await openWs(h.wsUrl);
      assert.equal(await c.callError('subscribe', { channel: 'public:before' }), 115);
      assert.equal(await c.callError('ping'), 115);
      assert.equal(await c.callError('publish', { channel: 'public:before', data: 1 }), 115);
      const result = await c.connect(await h.token('alice'));
      assert.equal(typeof result.client, 'string');
      assert.ok(c.isOpen);
    });

    test('second connect gets error 114', async () => {
      const c = await connectWs(h, 'alice');
      assert.equal(await c.callError('connect', { token: await h.token('alice') }), 114);
    });

    test('anonymous connection may subscribe only to allowAnonymous namespaces', async () => {
      const c = await openWs(h.wsUrl);
      const result = await c.connect();
      assert.equal(typeof result.client, 'string');
      const sub = await c.call('subscribe', { channel: unique('public:anon') });
      assert.equal(sub.recoverable, true);
      assert.equal(await c.callError('subscribe', { channel: unique('news') }), 118, 'default namespace: anonymous_not_allowed');
      assert.equal(await c.callError('subscribe', { channel: unique('chat:anon') }), 118, 'chat namespace: anonymous_not_allowed');
    });

    test('anonymous client publish into public: is delivered with user ""', async () => {
      const channel = unique('public:anon-pub');
      const reader = await connectWs(h, null);
      await reader.call('subscribe', { channel });
      const writer = await connectWs(h, null);
      await writer.call('publish', { channel, data: { n: 1 } });
      const [pub] = await reader.waitPublications(channel, 1);
      assert.deepEqual(pub.data, { n: 1 });
      assert.deepEqual(pub.info, { client: writer.clientId, user: '' });
    });
  });

  describe('commands', () => {
    test('ping answers {}', async () => {
      const c = await connectWs(h, 'alice');
      const reply = await c.request('ping');
      assert.deepEqual(reply, { id: reply.id, result: {} });
    });

    test('pong without id gets no reply; ids up to 2^31-1 are echoed', async () => {
      const c = await connectWs(h, 'alice');
      c.send({ method: 'pong' });
      c.send({ id: 2 ** 31 - 1, method: 'ping' });
      const reply = await c.reply(2 ** 31 - 1);
      assert.deepEqual(reply, { id: 2 ** 31 - 1, result: {} });
      // the pong produced nothing: the only frames are the connect reply and this one
      assert.equal(c.frames.filter((f) => f.push === undefined).length, 2, JSON.stringify(c.frames));
      assert.ok(c.isOpen);
      c.send({ id: 2 ** 31, method: 'ping' });
      assert.equal((await c.waitClose()).code, 3501, 'id above 2^31-1 is not a valid id');
    });

    test('unsubscribe from a channel not subscribed gets 110', async () => {
      const c = await connectWs(h, 'alice');
      assert.equal(await c.callError('unsubscribe', { channel: unique('chat:never') }), 110);
    });

    test('unknown method gets 104, unknown params key gets 107, connection stays', async () => {
      const c = await connectWs(h, 'alice');
      assert.equal(await c.callError('frobnicate', {}), 104);
      assert.equal(await c.callError('subscribe', { channel: 'chat:x', colour: 'red' }), 107);
      assert.equal(await c.callError('subscribe', {}), 107);
      assert.deepEqual(await c.call('ping'), {});
    });

    test('subscribe, API publish and client publish: offsets 1..n in order', async () => {
      const channel = unique('chat:room');
      const a = await connectWs(h, 'alice');
      const sub = await a.call('subscribe', { channel });
      assert.equal(sub.recoverable, true);
      assert.equal(typeof sub.epoch, 'string');
      assert.ok(sub.epoch.length > 0);
      assert.equal(sub.offset, 0, 'a new stream is at offset 0');
      assert.equal(sub.was_recovering, false);
      assert.equal(sub.recovered, false);

      for (let i = 1; i <= 3; i++) {
        const pos = await apiPublish(channel, { n: i });
        assert.deepEqual(pos, { epoch: sub.epoch, offset: i });
      }
      const b = await connectWs(h, 'bob');
      const own = await b.call('publish', { channel, data: { n: 4, text: 'hi' } });
      assert.deepEqual(own, { epoch: sub.epoch, offset: 4 });

      const pubs = await a.waitPublications(channel, 4);
      assert.deepEqual(offsets(pubs), [1, 2, 3, 4]);
      assert.deepEqual(
        pubs.map((p) => p.data),
        [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4, text: 'hi' }],
      );
      for (const p of pubs.slice(0, 3)) assert.equal(p.info, undefined, 'API publications carry no info');
      assert.deepEqual(pubs[3].info, { client: b.clientId, user: 'bob' });
      // the subscribe reply came before every publication
      const replyIndex = a.frames.findIndex((f) => f.result !== undefined && f.result.epoch === sub.epoch);
      const firstPub = a.frames.findIndex((f) => f.push === 'publication');
      assert.ok(replyIndex !== -1 && replyIndex < firstPub);
    });

    test('publication data may be any JSON value', async () => {
      const channel = unique('chat:any');
      const a = await connectWs(h, 'alice');
      await a.call('subscribe', { channel });
      const values = [null, 0, false, '', 'text', [1, 'two', null], { nested: { deep: [true] } }, 1.5e300];
      for (const data of values) await a.call('publish', { channel, data });
      const pubs = await a.waitPublications(channel, values.length);
      assert.deepEqual(
        pubs.map((p) => p.data),
        values,
      );
    });

    test('publisher subscribed to the channel receives its own publication', async () => {
      const channel = unique('chat:self');
      const a = await connectWs(h, 'alice');
      await a.call('subscribe', { channel });
      await a.call('publish', { channel, data: 'mine' });
      const [pub] = await a.waitPublications(channel, 1);
      assert.equal(pub.data, 'mine');
      assert.deepEqual(pub.info, { client: a.clientId, user: 'alice' });
    });

    test('unsubscribe stops delivery', async () => {
      const channel = unique('chat:unsub');
      const a = await connectWs(h, 'alice');
      await a.call('subscribe', { channel });
      await apiPublish(channel, 1);
      await a.waitPublications(channel, 1);
      assert.deepEqual(await a.call('unsubscribe', { channel }), {});
      await apiPublish(channel, 2);
      // a second subscription on another channel proves delivery continues
      const probe = unique('chat:probe');
      await a.call('subscribe', { channel: probe });
      await apiPublish(probe, 'marker');
      await a.waitMarker(probe, 'marker');
      assert.deepEqual(offsets(a.publications(channel)), [1]);
    });

    test('subscribing twice gets 105', async () => {
      const channel = unique('chat:twice');
      const a = await connectWs(h, 'alice');
      await a.call('subscribe', { channel });
      assert.equal(await a.callError('subscribe', { channel }), 105);
    });

    test('client publish where clientPublish is off gets 103 and delivers nothing', async () => {
      for (const channel of [unique('news'), unique('nohistory:n')]) {
        const reader = await connectWs(h, 'reader');
        await reader.call('subscribe', { channel });
        const writer = await connectWs(h, 'writer');
        assert.equal(await writer.callError('publish', { channel, data: { evil: true } }), 103, channel);
        await apiPublish(channel, 'sentinel');
        const pubs = await reader.waitMarker(channel, 'sentinel');
        assert.deepEqual(
          pubs.map((p) => p.data),
          ['sentinel'],
          `${channel}: only the sentinel may arrive`,
        );
      }
    });

    test('unknown namespace gets 102', async () => {
      const c = await connectWs(h, 'alice');
      assert.equal(await c.callError('subscribe', { channel: 'nope:x' }), 102);
      assert.equal(await c.callError('publish', { channel: 'nope:x', data: 1 }), 102);
      assert.equal(await c.callError('history', { channel: 'nope:x' }), 102);
      assert.equal(await c.callError('presence', { channel: 'nope:x' }), 102);
    });

    test('invalid channel names get 112', async () => {
      const c = await connectWs(h, 'alice');
      const bad = [
        'chat:has space',
        'chat:nul\u0000byte',
        'chat:' + 'x'.repeat(251), // 256 bytes
        'x'.repeat(256),
        'bad ns:x',
        'Chat:upper-namespace',
        'chat:pipe|x',
        'chat:caf\u00e9',
        'chat:',
        ':x',
      ];
      for (const channel of bad) {
        assert.equal(await c.callError('subscribe', { channel }), 112, `subscribe ${JSON.stringify(channel)}`);
        assert.equal(await c.callError('publish', { channel, data: 1 }), 112, `publish ${JSON.stringify(channel)}`);
      }
      // 255 bytes is the documented maximum and is accepted
      const longest = 'chat:' + 'y'.repeat(250);
      assert.equal(Buffer.byteLength(longest), 255);
      const sub = await c.call('subscribe', { channel: longest });
      assert.equal(sub.recoverable, true);
      // only the first ':' splits
      const nested = unique('chat:room:1/a@b=c,d.e');
      assert.equal((await c.call('subscribe', { channel: nested })).recoverable, true);
    });

    test('history: limit, since, reverse', async () => {
      const channel = unique('chat:hist');
      const c = await connectWs(h, 'alice');
      const sub = await c.call('subscribe', { channel });
      for (let i = 1; i <= 5; i++) await apiPublish(channel, { n: i });
      await c.waitPublications(channel, 5);

      const position = await c.call('history', { channel });
      assert.deepEqual(position, { epoch: sub.epoch, offset: 5, publications: [] }, 'default limit 0: position only');

      const first = await c.call('history', { channel, limit: 3 });
      assert.equal(first.epoch, sub.epoch);
      assert.equal(first.offset, 5);
      assert.deepEqual(offsets(first.publications), [1, 2, 3], 'limit without reverse: oldest first');
      assert.deepEqual(first.publications[0].data, { n: 1 });

      const all = await c.call('history', { channel, limit: 100 });
      assert.deepEqual(offsets(all.publications), [1, 2, 3, 4, 5]);

      const newest = await c.call('history', { channel, limit: 2, reverse: true });
      assert.deepEqual(offsets(newest.publications), [5, 4], 'reverse: newest first');

      const since = await c.call('history', { channel, limit: 100, since: { epoch: sub.epoch, offset: 2 } });
      assert.deepEqual(offsets(since.publications), [3, 4, 5]);
      assert.deepEqual(
        since.publications.map((p: Json) => p.data),
        [{ n: 3 }, { n: 4 }, { n: 5 }],
      );

      const sinceLimited = await c.call('history', { channel, limit: 2, since: { epoch: sub.epoch, offset: 2 } });
      assert.deepEqual(offsets(sinceLimited.publications), [3, 4]);

      const upToDate = await c.call('history', { channel, limit: 10, since: { epoch: sub.epoch, offset: 5 } });
      assert.deepEqual(upToDate.publications, []);
    });

    test('history carries publisher info for client publications', async () => {
      const channel = unique('chat:hist-info');
      const c = await connectWs(h, 'alice');
      await c.call('subscribe', { channel });
      await c.call('publish', { channel, data: 'x' });
      const page = await c.call('history', { channel, limit: 10 });
      assert.deepEqual(page.publications, [{ offset: 1, data: 'x', info: { client: c.clientId, user: 'alice' } }]);
    });
  });

  describe('presence', () => {
    test('presence, presence_stats and join/leave pushes with two clients', async () => {
      const channel = unique('chat:presence');
      const a = await connectWs(h, 'alice', { info: { color: 'red' } });
      await a.call('subscribe', { channel });
      const b = await connectWs(h, 'bob');
      await b.call('subscribe', { channel });

      const join = await a.push('join', channel, (f) => f.info?.client === b.clientId);
      assert.deepEqual(join.info, { client: b.clientId, user: 'bob' });

      const presence = await a.call('presence', { channel });
      assert.deepEqual(Object.keys(presence.clients).sort(), [a.clientId, b.clientId].sort());
      assert.deepEqual(presence.clients[a.clientId], { client: a.clientId, user: 'alice', conn_info: { color: 'red' } });
      assert.equal(presence.clients[b.clientId].user, 'bob');
      assert.equal(presence.clients[b.clientId].client, b.clientId);

      assert.deepEqual(await b.call('presence_stats', { channel }), { num_clients: 2, num_users: 2 });

      // a second connection of the same user: 3 clients, 2 users
      const b2 = await connectWs(h, 'bob');
      await b2.call('subscribe', { channel });
      await a.push('join', channel, (f) => f.info?.client === b2.clientId);
      assert.deepEqual(await a.call('presence_stats', { channel }), { num_clients: 3, num_users: 2 });

      await b2.call('unsubscribe', { channel });
      const leave = await a.push('leave', channel, (f) => f.info?.client === b2.clientId);
      assert.deepEqual(leave.info, { client: b2.clientId, user: 'bob' });
      assert.deepEqual(await a.call('presence_stats', { channel }), { num_clients: 2, num_users: 2 });
    });

    test('no join/leave pushes where joinLeave is off', async () => {
      const channel = unique('public:quiet');
      const a = await connectWs(h, 'alice');
      await a.call('subscribe', { channel });
      const b = await connectWs(h, 'bob');
      await b.call('subscribe', { channel });
      await b.close();
      await eventually(async () => {
        const stats = await h.api('presence_stats', { channel });
        return stats.body.num_clients === 1 ? true : undefined;
      }, 'bob to leave presence');
      await h.api('publish', { channel, data: 'marker' });
      await a.waitMarker(channel, 'marker');
      assert.deepEqual(
        a.frames.filter((f) => f.push === 'join' || f.push === 'leave'),
        [],
      );
    });

    test('presence is cleaned when a socket closes (graceful and abrupt)', async () => {
      const channel = unique('chat:presence-close');
      const a = await connectWs(h, 'alice');
      await a.call('subscribe', { channel });
      const b = await connectWs(h, 'bob');
      await b.call('subscribe', { channel });
      const c = await connectWs(h, 'carol');
      await c.call('subscribe', { channel });
      assert.equal((await a.call('presence_stats', { channel })).num_clients, 3);

      await b.close();
      const leaveB = await a.push('leave', channel, (f) => f.info?.client === b.clientId);
      assert.equal(leaveB.info.user, 'bob');

      c.ws.terminate(); // TCP gone without a close frame
      const leaveC = await a.push('leave', channel, (f) => f.info?.client === c.clientId);
      assert.equal(leaveC.info.user, 'carol');

      const presence = await a.call('presence', { channel });
      assert.deepEqual(Object.keys(presence.clients), [a.clientId]);
      assert.deepEqual(await a.call('presence_stats', { channel }), { num_clients: 1, num_users: 1 });
    });
  });

  describe('recovery', () => {
    test('resubscribe with recover gets exactly the missed publications in order, then live ones', async () => {
      const channel = unique('chat:recover');
      const first = await connectWs(h, 'alice');
      const sub = await first.call('subscribe', { channel });
      for (let i = 1; i <= 3; i++) await apiPublish(channel, { n: i });
      const seen = await first.waitPublications(channel, 3);
      const last = seen[seen.length - 1];
      await first.close();

      for (let i = 4; i <= 6; i++) await apiPublish(channel, { n: i });

      const second = await connectWs(h, 'alice');
      const reply = await second.call('subscribe', { channel, recover: true, epoch: sub.epoch, offset: last.offset });
      assert.deepEqual(reply, { recoverable: true, epoch: sub.epoch, offset: 6, was_recovering: true, recovered: true });

      const missed = await second.waitPublications(channel, 3);
      assert.deepEqual(offsets(missed), [4, 5, 6]);
      assert.deepEqual(
        missed.map((p) => p.data),
        [{ n: 4 }, { n: 5 }, { n: 6 }],
      );
      await apiPublish(channel, 'live');
      const all = await second.waitMarker(channel, 'live');
      assert.deepEqual(offsets(all), [4, 5, 6, 7], 'no gap, no duplicate, then live');
    });

    test('recovery racing concurrent publishes has no gap and no duplicate', async () => {
      const channel = unique('chat:recover-race');
      const first = await connectWs(h, 'alice');
      const sub = await first.call('subscribe', { channel });
      for (let i = 1; i <= 5; i++) await apiPublish(channel, i);
      await first.waitPublications(channel, 5);
      await first.close();
      for (let i = 6; i <= 10; i++) await apiPublish(channel, i);

      const second = await connectWs(h, 'alice');
      const publishing = (async () => {
        for (let i = 11; i <= 40; i++) await apiPublish(channel, i);
      })();
      const reply = await second.call('subscribe', { channel, recover: true, epoch: sub.epoch, offset: 5 });
      await publishing;
      assert.equal(reply.recovered, true);
      assert.equal(reply.epoch, sub.epoch);
      assert.ok(reply.offset >= 10 && reply.offset <= 40, `offset ${reply.offset}`);
      await apiPublish(channel, 'end');
      const all = await second.waitMarker(channel, 'end');
      const replyIndex = second.frames.findIndex((f) => f.result?.was_recovering === true);
      const firstPub = second.frames.findIndex((f) => f.push === 'publication');
      assert.ok(replyIndex !== -1 && replyIndex < firstPub, 'the subscribe reply comes before any publication');
      const expected = Array.from({ length: 36 }, (_, i) => i + 6);
      assert.deepEqual(offsets(all), expected);
      assert.deepEqual(
        all.slice(0, -1).map((p) => p.data),
        expected.slice(0, -1),
      );
    });

    test('recovery with a wrong epoch answers recovered false and replays nothing', async () => {
      const channel = unique('chat:recover-epoch');
      const a = await connectWs(h, 'alice');
      const sub = await a.call('subscribe', { channel });
      await apiPublish(channel, 1);
      await apiPublish(channel, 2);
      await a.waitPublications(channel, 2);
      await a.close();

      const b = await connectWs(h, 'alice');
      const wrongEpoch = sub.epoch === 'wrongEpoch1' ? 'wrongEpoch2' : 'wrongEpoch1';
      const reply = await b.call('subscribe', { channel, recover: true, epoch: wrongEpoch, offset: 1 });
      assert.deepEqual(reply, { recoverable: true, epoch: sub.epoch, offset: 2, was_recovering: true, recovered: false });
      await apiPublish(channel, 'live');
      const pubs = await b.waitMarker(channel, 'live');
      assert.deepEqual(offsets(pubs), [3], 'nothing replayed, live continues');
    });

    test('recovery with an offset ahead of the stream answers recovered false', async () => {
      const channel = unique('chat:recover-ahead');
      const a = await connectWs(h, 'alice');
      const sub = await a.call('subscribe', { channel });
      await apiPublish(channel, 1);
      await a.waitPublications(channel, 1);
      const b = await connectWs(h, 'alice');
      const reply = await b.call('subscribe', { channel, recover: true, epoch: sub.epoch, offset: 50 });
      assert.equal(reply.was_recovering, true);
      assert.equal(reply.recovered, false);
      assert.equal(reply.offset, 1);
    });

    test('a channel without history is not recoverable', async () => {
      const channel = unique('nohistory:x');
      const a = await connectWs(h, 'alice');
      const sub = await a.call('subscribe', { channel });
      assert.equal(sub.recoverable, false);
      assert.equal(sub.offset, 0);
      const pos = await apiPublish(channel, 'p');
      assert.equal(pos.offset, 0, 'publish without history has offset 0');
      const [pub] = await a.waitPublications(channel, 1);
      assert.equal(pub.offset, 0);
      const b = await connectWs(h, 'alice');
      const reply = await b.call('subscribe', { channel, recover: true, epoch: 'abc', offset: 0 });
      assert.equal(reply.recoverable, false);
      assert.equal(reply.recovered, false);
    });
  });

  describe('protocol violations', () => {
    const violations: Array<[string, string]> = [
      ['malformed JSON', '{"id":1,"method":"ping"'],
      ['not an object', '[1,2,3]'],
      ['a JSON string', '"connect"'],
      ['no id', '{"method":"ping"}'],
      ['id zero', '{"id":0,"method":"ping"}'],
      ['id not an integer', '{"id":"1","method":"ping"}'],
    ];
    for (const [name, text] of violations) {
      test(`${name} closes 3501 (before and after connect)`, async () => {
        const fresh = await openWs(h.wsUrl);
        fresh.sendRaw(text);
        assert.equal((await fresh.waitClose()).code, 3501);
        const afterConnect = await connectWs(h, 'alice');
        afterConnect.sendRaw(text);
        assert.equal((await afterConnect.waitClose()).code, 3501);
      });
    }

    test('invalid UTF-8 in a text frame closes 1007', async () => {
      const c = await connectWs(h, 'alice');
      // ws sends a Buffer with binary: false as a text frame without validating it
      c.ws.send(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), { binary: false });
      assert.equal((await c.waitClose()).code, 1007);
    });

    for (const [name, payload] of [
      ['__proto__', '{"__proto__":{"polluted":"yes"}}'],
      ['constructor.prototype', '{"constructor":{"prototype":{"polluted":"yes"}}}'],
    ] as const) {
      test(`${name} in publish data is rejected (107 or 3501) and delivers nothing`, async () => {
        const channel = unique('chat:proto');
        const reader = await connectWs(h, 'reader');
        await reader.call('subscribe', { channel });
        const writer = await connectWs(h, 'writer');
        const id = writer.newId();
        writer.sendRaw(`{"id":${id},"method":"publish","params":{"channel":"${channel}","data":${payload}}}`);
        const outcome = await writer.waitUntil(
          () => {
            const reply = writer.frames.find((f) => f.id === id);
            if (reply !== undefined) return { reply };
            return writer.closeInfo === undefined ? undefined : { closed: writer.closeInfo };
          },
          'publish reply or close',
        );
        if ('reply' in outcome) assert.equal(outcome.reply.error?.code, 107, `got ${JSON.stringify(outcome.reply)}`);
        else assert.equal(outcome.closed.code, 3501);

        await apiPublish(channel, 'sentinel');
        const pubs = await reader.waitMarker(channel, 'sentinel');
        assert.deepEqual(
          pubs.map((p) => p.data),
          ['sentinel'],
        );
        assert.equal(({} as Record<string, unknown>)['polluted'], undefined, 'Object.prototype polluted');
      });
    }
  });

  describe('recovery limits', () => {
    let small: TestHerald;
    before(async () => {
      small = await startHerald({
        channels: {
          namespaces: [
            { name: 'small', historySize: 3, clientPublish: true },
            { name: 'short', historyTtlMs: 200 },
            { name: 'quiet', presence: false },
          ],
        },
      });
    });
    after(async () => {
      closeAllClients();
      await small.close();
    });

    async function publish(channel: string, data: unknown): Promise<void> {
      const answer = await small.api('publish', { channel, data });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
    }

    test('a gap larger than historySize answers recovered false; within it recovers', async () => {
      const channel = unique('small:trim');
      const a = await connectWs(small, 'alice');
      const sub = await a.call('subscribe', { channel });
      for (let i = 1; i <= 10; i++) await publish(channel, i);
      await a.waitPublications(channel, 10);

      const history = await a.call('history', { channel, limit: 100 });
      assert.deepEqual(offsets(history.publications), [8, 9, 10], 'history keeps historySize publications');

      const lost = await connectWs(small, 'alice');
      const reply = await lost.call('subscribe', { channel, recover: true, epoch: sub.epoch, offset: 2 });
      assert.equal(reply.was_recovering, true);
      assert.equal(reply.recovered, false, 'publications 3..7 were trimmed');
      assert.equal(reply.offset, 10);
      await publish(channel, 'live');
      assert.deepEqual(offsets(await lost.waitMarker(channel, 'live')), [11], 'no partial replay');

      const ok = await connectWs(small, 'alice');
      const okReply = await ok.call('subscribe', { channel, recover: true, epoch: sub.epoch, offset: 8 });
      assert.equal(okReply.recovered, true);
      await publish(channel, 'live2');
      assert.deepEqual(offsets(await ok.waitMarker(channel, 'live2')), [9, 10, 11, 12]);
    });

    test('presence where the namespace has it off gets 108 (API: 400 not_available)', async () => {
      const channel = unique('quiet:room');
      const a = await connectWs(small, 'alice');
      await a.call('subscribe', { channel });
      assert.equal(await a.callError('presence', { channel }), 108);
      assert.equal(await a.callError('presence_stats', { channel }), 108);
      const answer = await small.api('presence', { channel });
      assert.equal(answer.status, 400, JSON.stringify(answer.body));
      assert.equal(answer.body.error.code, 'not_available');
    });

    test('publications older than historyTtlMs are not recovered', async () => {
      const channel = unique('short:ttl');
      const a = await connectWs(small, 'alice');
      const sub = await a.call('subscribe', { channel });
      await publish(channel, 1);
      await publish(channel, 2);
      await a.waitPublications(channel, 2);
      await a.close();
      // wait (by observation, not by a fixed sleep) until history has expired
      await eventually(async () => {
        const page = await small.api('history', { channel, limit: 10 });
        return page.status === 200 && page.body.publications.length === 0 ? true : undefined;
      }, 'history to expire');
      const b = await connectWs(small, 'alice');
      const reply = await b.call('subscribe', { channel, recover: true, epoch: sub.epoch, offset: 1 });
      assert.equal(reply.was_recovering, true);
      assert.equal(reply.recovered, false);
      await publish(channel, 'live');
      const pubs = await b.waitMarker(channel, 'live');
      assert.equal(pubs.length, 1, `only the live publication: ${JSON.stringify(pubs)}`);
    });
  });

  describe('audience and issuer', () => {
    let strict: TestHerald;
    before(async () => {
      strict = await startHerald({ auth: { audience: 'herald-test', issuer: 'https://issuer.test' } });
    });
    after(async () => {
      closeAllClients();
      await strict.close();
    });

    test('aud and iss are checked when configured', async () => {
      const exp = Math.floor(Date.now() / 1000) + 3600;
      const good = await openWs(strict.wsUrl);
      await good.connect(await signToken(strict.hmacSecret, { sub: 'a', exp, aud: 'herald-test', iss: 'https://issuer.test' }));
      for (const claims of [
        { sub: 'a', exp, aud: 'other', iss: 'https://issuer.test' },
        { sub: 'a', exp, aud: 'herald-test', iss: 'https://evil.test' },
        { sub: 'a', exp },
      ]) {
        const c = await openWs(strict.wsUrl);
        c.send({ id: 1, method: 'connect', params: { token: await signToken(strict.hmacSecret, claims) } });
        assert.equal((await c.waitClose()).code, 3500, JSON.stringify(claims));
      }
    });
  });

  describe('token expiry on a live connection', () => {
    let quick: TestHerald;
    before(async () => {
      quick = await startHerald({ auth: { leewayMs: 0, expiryGraceMs: 0 } });
    });
    after(async () => {
      closeAllClients();
      await quick.close();
    });

    test('a connection is closed with 3003 once its token expires (after the grace)', async () => {
      const short = await openWs(quick.wsUrl);
      const result = await short.connect(await signToken(quick.hmacSecret, { sub: 'alice', exp: Math.floor(Date.now() / 1000) + 2 }));
      assert.ok(result.ttl >= 0 && result.ttl <= 2, `ttl ${result.ttl}`);
      const long = await connectWs(quick, 'bob');
      await short.call('subscribe', { channel: unique('chat:expiring') });
      const closed = await short.waitClose(10000);
      assert.equal(closed.code, 3003);
      assert.ok(long.isOpen, 'a connection with a valid token stays');
      assert.deepEqual(await long.call('ping'), {});
    });
  });

  describe('shutdown', () => {
    test('graceful shutdown closes WebSocket clients with 3001 (reconnect)', async () => {
      const temp = await startHerald();
      try {
        const c = await connectWs(temp, 'alice');
        await c.call('subscribe', { channel: unique('chat:bye') });
        const stopping = temp.server.shutdown(3000);
        const closed = await c.waitClose();
        assert.equal(closed.code, 3001);
        await stopping;
      } finally {
        await temp.close();
      }
    });
  });

  test('server still serves after all of the above', async () => {
    const c: WsClient = await connectWs(h, 'alice');
    assert.deepEqual(await c.call('ping'), {});
  });
});
