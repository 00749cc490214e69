/**
 * Graceful shutdown of a real `herald serve` process (SIGTERM): clients are
 * told 3001 (`shutdown`, reconnect), long-poll sessions between two polls
 * by their next poll, new connections are refused (503), and the process
 * exits with code 0 once everything drained, or when `shutdown.drainTimeoutMs`
 * cuts the drain short. Bounds are configured so that one of them alone can
 * end a drain in time; the tests never measure how long it took.
 */
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { WsClient, openSse, poll, pollOpen, sseUrl, type Frame, type SseStream } from '../helpers/rt-clients.ts';
import { RawWebSocket } from '../helpers/rt-raw.ts';
import { deferred, sleep, waitUntil, withTimeout } from '../helpers/rt-util.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const nodeBin = process.execPath;

interface Spawned {
  readonly child: ChildProcess;
  readonly port: number;
  readonly url: string;
  readonly wsUrl: string;
  readonly apiKey: string;
  readonly stdout: string[];
  readonly stderr: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>;
  token(sub: string): Promise<string>;
  api(method: string, body: unknown): Promise<{ status: number; body: Frame }>;
}

const children: ChildProcess[] = [];
const tempDirs: string[] = [];

interface Overrides {
  readonly drainTimeoutMs: number;
  /** Merged into the config file's `limits`, `longPoll`. */
  readonly limits?: Record<string, unknown>;
  readonly longPoll?: Record<string, unknown>;
  /** The token secret (default: a new one), to restart with the same one. */
  readonly hmacSecret?: string;
}

async function spawnHerald(overrides: Overrides): Promise<Spawned> {
  const hmacSecret = overrides.hmacSecret ?? randomBytes(32).toString('base64url');
  const apiKey = randomBytes(24).toString('base64url');
  const dir = mkdtempSync(join(tmpdir(), 'herald-shutdown-'));
  tempDirs.push(dir);
  const configPath = join(dir, 'herald.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      mode: 'production',
      listen: { host: '127.0.0.1', port: 0 },
      admin: { host: '127.0.0.1', port: 0 },
      process: { allowRoot: true },
      log: { level: 'info' },
      stateDir: join(dir, 'state'),
      auth: { algorithms: ['HS256'] },
      api: { keys: [{ name: 'file-key', sha256: createHash('sha256').update(randomBytes(16)).digest('hex'), scopes: ['read'] }] },
      channels: {
        defaults: {},
        namespaces: [
          { name: 'chat', presence: true, joinLeave: true, clientPublish: true },
          { name: 'public', allowAnonymous: true, clientPublish: true },
        ],
      },
      shutdown: { drainTimeoutMs: overrides.drainTimeoutMs },
      ...(overrides.limits === undefined ? {} : { limits: overrides.limits }),
      ...(overrides.longPoll === undefined ? {} : { longPoll: overrides.longPoll }),
    }),
  );
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('HERALD_')) env[k] = v;
  env['HERALD_API_KEY'] = apiKey;
  // Production mode takes secrets from files or the environment, not from the config file.
  env['HERALD_AUTH_HMAC_SECRET'] = hmacSecret;
  const child = spawn(nodeBin, [...SOURCE_NODE_ARGS, 'src/cli/main.ts', 'serve', '--config', configPath], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  const stdout: string[] = [];
  const stderr: string[] = [];
  const exited = deferred<{ code: number | null; signal: NodeJS.Signals | null; at: number }>();
  child.on('exit', (code, signal) => exited.resolve({ code, signal, at: Date.now() }));
  const listening = deferred<number>();
  createInterface({ input: child.stdout! }).on('line', (line) => {
    stdout.push(line);
    try {
      const entry = JSON.parse(line) as Frame;
      if (entry['msg'] === 'listening' && typeof entry['port'] === 'number') listening.resolve(entry['port']);
    } catch {
      // not JSON
    }
  });
  createInterface({ input: child.stderr! }).on('line', (line) => stderr.push(line));
  void exited.promise.then((e) => listening.reject(new Error(`herald exited (${e.code}/${e.signal}) before listening:\n${stdout.join('\n')}\n${stderr.join('\n')}`)));
  const port = await withTimeout(listening.promise, 30000, `"listening" log line; stdout so far:\n${stdout.join('\n')}`);
  assert.ok(port > 0, 'listening line carries the port');
  const url = `http://127.0.0.1:${port}`;
  const key = new TextEncoder().encode(hmacSecret);
  return {
    child,
    port,
    url,
    wsUrl: `ws://127.0.0.1:${port}/connection/websocket`,
    apiKey,
    stdout,
    stderr,
    exited: exited.promise,
    token: (sub) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(sub)
        .setIssuedAt()
        .setExpirationTime(Math.floor(Date.now() / 1000) + 3600)
        .sign(key),
    async api(method, body) {
      const response = await fetch(`${url}/api/${method}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${apiKey}` },
        body: JSON.stringify(body),
      });
      return { status: response.status, body: (await response.json()) as Frame };
    },
  };
}

/** True when a new WebSocket connection cannot be established (refused, reset or HTTP error). */
async function wsRefused(wsUrl: string): Promise<{ refused: boolean; how: string }> {
  try {
    const client = await withTimeout(WsClient.open(wsUrl), 5000, 'new websocket during shutdown');
    // The upgrade went through: it is only acceptable if the server closes it at once without serving it.
    const outcome = await Promise.race([
      client.request('connect', {}, 3000).then((r) => `answered ${JSON.stringify(r)}`),
      client.closed.then((c) => `closed ${c.code}`),
    ]).catch((error: Error) => `failed ${error.message}`);
    client.terminate();
    return { refused: !outcome.startsWith('answered'), how: `upgrade accepted, then ${outcome}` };
  } catch (error) {
    return { refused: true, how: (error as Error).message };
  }
}

/** True when a new SSE request is not served as a stream. */
async function sseRefused(url: string): Promise<{ refused: boolean; how: string }> {
  try {
    const stream = await withTimeout(openSse(url), 5000, 'new SSE during shutdown');
    stream.abort();
    return { refused: stream.status !== 200, how: `HTTP ${stream.status} ${JSON.stringify(stream.errorBody)}` };
  } catch (error) {
    return { refused: true, how: (error as Error).message };
  }
}

/** The status a WebSocket upgrade is answered with: 101 when it goes through, else the HTTP error (or the socket error). */
function upgradeStatus(wsUrl: string): Promise<number | string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(wsUrl);
    ws.on('upgrade', () => {
      resolve(101);
      ws.terminate();
    });
    ws.on('unexpected-response', (request, response) => {
      resolve(response.statusCode ?? 0);
      request.destroy();
    });
    ws.on('error', (error) => resolve(error.message));
  });
}

/** Herald's `stopped` log line (its `drained` says whether everything closed before the drain timeout). */
function stoppedLine(herald: Spawned): Frame | undefined {
  const line = herald.stdout.find((l) => l.includes('"msg":"stopped"'));
  return line === undefined ? undefined : (JSON.parse(line) as Frame);
}

interface PollAnswer {
  readonly status: number;
  readonly body: { session?: string; seq: number; messages: Frame[]; error?: { code: string } };
}

describe('graceful shutdown (SIGTERM)', { timeout: 90000 }, () => {
  after(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  test('WS closes 3001, SSE gets disconnect 3001 and ends, new connections refused, exit 0 once everything drained', async () => {
    // A drain timeout far beyond the test: the drain must end because everything closed, not by the timeout.
    const herald = await spawnHerald({ drainTimeoutMs: 600000 });
    const channel = 'chat:shutdown';

    const ws = await WsClient.connect(herald.wsUrl, await herald.token('alice'));
    const sub = await ws.call('subscribe', { channel });
    assert.equal(sub['recoverable'], true);
    const sse: SseStream = await openSse(sseUrl(herald.url, { token: await herald.token('bob'), channels: [channel] }));
    assert.equal(sse.status, 200);
    await sse.waitForFrame((f) => f['push'] === 'subscribed', 10000, 'SSE subscribed');

    // the API key from HERALD_API_KEY works, and both clients are live
    const published = await herald.api('publish', { channel, data: 'before' });
    assert.equal(published.status, 200, JSON.stringify(published.body));
    await ws.waitForFrame((f) => f['push'] === 'publication', 10000, 'WS publication');
    await sse.waitForFrame((f) => f['push'] === 'publication', 10000, 'SSE publication');

    // SIGHUP (a reload) does not end a single process: it logs and keeps serving.
    assert.ok(herald.child.kill('SIGHUP'), 'SIGHUP delivered');
    await waitUntil(() => herald.stdout.some((line) => line.includes('SIGHUP ignored')), { timeoutMs: 10000, label: 'the SIGHUP warning' });
    assert.equal((await herald.api('publish', { channel, data: 'after SIGHUP' })).status, 200, 'still serving after SIGHUP');
    await ws.waitForFrame((f) => f['push'] === 'publication' && f['data'] === 'after SIGHUP', 10000, 'WS publication after SIGHUP');

    assert.ok(herald.child.kill('SIGTERM'), 'SIGTERM delivered');

    const close = await withTimeout(ws.closed, 60000, 'WS close after SIGTERM');
    assert.equal(close.code, 3001, `WS close code (reason ${close.reason})`);

    await sse.waitForEnd(60000);
    const last = sse.frames.at(-1);
    assert.equal(last?.['push'], 'disconnect', `last SSE frame: ${JSON.stringify(last)}`);
    assert.equal(last?.['code'], 3001);
    assert.equal(last?.['reconnect'], true, 'shutdown is a reconnect code');

    const exitedEarly = await Promise.race([herald.exited.then(() => true), sleep(0).then(() => false)]);
    if (!exitedEarly) {
      const wsNew = await wsRefused(herald.wsUrl);
      assert.ok(wsNew.refused, `a new WebSocket during shutdown was served: ${wsNew.how}`);
      const sseNew = await sseRefused(sseUrl(herald.url, { token: await herald.token('carol'), channels: [channel] }));
      assert.ok(sseNew.refused, `a new SSE stream during shutdown was served: ${sseNew.how}`);
      console.log(`during shutdown: new WebSocket → ${wsNew.how}; new SSE → ${sseNew.how}`);
    }

    const exit = await withTimeout(herald.exited, 60000, 'process exit');
    assert.equal(exit.signal, null, 'exited by itself, not killed by the signal');
    assert.equal(exit.code, 0, `exit code; stderr:\n${herald.stderr.join('\n')}`);
    assert.equal(stoppedLine(herald)?.['drained'], true, 'every connection drained (the drain timeout did not end it)');

    // after exit nothing listens any more
    const afterExit = await wsRefused(herald.wsUrl);
    assert.ok(afterExit.refused, afterExit.how);
  });

  test('a WebSocket client that never answers the close handshake is cut after limits.closeGraceMs; the drain then ends', async () => {
    // A short close grace, a drain timeout far beyond it: only the grace can end this drain in time.
    const herald = await spawnHerald({ drainTimeoutMs: 600000, limits: { closeGraceMs: 300 } });
    const stuck = await RawWebSocket.connect(herald.port);
    try {
      await stuck.call('connect', { token: await herald.token('stuck') });
      await stuck.call('subscribe', { channel: 'chat:stuck' });
      stuck.stopReading(); // never answers the close handshake
      herald.child.kill('SIGTERM');
      const exit = await withTimeout(herald.exited, 60000, 'process exit while a client never answers the close handshake');
      assert.deepEqual([exit.code, exit.signal], [0, null], `exit; stderr:\n${herald.stderr.join('\n')}`);
      assert.equal(stoppedLine(herald)?.['drained'], true, 'the stuck client was cut by its close grace, within the drain');
    } finally {
      stuck.destroy();
    }
  });

  test('a client that never reads cannot hold the process beyond the drain timeout; meanwhile new connections are refused', async () => {
    // A short drain timeout, a close grace far beyond it: only the drain timeout can end this drain in time.
    const herald = await spawnHerald({ drainTimeoutMs: 1000, limits: { closeGraceMs: 600000 } });
    const channel = 'chat:stuck';
    const stuck = await RawWebSocket.connect(herald.port);
    await stuck.call('connect', { token: await herald.token('stuck') });
    await stuck.call('subscribe', { channel });
    stuck.stopReading(); // never answers the close handshake
    try {
      herald.child.kill('SIGTERM');
      // while draining (the stuck client keeps the drain busy), nothing new is served
      const exitedEarly = await Promise.race([herald.exited.then(() => true), sleep(0).then(() => false)]);
      if (!exitedEarly) {
        const wsNew = await wsRefused(herald.wsUrl);
        assert.ok(wsNew.refused, `a new WebSocket during the drain was served: ${wsNew.how}`);
        const sseNew = await sseRefused(sseUrl(herald.url, { token: await herald.token('carol'), channels: [channel] }));
        assert.ok(sseNew.refused, `a new SSE stream during the drain was served: ${sseNew.how}`);
        console.log(`during the drain: new WebSocket → ${wsNew.how}; new SSE → ${sseNew.how}`);
      }
      const exit = await withTimeout(herald.exited, 60000, 'process exit despite a stuck client');
      assert.deepEqual([exit.code, exit.signal], [0, null], `exited by itself; log:\n${herald.stdout.slice(-5).join('\n')}`);
      assert.equal(stoppedLine(herald)?.['drained'], false, 'the drain timeout cut the drain short');
    } finally {
      stuck.destroy();
    }
  });

  test('long polling under load: every session, held poll or between two polls, reads its 3001; meanwhile new connections get 503; then exit 0', async () => {
    // Bounds far beyond the test's own steps: only the clients' polls end this drain, never a timer.
    const herald = await spawnHerald({
      drainTimeoutMs: 120000,
      limits: { closeGraceMs: 120000, newConnectionsPerIpPerSecond: 10000 },
      longPoll: { pollTimeoutMs: 120000, sessionTimeoutMs: 120000 },
    });
    const channel = 'public:lp-drain';
    const SESSIONS = 80;
    const sessions: { session: string; seq: number; held: boolean }[] = [];
    for (let i = 0; i < SESSIONS; i++) {
      const opened = (await pollOpen(herald.url, { token: await herald.token(`lp-${i}`), channels: [channel] })) as PollAnswer;
      assert.equal(opened.status, 200, JSON.stringify(opened.body));
      assert.ok(opened.body.messages.some((m) => m['push'] === 'subscribed'), JSON.stringify(opened.body));
      sessions.push({ session: opened.body.session!, seq: opened.body.seq, held: i % 2 === 0 });
    }
    const wsClients: WsClient[] = [];
    const sseStreams: SseStream[] = [];
    for (let i = 0; i < 5; i++) {
      const ws = await WsClient.connect(herald.wsUrl, await herald.token(`ws-${i}`));
      await ws.call('subscribe', { channel });
      wsClients.push(ws);
      const sse = await openSse(sseUrl(herald.url, { token: await herald.token(`sse-${i}`), channels: [channel] }));
      assert.equal(sse.status, 200);
      await sse.waitForFrame((f) => f['push'] === 'subscribed', 10000, 'SSE subscribed');
      sseStreams.push(sse);
    }

    // Everyone receives one publication: long-poll sessions by one poll each.
    assert.equal((await herald.api('publish', { channel, data: 'before' })).status, 200);
    for (const s of sessions) {
      const answer = (await poll(herald.url, s.session, s.seq)) as PollAnswer;
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.deepEqual(answer.body.messages.map((m) => m['push']), ['publication']);
      s.seq = answer.body.seq;
    }
    // Half of them poll again: that poll is held (nothing to deliver). The
    // other half are between two polls: their next poll comes after SIGTERM.
    const heldPolls = sessions.filter((s) => s.held).map(async (s) => (await poll(herald.url, s.session, s.seq)) as PollAnswer);
    // Not a timing assertion: a poll still on its way when SIGTERM lands is answered the same way.
    await sleep(300);

    herald.child.kill('SIGTERM');
    const isShutdown = (m: Frame | undefined) => m?.['push'] === 'disconnect' && m['code'] === 3001 && m['reconnect'] === true;
    for (const answer of await Promise.all(heldPolls)) {
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.ok(isShutdown(answer.body.messages.at(-1)), `a held poll ends with disconnect 3001: ${JSON.stringify(answer.body)}`);
    }
    for (const ws of wsClients) assert.equal((await ws.closed).code, 3001);
    for (const sse of sseStreams) {
      await sse.waitForEnd(30000);
      assert.ok(isShutdown(sse.frames.at(-1)), `SSE ends with disconnect 3001: ${JSON.stringify(sse.frames.at(-1))}`);
    }

    // Half the sessions have not been told yet: Herald still answers, and refuses new connections with 503.
    const newPoll = (await pollOpen(herald.url, { token: await herald.token('late-lp'), channels: [channel] })) as PollAnswer;
    assert.deepEqual([newPoll.status, newPoll.body.error?.code], [503, 'unavailable'], 'a new long-poll session during the drain');
    const newSse = await openSse(sseUrl(herald.url, { token: await herald.token('late-sse'), channels: [channel] }));
    assert.deepEqual([newSse.status, (newSse.errorBody as Frame | undefined)?.['error']?.['code']], [503, 'unavailable'], 'a new SSE stream during the drain');
    assert.equal(await upgradeStatus(herald.wsUrl), 503, 'a new WebSocket during the drain');
    const health = await fetch(`${herald.url}/health`);
    assert.deepEqual([health.status, await health.json()], [503, { status: 'draining' }]);
    assert.equal(herald.child.exitCode, null, 'still running');

    // Each session between two polls gets its 3001 from its next poll.
    const late = await Promise.all(sessions.filter((s) => !s.held).map(async (s) => (await poll(herald.url, s.session, s.seq)) as PollAnswer));
    for (const answer of late) {
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.ok(isShutdown(answer.body.messages.at(-1)), `the next poll ends with disconnect 3001: ${JSON.stringify(answer.body)}`);
    }

    // Every session was told: the drain ends (long before its timeout, which is not what ended it) and Herald exits 0.
    const exit = await withTimeout(herald.exited, 60000, 'process exit once every session was told');
    assert.deepEqual([exit.code, exit.signal], [0, null], `exit; stderr:\n${herald.stderr.join('\n')}`);
    assert.equal(stoppedLine(herald)?.['drained'], true, 'every connection drained');
  });
  test('a restart of the memory engine (the default) starts every stream over: new epoch, no history, revocations forgotten (docs/operations.md)', async () => {
    const hmacSecret = randomBytes(32).toString('base64url');
    const channel = 'chat:restart';
    const first = await spawnHerald({ drainTimeoutMs: 60000, hmacSecret });
    for (let n = 1; n <= 3; n++) assert.equal((await first.api('publish', { channel, data: { n } })).status, 200);
    const before = await first.api('history', { channel, limit: 10 });
    assert.equal(before.body['publications'].length, 3);
    const revokedToken = await first.token('mallory');
    assert.equal((await first.api('revoke_user', { user: 'mallory' })).status, 200);
    const refused = await WsClient.open(first.wsUrl);
    void refused.request('connect', { token: revokedToken }).catch(() => undefined);
    assert.equal((await refused.closed).code, 3507, 'a revoked token is refused before the restart');
    first.child.kill('SIGTERM');
    assert.deepEqual([(await first.exited).code, (await first.exited).signal], [0, null]);

    const second = await spawnHerald({ drainTimeoutMs: 60000, hmacSecret });
    const ws = await WsClient.connect(second.wsUrl, await second.token('alice'));
    const resumed = await ws.call('subscribe', { channel, recover: true, epoch: before.body['epoch'], offset: 3 });
    assert.deepEqual([resumed['recovered'], resumed['was_recovering']], [false, true], 'recovery across the restart is refused explicitly');
    assert.notEqual(resumed['epoch'], before.body['epoch'], 'the stream has a new epoch');
    assert.deepEqual((await second.api('history', { channel, limit: 10 })).body['publications'], [], 'history is gone');
    const forgotten = await WsClient.connect(second.wsUrl, revokedToken);
    assert.ok(forgotten.ws.readyState === WebSocket.OPEN, 'the revocation is gone: the revoked token connects again');
    forgotten.terminate();
    ws.terminate();
    second.child.kill('SIGTERM');
    assert.equal((await second.exited).code, 0);
  });
});
