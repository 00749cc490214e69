/**
 * docs/server-sdk.md documents the SDK as it is: every SDK error code in its
 * table, and every method of `HeraldApi` in the methods table.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { HeraldApi, sdkErrors } from '../src/index.ts';

const doc = readFileSync(new URL('../../../docs/server-sdk.md', import.meta.url), 'utf8');

test('every SDK error code is in the SDK codes table, and no other', () => {
  const start = doc.indexOf('| code | status | meaning |');
  assert.notEqual(start, -1, 'docs/server-sdk.md has the SDK codes table');
  const rows = doc.slice(start).split('\n').slice(2);
  const documented = rows.slice(0, rows.findIndex((line) => !line.startsWith('|'))).map((line) => /^\| `([a-z_]+)` \|/.exec(line)?.[1]);
  assert.deepEqual(documented.sort(), Object.keys(sdkErrors).sort());
});

test('every HeraldApi method is in the methods table', () => {
  const methods = Object.getOwnPropertyNames(HeraldApi.prototype).filter((name) => name !== 'constructor');
  assert.ok(methods.length >= 11);
  for (const name of methods) assert.match(doc, new RegExp(`^\\| \`${name}\\(`, 'm'), `${name} is documented`);
});
