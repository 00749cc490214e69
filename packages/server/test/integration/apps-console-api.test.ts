/**
 * The console's Apps endpoints on every engine's store (memory, the sqlite
 * state file, Redis): create with generated id, key and secret (the secret
 * answered once, never listed, never in the audit log), changes of
 * settings, secret rotation, delete; config apps read only; ids and keys
 * unique across config and store; owner role, CSRF; every action audited.
 * What the registry serves follows at once (the apps_changed control
 * command), and the Pusher endpoint with it: pusher-js connects with a new
 * key, a disabled app's live connection is closed with 4003, a deleted key
 * is refused with 4001.
 *
 * Redis at HERALD_TEST_REDIS_URL (skipped loudly without it; a failure
 * under HERALD_REQUIRE_SERVICES=1).
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { ConsoleClient, PASSWORD } from '../helpers/console.ts';
import { connected, disconnectAll, pusherClient, RawPusher, subscribed, type PusherHerald } from '../helpers/pusher-socket.ts';
import { closeAllClients, eventually, openWs, signToken } from '../helpers/herald-ws.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import type { AdminStore } from '../../src/console/admin-store.ts';
import { PasswordHasher } from '../../src/console/passwords.ts';
import Pusher from 'pusher';
import { PusherWebhookReceiver } from '../helpers/pusher-webhook-receiver.ts';

const engines: Record<string, Record<string, unknown> | undefined> = {
  memory: { type: 'memory' },
  sqlite: {},
  redis: undefined,
};
const redisSkip = missingService('Redis', await redisAvailable());
if (redisSkip === false) engines['redis'] = { type: 'redis', redisUrl: REDIS_URL, redisPrefix: 'herald-test-apps-' + randomBytes(4).toString('hex') };

const CONFIG_APP = { id: 'cfg', key: 'cfg-key', secret: randomBytes(16).toString('hex') };

async function start(engine: Record<string, unknown>): Promise<{ h: TestHerald; store: AdminStore; close(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'herald-apps-secret-'));
  const secretFile = join(dir, 'cfg.secret');
  writeFileSync(secretFile, CONFIG_APP.secret, { mode: 0o600 });
  let store: AdminStore | undefined;
  const h = await startHerald(
    { engine, apps: { list: [{ id: CONFIG_APP.id, key: CONFIG_APP.key, secretFile }] }, channels: { defaults: { allowAnonymous: true } } },
    {
      adaptEngine: (e) => {
        store = e.adminStore;
        return e;
      },
    },
  );
  rmSync(dir, { recursive: true, force: true });
  return { h, store: store!, close: () => h.close() };
}

async function signIn(h: TestHerald, store: AdminStore, name: string, role: 'owner' | 'operator'): Promise<ConsoleClient> {
  await store.createAdmin({ name, role, passwordHash: await new PasswordHasher().hash(PASSWORD), now: Date.now() });
  const client = new ConsoleClient(h.server.adminPort);
  const login = await client.login(name);
  assert.equal(login.status, 200, login.text);
  return client;
}

/** The official server SDK for an app id, key and secret, against the test server. */
function sdk(h: TestHerald, appId: string, key: string, secret: string): Pusher {
  return new Pusher({ appId, key, secret, host: '127.0.0.1', port: String(h.server.port), useTLS: false });
}

/** The HTTP status of a trigger through the SDK (its error carries the status). */
async function triggerStatus(client: Pusher): Promise<number> {
  try {
    return (await client.trigger('orders', 'created', { n: 1 })).status;
  } catch (error) {
    return (error as { status?: number }).status ?? 0;
  }
}

function pusherHerald(h: TestHerald): PusherHerald {
  return { ...h, apps: [], appUrl: (key, query = 'protocol=7&client=test&version=1.0.0') => `ws://127.0.0.1:${h.server.port}/app/${key}?${query}` };
}

for (const [name, engine] of Object.entries(engines)) {
  describe(`console apps: ${name} engine`, { timeout: 90000 }, () => {
    test('create, list, change, rotate, delete; config apps read only; registry and Pusher endpoint follow', async (t) => {
      if (engine === undefined) return t.skip(redisSkip as string);
      const { h, store, close } = await start(engine);
      const raws: RawPusher[] = [];
      try {
        const owner = await signIn(h, store, 'owner1', 'owner');
        const operator = await signIn(h, store, 'op1', 'operator');

        // The config's app is listed, read only, without its secret.
        const first = await owner.get('/api/apps');
        assert.equal(first.status, 200, first.text);
        assert.deepEqual(
          first.body.apps.map((a: any) => [a.id, a.key, a.source, a.default]),
          [['cfg', 'cfg-key', 'config', true]],
        );
        assert.ok(!first.text.includes(CONFIG_APP.secret));

        // Create: id, key and secret generated; the secret once.
        const created = await owner.post('/api/apps', { name: 'Shop', clientEvents: true, limits: { maxConnections: 50 } });
        assert.equal(created.status, 200, created.text);
        const app = created.body.app;
        const secret: string = created.body.secret;
        assert.match(app.id, /^\d{7}$/);
        assert.match(app.key, /^[0-9a-f]{20}$/);
        assert.match(secret, /^[0-9a-f]{32}$/);
        assert.equal(app.source, 'store');
        assert.equal(app.default, false);
        assert.equal(app.clientEvents, true);
        assert.equal(app.limits.maxConnections, 50);
        assert.equal(app.limits.maxEventPayloadBytes, 10240, 'other limits take their defaults');
        assert.deepEqual(app.connections, { pusher: 0, native: 0 });
        assert.equal('secret' in app, false);
        // The registry serves it at once (apps_changed), with its secret and a channel prefix.
        const served = h.server.apps.byKey(app.key);
        assert.equal(served?.id, app.id);
        assert.equal(served?.secret, secret);
        assert.equal(served?.channelPrefix, `~${app.id}~`);

        // pusher-js connects with the new key, without a restart.
        const client = pusherClient(pusherHerald(h), app.key);
        await connected(client);
        await subscribed(client, 'orders');
        // Its connections as its maxConnections counts them on this node: the Pusher socket and a native
        // connection on its paths; the default app's native paths are the server's (native: null).
        const native = await openWs(`ws://127.0.0.1:${h.server.port}/apps/${app.id}/connection/websocket`);
        await native.connect(await signToken(secret, { sub: 'ann', exp: Math.floor(Date.now() / 1000) + 600 }));
        const listed = await owner.get('/api/apps');
        assert.equal(listed.body.apps.length, 2);
        assert.deepEqual(listed.body.apps[1].connections, { pusher: 1, native: 1 });
        assert.deepEqual(listed.body.apps[0].connections, { pusher: 0, native: null });
        assert.deepEqual((await owner.get(`/api/apps/${app.id}`)).body.app.connections, { pusher: 1, native: 1 });
        assert.ok(!listed.text.includes(secret), 'the list never holds a secret');
        disconnectAll();
        await native.close();
        closeAllClients();
        // The HTTP API signs with the new app's secret; that secret never authorises the config's app.
        assert.equal(await triggerStatus(sdk(h, app.id, app.key, secret)), 200);
        assert.equal(await triggerStatus(sdk(h, CONFIG_APP.id, CONFIG_APP.key, secret)), 401);
        assert.equal(await triggerStatus(sdk(h, app.id, app.key, CONFIG_APP.secret)), 401);

        // Ids and keys are unique across config and store.
        for (const body of [{ id: 'cfg' }, { key: 'cfg-key' }, { id: app.id }, { key: app.key }]) {
          const refused = await owner.post('/api/apps', body);
          assert.equal(refused.status, 400, JSON.stringify(body));
          assert.equal(refused.body.error.code, 'invalid_input');
        }
        // Bad input: schema errors name the field.
        for (const body of [{ limits: { maxConnections: -1 } }, { color: 'red' }, { webhooks: [{ url: 'ftp://x', events: ['channel_occupied'] }] }, { id: 'has space' }, [1]]) {
          const refused = await owner.post('/api/apps', body);
          assert.equal(refused.status, 400, JSON.stringify(body));
          assert.equal(refused.body.error.code, 'invalid_input');
        }

        // A made-up field name of 100 000 characters: refused, the answer stays small.
        const huge = await owner.post('/api/apps', { ['x'.repeat(100000)]: 1 });
        assert.equal(huge.status, 400);
        assert.ok(huge.text.length < 1000, `answer of ${huge.text.length} bytes`);

        // Config apps: change, rotate and delete refused.
        for (const [method, path] of [['POST', '/api/apps/cfg'], ['POST', '/api/apps/cfg/rotate-secret'], ['DELETE', '/api/apps/cfg']] as const) {
          const refused = method === 'POST' ? await owner.post(path, { enabled: false }) : await owner.delete(path);
          assert.equal(refused.status, 400, `${method} ${path}`);
          assert.match(refused.body.error.detail, /config/);
        }

        // Roles and CSRF.
        assert.equal((await operator.get('/api/apps')).status, 403);
        assert.equal((await operator.post('/api/apps', { name: 'x' })).status, 403);
        const noCsrf = await owner.post('/api/apps', { name: 'x' }, { 'x-csrf-token': 'wrong' });
        assert.equal(noCsrf.status, 403);
        assert.equal(noCsrf.body.error.code, 'csrf_failed');

        // Change: one limit kept with the others; the registry follows.
        const changed = await owner.post(`/api/apps/${app.id}`, { name: 'Shop 2', limits: { clientEventsPerSecond: 3 }, allowedOrigins: ['https://shop.example'] });
        assert.equal(changed.status, 200, changed.text);
        assert.equal(changed.body.app.limits.maxConnections, 50);
        assert.equal(changed.body.app.limits.clientEventsPerSecond, 3);
        assert.equal(h.server.apps.byId(app.id)?.name, 'Shop 2');
        assert.deepEqual(h.server.apps.byId(app.id)?.allowedOrigins, ['https://shop.example']);
        assert.equal((await owner.post(`/api/apps/${app.id}`, { key: 'new-key' })).status, 400, 'the key cannot change');

        // Rotate: a new secret, once; the registry signs with it.
        const rotated = await owner.post(`/api/apps/${app.id}/rotate-secret`);
        assert.equal(rotated.status, 200, rotated.text);
        assert.match(rotated.body.secret, /^[0-9a-f]{32}$/);
        assert.notEqual(rotated.body.secret, secret);
        assert.equal(h.server.apps.byId(app.id)?.secret, rotated.body.secret);
        assert.equal(await triggerStatus(sdk(h, app.id, app.key, secret)), 401, 'the old secret is refused at once');
        assert.equal(await triggerStatus(sdk(h, app.id, app.key, rotated.body.secret)), 200);

        // Disable: the live connection is closed with 4003.
        const raw = new RawPusher(pusherHerald(h).appUrl(app.key));
        raws.push(raw);
        await raw.established();
        assert.equal((await owner.post(`/api/apps/${app.id}`, { enabled: false })).status, 200);
        assert.equal((await raw.closed).code, 4003);

        // Delete: gone from the registry; its key is refused with 4001; 404 after.
        const deleted = await owner.delete(`/api/apps/${app.id}`);
        assert.equal(deleted.status, 200, deleted.text);
        assert.equal(h.server.apps.byKey(app.key), undefined);
        const refusedRaw = new RawPusher(pusherHerald(h).appUrl(app.key));
        raws.push(refusedRaw);
        assert.equal((await refusedRaw.closed).code, 4001);
        assert.equal((await owner.get(`/api/apps/${app.id}`)).status, 404);
        assert.equal((await owner.delete(`/api/apps/${app.id}`)).status, 404);

        // Audited, never with a secret.
        const audit = await eventually(async () => {
          const answer = await owner.get('/api/audit?limit=100');
          const actions = answer.body.entries.map((e: any) => `${e.action}:${e.outcome}`);
          return actions.includes('app.delete:ok') ? answer : undefined;
        }, 'the audit entries are written');
        const actions: string[] = audit.body.entries.map((e: any) => `${e.action}:${e.outcome}`);
        for (const expected of ['app.create:ok', 'app.create:failed', 'app.update:ok', 'app.update:failed', 'app.rotate_secret:ok', 'app.rotate_secret:failed', 'app.delete:ok', 'app.delete:failed']) {
          assert.ok(actions.includes(expected), expected);
        }
        assert.ok(!audit.text.includes(secret) && !audit.text.includes(rotated.body.secret), 'no secret in the audit log');
        assert.equal(audit.body.entries.find((e: any) => e.action === 'app.create' && e.outcome === 'ok').target, app.id);
      } finally {
        disconnectAll();
        for (const raw of raws) raw.close();
        await close();
      }
    });
  });
}

describe('console apps: a server started without any app', { timeout: 60000 }, () => {
  test('an app created later gets its webhooks', async () => {
    let store: AdminStore | undefined;
    const h = await startHerald(
      { channels: { defaults: { allowAnonymous: true } } },
      {
        adaptEngine: (e) => {
          store = e.adminStore;
          return e;
        },
      },
    );
    let receiver: PusherWebhookReceiver | undefined;
    let raw: RawPusher | undefined;
    try {
      assert.deepEqual(h.server.apps.list(), []);
      const owner = await signIn(h, store!, 'owner1', 'owner');
      const created = await owner.post('/api/apps', { id: 'later', key: 'later-key' });
      assert.equal(created.status, 200, created.text);
      receiver = await PusherWebhookReceiver.start({ id: 'later', key: 'later-key', secret: created.body.secret });
      const changed = await owner.post('/api/apps/later', { webhooks: [{ url: receiver.url, events: ['channel_occupied'] }] });
      assert.equal(changed.status, 200, changed.text);
      raw = new RawPusher(pusherHerald(h).appUrl('later-key'));
      await raw.established();
      raw.send({ event: 'pusher:subscribe', data: { channel: 'orders' } });
      await raw.event('pusher_internal:subscription_succeeded');
      const occupied = await eventually(async () => receiver!.accepted.flatMap((r) => r.events).find((e) => e.name === 'channel_occupied'), 'channel_occupied reaches the new app\'s webhook', 15000);
      assert.equal(occupied.channel, 'orders');
    } finally {
      raw?.close();
      await receiver?.close();
      await h.close();
    }
  });
});

describe('console apps on two Redis nodes', { timeout: 60000 }, () => {
  test('a change made on node A is served by node B at once (apps_changed over Redis, not the poll)', async (t) => {
    if (redisSkip !== false) return t.skip(redisSkip);
    const engine = { type: 'redis', redisUrl: REDIS_URL, redisPrefix: 'herald-test-apps-two-' + randomBytes(4).toString('hex') };
    let store: AdminStore | undefined;
    const overrides = { engine, apps: { pollIntervalMs: 60000 }, channels: { defaults: { allowAnonymous: true } } };
    const a = await startHerald(overrides, {
      adaptEngine: (e) => {
        store = e.adminStore;
        return e;
      },
    });
    const b = await startHerald(overrides);
    const raws: RawPusher[] = [];
    try {
      const owner = await signIn(a, store!, 'owner1', 'owner');
      const created = await owner.post('/api/apps', { name: 'two nodes' });
      assert.equal(created.status, 200, created.text);
      const { id, key } = created.body.app;
      await eventually(async () => b.server.apps.byKey(key), 'node B serves the new app', 5000);
      const onB = new RawPusher(pusherHerald(b).appUrl(key));
      raws.push(onB);
      await onB.established();
      assert.equal((await owner.post(`/api/apps/${id}`, { enabled: false })).status, 200);
      assert.equal((await onB.closed).code, 4003, 'node B closes its socket of the disabled app');
    } finally {
      for (const raw of raws) raw.close();
      await a.close();
      await b.close();
    }
  });
});
