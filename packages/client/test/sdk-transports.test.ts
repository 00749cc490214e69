/**
 * The SDK against a real Herald, once per transport: connect with a token,
 * subscribe, publications from the API and from clients, join/leave,
 * history, presence, errors, terminal codes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startHerald, type TestHerald } from '../../server/test/helpers/herald.ts';
import { recordedClient, recordSubscription, type RecordedClient } from './sdk-helpers.ts';
import { waitUntil } from '../../server/test/helpers/rt-util.ts';
import { HeraldError, sdkCodes, type TransportName } from '../src/index.ts';

const unique = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;

describe('SDK over each transport', { timeout: 60000 }, () => {
  let h: TestHerald;
  const clients: RecordedClient[] = [];

  before(async () => {
    h = await startHerald();
  });
  after(async () => {
    for (const { client } of clients) client.disconnect();
    await h.close();
  });

  function client(options: Parameters<typeof recordedClient>[0]): RecordedClient {
    const recorded = recordedClient({ url: h.url, ...options });
    clients.push(recorded);
    return recorded;
  }

  for (const transport of ['websocket', 'sse', 'long-poll'] as const satisfies readonly TransportName[]) {
    describe(transport, () => {
      test('connect, subscribe, publications (API and client), join/leave, history, presence, disconnect', async () => {
        const channel = unique('chat:sdk');
        const alice = client({ transports: [transport], token: await h.token('alice'), name: 'alice-test' });
        const room = recordSubscription<{ text: string }>(alice.client.subscribe(channel));
        assert.equal(room.sub.state, 'subscribing');
        alice.client.connect();
        assert.equal(alice.client.state, 'connecting');
        const connected = await alice.waitFor('connected');
        assert.equal(connected.transport, transport);
        assert.equal(typeof connected.client, 'string');
        assert.equal(typeof connected.ttl, 'number', 'the token has exp, so the connect result has ttl');
        assert.equal(alice.client.transport, transport);
        const first = await room.waitForSubscribed();
        assert.deepEqual({ ...first, epoch: typeof first.epoch }, { channel, recoverable: true, epoch: 'string', offset: 0, wasRecovering: false, recovered: false, conflated: false });
        assert.equal(room.sub.state, 'subscribed');

        // bob joins over WebSocket: alice sees the join
        const bob = client({ transports: ['websocket'], token: await h.token('bob') });
        const bobRoom = recordSubscription(bob.client.subscribe(channel));
        bob.client.connect();
        await bobRoom.waitForSubscribed();
        await waitUntil(() => room.joins.find((j) => j.info.user === 'bob'), { label: 'join of bob' });

        const published = await h.api('publish', { channel, data: { text: 'from the API' } });
        assert.equal(published.status, 200);
        await room.waitForPublications(1);
        assert.deepEqual(room.publications[0], { channel, offset: 1, data: { text: 'from the API' } });

        const result = await room.sub.publish({ text: 'from alice' });
        assert.deepEqual(result, { epoch: first.epoch, offset: 2 });
        await room.waitForPublications(2);
        const own = room.publications[1]!;
        assert.equal(own.offset, 2);
        assert.deepEqual(own.data, { text: 'from alice' });
        assert.equal(own.info?.user, 'alice');
        await bobRoom.waitForPublications(2);

        const history = await alice.client.history<{ text: string }>(channel, { limit: 10 });
        assert.equal(history.epoch, first.epoch);
        assert.equal(history.offset, 2);
        assert.deepEqual(history.publications.map((p) => [p.offset, p.data.text, p.info?.user]), [
          [1, 'from the API', undefined],
          [2, 'from alice', 'alice'],
        ]);
        const newest = await room.sub.history({ limit: 1, reverse: true });
        assert.deepEqual(newest.publications.map((p) => p.offset), [2]);

        const presence = await room.sub.presence();
        assert.deepEqual(Object.values(presence).map((c) => c.user).sort(), ['alice', 'bob']);
        assert.deepEqual(await alice.client.presenceStats(channel), { numClients: 2, numUsers: 2 });

        bob.client.disconnect();
        await waitUntil(() => room.leaves.find((l) => l.info.user === 'bob'), { label: 'leave of bob' });

        room.sub.unsubscribe();
        assert.equal(room.sub.state, 'unsubscribed');
        assert.deepEqual(room.unsubscribed, [{ channel, code: sdkCodes.unsubscribe_called.code, reason: sdkCodes.unsubscribe_called.reason }]);
        assert.equal(alice.client.getSubscription(channel), undefined);
        alice.client.disconnect();
        assert.equal(alice.client.state, 'disconnected');
        const disconnected = await alice.waitFor('disconnected');
        assert.deepEqual(disconnected, { code: sdkCodes.disconnect_called.code, reason: sdkCodes.disconnect_called.reason });
        await assert.rejects(alice.client.publish(channel, {}), (error: HeraldError) => error.code === sdkCodes.disconnected.code);
      });

      test('a refused subscription ends with error and unsubscribed; the others work', async () => {
        const good = unique('chat:ok');
        const alice = client({ transports: [transport], token: await h.token('alice') });
        const unknown = recordSubscription(alice.client.subscribe(unique('nope:x')));
        const ok = recordSubscription(alice.client.subscribe(good));
        alice.client.connect();
        await ok.waitForSubscribed();
        await waitUntil(() => unknown.unsubscribed.length === 1, { label: 'unsubscribed of the unknown namespace' });
        assert.equal(unknown.errors[0]?.code, 102);
        assert.equal(unknown.unsubscribed[0]?.code, 102);
        assert.equal(unknown.sub.state, 'unsubscribed');
        await assert.rejects(alice.client.history('nohistory:x', { limit: 1 }), (error: HeraldError) => error.code === 108);
        await h.api('publish', { channel: good, data: 1 });
        await ok.waitForPublications(1);
        assert.equal(alice.client.state, 'connected');
        alice.client.disconnect();
      });

      test('an invalid token is terminal: disconnected with 3500, no reconnect', async () => {
        const bad = client({ transports: [transport], token: 'not.a.jwt' });
        bad.client.connect();
        const disconnected = await bad.waitFor('disconnected');
        assert.equal(disconnected.code, 3500);
        assert.equal(bad.client.state, 'disconnected');
        assert.equal(bad.count('connecting'), 1, 'one attempt, no reconnect');
        assert.equal(bad.count('error'), 0, 'no fallback to another transport either');
      });

      test('API disconnect without reconnect (3503) is terminal', async () => {
        const user = unique('carol');
        const carol = client({ transports: [transport], token: await h.token(user) });
        carol.client.connect();
        await carol.waitFor('connected');
        const answer = await h.api('disconnect', { user, reconnect: false });
        assert.equal(answer.body.disconnected, 1);
        const disconnected = await carol.waitFor('disconnected');
        assert.equal(disconnected.code, 3503);
        assert.equal(carol.client.state, 'disconnected');
        assert.equal(carol.count('connecting'), 1);
      });
    });
  }

  test('anonymous connection to an allowAnonymous namespace, non-recoverable channel delivers offset 0 publications', async () => {
    const anon = client({ transports: ['sse'] });
    const pub = recordSubscription(anon.client.subscribe(unique('public:anon')));
    anon.client.connect();
    const subscribed = await pub.waitForSubscribed();
    assert.equal(subscribed.recoverable, true);
    await pub.sub.publish('hello');
    await pub.waitForPublications(1);
    assert.equal(pub.publications[0]?.info?.user, '');

    const nohistory = client({ transports: ['websocket'], token: await h.token('dave') });
    const nh = recordSubscription(nohistory.client.subscribe(unique('nohistory:x')));
    nohistory.client.connect();
    const s = await nh.waitForSubscribed();
    assert.equal(s.recoverable, false);
    assert.equal(nh.sub.position, undefined);
    await h.api('publish', { channel: nh.sub.channel, data: 'a' });
    await h.api('publish', { channel: nh.sub.channel, data: 'b' });
    await nh.waitForPublications(2);
    assert.deepEqual(nh.publications.map((p) => [p.offset, p.data]), [[0, 'a'], [0, 'b']]);
    anon.client.disconnect();
    nohistory.client.disconnect();
  });
});
