/**
 * The app store contract (test/helpers/apps-store-contract.ts) on every
 * app store (apps/app-store.ts): memory, the sqlite state file, and Redis
 * (real Redis at HERALD_TEST_REDIS_URL; skipped loudly without it, a
 * failure under HERALD_REQUIRE_SERVICES=1).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { MemoryAppStore } from '../../src/apps/app-store.ts';
import { SqliteAppStore } from '../../src/apps/sqlite-app-store.ts';
import { RedisAppStore } from '../../src/apps/redis-app-store.ts';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';
import { appStoreContract, type AppStoreHarness } from '../helpers/apps-store-contract.ts';

const engines: Record<string, () => Promise<AppStoreHarness>> = {
  memory: async () => {
    const store = new MemoryAppStore();
    return { store, other: store, close: async () => {} };
  },
  sqlite: async () => {
    const dir = mkdtempSync(join(tmpdir(), 'herald-app-store-'));
    const file = openSqliteStore({ stateDir: dir });
    const tool = openSqliteStore({ stateDir: dir, claim: false });
    return {
      store: new SqliteAppStore(file.db),
      other: new SqliteAppStore(tool.db),
      close: async () => {
        tool.close();
        file.close();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  },
};

const redisSkip = missingService('Redis', await redisAvailable());
if (redisSkip === false) {
  engines['redis'] = async () => {
    const prefix = 'herald-test-' + randomBytes(6).toString('hex');
    const redis = new Redis(REDIS_URL, { commandTimeout: 2000, enableOfflineQueue: false, lazyConnect: true });
    const second = new Redis(REDIS_URL, { commandTimeout: 2000, enableOfflineQueue: false, lazyConnect: true });
    await redis.connect();
    await second.connect();
    return {
      store: new RedisAppStore(redis, prefix),
      other: new RedisAppStore(second, prefix),
      close: async () => {
        const keys = await redis.keys(`${prefix}*`);
        if (keys.length > 0) await redis.del(...keys);
        redis.disconnect();
        second.disconnect();
      },
    };
  };
}

for (const [name, open] of Object.entries(engines)) appStoreContract(name, open);
