/**
 * The broker and presence contract against the Redis engine (real Redis at
 * HERALD_TEST_REDIS_URL, default 127.0.0.1:6379), each harness under its own
 * key prefix. Skips loudly without Redis; fails under HERALD_REQUIRE_SERVICES=1.
 */
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
