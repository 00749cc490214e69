/**
 * Pusher apps' webhooks end to end (one process, memory and sqlite
 * engines): a real Herald with two apps POSTs Pusher-format batches to two
 * real receivers that verify every request with the `pusher` SDK's
 * webhook verifier. Channel events come from the node's transitions: native
 * subscriptions on the default app's channels, and a hub tap (as the Pusher
 * endpoint adds one) on the other app's. SECURITY-TESTS.md 40 for Pusher
 * webhooks: every request verifies, a body changed in transit does not.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { connectWs, eventually } from '../helpers/herald-ws.ts';
import { PusherWebhookReceiver } from '../helpers/pusher-webhook-receiver.ts';
import { channelPrefixOf } from '../../src/apps/apps.ts';
import type { ChannelTap } from '../../src/core/hub.ts';
import { WebhookReceiver } from '../helpers/webhook-receiver.ts';
import { createServer, type Server } from 'node:http';
import { execFile } from 'node:child_process';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-pusher-webhooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

interface TestApp {
  readonly id: string;
  readonly key: string;
  readonly secret: string;
  readonly secretFile: string;
}

function testApp(id: string): TestApp {
  const secret = randomBytes(20).toString('hex');
  const secretFile = join(dir, `${id}-${randomBytes(4).toString('hex')}`);
  writeFileSync(secretFile, secret + '\n', { mode: 0o600 });
  return { id, key: `key-${id}-${randomBytes(4).toString('hex')}`, secret, secretFile };
}

const ALL = ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed', 'client_event', 'cache_miss', 'subscription_count'];
const TRANSITIONS = ALL.filter((name) => name !== 'subscription_count');

function appsConfig(apps: { app: TestApp; webhooks: { url: string; events?: string[]; channelPrefix?: string }[] }[], engine: string, extra: Record<string, unknown> = {}) {
  return {
    engine: { type: engine },
    apps: {
      list: apps.map(({ app, webhooks }) => ({ id: app.id, key: app.key, secretFile: app.secretFile, webhooks: webhooks.map((w) => ({ events: ALL, ...w })) })),
      default: apps[0]!.app.id,
    },
    webhooks: { batchWindowMs: 20, backoffMinMs: 20, backoffMaxMs: 100, pollIntervalMs: 200, ...extra },
  };
}

/** A tap standing for one subscriber of another protocol (what the Pusher endpoint adds per channel). */
function tap(): ChannelTap {
  return { size: 1, deliverPublication: () => 0, deliverJoinLeave: () => {}, reset: () => {} };
}

/** `herald ARGS` as a user runs it: exit code, stdout, stderr. */
function cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args], { env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? 1), stdout, stderr });
    });
  });
}

function summary(events: { name: string; channel?: string; user_id?: string }[]): string[] {
  return events.map((e) => `${e.name} ${e.channel}${e.user_id === undefined ? '' : ' ' + e.user_id}`);
}

for (const engine of ['memory', 'sqlite']) {
  describe(`Pusher webhooks per app (${engine} engine)`, () => {
    it('each app gets its own channels\' events with app-local names, signed with its secret, verified by the pusher SDK; members once per user', async () => {
      const a = testApp('a');
      const b = testApp('b');
      const ra = await PusherWebhookReceiver.start(a);
      const rb = await PusherWebhookReceiver.start(b);
      // Herald's own format beside them: the native channels only, never app b's internal names.
      const heraldKey = { id: 'k1', secret: randomBytes(32).toString('base64url') };
      const heraldKeyFile = join(dir, `herald-${randomBytes(4).toString('hex')}`);
      writeFileSync(heraldKeyFile, heraldKey.secret, { mode: 0o600 });
      const herald = await WebhookReceiver.start([heraldKey]);
      let h: TestHerald | undefined;
      try {
        h = await startHerald(
          // Without subscription_count: its once-a-second sample may fall while chat:room is occupied (an extra event, timing-dependent).
          appsConfig([{ app: a, webhooks: [{ url: ra.url, events: TRANSITIONS }] }, { app: b, webhooks: [{ url: rb.url, events: TRANSITIONS }] }], engine, {
            endpoints: [{ name: 'herald', url: herald.url, keys: [{ id: 'k1', secretFile: heraldKeyFile }], events: ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed'] }],
          }),
        );
        // The default app's channels are the native protocol's: native subscribers make them occupied.
        const alice1 = await connectWs(h, 'alice');
        await alice1.call('subscribe', { channel: 'chat:room' });
        const bob = await connectWs(h, 'bob');
        await bob.call('subscribe', { channel: 'chat:room' });
        const alice2 = await connectWs(h, 'alice');
        await alice2.call('subscribe', { channel: 'chat:room' });
        await alice1.call('unsubscribe', { channel: 'chat:room' });
        await alice2.call('unsubscribe', { channel: 'chat:room' });
        await bob.call('unsubscribe', { channel: 'chat:room' });
        // App b's channel "presence-room": one tap, one member with two connections.
        const node = h.server.node;
        const internal = channelPrefixOf(b.id) + 'presence-room';
        const t = tap();
        await node.hub.addTap(internal, t);
        await node.addMember(internal, { client: '1.1', user: 'u1', chan_info: { name: 'U' } }, true, true);
        await node.addMember(internal, { client: '1.2', user: 'u1' }, true, true);
        await node.removeMember(internal, { client: '1.1', user: 'u1' }, true, true);
        await node.removeMember(internal, { client: '1.2', user: 'u1' }, true, true);
        await node.hub.removeTap(internal, t);
        // The Pusher endpoint's own channels (server-to-user, watchlist) are in no webhook.
        for (const own of ['#server-to-user-u1', '#online-u1', channelPrefixOf(b.id) + '#server-to-user-u1']) {
          const ownTap = tap();
          await node.hub.addTap(own, ownTap);
          await node.hub.removeTap(own, ownTap);
        }

        const aEvents = await eventually(async () => (ra.events().length >= 6 ? ra.events() : undefined), 'six events at a');
        assert.deepEqual(summary(aEvents), [
          'channel_occupied chat:room',
          'member_added chat:room alice',
          'member_added chat:room bob',
          'member_removed chat:room alice',
          'member_removed chat:room bob',
          'channel_vacated chat:room',
        ]);
        const bEvents = await eventually(async () => (rb.events().length >= 4 ? rb.events() : undefined), 'four events at b');
        assert.deepEqual(summary(bEvents), ['channel_occupied presence-room', 'member_added presence-room u1', 'member_removed presence-room u1', 'channel_vacated presence-room']);
        // Exactly Pusher's fields: name, channel, and user_id for members.
        assert.deepEqual(Object.keys(bEvents[1]!).sort(), ['channel', 'name', 'user_id']);
        assert.deepEqual(Object.keys(bEvents[0]!).sort(), ['channel', 'name']);

        for (const [receiver, app] of [[ra, a], [rb, b]] as const) {
          assert.ok(receiver.requests.length > 0);
          for (const request of receiver.requests) {
            assert.equal(request.valid, true, 'every request verifies with the pusher SDK');
            assert.equal(request.headers['x-pusher-key'], app.key);
            assert.equal(request.headers['content-type'], 'application/json');
            assert.equal(typeof request.timeMs, 'number');
            assert.ok(Math.abs(request.timeMs! - Date.now()) < 60_000);
          }
        }
        // A body changed in transit, or the other app's secret: the verifier refuses it.
        const sent = ra.accepted[0]!;
        const changed = sent.rawBody.replace('chat:room', 'chat:roon');
        assert.notEqual(changed, sent.rawBody);
        assert.equal(ra.pusher.webhook({ headers: sent.headers as Record<string, string>, rawBody: changed }).isValid(), false);
        assert.equal(rb.pusher.webhook({ headers: sent.headers as Record<string, string>, rawBody: sent.rawBody }).isValid(), false);
        assert.equal(ra.pusher.webhook({ headers: sent.headers as Record<string, string>, rawBody: sent.rawBody }).isValid(), true);
        // Nothing of one app ever reached the other's URL.
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.ok(ra.events().every((e) => e.channel === 'chat:room'));
        assert.ok(rb.events().every((e) => e.channel === 'presence-room'));
        await eventually(async () => (herald.events().length >= 6 ? true : undefined), 'the Herald-format endpoint\'s events');
        assert.ok(herald.events().every((e) => e.channel === 'chat:room'), 'no other app\'s channel, no # channel in Herald\'s webhooks');
        for (const c of [alice1, alice2, bob]) await c.close();
      } finally {
        await h?.close();
        await ra.close();
        await rb.close();
        await herald.close();
      }
    });

    it('a receiver answering 500 gets the batch again until it takes it, each event once; a channelPrefix and the events list filter', async () => {
      const a = testApp('a');
      const failing = await PusherWebhookReceiver.start(a, (n) => (n < 2 ? 500 : 200));
      const lobby = await PusherWebhookReceiver.start(a);
      let h: TestHerald | undefined;
      try {
        h = await startHerald(
          appsConfig([{ app: a, webhooks: [{ url: failing.url, events: ['channel_occupied', 'channel_vacated'] }, { url: lobby.url, events: ['channel_occupied'], channelPrefix: 'public:lobby' }] }], engine),
        );
        const c = await connectWs(h, 'carol');
        await c.call('subscribe', { channel: 'public:lobby-1' });
        await c.call('subscribe', { channel: 'public:other' });
        await c.call('unsubscribe', { channel: 'public:lobby-1' });
        const events = await eventually(async () => (failing.events().length >= 3 ? failing.events() : undefined), 'three events after the retries');
        assert.deepEqual(summary(events), ['channel_occupied public:lobby-1', 'channel_occupied public:other', 'channel_vacated public:lobby-1']);
        assert.ok(failing.requests.length >= 3, 'two failures, then the delivery');
        assert.ok(failing.requests.every((r) => r.valid));
        // The failed attempts carried the events delivered later (the same batch, written again).
        assert.deepEqual(summary(failing.requests[0]!.events), summary(events).slice(0, failing.requests[0]!.events.length));
        await eventually(async () => (lobby.events().length >= 1 ? true : undefined), 'the lobby webhook');
        await new Promise((resolve) => setTimeout(resolve, 300));
        assert.deepEqual(summary(lobby.events()), ['channel_occupied public:lobby-1']);
        await c.close();
      } finally {
        await h?.close();
        await failing.close();
        await lobby.close();
      }
    });
  });
}

for (const engine of ['memory', 'sqlite']) {
  describe(`Pusher webhooks: one app cannot fill the outbox (${engine} engine)`, () => {
    it('an app whose URL is down holds at most limits.maxPendingWebhookEvents; the rest are dropped and counted; another app\'s events still go', async () => {
      const a = testApp('a');
      const b = testApp('b');
      const down = await PusherWebhookReceiver.start(a);
      const downUrl = down.url;
      await down.close(); // nothing listens there: every attempt fails and is retried
      const rb = await PusherWebhookReceiver.start(b);
      let h: TestHerald | undefined;
      try {
        const config = appsConfig([{ app: a, webhooks: [{ url: downUrl, events: ['channel_occupied'] }] }, { app: b, webhooks: [{ url: rb.url, events: ['channel_occupied'] }] }], engine, { backoffMinMs: 60000, backoffMaxMs: 60000 });
        config.apps.list[0] = { ...config.apps.list[0]!, limits: { maxPendingWebhookEvents: 3 } } as (typeof config.apps.list)[number];
        h = await startHerald(config);
        const node = h.server.node;
        for (let i = 0; i < 6; i++) await node.hub.addTap(`a-${i}`, tap());
        for (let i = 0; i < 2; i++) await node.hub.addTap(channelPrefixOf(b.id) + `b-${i}`, tap());
        await eventually(async () => (rb.events().length === 2 ? true : undefined), 'app b\'s events');
        const metrics = await eventually(async () => {
          const text = await (await fetch(`http://127.0.0.1:${h!.server.adminPort}/metrics`)).text();
          return text.includes('herald_webhook_events_total{endpoint="app:a:0",outcome="dropped"} 3') ? text : undefined;
        }, 'three of app a\'s events dropped');
        assert.match(metrics, /herald_webhook_outbox\{state="pending"\} 3/);
        assert.doesNotMatch(metrics, /endpoint="app:b:0",outcome="dropped"/);
      } finally {
        await h?.close();
        await rb.close();
      }
    });
  });
}

describe('Pusher webhooks: dead letters through the CLI (sqlite engine)', () => {
  it('`herald webhooks list-dead --json` shows an app\'s dead letter with the app\'s channel name and id, not the internal ~id~ name', async () => {
    const a = testApp('a');
    const b = testApp('b');
    const down = await PusherWebhookReceiver.start(b);
    const downUrl = down.url;
    await down.close(); // nothing listens there: every attempt fails until the retry time is over
    const stateDir = mkdtempSync(join(dir, 'dead-state-'));
    let h: TestHerald | undefined;
    try {
      h = await startHerald({ ...appsConfig([{ app: a, webhooks: [] }, { app: b, webhooks: [{ url: downUrl, events: ['channel_occupied'] }] }], 'sqlite', { retryForMs: 200 }), stateDir });
      await h.server.node.hub.addTap(channelPrefixOf(b.id) + 'private-orders', tap());
      const listed = await eventually(async () => {
        const answer = await cli(['webhooks', 'list-dead', '--json', '--state-dir', stateDir]);
        assert.equal(answer.code, 0, answer.stderr);
        const lines = answer.stdout.split('\n').filter((line) => line !== '');
        return lines.length === 1 ? (JSON.parse(lines[0]!) as { endpoint: string; event: { name: string; channel: string; app?: string } }) : undefined;
      }, 'one dead letter listed');
      assert.equal(listed.endpoint, 'app:b:0');
      assert.deepEqual([listed.event.name, listed.event.channel, listed.event.app], ['channel_occupied', 'private-orders', 'b']);
      const plain = await cli(['webhooks', 'list-dead', '--state-dir', stateDir]);
      assert.doesNotMatch(plain.stdout, /~/, 'no internal name in the table either');
    } finally {
      await h?.close();
    }
  });
});

describe('Pusher webhooks: outbound safety (SECURITY-TESTS 39)', () => {
  it('an app URL that redirects elsewhere is not followed: a dead letter; the app\'s other URL still gets its events', async () => {
    const a = testApp('a');
    const elsewhere: string[] = [];
    const other: Server = createServer((req, res) => {
      elsewhere.push(`${req.method} ${req.url}`);
      res.writeHead(200).end();
    });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.2', resolve));
    const redirecting: Server = createServer((req, res) => {
      req.resume();
      res.writeHead(307, { location: `http://127.0.0.2:${(other.address() as { port: number }).port}/steal` }).end();
    });
    await new Promise<void>((resolve) => redirecting.listen(0, '127.0.0.1', resolve));
    const good = await PusherWebhookReceiver.start(a);
    let h: TestHerald | undefined;
    try {
      h = await startHerald(appsConfig([{ app: a, webhooks: [{ url: `http://127.0.0.1:${(redirecting.address() as { port: number }).port}/hooks`, events: ['channel_occupied'] }, { url: good.url, events: ['channel_occupied'] }] }], 'memory'));
      const c = await connectWs(h, 'dave');
      await c.call('subscribe', { channel: 'public:r' });
      await eventually(async () => (good.events().length === 1 ? true : undefined), 'the good URL\'s event');
      const metrics = await eventually(async () => {
        const text = await (await fetch(`http://127.0.0.1:${h!.server.adminPort}/metrics`)).text();
        return text.includes('herald_webhook_events_total{endpoint="app:a:0",outcome="dead"} 1') ? text : undefined;
      }, 'the redirected batch a dead letter');
      assert.match(metrics, /herald_webhook_events_total\{endpoint="app:a:1",outcome="delivered"\} 1/);
      assert.deepEqual(elsewhere, [], 'the redirect was not followed');
      await c.close();
    } finally {
      await h?.close();
      await good.close();
      redirecting.closeAllConnections();
      other.closeAllConnections();
      await new Promise((resolve) => redirecting.close(resolve));
      await new Promise((resolve) => other.close(resolve));
    }
  });
});
