/**
 * Graceful shutdown of a real `herald serve` process (SIGTERM): clients are
 * told 3001 (`shutdown`, reconnect), new connections are refused, and the
 * process exits with code 0 within `shutdown.drainTimeoutMs`.
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
import { WsClient, openSse, sseUrl, type Frame, type SseStream } from '../helpers/rt-clients.ts';
import { RawWebSocket } from '../helpers/rt-raw.ts';
import { deferred, sleep, withTimeout } from '../helpers/rt-util.ts';

const root = fileURLToPath(new URL('../../', import.meta.url));
const nodeBin = join(root, 'node_modules', '.bin', 'node');

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

async function spawnHerald(overrides: { drainTimeoutMs: number }): Promise<Spawned> {
  const hmacSecret = randomBytes(32).toString('base64url');
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
    }),
  );
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('HERALD_')) env[k] = v;
  env['HERALD_API_KEY'] = apiKey;
  // Production mode takes secrets from files or the environment, not from the config file.
  env['HERALD_AUTH_HMAC_SECRET'] = hmacSecret;
  const child = spawn(nodeBin, ['src/cli/main.ts', 'serve', '--config', configPath], {
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

describe('graceful shutdown (SIGTERM)', { timeout: 90000 }, () => {
  after(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  test('WS closes 3001, SSE gets disconnect 3001 and ends, new connections refused, exit 0 within the drain timeout', async () => {
    const drainTimeoutMs = 5000;
    const herald = await spawnHerald({ drainTimeoutMs });
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

    const signalledAt = Date.now();
    assert.ok(herald.child.kill('SIGTERM'), 'SIGTERM delivered');

    const close = await withTimeout(ws.closed, drainTimeoutMs + 5000, 'WS close after SIGTERM');
    assert.equal(close.code, 3001, `WS close code (reason ${close.reason})`);

    await sse.waitForEnd(drainTimeoutMs + 5000);
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

    const exit = await withTimeout(herald.exited, drainTimeoutMs + 5000, 'process exit');
    assert.equal(exit.signal, null, 'exited by itself, not killed by the signal');
    assert.equal(exit.code, 0, `exit code; stderr:\n${herald.stderr.join('\n')}`);
    assert.ok(exit.at - signalledAt <= drainTimeoutMs, `exited ${exit.at - signalledAt} ms after SIGTERM (drain timeout ${drainTimeoutMs})`);

    // after exit nothing listens any more
    const afterExit = await wsRefused(herald.wsUrl);
    assert.ok(afterExit.refused, afterExit.how);
  });

  test('a client that never reads cannot hold the process beyond the drain timeout; meanwhile new connections are refused', async () => {
    const drainTimeoutMs = 3000;
    const herald = await spawnHerald({ drainTimeoutMs });
    const channel = 'chat:stuck';
    const stuck = await RawWebSocket.connect(herald.port);
    await stuck.call('connect', { token: await herald.token('stuck') });
    await stuck.call('subscribe', { channel });
    stuck.stopReading(); // never answers the close handshake
    try {
      const signalledAt = Date.now();
      herald.child.kill('SIGTERM');
      // while draining (the stuck client keeps the drain busy), nothing new is served
      await sleep(200);
      const exitedEarly = await Promise.race([herald.exited.then(() => true), sleep(0).then(() => false)]);
      if (!exitedEarly) {
        const wsNew = await wsRefused(herald.wsUrl);
        assert.ok(wsNew.refused, `a new WebSocket during the drain was served: ${wsNew.how}`);
        const sseNew = await sseRefused(sseUrl(herald.url, { token: await herald.token('carol'), channels: [channel] }));
        assert.ok(sseNew.refused, `a new SSE stream during the drain was served: ${sseNew.how}`);
        console.log(`during the drain: new WebSocket → ${wsNew.how}; new SSE → ${sseNew.how}`);
      }
      const exit = await withTimeout(herald.exited, drainTimeoutMs + 10000, 'process exit despite a stuck client');
      const elapsed = exit.at - signalledAt;
      console.log(`stuck-client shutdown: exit code ${exit.code} after ${elapsed} ms (drain timeout ${drainTimeoutMs})`);
      assert.equal(exit.signal, null, 'exited by itself');
      // the drain timeout is the longest drain "before exiting anyway"; allow 1 s for the exit itself
      assert.ok(
        elapsed <= drainTimeoutMs + 1000,
        `exited ${elapsed} ms after SIGTERM (drain timeout ${drainTimeoutMs}); log:\n${herald.stdout.slice(-5).join('\n')}`,
      );
    } finally {
      stuck.destroy();
    }
  });
});
