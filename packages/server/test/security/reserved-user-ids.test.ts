/**
 * User ids beginning with `~` (SECURITY-TESTS C 17-18, apps): the node
 * counts app X's user `ann` as `~X~ann`, so a server user of that id would
 * share X's ann's per-user count, and `/api` `disconnect` / `revoke_user`
 * with it would reach X's ann although `/api` reaches the server's users
 * only. Every way an id comes in refuses it: a token's `sub` (the server's
 * tokens, an app's tokens) → 3500 invalid_token; the connect hook's `user` →
 * 3504 permission_denied; `/api` methods with a `user` → 400
 * `invalid_input`. X's ann is untouched by each attempt, and the server
 * keeps answering.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { disconnects } from '@herald/protocol';
import { closeAllClients, openWs, signToken, type WsClient } from '../helpers/herald-ws.ts';
import { startPusherHerald, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';

/** Hostile ids: an app's user as the node names it, and the edge cases of the prefix. */
const HOSTILE = ['~x~ann', '~', '~~', '~x~', '~main~ann', '~x~~x~ann', '~\u00e9~ann'];

describe('user ids beginning with ~', { timeout: 120000 }, () => {
  let h: PusherHerald;
  let dir: string;
  const main = testApp('main');
  const x = testApp('x');
  let xAnn: WsClient;
  const xUrl = (): string => `ws://127.0.0.1:${h.server.port}/apps/${x.id}/connection/websocket`;
  const xToken = (sub: string): Promise<string> => signToken(x.secret, { sub, iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 600 });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'herald-reserved-users-'));
    // The connect hook makes `hook-as-ID` the user ID: a backend that answers whatever it is given.
    const hook = join(dir, 'hook.js');
    writeFileSync(hook, `export function onConnect(e) {
  return e.user.startsWith('hook-as-') ? { result: { user: e.user.slice(8) } } : { result: {} };
}
`);
    // One connection per user: a server user counted with X's ann would be refused 3506 instead.
    h = await startPusherHerald([main, x], { limits: { maxConnectionsPerUser: 1 }, hooks: { javascript: { file: hook, events: ['connect'] } } });
    xAnn = await openWs(xUrl());
    await xAnn.connect(await xToken('ann'));
    await xAnn.call('subscribe', { channel: 'chat:room' });
  });
  after(async () => {
    closeAllClients();
    await h?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** X's ann is still connected and served. */
  async function xAnnStays(): Promise<void> {
    assert.equal(xAnn.closeInfo, undefined, 'X\'s ann is still connected');
    assert.ok(await xAnn.call('presence_stats', { channel: 'chat:room' }));
  }

  /** Connects with `token` at `url`; answers the close code (the connection must close). */
  async function refusedWith(url: string, token: string): Promise<number> {
    const client = await openWs(url);
    client.send({ id: 1, method: 'connect', params: { token } });
    return (await client.waitClose(10000)).code;
  }

  test('a token whose sub begins with ~ is an invalid token, on the server\'s paths and on an app\'s', async () => {
    for (const sub of HOSTILE) {
      assert.equal(await refusedWith(h.wsUrl, await h.token(sub)), disconnects.invalid_token.code, `server token sub ${JSON.stringify(sub)}`);
      assert.equal(await refusedWith(`ws://127.0.0.1:${h.server.port}/apps/${main.id}/connection/websocket`, await h.token(sub)), disconnects.invalid_token.code, `default app path, sub ${JSON.stringify(sub)}`);
      assert.equal(await refusedWith(xUrl(), await xToken(sub)), disconnects.invalid_token.code, `X's token sub ${JSON.stringify(sub)}`);
    }
    await xAnnStays();
    // A refresh naming such a user is refused too (and closes the connection).
    const bob = await openWs(h.wsUrl);
    await bob.connect(await h.token('bob'));
    bob.send({ id: 2, method: 'refresh', params: { token: await h.token('~x~ann') } });
    assert.equal((await bob.waitClose(10000)).code, disconnects.invalid_token.code);
    // Ordinary ids with a ~ later on stay valid.
    const tilde = await openWs(h.wsUrl);
    await tilde.connect(await h.token('ann~x'));
    await xAnnStays();
  });

  test('the connect hook answering a user id beginning with ~ refuses the connection (3504)', async () => {
    for (const user of HOSTILE) {
      assert.equal(await refusedWith(h.wsUrl, await h.token(`hook-as-${user}`)), disconnects.permission_denied.code, `hook user ${JSON.stringify(user)}`);
    }
    await xAnnStays();
    // The same hook's ordinary answer connects as the user it names.
    const carol = await openWs(h.wsUrl);
    await carol.connect(await h.token('hook-as-carol'));
    assert.equal(carol.closeInfo, undefined);
  });

  test('/api disconnect and revoke_user with a user beginning with ~ answer 400 invalid_input and reach nobody', async () => {
    for (const user of HOSTILE) {
      for (const [method, body] of [
        ['disconnect', { user }],
        ['disconnect', { user, reconnect: true }],
        ['revoke_user', { user }],
      ] as const) {
        const answer = await h.api(method, body);
        assert.equal(answer.status, 400, `${method} ${JSON.stringify(body)}: ${JSON.stringify(answer.body)}`);
        assert.equal(answer.body.error.code, 'invalid_input');
      }
    }
    await xAnnStays();
    // No revocation was stored: X's ann's token of before still connects (after closing the first, the cap being 1).
    await xAnn.close();
    xAnn = await openWs(xUrl());
    await xAnn.connect(await xToken('ann'));
    await xAnn.call('subscribe', { channel: 'chat:room' });
    await xAnnStays();
    // The server's own users are reached as before.
    const dave = await openWs(h.wsUrl);
    await dave.connect(await h.token('dave'));
    const done = await h.api('disconnect', { user: 'dave' });
    assert.equal(done.status, 200, JSON.stringify(done.body));
    assert.equal(done.body.disconnected, 1);
    assert.equal((await dave.waitClose(10000)).code, disconnects.force_disconnect.code);
    assert.equal((await h.api('info', {})).status, 200);
  });
});
