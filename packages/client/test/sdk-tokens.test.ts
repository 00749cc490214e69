/**
 * Tokens through the SDK against a real Herald: refresh before expiry on a
 * live connection (the `refresh` command), an expired token at connect
 * (3003 / 401 token_expired → `getToken` → connected), 3003 without
 * `getToken` (terminal), and subscription tokens for private namespaces,
 * recovered after a reconnect.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startHerald, type TestHerald } from '../../server/test/helpers/herald.ts';
import { recordedClient, recordSubscription, type RecordedClient } from './sdk-helpers.ts';
import { sleep, waitUntil } from '../../server/test/helpers/rt-util.ts';
import type { TransportName } from '../src/index.ts';

const unique = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;
const transports = ['websocket', 'sse', 'long-poll'] as const satisfies readonly TransportName[];

describe('SDK tokens', { timeout: 60000 }, () => {
  let h: TestHerald;
  const clients: RecordedClient[] = [];

  before(async () => {
    h = await startHerald({
      auth: { expiryGraceMs: 1000 },
      channels: {
        namespaces: [
          { name: 'chat', presence: true, joinLeave: true, clientPublish: true },
          { name: 'secret', private: true },
        ],
      },
    });
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

  test('a token about to expire is refreshed on the live connection, on every transport: no reconnect', async () => {
    const runs = transports.map(async (transport) => {
      const user = unique('refresh');
      let calls = 0;
      const getToken = async () => {
        calls++;
        return h.token(user, {}, calls === 1 ? 3 : 3600);
      };
      const c = client({ transports: [transport], getToken });
      const s = recordSubscription(c.client.subscribe(unique('chat:refresh')));
      c.client.connect();
      const connected = await c.waitFor('connected');
      assert.ok(connected.ttl <= 3, `ttl ${connected.ttl}`);
      await waitUntil(() => calls >= 2, { label: `${transport}: getToken called for the refresh` });
      // Past exp + grace of the first token: a connection that was not refreshed is closed by now.
      await sleep(4500);
      await h.api('publish', { channel: s.sub.channel, data: 'still here' });
      await s.waitForPublications(1);
      assert.equal(c.client.state, 'connected');
      assert.equal(c.count('connecting'), 1, `${transport}: no reconnect: ${JSON.stringify(c.events)}`);
      assert.equal(c.count('connected'), 1);
      assert.ok(calls >= 2);
      c.client.disconnect();
    });
    await Promise.all(runs);
  });

  for (const transport of transports) {
    test(`${transport}: an expired token at connect is replaced through getToken`, async () => {
      const user = unique('expired');
      let calls = 0;
      const c = client({
        transports: [transport],
        token: await h.token(user, {}, -60),
        getToken: async () => {
          calls++;
          return h.token(user);
        },
      });
      c.client.connect();
      await c.waitFor('connected');
      assert.equal(calls, 1);
      assert.equal(c.count('disconnected'), 0);
      c.client.disconnect();
    });
  }

  test('an expired token without getToken: disconnected with 3003', async () => {
    const c = client({ transports: ['websocket'], token: await h.token('nobody', {}, -60) });
    c.client.connect();
    const disconnected = await c.waitFor('disconnected');
    assert.equal(disconnected.code, 3003);
  });

  for (const transport of ['websocket', 'sse'] as const) {
    test(`${transport}: private channel with a subscription token, recovered after the server drops the connection`, async () => {
      const user = unique('priv');
      const channel = unique('secret:room');
      let tokenCalls = 0;
      const c = client({ transports: [transport], token: await h.token(user) });
      const s = recordSubscription(
        c.client.subscribe(channel, {
          getToken: async (name) => {
            tokenCalls++;
            return h.token(user, { channel: name });
          },
        }),
      );
      const denied = recordSubscription(c.client.subscribe(unique('secret:denied')));
      c.client.connect();
      await s.waitForSubscribed();
      await waitUntil(() => denied.unsubscribed.length === 1, { label: 'a private channel without token is refused' });
      assert.equal(denied.unsubscribed[0]?.code, 103);
      await h.api('publish', { channel, data: 1 });
      await s.waitForPublications(1);
      await h.api('disconnect', { user, reconnect: true });
      await c.waitFor('connecting', (e) => e.code === 3007);
      await h.api('publish', { channel, data: 2 });
      const again = await s.waitForSubscribed(2);
      assert.deepEqual([again.wasRecovering, again.recovered], [true, true]);
      await s.waitForPublications(2);
      assert.deepEqual(s.publications.map((p) => p.data), [1, 2]);
      assert.equal(tokenCalls, 1, 'the subscription token is reused until it expires');
      c.client.disconnect();
    });
  }
});
