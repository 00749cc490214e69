/**
 * Starts a real Herald on an ephemeral loopback port for a test, with a known
 * HS256 secret and an admin API key. No mocks: the same composition root as
 * `herald serve`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { buildConfig } from '../../src/config/load.ts';
import { startServer, type HeraldServer, type StartOptions } from '../../src/app/app.ts';

export interface TestHerald {
  readonly server: HeraldServer;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `ws://127.0.0.1:PORT/connection/websocket` */
  readonly wsUrl: string;
  readonly apiKey: string;
  readonly hmacSecret: string;
  /** Mints an HS256 connection token. */
  token(sub: string, claims?: Record<string, unknown>, ttlSeconds?: number): Promise<string>;
  /** Calls the server API with the admin key. */
  api(method: string, body: unknown, key?: string): Promise<{ status: number; body: any }>;
  close(): Promise<void>;
}

/** The run has the lean HTTP layer off (HERALD_TEST_NODE_HTTP=1): node:http serves every route, as with TLS. */
export function nodeHttpRun(): boolean {
  return process.env['HERALD_TEST_NODE_HTTP'] === '1';
}

/**
 * Deep-merges `overrides` into a test config (log silent, port 0, chat/public namespaces). The
 * server runs on the default engine (sqlite) with a state directory of its own, removed by `close`.
 */
export async function startHerald(overrides: Record<string, any> = {}, options: Pick<StartOptions, 'adaptEngine'> = {}): Promise<TestHerald> {
  const hmacSecret = randomBytes(32).toString('base64url');
  // A leading letter: tests pass it as `--key KEY`, which parseArgs refuses for a key starting with '-' (one in 64).
  const apiKey = `k${randomBytes(24).toString('base64url')}`;
  const stateDir = mkdtempSync(join(tmpdir(), 'herald-test-state-'));
  const raw = merge({ ...testConfig(hmacSecret, apiKey), stateDir }, overrides);
  // HERALD_TEST_NODE_HTTP=1: the variant run of the suites with the lean HTTP layer off (on by default), so node:http
  // serves the long-poll and publish routes, as it does with TLS. A test's own http switches win.
  if (nodeHttpRun()) raw.http = { leanLongPoll: false, leanPublish: false, leanWebSocket: false, leanSse: false, ...raw.http };
  const config = buildConfig(raw, { env: {} });
  let server: HeraldServer;
  try {
    server = await startServer({ config, ...options });
  } catch (error) {
    rmSync(stateDir, { recursive: true, force: true });
    throw error;
  }
  const url = `http://127.0.0.1:${server.port}`;
  const key = new TextEncoder().encode(hmacSecret);
  return {
    server,
    url,
    wsUrl: `ws://127.0.0.1:${server.port}/connection/websocket`,
    apiKey,
    hmacSecret,
    async token(sub, claims = {}, ttlSeconds = 3600) {
      return new SignJWT({ ...claims })
        .setProtectedHeader({ alg: 'HS256' })
        .setSubject(sub)
        .setIssuedAt()
        .setExpirationTime(Math.floor(Date.now() / 1000) + ttlSeconds)
        .sign(key);
    },
    async api(method, body, keyOverride) {
      const response = await fetch(`${url}/api/${method}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${keyOverride ?? apiKey}` },
        body: JSON.stringify(body),
      });
      const text = await response.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // keep text
      }
      return { status: response.status, body: parsed };
    },
    async close() {
      await server.close();
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/**
 * The production-mode config every test server starts from (before overrides): loopback, ephemeral
 * ports, the given HS256 secret and admin key (hashed), limits raised for suites that run from one IP.
 */
export function testConfig(hmacSecret: string, apiKey: string): Record<string, any> {
  return {
    mode: 'production',
    listen: { host: '127.0.0.1', port: 0 },
    // The internal listener on its own ephemeral port; tests may run as root (CI machines do).
    admin: { host: '127.0.0.1', port: 0 },
    process: { allowRoot: true },
    // Every test client comes from 127.0.0.1: the per-IP connection rate would throttle the suites.
    limits: { newConnectionsPerIpPerSecond: 100000 },
    log: { level: 'silent' },
    auth: { algorithms: ['HS256'], hmacSecret },
    api: {
      keys: [{ name: 'test-admin', sha256: createHash('sha256').update(apiKey).digest('hex'), scopes: ['admin'] }],
      // Suites publish thousands of times from one IP with one key; packages/server/test/security sets these small on purpose.
      rateLimitPerIp: 1000000,
      rateLimitPerKey: 1000000,
    },
    channels: {
      defaults: {},
      namespaces: [
        { name: 'chat', presence: true, joinLeave: true, clientPublish: true },
        { name: 'public', allowAnonymous: true, clientPublish: true },
        { name: 'nohistory', historySize: 0 },
      ],
    },
  };
}

function merge(base: Record<string, any>, extra: Record<string, any>): Record<string, any> {
  const out: Record<string, any> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    if (v && typeof v === 'object' && !Array.isArray(v) && base[k] && typeof base[k] === 'object' && !Array.isArray(base[k])) {
      out[k] = merge(base[k], v);
    } else out[k] = v;
  }
  return out;
}
