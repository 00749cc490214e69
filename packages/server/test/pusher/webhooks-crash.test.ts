/**
 * Pusher webhooks across a crash (sqlite engine, one process): a
 * channel occupied by pusher-js clients, then SIGKILL. The state file's
 * journal holds what was open, so the next start tells the app's URL
 * that the channel was vacated (its app-local name, signed with the app's
 * secret): receivers are never left with a channel occupied forever.
 * Events the receiver had not taken yet (it answered 503) are sent after
 * the restart from the outbox in the state file.
 */
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { PusherWebhookReceiver } from '../helpers/pusher-webhook-receiver.ts';
import { connected, disconnectAll, pusherClient, subscribed, testApp, type PusherHerald } from '../helpers/pusher-socket.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-pusher-webhooks-crash-'));
after(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => disconnectAll());

describe('Pusher webhooks across a crash', () => {
  it('after SIGKILL the next start sends channel_vacated for what was open, and what the receiver had not taken', async () => {
    const app = testApp('1');
    // Takes the first request (occupied), refuses while `refusing`.
    let refusing = false;
    const receiver = await PusherWebhookReceiver.start(app, () => (refusing ? 503 : 200));
    writeFileSync(join(dir, 'app-secret'), app.secret, { mode: 0o600 });
    writeFileSync(join(dir, 'hmac'), randomBytes(32).toString('base64url'), { mode: 0o600 });
    const config = join(dir, 'herald.json');
    writeFileSync(
      config,
      JSON.stringify({
        auth: { hmacSecretFile: join(dir, 'hmac') },
        listen: { host: '127.0.0.1', port: 0 },
        admin: { port: 0 },
        stateDir: join(dir, 'state'),
        log: { level: 'info' },
        process: { allowRoot: true },
        apps: { list: [{ id: app.id, key: app.key, secretFile: join(dir, 'app-secret'), webhooks: [{ url: receiver.url, events: ['channel_occupied', 'channel_vacated'] }] }] },
        webhooks: { batchWindowMs: 20, backoffMinMs: 50, backoffMaxMs: 200, pollIntervalMs: 200 },
      }),
    );
    const env = { HERALD_API_KEY: randomBytes(24).toString('base64url') };
    let herald = new HeraldProcess(['--config', config], dir, env);
    try {
      const port = await herald.listeningPort();
      const target = { server: { port } } as unknown as PusherHerald;
      const client = pusherClient(target, app.key);
      await connected(client);
      await subscribed(client, 'orders');
      await eventually(async () => (receiver.events().length === 1 ? true : undefined), 'channel_occupied orders');
      // Another channel occupied while the receiver refuses: pending in the state file at the crash.
      refusing = true;
      await subscribed(client, 'invoices');
      await eventually(async () => (receiver.requests.length >= 2 ? true : undefined), 'a refused attempt');
      await herald.stop('SIGKILL');
      disconnectAll();
      refusing = false;
      herald = new HeraldProcess(['--config', config], dir, env);
      await herald.listeningPort();
      const events = await eventually(async () => (receiver.events().length >= 4 ? receiver.events() : undefined), 'the events after the restart');
      await new Promise((resolve) => setTimeout(resolve, 500));
      const lines = receiver.events().map((e) => `${e.name} ${e.channel}`);
      assert.equal(lines[0], 'channel_occupied orders');
      assert.deepEqual([...lines].sort(), ['channel_occupied invoices', 'channel_occupied orders', 'channel_vacated invoices', 'channel_vacated orders']);
      // Per channel in order: occupied before vacated.
      assert.ok(lines.indexOf('channel_occupied invoices') < lines.indexOf('channel_vacated invoices'));
      assert.equal(events.length, 4);
      assert.ok(receiver.requests.every((r) => r.valid), 'every request verifies');
    } finally {
      disconnectAll();
      await herald.stop();
      await receiver.close();
    }
  });
});
