/**
 * Request signing (pusher/request-signing.ts) against the `pusher` SDK's own
 * signer: what the SDK signs verifies, for GETs with parameters and POSTs
 * with bodies; query parsing refuses what it cannot read unambiguously.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { parseQuery, stringToSign, verifySignedRequest } from '../../src/pusher/request-signing.ts';
import { signedQuery } from '../helpers/pusher-api.ts';
import type { App } from '../../src/apps/apps.ts';

const app = { id: 'a', key: 'key-a', secret: randomBytes(16).toString('hex') } as App;

function verify(method: string, path: string, query: string, body?: string): string | undefined {
  const params = parseQuery(query);
  assert.ok(params instanceof Map, 'the query parses');
  return verifySignedRequest(app, { method, path, params, body: body === undefined ? undefined : Buffer.from(body) }, Date.now(), 600)?.message;
}

test('what the pusher SDK signs verifies: GET with parameters, POST with a body', () => {
  const get = signedQuery(app, 'GET', '/apps/a/channels', { params: { filter_by_prefix: 'presence-', info: 'user_count,subscription_count' } });
  assert.equal(verify('GET', '/apps/a/channels', get), undefined);
  const body = JSON.stringify({ name: 'é', data: '{"x":"ü"}', channels: ['a', 'b'] });
  const post = signedQuery(app, 'POST', '/apps/a/events', { body });
  assert.equal(verify('POST', '/apps/a/events', post, body), undefined);
  assert.match(verify('POST', '/apps/a/events', post, body + ' ') ?? '', /^Invalid body_md5/);
  assert.match(verify('POST', '/apps/a/batch_events', post, body) ?? '', /^Invalid signature/);
  assert.match(verify('GET', '/apps/a/channels', get.replace('presence-', 'private-')) ?? '', /^Invalid signature/);
});

test('the string to sign: keys sorted by code unit, auth_signature left out, values as given', () => {
  const params = new Map([
    ['b', '2'],
    ['auth_signature', 'x'],
    ['a_b', '1,2'],
    ['a', ' '],
  ]);
  assert.equal(stringToSign('GET', '/p', params), 'GET\n/p\na= &a_b=1,2&b=2');
});

test('query parsing: escapes and + decoded, keys lower-cased; a repeated key or a bad escape refused', () => {
  assert.deepEqual([...(parseQuery('A=1&b=x%2Cy&c=a+b&d') as Map<string, string>)], [
    ['a', '1'],
    ['b', 'x,y'],
    ['c', 'a b'],
    ['d', ''],
  ]);
  assert.equal((parseQuery('a=1&A=2') as { reason: string }).reason, 'bad_query');
  assert.equal((parseQuery('a=%E0%A4%A') as { reason: string }).reason, 'bad_query');
  assert.equal((parseQuery(Array.from({ length: 40 }, (_, i) => `k${i}=1`).join('&')) as { reason: string }).reason, 'bad_query');
});
