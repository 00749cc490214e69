/**
 * Webhooks on the redis engine: several Herald nodes on one (real, shared)
 * Redis, a real receiving HTTP server that verifies every signature.
 *
 * - Users join and leave a presence channel through connections on two
 *   nodes: exactly one occupied and one vacated, one member_added and one
 *   member_removed per user, vacated last; the receiver failed the first
 *   attempts and still got each event once, in order.
 * - A node SIGKILLed while holding members: once its heartbeat is older
 *   than engine.presenceTtlMs, the other node sweeps it: member_removed
 *   once per user, vacated once the last subscriber anywhere is gone.
 * - A node SIGKILLed in the middle of sending a batch: the batch goes
 *   again from the other node once the lease expires, same event ids.
 * - A receiver down for the whole retry time: dead letters, counted in
 *   metrics, listed and replayed by `herald webhooks` on the redis engine.
 * - `--workers 2 --engine redis`: each worker a node, transitions exact.
 * - A Redis Cluster: every webhook key in one slot (`{webhooks}`), the
 *   scripts run there, transitions exact.
 */
import { after, afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { closeAllClients, eventually, openWs, type WsClient } from '../helpers/herald-ws.ts';
import { WebhookReceiver } from '../helpers/webhook-receiver.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { HERALD_MAIN } from '../helpers/herald-process.ts';
import { callApi, cleanupSpawned, deletePrefix, spawnRedisHerald, startRedisHerald, Tokens, uniquePrefix, type RedisHerald, type Target } from './harness.ts';
import { RedisClusterFixture, redisClusterToolsAvailable } from './cluster-harness.ts';

const skip = missingService('Redis', await redisAvailable());
const dir = mkdtempSync(join(tmpdir(), 'herald-redis-webhooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const secret = randomBytes(32).toString('base64url');
const keyFile = join(dir, 'webhook-key');
writeFileSync(keyFile, secret, { mode: 0o600 });
const KEY = { id: 'k1', secret };

function endpointOf(url: string): Record<string, unknown> {
  return { name: 'app', url, keys: [{ id: 'k1', secretFile: keyFile }], events: ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed'] };
}

function webhooks(url: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    webhooks: {
      endpoints: [endpointOf(url)],
      batchWindowMs: 20,
      backoffMinMs: 50,
      backoffMaxMs: 200,
      pollIntervalMs: 200,
      timeoutMs: 1000,
      ...extra,
    },
  };
}

/** The channel's events as "name user" lines, in arrival order. */
function lines(receiver: WebhookReceiver, channel: string): string[] {
  return receiver
    .events()
    .filter((e) => e.channel === channel)
    .map((e) => `${e.name}${e.user === undefined ? '' : ' ' + e.user}`);
}

async function ws(target: Target, tokens: Tokens, user: string, channel: string): Promise<WsClient> {
  const client = await openWs(target.wsUrl);
  await client.connect(await tokens.sign(user));
  await client.call('subscribe', { channel });
  return client;
}

async function metric(node: RedisHerald, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${node.server.adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.split(',').every((label) => l.includes(label)));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

/** `herald ARGS` as a user runs it. */
function cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args], { env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? 1), stdout, stderr });
    });
  });
}

describe('webhooks on the redis engine', { skip }, () => {
  const nodes: RedisHerald[] = [];
  const receivers: WebhookReceiver[] = [];
  const prefixes: string[] = [];

  afterEach(async () => {
    closeAllClients();
    for (const node of nodes.splice(0)) await node.close().catch(() => undefined);
    cleanupSpawned();
    for (const receiver of receivers.splice(0)) await receiver.close();
    for (const prefix of prefixes.splice(0)) await deletePrefix(REDIS_URL, prefix);
  });

  async function receiver(behave?: Parameters<typeof WebhookReceiver.start>[1]): Promise<WebhookReceiver> {
    const r = await WebhookReceiver.start([KEY], behave);
    receivers.push(r);
    return r;
  }

  function prefix(label: string): string {
    const p = uniquePrefix(label);
    prefixes.push(p);
    return p;
  }

  async function node(name: string, p: string, tokens: Tokens, overrides: Record<string, unknown>, engine: Record<string, unknown> = {}): Promise<RedisHerald> {
    const h = await startRedisHerald(name, { redisUrl: REDIS_URL, prefix: p, tokens, engine: { presenceTtlMs: 3000, ...engine }, overrides });
    nodes.push(h);
    return h;
  }

  it('two nodes, users joining and leaving on both: one occupied, one vacated, members once per user; a receiver failing three times gets each event once, in order', async () => {
    const p = prefix('wh-two');
    const tokens = new Tokens();
    const r = await receiver((n) => (n < 3 ? { status: 503 } : { status: 204 }));
    const a = await node('A', p, tokens, webhooks(r.url));
    const b = await node('B', p, tokens, webhooks(r.url));
    const channel = 'chat:two';
    const alice1 = await ws(a, tokens, 'alice', channel);
    const bob = await ws(b, tokens, 'bob', channel);
    const alice2 = await ws(b, tokens, 'alice', channel);
    const carol = await ws(a, tokens, 'carol', channel);
    await eventually(async () => (lines(r, channel).length >= 4 ? true : undefined), 'occupied and three members', 30000);
    // Leaving in an order that crosses nodes: A's subscribers go first while B still holds the channel.
    await alice1.close();
    await carol.close();
    await bob.close();
    await alice2.close();
    const seen = await eventually(async () => {
      const l = lines(r, channel);
      return l.includes('channel_vacated') ? l : undefined;
    }, 'vacated', 30000);
    // Nothing more arrives: give the nodes a few polls, then compare.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const all = lines(r, channel);
    assert.deepEqual(all, seen, 'nothing after vacated');
    assert.equal(all[0], 'channel_occupied');
    assert.equal(all.at(-1), 'channel_vacated');
    assert.deepEqual([...all].sort(), ['channel_occupied', 'channel_vacated', 'member_added alice', 'member_added bob', 'member_added carol', 'member_removed alice', 'member_removed bob', 'member_removed carol']);
    assert.ok(all.indexOf('member_added alice') < all.indexOf('member_removed alice'), 'in order');
    // Three failed attempts, then delivered: every accepted event once (ids unique), the failed ones carried the same ids.
    const ids = r.events().map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, 'each event delivered once');
    assert.ok(r.requests.length >= 4, `the failing attempts were made (${r.requests.length} requests)`);
    const retriedIds = new Set(r.requests.slice(0, 3).flatMap((batch) => batch.events.map((e) => e.id)));
    for (const id of retriedIds) assert.ok(ids.includes(id), 'a retried event was delivered with its id');
    for (const batch of r.requests) assert.deepEqual(batch.verifiedBy, ['k1'], 'every request is signed');
    const retried = (await metric(a, 'herald_webhook_events_total', 'outcome="retried"')) + (await metric(b, 'herald_webhook_events_total', 'outcome="retried"'));
    assert.ok(retried >= 3, `retries counted (${retried})`);
    assert.equal(await metric(a, 'herald_webhook_outbox', 'state="pending"'), 0);
  });

  it('a node SIGKILLed with members: once its presence expires the other node announces member_removed once per user, then vacated when the last subscriber leaves', async () => {
    const p = prefix('wh-kill');
    const tokens = new Tokens();
    const r = await receiver();
    const engine = { presenceTtlMs: 3000 };
    const a = await spawnRedisHerald('A', { redisUrl: REDIS_URL, prefix: p, tokens, engine, overrides: webhooks(r.url) });
    const b = await node('B', p, tokens, webhooks(r.url), engine);
    const shared = 'chat:shared';
    const only = 'chat:only-a';
    await ws(a, tokens, 'alice', shared);
    await ws(a, tokens, 'bob', shared);
    await ws(a, tokens, 'dave', only);
    const carolOnA = await ws(a, tokens, 'carol', shared);
    const carol = await ws(b, tokens, 'carol', shared);
    await eventually(async () => (lines(r, shared).length === 4 && lines(r, only).length === 2 ? true : undefined), 'both channels occupied, their members added', 30000);
    void carolOnA;
    // A settled the batch the receiver took: killed between the answer and the settle, A's batch would
    // rightly come again from B after the lease (at least once, same ids), which is not what this test is about.
    await eventually(async () => ((await metric(b, 'herald_webhook_outbox', 'state="pending"')) === 0 ? true : undefined), 'A settled its batch (the outbox is shared: B reads it)', 30000);
    a.child.kill('SIGKILL');
    await a.exited;
    // Carol is still connected on B: she stays; alice and bob leave; the channel held only by A is vacated.
    const gone = await eventually(async () => (lines(r, only).includes('channel_vacated') && lines(r, shared).length === 6 ? true : undefined), 'the dead node swept', 30000).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}; heard on ${shared}: ${lines(r, shared).join(', ')}; on ${only}: ${lines(r, only).join(', ')}`);
    });
    assert.ok(gone);
    assert.deepEqual(lines(r, only), ['channel_occupied', 'member_added dave', 'member_removed dave', 'channel_vacated']);
    assert.deepEqual(lines(r, shared).slice(4).sort(), ['member_removed alice', 'member_removed bob']);
    await carol.close();
    const end = await eventually(async () => (lines(r, shared).includes('channel_vacated') ? lines(r, shared) : undefined), 'vacated after carol left', 30000);
    assert.deepEqual(end.slice(6), ['member_removed carol', 'channel_vacated']);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const ids = r.events().map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, 'each event once');
    assert.equal(lines(r, shared).length, 8, 'nothing more');
  });

  it('a node SIGKILLed while sending a batch: the other node sends it again once the lease expires, with the same event ids', async () => {
    const p = prefix('wh-lease');
    const tokens = new Tokens();
    // The first request hangs (its sender dies holding the lease); the rest are taken.
    const r = await receiver((n) => (n === 0 ? 'hang' : { status: 204 }));
    const config = webhooks(r.url, { timeoutMs: 2000 });
    const a = await spawnRedisHerald('A', { redisUrl: REDIS_URL, prefix: p, tokens, engine: { presenceTtlMs: 3000 }, overrides: config });
    const channel = 'chat:lease';
    const alice = await ws(a, tokens, 'alice', channel);
    await eventually(async () => (r.requests.length > 0 ? true : undefined), 'the first batch sent', 30000);
    const first = r.requests[0]!.events.map((e) => e.id);
    a.child.kill('SIGKILL');
    await a.exited;
    alice.close().catch(() => undefined);
    const b = await node('B', p, tokens, config, { presenceTtlMs: 3000 });
    await eventually(async () => (first.every((id) => r.events().some((e) => e.id === id)) ? true : undefined), 'the hung batch sent again by B', 30000);
    // And A's members are swept by B: the receiver hears the end too.
    await eventually(async () => (lines(r, channel).includes('channel_vacated') ? true : undefined), 'vacated after the sweep', 30000);
    assert.equal(await metric(b, 'herald_webhook_outbox', 'state="pending"'), 0);
  });

  it('a receiver down for the whole retry time: dead letters, in metrics, listed and replayed by the CLI on the redis engine with the same ids', async () => {
    const p = prefix('wh-dead');
    const tokens = new Tokens();
    let up = false;
    const r = await receiver(() => (up ? { status: 204 } : { status: 503 }));
    const config = webhooks(r.url, { retryForMs: 800 });
    const a = await node('A', p, tokens, config);
    const alice = await ws(a, tokens, 'alice', 'chat:dead');
    await alice.close();
    await eventually(async () => ((await metric(a, 'herald_webhook_outbox', 'state="dead"')) === 4 ? true : undefined), 'four dead letters', 30000);
    assert.equal(await metric(a, 'herald_webhook_events_total', 'outcome="dead"'), 4);
    assert.equal(r.accepted.length, 0);
    const configFile = join(dir, `${p}.json`);
    writeFileSync(configFile, JSON.stringify({ engine: { type: 'redis', redisUrl: REDIS_URL, redisPrefix: p }, ...config }));
    const listed = await cli(['webhooks', 'list-dead', '--json', '--config', configFile]);
    assert.equal(listed.code, 0, listed.stderr);
    const dead = listed.stdout.trim().split('\n').map((line) => JSON.parse(line) as { seq: number; endpoint: string; event: { id: string; name: string }; reason: string });
    assert.deepEqual(dead.map((d) => d.event.name), ['channel_occupied', 'member_added', 'member_removed', 'channel_vacated']);
    assert.match(dead[0]!.reason, /status 503; retried for 800 ms/);
    up = true;
    const replayed = await cli(['webhooks', 'replay', '--all', '--config', configFile]);
    assert.equal(replayed.code, 0, replayed.stderr);
    await eventually(async () => (r.events().length === 4 ? true : undefined), 'the replayed events delivered', 30000);
    assert.deepEqual(r.events().map((e) => e.id), dead.map((d) => d.event.id), 'the same ids, in order');
    assert.equal(await metric(a, 'herald_webhook_outbox', 'state="dead"'), 0);
  });

  it('--workers 2 on the redis engine: each worker a node; one occupied and one vacated, members once per user, with connections on both workers', async () => {
    const p = prefix('wh-workers');
    const tokens = new Tokens();
    const r = await receiver();
    const cluster = await spawnRedisHerald('W', { redisUrl: REDIS_URL, prefix: p, tokens, engine: { presenceTtlMs: 3000 }, overrides: webhooks(r.url), args: ['--workers', '2'] });
    const channel = 'chat:workers';
    // Connections until both workers hold some (the OS spreads them).
    const clients: WsClient[] = [];
    const byNode = async (): Promise<number> => {
      const info = await callApi(cluster, 'info', {});
      return (info.body?.nodes as { connections: number }[] | undefined)?.filter((n) => n.connections > 0).length ?? 0;
    };
    await eventually(async () => ((await callApi(cluster, 'info', {})).body?.nodes?.length === 2 ? true : undefined), 'both workers in info', 30000);
    for (let round = 0; round < 30 && (await byNode()) < 2; round++) {
      for (const user of ['alice', 'bob']) clients.push(await ws(cluster, tokens, user, channel));
      await eventually(async () => ((await callApi(cluster, 'info', {})).body?.nodes as { connections: number }[]).reduce((s, n) => s + n.connections, 0) === clients.length ? true : undefined, 'snapshots', 15000);
    }
    assert.equal(await byNode(), 2, 'connections on both workers');
    await eventually(async () => (lines(r, channel).length === 3 ? true : undefined), 'occupied and two members', 30000);
    for (const client of clients) await client.close();
    const seen = await eventually(async () => (lines(r, channel).includes('channel_vacated') ? lines(r, channel) : undefined), 'vacated', 30000);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    assert.deepEqual(lines(r, channel), seen, 'nothing after vacated');
    assert.equal(seen[0], 'channel_occupied');
    assert.equal(seen.at(-1), 'channel_vacated');
    assert.deepEqual([...seen].sort(), ['channel_occupied', 'channel_vacated', 'member_added alice', 'member_added bob', 'member_removed alice', 'member_removed bob']);
  });
});

describe('webhooks on a Redis Cluster (3 masters + 3 replicas)', { skip: missingService('redis-server and redis-cli (a local Redis Cluster)', await redisClusterToolsAvailable()) }, () => {
  it('two nodes: every webhook key in one slot, transitions exact, events delivered once', async () => {
    // Its own key file: the file-level directory may be gone when this suite runs alone.
    const own = mkdtempSync(join(tmpdir(), 'herald-redis-cluster-webhooks-'));
    writeFileSync(join(own, 'webhook-key'), secret, { mode: 0o600 });
    const cluster = await RedisClusterFixture.start();
    const r = await WebhookReceiver.start([KEY]);
    const tokens = new Tokens();
    const p = uniquePrefix('wh-cluster');
    const nodes: RedisHerald[] = [];
    try {
      for (const name of ['A', 'B']) {
        nodes.push(
          await startRedisHerald(name, {
            redisUrl: 'redis://127.0.0.1:1',
            prefix: p,
            tokens,
            ownEngine: true,
            engine: { redisCluster: cluster.urls, presenceTtlMs: 3000, redisCommandTimeoutMs: 1000 },
            overrides: { webhooks: { ...(webhooks(r.url)['webhooks'] as object), endpoints: [{ ...endpointOf(r.url), keys: [{ id: 'k1', secretFile: join(own, 'webhook-key') }] }] } },
          }),
        );
      }
      const [a, b] = nodes as [RedisHerald, RedisHerald];
      const channel = 'chat:cluster';
      const alice = await ws(a, tokens, 'alice', channel);
      const bob = await ws(b, tokens, 'bob', channel);
      const alice2 = await ws(b, tokens, 'alice', channel);
      await eventually(async () => (lines(r, channel).length === 3 ? true : undefined), 'occupied and two members', 30000);
      for (const client of [alice, bob, alice2]) await client.close();
      const seen = await eventually(async () => (lines(r, channel).includes('channel_vacated') ? lines(r, channel) : undefined), 'vacated', 30000);
      assert.equal(seen[0], 'channel_occupied');
      assert.equal(seen.at(-1), 'channel_vacated');
      assert.deepEqual([...seen].sort(), ['channel_occupied', 'channel_vacated', 'member_added alice', 'member_added bob', 'member_removed alice', 'member_removed bob']);
      const ids = r.events().map((e) => e.id);
      assert.equal(new Set(ids).size, ids.length, 'each event once');
      // The scripts ran on the master of the {webhooks} slot (a key outside it would have failed them: CROSSSLOT).
      assert.equal(await a.clients!.command.exists(`${p}:{webhooks}:eps`), 1, 'the outbox keys are where the hash tag puts them');
    } finally {
      closeAllClients();
      for (const node of nodes) await node.close().catch(() => undefined);
      await r.close();
      await cluster.close();
      rmSync(own, { recursive: true, force: true });
    }
  });
});
