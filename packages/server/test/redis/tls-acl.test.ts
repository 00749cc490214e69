/**
 * The redis engine behind TLS (`rediss://`, engine.redisTls) and as a Redis
 * ACL user with the least-privilege rule documented in docs/operations.md
 * ("Redis with TLS and an ACL user"): the rule is read from that page, so
 * the docs and what Herald needs cannot drift apart. A private
 * `redis-server` (plain port for the test's own commands, a TLS port with
 * certificates made here by `openssl`, client certificates required) and
 * two Herald nodes; every command Herald runs must pass the ACL (ACL LOG
 * stays empty), and so must the console store, apps store and key-usage
 * store contracts run as that user. Refusals are clear and never show the
 * password.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { missingService } from '../helpers/services.ts';
import { adminStoreContract } from '../helpers/admin-store-contract.ts';
import { appStoreContract } from '../helpers/apps-store-contract.ts';
import { WebhookReceiver } from '../helpers/webhook-receiver.ts';
import { closeAllClients, eventually, openWs, type WsClient } from '../helpers/herald-ws.ts';
import { buildConfig, ConfigError } from '../../src/config/load.ts';
import { RedisAdminStore } from '../../src/console/redis-admin-store.ts';
import { RedisAppStore } from '../../src/apps/redis-app-store.ts';
import { RedisKeyUsageStore } from '../../src/console/key-usage-store.ts';
import { callApi, freePort, RedisServer, startRedisHerald, Tokens, uniquePrefix, type RedisHerald } from './harness.ts';

const hasRedisServer = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
const hasOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;
const skip = missingService('redis-server (the binary, to run a private Redis)', hasRedisServer);
const OPERATIONS = fileURLToPath(new URL('../../../../docs/operations.md', import.meta.url));

/**
 * An ACL rule documented in docs/operations.md, for a password and key
 * prefix: `base` the line `ACL SETUSER herald on …`, otherwise the
 * `ACL SETUSER herald +…` line after the comment line containing `after`.
 */
function documentedAcl(password: string, prefix: string, after?: string): string[] {
  const lines = readFileSync(OPERATIONS, 'utf8').split('\n');
  const index = after === undefined ? lines.findIndex((l) => l.startsWith('ACL SETUSER herald on ')) : lines.findIndex((l) => l.startsWith('#') && l.includes(after)) + 1;
  const line = lines[index];
  assert.ok(index > 0 && line !== undefined && line.startsWith('ACL SETUSER herald '), `docs/operations.md documents the ACL rule${after === undefined ? '' : ` for ${after}`}`);
  return line
    .trim()
    .split(/\s+/)
    .slice(3)
    .map((rule) => rule.replace('>PASSWORD', `>${password}`).replaceAll('herald:', `${prefix}:`));
}

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA, in `dir`. */
function makeCertificates(dir: string): void {
  const run = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  run('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=herald-test-ca');
  writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  for (const who of ['server', 'client']) {
    run('req', ...ec, '-keyout', `${who}.key`, '-out', `${who}.csr`, '-subj', `/CN=herald-test-${who}`);
    run('x509', '-req', '-in', `${who}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${who}.crt`, '-days', '2', ...(who === 'server' ? ['-extfile', 'server.ext'] : []));
  }
}

describe('redis engine: TLS (rediss://) and an ACL user', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'herald-redis-tls-'));
  const prefix = uniquePrefix('acl');
  const password = randomBytes(18).toString('base64url');
  let redis: RedisServer;
  let tlsPort = 0;
  let tls = false;
  let tlsSkip = '';
  const nodes: RedisHerald[] = [];

  before(async () => {
    tlsPort = await freePort();
    if (hasOpenssl) {
      makeCertificates(dir);
      // A redis-server built without TLS refuses the tls-* directives (Debian's has TLS).
      try {
        redis = await RedisServer.start(['--tls-port', String(tlsPort), '--tls-cert-file', join(dir, 'server.crt'), '--tls-key-file', join(dir, 'server.key'), '--tls-ca-cert-file', join(dir, 'ca.crt')]);
        tls = true;
      } catch (error) {
        if (!/tls|Bad directive/i.test((error as Error).message)) throw error;
        tlsSkip = `this redis-server was built without TLS (it refused --tls-port: ${(error as Error).message.split('\n').slice(1, 3).join(' ')})`;
      }
    } else {
      tlsSkip = 'openssl is missing (it makes the test certificates)';
    }
    if (!tls) {
      tlsSkip = missingService(`TLS for the rediss:// test (${tlsSkip})`, false) as string;
      redis = await RedisServer.start();
    }
    await redis.command('ACL', 'SETUSER', 'herald', ...documentedAcl(password, prefix));
    // The Redis Cluster line is at least a rule Redis accepts (on a user of its own).
    await redis.command('ACL', 'SETUSER', 'syntax-only', ...documentedAcl(password, prefix, 'on a Redis Cluster'));
    await redis.command('ACL', 'LOG', 'RESET');
  });

  afterEach(async () => {
    closeAllClients();
    for (const n of nodes.splice(0)) await n.close().catch(() => undefined);
  });

  after(async () => {
    await redis?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function node(name: string, tokens: Tokens, redisUrl: string, engine: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}): Promise<RedisHerald> {
    const h = await startRedisHerald(name, { redisUrl, prefix, tokens, engine: { probeIntervalMs: 300, ...engine }, overrides });
    nodes.push(h);
    return h;
  }

  async function ws(target: RedisHerald, tokens: Tokens, user: string): Promise<WsClient> {
    const client = await openWs(target.wsUrl);
    await client.connect(await tokens.sign(user));
    return client;
  }

  /** Everything Herald does with Redis, across two nodes: ACL LOG must stay empty. */
  async function exercise(a: RedisHerald, b: RedisHerald, tokens: Tokens, label: string): Promise<void> {
    const channel = `chat:${label}`;
    await redis.command('ACL', 'LOG', 'RESET');
    const bob = await ws(b, tokens, 'bob');
    const sub = await bob.call('subscribe', { channel });
    const alice = await ws(a, tokens, 'alice');
    await alice.call('subscribe', { channel });
    assert.equal((await bob.push('join', channel, (f) => f.info?.user === 'alice')).info.client, alice.clientId);
    const once = await callApi(a, 'publish', { channel, data: { n: 1 }, idempotency_key: 'k1' });
    assert.equal(once.status, 200, JSON.stringify(once.body));
    const again = await callApi(b, 'publish', { channel, data: { n: 1 }, idempotency_key: 'k1' });
    assert.deepEqual(again.body, once.body, 'the retry answers the first position');
    await bob.waitPublications(channel, 1);
    const presence = await callApi(a, 'presence', { channel });
    assert.deepEqual(Object.values(presence.body.clients as Record<string, { user: string }>).map((c) => c.user).sort(), ['alice', 'bob']);
    await alice.close();
    await bob.push('leave', channel, (f) => f.info?.user === 'alice');
    await bob.close();
    const missed = [(await callApi(a, 'publish', { channel, data: { n: 2 } })).body.offset, (await callApi(b, 'publish', { channel, data: { n: 3 } })).body.offset];
    const history = await callApi(b, 'history', { channel, limit: 10 });
    assert.deepEqual(history.body.publications.map((p: { data: { n: number } }) => p.data.n), [1, 2, 3]);
    const back = await ws(a, tokens, 'bob');
    const recovered = await back.call('subscribe', { channel, recover: true, epoch: sub.epoch, offset: once.body.offset });
    assert.equal(recovered.recovered, true);
    assert.deepEqual((await back.waitPublications(channel, 2)).map((p: { offset: number }) => p.offset), missed);
    const mallory = await ws(a, tokens, 'mallory');
    assert.equal((await callApi(b, 'revoke_user', { user: 'mallory' })).status, 200);
    assert.equal((await mallory.waitClose(10000)).code, 3507);
    await eventually(async () => ((await callApi(a, 'info', {})).body.nodes.length === 2 ? true : undefined), 'both nodes in info (node snapshots)', 10000);
    const denied = (await redis.command('ACL', 'LOG')) as unknown[];
    assert.deepEqual(denied, [], `every command Herald ran passed the documented ACL; denied: ${JSON.stringify(denied)}`);
  }

  test('an ACL user with the documented least-privilege rule: publish, history, recovery, presence, idempotency, revocation, snapshots, webhooks; nothing denied', async () => {
    const tokens = new Tokens();
    const url = `redis://herald:${password}@127.0.0.1:${redis.port}`;
    // Webhooks on both nodes: the outbox, the transitions, heartbeats and the lease run as the ACL user too.
    const secret = randomBytes(32).toString('base64url');
    writeFileSync(join(dir, 'webhook-key'), secret, { mode: 0o600 });
    const receiver = await WebhookReceiver.start([{ id: 'k1', secret }]);
    const webhooks = {
      webhooks: {
        endpoints: [{ name: 'app', url: receiver.url, keys: [{ id: 'k1', secretFile: join(dir, 'webhook-key') }] }],
        batchWindowMs: 20,
        pollIntervalMs: 200,
      },
    };
    try {
      const a = await node('A', tokens, url, { presenceTtlMs: 3000 }, webhooks);
      const b = await node('B', tokens, url, { presenceTtlMs: 3000 }, webhooks);
      await exercise(a, b, tokens, 'acl');
      for (const n of [a, b]) assert.equal((await n.health()).status, 200);
      await eventually(async () => (receiver.events().some((e) => e.name === 'channel_vacated' && e.channel === 'chat:acl') ? true : undefined), 'webhooks delivered', 15000);
      // A heartbeat, a sweep look and the release at close, then nothing denied still.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      for (const n of nodes.splice(0)) await n.close();
      const denied = (await redis.command('ACL', 'LOG')) as unknown[];
      assert.deepEqual(denied, [], `webhooks ran every command within the documented ACL; denied: ${JSON.stringify(denied)}`);
    } finally {
      await receiver.close();
    }
  });

  /**
   * Fresh store handles on Redis as the ACL user with exactly the documented
   * base rule (a test before may have added a line), under a key prefix of
   * their own inside the rule's pattern. `close` deletes what they wrote
   * (through the test's own connection) and fails if Redis denied any
   * command: the console store, OIDC sign-ins, TOTP recovery codes, the
   * apps store and the key-usage store run every command they have as that
   * user, through their contracts.
   */
  async function asAclUser<T>(make: (clients: [Redis, Redis], prefix: string) => T): Promise<T & { close(): Promise<void> }> {
    await redis.command('ACL', 'SETUSER', 'herald', 'reset', ...documentedAcl(password, prefix));
    await redis.command('ACL', 'LOG', 'RESET');
    const storePrefix = `${prefix}:stores-${randomBytes(4).toString('hex')}`;
    const url = `redis://herald:${password}@127.0.0.1:${redis.port}`;
    const clients: [Redis, Redis] = [
      new Redis(url, { commandTimeout: 2000, enableOfflineQueue: false, lazyConnect: true }),
      new Redis(url, { commandTimeout: 2000, enableOfflineQueue: false, lazyConnect: true }),
    ];
    for (const client of clients) await client.connect();
    return {
      ...make(clients, storePrefix),
      close: async () => {
        for (const client of clients) client.disconnect();
        const keys = (await redis.command('KEYS', `${storePrefix}:*`)) as string[];
        if (keys.length > 0) await redis.command('DEL', ...keys);
        const denied = (await redis.command('ACL', 'LOG')) as unknown[];
        assert.deepEqual(denied, [], `the store ran every command within the documented ACL; denied: ${JSON.stringify(denied)}`);
      },
    };
  }

  adminStoreContract('Redis as the documented ACL user', () => asAclUser(([client], storePrefix) => ({ store: new RedisAdminStore(client, storePrefix) })));
  appStoreContract('Redis as the documented ACL user', () => asAclUser(([client, second], storePrefix) => ({ store: new RedisAppStore(client, storePrefix), other: new RedisAppStore(second, storePrefix) })));

  test('the console key-usage store as the documented ACL user: a later use is kept, an earlier one is not', async () => {
    const h = await asAclUser(([client], storePrefix) => ({ usage: new RedisKeyUsageStore(client, storePrefix) }));
    try {
      await h.usage.save([
        ['ci', 2000],
        ['deploy', 1000],
      ]);
      await h.usage.save([
        ['ci', 1500],
        ['deploy', 3000],
      ]);
      assert.deepEqual(
        await h.usage.load(),
        new Map([
          ['ci', 2000],
          ['deploy', 3000],
        ]),
      );
    } finally {
      await h.close();
    }
  });

  test('limits.scope "cluster" with the documented extra line: rate limits and connection counts in Redis, nothing denied', async () => {
    await redis.command('ACL', 'SETUSER', 'herald', ...documentedAcl(password, prefix, 'limits.scope'));
    const tokens = new Tokens();
    const url = `redis://herald:${password}@127.0.0.1:${redis.port}`;
    const a = await node('LA', tokens, url, {}, { limits: { scope: 'cluster', newConnectionsPerIpPerSecond: 100000 } });
    const b = await node('LB', tokens, url, {}, { limits: { scope: 'cluster', newConnectionsPerIpPerSecond: 100000 } });
    await exercise(a, b, tokens, 'limits');
    const keys = (await redis.command('KEYS', `${prefix}:limits:*`)) as string[];
    assert.ok(keys.length > 0, 'the limits are counted in Redis');
  });

  test('a wrong password is refused at start with a clear line that does not show it', async () => {
    const wrong = `wrong-${randomBytes(9).toString('base64url')}`;
    await assert.rejects(
      node('W', new Tokens(), `redis://herald:${wrong}@127.0.0.1:${redis.port}`),
      (error: Error) => {
        assert.match(error.message, /cannot connect to Redis at redis:\/\/.*127\.0\.0\.1.*WRONGPASS/);
        assert.ok(!error.message.includes(wrong), `the password is not shown: ${error.message}`);
        return true;
      },
    );
  });

  test('redisTls with a redis:// URL, or a certificate without its key, is refused by the config check', () => {
    assert.throws(
      () => buildConfig({ engine: { type: 'redis', redisUrl: 'redis://127.0.0.1:6379', redisTls: { caFile: '/etc/ssl/ca.pem' } } }, { env: {} }),
      (error: unknown) => error instanceof ConfigError && error.problems.some((p) => /^\/engine\/redisTls: .*rediss:\/\//.test(p)),
    );
    assert.throws(
      () => buildConfig({ engine: { type: 'redis', redisUrl: 'rediss://127.0.0.1:6379', redisTls: { certFile: '/etc/ssl/c.pem' } } }, { env: {} }),
      (error: unknown) => error instanceof ConfigError && error.problems.some((p) => /^\/engine\/redisTls: set both certFile and keyFile/.test(p)),
    );
  });

  test('rediss:// with a client certificate and the ACL user: two nodes work over TLS; without the CA the start is refused, naming the fix', async (t) => {
    if (!tls) {
      t.skip(tlsSkip);
      return;
    }
    const tokens = new Tokens();
    const url = `rediss://herald:${password}@127.0.0.1:${tlsPort}`;
    const files = { caFile: join(dir, 'ca.crt'), certFile: join(dir, 'client.crt'), keyFile: join(dir, 'client.key') };
    const a = await node('TA', tokens, url, { redisTls: files });
    const b = await node('TB', tokens, url, { redisTls: files });
    await exercise(a, b, tokens, 'tls');
    // Every connection of the user is on the TLS port (two per node).
    const clients = String(await redis.command('CLIENT', 'LIST'))
      .split('\n')
      .filter((line) => / user=herald /.test(line));
    assert.ok(clients.length >= 4, `the nodes' connections: ${clients.length}`);
    for (const line of clients) assert.match(line, new RegExp(` laddr=127\\.0\\.0\\.1:${tlsPort} `), 'on the TLS port');

    await assert.rejects(node('TC', tokens, url, { redisTls: { certFile: files.certFile, keyFile: files.keyFile } }), (error: Error) => {
      assert.match(error.message, /cannot connect to Redis at rediss:\/\/.*TLS: the server certificate was not accepted .*engine\.redisTls\.caFile/);
      assert.ok(!error.message.includes(password), 'the password is not shown');
      return true;
    });
    await assert.rejects(node('TD', tokens, url, { redisTls: { caFile: join(dir, 'missing-ca.crt') } }), (error: Error) => {
      assert.match(error.message, /\/engine\/redisTls\/caFile: cannot read .*missing-ca\.crt: no such file/);
      return true;
    });
  });
});
