/**
 * The sqlite engine across real restarts of `herald serve` (issue 14, part 1):
 * publish, stop the process (SIGTERM, and SIGKILL), start it again on the
 * same state directory; WebSocket, SSE and long-poll clients that come back
 * with their position recover every publication they missed with
 * `recovered: true` in the same epoch (followers of
 * packages/server/test/redis/followers.ts, which check exactly-once, in order,
 * at the acknowledged position). A token revoked before the restart stays
 * refused; history TTL still applies to what was stored before; a state
 * file that is not Herald's makes the start fail with exit code 2 and is
 * left untouched.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { sleep } from '../helpers/rt-util.ts';
import { callApi, Tokens, type Target } from '../redis/harness.ts';
import { LongPollFollower, Publisher, SseFollower, verify, WsFollower, type Follower } from '../redis/followers.ts';

const dirs: string[] = [];
after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A production config on the sqlite engine in a fresh directory, with its API key and token secret. */
function setup(): { dir: string; config: string; env: Record<string, string>; tokens: Tokens } {
  const dir = mkdtempSync(join(tmpdir(), 'herald-sqlite-restart-'));
  dirs.push(dir);
  const tokens = new Tokens();
  writeFileSync(join(dir, 'hmac'), tokens.secret + '\n', { mode: 0o600 });
  const config = join(dir, 'herald.json');
  writeFileSync(
    config,
    JSON.stringify({
      auth: { hmacSecretFile: join(dir, 'hmac') },
      listen: { host: '127.0.0.1', port: 0 },
      admin: { port: 0 },
      stateDir: join(dir, 'state'),
      engine: { type: 'sqlite' },
      log: { level: 'info' },
      process: { allowRoot: true },
      channels: {
        namespaces: [
          { name: 'chaos', historySize: 20000, historyTtlMs: 600000 },
          { name: 'short', historySize: 100, historyTtlMs: 1500 },
        ],
      },
    }),
  );
  return { dir, config, env: { HERALD_API_KEY: randomBytes(24).toString('base64url') }, tokens };
}

async function start(s: ReturnType<typeof setup>, name: string, workers = 1): Promise<{ process: HeraldProcess; target: Target }> {
  const process = new HeraldProcess(['--config', s.config, ...(workers > 1 ? ['--workers', String(workers)] : [])], s.dir, s.env);
  const port = await process.listeningPort();
  return { process, target: { name, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/connection/websocket`, apiKey: s.env['HERALD_API_KEY']! } };
}

/** A loopback port with nothing listening: where followers knock while the server is down. */
async function closedPort(): Promise<Target> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return { name: 'down', url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/connection/websocket`, apiKey: 'none' };
}

const cases = [
  { signal: 'SIGTERM', workers: 1 },
  { signal: 'SIGKILL', workers: 1 },
  // Cluster mode: the primary owns the file (workers exit when they lose their primary).
  { signal: 'SIGTERM', workers: 2 },
  { signal: 'SIGKILL', workers: 2 },
] as const;

for (const { signal, workers } of cases) {
  describe(`sqlite engine${workers > 1 ? ` in cluster mode (${workers} workers)` : ''}: restart by ${signal}`, { timeout: 120000 }, () => {
    test('clients on all three transports recover what they missed, with recovered:true in the same epoch', async () => {
      const s = setup();
      const down = await closedPort();
      let first = await start(s, 'first', workers);
      let current: Target = first.target;
      const channel = `chaos:restart-${signal.toLowerCase()}-${workers}`;
      const targets = () => [current];
      const followers: Follower[] = [
        new WsFollower({ name: 'ws', channel, tokens: s.tokens, targets }),
        new SseFollower({ name: 'sse', channel, tokens: s.tokens, targets }),
        new LongPollFollower({ name: 'lp', channel, tokens: s.tokens, targets }),
      ];
      const publisher = new Publisher(channel, targets);
      try {
        for (const f of followers) await f.start();
        for (let i = 0; i < 20; i++) assert.equal((await publisher.publishOnce()).status, 200);
        const before = publisher.acked[publisher.acked.length - 1]!;
        for (const f of followers) await f.waitFor(before);
        const epoch = before.epoch;

        // Down: the followers knock on a closed port until the test lets them back.
        current = down;
        await first.process.stop(signal);
        const second = await start(s, 'second', workers);
        first = second;
        // Published while every follower is away: they must recover these.
        for (let i = 0; i < 15; i++) assert.equal((await publisher.publishOnce(second.target)).status, 200);
        const missed = publisher.acked.slice(-15);
        assert.deepEqual(
          missed.map((a) => `${a.epoch}:${a.offset}`),
          Array.from({ length: 15 }, (_, i) => `${epoch}:${before.offset + i + 1}`),
          'the restarted server continues the stream: same epoch, next offsets',
        );
        current = second.target;
        const marker = await publisher.final();
        for (const f of followers) await f.waitFor(marker, 20000);
        for (const f of followers) {
          assert.deepEqual(verify(f, publisher.acked), [], f.summary());
          const resubscribes = f.resubscribes;
          assert.ok(resubscribes.length >= 1, `${f.name} came back: ${f.summary()}`);
          for (const sub of resubscribes) {
            assert.equal(sub.recovered, true, `${f.name}: ${f.summary()}`);
            assert.equal(sub.epoch, epoch, `${f.name}: same epoch`);
          }
          for (const a of missed) assert.ok(f.received.has(a.n), `${f.name} got n=${a.n}, published while it was away`);
        }
        // History through the API too.
        const history = await callApi(second.target, 'history', { channel, limit: 1000 });
        assert.equal(history.status, 200);
        assert.equal(history.body.epoch, epoch);
        assert.equal(history.body.publications.length, publisher.acked.length);
      } finally {
        for (const f of followers) f.stop();
        await first.process.stop();
      }
    });
  });
}

describe('sqlite engine: revocations and TTL across a restart', { timeout: 120000 }, () => {
  test('a token revoked before a SIGKILL is refused after it; expired history stays expired', async () => {
    const s = setup();
    let herald = await start(s, 'first');
    try {
      const jti = randomBytes(8).toString('hex');
      const revoked = await s.tokens.sign('alice', { jti });
      const fine = await s.tokens.sign('alice', { jti: randomBytes(8).toString('hex') });
      const userToken = await s.tokens.sign('mallory');
      const expiresAt = Math.floor(Date.now() / 1000) + 3600;
      assert.equal((await callApi(herald.target, 'revoke_token', { jti, expires_at: expiresAt })).status, 200);
      assert.equal((await callApi(herald.target, 'revoke_user', { user: 'mallory' })).status, 200);
      const shortPublish = await callApi(herald.target, 'publish', { channel: 'short:ttl', data: { n: 1 } });
      assert.equal(shortPublish.status, 200);
      const keptPublish = await callApi(herald.target, 'publish', { channel: 'chaos:kept', data: { n: 1 } });
      const publishedAt = Date.now();

      await herald.process.stop('SIGKILL');
      await sleep(Math.max(0, publishedAt + 2000 - Date.now()));
      herald = await start(s, 'second');

      assert.deepEqual(await connectAnswer(herald.target, revoked), 'refused', 'the revoked jti stays refused');
      assert.deepEqual(await connectAnswer(herald.target, userToken), 'refused', 'the revoked user stays refused');
      assert.deepEqual(await connectAnswer(herald.target, fine), 'connected', 'another token of the same user works');

      const short = await callApi(herald.target, 'history', { channel: 'short:ttl', limit: 10 });
      assert.equal(short.status, 200);
      assert.deepEqual(short.body.publications, [], 'expired while the server was down');
      assert.notEqual(short.body.epoch, shortPublish.body.epoch, 'the expired stream was deleted: a new epoch');
      const kept = await callApi(herald.target, 'history', { channel: 'chaos:kept', limit: 10 });
      assert.equal(kept.body.epoch, keptPublish.body.epoch);
      assert.deepEqual(kept.body.publications.map((p: { data: unknown }) => p.data), [{ n: 1 }]);
    } finally {
      await herald.process.stop();
    }
  });
});

describe('sqlite engine: a state file that is not Herald\'s', { timeout: 60000 }, () => {
  test('is refused at start with exit code 2 and a clear message, and never modified', async () => {
    const s = setup();
    mkdirSync(join(s.dir, 'state'), { recursive: true, mode: 0o700 });
    const file = join(s.dir, 'state', 'herald.db');
    writeFileSync(file, 'id,name\n1,not a database\n'.repeat(20), { mode: 0o600 });
    const before = readFileSync(file);
    const herald = new HeraldProcess(['--config', s.config], s.dir, s.env);
    const code = await new Promise<number | null>((resolve) => herald.child.once('exit', (c) => resolve(c)));
    assert.equal(code, 2, herald.stderr);
    assert.match(herald.stderr, new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: not a SQLite database .*refuses to start on it and leaves it untouched`));
    assert.doesNotMatch(herald.stderr, /\n\s+at /, 'no stack trace');
    assert.deepEqual(readFileSync(file), before);
  });
});

/** `connected` when a WebSocket connect with `token` succeeds, `refused` when the server refuses it. */
async function connectAnswer(target: Target, token: string): Promise<'connected' | 'refused'> {
  const ws = new WebSocket(target.wsUrl);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const answer = await new Promise<'connected' | 'refused'>((resolve) => {
    ws.on('message', (raw) => {
      const frame = JSON.parse(String(raw)) as { id?: number; error?: unknown; result?: unknown };
      if (frame.id === 1) resolve(frame.error === undefined ? 'connected' : 'refused');
    });
    ws.once('close', () => resolve('refused'));
    ws.send(JSON.stringify({ id: 1, method: 'connect', params: { token } }));
  });
  ws.terminate();
  return answer;
}

describe('sqlite engine: a state file that refuses writes', { timeout: 60000 }, () => {
  test('publish answers 503 unavailable, /health 503 with the reason, and both recover once the file is writable again', async () => {
    const { startHerald } = await import('../helpers/herald.ts');
    const { DatabaseSync } = await import('node:sqlite');
    const s = setup();
    const stateDir = join(s.dir, 'state');
    const h = await startHerald({ stateDir, engine: { type: 'sqlite', sqliteBusyTimeoutMs: 50 } });
    const health = async () => {
      const response = await fetch(`http://127.0.0.1:${h.server.adminPort}/health`);
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    try {
      assert.equal((await h.api('publish', { channel: 'chat:disk', data: { n: 1 } })).status, 200);
      assert.equal((await health()).status, 200);
      // Another process holds the write lock (as a long `sqlite3` session would).
      const other = new DatabaseSync(join(stateDir, 'herald.db'));
      other.exec('BEGIN IMMEDIATE');
      try {
        const refused = await h.api('publish', { channel: 'chat:disk', data: { n: 2 } });
        assert.equal(refused.status, 503);
        assert.equal(refused.body.error.code, 'unavailable');
        const degraded = await health();
        assert.equal(degraded.status, 503);
        assert.deepEqual(degraded.body, { status: 'degraded', reason: 'database file is busy (SQLITE_BUSY)' });
      } finally {
        other.exec('ROLLBACK');
        other.close();
      }
      const accepted = await h.api('publish', { channel: 'chat:disk', data: { n: 3 } });
      assert.equal(accepted.status, 200);
      assert.equal(accepted.body.offset, 2, 'the refused publication took no offset');
      assert.equal((await health()).status, 200);
    } finally {
      await h.close();
    }
  });
});

describe('sqlite engine: one owner per state directory', { timeout: 60000 }, () => {
  test('a second Herald on a running one\'s state directory exits 2 naming it; --engine memory starts beside it; after a SIGKILL the next start takes over', async () => {
    const s = setup();
    const first = await start(s, 'first');
    try {
      const second = new HeraldProcess(['--config', s.config], s.dir, s.env);
      const code = await new Promise<number | null>((resolve) => second.child.once('exit', (c) => resolve(c)));
      assert.equal(code, 2, second.stderr);
      assert.match(second.stderr, new RegExp(`herald\\.db: in use by another Herald \\(pid ${first.process.child.pid}, seen \\d+ s ago\\)`));
      const beside = new HeraldProcess(['--config', s.config, '--engine', 'memory'], s.dir, s.env);
      await beside.listeningPort();
      await beside.stop();
      assert.equal((await callApi(first.target, 'publish', { channel: 'chaos:owner', data: { n: 1 } })).status, 200, 'the owner was not disturbed');
      await first.process.stop('SIGKILL');
      const third = await start(s, 'third');
      const history = await callApi(third.target, 'history', { channel: 'chaos:owner', limit: 10 });
      assert.deepEqual(history.body.publications.map((p: { data: unknown }) => p.data), [{ n: 1 }]);
      await third.process.stop();
    } finally {
      await first.process.stop();
    }
  });
});
