/**
 * Apps in cluster mode (`--workers 2`, sqlite engine): the workers reach
 * the primary's app store over IPC, and an app created, or deleted, through
 * the console (on whichever worker answers) is served, or refused, by every
 * worker at once: the `apps_changed` control command, not the poll (set to
 * a minute here). Ten Pusher sockets on fresh connections (the cluster
 * hands them to the workers in turn) all open with the new key, and all
 * are closed with 4001 when the app is deleted. The same for `herald apps`
 * beside the cluster (its notice in the state directory, which the primary
 * watches and passes on to the workers): create, then disable (4003).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestCluster } from './harness.ts';
import { RawPusher } from '../helpers/pusher-socket.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { call } from '../helpers/console.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import { PasswordHasher } from '../../src/console/passwords.ts';

const PASSWORD = 'correct horse battery staple';

test('apps in a cluster: a console-made app is served by every worker at once, and refused by all once deleted', { timeout: 120000 }, async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'herald-apps-cluster-'));
  const file = openSqliteStore({ stateDir });
  await new SqliteAdminStore(file.db).createAdmin({ name: 'ops', role: 'owner', passwordHash: await new PasswordHasher().hash(PASSWORD), now: Date.now() });
  file.close();
  const cluster = await TestCluster.start({ workers: 2, config: { stateDir, apps: { pollIntervalMs: 60000 } } });
  const sockets: RawPusher[] = [];
  try {
    const origin = `http://127.0.0.1:${cluster.adminPort}`;
    const login = await call(cluster.adminPort, '/console/api/login', { method: 'POST', headers: { origin }, body: { name: 'ops', password: PASSWORD } });
    assert.equal(login.status, 200, login.text);
    const headers = { origin, cookie: String(login.headers['set-cookie']?.[0] ?? '').split(';')[0]!, 'x-csrf-token': login.body.csrf as string };

    const created = await call(cluster.adminPort, '/console/api/apps', { method: 'POST', headers, body: { name: 'cluster shop' } });
    assert.equal(created.status, 200, created.text);
    const { id, key } = created.body.app as { id: string; key: string };

    // Every worker serves it: ten sockets on fresh connections, handed to the workers in turn.
    for (let i = 0; i < 10; i++) {
      const socket = new RawPusher(`ws://127.0.0.1:${cluster.port}/app/${key}?protocol=7&client=test&version=1.0.0`);
      sockets.push(socket);
      assert.match(await socket.established(), /^\d+\.\d+$/, `socket ${i}`);
    }
    // The list, from either worker, has it (read over IPC from the primary's store).
    for (let i = 0; i < 4; i++) {
      const listed = await call(cluster.adminPort, '/console/api/apps', { headers });
      assert.ok(listed.body.apps.some((a: { id: string }) => a.id === id), listed.text);
    }

    const deleted = await call(cluster.adminPort, `/console/api/apps/${id}`, { method: 'DELETE', headers });
    assert.equal(deleted.status, 200, deleted.text);
    const codes = await Promise.all(sockets.map((s) => s.closed));
    assert.deepEqual(
      codes.map((c) => c.code),
      Array(10).fill(4001),
    );
  } finally {
    for (const socket of sockets) socket.close();
    await cluster.stop();
  }
});

/** `herald apps …` on the cluster's config (its state file), as an operator runs it beside the cluster. */
function heraldApps(cluster: TestCluster, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [...SOURCE_NODE_ARGS, HERALD_MAIN, 'apps', ...args, '--config', cluster.configFile],
      { env: { PATH: process.env['PATH'] ?? '', HERALD_AUTH_HMAC_SECRET: cluster.hmacSecret }, timeout: 60000 },
      (error, stdout, stderr) => resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, stdout, stderr }),
    );
  });
}

test('apps in a cluster: `herald apps` beside it is followed by every worker at once (the primary passes its notice on)', { timeout: 120000 }, async () => {
  const cluster = await TestCluster.start({ workers: 2, config: { apps: { pollIntervalMs: 3_600_000 } } });
  const sockets: RawPusher[] = [];
  try {
    const created = await heraldApps(cluster, ['create', '--name', 'cli shop', '--json']);
    assert.equal(created.code, 0, created.stderr);
    const { id, key } = (JSON.parse(created.stdout) as { app: { id: string; key: string } }).app;
    // The CLI returns once its notice is written; the primary reloads and tells the workers a moment later.
    await eventually(async () => {
      const socket = new RawPusher(`ws://127.0.0.1:${cluster.port}/app/${key}?protocol=7&client=test&version=1.0.0`);
      const opened = await Promise.race([socket.established().then(() => true), socket.closed.then(() => false)]);
      socket.close();
      return opened ? true : undefined;
    }, 'a worker serves the new app');
    // Every worker serves it: ten sockets on fresh connections, handed to the workers in turn.
    for (let i = 0; i < 10; i++) {
      const socket = new RawPusher(`ws://127.0.0.1:${cluster.port}/app/${key}?protocol=7&client=test&version=1.0.0`);
      sockets.push(socket);
      assert.match(await socket.established(), /^\d+\.\d+$/, `socket ${i}`);
    }
    const disabled = await heraldApps(cluster, ['update', id, '--disable']);
    assert.equal(disabled.code, 0, disabled.stderr);
    const codes = await Promise.all(sockets.map((s) => s.closed));
    assert.deepEqual(
      codes.map((c) => c.code),
      Array(10).fill(4003),
    );
  } finally {
    for (const socket of sockets) socket.close();
    await cluster.stop();
  }
});
