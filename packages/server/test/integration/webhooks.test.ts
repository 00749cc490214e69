/**
 * Webhooks end to end (one process): a real Herald on the sqlite engine
 * POSTs signed batches to a real receiving HTTP server.
 * SECURITY-TESTS.md section I, tests 39 (targets only from config, no
 * redirect followed, timeouts, bodies never read, delivery unaffected) and
 * 40 (the receiver verifies every request, a changed body fails, both
 * signatures verify during a rotation, a redelivery carries the same ids).
 */
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { HERALD_MAIN, HeraldProcess } from '../helpers/herald-process.ts';
import { SOURCE_NODE_ARGS } from '../helpers/source.ts';
import { execFile } from 'node:child_process';

/** `herald ARGS` as a user runs it: exit code, stdout, stderr. */
function cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...SOURCE_NODE_ARGS, HERALD_MAIN, ...args], { env: { PATH: process.env['PATH'] ?? '' } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : ((error as { code?: number }).code ?? 1), stdout, stderr });
    });
  });
}
import { connectWs, eventually } from '../helpers/herald-ws.ts';
import { WebhookReceiver } from '../helpers/webhook-receiver.ts';
import { verifySignature, type SigningKey } from '../../src/webhooks/signing.ts';
import { SignJWT } from 'jose';

function signJwt(secret: string, sub: string): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuedAt().setExpirationTime(Math.floor(Date.now() / 1000) + 3600).sign(new TextEncoder().encode(secret));
}

const dir = mkdtempSync(join(tmpdir(), 'herald-webhooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function key(id: string): SigningKey & { file: string } {
  const secret = randomBytes(32).toString('base64url');
  const file = join(dir, `${id}-${randomBytes(4).toString('hex')}`);
  writeFileSync(file, secret + '\n', { mode: 0o600 });
  return { id, secret, file };
}

function webhookConfig(endpoints: { name: string; url: string; keys: { id: string; file: string }[]; events?: string[] }[], extra: Record<string, unknown> = {}) {
  return {
    webhooks: {
      endpoints: endpoints.map((e) => ({ name: e.name, url: e.url, keys: e.keys.map((k) => ({ id: k.id, secretFile: k.file })), ...(e.events === undefined ? {} : { events: e.events }) })),
      batchWindowMs: 20,
      backoffMinMs: 20,
      backoffMaxMs: 100,
      pollIntervalMs: 200,
      ...extra,
    },
  };
}

async function metric(h: TestHerald, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${h.server.adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.split(',').every((label) => l.includes(label)));
  return line === undefined ? 0 : Number(line.split(' ').pop());
}

describe('webhooks', () => {
  it('a receiver that fails three times then succeeds gets every event once, in order per channel, signed; members once per user, not per connection', async () => {
    const k = key('k1');
    const receiver = await WebhookReceiver.start([k], (n) => (n < 3 ? { status: 503 } : { status: 204 }));
    const h = await startHerald(webhookConfig([{ name: 'app', url: receiver.url, keys: [k] }]));
    try {
      const alice1 = await connectWs(h, 'alice');
      await alice1.call('subscribe', { channel: 'chat:room' });
      const bob = await connectWs(h, 'bob');
      await bob.call('subscribe', { channel: 'chat:room' });
      const alice2 = await connectWs(h, 'alice');
      await alice2.call('subscribe', { channel: 'chat:room' });
      await alice1.call('unsubscribe', { channel: 'chat:room' });
      await alice2.call('unsubscribe', { channel: 'chat:room' });
      await bob.call('unsubscribe', { channel: 'chat:room' });
      const channelEvents = await eventually(async () => {
        const events = receiver.events().filter((e) => e.channel === 'chat:room');
        return events.length >= 6 ? events : undefined;
      }, 'six channel events');
      assert.deepEqual(
        channelEvents.map((e) => `${e.name}${e.user === undefined ? '' : ' ' + e.user}`),
        ['channel_occupied', 'member_added alice', 'member_added bob', 'member_removed alice', 'member_removed bob', 'channel_vacated'],
      );
      for (const event of channelEvents) assert.equal(typeof event.time_ms, 'number');
      await eventually(async () => (receiver.events().filter((e) => e.name === 'client_connected').length === 3 ? true : undefined), 'three client_connected');
      const ids = receiver.events().map((e) => e.id);
      assert.equal(new Set(ids).size, ids.length, 'each event delivered once');
      assert.ok(receiver.requests.length >= 4, 'three failures, then deliveries');
      for (const request of receiver.requests) assert.deepEqual(request.verifiedBy, ['k1'], 'every request verifies');
      // The failed attempts carried the same events as the one that succeeded (at least once, same ids).
      const failedIds = receiver.requests.slice(0, 3).flatMap((r) => r.events.map((e) => e.id));
      assert.ok(failedIds.every((id) => ids.includes(id)));
      assert.ok((await metric(h, 'herald_webhook_events_total', 'outcome="retried"')) >= 3, 'three failed attempts counted');
      assert.ok((await metric(h, 'herald_webhook_events_total', 'outcome="delivered"')) >= 9);
      for (const c of [alice1, alice2, bob]) await c.close();
    } finally {
      await h.close();
      await receiver.close();
    }
  });

  it('a receiver down for the whole retry time: the events become dead letters, counted in metrics', async () => {
    const k = key('k1');
    const receiver = await WebhookReceiver.start([k]);
    const url = receiver.url;
    await receiver.close(); // nothing listens there now: connection refused
    const h = await startHerald(webhookConfig([{ name: 'down', url, keys: [k], events: ['channel_occupied'] }], { retryForMs: 300 }));
    try {
      const c = await connectWs(h, 'alice');
      await c.call('subscribe', { channel: 'chat:dead' });
      await eventually(async () => ((await metric(h, 'herald_webhook_outbox', 'state="dead"')) === 1 ? true : undefined), 'one dead letter');
      assert.equal(await metric(h, 'herald_webhook_outbox', 'state="pending"'), 0);
      assert.equal(await metric(h, 'herald_webhook_events_total', 'outcome="dead"'), 1);
      await c.close();
    } finally {
      await h.close();
    }
  });

  it('secret rotation: both signatures verify, a changed body fails, a redirect is not followed, 4xx goes to dead letters', async () => {
    const oldKey = key('old');
    const newKey = key('new');
    const oldReceiver = await WebhookReceiver.start([oldKey]);
    const newReceiver = await WebhookReceiver.start([newKey]);
    const elsewhere = await WebhookReceiver.start([newKey]);
    const redirecting = await WebhookReceiver.start([newKey], () => ({ status: 307, headers: { location: elsewhere.url } }));
    const h = await startHerald(
      webhookConfig([
        { name: 'old', url: oldReceiver.url, keys: [newKey, oldKey], events: ['channel_occupied'] },
        { name: 'new', url: newReceiver.url, keys: [newKey, oldKey], events: ['channel_occupied'] },
        { name: 'redirect', url: redirecting.url, keys: [newKey], events: ['channel_occupied'] },
      ]),
    );
    try {
      const c = await connectWs(h, 'alice');
      await c.call('subscribe', { channel: 'chat:rotate' });
      await eventually(async () => (oldReceiver.accepted.length > 0 && newReceiver.accepted.length > 0 ? true : undefined), 'both receivers');
      const batch = newReceiver.accepted[0]!;
      assert.equal(batch.headers['herald-webhook-key-id'], 'new');
      assert.deepEqual(oldReceiver.accepted[0]!.verifiedBy, ['old']);
      assert.deepEqual(batch.verifiedBy, ['new']);
      const header = batch.headers['herald-webhook-signature'] as string;
      assert.ok(verifySignature(batch.body, header, oldKey) && verifySignature(batch.body, header, newKey));
      assert.equal(verifySignature(batch.body.replace('chat:rotate', 'chat:rotatX'), header, newKey), false, 'a changed body fails');
      assert.equal(oldReceiver.accepted[0]!.events[0]!.id, batch.events[0]!.id, 'the same event has the same id at every endpoint');
      await eventually(async () => ((await metric(h, 'herald_webhook_events_total', 'endpoint="redirect",outcome="dead"')) === 1 ? true : undefined), 'redirect dead');
      assert.equal(redirecting.requests.length, 1);
      assert.equal(elsewhere.requests.length, 0, 'the redirect was not followed');
      await c.close();
    } finally {
      await h.close();
      for (const r of [oldReceiver, newReceiver, elsewhere, redirecting]) await r.close();
    }
  });

  it('a receiver that never answers or answers a huge body: timeouts, a bounded outbox, and message delivery unaffected', async () => {
    const k = key('k1');
    const hanging = await WebhookReceiver.start([k], () => 'hang');
    const huge = await WebhookReceiver.start([k], () => ({
      write: (res) => {
        // An endless body: Herald never reads it.
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(65536, 120);
        const pump = (): void => {
          while (!res.destroyed && res.write(chunk));
          if (!res.destroyed) res.once('drain', pump);
        };
        pump();
      },
    }));
    const h = await startHerald(
      webhookConfig(
        [
          { name: 'hang', url: hanging.url, keys: [k], events: ['client_connected'] },
          { name: 'huge', url: huge.url, keys: [k], events: ['channel_occupied'] },
        ],
        { timeoutMs: 200, maxPending: 20 },
      ),
    );
    try {
      const subscriber = await connectWs(h, 'sub');
      await subscriber.call('subscribe', { channel: 'chat:live' });
      const connections = [];
      for (let i = 0; i < 40; i++) connections.push(await connectWs(h, `u${i}`));
      // Messages flow while one receiver hangs and the other streams an endless body.
      for (let i = 0; i < 20; i++) {
        const answer = await h.api('publish', { channel: 'chat:live', data: { i } });
        assert.equal(answer.status, 200);
      }
      await subscriber.waitPublications('chat:live', 20);
      assert.ok((await metric(h, 'herald_webhook_outbox', 'state="pending"')) <= 20, 'the outbox stays within maxPending');
      assert.ok((await metric(h, 'herald_webhook_events_total', 'endpoint="hang",outcome="dropped"')) >= 21, 'beyond it events are dropped and counted');
      await eventually(async () => ((await metric(h, 'herald_webhook_events_total', 'endpoint="hang",outcome="retried"')) >= 1 ? true : undefined), 'a timeout retried');
      // The endless body did not hold the delivery: the 200 counted as delivered.
      await eventually(async () => ((await metric(h, 'herald_webhook_events_total', 'endpoint="huge",outcome="delivered"')) === 1 ? true : undefined), 'huge delivered');
      for (const c of [subscriber, ...connections]) await c.close();
    } finally {
      await h.close();
      await hanging.close();
      await huge.close();
    }
  });

  it('Herald SIGKILLed with events in the outbox delivers them after the restart', async () => {
    const k = key('k1');
    const receiver = await WebhookReceiver.start([k], () => ({ status: 503 }));
    const hmac = randomBytes(32).toString('base64url');
    writeFileSync(join(dir, 'kill-hmac'), hmac, { mode: 0o600 });
    const config = join(dir, 'kill.json');
    writeFileSync(
      config,
      JSON.stringify({
        auth: { hmacSecretFile: join(dir, 'kill-hmac') },
        listen: { host: '127.0.0.1', port: 0 },
        admin: { port: 0 },
        stateDir: join(dir, 'kill-state'),
        log: { level: 'info' },
        process: { allowRoot: true },
        ...webhookConfig([{ name: 'app', url: receiver.url, keys: [k], events: ['client_connected', 'channel_occupied', 'channel_vacated', 'member_added', 'member_removed'] }], {
          backoffMinMs: 50,
          backoffMaxMs: 200,
        }),
      }),
    );
    const env = { HERALD_API_KEY: randomBytes(24).toString('base64url') };
    const first = new HeraldProcess(['--config', config], dir, env);
    try {
      const port = await first.listeningPort();
      const h = { wsUrl: `ws://127.0.0.1:${port}/connection/websocket`, token: (sub: string) => signJwt(hmac, sub) } as unknown as TestHerald;
      const clients = [];
      for (const user of ['ann', 'ben', 'cat']) clients.push(await connectWs(h, user));
      await clients[0]!.call('subscribe', { channel: 'lobby' });
      // The receiver has refused them at least once: they are in the outbox.
      await eventually(async () => (receiver.requests.flatMap((r) => r.events).filter((e) => e.name === 'client_connected').length >= 3 ? true : undefined), 'three refused');
      await first.stop('SIGKILL');
      for (const c of clients) await c.closed;
      receiver.behave = () => ({ status: 200 });
      const second = new HeraldProcess(['--config', config], dir, env);
      try {
        await second.listeningPort();
        const users = await eventually(async () => {
          const connected = receiver.events().filter((e) => e.name === 'client_connected');
          return connected.length >= 3 ? connected.map((e) => e.user).sort() : undefined;
        }, 'the three events after the restart');
        assert.deepEqual(users, ['ann', 'ben', 'cat']);
        // The killed process left lobby occupied with ann in it; the new one has no subscribers: their end is announced, once.
        const lobby = await eventually(async () => {
          const events = receiver.events().filter((e) => e.channel === 'lobby');
          return events.some((e) => e.name === 'channel_vacated') ? events.map((e) => `${e.name}${e.user === undefined ? '' : ' ' + e.user}`) : undefined;
        }, 'lobby vacated after the restart');
        assert.deepEqual(lobby, ['channel_occupied', 'member_added ann', 'member_removed ann', 'channel_vacated']);
      } finally {
        await second.stop();
      }
    } finally {
      await first.stop('SIGKILL');
      await receiver.close();
    }
  });

  it('dead letters are listed and replayed by `herald webhooks list-dead|replay` beside the running server, with the same event ids', async () => {
    const k = key('k1');
    const receiver = await WebhookReceiver.start([k], () => ({ status: 503 }));
    const hmac = randomBytes(32).toString('base64url');
    writeFileSync(join(dir, 'dead-hmac'), hmac, { mode: 0o600 });
    const config = join(dir, 'dead.json');
    writeFileSync(
      config,
      JSON.stringify({
        auth: { hmacSecretFile: join(dir, 'dead-hmac') },
        listen: { host: '127.0.0.1', port: 0 },
        admin: { port: 0 },
        stateDir: join(dir, 'dead-state'),
        log: { level: 'info' },
        process: { allowRoot: true },
        ...webhookConfig([{ name: 'app', url: receiver.url, keys: [k], events: ['client_connected'] }], { retryForMs: 300 }),
      }),
    );
    const herald = new HeraldProcess(['--config', config], dir, { HERALD_API_KEY: randomBytes(24).toString('base64url') });
    try {
      const port = await herald.listeningPort();
      const h = { wsUrl: `ws://127.0.0.1:${port}/connection/websocket`, token: (sub: string) => signJwt(hmac, sub) } as unknown as TestHerald;
      const c = await connectWs(h, 'dora');
      const listed = await eventually(async () => {
        const answer = await cli(['webhooks', 'list-dead', '--json', '--config', config]);
        assert.equal(answer.code, 0, answer.stderr);
        const lines = answer.stdout.trim().split('\n').filter((l) => l !== '');
        return lines.length === 1 ? (JSON.parse(lines[0]!) as { seq: number; endpoint: string; event: { id: string; name: string; user: string }; reason: string }) : undefined;
      }, 'one dead letter listed');
      assert.equal(listed.endpoint, 'app');
      assert.equal(listed.event.name, 'client_connected');
      assert.equal(listed.event.user, 'dora');
      assert.match(listed.reason, /status 503/);
      const refusedIds = receiver.requests.flatMap((r) => r.events.map((e) => e.id));
      assert.ok(refusedIds.includes(listed.event.id));
      receiver.behave = () => ({ status: 204 });
      const replayed = await cli(['webhooks', 'replay', '--seq', String(listed.seq), '--config', config]);
      assert.equal(replayed.code, 0, replayed.stderr);
      assert.equal(replayed.stdout.trim(), '1');
      const delivered = await eventually(async () => (receiver.events().length > 0 ? receiver.events() : undefined), 'the replayed event');
      assert.deepEqual(delivered.map((e) => e.id), [listed.event.id], 'the replay carries the same event id');
      const after = await cli(['webhooks', 'list-dead', '--config', config]);
      assert.equal(after.stdout, '');
      assert.match(after.stderr, /^0 dead letter/);
      const bad = await cli(['webhooks', 'replay', '--config', config]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /--all or --seq/);
      await c.close();
    } finally {
      await herald.stop();
      await receiver.close();
    }
  });

  it('Retry-After is honoured (the next attempt comes no sooner), on the memory engine too', async () => {
    const k = key('k1');
    const times: number[] = [];
    const receiver = await WebhookReceiver.start([k], (n) => {
      times.push(Date.now());
      return n === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 204 };
    });
    const h = await startHerald({ engine: { type: 'memory' }, ...webhookConfig([{ name: 'app', url: receiver.url, keys: [k], events: ['client_connected'] }]) });
    try {
      const c = await connectWs(h, 'eve');
      await eventually(async () => (receiver.events().length === 1 ? true : undefined), 'delivered after the wait');
      // backoffMinMs is 20 ms here: only Retry-After explains a second attempt a second later.
      assert.ok(times[1]! - times[0]! >= 1000, `second attempt ${times[1]! - times[0]!} ms after the first`);
      await c.close();
    } finally {
      await h.close();
      await receiver.close();
    }
  });

  it('check-config names a missing or short secret and a second endpoint of the same name, never the secret', async () => {
    const short = join(dir, 'short-secret');
    writeFileSync(short, 'tooshort', { mode: 0o600 });
    const config = join(dir, 'check.json');
    writeFileSync(
      config,
      JSON.stringify({
        auth: { hmacSecret: randomBytes(32).toString('base64url') },
        mode: 'development',
        stateDir: join(dir, 'check-state'),
        webhooks: {
          endpoints: [
            { name: 'a', url: 'http://127.0.0.1:9/x', keys: [{ id: 'k', secretFile: short }] },
            { name: 'a', url: 'http://127.0.0.1:9/y', keys: [{ id: 'k', secretEnv: 'HERALD_TEST_NOT_SET' }] },
          ],
        },
      }),
    );
    const answer = await cli(['check-config', '--config', config]);
    assert.equal(answer.code, 2, answer.stdout + answer.stderr);
    const text = answer.stdout + answer.stderr;
    assert.match(text, /\/webhooks\/endpoints\/0\/keys\/0: the secret is shorter than 32 characters/);
    assert.match(text, /\/webhooks\/endpoints\/1\/keys\/0\/secretEnv: the environment variable HERALD_TEST_NOT_SET is not set/);
    assert.match(text, /\/webhooks\/endpoints\/1\/name: "a" is used twice/);
    assert.doesNotMatch(text, /tooshort/);
    const badUrl = join(dir, 'check-url.json');
    writeFileSync(badUrl, JSON.stringify({ mode: 'development', stateDir: join(dir, 'check-state'), webhooks: { endpoints: [{ name: 'a', url: 'http://user:pw@example.com/x', keys: [{ id: 'k', secretFile: short }] }] } }));
    const refused = await cli(['check-config', '--config', badUrl]);
    assert.equal(refused.code, 2);
    assert.match(refused.stdout + refused.stderr, /\/webhooks\/endpoints\/0\/url/);
  });
});
