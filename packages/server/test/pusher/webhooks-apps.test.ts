/**
 * Pusher webhooks of apps that change while the server runs (memory
 * engine, the app store written as the console and `herald apps` write
 * it): an app created with a webhook gets its channels' events, a changed
 * event list takes effect, a rotated secret signs the next requests. And
 * subscription_count: a channel's count changes become one event per
 * change with the count, never for presence channels.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Pusher from 'pusher';
import { buildConfig } from '../../src/config/load.ts';
import { startServer, type HeraldServer } from '../../src/app/app.ts';
import { createMemoryEngine } from '../../src/app/engine.ts';
import { channelPrefixOf } from '../../src/apps/apps.ts';
import type { AppRecord } from '../../src/apps/app-store.ts';
import type { ChannelTap } from '../../src/core/hub.ts';
import { testConfig, startHerald } from '../helpers/herald.ts';
import { connectWs, eventually } from '../helpers/herald-ws.ts';
import { PusherWebhookReceiver } from '../helpers/pusher-webhook-receiver.ts';
import { execFile } from 'node:child_process';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAppStore } from '../../src/apps/sqlite-app-store.ts';

/** `herald ARGS` as a user runs it. */
function cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args], { env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? 1), stdout, stderr });
    });
  });
}

const dir = mkdtempSync(join(tmpdir(), 'herald-pusher-webhooks-apps-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const FAST = { batchWindowMs: 20, backoffMinMs: 20, backoffMaxMs: 100, pollIntervalMs: 200 };

function secretFile(secret: string): string {
  const file = join(dir, randomBytes(4).toString('hex'));
  writeFileSync(file, secret, { mode: 0o600 });
  return file;
}

function tap(size = 1): ChannelTap {
  return { size, deliverPublication: () => 0, deliverJoinLeave: () => {}, reset: () => {} };
}

function summary(events: { name: string; channel?: string; [key: string]: unknown }[]): string[] {
  return events.map((e) => `${e.name} ${e.channel}${e['subscription_count'] === undefined ? '' : ' ' + String(e['subscription_count'])}`);
}

describe('Pusher webhooks of apps made while the server runs', () => {
  it('an app created in the store with a webhook gets its events; a changed event list and a rotated secret take effect', async () => {
    const stored = { id: 'shop', key: 'shop-key', secret: randomBytes(16).toString('hex') };
    const receiver = await PusherWebhookReceiver.start(stored);
    const raw = {
      ...testConfig(randomBytes(32).toString('base64url'), randomBytes(24).toString('base64url')),
      stateDir: join(dir, 'state'),
      engine: { type: 'memory' },
      apps: { list: [{ id: 'main', key: 'main-key', secretFile: secretFile(randomBytes(16).toString('hex')) }], pollIntervalMs: 100 },
      webhooks: FAST,
    };
    const config = buildConfig(raw, { env: {} });
    const engine = createMemoryEngine(config);
    let server: HeraldServer | undefined;
    try {
      server = await startServer({ config, engine });
      const now = Date.now();
      const record: AppRecord = {
        ...stored,
        name: 'Shop',
        enabled: true,
        clientEvents: false,
        userAuthentication: true,
        subscriptionCount: false,
        allowedOrigins: null,
        limits: buildConfig({ ...raw, apps: { list: [{ id: 'x', key: 'x', secretEnv: 'X' }] } }, { env: {} }).apps.list[0]!.limits,
        webhooks: [{ url: receiver.url, events: ['channel_occupied', 'channel_vacated'] }],
        createdAt: now,
        updatedAt: now,
      };
      assert.equal(await engine.appStore!.create(record), 'created');
      const node = server.node;
      const room = channelPrefixOf('shop') + 'room';
      // The registry sees the new app at its next poll; then the channel's occupancy is the app's webhook.
      const t = tap();
      await eventually(async () => {
        await node.hub.addTap(room, t);
        await node.hub.removeTap(room, t);
        return receiver.events().length >= 2 ? true : undefined;
      }, 'the stored app\'s webhook');
      assert.deepEqual(summary(receiver.events().slice(0, 2)), ['channel_occupied room', 'channel_vacated room']);
      assert.ok(receiver.requests.every((r) => r.valid));
      // Only vacated from now on, and a new secret.
      const rotated = randomBytes(16).toString('hex');
      await engine.appStore!.update('shop', { settings: { webhooks: [{ url: receiver.url, events: ['channel_vacated'] }] }, secret: rotated }, Date.now());
      await new Promise((resolve) => setTimeout(resolve, 500));
      const before = receiver.requests.length;
      await node.hub.addTap(room, t);
      await node.hub.removeTap(room, t);
      await eventually(async () => (receiver.requests.length > before ? true : undefined), 'a request after the change');
      await new Promise((resolve) => setTimeout(resolve, 300));
      const after = receiver.requests.slice(before);
      assert.equal(after.length, 1);
      // Signed with the new secret: the old one no longer verifies, the new one does.
      assert.equal(after[0]!.valid, false);
      const fresh = new Pusher({ appId: 'shop', key: 'shop-key', secret: rotated, host: '127.0.0.1' });
      const request = fresh.webhook({ headers: after[0]!.headers as Record<string, string>, rawBody: after[0]!.rawBody });
      assert.equal(request.isValid(), true);
      assert.deepEqual(summary(request.getEvents() as never), ['channel_vacated room']);
      // A receiver given both secrets during the rotation verifies requests signed with either.
      const rotating = receiver.pusher.webhook({ headers: after[0]!.headers as Record<string, string>, rawBody: after[0]!.rawBody });
      assert.equal(rotating.isValid([{ key: 'shop-key', secret: rotated }]), true);
      const old = receiver.accepted[0]!;
      assert.equal(fresh.webhook({ headers: old.headers as Record<string, string>, rawBody: old.rawBody }).isValid([{ key: 'shop-key', secret: stored.secret }]), true);
    } finally {
      await server?.close();
      await receiver.close();
    }
  });

  it('subscription_count: one event per change with the channel\'s count, none for presence channels', async () => {
    const app = { id: 'a', key: 'a-key', secret: randomBytes(16).toString('hex') };
    const receiver = await PusherWebhookReceiver.start(app);
    const h = await startHerald({
      engine: { type: 'memory' },
      apps: { list: [{ id: app.id, key: app.key, secretFile: secretFile(app.secret), webhooks: [{ url: receiver.url, events: ['subscription_count'] }] }] },
      webhooks: FAST,
    });
    try {
      const one = await connectWs(h, 'alice');
      const two = await connectWs(h, 'bob');
      await one.call('subscribe', { channel: 'public:feed' });
      await two.call('subscribe', { channel: 'public:feed' });
      await eventually(async () => (receiver.events().some((e) => e['subscription_count'] === 2) ? true : undefined), 'count 2');
      await two.call('unsubscribe', { channel: 'public:feed' });
      await eventually(async () => (receiver.events().some((e) => e['subscription_count'] === 1 && receiver.events().indexOf(e) > 0) ? true : undefined), 'count 1');
      // A presence channel's count is not sent (as Pusher).
      const internal = 'presence-lobby';
      const t = tap(3);
      await h.server.node.hub.addTap(internal, t);
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await h.server.node.hub.removeTap(internal, t);
      const events = receiver.events();
      assert.ok(events.every((e) => e.channel === 'public:feed'), 'only public:feed');
      assert.equal(events.at(-1)!['subscription_count'], 1);
      assert.deepEqual(Object.keys(events[0]!).sort(), ['channel', 'name', 'subscription_count']);
      assert.ok(receiver.requests.every((r) => r.valid));
      await one.close();
      await two.close();
    } finally {
      await h.close();
      await receiver.close();
    }
  });

  it('herald webhooks endpoints lists Herald\'s endpoints, the config\'s apps\' and the stored apps\' webhooks, no secret', async () => {
    const stateDir = join(dir, 'cli-state');
    const appSecret = randomBytes(16).toString('hex');
    const keySecret = randomBytes(32).toString('base64url');
    const config = join(dir, 'cli.json');
    writeFileSync(
      config,
      JSON.stringify({
        mode: 'development',
        stateDir,
        apps: { list: [{ id: 'main', key: 'main-key', secretFile: secretFile(appSecret), webhooks: [{ url: 'http://127.0.0.1:9/pusher', events: ['channel_occupied', 'client_event'], channelPrefix: 'private-' }] }] },
        webhooks: { endpoints: [{ name: 'herald', url: 'http://127.0.0.1:9/herald', keys: [{ id: 'k1', secretFile: secretFile(keySecret) }] }] },
      }),
    );
    const storedSecret = randomBytes(16).toString('hex');
    const store = openSqliteStore({ stateDir });
    try {
      const limits = buildConfig({ apps: { list: [{ id: 'x', key: 'x', secretEnv: 'X' }] } }, { env: {} }).apps.list[0]!.limits;
      const now = Date.now();
      await new SqliteAppStore(store.db).create({
        id: 'shop',
        key: 'shop-key',
        secret: storedSecret,
        name: 'Shop',
        enabled: true,
        clientEvents: false,
        userAuthentication: true,
        subscriptionCount: false,
        allowedOrigins: null,
        limits,
        webhooks: [{ url: 'http://127.0.0.1:9/shop', events: ['member_added'] }],
        createdAt: now,
        updatedAt: now,
      });
    } finally {
      store.close();
    }
    const listed = await cli(['webhooks', 'endpoints', '--config', config]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(listed.stdout.replace(/\n$/, '').split('\n'), [
      'herald\therald\thttp://127.0.0.1:9/herald\tchannel_occupied,channel_vacated,member_added,member_removed,client_connected,client_disconnected\t',
      'app:main:0\tpusher\thttp://127.0.0.1:9/pusher\tchannel_occupied,client_event\tchannelPrefix=private-',
      'app:shop:0\tpusher\thttp://127.0.0.1:9/shop\tmember_added\t',
    ]);
    const json = await cli(['webhooks', 'endpoints', '--json', '--config', config]);
    const rows = json.stdout.trim().split('\n').map((line) => JSON.parse(line) as { name: string; app?: string });
    assert.deepEqual(rows.map((r) => `${r.name} ${r.app ?? ''}`), ['herald ', 'app:main:0 main', 'app:shop:0 shop']);
    for (const secret of [appSecret, keySecret, storedSecret]) assert.ok(!listed.stdout.includes(secret) && !json.stdout.includes(secret) && !listed.stderr.includes(secret));
  });
});
