/**
 * The console's user lookups per app (console-api.ts): users of an app
 * other than the default one are that app's own, so the console's
 * connections lookup, disconnect and revoke name the app (`app`, default:
 * the default app, whose users are the server's). X's `ann` is found,
 * disconnected and revoked without touching the server's `ann`, and the
 * other way round; answers carry X's channel names, never the
 * server-internal `~x~…`; an unknown app is 404. Checked on real
 * connections: the closes, and which tokens connect afterwards.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { disconnects } from '@herald/protocol';
import { closeAllClients, eventually, openWs, signToken, type WsClient } from '../helpers/herald-ws.ts';
import { startAppsConsole } from '../helpers/console.ts';
import { testApp, type PusherHerald } from '../helpers/pusher-socket.ts';

describe('console: users of an app', { timeout: 120000 }, () => {
  let h: PusherHerald;
  let consoles: Awaited<ReturnType<typeof startAppsConsole>>['consoles'];
  let close: () => Promise<void>;
  const main = testApp('main', { name: 'Main site' });
  const x = testApp('x', { name: 'Shop' });

  before(async () => {
    ({ h, consoles, close } = await startAppsConsole([main, x]));
  });
  after(async () => {
    closeAllClients();
    await close?.();
  });

  /** A token of app X (signed with X's secret), with `iat` so that revocations can judge it. */
  const xToken = (sub: string): Promise<string> => signToken(x.secret, { sub, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600 });
  const xUrl = (): string => `ws://127.0.0.1:${h.server.port}/apps/${x.id}/connection/websocket`;
  async function connected(url: string, token: string, channel?: string): Promise<WsClient> {
    const client = await openWs(url);
    await client.connect(token);
    if (channel !== undefined) await client.call('subscribe', { channel });
    return client;
  }
  /** Waits past the current second: a token's `iat` and a revocation's time have 1 s precision. */
  const nextSecond = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 1100));

  test('the apps a lookup can name, for viewers', async () => {
    const answer = await consoles.viewer.get('/api/connections/apps');
    assert.equal(answer.status, 200, answer.text);
    assert.deepEqual(answer.body.apps, [
      { id: 'main', name: 'Main site', default: true },
      { id: 'x', name: 'Shop', default: false },
    ]);
  });

  test('find, disconnect and revoke X\'s ann; the server\'s ann stays, and is revoked apart', async () => {
    const serverAnn = await connected(h.wsUrl, await h.token('ann'), 'room');
    const xAnn = await connected(xUrl(), await xToken('ann'), 'room');

    // Without an app (and with the default app's id): the server's ann only.
    for (const path of ['/api/connections?user=ann', '/api/connections?user=ann&app=main']) {
      const found = await consoles.viewer.get(path);
      assert.equal(found.status, 200, found.text);
      assert.equal(found.body.connections.length, 1, path);
      assert.deepEqual(found.body.connections[0].channels, ['room']);
    }
    // With X: X's ann, on X's channel as X names it.
    const inX = await consoles.viewer.get('/api/connections?user=ann&app=x');
    assert.equal(inX.status, 200, inX.text);
    assert.equal(inX.body.connections.length, 1);
    const [row] = inX.body.connections;
    assert.equal(row.user, 'ann');
    assert.deepEqual(row.channels, ['room']);
    assert.ok(!inX.text.includes('~'), `no server-internal name in ${inX.text}`);
    const serverRow = (await consoles.viewer.get('/api/connections?user=ann')).body.connections[0];
    assert.notEqual(row.client, serverRow.client, 'two connections, two users');

    const unknown = await consoles.viewer.get('/api/connections?user=ann&app=nope');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'not_found');
    assert.equal((await consoles.operator.post('/api/users/ann/disconnect', { app: 'nope' })).status, 404);
    assert.equal((await consoles.operator.post('/api/users/ann/revoke', { app: 'nope' })).status, 404);
    assert.equal((await consoles.operator.post('/api/users/ann/revoke', { app: 7 })).body.error.code, 'invalid_input');
    // `~x~ann` is how the node counts X's ann, never a user id: refused, whatever the app.
    for (const path of ['/api/connections?user=~x~ann', '/api/connections?user=~x~ann&app=x', '/api/connections?user=~&app=main']) {
      const reserved = await consoles.viewer.get(path);
      assert.equal(reserved.status, 400, `${path}: ${reserved.text}`);
      assert.equal(reserved.body.error.code, 'invalid_input');
    }
    for (const body of [{}, { app: 'x' }]) {
      assert.equal((await consoles.operator.post(`/api/users/${encodeURIComponent('~x~ann')}/disconnect`, body)).body.error.code, 'invalid_input');
      assert.equal((await consoles.operator.post(`/api/users/${encodeURIComponent('~x~ann')}/revoke`, body)).body.error.code, 'invalid_input');
    }
    assert.equal(xAnn.closeInfo, undefined, 'X\'s ann is untouched');

    // Disconnect X's ann: that connection closes, the server's ann stays.
    const disconnected = await consoles.operator.post('/api/users/ann/disconnect', { app: 'x' });
    assert.equal(disconnected.status, 200, disconnected.text);
    assert.equal(disconnected.body.disconnected, 1);
    assert.equal((await xAnn.waitClose(10000)).code, disconnects.force_disconnect.code);
    assert.deepEqual((await consoles.viewer.get('/api/connections?user=ann&app=x')).body.connections, []);
    assert.equal((await consoles.viewer.get('/api/connections?user=ann')).body.connections.length, 1);
    const audited = await consoles.owner.get('/api/audit?action=user.disconnect&limit=10');
    const entry = audited.body.entries.find((e: { target: string }) => e.target === 'ann');
    assert.equal(entry?.detail?.app, 'x', 'the audit log names the user and the app');

    // Revoke X's ann: its live connection closes, its tokens issued until now stop connecting on X;
    // the server's ann keeps its connection and its token of before.
    const xOld = await xToken('ann');
    const serverOld = await h.token('ann');
    const xAgain = await connected(xUrl(), xOld);
    await nextSecond();
    const revoked = await consoles.operator.post('/api/users/ann/revoke', { app: 'x' });
    assert.equal(revoked.status, 200, revoked.text);
    assert.equal((await xAgain.waitClose(10000)).code, disconnects.revoked.code);
    const refused = await openWs(xUrl());
    refused.send({ id: 1, method: 'connect', params: { token: xOld } });
    assert.equal((await refused.waitClose(10000)).code, disconnects.revoked.code, 'X\'s revoked token is refused');
    await connected(h.wsUrl, serverOld);
    assert.equal((await consoles.viewer.get('/api/connections?user=ann')).body.connections.length, 2, 'the server\'s ann is untouched');

    // The other way round: revoking the server's ann does not reach X's ann's newer token.
    await nextSecond();
    const xNew = await xToken('ann');
    const serverRevoked = await consoles.operator.post('/api/users/ann/revoke', {});
    assert.equal(serverRevoked.status, 200, serverRevoked.text);
    assert.equal((await serverAnn.waitClose(10000)).code, disconnects.revoked.code);
    await eventually(async () => ((await consoles.viewer.get('/api/connections?user=ann')).body.connections.length === 0 ? true : undefined), 'the server\'s ann is gone');
    await connected(xUrl(), xNew);
    assert.equal((await consoles.viewer.get('/api/connections?user=ann&app=x')).body.connections.length, 1, 'X\'s ann connects with a token the server\'s revocation does not reach');
  });
});
