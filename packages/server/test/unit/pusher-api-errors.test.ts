/**
 * docs/pusher.md ("HTTP API", "Errors") must document exactly the Pusher
 * HTTP API's error registry (PUSHER_API_ERRORS in pusher/pusher-api.ts):
 * every code with its status, and no code the registry does not have.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { PUSHER_API_ERRORS } from '../../src/pusher/pusher-api.ts';

const doc = readFileSync(new URL('../../../../docs/pusher.md', import.meta.url), 'utf8');

test('docs/pusher.md lists every Pusher HTTP API error code with its status, and no other', () => {
  const lines = doc.split('\n');
  const start = lines.findIndex((line) => line.replace(/\s+/g, '') === '|status|`herald-error`|when|');
  assert.ok(start !== -1, 'docs/pusher.md has the table | status | `herald-error` | when |');
  const documented = new Map<string, number>();
  for (let i = start + 2; i < lines.length && (lines[i] ?? '').startsWith('|'); i++) {
    const [status, code] = (lines[i] ?? '').slice(1, -1).split('|').map((cell) => cell.trim());
    const name = /^`([a-z_]+)`$/.exec(code ?? '')?.[1];
    assert.ok(name !== undefined, `a code in backticks: ${lines[i] ?? ''}`);
    assert.ok(!documented.has(name), `${name} documented twice`);
    documented.set(name, Number(status));
  }
  const registry = new Map(Object.entries(PUSHER_API_ERRORS).map(([code, { status }]) => [code, status as number]));
  assert.deepEqual([...documented].sort(), [...registry].sort());
});
