/**
 * Idempotent publish over HTTP (docs/protocol.md "Idempotent publish"): a
 * retry of `publish`, `broadcast` or a `batch` item with the same
 * `idempotency_key` answers the first position and a subscriber receives
 * one publication; concurrent duplicates make one; after
 * `api.idempotencyWindowMs` the key publishes again; hostile keys are
 * refused with `400 bad_request` and publish nothing. On the sqlite engine a
 * retry after a restart (SIGKILL, single process and cluster mode) is still
 * recognised.
 */
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startHerald, type TestHerald } from '../helpers/herald.ts';
import { closeAllClients, connectWs, unique, type Json } from '../helpers/herald-ws.ts';
import { HeraldProcess } from '../helpers/herald-process.ts';
import { callApi, type Target } from '../redis/harness.ts';

const WINDOW_MS = 1000;

describe('server API: idempotent publish', { timeout: 60000 }, () => {
  let h: TestHerald;
  before(async () => {
    h = await startHerald({ api: { idempotencyWindowMs: WINDOW_MS } });
  });
  afterEach(() => closeAllClients());
  after(async () => {
    closeAllClients();
    await h.close();
  });

  const api = (method: string, body: unknown) => h.api(method, body);

  /** Publishes a marker and returns the data the subscriber saw on `channel` up to it: proves nothing else arrived. */
  async function seenUntilMarker(c: Awaited<ReturnType<typeof connectWs>>, channel: string): Promise<unknown[]> {
    const marker = await api('publish', { channel, data: 'marker' });
    assert.equal(marker.status, 200, JSON.stringify(marker.body));
    return (await c.waitMarker(channel, 'marker')).map((p) => p.data);
  }

  test('a retried publish answers the same position; the subscriber receives one publication', async () => {
    const channel = unique('chat:idem');
    const c = await connectWs(h, 'alice');
    await c.call('subscribe', { channel });
    const first = await api('publish', { channel, data: { n: 1 }, idempotency_key: 'order-1' });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    for (let i = 0; i < 3; i++) {
      const retry = await api('publish', { channel, data: { n: 1 }, idempotency_key: 'order-1' });
      assert.equal(retry.status, 200);
      assert.deepEqual(retry.body, first.body, 'the first result');
    }
    const other = await api('publish', { channel, data: { n: 2 }, idempotency_key: 'order-2' });
    assert.equal(other.body.offset, first.body.offset + 1, 'another key publishes');
    assert.deepEqual(await seenUntilMarker(c, channel), [{ n: 1 }, { n: 2 }, 'marker']);
    const history = await api('history', { channel, limit: 100 });
    assert.equal(history.body.publications.length, 3);
  });

  test('concurrent duplicates make one publication', async () => {
    const channel = unique('chat:idem-race');
    const c = await connectWs(h, 'alice');
    await c.call('subscribe', { channel });
    const answers = await Promise.all(Array.from({ length: 20 }, () => api('publish', { channel, data: 'once', idempotency_key: 'race' })));
    for (const answer of answers) assert.deepEqual(answer.body, answers[0]!.body);
    assert.deepEqual(await seenUntilMarker(c, channel), ['once', 'marker']);
  });

  test('broadcast and batch items: a retry publishes nothing again; the key is per channel', async () => {
    const [a, b] = [unique('chat:idem-a'), unique('chat:idem-b')];
    const c = await connectWs(h, 'alice');
    await c.call('subscribe', { channel: a });
    await c.call('subscribe', { channel: b });
    const broadcast = await api('broadcast', { channels: [a, b], data: 'all', idempotency_key: 'bc-1' });
    assert.equal(broadcast.status, 200, JSON.stringify(broadcast.body));
    assert.deepEqual((await api('broadcast', { channels: [a, b], data: 'all', idempotency_key: 'bc-1' })).body, broadcast.body);
    const batch = { publishes: [{ channel: a, data: 'item-a', idempotency_key: 'it-1' }, { channel: b, data: 'item-b', idempotency_key: 'it-1' }, { channel: a, data: 'no-key' }] };
    const firstBatch = await api('batch', batch);
    const retried = await api('batch', batch);
    assert.deepEqual(retried.body.results.slice(0, 2), firstBatch.body.results.slice(0, 2), 'keyed items answer the first result');
    assert.equal(retried.body.results[2].offset, firstBatch.body.results[2].offset + 1, 'an item without a key publishes again');
    assert.deepEqual(await seenUntilMarker(c, a), ['all', 'item-a', 'no-key', 'no-key', 'marker']);
    assert.deepEqual(await seenUntilMarker(c, b), ['all', 'item-b', 'marker']);
  });

  test('without history a retry is not delivered either', async () => {
    const channel = unique('nohistory:idem');
    const c = await connectWs(h, 'alice');
    await c.call('subscribe', { channel });
    for (let i = 0; i < 3; i++) assert.deepEqual((await api('publish', { channel, data: 'x', idempotency_key: 'nh' })).body, { epoch: '', offset: 0 });
    assert.deepEqual(await seenUntilMarker(c, channel), ['x', 'marker']);
  });

  test('after api.idempotencyWindowMs the same key publishes again', async () => {
    const channel = unique('chat:idem-window');
    const first = await api('publish', { channel, data: 1, idempotency_key: 'w' });
    await new Promise((resolve) => setTimeout(resolve, WINDOW_MS + 200));
    const later = await api('publish', { channel, data: 1, idempotency_key: 'w' });
    assert.equal(later.status, 200);
    assert.equal(later.body.offset, first.body.offset + 1);
  });

  test('hostile keys are refused with 400 bad_request and publish nothing', async () => {
    const channel = unique('chat:idem-bad');
    const c = await connectWs(h, 'alice');
    await c.call('subscribe', { channel });
    const keys: unknown[] = ['', 'x'.repeat(129), 'a b', 'tab\there', 'line\nbreak', 'nul\u0000', 'é', '\u{1F600}', 'del\u007f', 5, null, true, ['k'], { k: 1 }];
    for (const key of keys) {
      for (const [method, body] of [
        ['publish', { channel, data: 'no', idempotency_key: key }],
        ['broadcast', { channels: [channel], data: 'no', idempotency_key: key }],
        ['batch', { publishes: [{ channel, data: 'ok' }, { channel, data: 'no', idempotency_key: key }] }],
      ] as const) {
        const answer = await api(method, body);
        assert.equal(answer.status, 400, `${method} ${JSON.stringify(key)}: ${answer.status} ${JSON.stringify(answer.body)}`);
        assert.equal((answer.body as Json).error.code, 'bad_request');
        assert.match((answer.body as Json).error.detail ?? '', /idempotency_key/);
      }
    }
    assert.equal((await api('publish', { channel, data: 'ok', idempotency_key: 'x'.repeat(128) })).status, 200, '128 characters are fine');
    assert.equal((await api('publish', { channel, data: 'ok', idempotency_key: '!~' })).status, 200);
    assert.deepEqual(await seenUntilMarker(c, channel), ['ok', 'ok', 'marker']);
  });
});

describe('sqlite engine: a retry after a restart is still recognised', { timeout: 120000 }, () => {
  const dirs: string[] = [];
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  for (const workers of [1, 2]) {
    test(`SIGKILL and start again${workers > 1 ? ` (cluster mode, ${workers} workers)` : ''}`, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'herald-idempotency-'));
      dirs.push(dir);
      writeFileSync(join(dir, 'hmac'), randomBytes(32).toString('base64url') + '\n', { mode: 0o600 });
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
          api: { rateLimitPerIp: 1000000, rateLimitPerKey: 1000000 },
          channels: { namespaces: [{ name: 'orders', historySize: 100, historyTtlMs: 600000 }] },
        }),
      );
      const env = { HERALD_API_KEY: randomBytes(24).toString('base64url') };
      const start = async (): Promise<{ process: HeraldProcess; target: Target }> => {
        const process = new HeraldProcess(['--config', config, ...(workers > 1 ? ['--workers', String(workers)] : [])], dir, env);
        const port = await process.listeningPort();
        return { process, target: { name: 'herald', url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}/connection/websocket`, apiKey: env.HERALD_API_KEY } };
      };
      const channel = `orders:restart-${workers}`;
      let server = await start();
      try {
        // Concurrent duplicates (spread over the workers in cluster mode) make one publication.
        const answers = await Promise.all(Array.from({ length: 10 }, () => callApi(server.target, 'publish', { channel, data: 'paid', idempotency_key: 'order-7-paid' })));
        for (const answer of answers) {
          assert.equal(answer.status, 200, JSON.stringify(answer.body));
          assert.deepEqual(answer.body, answers[0]!.body);
        }
        const first = answers[0]!.body as { epoch: string; offset: number };
        await server.process.stop('SIGKILL');
        server = await start();
        const retry = await callApi(server.target, 'publish', { channel, data: 'paid', idempotency_key: 'order-7-paid' });
        assert.equal(retry.status, 200, JSON.stringify(retry.body));
        assert.deepEqual(retry.body, first, 'the first result, after the restart');
        const history = await callApi(server.target, 'history', { channel, limit: 100 });
        assert.deepEqual(history.body.publications.map((p: { data: unknown }) => p.data), ['paid'], 'one publication');
        const next = await callApi(server.target, 'publish', { channel, data: 'shipped', idempotency_key: 'order-7-shipped' });
        assert.deepEqual(next.body, { epoch: first.epoch, offset: first.offset + 1 });
      } finally {
        await server.process.stop();
      }
    });
  }
});
