/**
 * The Pusher endpoint with real pusher-js in Node: connection, ping, public
 * channels, delivery of publications (native API and node.publish of a
 * Pusher event, with socket exclusion), connection refusals with Pusher's
 * codes, and the drain's 4200.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { connectWs, closeAllClients, unique } from '../helpers/herald-ws.ts';
import { connected, disconnectAll, nextEvent, pusherClient, RawPusher, startPusherHerald, subscribed, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';
import { encodePusherData, excludeSocket } from '../../src/pusher/pusher-publication.ts';
import { channelPrefixOf } from '../../src/apps/apps.ts';

describe('pusher socket: public channels', { timeout: 60000 }, () => {
  let h: PusherHerald;
  const main = testApp('main');
  const disabled = testApp('off', { enabled: false });
  const other = testApp('other');
  const raws: RawPusher[] = [];
  const raw = (url: string, options = {}): RawPusher => {
    const client = new RawPusher(url, options);
    raws.push(client);
    return client;
  };

  before(async () => {
    h = await startPusherHerald([main, disabled, other], { channels: { defaults: { allowAnonymous: true } } });
  });
  afterEach(() => {
    disconnectAll();
    closeAllClients();
    for (const client of raws.splice(0)) client.close();
  });
  after(async () => {
    await h.close();
  });

  /** Triggers a Pusher event into an app's channel the way the HTTP API does (node.publish of encodePusherData). */
  async function trigger(app: typeof main, channel: string, event: string, data: unknown, socketId?: string): Promise<void> {
    const node = h.server.node;
    // The default app's channels are unprefixed; the others' carry their prefix (apps/apps.ts).
    const internal = (app.id === main.id ? '' : channelPrefixOf(app.id)) + channel;
    const resolved = { channel: internal, namespace: '', options: node.rules.namespaceOptions('')! };
    await node.publish(resolved, encodePusherData({ event, data }), socketId === undefined ? undefined : excludeSocket(socketId), 'api');
  }

  test('pusher-js connects: socket id as Pusher makes them, activity timeout from the config', async () => {
    const client = pusherClient(h, main.key);
    const socketId = await connected(client);
    assert.match(socketId, /^\d+\.\d+$/);
    const r = raw(h.appUrl(main.key));
    const frame = await r.event('pusher:connection_established');
    assert.equal(frame.data.activity_timeout, 120);
    assert.match(frame.data.socket_id, /^\d+\.\d+$/);
    assert.notEqual(frame.data.socket_id, socketId);
  });

  test('pusher:ping is answered with pusher:pong', async () => {
    const r = raw(h.appUrl(main.key));
    await r.established();
    r.send({ event: 'pusher:ping', data: {} });
    const pong = await r.event('pusher:pong');
    assert.equal(pong.event, 'pusher:pong');
  });

  test('subscribe to a public channel; a native API publish of a Pusher-shaped event arrives as that event', async () => {
    const channel = unique('orders');
    const client = pusherClient(h, main.key);
    await connected(client);
    const succeeded = await subscribed(client, channel);
    assert.deepEqual(succeeded, {});
    const arriving = nextEvent(client, channel, 'order-created');
    const answer = await h.api('publish', { channel, data: { event: 'order-created', data: JSON.stringify({ id: 7 }) } });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    assert.deepEqual(await arriving, { id: 7 });
    // Other native data arrives as herald:publication with the JSON text.
    const native = nextEvent(client, channel, 'herald:publication');
    await h.api('publish', { channel, data: { price: 3 } });
    assert.deepEqual(await native, { price: 3 });
  });

  test('a Pusher event published on the node reaches Pusher and native subscribers; the excluded socket id does not get it', async () => {
    const channel = unique('room');
    const a = pusherClient(h, main.key);
    const b = pusherClient(h, main.key);
    const aId = await connected(a);
    await connected(b);
    await subscribed(a, channel);
    await subscribed(b, channel);
    const nativeClient = await connectWs(h, 'native-user');
    await nativeClient.call('subscribe', { channel });
    const got: unknown[] = [];
    a.channel(channel).bind('greet', (data: unknown) => got.push(data));
    const atB = nextEvent(b, channel, 'greet');
    await trigger(main, channel, 'greet', 'hello', aId);
    assert.equal(await atB, 'hello');
    const [publication] = await nativeClient.waitPublications(channel, 1);
    assert.deepEqual(publication.data, { event: 'greet', data: 'hello' });
    // A second event without exclusion reaches A: had the first reached it, it would be there first.
    const atA = nextEvent(a, channel, 'greet');
    await trigger(main, channel, 'greet', 'again');
    assert.equal(await atA, 'again');
    assert.deepEqual(got, ['again'], 'the excluded socket received its own event');
  });

  test('apps are isolated: the same channel name in another app never crosses', async () => {
    const channel = unique('shared');
    const inMain = pusherClient(h, main.key);
    const inOther = pusherClient(h, other.key);
    await connected(inMain);
    await connected(inOther);
    await subscribed(inMain, channel);
    await subscribed(inOther, channel);
    const leaked: unknown[] = [];
    inMain.channel(channel).bind('ping', (data: unknown) => leaked.push(data));
    const atOther = nextEvent(inOther, channel, 'ping');
    await trigger(other, channel, 'ping', 'for other');
    assert.equal(await atOther, 'for other');
    // And back: main's event does not reach other.
    const atMain = nextEvent(inMain, channel, 'pong');
    const leakedBack: unknown[] = [];
    inOther.channel(channel).bind('pong', (data: unknown) => leakedBack.push(data));
    await trigger(main, channel, 'pong', 'for main');
    assert.equal(await atMain, 'for main');
    assert.deepEqual(leaked, []);
    assert.deepEqual(leakedBack, []);
  });

  test('unsubscribe stops delivery', async () => {
    const channel = unique('gone');
    const r = raw(h.appUrl(main.key));
    await r.established();
    r.send({ event: 'pusher:subscribe', data: { channel } });
    await r.event('pusher_internal:subscription_succeeded');
    r.send({ event: 'pusher:unsubscribe', data: { channel } });
    // A ping round trip: the unsubscribe has been handled.
    r.send({ event: 'pusher:ping', data: {} });
    await r.event('pusher:pong');
    await trigger(main, channel, 'late', 'x');
    r.send({ event: 'pusher:ping', data: {} });
    await r.next((f) => f.event === 'pusher:pong', 5000, r.frames.findIndex((f) => f.event === 'pusher:pong') + 1);
    assert.equal(r.frames.filter((f) => f.event === 'late').length, 0);
  });

  test('refusals: unknown key 4001, disabled app 4003, no protocol 4008, bad version 4006, protocol 6 4007', async () => {
    const cases: [string, number][] = [
      [h.appUrl('no-such-key'), 4001],
      [h.appUrl(disabled.key), 4003],
      [h.appUrl(main.key, 'client=test'), 4008],
      [h.appUrl(main.key, 'protocol=seven'), 4006],
      [h.appUrl(main.key, 'protocol=6'), 4007],
    ];
    for (const [url, code] of cases) {
      const r = raw(url);
      const error = await r.event('pusher:error');
      assert.equal(error.data.code, code, url);
      assert.equal(typeof error.data.message, 'string');
      assert.equal((await r.closed).code, code, url);
      assert.equal(r.frames.filter((f) => f.event === 'pusher:connection_established').length, 0);
    }
  });

  test('pusher-js with an unknown key is refused (4001) and does not reconnect', async () => {
    const client = pusherClient(h, 'no-such-key');
    const errors: any[] = [];
    client.connection.bind('error', (error: unknown) => errors.push(error));
    const states: string[] = [];
    await new Promise<void>((resolve) =>
      client.connection.bind('state_change', (s: { current: string }) => {
        states.push(s.current);
        if (s.current === 'disconnected') resolve();
      }),
    );
    assert.ok(
      errors.some((e) => (e?.error?.data ?? e?.data)?.code === 4001),
      `errors: ${JSON.stringify(errors)}`,
    );
    // 4000-4099: pusher-js stays disconnected (a reconnect would be 'connecting' again within its first retry delay).
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.deepEqual(states, ['disconnected'], `reconnected: ${states.join(' ')}`);
  });

  test('invalid channel names are refused with pusher:subscription_error; invalid messages with 4300', async () => {
    const r = raw(h.appUrl(main.key));
    await r.established();
    r.send({ event: 'pusher:subscribe', data: { channel: 'bad name!' } });
    const refused = await r.event('pusher:subscription_error');
    assert.equal(refused.data.status, 400);
    r.send({ event: 'pusher:subscribe', data: { channel: 'x'.repeat(165) } });
    await r.next((f) => f.event === 'pusher:subscription_error' && f.channel !== 'bad name!');
    r.send('not json');
    const error = await r.event('pusher:error');
    assert.equal(error.data.code, 4300);
    r.send({ event: 'pusher:ping', data: {} });
    await r.event('pusher:pong');
  });

  test('origin: a foreign Origin is refused with 4009 unless the server allows it', async () => {
    const r = raw(h.appUrl(main.key), { origin: 'https://evil.example' });
    const error = await r.event('pusher:error');
    assert.equal(error.data.code, 4009);
    assert.equal((await r.closed).code, 4009);
  });
});

describe('pusher socket: app origins and quotas', { timeout: 30000 }, () => {
  test('allowedOrigins patterns and maxConnections (4100)', async () => {
    const app = testApp('quota', { allowedOrigins: ['https://*.example.com'], limits: { maxConnections: 2 } });
    const h = await startPusherHerald([app]);
    const opened: RawPusher[] = [];
    try {
      const ok = new RawPusher(h.appUrl(app.key), { origin: 'https://shop.example.com' });
      opened.push(ok);
      await ok.established();
      const wrongScheme = new RawPusher(h.appUrl(app.key), { origin: 'http://shop.example.com' });
      opened.push(wrongScheme);
      assert.equal((await wrongScheme.event('pusher:error')).data.code, 4009);
      const lookAlike = new RawPusher(h.appUrl(app.key), { origin: 'https://example.com.evil.net' });
      opened.push(lookAlike);
      assert.equal((await lookAlike.event('pusher:error')).data.code, 4009);
      const second = new RawPusher(h.appUrl(app.key));
      opened.push(second);
      await second.established();
      const third = new RawPusher(h.appUrl(app.key));
      opened.push(third);
      assert.equal((await third.event('pusher:error')).data.code, 4100);
      assert.equal((await third.closed).code, 4100);
    } finally {
      for (const r of opened) r.close();
      await h.close();
    }
  });
});

describe('pusher socket: connection places', { timeout: 30000 }, () => {
  test('a failed handshake gives its per-IP place back (maxConnectionsPerIp)', async () => {
    const app = testApp('places');
    const h = await startPusherHerald([app], { limits: { maxConnectionsPerIp: 2 } });
    try {
      for (let i = 0; i < 4; i++) {
        // No Sec-WebSocket-Key: ws answers 400 before the upgrade completes.
        const answer = await new Promise<string>((resolve) => {
          const socket = connect(h.server.port, '127.0.0.1', () =>
            socket.write(`GET /app/${app.key}?protocol=7 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n`),
          );
          let text = '';
          socket.on('data', (chunk) => (text += chunk.toString()));
          socket.on('close', () => resolve(text));
        });
        assert.match(answer, /^HTTP\/1\.1 400 /);
      }
      const opened = [new RawPusher(h.appUrl(app.key)), new RawPusher(h.appUrl(app.key))];
      try {
        for (const r of opened) await r.established();
        const third = new RawPusher(h.appUrl(app.key));
        opened.push(third);
        assert.equal((await third.event('pusher:error')).data.code, 4100, 'the cap still holds');
      } finally {
        for (const r of opened) r.close();
      }
    } finally {
      await h.close();
    }
  });
});

describe('pusher socket: drain', { timeout: 30000 }, () => {
  test('shutdown sends pusher:error 4200 and closes with 4200', async () => {
    const app = testApp('drain');
    const h = await startPusherHerald([app]);
    const r = new RawPusher(h.appUrl(app.key));
    await r.established();
    r.send({ event: 'pusher:subscribe', data: { channel: 'drain-me' } });
    await r.event('pusher_internal:subscription_succeeded');
    const closing = h.close();
    const error = await r.event('pusher:error');
    assert.equal(error.data.code, 4200);
    assert.equal((await r.closed).code, 4200);
    await closing;
  });
});

describe('pusher socket: activity timeout', { timeout: 90000 }, () => {
  test('a quiet connection gets pusher:ping; one that does not answer is closed with 4201, one that answers (pusher-js) stays', async () => {
    const app = testApp('quiet');
    const h = await startPusherHerald([app], { pusher: { activityTimeoutSeconds: 10 } });
    const silent = new RawPusher(h.appUrl(app.key));
    try {
      const established = await silent.event('pusher:connection_established');
      assert.equal(established.data.activity_timeout, 10);
      const lively = pusherClient(h, app.key);
      const livelyId = await connected(lively);
      // The server pings after 10 s of silence (checked every 5 s); the silent client does not answer.
      const ping = await silent.event('pusher:ping', 30000);
      assert.equal(ping.event, 'pusher:ping');
      const closed = await silent.closed;
      assert.equal(closed.code, 4201);
      assert.equal(silent.frames.find((f) => f.event === 'pusher:error')?.data.code, 4201);
      // pusher-js answered its pings (or pinged first) and is still connected on the same socket.
      assert.equal(lively.connection.state, 'connected');
      assert.equal(lively.connection.socket_id, livelyId);
    } finally {
      silent.close();
      disconnectAll();
      await h.close();
    }
  });
});
