/**
 * The console's channels per app (console-api.ts): an app other than the
 * default one has its own channels, kept inside the server as `~{id}~name`.
 * The console's channel list, detail and test publish name the app (`app`,
 * default: the default app, whose channels are the server's own) and carry
 * the app's names, never `~…`: the default app's list leaves out every
 * other app's channels, X's list is X's; X's `chat:room` is not the
 * server's `chat:room` (subscribers, presence, history, publications); a
 * Pusher presence channel shows its members; a raw `~x~…` name is refused
 * and reaches nothing; an unknown app is 404. Checked on real connections.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { closeAllClients, openWs, signToken, unique, type WsClient } from '../helpers/herald-ws.ts';
import { startAppsConsole } from '../helpers/console.ts';
import { disconnectAll, rawPusher, signSubscription, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';

describe('console: channels of an app', { timeout: 120000 }, () => {
  let h: PusherHerald;
  let consoles: Awaited<ReturnType<typeof startAppsConsole>>['consoles'];
  let close: () => Promise<void>;
  const main = testApp('main', { name: 'Main site' });
  const x = testApp('x', { name: 'Shop' });

  before(async () => {
    ({ h, consoles, close } = await startAppsConsole([main, x]));
  });
  after(async () => {
    disconnectAll();
    closeAllClients();
    await close?.();
  });

  const xToken = (sub: string): Promise<string> => signToken(x.secret, { sub, exp: Math.floor(Date.now() / 1000) + 600 });
  async function subscriber(url: string, token: string, channel: string): Promise<WsClient> {
    const client = await openWs(url);
    await client.connect(token);
    await client.call('subscribe', { channel });
    return client;
  }
  const enc = encodeURIComponent;

  test('list, detail and publish by the app\'s names; X\'s chat:room is not the server\'s', async () => {
    const room = `chat:${unique('room')}`;
    const lobby = `presence-${unique('lobby')}`;
    const serverAnn = await subscriber(h.wsUrl, await h.token('ann'), room);
    const xAnn = await subscriber(`ws://127.0.0.1:${h.server.port}/apps/${x.id}/connection/websocket`, await xToken('ann'), room);
    // A Pusher socket of X in a presence channel, as pia.
    const [pusher, socketId] = await rawPusher(h, x.key);
    const channelData = JSON.stringify({ user_id: 'pia', user_info: { name: 'Pia' } });
    pusher.send({ event: 'pusher:subscribe', data: { channel: lobby, auth: signSubscription(x, socketId, lobby, channelData), channel_data: channelData } });
    await pusher.event('pusher_internal:subscription_succeeded');

    // The default app's list (no app, or its id): the server's room, nothing of X's.
    for (const path of [`/api/channels?prefix=${enc(room)}`, `/api/channels?prefix=${enc(room)}&app=main`]) {
      const listed = await consoles.viewer.get(path);
      assert.equal(listed.status, 200, listed.text);
      assert.deepEqual(listed.body.channels, [{ channel: room, subscribers: 1 }], path);
    }
    const all = await consoles.viewer.get('/api/channels?limit=1000');
    assert.ok(!all.text.includes('~'), `no server-internal name in ${all.text}`);
    assert.ok(!all.body.channels.some((c: { channel: string }) => c.channel === lobby), 'X\'s presence channel is not the default app\'s');
    // X's list: X's room and lobby, by X's names.
    const inX = await consoles.viewer.get('/api/channels?limit=1000&app=x');
    assert.equal(inX.status, 200, inX.text);
    assert.ok(!inX.text.includes('~'), `no server-internal name in ${inX.text}`);
    assert.deepEqual(
      inX.body.channels.filter((c: { channel: string }) => c.channel === room || c.channel === lobby),
      [
        { channel: room, subscribers: 1 },
        { channel: lobby, subscribers: 1 },
      ].sort((a, b) => (a.channel < b.channel ? -1 : 1)),
    );

    // Publish to X's room: X's subscriber gets it; the server's room's history does not have it.
    const published = await consoles.operator.post(`/api/channels/${enc(room)}/publish`, { data: { text: 'for the shop' }, app: 'x' });
    assert.equal(published.status, 200, published.text);
    assert.equal(published.body.offset, 1);
    await xAnn.push('publication', room, (frame) => JSON.stringify(frame).includes('for the shop'));
    assert.equal((await consoles.operator.post(`/api/channels/${enc(room)}/publish`, { data: { text: 'for the server' } })).status, 200);
    await serverAnn.push('publication', room, (frame) => JSON.stringify(frame).includes('for the server'));
    const audited = await consoles.owner.get('/api/audit?action=channel.publish&limit=10');
    const entries = audited.body.entries.filter((e: { target: string }) => e.target === room);
    assert.deepEqual(entries.map((e: { detail: { app?: string } }) => e.detail.app ?? null).sort(), [null, 'x'], 'the audit log names the app of X\'s publish');

    // X's room in detail: its subscriber, its presence (X's ann), its history; the app named.
    const detail = await consoles.viewer.get(`/api/channels/${enc(room)}?app=x`);
    assert.equal(detail.status, 200, detail.text);
    assert.ok(!detail.text.includes('~'), `no server-internal name in ${detail.text}`);
    assert.equal(detail.body.channel, room);
    assert.equal(detail.body.app, 'x');
    assert.equal(detail.body.subscribers, 1);
    assert.deepEqual(detail.body.presence.map((p: { user: string }) => p.user), ['ann']);
    assert.equal(detail.body.stream.offset, 1);
    assert.deepEqual(detail.body.history.map((p: { data: unknown }) => p.data), [{ text: 'for the shop' }]);
    // The server's room: its own history only.
    const serverDetail = await consoles.viewer.get(`/api/channels/${enc(room)}`);
    assert.equal(serverDetail.status, 200, serverDetail.text);
    assert.equal(serverDetail.body.app, undefined);
    assert.deepEqual(serverDetail.body.history.map((p: { data: unknown }) => p.data), [{ text: 'for the server' }]);
    assert.notEqual(serverDetail.body.presence[0].client, detail.body.presence[0].client, 'two members, two apps');

    // X's Pusher presence channel shows its members, whatever the default namespace says.
    const lobbyDetail = await consoles.viewer.get(`/api/channels/${enc(lobby)}?app=x`);
    assert.equal(lobbyDetail.status, 200, lobbyDetail.text);
    assert.equal(lobbyDetail.body.subscribers, 1);
    assert.deepEqual(lobbyDetail.body.presence.map((p: { user: string }) => p.user), ['pia']);
    // The same name in the default app: nobody.
    assert.deepEqual((await consoles.viewer.get(`/api/channels/${enc(lobby)}`)).body.presence, []);
  });

  test('hostile names and apps: a raw ~x~ name is refused and reaches nothing; an unknown app is 404', async () => {
    const room = `chat:${unique('hostile')}`;
    const xAnn = await subscriber(`ws://127.0.0.1:${h.server.port}/apps/${x.id}/connection/websocket`, await xToken('ann'), room);
    const internal = `~x~${room}`;

    const raw = await consoles.viewer.get(`/api/channels/${enc(internal)}`);
    assert.equal(raw.status, 400, raw.text);
    assert.equal(raw.body.error.code, 'invalid_channel');
    assert.equal((await consoles.viewer.get(`/api/channels/${enc(internal)}?app=x`)).body.error.code, 'invalid_channel');
    for (const body of [{ data: 'sneak' }, { data: 'sneak', app: 'x' }, { data: 'sneak', app: 'main' }]) {
      const refused = await consoles.operator.post(`/api/channels/${enc(internal)}/publish`, body);
      assert.equal(refused.status, 400, refused.text);
      assert.equal(refused.body.error.code, 'invalid_channel');
    }
    // A prefix naming the inside of an app lists nothing (default app), or nothing of another app's (X).
    assert.deepEqual((await consoles.viewer.get(`/api/channels?prefix=${enc('~x~')}`)).body.channels, []);
    assert.deepEqual((await consoles.viewer.get(`/api/channels?prefix=${enc('~')}&app=x`)).body.channels, []);

    for (const [path, code] of [
      [`/api/channels?app=nope`, 'not_found'],
      [`/api/channels/${enc(room)}?app=nope`, 'not_found'],
      [`/api/channels/${enc(room)}?app=${'a'.repeat(300)}`, 'invalid_input'],
      [`/api/channels/${enc(room)}?app=a%00b`, 'invalid_input'],
      [`/api/channels/${enc(room)}?app=__proto__`, 'not_found'],
      [`/api/channels/${enc(room)}?app=constructor`, 'not_found'],
    ] as const) {
      const answer = await consoles.viewer.get(path);
      assert.equal(answer.body?.error?.code, code, `${path}: ${answer.text}`);
    }
    for (const app of ['nope', '__proto__']) assert.equal((await consoles.operator.post(`/api/channels/${enc(room)}/publish`, { data: 1, app })).status, 404);
    assert.equal((await consoles.operator.post(`/api/channels/${enc(room)}/publish`, { data: 1, app: 7 })).body.error.code, 'invalid_input');
    assert.equal((await consoles.operator.post(`/api/channels/${enc(room)}/publish`, { data: 'x'.repeat(65_600), app: 'x' })).body.error.code, 'payload_too_large');
    // A viewer publishes to no app.
    const byViewer = await consoles.viewer.post(`/api/channels/${enc(room)}/publish`, { data: 1, app: 'x' });
    assert.equal(byViewer.status, 403, byViewer.text);

    // Nothing of the above reached X's subscriber: the first publication it gets is this one.
    assert.equal((await consoles.operator.post(`/api/channels/${enc(room)}/publish`, { data: 'marker', app: 'x' })).status, 200);
    const upTo = await xAnn.waitMarker(room, 'marker');
    assert.equal(upTo.length, 1, JSON.stringify(upTo));
    // The server still answers.
    assert.equal((await consoles.viewer.get('/api/channels?app=x')).status, 200);
  });
});
