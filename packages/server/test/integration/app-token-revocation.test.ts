/**
 * Token revocation by id across apps (docs/security.md, "Revocation"): a
 * `jti` names one token whatever signed it, so `/api` `revoke_token` (and
 * the console's "Revoke one token") refuses the tokens with that `jti` on
 * every path, the server's and every app's, and closes their connections;
 * a token with another `jti` stays. Revocations by user are per app
 * (console-app-users.test.ts); by id they are not, by design.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { disconnects } from '@herald/protocol';
import { closeAllClients, openWs, signToken, type WsClient } from '../helpers/herald-ws.ts';
import { startPusherHerald, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';

describe('revoke_token across apps', { timeout: 60000 }, () => {
  let h: PusherHerald;
  const main = testApp('main');
  const x = testApp('x');

  before(async () => {
    h = await startPusherHerald([main, x]);
  });
  after(async () => {
    closeAllClients();
    await h?.close();
  });

  const xUrl = (): string => `ws://127.0.0.1:${h.server.port}/apps/${x.id}/connection/websocket`;
  const xToken = (sub: string, jti: string): Promise<string> => signToken(x.secret, { sub, jti, exp: Math.floor(Date.now() / 1000) + 600 });
  async function connected(url: string, token: string): Promise<WsClient> {
    const client = await openWs(url);
    await client.connect(token);
    return client;
  }

  test('a jti revoked through /api closes and refuses the tokens with that jti of the server and of app X; other ids stay', async () => {
    const serverAnn = await connected(h.wsUrl, await h.token('ann', { jti: 'shared-jti' }));
    const xBob = await connected(xUrl(), await xToken('bob', 'shared-jti'));
    const xCarol = await connected(xUrl(), await xToken('carol', 'carol-jti'));

    const revoked = await h.api('revoke_token', { jti: 'shared-jti' });
    assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
    assert.equal(revoked.body.disconnected, 2);
    assert.equal((await serverAnn.waitClose(10000)).code, disconnects.revoked.code);
    assert.equal((await xBob.waitClose(10000)).code, disconnects.revoked.code);
    assert.equal(xCarol.closeInfo, undefined, 'another jti stays');

    const refused = await openWs(xUrl());
    refused.send({ id: 1, method: 'connect', params: { token: await xToken('dave', 'shared-jti') } });
    assert.equal((await refused.waitClose(10000)).code, disconnects.revoked.code, 'X\'s new token with the revoked jti is refused');
    await connected(xUrl(), await xToken('dave', 'dave-jti'));
  });
});
