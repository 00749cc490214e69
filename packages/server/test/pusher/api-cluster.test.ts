/**
 * The Pusher HTTP API in cluster mode (`herald serve --workers 2`, sqlite
 * engine): pusher-js tabs of two users on one presence channel, handed to
 * the workers in turn, and the `pusher` SDK's requests, answered by either
 * worker. Users and user_count come from the cluster's presence; triggers
 * reach the tabs on both workers, socket_id exclusion included; terminate
 * closes the user's tabs on both.
 */
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eventually } from '../helpers/herald-ws.ts';
import { disconnectAll, nextEvent, serverSdk, startSignedUsers, subscribed, testApp, type PusherClient } from '../helpers/pusher-socket.ts';
import { startHeraldWorkers } from '../cluster/harness.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-pusher-cluster-api-'));
after(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => disconnectAll());

describe('Pusher HTTP API in cluster mode', () => {
  it('two workers: users and counts of tabs on both, triggers to both (socket_id excluded), terminate on both', async () => {
    const app = testApp('1');
    writeFileSync(join(dir, 'app-secret'), app.secret, { mode: 0o600 });
    const herald = await startHeraldWorkers(dir, { apps: { list: [{ id: app.id, key: app.key, secretFile: join(dir, 'app-secret') }] } });
    const { channelsByNode } = herald;
    try {
      const sdk = serverSdk(herald.port, app);
      const users = await startSignedUsers(herald.port, app);
      try {
        const baseline = await channelsByNode();
        // Three tabs each of amy and ben, signed in: the primary hands connections to the workers in turn.
        const tabs: { user: string; client: PusherClient; socketId: string }[] = [];
        for (let i = 0; i < 3; i++) {
          for (const user of ['amy', 'ben']) {
            const { c: client, socketId } = await users.client(user, { signIn: true });
            await subscribed(client, 'presence-room');
            tabs.push({ user, client, socketId });
          }
        }
        // Both workers hold the channel (each node's snapshot, at most a few seconds old).
        await eventually(async () => {
          const now = await channelsByNode();
          return [...now].every(([id, n]) => n > (baseline.get(id) ?? 0)) ? true : undefined;
        }, 'the channel on both workers', 15000);
        // Every request (handed to either worker) sees both users once.
        for (let i = 0; i < 4; i++) {
          assert.deepEqual(await (await sdk.get({ path: '/channels/presence-room/users' })).json(), { users: [{ id: 'amy' }, { id: 'ben' }] });
          assert.deepEqual(await (await sdk.get({ path: '/channels/presence-room', params: { info: 'user_count' } })).json(), { occupied: true, user_count: 2 });
        }
        // A trigger excluding the first tab reaches the five others, on both workers.
        const excluded = tabs[0]!;
        const seenByExcluded: unknown[] = [];
        excluded.client.channel('presence-room').bind('news', (data: unknown) => seenByExcluded.push(data));
        const others = tabs.slice(1).map((tab) => nextEvent(tab.client, 'presence-room', 'news', 10000));
        await sdk.trigger('presence-room', 'news', { n: 1 }, { socket_id: excluded.socketId });
        assert.deepEqual(await Promise.all(others), Array.from({ length: 5 }, () => ({ n: 1 })));
        const toExcluded = nextEvent(excluded.client, 'presence-room', 'news', 10000);
        await sdk.trigger('presence-room', 'news', { n: 2 });
        assert.deepEqual(await toExcluded, { n: 2 });
        assert.deepEqual(seenByExcluded, [{ n: 2 }]);
        // Terminate amy: her three tabs close with 4009, wherever they are; ben's stay.
        const amyTabs = tabs.filter((tab) => tab.user === 'amy');
        const closed = Promise.all(amyTabs.map((tab) => new Promise<any>((resolve) => tab.client.connection.bind('error', resolve))));
        await sdk.terminateUserConnections('amy');
        for (const error of await closed) assert.equal((error.error?.data ?? error.data).code, 4009);
        for (const tab of tabs.filter((t) => t.user === 'ben')) assert.equal(tab.client.connection.state, 'connected');
        await eventually(async () => {
          const answer = await (await sdk.get({ path: '/channels/presence-room/users' })).json();
          return answer.users.length === 1 ? answer : undefined;
        }, 'amy gone from the users');
      } finally {
        await users.close();
      }
    } finally {
      disconnectAll();
      await herald.stop();
    }
  });
});
