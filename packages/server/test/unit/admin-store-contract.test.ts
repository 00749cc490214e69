/**
 * The console store contract (test/helpers/admin-store-contract.ts) on
 * every console store (console/admin-store.ts): memory, the sqlite state
 * file, and Redis (real Redis at HERALD_TEST_REDIS_URL; skipped loudly
 * without it, a failure under HERALD_REQUIRE_SERVICES=1).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { MemoryAdminStore } from '../../src/console/admin-store.ts';
import { SqliteAdminStore } from '../../src/console/sqlite-admin-store.ts';
import { RedisAdminStore } from '../../src/console/redis-admin-store.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { adminStoreContract, type AdminStoreHarness } from '../helpers/admin-store-contract.ts';

const engines: Record<string, () => Promise<AdminStoreHarness>> = {
  memory: async () => ({ store: new MemoryAdminStore(), close: async () => {} }),
  sqlite: async () => {
    const dir = mkdtempSync(join(tmpdir(), 'herald-admin-store-'));
    const file = openSqliteStore({ stateDir: dir });
    return {
      store: new SqliteAdminStore(file.db),
      close: async () => {
        file.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

const redisSkip = missingService('Redis', await redisAvailable());
if (redisSkip === false) {
  engines['redis'] = async () => {
    const prefix = 'herald-test-' + randomBytes(6).toString('hex') + ':';
    const redis = new Redis(REDIS_URL, { commandTimeout: 2000, enableOfflineQueue: false, lazyConnect: true });
    await redis.connect();
    return {
      store: new RedisAdminStore(redis, prefix),
      close: async () => {
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
        redis.disconnect();
      },
    };
  };
}

for (const [name, open] of Object.entries(engines)) adminStoreContract(name, open);
