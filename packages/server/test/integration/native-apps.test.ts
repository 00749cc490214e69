/**
 * The native protocol per app (docs/pusher.md, "Channels shared with the
 * native protocol"): on `/apps/{id}/connection/…` a native client speaks
 * app X's channels with tokens signed by X's secret. A Pusher trigger (the
 * official `pusher` SDK) reaches it as `{"event","data"}`, its client
 * publish reaches pusher-js on X; app Y's channel of the same name and the
 * default app's never cross; server tokens and Y's tokens are refused on
 * X's path; unknown and disabled apps are refused before any upgrade. An
 * app made with `herald apps` serves native clients; disabling, rotating
 * and deleting it act on them.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { disconnects } from '@herald/protocol';
import { closeAllClients, connectWs, http, openWs, signToken, unique, type WsClient } from '../helpers/herald-ws.ts';
import { openUrl } from '../helpers/ws-open.ts';
import { LongPollSession } from '../helpers/herald-long-poll.ts';
import { openSse, parseVector, sseUrl, type SseStream } from '../helpers/rt-clients.ts';
import { execFile } from 'node:child_process';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { connected, disconnectAll, nextEvent, pusherClient, RawPusher, serverSdk, startPusherHerald, subscribed, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';

describe('native protocol per app', { timeout: 120000 }, () => {
  let h: PusherHerald;
  const main = testApp('main');
  const x = testApp('x');
  const y = testApp('y');
  const off = testApp('off', { enabled: false });
  const streams: SseStream[] = [];

  before(async () => {
    // clientPublish on the default namespace: Pusher channel names have no `:`.
    h = await startPusherHerald([main, x, y, off], {
      cors: { origins: ['https://site.example'] },
      channels: {
        // Anonymous connections are allowed on the server's own paths, never on an app's.
        defaults: { clientPublish: true, allowAnonymous: true },
        namespaces: [
          { name: 'chat', presence: true, joinLeave: true, clientPublish: true },
          { name: 'priv', private: true },
        ],
      },
    });
  });
  afterEach(() => {
    disconnectAll();
    closeAllClients();
    for (const stream of streams.splice(0)) stream.abort();
  });
  after(async () => {
    await h.close();
  });

  const wsUrl = (appId: string): string => `ws://127.0.0.1:${h.server.port}/apps/${appId}/connection/websocket`;
  const appToken = (app: typeof x, sub: string, claims: Record<string, unknown> = {}): Promise<string> =>
    signToken(app.secret, { sub, exp: Math.floor(Date.now() / 1000) + 600, ...claims });
  async function connectApp(app: typeof x, sub: string): Promise<WsClient> {
    const client = await openWs(wsUrl(app.id));
    await client.connect(await appToken(app, sub));
    return client;
  }
  async function sse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
    const stream = await openSse(url, headers);
    streams.push(stream);
    return stream;
  }
  const sseOf = (app: typeof x, options: Parameters<typeof sseUrl>[1]): string => sseUrl(h.url, options).replace('/connection/sse', `/apps/${app.id}/connection/sse`);
  const pusherData = (frame: any): { event: string; data: unknown } => ({ event: frame.data.event, data: JSON.parse(frame.data.data) });

  test('WebSocket on X: a Pusher trigger arrives as {event, data}, a native publish reaches pusher-js on X; Y and the default app never see either', async () => {
    const channel = unique('room');
    const native = await connectApp(x, 'alice');
    const onY = await connectApp(y, 'bob');
    const onDefault = await connectWs(h, 'carol');
    for (const client of [native, onY, onDefault]) await client.call('subscribe', { channel });
    const pusherX = pusherClient(h, x.key);
    const pusherY = pusherClient(h, y.key);
    await Promise.all([connected(pusherX), connected(pusherY)]);
    await Promise.all([subscribed(pusherX, channel), subscribed(pusherY, channel)]);
    let yEvents = 0;
    pusherY.channel(channel).bind_global(() => void yEvents++);

    await serverSdk(h, x).trigger(channel, 'order-created', { id: 7 });
    const pushed = await native.push('publication', channel);
    assert.equal(pushed.channel, channel, 'the frame carries the app-local name');
    assert.deepEqual(pusherData(pushed), { event: 'order-created', data: { id: 7 } });

    const arriving = nextEvent(pusherX, channel, 'native-said');
    await native.call('publish', { channel, data: { event: 'native-said', data: JSON.stringify({ hello: 'x' }) } });
    assert.deepEqual(await arriving, { hello: 'x' });

    // Another app's internal name is no channel name at all (`~` is outside the grammar).
    for (const method of ['subscribe', 'publish', 'history', 'presence']) {
      const params: Record<string, unknown> = { channel: `~${y.id}~${channel}` };
      if (method === 'publish') params['data'] = { event: 'sneak', data: '{}' };
      assert.equal(await native.callError(method, params), 112, method);
    }
    assert.equal(await native.callError('unsubscribe', { channel: `~${x.id}~${channel}` }), 110, 'an internal name is not a local one');
    // History follows the app's channel, under its local name.
    const history = await native.call('history', { channel, limit: 10 });
    assert.equal(history.publications.length, 2);
    // Y's channel of the same name: its own publication only, never X's.
    await serverSdk(h, y).trigger(channel, 'for-y', { y: true });
    const onYPushed = await onY.push('publication', channel);
    assert.deepEqual(pusherData(onYPushed), { event: 'for-y', data: { y: true } });
    assert.equal((await onY.call('history', { channel, limit: 10 })).publications.length, 1);
    assert.equal(onY.publications(channel).length, 1);
    assert.equal(onDefault.publications(channel).length, 0, 'the default app shares no channel with X or Y');
    assert.equal(native.publications(channel).length, 2, 'X sees its trigger and its own publish, not Y');
    assert.equal(yEvents, 1, 'pusher-js on Y saw only Y\'s event');
  });

  test('WebSocket opened in the upgrade request on X\'s path (connect=1): X\'s token and channels; the server\'s and Y\'s tokens refused before the 101', async () => {
    const channel = unique('room');
    await serverSdk(h, x).trigger(channel, 'first', { n: 1 });
    const client = await openWs(openUrl(wsUrl(x.id), { token: await appToken(x, 'alice'), channel }));
    await client.push('connected');
    const sub = await client.push('subscribed', channel);
    assert.equal(sub.channel, channel, 'the app-local name');
    await serverSdk(h, x).trigger(channel, 'second', { n: 2 });
    assert.deepEqual(pusherData(await client.push('publication', channel)), { event: 'second', data: { n: 2 } });
    for (const token of [await h.token('alice'), await appToken(y, 'alice')]) {
      await assert.rejects(openWs(openUrl(wsUrl(x.id), { token, channel })), /HTTP 401/);
    }
    await assert.rejects(openWs(openUrl(wsUrl(x.id), { channel })), /HTTP 403/, 'no token on an app\'s path');
    await assert.rejects(openWs(openUrl(wsUrl(off.id), { token: await appToken(off, 'alice') })), /HTTP 403/, 'a disabled app');
  });

  test('tokens on X\'s path: the server\'s and Y\'s are refused, none at all too; X\'s opens it', async () => {
    for (const token of [await h.token('alice'), await appToken(y, 'alice'), undefined]) {
      const client = await openWs(wsUrl(x.id));
      client.send({ id: 1, method: 'connect', params: token === undefined ? {} : { token } });
      const closed = await client.waitClose();
      assert.ok(
        ([disconnects.invalid_token.code, disconnects.permission_denied.code] as number[]).includes(closed.code),
        `closed with ${closed.code} ${closed.reason}`,
      );
    }
    // Anonymous is fine on the server's own path (this suite allows it).
    const anonymous = await openWs(h.wsUrl);
    await anonymous.connect();
    // X's token does not open the server's own path either.
    const plain = await openWs(h.wsUrl);
    plain.send({ id: 1, method: 'connect', params: { token: await appToken(x, 'alice') } });
    assert.equal((await plain.waitClose()).code, disconnects.invalid_token.code);
  });

  test('private channels on X take subscription tokens signed by X for the local name; presence joins carry the local name', async () => {
    const room = `priv:${unique('room')}`;
    const alice = await connectApp(x, 'alice');
    const subToken = (secret: string, channel = room): Promise<string> =>
      signToken(secret, { sub: 'alice', channel, exp: Math.floor(Date.now() / 1000) + 600 });
    const denied = 103;
    assert.equal(await alice.callError('subscribe', { channel: room, token: await subToken(h.hmacSecret) }), denied, 'a server-signed subscription token');
    assert.equal(await alice.callError('subscribe', { channel: room, token: await subToken(y.secret) }), denied, 'Y\'s subscription token');
    assert.equal(await alice.callError('subscribe', { channel: room, token: await subToken(x.secret, `~x~${room}`) }), denied, 'a token for the internal name');
    await alice.call('subscribe', { channel: room, token: await subToken(x.secret) });

    const chat = `chat:${unique('room')}`;
    await alice.call('subscribe', { channel: chat });
    const bob = await connectApp(x, 'bob');
    await bob.call('subscribe', { channel: chat });
    const join = await alice.push('join', chat);
    assert.equal(join.info.user, 'bob');
    const presence = await bob.call('presence', { channel: chat });
    assert.deepEqual(Object.values(presence.clients).map((c: any) => c.user).sort(), ['alice', 'bob']);
    // Y's chat of the same name is empty.
    const onY = await connectApp(y, 'carol');
    await onY.call('subscribe', { channel: chat });
    assert.deepEqual(Object.values((await onY.call('presence', { channel: chat })).clients).map((c: any) => c.user), ['carol']);
  });

  test('unknown and disabled apps are refused before any upgrade; the default app\'s prefix is the unprefixed path', async () => {
    await assert.rejects(openWs(wsUrl('nope')), /HTTP 404/);
    for (const id of ['', '..x', 'x'.repeat(5000), `${x.id}%2F`, `~${x.id}~`]) await assert.rejects(openWs(wsUrl(id)), /HTTP 404/, `app id ${id.slice(0, 20)}`);
    await assert.rejects(openWs(wsUrl(off.id)), /HTTP 403/);
    const sseUnknown = await http(`${h.url}/apps/nope/connection/sse`);
    assert.equal(sseUnknown.status, 404);
    assert.equal(sseUnknown.body.error.code, 'not_found');
    const pollOff = await http(`${h.url}/apps/${off.id}/connection/poll/open`, { body: {} });
    assert.equal(pollOff.status, 403);
    assert.equal(pollOff.body.error.code, 'forbidden');
    // Browsers: the server's origin allowlist and CORS answer the prefixed paths as the unprefixed ones.
    const preflight = await http(`${h.url}/apps/${x.id}/connection/poll/open`, {
      method: 'OPTIONS',
      headers: { origin: 'https://site.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    assert.equal(preflight.status, 204, preflight.text);
    assert.equal(preflight.headers.get('access-control-allow-origin'), 'https://site.example');
    const token = await appToken(x, 'ivy');
    const fromSite = await sse(sseOf(x, { token, channels: [unique('o')] }), { origin: 'https://site.example' });
    assert.equal(fromSite.status, 200, JSON.stringify(fromSite.errorBody));
    assert.equal(fromSite.headers.get('access-control-allow-origin'), 'https://site.example');
    const fromElsewhere = await sse(sseOf(x, { token }), { origin: 'https://evil.example' });
    assert.equal(fromElsewhere.status, 403);
    assert.equal((fromElsewhere.errorBody as any).error.code, 'origin_not_allowed');
    await assert.rejects(openWs(wsUrl(x.id), { origin: 'https://evil.example' }), /HTTP 403/);
    // /apps/{default}/…: the server's channels and tokens, as unprefixed.
    const channel = unique('room');
    const viaPrefix = await openWs(wsUrl(main.id));
    await viaPrefix.connect(await h.token('dave'));
    await viaPrefix.call('subscribe', { channel });
    await h.api('publish', { channel, data: { n: 1 } });
    assert.deepEqual((await viaPrefix.push('publication', channel)).data, { n: 1 });
  });

  test('SSE on X: a trigger arrives, recovery after a reconnect from the local-name position vector', async () => {
    const channel = unique('feed');
    const token = await appToken(x, 'erin');
    const first = await sse(sseOf(x, { token, channels: [channel] }));
    assert.equal(first.status, 200, JSON.stringify(first.errorBody));
    await first.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === channel);
    const sdk = serverSdk(h, x);
    await sdk.trigger(channel, 'e1', { n: 1 });
    const one = await first.waitForFrame((f) => f['push'] === 'publication' && f['channel'] === channel);
    assert.deepEqual(pusherData(one), { event: 'e1', data: { n: 1 } });
    const vector = first.lastEventId;
    assert.deepEqual([...parseVector(vector).keys()], [channel], 'event ids name the local channel');
    first.abort();
    await sdk.trigger(channel, 'e2', { n: 2 });
    await sdk.trigger(channel, 'e3', { n: 3 });
    // Y's same channel meanwhile: not recovered into X's.
    await serverSdk(h, y).trigger(channel, 'y1', { n: 99 });
    const second = await sse(sseOf(x, { token, lastEventId: vector }));
    assert.equal(second.status, 200, JSON.stringify(second.errorBody));
    const subscribedPush = await second.waitForFrame((f) => f['push'] === 'subscribed' && f['channel'] === channel);
    assert.equal(subscribedPush['recovered'], true);
    await second.waitForFrame((f) => f['push'] === 'publication' && pusherData(f).event === 'e3');
    assert.deepEqual(
      second.frames.filter((f) => f['push'] === 'publication').map((f) => pusherData(f).event),
      ['e2', 'e3'],
    );
  });

  test('long polling on X: a trigger arrives, a native publish reaches pusher-js, recovery from the cursor', async () => {
    const channel = unique('lp');
    const token = await appToken(x, 'fay');
    const base = `${h.url}/apps/${x.id}`;
    const session = await LongPollSession.open(base, { token, channels: [channel] });
    const sdk = serverSdk(h, x);
    await sdk.trigger(channel, 'p1', { n: 1 });
    const got = await session.pollUntil((all) => all.find((m) => m.push === 'publication'), 'p1');
    assert.equal(got.channel, channel);
    assert.deepEqual(pusherData(got), { event: 'p1', data: { n: 1 } });
    assert.deepEqual([...parseVector(session.cursor).keys()], [channel]);

    const pusherX = pusherClient(h, x.key);
    await connected(pusherX);
    await subscribed(pusherX, channel);
    const arriving = nextEvent(pusherX, channel, 'from-lp');
    const answer = await http(`${base}/connection/command`, {
      headers: { 'herald-session': session.session },
      body: { id: 1, method: 'publish', params: { channel, data: { event: 'from-lp', data: JSON.stringify({ ok: 1 }) } } },
    });
    assert.equal(answer.status, 200, answer.text);
    assert.deepEqual(await arriving, { ok: 1 });

    const cursor = session.cursor;
    await http(`${base}/connection/close`, { headers: { 'herald-session': session.session }, body: {} });
    await sdk.trigger(channel, 'p2', { n: 2 });
    const again = await LongPollSession.open(base, { token, cursor });
    const recovered = await again.pollUntil(
      (all) => (all.some((m) => m.push === 'publication' && pusherData(m).event === 'p2') ? all : undefined),
      'p2 after the reconnect',
    );
    const events = recovered.filter((m) => m.push === 'publication').map((m) => pusherData(m).event);
    assert.deepEqual(events, ['from-lp', 'p2']);
    assert.equal(recovered.find((m) => m.push === 'subscribed')?.recovered, true);
  });
});

describe('native protocol per app: the app\'s allowedOrigins and maxConnections', { timeout: 120000 }, () => {
  let h: PusherHerald;
  // The default app's origins and cap are its Pusher socket's only: the unprefixed paths are the server's.
  const main = testApp('main', { allowedOrigins: ['https://main-only.example'], limits: { maxConnections: 1 } });
  const x = testApp('x', { allowedOrigins: ['https://*.shop.example'], limits: { maxConnections: 2 } });
  const streams: SseStream[] = [];
  const raws: RawPusher[] = [];

  before(async () => {
    h = await startPusherHerald([main, x], { cors: { origins: ['https://site.example'] }, channels: { defaults: { allowAnonymous: true } } });
  });
  afterEach(() => {
    closeAllClients();
    for (const stream of streams.splice(0)) stream.abort();
    for (const raw of raws.splice(0)) raw.close();
  });
  after(async () => {
    await h.close();
  });

  const wsUrl = (appId: string): string => `ws://127.0.0.1:${h.server.port}/apps/${appId}/connection/websocket`;
  const token = (sub: string): Promise<string> => signToken(x.secret, { sub, exp: Math.floor(Date.now() / 1000) + 600 });
  async function sse(url: string, headers: Record<string, string> = {}): Promise<SseStream> {
    const stream = await openSse(url, headers);
    streams.push(stream);
    return stream;
  }
  const sseOfX = async (headers: Record<string, string> = {}): Promise<SseStream> =>
    sse(sseUrl(h.url, { token: await token('sam'), channels: [unique('o')] }).replace('/connection/sse', `/apps/${x.id}/connection/sse`), headers);
  function pusherOf(key: string): RawPusher {
    const raw = new RawPusher(h.appUrl(key));
    raws.push(raw);
    return raw;
  }

  test('an origin the server allows but X does not is refused on X\'s WebSocket, SSE and long polling; X\'s own origins open them, with CORS', async () => {
    const server = { origin: 'https://site.example' };
    await assert.rejects(openWs(wsUrl(x.id), server), /HTTP 403/, 'WebSocket');
    const refused = await sseOfX(server);
    assert.equal(refused.status, 403);
    assert.equal((refused.errorBody as any).error.code, 'origin_not_allowed');
    const poll = await http(`${h.url}/apps/${x.id}/connection/poll/open`, { headers: server, body: { token: await token('sam') } });
    assert.equal(poll.status, 403, poll.text);
    assert.equal(poll.body.error.code, 'origin_not_allowed');
    const preflightRefused = await http(`${h.url}/apps/${x.id}/connection/command`, {
      method: 'OPTIONS',
      headers: { ...server, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,herald-session' },
    });
    assert.equal(preflightRefused.headers.get('access-control-allow-origin'), null, 'no CORS for the server\'s origin on X\'s paths');

    const own = { origin: 'https://a.shop.example' };
    const ws = await openWs(wsUrl(x.id), own);
    await ws.connect(await token('sam'));
    const stream = await sseOfX(own);
    assert.equal(stream.status, 200, JSON.stringify(stream.errorBody));
    assert.equal(stream.headers.get('access-control-allow-origin'), own.origin);
    await ws.close();
    stream.abort();
    const preflight = await http(`${h.url}/apps/${x.id}/connection/command`, {
      method: 'OPTIONS',
      headers: { ...own, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,herald-session' },
    });
    assert.equal(preflight.status, 204, preflight.text);
    assert.equal(preflight.headers.get('access-control-allow-origin'), own.origin);
    const session = await eventually(async () => {
      const opened = await http(`${h.url}/apps/${x.id}/connection/poll/open`, { headers: own, body: { token: await token('sam') } });
      return opened.status === 200 ? opened : undefined;
    }, 'a long-poll session from X\'s origin (X\'s cap: 2)');
    assert.equal(session.headers.get('access-control-allow-origin'), own.origin);
    const command = await http(`${h.url}/apps/${x.id}/connection/command`, {
      headers: { ...own, 'herald-session': session.body.session },
      body: { id: 1, method: 'subscribe', params: { channel: unique('c') } },
    });
    assert.equal(command.status, 200, command.text);
    const foreignCommand = await http(`${h.url}/apps/${x.id}/connection/command`, {
      headers: { ...server, 'herald-session': session.body.session },
      body: { id: 2, method: 'subscribe', params: { channel: unique('c') } },
    });
    assert.equal(foreignCommand.status, 403, 'a command from the server\'s origin on X\'s path');
    await http(`${h.url}/apps/${x.id}/connection/close`, { headers: { 'herald-session': session.body.session }, body: {} });
    // The server's own look-alike host is no origin of X either (X's list replaces the server's rule).
    await assert.rejects(openWs(wsUrl(x.id), { origin: `http://127.0.0.1:${h.server.port}` }), /HTTP 403/);
  });

  test('the default app is unchanged: its allowedOrigins and cap do not apply to the unprefixed paths or /apps/{default}/…', async () => {
    const server = { origin: 'https://site.example' };
    const unprefixed = await openWs(h.wsUrl, server);
    await unprefixed.connect();
    const viaPrefix = await openWs(wsUrl(main.id), server);
    await viaPrefix.connect();
    await assert.rejects(openWs(h.wsUrl, { origin: 'https://main-only.example' }), /HTTP 403/, 'the default app\'s origin is not the server\'s');
    // Two native connections on the default app, and its one Pusher socket still fits its cap of 1.
    const first = pusherOf(main.key);
    await first.established();
    const second = pusherOf(main.key);
    assert.equal((await second.event('pusher:error')).data.code, 4100);
  });

  test('X\'s maxConnections counts its native and Pusher connections together: native refused 503, Pusher 4100, until one closes', async () => {
    const native = await openWs(wsUrl(x.id));
    await native.connect(await token('ann'));
    const pusher = pusherOf(x.key);
    await pusher.established();

    await assert.rejects(openWs(wsUrl(x.id)), /HTTP 503/, 'a third WebSocket');
    const stream = await sseOfX();
    assert.equal(stream.status, 503);
    assert.equal((stream.errorBody as any).error.code, 'unavailable');
    assert.equal(stream.headers.get('retry-after'), '1');
    const poll = await http(`${h.url}/apps/${x.id}/connection/poll/open`, { body: { token: await token('ann') } });
    assert.equal(poll.status, 503, poll.text);
    const third = pusherOf(x.key);
    assert.equal((await third.event('pusher:error')).data.code, 4100, 'a third Pusher socket');
    // The server's own paths are not X's: they still open.
    const plain = await openWs(h.wsUrl);
    await plain.connect();

    await native.close();
    const again = await eventually(async () => openWs(wsUrl(x.id)), 'a place of X after the native connection closed');
    await again.connect(await token('ann'));
    pusher.close();
    const next = await eventually(async () => {
      const raw = pusherOf(x.key);
      const first = await raw.next((f) => f.event === 'pusher:connection_established' || f.event === 'pusher:error');
      return first.event === 'pusher:connection_established' ? raw : undefined;
    }, 'a Pusher socket of X after one closed');
    assert.ok(next);
  });
});

function heraldApps(args: readonly string[], config: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, 'apps', ...args, '--config', config], { env: { PATH: process.env['PATH'] ?? '' }, timeout: 90000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, stdout, stderr });
    });
  });
}

describe('native protocol per app: apps from `herald apps`', { timeout: 300000 }, () => {
  let dir: string;
  let config: string;
  let h: TestHerald;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'herald-native-apps-'));
    const apps = { pollIntervalMs: 100 };
    config = join(dir, 'herald.json');
    writeFileSync(config, JSON.stringify({ mode: 'development', stateDir: join(dir, 'state'), apps }));
    h = await startHerald({ stateDir: join(dir, 'state'), apps });
  });
  afterEach(() => closeAllClients());
  after(async () => {
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a store app serves native clients; rotate-secret refuses the old secret\'s tokens; disable closes them (3503) and refuses new ones (403); delete: 404', async () => {
    const created = await heraldApps(['create', '--json'], config);
    assert.equal(created.code, 0, created.stderr);
    const { app, secret } = JSON.parse(created.stdout);
    await eventually(async () => h.server.apps.byId(app.id), 'the server picks the new app up');
    const url = `ws://127.0.0.1:${h.server.port}/apps/${app.id}/connection/websocket`;
    const token = (key: string): Promise<string> => signToken(key, { sub: 'gus', exp: Math.floor(Date.now() / 1000) + 600 });
    const first = await openWs(url);
    await first.connect(await token(secret));
    const channel = unique('store');
    await first.call('subscribe', { channel });

    const rotated = await heraldApps(['rotate-secret', app.id], config);
    assert.equal(rotated.code, 0, rotated.stderr);
    const newSecret = rotated.stdout.trim();
    await eventually(async () => (h.server.apps.byId(app.id)?.secret === newSecret ? true : undefined), 'the server sees the new secret');
    const old = await openWs(url);
    old.send({ id: 1, method: 'connect', params: { token: await token(secret) } });
    assert.equal((await old.waitClose()).code, disconnects.invalid_token.code, 'a token of the old secret');
    const second = await openWs(url);
    await second.connect(await token(newSecret));
    assert.equal(first.closeInfo, undefined, 'connections opened before the rotation stay');

    const disabled = await heraldApps(['update', app.id, '--disable'], config);
    assert.equal(disabled.code, 0, disabled.stderr);
    const [a, b] = await Promise.all([first.waitClose(10000), second.waitClose(10000)]);
    assert.equal(a.code, disconnects.force_disconnect.code);
    assert.equal(b.code, disconnects.force_disconnect.code);
    await assert.rejects(openWs(url), /HTTP 403/);

    const deleted = await heraldApps(['delete', app.id, '--yes'], config);
    assert.equal(deleted.code, 0, deleted.stderr);
    await eventually(async () => (h.server.apps.byId(app.id) === undefined ? true : undefined), 'the server forgets the app');
    await assert.rejects(openWs(url), /HTTP 404/);
  });
});

describe('native protocol per app: hooks', { timeout: 60000 }, () => {
  test('a subscribe and a publish hook of a connection on X\'s path get X\'s own channel name and `app`; on the server\'s paths no `app`', async () => {
    const bodies: { event: string; body: any }[] = [];
    const backend = createServer((request, response) => {
      let raw = '';
      request.on('data', (chunk: Buffer) => (raw += chunk.toString('utf8')));
      request.on('end', () => {
        bodies.push({ event: String(request.headers['x-herald-event']), body: JSON.parse(raw) });
        response.writeHead(200, { 'content-type': 'application/json' }).end('{"result":{}}');
      });
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    const secretDir = mkdtempSync(join(tmpdir(), 'herald-native-app-hooks-'));
    const secretFile = join(secretDir, 'hook-secret');
    writeFileSync(secretFile, 'h'.repeat(40), { mode: 0o600 });
    const hookUrl = `http://127.0.0.1:${(backend.address() as AddressInfo).port}/hook`;
    const x = testApp('hx');
    const h = await startPusherHerald([testApp('hmain'), x], {
      channels: { namespaces: [{ name: 'hooked', clientPublish: true }] },
      hooks: { namespaces: [{ name: 'hooked', subscribe: { url: hookUrl, secretFile }, publish: { url: hookUrl, secretFile } }] },
    });
    try {
      const onX = await openWs(`ws://127.0.0.1:${h.server.port}/apps/${x.id}/connection/websocket`);
      await onX.connect(await signToken(x.secret, { sub: 'alice', exp: Math.floor(Date.now() / 1000) + 600 }));
      await onX.call('subscribe', { channel: 'hooked:orders' });
      await onX.call('publish', { channel: 'hooked:orders', data: { n: 1 } });
      const onServer = await connectWs(h, 'bob');
      await onServer.call('subscribe', { channel: 'hooked:orders' });
      const seen = bodies.map(({ event, body }) => [event, body.channel, body.app, body.user]);
      assert.deepEqual(seen, [
        ['subscribe', 'hooked:orders', x.id, 'alice'],
        ['publish', 'hooked:orders', x.id, 'alice'],
        ['subscribe', 'hooked:orders', undefined, 'bob'],
      ]);
      assert.ok(!JSON.stringify(bodies).includes('~'), 'no internal name reaches the hook');
    } finally {
      disconnectAll();
      closeAllClients();
      await h.close();
      backend.closeAllConnections();
      await new Promise((resolve) => backend.close(resolve));
      rmSync(secretDir, { recursive: true, force: true });
    }
  });
});
