/**
 * The broker and presence contract against the Redis engine (real Redis at
 * HERALD_TEST_REDIS_URL, default 127.0.0.1:6379), each harness under its own
 * key prefix. Skips loudly without Redis; fails under HERALD_REQUIRE_SERVICES=1.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { RedisBroker } from '../../src/broker/redis-broker.ts';
import { RedisPresenceStore } from '../../src/broker/redis-presence.ts';
import { runBrokerContract } from './broker-contract.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';

const skip = missingService('Redis', await redisAvailable());

if (skip === false) {
  runBrokerContract('redis', async () => {
    let now = Date.now();
    const prefix = 'herald-test-' + randomBytes(6).toString('hex');
    const command = new Redis(REDIS_URL, { commandTimeout: 2000, enableOfflineQueue: false, lazyConnect: true });
    const subscriber = new Redis(REDIS_URL, { enableOfflineQueue: false, lazyConnect: true });
    await Promise.all([command.connect(), subscriber.connect()]);
    const broker = new RedisBroker({ command, subscriber, prefix, streamMetaTtlMs: 60_000, now: () => now });
    const presence = new RedisPresenceStore({ command, prefix, ttlMs: 60_000, now: () => now });
    return {
      broker,
      presence,
      clock: {
        now: () => now,
        advance: (ms: number) => {
          now += ms;
        },
      },
      // Redis expires keys by its own clock: a sweep stands for that expiry
      // by deleting this harness's stream keys of channels nobody subscribes to.
      sweep: async () => {
        // Virtual time runs ahead of Redis's clock by (now - Date.now()):
        // a history list whose remaining TTL is shorter than that has expired.
        const ahead = now - Date.now();
        const keys = await command.keys(`${prefix}:*:hist`);
        for (const key of keys) {
          const channel = /\{(.*)\}:hist$/.exec(key)?.[1];
          if (channel === undefined || broker.channels.has(channel)) continue;
          const ttl = await command.pttl(key);
          if (ttl <= ahead) await command.del(key, key.replace(/:hist$/, ':meta'));
        }
      },
      async close() {
        await broker.close();
        await presence.close();
        const keys = await command.keys(`${prefix}:*`);
        if (keys.length > 0) await command.del(...keys);
        command.disconnect();
        subscriber.disconnect();
      },
    };
  });
}

describe('redis engine: idempotency across nodes', { skip }, () => {
  test('two nodes racing with one key publish once; both answer the first position', async () => {
    const prefix = 'herald-test-' + randomBytes(6).toString('hex');
    const clients: Redis[] = [];
    const node = async (): Promise<RedisBroker> => {
      const command = new Redis(REDIS_URL, { commandTimeout: 2000, enableOfflineQueue: false, lazyConnect: true });
      const subscriber = new Redis(REDIS_URL, { enableOfflineQueue: false, lazyConnect: true });
      clients.push(command, subscriber);
      await Promise.all([command.connect(), subscriber.connect()]);
      return new RedisBroker({ command, subscriber, prefix, streamMetaTtlMs: 60_000 });
    };
    const [a, b] = [await node(), await node()];
    try {
      const delivered: string[] = [];
      a.setEventHandler({ onPublication: (_channel, p) => delivered.push(p.data), onJoin: () => {}, onLeave: () => {}, onStreamReset: () => {} });
      await a.subscribe('orders:1');
      const options = { stream: { size: 10, ttlMs: 60_000 }, idempotency: { key: 'race', windowMs: 60_000 } };
      const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).publish('orders:1', '"paid"', options)));
      for (const answer of answers) assert.deepEqual({ ...answer }, { ...answers[0]! });
      const page = await b.history('orders:1', { limit: 10 }, options.stream);
      assert.deepEqual(page.publications.map((p) => p.data), ['"paid"'], 'one publication stored');
      await b.publish('orders:1', '"marker"', { stream: options.stream });
      const deadline = Date.now() + 2000;
      while (!delivered.includes('"marker"') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
      assert.deepEqual(delivered, ['"paid"', '"marker"'], 'one publication delivered');
    } finally {
      await a.close();
      await b.close();
      const keys = await clients[0]!.keys(`${prefix}:*`);
      if (keys.length > 0) await clients[0]!.del(...keys);
      for (const client of clients) client.disconnect();
    }
  });
});
