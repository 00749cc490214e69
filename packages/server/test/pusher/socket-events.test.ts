/**
 * Client events and cache channels with real pusher-js in Node: client-*
 * on private and presence channels (the sender excluded, user_id on
 * presence), refusals with 4301 (public channels, apps without client
 * events, rate, size), cache channels replaying their last event or
 * sending pusher:cache_miss.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import Pusher from 'pusher';
import { closeAllClients, connectWs, unique } from '../helpers/herald-ws.ts';
import {
  connected,
  disconnectAll,
  nextEvent,
  pusherClient,
  rawPusher,
  serverSdk,
  signSubscription,
  startAuthServer,
  startPusherHerald,
  startSignedUsers,
  subscribed,
  testApp,
  type PusherHerald,
  type SignedUsers,
} from '../helpers/pusher-socket.ts';

describe('pusher socket: client events and cache channels', { timeout: 60000 }, () => {
  let h: PusherHerald;
  let users: SignedUsers;
  const app = testApp('main', { clientEvents: true, limits: { maxEventPayloadBytes: 256 } });
  const quiet = testApp('quiet');

  before(async () => {
    h = await startPusherHerald([app, quiet], { channels: { defaults: { allowAnonymous: true } } });
    users = await startSignedUsers(h, app);
  });
  afterEach(() => {
    disconnectAll();
    closeAllClients();
  });
  after(async () => {
    await users.close();
    await h.close();
  });

  const client = async () => (await users.client()).c;
  const raw = (key = app.key) => rawPusher(h, key);

  test('client events on a private channel reach the others (and native subscribers), not the sender', async () => {
    const channel = unique('private-chat');
    const alice = await client();
    const bob = await client();
    await subscribed(alice, channel);
    await subscribed(bob, channel);
    const native = await connectWs(h, 'watcher');
    await native.call('subscribe', { channel });
    const echoed: unknown[] = [];
    alice.channel(channel).bind('client-typing', (data: unknown) => echoed.push(data));
    const atBob = nextEvent(bob, channel, 'client-typing');
    assert.equal(alice.channel(channel).trigger('client-typing', { who: 'alice' }), true);
    assert.deepEqual(await atBob, { who: 'alice' });
    const [publication] = await native.waitPublications(channel, 1);
    assert.deepEqual(publication.data, { event: 'client-typing', data: { who: 'alice' } });
    // bob answers: alice gets it, so had alice got her own it would be there first.
    const atAlice = nextEvent(alice, channel, 'client-typing');
    bob.channel(channel).trigger('client-typing', { who: 'bob' });
    assert.deepEqual(await atAlice, { who: 'bob' });
    assert.deepEqual(echoed, [{ who: 'bob' }]);
  });

  test('client events on a presence channel carry the sender user_id', async () => {
    const channel = unique('presence-game');
    const [sender, senderId] = await raw();
    const [receiver, receiverId] = await raw();
    for (const [r, id] of [
      [sender, senderId],
      [receiver, receiverId],
    ] as const) {
      const data = JSON.stringify({ user_id: `u-${id}` });
      r.send({ event: 'pusher:subscribe', data: { channel, auth: signSubscription(app, id, channel, data), channel_data: data } });
      await r.event('pusher_internal:subscription_succeeded');
    }
    sender.send({ event: 'client-move', channel, data: { x: 1 } });
    const move = await receiver.event('client-move');
    assert.equal(move.user_id, `u-${senderId}`);
    assert.deepEqual(move.data, { x: 1 });
    assert.equal(move.channel, channel);
  });

  test('refused with 4301: public channel, not subscribed, app without client events, too large; nothing reaches the others', async () => {
    const open = unique('lobby');
    const priv = unique('private-room');
    const [sender, senderId] = await raw();
    const [receiver] = await raw();
    sender.send({ event: 'pusher:subscribe', data: { channel: open } });
    receiver.send({ event: 'pusher:subscribe', data: { channel: open } });
    await sender.event('pusher_internal:subscription_succeeded');
    await receiver.event('pusher_internal:subscription_succeeded');
    sender.send({ event: 'client-spam', channel: open, data: {} });
    assert.equal((await sender.event('pusher:error')).data.code, 4301);
    let from = sender.frames.length;
    sender.send({ event: 'client-spam', channel: priv, data: {} });
    assert.equal((await sender.next((f) => f.event === 'pusher:error', 5000, from)).data.code, 4301);
    sender.send({ event: 'pusher:subscribe', data: { channel: priv, auth: signSubscription(app, senderId, priv) } });
    await sender.next((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === priv);
    from = sender.frames.length;
    sender.send({ event: 'client-big', channel: priv, data: { text: 'x'.repeat(300) } });
    assert.equal((await sender.next((f) => f.event === 'pusher:error', 5000, from)).data.code, 4301);
    // The app without client events.
    const [other, otherId] = await raw(quiet.key);
    other.send({ event: 'pusher:subscribe', data: { channel: priv, auth: signSubscription(quiet, otherId, priv) } });
    await other.event('pusher_internal:subscription_succeeded');
    other.send({ event: 'client-x', channel: priv, data: {} });
    assert.equal((await other.event('pusher:error')).data.code, 4301);
    // The connections stay open; the receiver got none of it.
    receiver.send({ event: 'pusher:ping', data: {} });
    await receiver.event('pusher:pong');
    assert.equal(receiver.frames.filter((f) => String(f.event).startsWith('client-')).length, 0);
  });

  test('client events above clientEventsPerSecond are refused with 4301', async () => {
    const channel = unique('private-flood');
    const [sender, senderId] = await raw();
    const [receiver, receiverId] = await raw();
    sender.send({ event: 'pusher:subscribe', data: { channel, auth: signSubscription(app, senderId, channel) } });
    receiver.send({ event: 'pusher:subscribe', data: { channel, auth: signSubscription(app, receiverId, channel) } });
    await sender.event('pusher_internal:subscription_succeeded');
    await receiver.event('pusher_internal:subscription_succeeded');
    const sent = 35;
    for (let i = 0; i < sent; i++) sender.send({ event: 'client-n', channel, data: { i } });
    sender.send({ event: 'pusher:ping', data: {} });
    await sender.event('pusher:pong');
    const refused = sender.frames.filter((f) => f.event === 'pusher:error' && f.data.code === 4301).length;
    // 10 per second: a burst spans at most two seconds here, so at least 15 of 35 are refused.
    assert.ok(refused >= 15, `refused ${refused}`);
    await receiver.next((f) => f.event === 'client-n' && receiver.frames.filter((g) => g.event === 'client-n').length === sent - refused);
    receiver.send({ event: 'pusher:ping', data: {} });
    await receiver.event('pusher:pong');
    assert.equal(receiver.frames.filter((f) => f.event === 'client-n').length, sent - refused);
  });

  test('private-encrypted: the server relays ciphertext; pusher-js decrypts with the shared secret from the auth endpoint', async () => {
    const channel = unique('private-encrypted-vault');
    const sdk = new Pusher({
      appId: app.id,
      key: app.key,
      secret: app.secret,
      host: '127.0.0.1',
      port: String(h.server.port),
      useTLS: false,
      encryptionMasterKeyBase64: randomBytes(32).toString('base64'),
    });
    const encryptedAuth = await startAuthServer(sdk, () => ({ user_id: 'x' }));
    try {
      const c = pusherClient(h, app.key, { channelAuthorization: { endpoint: encryptedAuth.channelUrl, transport: 'ajax' } });
      await connected(c);
      await subscribed(c, channel);
      // A raw subscriber with a valid signature but no shared secret sees only ciphertext.
      const [r, socketId] = await raw();
      r.send({ event: 'pusher:subscribe', data: { channel, auth: signSubscription(app, socketId, channel) } });
      await r.event('pusher_internal:subscription_succeeded');
      const decrypted = nextEvent(c, channel, 'secret');
      const answer = await sdk.trigger(channel, 'secret', { pin: 1234 });
      assert.equal(answer.status, 200);
      assert.deepEqual(await decrypted, { pin: 1234 });
      const seen = await r.event('secret');
      assert.equal(typeof seen.data.ciphertext, 'string');
      assert.equal(typeof seen.data.nonce, 'string');
      assert.equal(JSON.stringify(seen).includes('1234'), false, 'the plaintext crossed the server');
      // Client events are refused on encrypted channels (as on Pusher).
      r.send({ event: 'client-x', channel, data: {} });
      assert.equal((await r.event('pusher:error')).data.code, 4301);
    } finally {
      await encryptedAuth.close();
    }
  });

  test('cache channels: the last event on subscribe, else pusher:cache_miss', async () => {
    const channel = unique('cache-prices');
    const c = await client();
    const missed = new Promise<void>((resolve) => c.subscribe(channel).bind('pusher:cache_miss', () => resolve()));
    await missed;
    await h.api('publish', { channel, data: { event: 'price', data: '{"v":1}' } });
    await h.api('publish', { channel, data: { event: 'price', data: '{"v":2}' } });
    const late = await client();
    const replayed = new Promise((resolve) => late.subscribe(channel).bind('price', resolve));
    assert.deepEqual(await replayed, { v: 2 });
    const priv = unique('private-cache-x');
    const p = await client();
    const privateMiss = new Promise<void>((resolve) => p.subscribe(priv).bind('pusher:cache_miss', () => resolve()));
    await privateMiss;
  });

  test('metrics: open Pusher connections per app, closes by code, client events accepted and refused', async () => {
    const metrics = async () => (await fetch(`http://127.0.0.1:${h.server.adminPort}/metrics`)).text();
    const value = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[{}]/g, '\\$&')} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    /** The metrics once `series` reads `expected` (a closing socket is counted when the server sees its close). */
    const once = async (series: string, expected: number): Promise<string> => {
      for (let i = 0; ; i++) {
        const text = await metrics();
        if (value(text, series) === expected || i === 250) return text;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    };
    // The earlier tests' connections are closed first.
    const before = await once('herald_pusher_connections{app="main"}', 0);
    assert.equal(value(before, 'herald_pusher_connections{app="main"}'), 0);
    const [r, socketId] = await raw();
    const [other, otherId] = await raw();
    const channel = unique('private-metered');
    r.send({ event: 'pusher:subscribe', data: { channel, auth: signSubscription(app, socketId, channel) } });
    other.send({ event: 'pusher:subscribe', data: { channel, auth: signSubscription(app, otherId, channel) } });
    await r.event('pusher_internal:subscription_succeeded');
    await other.event('pusher_internal:subscription_succeeded');
    r.send({ event: 'client-ok', channel, data: {} });
    await other.event('client-ok');
    r.send({ event: 'client-no', channel: 'lobby', data: {} });
    await r.event('pusher:error');
    const during = await metrics();
    assert.equal(value(during, 'herald_pusher_connections{app="main"}'), 2);
    assert.equal(value(during, 'herald_pusher_client_events_total{app="main",outcome="accepted"}'), value(before, 'herald_pusher_client_events_total{app="main",outcome="accepted"}') + 1);
    assert.equal(value(during, 'herald_pusher_client_events_total{app="main",outcome="refused"}'), value(before, 'herald_pusher_client_events_total{app="main",outcome="refused"}') + 1);
    r.close();
    await r.closed;
    const after = await once('herald_pusher_connections{app="main"}', 1);
    assert.equal(value(after, 'herald_pusher_connections{app="main"}'), 1);
    assert.equal(value(after, 'herald_pusher_disconnects_total{app="main",code="1006"}'), value(before, 'herald_pusher_disconnects_total{app="main",code="1006"}') + 1);
  });
});

describe('pusher socket: cache channels keep their last event for pusher.cacheTtlMs', { timeout: 60000 }, () => {
  // The default namespace's history lasts 200 ms; cache channels' last event 1.5 s.
  const DEFAULT_TTL_MS = 200;
  const CACHE_TTL_MS = 1500;
  let h: PusherHerald;
  const app = testApp('main');
  const other = testApp('other');

  before(async () => {
    h = await startPusherHerald([app, other], { channels: { defaults: { historyTtlMs: DEFAULT_TTL_MS, allowAnonymous: true } }, pusher: { cacheTtlMs: CACHE_TTL_MS } });
  });
  afterEach(() => {
    disconnectAll();
    closeAllClients();
  });
  after(async () => {
    await h.close();
  });

  const sleepUntil = (at: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, at - Date.now())));
  /** What a new subscriber of `channel` gets first: the replayed event's name, or pusher:cache_miss. */
  async function firstOnSubscribe(key: string, channel: string): Promise<string> {
    const [r] = await rawPusher(h, key);
    r.send({ event: 'pusher:subscribe', data: { channel } });
    const frame = await r.next((f) => f.channel === channel && f.event !== 'pusher_internal:subscription_succeeded');
    return frame.event;
  }

  test('a new subscriber gets the last event after the default history TTL and before pusher.cacheTtlMs; pusher:cache_miss after it', async () => {
    for (const target of [app, other]) {
      // A loaded machine may take longer than the cache TTL between the trigger and the first subscribe: then try again.
      for (let attempt = 1; ; attempt++) {
        const channel = unique('cache-quote');
        const plain = unique('quote');
        const published = Date.now();
        await serverSdk(h, target).trigger([channel, plain], 'quote', { v: attempt });
        await sleepUntil(published + DEFAULT_TTL_MS * 2);
        const replayed = await firstOnSubscribe(target.key, channel);
        if (Date.now() - published >= CACHE_TTL_MS) {
          assert.ok(attempt < 5, 'the cache TTL passed before a subscriber could ask, 5 times');
          continue;
        }
        assert.equal(replayed, 'quote', `${target.id}: the last event outlives the default namespace's history TTL`);
        if (target === app) {
          // The default app's cache channel is also a native channel: its history has the cache TTL too, and reading it trims nothing.
          const native = await connectWs(h, 'reader');
          assert.equal((await native.call('history', { channel, limit: 10 })).publications.length, 1);
          assert.equal((await native.call('history', { channel: plain, limit: 10 })).publications.length, 0, 'a plain channel\'s history is gone');
        }
        await sleepUntil(published + CACHE_TTL_MS + 100);
        assert.equal(await firstOnSubscribe(target.key, channel), 'pusher:cache_miss', `${target.id}: after pusher.cacheTtlMs`);
        break;
      }
    }
  });
});
