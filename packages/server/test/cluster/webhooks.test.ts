/**
 * Webhooks in cluster mode (`herald serve --workers 2`, sqlite engine):
 * users join and leave a presence channel through connections spread over
 * both workers; the primary alone decides the transitions, so the receiver
 * gets exactly one occupied and one vacated, and one member_added and one
 * member_removed per user, with vacated last. A worker SIGKILLed while
 * holding connections: its users' member_removed follow once, and vacated
 * when the last subscriber anywhere is gone.
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SignJWT } from 'jose';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { eventually, openWs, type WsClient } from '../helpers/herald-ws.ts';
import { WebhookReceiver } from '../helpers/webhook-receiver.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-cluster-webhooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function token(secret: string, sub: string): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuedAt().setExpirationTime(Math.floor(Date.now() / 1000) + 3600).sign(new TextEncoder().encode(secret));
}

async function start(receiver: WebhookReceiver, keyFile: string, name: string): Promise<{ herald: HeraldProcess; wsUrl: string; hmac: string; apiKey: string }> {
  const hmac = randomBytes(32).toString('base64url');
  writeFileSync(join(dir, `${name}-hmac`), hmac, { mode: 0o600 });
  const config = join(dir, `${name}.json`);
  writeFileSync(
    config,
    JSON.stringify({
      auth: { hmacSecretFile: join(dir, `${name}-hmac`) },
      listen: { host: '127.0.0.1', port: 0 },
      admin: { port: 0 },
      stateDir: join(dir, `${name}-state`),
      log: { level: 'info' },
      process: { allowRoot: true },
      limits: { newConnectionsPerIpPerSecond: 100000 },
      // The test polls /api/info every 20 ms: the default 600 per IP per minute would answer 429.
      api: { rateLimitPerIp: 100000, rateLimitPerKey: 100000 },
      channels: { namespaces: [{ name: 'chat', presence: true }] },
      webhooks: {
        endpoints: [{ name: 'app', url: receiver.url, keys: [{ id: 'k1', secretFile: keyFile }], events: ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed'] }],
        batchWindowMs: 20,
      },
    }),
  );
  const apiKey = randomBytes(24).toString('base64url');
  const herald = new HeraldProcess(['--config', config, '--workers', '2'], dir, { HERALD_API_KEY: apiKey });
  const port = await herald.listeningPort();
  return { herald, wsUrl: `ws://127.0.0.1:${port}/connection/websocket`, hmac, apiKey };
}

/** Connections per node id, from the API's info (each worker is a node). */
async function connectionsByNode(wsUrl: string, apiKey: string): Promise<Map<string, number>> {
  const apiUrl = wsUrl.replace('ws://', 'http://').replace('/connection/websocket', '');
  const response = await fetch(apiUrl + '/api/info', { method: 'POST', headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' }, body: '{}' });
  if (!response.ok) throw new Error(`info answered ${response.status}: ${await response.text()}`);
  const info = (await response.json()) as { nodes: { id: string; connections: number }[] };
  return new Map(info.nodes.map((n) => [n.id, n.connections]));
}

/**
 * Opens connections for `users` in turn, subscribed to `channel`, until
 * both workers hold some (the OS spreads connections; it may take a few
 * more): answers the clients and the connections per node, once every
 * node's count (from its snapshot) adds up.
 */
async function spread(wsUrl: string, apiKey: string, hmac: string, users: readonly string[], channel: string): Promise<{ clients: { client: WsClient; user: string }[]; byNode: Map<string, number> }> {
  const clients: { client: WsClient; user: string }[] = [];
  // Both workers' snapshots first: until then `info` lists one node.
  await eventually(async () => ((await connectionsByNode(wsUrl, apiKey)).size === 2 ? true : undefined), 'info listing both workers', 15000);
  for (let round = 0; round < 30; round++) {
    for (const user of users) {
      const client = await openWs(wsUrl);
      await client.connect(await token(hmac, user));
      await client.call('subscribe', { channel });
      clients.push({ client, user });
    }
    const byNode = await eventually(async () => {
      const counts = await connectionsByNode(wsUrl, apiKey);
      return [...counts.values()].reduce((a, b) => a + b, 0) === clients.length ? counts : undefined;
    }, 'node snapshots adding up');
    if ([...byNode.values()].filter((n) => n > 0).length === 2) return { clients, byNode };
  }
  throw new Error('connections did not reach both workers');
}

/** The channel's events as "name user" lines. */
function lines(receiver: WebhookReceiver, channel: string): string[] {
  return receiver
    .events()
    .filter((e) => e.channel === channel)
    .map((e) => `${e.name}${e.user === undefined ? '' : ' ' + e.user}`);
}

describe('webhooks in cluster mode', () => {
  const secret = randomBytes(32).toString('base64url');
  const keyFile = join(dir, 'webhook-key');
  writeFileSync(keyFile, secret, { mode: 0o600 });

  it('exactly one occupied and one vacated, one member_added and member_removed per user, with connections on both workers', async () => {
    const receiver = await WebhookReceiver.start([{ id: 'k1', secret }]);
    const { herald, wsUrl, hmac, apiKey } = await start(receiver, keyFile, 'exact');
    try {
      const placed = await spread(wsUrl, apiKey, hmac, ['alice', 'bob', 'alice', 'bob'], 'chat:room');
      const clients = placed.clients.map((p) => p.client);
      await eventually(async () => (lines(receiver, 'chat:room').length >= 3 ? true : undefined), 'joined');
      for (const client of clients) {
        await client.call('unsubscribe', { channel: 'chat:room' });
        await client.close();
      }
      const seen = await eventually(async () => {
        const l = lines(receiver, 'chat:room');
        return l.includes('channel_vacated') ? l : undefined;
      }, 'vacated');
      assert.equal(seen[0], 'channel_occupied');
      assert.equal(seen.at(-1), 'channel_vacated');
      assert.deepEqual([...seen].sort(), ['channel_occupied', 'channel_vacated', 'member_added alice', 'member_added bob', 'member_removed alice', 'member_removed bob']);
      // The primary sends the batches: its counts are in the cluster's /metrics.
      const adminPort = herald.logs.find((l) => l['msg'] === 'cluster ready')?.['adminPort'] as number;
      const delivered = await eventually(async () => {
        const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
        const line = text.split('\n').find((l) => l.startsWith('herald_webhook_events_total{') && l.includes('outcome="delivered"'));
        return line !== undefined && Number(line.split(' ').pop()) === 6 ? text : undefined;
      }, 'six delivered events in the cluster metrics');
      assert.match(delivered, /herald_webhook_outbox\{state="pending"\} 0/);
    } finally {
      await herald.stop();
      await receiver.close();
    }
  });

  it('a worker SIGKILLed while its users are in the channel: their member_removed once, vacated once the last subscriber is gone', async () => {
    const receiver = await WebhookReceiver.start([{ id: 'k1', secret }]);
    const { herald, wsUrl, hmac, apiKey } = await start(receiver, keyFile, 'kill');
    try {
      const placed = await spread(wsUrl, apiKey, hmac, ['u0', 'u1', 'u2', 'u3', 'u4', 'u5'], 'chat:kill');
      const clients = placed.clients;
      await eventually(async () => (lines(receiver, 'chat:kill').filter((l) => l.startsWith('member_added')).length === 6 ? true : undefined), 'six members');
      const victimNode = [...placed.byNode].find(([, n]) => n > 0)![0];
      const victim = herald.logs.find((l) => l['msg'] === 'worker ready' && l['node'] === victimNode)?.['pid'] as number;
      process.kill(victim, 'SIGKILL');
      // The victim's connections close; the others stay.
      await eventually(async () => (clients.filter((c) => !c.client.isOpen).length === placed.byNode.get(victimNode) ? true : undefined), 'connections of the killed worker closed');
      const onVictim = clients.filter((c) => !c.client.isOpen);
      const alive = clients.filter((c) => c.client.isOpen);
      // Users with a connection only on the killed worker leave; the others stay members.
      const dead = [...new Set(onVictim.map((c) => c.user))].filter((u) => !alive.some((c) => c.user === u));
      assert.ok(alive.length > 0, 'connections on both workers');
      await eventually(async () => (dead.every((u) => lines(receiver, 'chat:kill').includes(`member_removed ${u}`)) ? true : undefined), 'member_removed of the dead worker');
      assert.equal(lines(receiver, 'chat:kill').includes('channel_vacated'), false, 'still occupied by the other worker');
      for (const u of alive.map((c) => c.user)) assert.equal(lines(receiver, 'chat:kill').includes(`member_removed ${u}`), false, `${u} is still connected on the other worker`);
      for (const { client } of alive) await client.close();
      const seen = await eventually(async () => {
        const l = lines(receiver, 'chat:kill');
        return l.includes('channel_vacated') ? l : undefined;
      }, 'vacated');
      assert.equal(seen.at(-1), 'channel_vacated');
      assert.equal(seen.filter((l) => l === 'channel_occupied').length, 1);
      for (const user of new Set(clients.map((c) => c.user))) {
        assert.equal(seen.filter((l) => l === `member_added ${user}`).length, 1);
        assert.equal(seen.filter((l) => l === `member_removed ${user}`).length, 1);
      }
    } finally {
      await herald.stop();
      await receiver.close();
    }
  });
});
