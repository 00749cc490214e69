/**
 * `@herald/protocol/api`: one entry per method of docs/protocol.md's table,
 * with its scope; requests strict (an unknown key is refused), results open
 * (a newer server may add fields); the error body names exactly the codes
 * of the API error registry; the broadcast limit follows the given limits.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { apiErrors } from '../src/codes.ts';
import { ApiErrorBody, apiMethodNames, apiSchemas, createApiSchemas } from '../src/api.ts';

const protocolDoc = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');

test('every method of docs/protocol.md\'s server API table, with its scope', () => {
  const rows = [...protocolDoc.matchAll(/^\| `([a-z_]+)` \| (publish|read|admin) \|/gm)].map((m) => [m[1], m[2]]);
  assert.deepEqual(rows, apiMethodNames.map((name) => [name, apiSchemas[name].scope]));
});

test('requests are strict, results accept fields they do not name', () => {
  for (const name of apiMethodNames) {
    const { request, result } = apiSchemas[name];
    assert.equal(request['additionalProperties'], false, `${name} request`);
    assert.equal(result['additionalProperties'], undefined, `${name} result`);
  }
  assert.equal(TypeCompiler.Compile(apiSchemas.publish.request).Check({ channel: 'a', data: 1, extra: 1 }), false);
  assert.equal(TypeCompiler.Compile(apiSchemas.publish.result).Check({ epoch: 'e', offset: 1, extra: 1 }), true);
});

test('the error body names exactly the registered API error codes', () => {
  const check = TypeCompiler.Compile(ApiErrorBody);
  for (const code of Object.keys(apiErrors)) assert.ok(check.Check({ error: { code, message: 'm' } }), code);
  assert.equal(check.Check({ error: { code: 'no_such_code', message: 'm' } }), false);
  assert.ok(check.Check({ error: { code: 'bad_request', message: 'm', detail: '/channel: expected string' } }));
});

test('the broadcast and batch limits follow the limits given', () => {
  const schemas = createApiSchemas({ maxBroadcastChannels: 2, maxBatchPublishes: 3 });
  const check = TypeCompiler.Compile(schemas.broadcast.request);
  assert.ok(check.Check({ channels: ['a', 'b'], data: 1 }));
  assert.equal(check.Check({ channels: ['a', 'b', 'c'], data: 1 }), false);
  assert.equal(apiSchemas.broadcast.request.properties.channels.maxItems, 1000);
  const batch = TypeCompiler.Compile(schemas.batch.request);
  const item = { channel: 'a', data: 1 };
  assert.ok(batch.Check({ publishes: [item, item, item] }), 'a channel may repeat');
  assert.equal(batch.Check({ publishes: [item, item, item, item] }), false);
  assert.equal(batch.Check({ publishes: [] }), false);
  assert.equal(batch.Check({ publishes: [{ ...item, extra: 1 }] }), false);
  assert.equal(apiSchemas.batch.request.properties.publishes.maxItems, 1000);
});
