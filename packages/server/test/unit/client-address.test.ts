/**
 * The key per-IP limits count a client under (edge/client-address.ts
 * `limitKey`): the same grouping as @fastify/rate-limit's `normalizeIP`,
 * which the HTTP API rate limit uses, for every address form.
 */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { normalizeIP } from '@fastify/rate-limit';
import { limitKey } from '../../src/edge/client-address.ts';

it('limitKey groups addresses as the API rate limit does', () => {
  const addresses = ['127.0.0.1', '10.1.2.3', '::1', '::ffff:192.0.2.7', '::FFFF:192.0.2.7', '2001:db8::1', '2001:DB8:0:0:1::2', 'fe80::1%eth0'];
  for (const ip of addresses) assert.equal(limitKey(ip), normalizeIP(ip), ip);
  assert.equal(limitKey('::ffff:192.0.2.7'), '192.0.2.7');
  assert.equal(limitKey('2001:db8::1'), limitKey('2001:db8::2'));
  assert.equal(limitKey(''), 'unknown');
});
