/**
 * The broker and presence contract against the Redis engine on a real Redis
 * Cluster (three masters, three replicas, started here and stopped by PID):
 * the same suite as one Redis (test/unit/broker-contract-redis.test.ts), with
 * the composition root's cluster clients (Cluster + sharded pub/sub).
 * Skips loudly without redis-server/redis-cli; fails under
 * HERALD_REQUIRE_SERVICES=1.
 */
import { after } from 'node:test';
import { randomBytes } from 'node:crypto';
import type { Cluster } from 'ioredis';
import { RedisBroker } from '../../src/broker/redis-broker.ts';
import type { ShardedPubSub } from '../../src/broker/redis-sharded-pubsub.ts';
import { RedisPresenceStore } from '../../src/broker/redis-presence.ts';
import { buildConfig } from '../../src/config/load.ts';
import { openRedisClients } from '../../src/app/engine.ts';
import { runBrokerContract } from '../unit/broker-contract.ts';
import { missingService } from '../helpers/services.ts';
import { RedisClusterFixture, redisClusterToolsAvailable } from './cluster-harness.ts';

const skip = missingService('redis-server and redis-cli (a local Redis Cluster)', await redisClusterToolsAvailable());

if (skip === false) {
  let fixture: Promise<RedisClusterFixture> | undefined;
  after(async () => {
    if (fixture !== undefined) await (await fixture.catch(() => undefined))?.close();
  });

  runBrokerContract('redis cluster', async () => {
    fixture ??= RedisClusterFixture.start();
    const cluster = await fixture;
    const config = buildConfig({ engine: { type: 'redis', redisCluster: cluster.urls } }, { env: {} });
    const clients = await openRedisClients(config);
    const command = clients.command as Cluster;
    let now = Date.now();
    const prefix = 'herald-test-' + randomBytes(6).toString('hex');
    const broker = new RedisBroker({ command, subscriber: clients.subscriber, prefix, streamMetaTtlMs: 60_000, now: () => now });
    const presence = new RedisPresenceStore({ command, prefix, ttlMs: 60_000, now: () => now });
    /** Every key under the prefix, from every master. */
    const keys = async (pattern: string): Promise<string[]> => (await Promise.all(command.nodes('master').map((node) => node.keys(pattern)))).flat();
    return {
      broker,
      presence,
      clock: {
        now: () => now,
        advance: (ms: number) => {
          now += ms;
        },
      },
      // As for one Redis: a sweep stands for Redis's own expiry of the
      // history of channels nobody subscribes to.
      sweep: async () => {
        const ahead = now - Date.now();
        for (const key of await keys(`${prefix}:*:hist`)) {
          const channel = /\{(.*)\}:hist$/.exec(key)?.[1];
          if (channel === undefined || broker.channels.has(channel)) continue;
          const ttl = await command.pttl(key);
          if (ttl <= ahead) await command.del(key, key.replace(/:hist$/, ':meta'));
        }
      },
      async close() {
        await broker.close();
        await presence.close();
        for (const key of await keys(`${prefix}:*`)) await command.del(key);
        command.disconnect();
        await (clients.subscriber as ShardedPubSub).close();
      },
    };
  });
}
