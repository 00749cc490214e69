/**
 * The key per-IP limits count a client under (edge/client-address.ts
 * `limitKey`): the same grouping as @fastify/rate-limit's `normalizeIP`,
 * which the HTTP API rate limit uses, for every address form. The plugin's
 * index loads at the first IPv6 address, not before.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { limitKey } from '../../src/edge/client-address.ts';

it('limitKey groups addresses as the API rate limit does, loading the plugin at the first IPv6 address', async () => {
  const require = createRequire(import.meta.url);
  const plugin = require.resolve('@fastify/rate-limit');
  assert.equal(limitKey('10.1.2.3'), '10.1.2.3');
  // This test runs in its own process: nothing else has loaded the plugin's index.
  assert.equal(require.cache[plugin], undefined, 'not loaded for an IPv4 address');
  assert.equal(limitKey('::ffff:192.0.2.7'), '192.0.2.7');
  assert.ok(require.cache[plugin] !== undefined, 'loaded by the first IPv6 address');
  const { normalizeIP } = await import('@fastify/rate-limit');
  const addresses = ['127.0.0.1', '10.1.2.3', '::1', '::ffff:192.0.2.7', '::FFFF:192.0.2.7', '2001:db8::1', '2001:DB8:0:0:1::2', 'fe80::1%eth0'];
  for (const ip of addresses) assert.equal(limitKey(ip), normalizeIP(ip), ip);
  assert.equal(limitKey('2001:db8::1'), limitKey('2001:db8::2'));
  assert.equal(limitKey(''), 'unknown');
});
