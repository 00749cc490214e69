/**
 * Webhook events beside the transitions (docs/hooks.md, "Events"):
 * client_connected and client_disconnected with the transport and the
 * disconnect code the client saw; publications only of the namespaces in
 * webhooks.publicationNamespaces (API publishes without a client, client
 * publishes with it); and per-endpoint filters: `events`, and `namespaces`
 * for channel events only (connection events reach every endpoint that
 * takes them).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHerald } from '../helpers/herald.ts';
import { connectWs, eventually } from '../helpers/herald-ws.ts';
import { WebhookReceiver } from '../helpers/webhook-receiver.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-webhook-events-'));
after(() => rmSync(dir, { recursive: true, force: true }));

describe('webhook events and endpoint filters', () => {
  it('connections, publications of chosen namespaces, and per-endpoint event and namespace filters', async () => {
    const secret = randomBytes(32).toString('base64url');
    writeFileSync(join(dir, 'key'), secret, { mode: 0o600 });
    const key = { id: 'k1', secret };
    const everything = await WebhookReceiver.start([key]);
    const chatOnly = await WebhookReceiver.start([key]);
    const keys = [{ id: 'k1', secretFile: join(dir, 'key') }];
    const h = await startHerald({
      channels: { namespaces: [{ name: 'chat', clientPublish: true }, { name: 'audit', clientPublish: true }, { name: 'other' }] },
      webhooks: {
        endpoints: [
          { name: 'everything', url: everything.url, keys, events: ['client_connected', 'client_disconnected', 'publication', 'channel_occupied'] },
          { name: 'chat-only', url: chatOnly.url, keys, events: ['client_connected', 'publication', 'channel_occupied'], namespaces: ['chat'] },
        ],
        publicationNamespaces: ['chat'],
        batchWindowMs: 20,
        pollIntervalMs: 200,
      },
    });
    try {
      const alice = await connectWs(h, 'alice');
      await alice.call('subscribe', { channel: 'chat:room' });
      await alice.call('subscribe', { channel: 'other:room' });
      await alice.call('publish', { channel: 'chat:room', data: { by: 'client' } });
      await alice.call('publish', { channel: 'audit:log', data: { by: 'client' } });
      assert.equal((await h.api('publish', { channel: 'chat:room', data: { by: 'api' } })).status, 200);
      assert.equal((await h.api('publish', { channel: 'audit:log', data: { by: 'api' } })).status, 200);
      const bob = await connectWs(h, 'bob');
      assert.equal((await h.api('disconnect', { user: 'bob' })).status, 200);
      const closed = await bob.waitClose(10000);

      const all = await eventually(async () => {
        const events = everything.events();
        return events.some((e) => e.name === 'client_disconnected' && e.user === 'bob') && events.filter((e) => e.name === 'publication').length === 2 ? events : undefined;
      }, 'every event at the unfiltered endpoint', 15000);
      const connected = all.filter((e) => e.name === 'client_connected');
      assert.deepEqual(connected.map((e) => [e.user, e.transport, typeof e.client]), [['alice', 'websocket', 'string'], ['bob', 'websocket', 'string']]);
      const gone = all.find((e) => e.name === 'client_disconnected')!;
      assert.deepEqual([gone.user, gone.transport, gone.client, gone.code, gone.reason], ['bob', 'websocket', connected[1]!.client, closed.code, closed.reason], 'the code and reason the client saw');
      const publications = all.filter((e) => e.name === 'publication');
      assert.deepEqual(
        publications.map((e) => [e.channel, e.data, e.user]),
        [
          ['chat:room', { by: 'client' }, 'alice'],
          ['chat:room', { by: 'api' }, undefined],
        ],
        'publications of chat only (not audit); a client publish names its client and user, an API publish nobody',
      );
      assert.equal(publications[0]!.client, alice.clientId);
      assert.deepEqual(all.filter((e) => e.name === 'channel_occupied').map((e) => e.channel).sort(), ['chat:room', 'other:room']);
      assert.equal(all.filter((e) => e.name === 'member_added').length, 0, 'events the endpoint did not ask for are not sent');

      // The chat-only endpoint: channel events of chat only; connection events (no channel) all the same.
      const chat = await eventually(async () => {
        const events = chatOnly.events();
        return events.filter((e) => e.name === 'publication').length === 2 && events.filter((e) => e.name === 'client_connected').length === 2 ? events : undefined;
      }, 'the chat-only endpoint', 15000);
      assert.deepEqual(chat.filter((e) => e.name === 'channel_occupied').map((e) => e.channel), ['chat:room']);
      assert.ok(chat.every((e) => e.channel === undefined || e.channel.startsWith('chat:')), 'no channel event of another namespace');
      assert.equal(chat.filter((e) => e.name === 'client_disconnected').length, 0, 'not in its events');
      await alice.close();
    } finally {
      await h.close();
      await everything.close();
      await chatOnly.close();
    }
  });
});
