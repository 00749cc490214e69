/**
 * `herald apps` beside a running server, on the sqlite state file and on
 * Redis: create (id, key and secret generated; the secret printed once),
 * list, show, update, rotate-secret, delete; the running server serves each
 * change at once, told by the CLI (the notice beside the state file, the
 * control topic on Redis), not by its poll (apps.pollIntervalMs is an hour
 * here) nor a restart (a Pusher client connects with a key made by the
 * CLI); ids and keys unique across config and store;
 * config apps read only; the memory engine refused with the reason; every
 * change audited as `cli:<user>`, never with a secret.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { RawPusher, type PusherHerald } from '../helpers/pusher-socket.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';

function herald(args: readonly string[], config: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, 'apps', ...args, '--config', config], { env: { PATH: process.env['PATH'] ?? '' }, timeout: 90000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, stdout, stderr });
    });
  });
}

function pusherHerald(h: TestHerald): PusherHerald {
  return { ...h, apps: [], appUrl: (key) => `ws://127.0.0.1:${h.server.port}/app/${key}?protocol=7&client=test&version=1.0.0` };
}

const CONFIG_SECRET = randomBytes(16).toString('hex');
/** apps.pollIntervalMs of the servers here: they see the CLI's changes only if it tells them. */
const NO_POLL_MS = 3_600_000;

describe('herald apps on the sqlite state file', { timeout: 300000 }, () => {
  let dir: string;
  let config: string;
  let h: TestHerald;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'herald-apps-cli-'));
    writeFileSync(join(dir, 'cfg.secret'), CONFIG_SECRET, { mode: 0o600 });
    // The poll would take an hour: what the server sees, the CLI told it.
    const apps = { pollIntervalMs: NO_POLL_MS, list: [{ id: 'cfg', key: 'cfg-key', secretFile: join(dir, 'cfg.secret') }] };
    config = join(dir, 'herald.json');
    writeFileSync(config, JSON.stringify({ mode: 'development', stateDir: join(dir, 'state'), apps }));
    h = await startHerald({ stateDir: join(dir, 'state'), apps, channels: { defaults: { allowAnonymous: true } } });
  });
  after(async () => {
    await h?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('create, list, show, update, rotate-secret, delete; the running server follows; audited', async () => {
    const created = await herald(['create', '--name', 'Shop', '--client-events', 'on', '--settings', '{"limits":{"maxConnections":3}}', '--json'], config);
    assert.equal(created.code, 0, created.stderr);
    const { app, secret } = JSON.parse(created.stdout);
    assert.match(app.id, /^\d{7}$/);
    assert.match(app.key, /^[0-9a-f]{20}$/);
    assert.match(secret, /^[0-9a-f]{32}$/);
    assert.equal(app.clientEvents, true);
    assert.equal(app.limits.maxConnections, 3);
    // The running server serves it at once; a Pusher protocol 7 client connects with the new key.
    await eventually(async () => h.server.apps.byKey(app.key), 'the server picks the new app up');
    assert.equal(h.server.apps.byKey(app.key)?.secret, secret);
    const raw = new RawPusher(pusherHerald(h).appUrl(app.key));
    assert.match(await raw.established(), /^\d+\.\d+$/);
    raw.close();

    const plain = await herald(['create', '--id', 'shop2', '--key', 'shop2-key'], config);
    assert.equal(plain.code, 0, plain.stderr);
    assert.match(plain.stdout, /^[0-9a-f]{32}\n$/, 'only the secret on stdout');
    assert.match(plain.stderr, /shown once/);

    const list = await herald(['list', '--json'], config);
    assert.equal(list.code, 0, list.stderr);
    const listed = JSON.parse(list.stdout);
    assert.deepEqual(
      listed.map((a: { id: string; source: string }) => `${a.id}:${a.source}`),
      ['cfg:config', `${app.id}:store`, 'shop2:store'].sort((a, b) => (a.startsWith('cfg') ? -1 : b.startsWith('cfg') ? 1 : a < b ? -1 : 1)),
    );
    assert.ok(!list.stdout.includes(secret) && !list.stdout.includes(CONFIG_SECRET));
    const table = await herald(['list'], config);
    assert.match(table.stdout, /^ID\s+KEY\s+NAME\s+SOURCE\s+STATUS\s+CREATED/);

    // Unique ids and keys across config and store; config apps read only.
    for (const args of [['create', '--id', 'cfg'], ['create', '--key', 'cfg-key'], ['create', '--key', 'shop2-key'], ['update', 'cfg', '--disable'], ['rotate-secret', 'cfg'], ['delete', 'cfg', '--yes']]) {
      const refused = await herald(args, config);
      assert.equal(refused.code, 2, args.join(' '));
      assert.match(refused.stderr, /herald apps: /);
    }
    const help = await herald(['create', '--help'], config);
    assert.match(help.stdout, /--origins LIST\|default[^\n]*\n[^\n]*\(default: the server's cors\.origins\)/);
    const bad = await herald(['create', '--settings', '{"limits":{"maxConnections":-1}}'], config);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /limits\/maxConnections/);

    assert.equal(app.subscriptionCount, false, 'subscription counting is off unless asked');
    const updated = await herald(['update', app.id, '--disable', '--subscription-count', 'on', '--settings', '{"limits":{"clientEventsPerSecond":4}}', '--json'], config);
    assert.equal(updated.code, 0, updated.stderr);
    assert.equal(JSON.parse(updated.stdout).limits.maxConnections, 3, 'other limits kept');
    assert.equal(JSON.parse(updated.stdout).subscriptionCount, true);
    await eventually(async () => (h.server.apps.byId(app.id)?.enabled === false ? true : undefined), 'the server sees the app disabled');
    assert.equal(h.server.apps.byId(app.id)?.subscriptionCount, true, 'the server has subscription counting on for it');
    assert.equal((await herald(['update', app.id, '--subscription-count', 'maybe'], config)).code, 2);

    const shown = await herald(['show', app.id], config);
    assert.match(shown.stdout, new RegExp(`key\\s+${app.key}`));
    assert.match(shown.stdout, /enabled\s+false/);
    assert.match(shown.stdout, /subscriptionCount\s+true/);
    assert.match(shown.stdout, /allowedOrigins\s+\(the server's cors\.origins\)\n/, 'the setting an app without origins follows is named as it is');

    const rotated = await herald(['rotate-secret', app.id], config);
    assert.equal(rotated.code, 0, rotated.stderr);
    const newSecret = rotated.stdout.trim();
    assert.match(newSecret, /^[0-9a-f]{32}$/);
    assert.notEqual(newSecret, secret);
    await eventually(async () => (h.server.apps.byId(app.id)?.secret === newSecret ? true : undefined), 'the server signs with the new secret');

    const unconfirmed = await herald(['delete', app.id], config);
    assert.equal(unconfirmed.code, 2);
    assert.match(unconfirmed.stderr, /--yes/);
    const deleted = await herald(['delete', app.id, '--yes'], config);
    assert.equal(deleted.code, 0, deleted.stderr);
    await eventually(async () => (h.server.apps.byKey(app.key) === undefined ? true : undefined), 'the server drops the deleted app');
    assert.equal((await herald(['show', app.id], config)).code, 2);

    const file = openSqliteStore({ stateDir: join(dir, 'state'), claim: false });
    try {
      const entries = await new SqliteAdminStore(file.db).queryAudit({ limit: 100 });
      const actions = entries.filter((e) => e.actor.startsWith('cli')).map((e) => `${e.action}:${e.target}`);
      for (const expected of [`app.create:${app.id}`, 'app.create:shop2', `app.update:${app.id}`, `app.rotate_secret:${app.id}`, `app.delete:${app.id}`]) assert.ok(actions.includes(expected), expected);
      assert.ok(!JSON.stringify(entries).includes(secret) && !JSON.stringify(entries).includes(newSecret), 'no secret in the audit log');
    } finally {
      file.close();
    }
  });

  test('the memory engine is refused with the reason', async () => {
    const memory = join(dir, 'memory.json');
    writeFileSync(memory, JSON.stringify({ mode: 'development', stateDir: join(dir, 'mem'), engine: { type: 'memory' } }));
    const refused = await herald(['list'], memory);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /memory/);
  });
});

describe('herald apps on Redis', { timeout: 300000 }, () => {
  test('an app created, changed and deleted by the CLI: every node follows at once', async (t) => {
    const skip = missingService('Redis', await redisAvailable());
    if (skip !== false) return t.skip(skip);
    const dir = mkdtempSync(join(tmpdir(), 'herald-apps-cli-redis-'));
    const engine = { type: 'redis', redisUrl: REDIS_URL, redisPrefix: 'herald-test-apps-cli-' + randomBytes(4).toString('hex') };
    const apps = { pollIntervalMs: NO_POLL_MS };
    const config = join(dir, 'herald.json');
    writeFileSync(config, JSON.stringify({ mode: 'development', stateDir: dir, engine, apps }));
    const a = await startHerald({ engine, apps, channels: { defaults: { allowAnonymous: true } } });
    const b = await startHerald({ engine, apps, channels: { defaults: { allowAnonymous: true } } });
    try {
      const created = await herald(['create', '--name', 'Redis shop', '--json'], config);
      assert.equal(created.code, 0, created.stderr);
      const { app } = JSON.parse(created.stdout);
      for (const node of [a, b]) await eventually(async () => node.server.apps.byKey(app.key), 'each node picks the new app up');
      const raw = new RawPusher(pusherHerald(b).appUrl(app.key));
      assert.match(await raw.established(), /^\d+\.\d+$/);
      raw.close();
      assert.equal((await herald(['update', app.id, '--client-events', 'on'], config)).code, 0);
      for (const node of [a, b]) await eventually(async () => (node.server.apps.byId(app.id)?.clientEvents === true ? true : undefined), 'each node sees the change');
      assert.equal((await herald(['delete', app.id, '--yes'], config)).code, 0);
      for (const node of [a, b]) await eventually(async () => (node.server.apps.byKey(app.key) === undefined ? true : undefined), 'each node drops it');
    } finally {
      await a.close();
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
