/**
 * The console API across Herald nodes on the redis engine: the console of
 * node A lists a user's connections held by A and by B (asked over the
 * Redis control channel), its overview stream shows both nodes, a
 * disconnect from A's console closes the connection on B, and an admin
 * change made through B's server API is in the audit log A's console reads.
 *
 * Needs Redis at HERALD_TEST_REDIS_URL (default 127.0.0.1:6379); skips
 * loudly without it, fails under HERALD_REQUIRE_SERVICES=1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { Redis } from 'ioredis';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { startHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, eventually, type Json } from '../helpers/herald-ws.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { RedisAdminStore } from '../../src/console/redis-admin-store.ts';
import { PasswordHasher } from '../../src/console/passwords.ts';

const PASSWORD = 'correct horse battery staple';

test('console API on two redis nodes: connections, overview, disconnect and audit span both', { timeout: 90000 }, async (t) => {
  const skip = missingService('Redis', await redisAvailable());
  if (skip !== false) return t.skip(skip);
  const prefix = 'herald-test-console-api-' + randomBytes(4).toString('hex');
  const engine = { type: 'redis', redisUrl: REDIS_URL, redisPrefix: prefix };
  const a = await startHerald({ engine });
  const b = await startHerald({ engine });
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  await redis.connect();
  const dirs: string[] = [];
  try {
    await new RedisAdminStore(redis, prefix).createAdmin({ name: 'ops', role: 'owner', passwordHash: await new PasswordHasher().hash(PASSWORD), now: Date.now() });
    const admin = `http://127.0.0.1:${a.server.adminPort}`;
    const login = await fetch(`${admin}/console/api/login`, { method: 'POST', headers: { origin: admin, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'ops', password: PASSWORD }) });
    assert.equal(login.status, 200);
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
    const csrf = ((await login.json()) as { csrf: string }).csrf;
    const get = async (path: string): Promise<Json> => (await fetch(`${admin}/console/api${path}`, { headers: { cookie } })).json();

    const user = 'redis-user-' + randomBytes(3).toString('hex');
    const onA = await connectWs(a, user);
    const onB = await connectWs(b, user);
    const both = [a.server.node.id, b.server.node.id].sort();
    const listed = await eventually(async () => {
      const body = await get(`/connections?user=${user}`);
      return body.connections.length === 2 ? body : undefined;
    }, 'both nodes answer', 15000);
    assert.deepEqual(listed.connections.map((c: Json) => c.node).sort(), both);
    assert.deepEqual(listed.missing, []);

    const frame = await new Promise<Json>((resolve, reject) => {
      const req = httpRequest(`${admin}/console/api/overview/stream`, { headers: { cookie } }, (res) => {
        let buffer = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          for (const event of buffer.split('\n\n')) {
            const line = event.split('\n').find((l) => l.startsWith('data: '));
            if (line === undefined) continue;
            const parsed = JSON.parse(line.slice(6));
            if (parsed.nodes.length === 2) {
              req.destroy();
              resolve(parsed);
            }
          }
        });
      });
      req.setTimeout(15000, () => req.destroy(new Error('no frame with both nodes')));
      req.on('error', reject);
      req.end();
    });
    assert.deepEqual(frame.nodes.map((n: Json) => n.node).sort(), both);
    assert.ok(frame.nodes.every((n: Json) => n.connections.websocket >= 1));

    const disconnect = await fetch(`${admin}/console/api/users/${user}/disconnect`, { method: 'POST', headers: { cookie, origin: admin, 'x-csrf-token': csrf, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(disconnect.status, 200);
    await onA.closed;
    const closedB = await onB.closed;
    assert.ok(closedB.code >= 3000, `B's connection closed by Herald (${closedB.code})`);

    // An admin change through B's server API, read in A's console (the audit log is in Redis).
    assert.equal((await b.api('revoke_user', { user })).status, 200);
    const entry = await eventually(async () => {
      const body = await get(`/audit?action=api.revoke_user`);
      return (body.entries as Json[]).find((e) => e.target === user);
    }, 'the API change in the audit log');
    assert.equal(entry.actor, 'api-key:test-admin');

    // `herald keys` on the redis engine: its change is in the audit log in Redis too.
    const dir = mkdtempSync(join(tmpdir(), 'herald-console-cli-'));
    dirs.push(dir);
    const configFile = join(dir, 'herald.json');
    writeFileSync(configFile, JSON.stringify({ mode: 'production', stateDir: join(dir, 'state'), engine }));
    await new Promise<void>((resolve, reject) => {
      execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, 'keys', 'create', '--name', 'redis-cli-key', '--scopes', 'read', '--config', configFile], { timeout: 30000, env: { PATH: process.env['PATH'] ?? '' } }, (error, _stdout, stderr) =>
        error === null ? resolve() : reject(new Error(`${error.message}: ${stderr}`)),
      );
    });
    const cli = await eventually(async () => {
      const body = await get('/audit?action=cli.key.create');
      return (body.entries as Json[]).find((e) => e.target === 'redis-cli-key');
    }, 'the CLI change in the audit log');
    assert.match(cli.actor, /^cli/);
  } finally {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    closeAllClients();
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    await a.close();
    await b.close();
  }
});
