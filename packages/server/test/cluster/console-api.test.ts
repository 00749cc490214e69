/**
 * The console API in cluster mode (`--workers 2`, sqlite engine): whichever
 * worker answers a console request, it sees every worker. A user's
 * connections held by two different workers are all listed (asked over the
 * control bus), the overview stream shows one entry per worker, and a
 * disconnect from the console closes the connections on both workers.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TestCluster } from './harness.ts';
import { eventually } from '../helpers/herald-ws.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import { PasswordHasher } from '../../src/console/passwords.ts';

const PASSWORD = 'correct horse battery staple';

/** Sends one request on a fresh connection (any worker may accept it). */
function send(port: number, method: string, path: string, headers: Record<string, string>, body?: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false, headers: { ...headers, ...(body === undefined ? {} : { 'content-length': String(Buffer.byteLength(body)) }) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.setTimeout(20000, () => req.destroy(new Error(`no answer to ${path}`)));
    req.on('error', reject);
    req.end(body);
  });
}

/** An SSE client on a pinned worker's connection; resolves once the stream is open. */
function openSse(port: number, agent: http.Agent, token: string): Promise<{ closed: Promise<string>; stop(): void }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: `/connection/sse?token=${encodeURIComponent(token)}`, agent }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`SSE answered ${res.statusCode}`));
      let text = '';
      res.setEncoding('utf8');
      const closed = new Promise<string>((done) => {
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => done(text));
        res.on('close', () => done(text));
      });
      resolve({ closed, stop: () => req.destroy() });
    });
    req.on('error', reject);
    req.end();
  });
}

test('console API in a cluster: connections on every worker, one overview entry per worker, disconnect everywhere', { timeout: 120000 }, async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'herald-console-cluster-'));
  const file = openSqliteStore({ stateDir });
  await new SqliteAdminStore(file.db).createAdmin({ name: 'ops', role: 'owner', passwordHash: await new PasswordHasher().hash(PASSWORD), now: Date.now() });
  file.close();
  const cluster = await TestCluster.start({ workers: 2, config: { stateDir } });
  const streams: { stop(): void }[] = [];
  try {
    const origin = `http://127.0.0.1:${cluster.adminPort}`;
    const login = await send(cluster.adminPort, 'POST', '/console/api/login', { origin, 'content-type': 'application/json' }, JSON.stringify({ name: 'ops', password: PASSWORD }));
    assert.equal(login.status, 200, login.text);
    const cookie = String(login.headers['set-cookie']?.[0] ?? '').split(';')[0]!;
    const csrf = (JSON.parse(login.text) as { csrf: string }).csrf;

    const workers = await cluster.pinToWorkers(2);
    const nodes = await Promise.all(workers.map((w) => w.node()));
    const user = 'cluster-user';
    const token = await cluster.token(user);
    const sse = await Promise.all(workers.map((w) => openSse(cluster.port, w.agent, token)));
    streams.push(...sse);

    // Several console requests, each on a fresh connection (either worker answers): always both connections.
    for (let i = 0; i < 4; i++) {
      const listed = await eventually(
        async () => {
          const answer = await send(cluster.adminPort, 'GET', `/console/api/connections?user=${user}`, { cookie });
          const body = JSON.parse(answer.text) as { connections: { node: string; transport: string }[]; missing: string[] };
          return body.connections.length === 2 ? body : undefined;
        },
        'both connections listed',
        10000,
      );
      assert.deepEqual(listed.connections.map((c) => c.node).sort(), [...nodes].sort());
      assert.ok(listed.connections.every((c) => c.transport === 'sse'));
      assert.deepEqual(listed.missing, []);
    }

    // The overview: one entry per worker, each with its worker id.
    const frame = await new Promise<any>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: cluster.adminPort, path: '/console/api/overview/stream', agent: false, headers: { cookie } }, (res) => {
        let buffer = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffer += chunk;
          for (const event of buffer.split('\n\n')) {
            const line = event.split('\n').find((l) => l.startsWith('data: '));
            if (line === undefined) continue;
            const parsed = JSON.parse(line.slice(6));
            // Another worker's entry is its last snapshot (up to 2 s old): wait for the frame that has both SSE clients.
            if (parsed.nodes.length === 2 && parsed.nodes.every((n: any) => n.connections.sse >= 1)) {
              req.destroy();
              resolve(parsed);
            }
          }
        });
      });
      // An overall deadline (a socket idle timeout would never fire: a frame comes every second).
      const deadline = setTimeout(() => req.destroy(new Error('no frame with both workers, each holding its SSE client')), 20000);
      req.on('close', () => clearTimeout(deadline));
      req.on('error', reject);
      req.end();
    });
    assert.deepEqual(frame.nodes.map((n: any) => n.node).sort(), [...nodes].sort());
    assert.ok(frame.nodes.every((n: any) => typeof n.worker === 'number' && n.connections.sse >= 1), JSON.stringify(frame.nodes));
    assert.equal(frame.totals.connections.sse, 2);

    const disconnected = await send(cluster.adminPort, 'POST', `/console/api/users/${user}/disconnect`, { cookie, origin, 'x-csrf-token': csrf, 'content-type': 'application/json' }, '{}');
    assert.equal(disconnected.status, 200, disconnected.text);
    const ends = await Promise.all(sse.map((s) => s.closed));
    for (const text of ends) assert.match(text, /disconnect/);
  } finally {
    for (const s of streams) s.stop();
    await cluster.stop();
  }
});
