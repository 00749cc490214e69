/**
 * The stores of API keys' last uses (console/key-usage-store.ts), each
 * against the real thing: a state file, and Redis (skipped loudly without
 * it). A save keeps the later time per key; load answers every key.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { openSqliteStore } from '../../src/store/sqlite-store.ts';
import { RedisKeyUsageStore, SqliteKeyUsageStore, type KeyUsageStore } from '../../src/console/key-usage-store.ts';
import { missingService, redisAvailable, REDIS_URL } from '../helpers/services.ts';

async function contract(store: KeyUsageStore): Promise<void> {
  assert.deepEqual([...(await store.load())], []);
  await store.save([
    ['a', 1000],
    ['b', 2000],
  ]);
  await store.save([
    ['a', 500],
    ['b', 3000],
    ['c', 10],
  ]);
  assert.deepEqual(
    [...(await store.load())].sort(),
    [
      ['a', 1000],
      ['b', 3000],
      ['c', 10],
    ],
    'an older use never replaces a later one',
  );
}

test('sqlite state file: last uses kept, never moved backwards', async () => {
  const stateDir = mkdtempSync(join(tmpdir(), 'herald-key-usage-'));
  try {
    // The owner made and migrated the file; the store opens it beside (as a cluster worker does).
    const owner = openSqliteStore({ stateDir });
    const store = new SqliteKeyUsageStore(stateDir);
    try {
      await contract(store);
    } finally {
      store.close();
      owner.close();
    }
  } finally {
    rmSync(stateDir, { recursive: true, force: true });
  }
});

test('redis hash: last uses kept, never moved backwards', async (t) => {
  const skip = missingService('Redis', await redisAvailable());
  if (skip !== false) return t.skip(skip);
  const prefix = 'herald-test-key-usage-' + randomBytes(4).toString('hex');
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  await redis.connect();
  try {
    await contract(new RedisKeyUsageStore(redis, prefix));
  } finally {
    const keys = await redis.keys(`${prefix}*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
  }
});
