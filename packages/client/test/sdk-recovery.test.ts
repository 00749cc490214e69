/**
 * Recovery and fallback against a real Herald behind a proxy that can
 * misbehave (packages/server/test/helpers/proxy.ts):
 *
 * - recovery on each transport: the server drops the connection (API
 *   `disconnect` with `reconnect: true`, 3007) while the network is down,
 *   publications happen meanwhile, the network comes back: every
 *   publication arrives once, in order, and `subscribed` says recovered;
 * - a raw network drop (sockets cut) on WebSocket, same promise;
 * - history no longer covering the gap: `recovered: false`;
 * - fallback: WebSocket upgrade refused → SSE; SSE also buffered by the
 *   proxy (no `connected` within the connect timeout) → long polling.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { startHerald, type TestHerald } from '../../server/test/helpers/herald.ts';
import { startProxy, type TestProxy } from '../../server/test/helpers/proxy.ts';
import { recordedClient, recordSubscription, type RecordedClient } from './sdk-helpers.ts';
import { waitUntil } from '../../server/test/helpers/rt-util.ts';
import { sdkCodes, type TransportName } from '../src/index.ts';

const unique = (prefix: string) => `${prefix}-${randomBytes(4).toString('hex')}`;

describe('SDK recovery and transport fallback', { timeout: 90000 }, () => {
  let h: TestHerald;
  let proxy: TestProxy;
  const clients: RecordedClient[] = [];

  before(async () => {
    h = await startHerald({ channels: { namespaces: [{ name: 'chat', presence: true, joinLeave: true, clientPublish: true }, { name: 'short', historySize: 2 }, { name: 'px', historySize: 4, conflation: { enabled: true, key: 'sym' } }] } });
    proxy = await startProxy(h.url);
  });
  after(async () => {
    for (const { client } of clients) client.disconnect();
    await proxy.close();
    await h.close();
  });

  function client(options: Parameters<typeof recordedClient>[0]): RecordedClient {
    const recorded = recordedClient({ url: proxy.url, ...options });
    clients.push(recorded);
    return recorded;
  }

  async function publish(channel: string, data: unknown): Promise<number> {
    const answer = await h.api('publish', { channel, data });
    assert.equal(answer.status, 200, JSON.stringify(answer.body));
    return answer.body.offset;
  }

  for (const transport of ['websocket', 'sse', 'long-poll'] as const satisfies readonly TransportName[]) {
    test(`${transport}: server drops the connection (3007), publications while down arrive once, in order, recovered`, async () => {
      const user = unique('rec');
      const channels = [unique('chat:rec-a'), unique('chat:rec-b')];
      const c = client({ transports: [transport], token: await h.token(user) });
      const subs = channels.map((channel) => recordSubscription<{ n: number }>(c.client.subscribe(channel)));
      c.client.connect();
      await c.waitFor('connected');
      for (const s of subs) await s.waitForSubscribed();
      for (let n = 1; n <= 3; n++) for (const channel of channels) await publish(channel, { n });
      for (const s of subs) await s.waitForPublications(3);

      proxy.down = true;
      try {
        const answer = await h.api('disconnect', { user, reconnect: true });
        assert.equal(answer.body.disconnected, 1);
        // Long polling is always requesting: its next poll may fail at the proxy before the 3007 arrives.
        const connecting = await c.waitFor('connecting', (e) => e.code !== 0, 'connecting after the drop');
        if (transport !== 'long-poll') assert.deepEqual(connecting, { code: 3007, reason: 'force reconnect' });
        for (let n = 4; n <= 8; n++) for (const channel of channels) await publish(channel, { n });
        // the client keeps trying (and failing) while the network is down
        await c.waitFor('error', (e) => e.code === sdkCodes.transport_failed.code, 'a failed attempt while down');
        assert.equal(c.client.state, 'connecting');
      } finally {
        proxy.down = false;
      }

      await c.waitFor('connected', (e) => e !== undefined && c.count('connected') >= 2, 'reconnected');
      assert.equal(c.client.transport, transport);
      for (const s of subs) {
        await s.waitForPublications(8);
        const again = await s.waitForSubscribed(2);
        assert.equal(again.wasRecovering, true);
        assert.equal(again.recovered, true);
      }
      await publish(channels[0]!, { n: 9 });
      await subs[0]!.waitForPublications(9);
      for (const [i, s] of subs.entries()) {
        const expected = i === 0 ? [1, 2, 3, 4, 5, 6, 7, 8, 9] : [1, 2, 3, 4, 5, 6, 7, 8];
        assert.deepEqual(s.publications.map((p) => p.offset), expected, 'every publication once, in order');
        assert.deepEqual(s.publications.map((p) => p.data.n), expected);
      }
      c.client.disconnect();
    });
  }

  test('websocket: a network drop (sockets cut, no close frame) is recovered the same way', async () => {
    const channel = unique('chat:drop');
    const c = client({ transports: ['websocket'], token: await h.token(unique('drop')) });
    const s = recordSubscription(c.client.subscribe(channel));
    c.client.connect();
    await s.waitForSubscribed();
    await publish(channel, 1);
    await s.waitForPublications(1);
    proxy.down = true;
    try {
      proxy.dropAll();
      const connecting = await c.waitFor('connecting', (e) => e.code !== 0, 'connecting after the drop');
      assert.equal(connecting.code, 1006);
      await publish(channel, 2);
      await publish(channel, 3);
    } finally {
      proxy.down = false;
    }
    await s.waitForPublications(3);
    assert.deepEqual(s.publications.map((p) => p.offset), [1, 2, 3]);
    assert.deepEqual(s.subscribed.map((e) => [e.wasRecovering, e.recovered]), [[false, false], [true, true]]);
    c.client.disconnect();
  });

  test('history trimmed while away: subscribed with wasRecovering and recovered false, then live', async () => {
    const user = unique('short');
    const channel = unique('short:x');
    const c = client({ transports: ['sse'], token: await h.token(user) });
    const s = recordSubscription(c.client.subscribe(channel));
    c.client.connect();
    await s.waitForSubscribed();
    await publish(channel, 1);
    await s.waitForPublications(1);
    proxy.down = true;
    try {
      await h.api('disconnect', { user, reconnect: true });
      await c.waitFor('connecting', (e) => e.code === 3007);
      for (let n = 2; n <= 6; n++) await publish(channel, n); // historySize 2: 2..4 are gone
    } finally {
      proxy.down = false;
    }
    const again = await s.waitForSubscribed(2);
    assert.deepEqual([again.wasRecovering, again.recovered, again.offset], [true, false, 6]);
    await publish(channel, 7);
    await s.waitForPublications(2);
    assert.deepEqual(s.publications.map((p) => p.offset), [1, 7], 'nothing replayed, nothing duplicated, live from the new position');
    c.client.disconnect();
  });

  for (const transport of ['websocket', 'sse', 'long-poll'] as const satisfies readonly TransportName[]) {
    test(`${transport}: conflated channel trimmed while away: the latest value per key follows, skips are no gap, then live`, async () => {
      const user = unique('px');
      const channel = unique('px:prices');
      const c = client({ transports: [transport], token: await h.token(user) });
      const s = recordSubscription<{ sym: string; n: number }>(c.client.subscribe(channel));
      c.client.connect();
      const first = await s.waitForSubscribed();
      assert.equal(first.conflated, true);
      await publish(channel, { sym: 'A', n: 1 });
      await s.waitForPublications(1);
      proxy.down = true;
      try {
        await h.api('disconnect', { user, reconnect: true });
        await c.waitFor('connecting', (e) => e.code === 3007 || (transport === 'long-poll' && e.code !== 0));
        // historySize 4: offsets 2..5 are gone; B's newest is 7, A's 9 (which skips 8: prev 7).
        for (let n = 2; n <= 9; n++) await publish(channel, { sym: n === 3 || n === 7 ? 'B' : 'A', n });
      } finally {
        proxy.down = false;
      }
      const again = await s.waitForSubscribed(2);
      assert.deepEqual([again.wasRecovering, again.recovered, again.conflated, again.offset], [true, false, true, 6]);
      await s.waitForPublications(3);
      await publish(channel, { sym: 'A', n: 10 });
      await s.waitForPublications(4);
      assert.deepEqual(
        s.publications.map((p) => [p.offset, p.data.sym, p.data.n]),
        [
          [1, 'A', 1],
          [7, 'B', 7],
          [9, 'A', 9],
          [10, 'A', 10],
        ],
        'the latest value per key, then live, with no resubscription for the skips',
      );
      assert.equal(s.subscribed.length, 2);
      c.client.disconnect();
    });
  }

  test('WebSocket upgrade refused → falls back to SSE', async () => {
    proxy.refuseUpgrades = true;
    try {
      const channel = unique('chat:fb-sse');
      const c = client({ token: await h.token('fallback') });
      assert.deepEqual(c.client.transports, ['websocket', 'sse', 'long-poll']);
      const s = recordSubscription(c.client.subscribe(channel));
      c.client.connect();
      const connected = await c.waitFor('connected');
      assert.equal(connected.transport, 'sse');
      const failed = c.events.filter(([n]) => n === 'error').map(([, e]) => e);
      assert.deepEqual(failed.map((e) => [e.code, e.transport]), [[sdkCodes.transport_failed.code, 'websocket']]);
      await s.waitForSubscribed();
      await publish(channel, 'via sse');
      await s.waitForPublications(1);
      assert.equal(s.publications[0]?.data, 'via sse');
      c.client.disconnect();
    } finally {
      proxy.refuseUpgrades = false;
    }
  });

  test('upgrade refused and event streams buffered by the proxy → falls back to long polling', async () => {
    proxy.refuseUpgrades = true;
    proxy.bufferStreams = true;
    try {
      const channel = unique('chat:fb-lp');
      const c = client({ token: await h.token('buffered'), connectTimeoutMs: 1000 });
      const s = recordSubscription(c.client.subscribe(channel));
      c.client.connect();
      const connected = await c.waitFor('connected');
      assert.equal(connected.transport, 'long-poll');
      const failed = c.events.filter(([n]) => n === 'error').map(([, e]) => [e.transport, e.message]);
      assert.deepEqual(failed, [
        ['websocket', 'websocket: connection lost'],
        ['sse', 'sse: connect timeout'],
      ]);
      await s.waitForSubscribed();
      await publish(channel, 'via long polling');
      await s.waitForPublications(1);
      const sent = await s.sub.publish('from the client');
      assert.equal(sent.offset, 2);
      await s.waitForPublications(2);
      // the abandoned SSE connection is gone from the server: only the long-poll one is present
      const presence = await s.sub.presence();
      assert.equal(Object.keys(presence).length, 1);
      c.client.disconnect();
    } finally {
      proxy.refuseUpgrades = false;
      proxy.bufferStreams = false;
    }
  });

  test('after a fallback, reconnects start with the transport that worked', async () => {
    proxy.refuseUpgrades = true;
    try {
      const user = unique('sticky');
      const c = client({ token: await h.token(user) });
      c.client.connect();
      await c.waitFor('connected');
      assert.equal(c.client.transport, 'sse');
      const errorsBefore = c.count('error');
      await h.api('disconnect', { user, reconnect: true });
      await waitUntil(() => c.count('connected') === 2, { label: 'reconnected' });
      assert.equal(c.client.transport, 'sse');
      assert.equal(c.count('error'), errorsBefore, 'WebSocket was not tried again');
      c.client.disconnect();
    } finally {
      proxy.refuseUpgrades = false;
    }
  });
});
