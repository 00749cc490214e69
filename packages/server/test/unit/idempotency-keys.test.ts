/**
 * The memory engine's remembered idempotency keys (broker/idempotency.ts):
 * expiry at the window's end, the bound on their number (the oldest
 * forgotten first), and the memory broker's sweep.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IdempotencyKeys } from '../../src/broker/idempotency.ts';
import { MemoryBroker } from '../../src/broker/memory-broker.ts';

const at = (offset: number) => ({ epoch: 'e', offset });

test('a key is remembered until its window ends', () => {
  const keys = new IdempotencyKeys();
  keys.set('ch', 'k', at(1), 1000);
  assert.deepEqual(keys.get('ch', 'k', 999), at(1));
  assert.equal(keys.get('ch', 'k', 1000), undefined);
  assert.equal(keys.size, 0, 'an expired key found by get is dropped');
});

test('beyond maxKeys the oldest key is forgotten first; prune drops ended windows', () => {
  const keys = new IdempotencyKeys(3);
  for (let i = 1; i <= 4; i++) keys.set('ch', `k${i}`, at(i), 100 + i);
  assert.equal(keys.size, 3);
  assert.equal(keys.get('ch', 'k1', 0), undefined);
  assert.deepEqual(keys.get('ch', 'k4', 0), at(4));
  keys.prune(103);
  assert.equal(keys.size, 1);
  assert.deepEqual(keys.get('ch', 'k4', 103), at(4));
});

test('the memory broker forgets keys with its sweep', async () => {
  let now = 0;
  const broker = new MemoryBroker({ now: () => now, sweepIntervalMs: 3_600_000 });
  const options = { stream: { size: 10, ttlMs: 60_000 }, idempotency: { key: 'k', windowMs: 100 } };
  assert.equal((await broker.publish('ch', '1', options)).offset, 1);
  assert.equal((await broker.publish('ch', '1', options)).offset, 1);
  now = 100;
  broker.sweep();
  assert.equal((await broker.publish('ch', '1', options)).offset, 2);
  await broker.close();
});
