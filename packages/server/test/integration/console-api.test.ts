/**
 * The console API (packages/server/src/console/console-api.ts) on a real
 * server, over HTTP with real console sessions (signed in through
 * `POST /console/api/login`): each action's effect is checked through the
 * server API or a real client, roles are enforced on the server, hostile
 * input gets registered error codes, and actions land in the audit log.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { execFile } from 'node:child_process';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, eventually, openWs, unique, type Json } from '../helpers/herald-ws.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import { PasswordHasher } from '../../src/console/passwords.ts';
import type { AdminRole } from '../../src/console/admin-store.ts';

const PASSWORD = 'correct horse battery staple';

interface Session {
  readonly cookie: string;
  readonly csrf: string;
}

describe('console API', { timeout: 120000 }, () => {
  let h: TestHerald;
  let admin: string;
  let stateDir: string;
  const sessions: Partial<Record<AdminRole, Session>> = {};

  before(async () => {
    stateDir = mkdtempSync(join(tmpdir(), 'herald-console-api-'));
    // The admins exist before the server starts, as `herald admin create` leaves them.
    const file = openSqliteStore({ stateDir });
    const store = new SqliteAdminStore(file.db);
    const hash = await new PasswordHasher().hash(PASSWORD);
    for (const role of ['owner', 'operator', 'viewer'] as const) await store.createAdmin({ name: role, role, passwordHash: hash, now: Date.now() });
    file.close();
    h = await startHerald({ stateDir });
    admin = `http://127.0.0.1:${h.server.adminPort}`;
    for (const role of ['owner', 'operator', 'viewer'] as const) sessions[role] = await login(role);
  });
  after(async () => {
    closeAllClients();
    await h.close();
  });

  async function login(name: string): Promise<Session> {
    const response = await fetch(`${admin}/console/api/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', origin: admin },
      body: JSON.stringify({ name, password: PASSWORD }),
    });
    assert.equal(response.status, 200, await response.clone().text());
    const body = (await response.json()) as { csrf: string };
    const cookie = (response.headers.get('set-cookie') ?? '').split(';')[0]!;
    assert.match(cookie, /^__Host-herald_console=/);
    return { cookie, csrf: body.csrf };
  }

  /** A console request as `role` (state-changing ones with Origin and the CSRF token). */
  async function call(role: AdminRole | null, method: 'GET' | 'POST', path: string, body?: unknown, raw?: string): Promise<{ status: number; body: Json; text: string; type: string }> {
    const session = role === null ? undefined : sessions[role];
    const headers: Record<string, string> = {};
    if (session !== undefined) headers['cookie'] = session.cookie;
    if (method === 'POST') {
      headers['origin'] = admin;
      if (session !== undefined) headers['x-csrf-token'] = session.csrf;
      headers['content-type'] = 'application/json';
    }
    const response = await fetch(`${admin}/console/api${path}`, { method, headers, body: raw ?? (method === 'POST' ? JSON.stringify(body ?? {}) : undefined) });
    const text = await response.text();
    let parsed: Json = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // keep the text
    }
    return { status: response.status, body: parsed, text, type: response.headers.get('content-type') ?? '' };
  }

  async function auditHas(action: string, target: string, actor?: string): Promise<Json> {
    return eventually(async () => {
      const answer = await call('owner', 'GET', `/audit?action=${encodeURIComponent(action)}&limit=100`);
      assert.equal(answer.status, 200);
      return (answer.body.entries as Json[]).find((e) => e.target === target && (actor === undefined || e.actor === actor));
    }, `audit entry ${action} ${target}`);
  }

  test('without a session every route answers 401; a lower role 403 (and the refusal is audited)', async () => {
    for (const [method, path] of [
      ['GET', '/channels'],
      ['GET', '/connections?user=u'],
      ['GET', '/keys'],
      ['GET', '/audit'],
      ['GET', '/overview/stream'],
    ] as const) {
      const answer = await call(null, method, path);
      assert.equal(answer.status, 401, `${method} ${path}`);
      assert.equal(answer.body.error.code, 'unauthenticated');
    }
    for (const [role, method, path] of [
      ['viewer', 'POST', '/channels/chat:x/publish'],
      ['viewer', 'POST', '/users/u/disconnect'],
      ['viewer', 'POST', '/users/u/revoke'],
      ['viewer', 'POST', '/tokens/t/revoke'],
      ['viewer', 'GET', '/keys'],
      ['operator', 'GET', '/keys'],
      ['operator', 'POST', '/keys'],
      ['operator', 'POST', '/keys/x/revoke'],
      ['operator', 'GET', '/audit'],
      ['viewer', 'GET', '/audit/export'],
    ] as const) {
      const answer = await call(role, method, path, method === 'POST' ? { data: 1 } : undefined);
      assert.equal(answer.status, 403, `${role} ${method} ${path}: ${answer.text}`);
      assert.equal(answer.body.error.code, 'forbidden');
    }
    await auditHas('console.denied', 'POST /console/api/channels/:channel/publish', 'viewer');
  });

  test('a state change without the CSRF token or from a foreign origin is refused', async () => {
    const s = sessions.operator!;
    const noToken = await fetch(`${admin}/console/api/users/u/disconnect`, { method: 'POST', headers: { cookie: s.cookie, origin: admin, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(noToken.status, 403);
    assert.equal(((await noToken.json()) as Json).error.code, 'csrf_failed');
    const foreign = await fetch(`${admin}/console/api/users/u/disconnect`, {
      method: 'POST',
      headers: { cookie: s.cookie, origin: 'http://evil.example', 'x-csrf-token': s.csrf, 'content-type': 'application/json' },
      body: '{}',
    });
    assert.equal(foreign.status, 403);
    assert.equal(((await foreign.json()) as Json).error.code, 'csrf_failed');
  });

  test('channels: search, detail with presence, position and history; an operator publishes a test message that subscribers get', async () => {
    const channel = unique('chat:console');
    const client = await connectWs(h, 'alice');
    await client.call('subscribe', { channel });
    await h.api('publish', { channel, data: { n: 1 } });

    const found = await call('viewer', 'GET', `/channels?prefix=${encodeURIComponent(channel)}`);
    assert.equal(found.status, 200);
    assert.deepEqual(found.body.channels, [{ channel, subscribers: 1 }]);
    assert.equal(found.body.truncated, false);

    const published = await call('operator', 'POST', `/channels/${encodeURIComponent(channel)}/publish`, { data: { test: 'from console' } });
    assert.equal(published.status, 200, published.text);
    assert.equal(typeof published.body.offset, 'number');
    await client.waitUntil(() => client.frames.find((f) => f.push === 'publication' && f.data?.test === 'from console'), 'the console publication');

    const detail = await call('viewer', 'GET', `/channels/${encodeURIComponent(channel)}`);
    assert.equal(detail.status, 200, detail.text);
    assert.equal(detail.body.channel, channel);
    assert.equal(detail.body.subscribers, 1);
    assert.deepEqual(
      detail.body.presence.map((m: Json) => m.user),
      ['alice'],
    );
    assert.equal(detail.body.stream.offset, 2);
    assert.deepEqual(
      detail.body.history.map((p: Json) => p.data),
      [{ test: 'from console' }, { n: 1 }],
    );
    const entry = await auditHas('channel.publish', channel, 'operator');
    assert.equal(entry.outcome, 'ok');
    assert.equal(entry.address, '127.0.0.1');

    // A namespace without history: no position, no publications.
    const plain = await call('viewer', 'GET', `/channels/${encodeURIComponent(unique('nohistory:x'))}`);
    assert.equal(plain.status, 200);
    assert.equal(plain.body.stream, null);
    assert.deepEqual(plain.body.history, []);
  });

  test('hostile input: bad channel names, SQL-looking and oversized values get documented codes', async () => {
    const sqlish = "x' OR 1=1; DROP TABLE console_audit; --";
    const search = await call('viewer', 'GET', `/channels?prefix=${encodeURIComponent(sqlish)}`);
    assert.equal(search.status, 200);
    assert.deepEqual(search.body.channels, []);
    const long = await call('viewer', 'GET', `/channels?prefix=${'a'.repeat(300)}`);
    assert.equal(long.status, 400);
    assert.equal(long.body.error.code, 'invalid_input');
    const limit = await call('viewer', 'GET', '/channels?limit=100000');
    assert.equal(limit.body.error.code, 'invalid_input');
    const unknownNs = await call('viewer', 'GET', `/channels/${encodeURIComponent('nosuch:room')}`);
    assert.equal(unknownNs.status, 400);
    assert.equal(unknownNs.body.error.code, 'unknown_namespace');
    const control = await call('viewer', 'GET', `/channels/${encodeURIComponent('chat:a\u0000b')}`);
    assert.equal(control.status, 400);
    assert.equal(control.body.error.code, 'invalid_input');
    const badPublish = await call('operator', 'POST', `/channels/${encodeURIComponent('chat:a b')}/publish`, { data: 1 });
    assert.equal(badPublish.status, 400, badPublish.text);
    assert.equal(badPublish.body.error.code, 'invalid_channel');
    const extra = await call('operator', 'POST', '/channels/chat:x/publish', { data: 1, __proto__: { admin: true }, channel: 'chat:y' });
    assert.equal(extra.body.error.code, 'invalid_input');
    const huge = await call('operator', 'POST', '/channels/chat:x/publish', { data: 'x'.repeat(200_000) });
    assert.equal(huge.status, 413);
    assert.equal(huge.body.error.code, 'payload_too_large');
    const notJson = await call('operator', 'POST', '/users/u/disconnect', undefined, '{"reconnect":');
    assert.equal(notJson.status, 400);
    const sqlKey = await call('owner', 'POST', '/keys', { name: sqlish, scopes: ['read'] });
    assert.equal(sqlKey.body.error.code, 'invalid_input');
    const badScope = await call('owner', 'POST', '/keys', { name: 'k1', scopes: ['root'] });
    assert.equal(badScope.body.error.code, 'invalid_input');
    const auditFilter = await call('owner', 'GET', `/audit?actor=${encodeURIComponent(sqlish)}`);
    assert.equal(auditFilter.status, 200);
    assert.deepEqual(auditFilter.body.entries, []);
    const badSince = await call('owner', 'GET', '/audit?since=yesterday');
    assert.equal(badSince.body.error.code, 'invalid_input');
    const longUser = await call('viewer', 'GET', `/connections?user=${'u'.repeat(256)}`);
    assert.equal(longUser.body.error.code, 'invalid_input');
    const twice = await call('viewer', 'GET', '/connections?user=a&user=b');
    assert.equal(twice.body.error.code, 'invalid_input');
    const longParam = await call('operator', 'POST', `/users/${'u'.repeat(1000)}/disconnect`, {});
    assert.equal(longParam.status, 404, longParam.text);
    assert.equal(longParam.body.error.code, 'not_found');
    assert.ok(!longParam.text.includes('uuuuuuuuuu'), 'the path is not echoed');
    const badUrl = await call('viewer', 'GET', '/channels/%zz');
    assert.equal(badUrl.status, 400, badUrl.text);
    assert.equal(badUrl.body.error.code, 'bad_request');
    // The public listener's router answers the same way.
    const publicLong = await h.api('x'.repeat(300), {});
    assert.equal(publicLong.status, 404);
    assert.equal(publicLong.body.error.code, 'not_found');
    const bigKeyBody = await call('owner', 'POST', '/keys', { name: 'k'.repeat(10), scopes: ['read'], pad: 'x'.repeat(5000) });
    assert.equal(bigKeyBody.status, 413);
    assert.equal(bigKeyBody.body.error.code, 'payload_too_large');
  });

  test('connections of a user across the node, then disconnect and revoke: the user really is gone', async () => {
    const user = unique('bob');
    const channel = unique('chat:bob');
    const first = await connectWs(h, user);
    await first.call('subscribe', { channel });
    const listed = await call('viewer', 'GET', `/connections?user=${encodeURIComponent(user)}`);
    assert.equal(listed.status, 200);
    assert.equal(listed.body.connections.length, 1);
    const c = listed.body.connections[0];
    assert.equal(c.user, user);
    assert.equal(c.transport, 'websocket');
    assert.equal(c.node, h.server.node.id);
    assert.deepEqual(c.channels, [channel]);
    assert.equal(c.address, '127.0.0.1');
    assert.ok(c.since <= Date.now() && c.since > Date.now() - 60000);

    const missingUser = await call('viewer', 'GET', '/connections');
    assert.equal(missingUser.body.error.code, 'invalid_input');

    const disconnected = await call('operator', 'POST', `/users/${encodeURIComponent(user)}/disconnect`, {});
    assert.equal(disconnected.status, 200, disconnected.text);
    assert.equal(disconnected.body.disconnected, 1);
    const closed = await first.closed;
    assert.ok(closed.code >= 3000, `closed with a Herald code, got ${closed.code}`);
    await auditHas('user.disconnect', user, 'operator');

    // Revoked: the live connection closes and the same token no longer connects.
    const token = await h.token(user);
    const second = await openWs(h.wsUrl);
    await second.connect(token);
    // Revocation covers tokens issued until now (iat has 1 s precision).
    await new Promise((resolve) => setTimeout(resolve, 1100));
    const revoked = await call('operator', 'POST', `/users/${encodeURIComponent(user)}/revoke`);
    assert.equal(revoked.status, 200, revoked.text);
    await second.closed;
    const after = await eventually(async () => {
      const listed = await call('viewer', 'GET', `/connections?user=${encodeURIComponent(user)}`);
      return listed.body.connections.length === 0 ? listed : undefined;
    }, 'no connection of the revoked user');
    assert.deepEqual(after.body.connections, []);
    const again = await openWs(h.wsUrl);
    await assert.rejects(again.connect(token), 'the revoked token no longer connects');
    await auditHas('user.revoke', user, 'operator');

    const tokenRevoked = await call('operator', 'POST', `/tokens/${encodeURIComponent('jti-' + user)}/revoke`, { expiresAt: Math.floor(Date.now() / 1000) + 3600 });
    assert.equal(tokenRevoked.status, 200, tokenRevoked.text);
    await auditHas('token.revoke', 'jti-' + user, 'operator');
  });

  test('API keys: created (secret once) works, lists with its prefix and last use, rotates, and stops when revoked', async () => {
    const created = await call('owner', 'POST', '/keys', { name: 'console-made', scopes: ['read'] });
    assert.equal(created.status, 200, created.text);
    const secret: string = created.body.secret;
    assert.match(secret, /^hk_/);
    assert.equal(created.body.key.prefix, secret.slice(0, 9));
    assert.equal(created.body.key.lastUsedAt, null);
    await eventually(async () => ((await h.api('info', {}, secret)).status === 200 ? true : undefined), 'the new key works');

    const listed = await call('owner', 'GET', '/keys');
    const view = (listed.body.keys as Json[]).find((k) => k.name === 'console-made');
    assert.ok(view, 'listed');
    assert.equal(view.prefix, secret.slice(0, 9));
    assert.deepEqual(view.scopes, ['read']);
    assert.equal(typeof view.createdAt, 'number');
    assert.equal(typeof view.lastUsedAt, 'number');
    assert.ok(!JSON.stringify(listed.body).includes(secret), 'the secret is never listed');
    assert.ok((listed.body.keys as Json[]).some((k) => k.name === 'test-admin' && k.source === 'config'));

    const dup = await call('owner', 'POST', '/keys', { name: 'console-made', scopes: ['read'] });
    assert.equal(dup.body.error.code, 'invalid_input');

    const rotated = await call('owner', 'POST', '/keys/console-made/rotate', { graceSeconds: 0 });
    assert.equal(rotated.status, 200, rotated.text);
    assert.equal(rotated.body.key.name, 'console-made-r2');
    const next: string = rotated.body.secret;
    await eventually(async () => ((await h.api('info', {}, next)).status === 200 ? true : undefined), 'the rotated key works');
    await eventually(async () => ((await h.api('info', {}, secret)).status === 401 ? true : undefined), 'the old key stops');

    const revoked = await call('owner', 'POST', '/keys/console-made-r2/revoke', {});
    assert.equal(revoked.status, 200, revoked.text);
    await eventually(async () => ((await h.api('info', {}, next)).status === 401 ? true : undefined), 'the revoked key stops');
    const missing = await call('owner', 'POST', '/keys/no-such-key/revoke', {});
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'not_found');
    const configKey = await call('owner', 'POST', '/keys/test-admin/revoke', {});
    assert.equal(configKey.body.error.code, 'invalid_input');

    await auditHas('key.create', 'console-made', 'owner');
    await auditHas('key.rotate', 'console-made', 'owner');
    await auditHas('key.revoke', 'console-made-r2', 'owner');
  });

  test('admin changes made through the server API are in the audit log, with the key and the address; export is JSON lines', async () => {
    const user = unique('carol');
    const answer = await h.api('disconnect', { user });
    assert.equal(answer.status, 200);
    const entry = await auditHas('api.disconnect', user, 'api-key:test-admin');
    assert.equal(entry.address, '127.0.0.1');
    assert.equal(entry.outcome, 'ok');
    await h.api('revoke_user', { user });
    await auditHas('api.revoke_user', user, 'api-key:test-admin');

    const exported = await call('owner', 'GET', '/audit/export?action=api.disconnect');
    assert.equal(exported.status, 200);
    assert.match(exported.type, /^application\/x-ndjson/);
    const lines = exported.text.trim().split('\n').map((line) => JSON.parse(line));
    assert.ok(lines.length >= 1);
    assert.ok(lines.every((e) => e.action === 'api.disconnect'));
    assert.ok(lines.some((e) => e.target === user));
    const since = await call('owner', 'GET', `/audit?since=${Date.now() + 60000}`);
    assert.deepEqual(since.body.entries, []);
  });

  test('herald keys beside the running server: the key is listed with its prefix and the change is in the audit log', async () => {
    const out = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
      execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, 'keys', 'create', '--name', 'cli-made', '--scopes', 'publish', '--state-dir', stateDir], { timeout: 30000, env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) =>
        error === null ? resolve({ stdout, stderr }) : reject(new Error(`${error.message}: ${stderr}`)),
      );
    });
    const secret = out.stdout.trim();
    const listed = await call('owner', 'GET', '/keys');
    const view = (listed.body.keys as Json[]).find((k) => k.name === 'cli-made');
    assert.equal(view?.prefix, secret.slice(0, 9));
    const list = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, 'keys', 'list', '--json', '--state-dir', stateDir], { timeout: 30000, env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) =>
        error === null ? resolve(stdout) : reject(new Error(`${error.message}: ${stderr}`)),
      );
    });
    assert.equal((JSON.parse(list) as Json[]).find((k) => k.name === 'cli-made')?.keyPrefix, secret.slice(0, 9), 'herald keys list shows the prefix too');
    const entry = await auditHas('cli.key.create', 'cli-made');
    assert.match(entry.actor, /^cli/);
    assert.equal(entry.outcome, 'ok');
  });

  test('overview stream: one JSON frame per second with this node, its connections by transport and the watchdog; streams per session are bounded', async () => {
    const client = await connectWs(h, 'dave');
    const frames: Json[] = [];
    const streams: (() => void)[] = [];
    const open = (onFrame?: (frame: Json) => void): Promise<number> =>
      new Promise((resolve, reject) => {
        const req = httpRequest(`${admin}/console/api/overview/stream`, { headers: { cookie: sessions.viewer!.cookie } }, (res) => {
          resolve(res.statusCode ?? 0);
          let buffer = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => {
            buffer += chunk;
            let at: number;
            while ((at = buffer.indexOf('\n\n')) >= 0) {
              const event = buffer.slice(0, at);
              buffer = buffer.slice(at + 2);
              const data = event.split('\n').find((line) => line.startsWith('data: '));
              if (data !== undefined) onFrame?.(JSON.parse(data.slice(6)));
            }
          });
          res.on('error', () => {});
        });
        req.on('error', reject);
        streams.push(() => req.destroy());
        req.end();
      });
    try {
      assert.equal(await open((frame) => frames.push(frame)), 200);
      await eventually(async () => (frames.length >= 2 ? true : undefined), 'two frames');
      const frame = frames.at(-1)!;
      assert.equal(typeof frame.t, 'number');
      const self = frame.nodes.find((n: Json) => n.node === h.server.node.id);
      assert.ok(self, 'this node is in the frame');
      assert.ok(self.connections.websocket >= 1);
      assert.equal(typeof self.eventLoopDelayMs, 'number');
      assert.ok(self.heapUsedBytes > 0 && self.rssBytes > 0);
      assert.ok(Array.isArray(self.watchdog));
      assert.equal(frame.totals.nodes, frame.nodes.length);
      assert.ok(frame.totals.connections.websocket >= 1);
      for (let i = 1; i < 4; i++) assert.equal(await open(), 200);
      // The fifth stream of the same session is refused.
      const refused = await fetch(`${admin}/console/api/overview/stream`, { headers: { cookie: sessions.viewer!.cookie } });
      assert.equal(refused.status, 429);
      assert.equal(((await refused.json()) as Json).error.code, 'too_many_requests');
    } finally {
      for (const stop of streams) stop();
      client.ws.close();
    }
    // Closed streams give their places back.
    await eventually(async () => {
      const response = await fetch(`${admin}/console/api/overview/stream`, { headers: { cookie: sessions.viewer!.cookie } });
      const ok = response.status === 200;
      await response.body?.cancel();
      return ok ? true : undefined;
    }, 'a stream place again');
  });
});

describe('API key last use across a restart', { timeout: 60000 }, () => {
  test('a key used before a restart shows its last use after it (saved at shutdown, read at start)', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'herald-console-usage-'));
    try {
      const file = openSqliteStore({ stateDir });
      await new SqliteAdminStore(file.db).createAdmin({ name: 'owner', role: 'owner', passwordHash: await new PasswordHasher().hash(PASSWORD), now: Date.now() });
      file.close();
      const first = await startHerald({ stateDir });
      const before = Date.now();
      assert.equal((await first.api('info', {})).status, 200);
      // Not h.close(): that removes the state directory.
      await first.server.close();
      const second = await startHerald({ stateDir });
      try {
        const origin = `http://127.0.0.1:${second.server.adminPort}`;
        const login = await fetch(`${origin}/console/api/login`, { method: 'POST', headers: { origin, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'owner', password: PASSWORD }) });
        const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
        const keys = (await (await fetch(`${origin}/console/api/keys`, { headers: { cookie } })).json()) as { keys: Json[] };
        const used = keys.keys.find((k) => k.name === 'test-admin');
        assert.ok(typeof used?.lastUsedAt === 'number' && used.lastUsedAt >= before, JSON.stringify(used));
      } finally {
        await second.close();
      }
    } finally {
      rmSync(stateDir, { recursive: true, force: true });
    }
  });
});
