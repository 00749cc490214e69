/**
 * docs/pusher.md ("The socket", "Error codes" and the subscription refusals)
 * must document exactly the Pusher socket's registries (pusher/pusher-errors.ts):
 * every pusher:error code with whether it closes, every subscription_error
 * status, and nothing the registries do not have.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { pusherErrors, subscriptionErrors } from '../../src/pusher/pusher-errors.ts';

const lines = readFileSync(new URL('../../../../docs/pusher.md', import.meta.url), 'utf8').split('\n');

/** The rows of the table whose header row is `header` (cells trimmed). */
function table(header: string): string[][] {
  const start = lines.findIndex((line) => line.replace(/\s+/g, '') === header.replace(/\s+/g, ''));
  assert.ok(start !== -1, `docs/pusher.md has the table ${header}`);
  const rows: string[][] = [];
  for (let i = start + 2; i < lines.length && (lines[i] ?? '').startsWith('|'); i++) rows.push((lines[i] ?? '').slice(1, -1).split('|').map((cell) => cell.trim()));
  return rows;
}

test('docs/pusher.md lists every pusher:error code of the socket, whether it closes, and no other', () => {
  const documented = new Map<number, boolean>();
  for (const [code, closes] of table('| code | closes | meaning |')) {
    assert.ok(!documented.has(Number(code)), `${code} documented twice`);
    assert.ok(closes === 'yes' || closes === 'no', `closes is yes or no: ${code}`);
    documented.set(Number(code), closes === 'yes');
  }
  const registry = new Map<number, boolean>();
  for (const entry of Object.values(pusherErrors)) {
    assert.equal(registry.get(entry.code) ?? entry.close, entry.close, `${entry.code} both closes and does not`);
    registry.set(entry.code, entry.close);
  }
  assert.deepEqual([...documented].sort(), [...registry].sort());
});

test('docs/pusher.md lists every subscription_error status of the socket, and no other', () => {
  const documented = table('| status | why |').map(([status]) => Number(status));
  const registry = [...new Set(Object.values(subscriptionErrors).map((entry) => entry.status as number))];
  assert.deepEqual(documented.sort(), registry.sort());
});
