/**
 * The promise of the issue, as a user runs it: `HERALD_APP_ID=1
 * HERALD_APP_KEY=k HERALD_APP_SECRET=s herald serve` with nothing else
 * configured serves pusher-js on the public port (private channels signed
 * with that secret), and SIGTERM closes its sockets with 4200. Its
 * switches come from the environment too, as Soketi's
 * SOKETI_DEFAULT_APP_* (HERALD_APP_CLIENT_EVENTS, …_SUBSCRIPTION_COUNT,
 * …_MAX_CONNECTIONS, …_WEBHOOK_URL and …_WEBHOOK_EVENTS, …), each seen in
 * what the server does; a bad value stops the start with a message naming
 * the variable.
 */
import { after, test } from 'node:test';
import { once } from 'node:events';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Pusher from 'pusher';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { connected, disconnectAll, nextEvent, pusherClientOnPort, RawPusher, signSubscription, startAuthServer, subscribed } from '../helpers/pusher-socket.ts';
import { PusherWebhookReceiver } from '../helpers/pusher-webhook-receiver.ts';
import { eventually } from '../helpers/herald-ws.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-env-app-'));
after(() => {
  disconnectAll();
  rmSync(dir, { recursive: true, force: true });
});

test('an app from HERALD_APP_ID/KEY/SECRET alone serves pusher-js', { timeout: 60000 }, async () => {
  const secret = 'env-app-secret-0123456789';
  const herald = new HeraldProcess(['--port', '0', '--admin-port', '0'], dir, { HERALD_APP_ID: '1', HERALD_APP_KEY: 'k', HERALD_APP_SECRET: secret });
  const port = await herald.listeningPort();
  const sdk = new Pusher({ appId: '1', key: 'k', secret, host: '127.0.0.1', port: String(port), useTLS: false });
  const auth = await startAuthServer(sdk, () => ({ user_id: 'u' }));
  try {
    const client = pusherClientOnPort(port, 'k', { channelAuthorization: { endpoint: auth.channelUrl, transport: 'ajax' } });
    await connected(client);
    await subscribed(client, 'private-env');
    const arriving = nextEvent(client, 'private-env', 'hello');
    assert.equal((await sdk.trigger('private-env', 'hello', { from: 'env' })).status, 200);
    assert.deepEqual(await arriving, { from: 'env' });
    const raw = new RawPusher(`ws://127.0.0.1:${port}/app/k?protocol=7&client=test&version=1`);
    await raw.established();
    await herald.stop('SIGTERM');
    assert.equal((await raw.closed).code, 4200);
    assert.equal(raw.frames.find((f) => f.event === 'pusher:error')?.data.code, 4200);
  } finally {
    await auth.close();
    await herald.stop('SIGKILL');
  }
});

test('the env app\'s switches from HERALD_APP_*: client events, subscription counts, a connection cap, a webhook', { timeout: 60000 }, async () => {
  const app = { id: '2', key: 'k2', secret: 'env-app-secret-abcdefghij' };
  const receiver = await PusherWebhookReceiver.start(app);
  const herald = new HeraldProcess(['--port', '0', '--admin-port', '0'], dir, {
    HERALD_APP_ID: app.id,
    HERALD_APP_KEY: app.key,
    HERALD_APP_SECRET: app.secret,
    HERALD_APP_CLIENT_EVENTS: 'true',
    HERALD_APP_SUBSCRIPTION_COUNT: '1',
    HERALD_APP_MAX_CONNECTIONS: '2',
    HERALD_APP_WEBHOOK_URL: receiver.url,
    HERALD_APP_WEBHOOK_EVENTS: 'channel_occupied, client_event',
  });
  const sockets: RawPusher[] = [];
  try {
    const port = await herald.listeningPort();
    const open = async (): Promise<[RawPusher, string]> => {
      const raw = new RawPusher(`ws://127.0.0.1:${port}/app/${app.key}?protocol=7&client=test&version=1`);
      sockets.push(raw);
      return [raw, await raw.established()];
    };
    const subscribe = async (raw: RawPusher, socketId: string, channel: string): Promise<void> => {
      raw.send({ event: 'pusher:subscribe', data: { channel, ...(channel.startsWith('private-') ? { auth: signSubscription(app, socketId, channel) } : {}) } });
      await raw.next((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === channel);
    };
    const [a, aId] = await open();
    const [b, bId] = await open();
    // Client events on (HERALD_APP_CLIENT_EVENTS): a's event reaches b.
    await subscribe(a, aId, 'private-room');
    await subscribe(b, bId, 'private-room');
    a.send({ event: 'client-typing', channel: 'private-room', data: { who: 'a' } });
    assert.deepEqual((await b.next((f) => f.event === 'client-typing')).data, { who: 'a' });
    // Subscription counting on (HERALD_APP_SUBSCRIPTION_COUNT): the count of a public channel.
    await subscribe(a, aId, 'news');
    await subscribe(b, bId, 'news');
    await a.next((f) => f.event === 'pusher_internal:subscription_count' && f.channel === 'news' && f.data.subscription_count === 2);
    // The cap (HERALD_APP_MAX_CONNECTIONS=2): a third socket is refused with 4100.
    const third = new RawPusher(`ws://127.0.0.1:${port}/app/${app.key}?protocol=7&client=test&version=1`);
    sockets.push(third);
    assert.equal((await third.event('pusher:error')).data.code, 4100);
    // The webhook (HERALD_APP_WEBHOOK_URL, …_EVENTS), signed with the app's secret: the events named, no other.
    await eventually(async () => (receiver.events().some((e) => e.name === 'client_event' && e.channel === 'private-room') ? true : undefined), 'the client_event webhook');
    await eventually(async () => (receiver.events().some((e) => e.name === 'channel_occupied' && e.channel === 'news') ? true : undefined), 'the channel_occupied webhook');
    assert.deepEqual([...new Set(receiver.events().map((e) => e.name))].sort(), ['channel_occupied', 'client_event']);
  } finally {
    for (const raw of sockets) raw.close();
    await herald.stop('SIGKILL');
    await receiver.close();
  }
});

test('a bad HERALD_APP_* switch stops the start, naming the variable', { timeout: 60000 }, async () => {
  const base = { HERALD_APP_ID: '3', HERALD_APP_KEY: 'k3', HERALD_APP_SECRET: 'env-app-secret-abcdefghij' };
  for (const [env, expected] of [
    [{ ...base, HERALD_APP_CLIENT_EVENTS: 'yes' }, /HERALD_APP_CLIENT_EVENTS must be true or false \(or 1 or 0\), not "yes"/],
    [{ ...base, HERALD_APP_MAX_CONNECTIONS: '-1' }, /HERALD_APP_MAX_CONNECTIONS must be a whole number.*Soketi's -1/],
    [{ ...base, HERALD_APP_CLIENT_EVENTS_PER_SECOND: '0' }, /clientEventsPerSecond: must be at least 1.*\(set by HERALD_APP_CLIENT_EVENTS_PER_SECOND\)/],
    [{ ...base, HERALD_APP_WEBHOOK_URL: 'http://127.0.0.1:9/hooks', HERALD_APP_WEBHOOK_EVENTS: 'channel_occupied,channel_ocupied' }, /webhooks\/0\/events\/1: must be one of: .*\(got channel_ocupied\) \(set by HERALD_APP_WEBHOOK_EVENTS\)/],
    [{ ...base, HERALD_APP_WEBHOOK_URL: 'http://127.0.0.1:9/hooks' }, /HERALD_APP_WEBHOOK_URL and HERALD_APP_WEBHOOK_EVENTS go together/],
    [{ HERALD_APP_SUBSCRIPTION_COUNT: 'true' }, /HERALD_APP_SUBSCRIPTION_COUNT: it sets the app of HERALD_APP_ID, HERALD_APP_KEY and HERALD_APP_SECRET, which are not set/],
  ] as const) {
    const herald = new HeraldProcess(['--port', '0', '--admin-port', '0'], dir, env);
    const [code] = (await once(herald.child, 'exit')) as [number | null];
    assert.notEqual(code, 0, JSON.stringify(env));
    assert.match(herald.stderr, expected);
    assert.ok(!herald.stderr.includes(base.HERALD_APP_SECRET), 'the secret is never in a message');
  }
});
