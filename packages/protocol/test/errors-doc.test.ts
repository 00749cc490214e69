/**
 * docs/errors.md must document exactly the three code registries of
 * packages/protocol/src/codes.ts: every entry, with the same status or number, and no
 * code that the registry does not have.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { apiErrors, disconnects, replyErrors, shouldReconnect } from '../src/codes.ts';

const docPath = new URL('../../../docs/errors.md', import.meta.url);
const doc = readFileSync(docPath, 'utf8');

/** Rows (cells trimmed) of the markdown table whose header row is exactly `header`. */
function table(header: string): string[][] {
  const lines = doc.split('\n');
  const normalize = (line: string) => line.trim().replace(/\s*\|\s*/g, '|');
  const start = lines.findIndex((line) => normalize(line) === normalize(header));
  assert.ok(start !== -1, `docs/errors.md has no table with header "${header}"`);
  assert.match(lines[start + 1] ?? '', /^\|(\s*:?-+:?\s*\|)+\s*$/, `table "${header}" has no separator row`);
  const rows: string[][] = [];
  for (let i = start + 2; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (!line.startsWith('|')) break;
    assert.ok(line.endsWith('|'), `row does not end with "|": ${line}`);
    rows.push(line.slice(1, -1).split('|').map((cell) => cell.trim()));
  }
  const width = header.split('|').length - 2;
  for (const row of rows) assert.equal(row.length, width, `row has ${row.length} cells, expected ${width}: | ${row.join(' | ')} |`);
  return rows;
}

/** `name` → name; anything else fails. */
function codeName(cell: string, where: string): string {
  const match = /^`([a-z][a-z0-9_]*)`$/.exec(cell);
  assert.ok(match, `${where}: expected a code name in backticks, got "${cell}"`);
  return match[1]!;
}

function integer(cell: string, where: string): number {
  assert.match(cell, /^[0-9]+$/, `${where}: expected a number, got "${cell}"`);
  return Number(cell);
}

function assertSameKeys(documented: Iterable<string>, registry: Iterable<string>, what: string): void {
  const doc = new Set(documented);
  const reg = new Set(registry);
  const missing = [...reg].filter((k) => !doc.has(k));
  const extra = [...doc].filter((k) => !reg.has(k));
  assert.deepEqual(missing, [], `${what} missing from docs/errors.md: ${missing.join(', ')}`);
  assert.deepEqual(extra, [], `${what} in docs/errors.md but not in packages/protocol/src/codes.ts: ${extra.join(', ')}`);
}

function assertMeaningful(meaning: string, where: string): void {
  assert.ok(meaning.length >= 20, `${where}: the meaning is missing or too short to act on: "${meaning}"`);
}

test('API errors table lists every API error with its HTTP status', () => {
  const rows = table('| code | HTTP status | meaning |');
  const seen = new Map<string, number>();
  for (const [codeCell, statusCell, meaning] of rows as [string, string, string][]) {
    const name = codeName(codeCell, 'API errors');
    assert.ok(!seen.has(name), `API error ${name} is listed twice`);
    seen.set(name, integer(statusCell, `API error ${name}`));
    assertMeaningful(meaning, `API error ${name}`);
  }
  assertSameKeys(seen.keys(), Object.keys(apiErrors), 'API errors');
  for (const [name, entry] of Object.entries(apiErrors)) {
    assert.equal(seen.get(name), entry.status, `API error ${name}: docs say HTTP ${seen.get(name)}, registry says ${entry.status}`);
  }
});

test('reply errors table lists every reply error with its number', () => {
  const rows = table('| code | name | meaning |');
  const byName = new Map<string, number>();
  const byCode = new Map<number, string>();
  for (const [codeCell, nameCell, meaning] of rows as [string, string, string][]) {
    const name = codeName(nameCell, 'reply errors');
    const code = integer(codeCell, `reply error ${name}`);
    assert.ok(!byName.has(name), `reply error ${name} is listed twice`);
    assert.ok(!byCode.has(code), `reply error code ${code} is listed twice`);
    byName.set(name, code);
    byCode.set(code, name);
    assertMeaningful(meaning, `reply error ${name}`);
  }
  assertSameKeys(byName.keys(), Object.keys(replyErrors), 'reply errors');
  for (const [name, entry] of Object.entries(replyErrors)) {
    assert.equal(byName.get(name), entry.code, `reply error ${name}: docs say ${byName.get(name)}, registry says ${entry.code}`);
  }
});

test('disconnect table lists every disconnect code with its number and reconnect advice', () => {
  const rows = table('| code | name | reconnect | meaning |');
  const byName = new Map<string, number>();
  const byCode = new Map<number, string>();
  for (const [codeCell, nameCell, reconnectCell, meaning] of rows as [string, string, string, string][]) {
    const name = codeName(nameCell, 'disconnect codes');
    const code = integer(codeCell, `disconnect ${name}`);
    assert.ok(!byName.has(name), `disconnect ${name} is listed twice`);
    assert.ok(!byCode.has(code), `disconnect code ${code} is listed twice`);
    byName.set(name, code);
    byCode.set(code, name);
    assert.ok(reconnectCell === 'yes' || reconnectCell === 'no', `disconnect ${name}: reconnect must be "yes" or "no", got "${reconnectCell}"`);
    assert.equal(reconnectCell === 'yes', shouldReconnect(code), `disconnect ${name} (${code}): docs say reconnect ${reconnectCell}`);
    assertMeaningful(meaning, `disconnect ${name}`);
  }
  assertSameKeys(byName.keys(), Object.keys(disconnects), 'disconnect codes');
  for (const [name, entry] of Object.entries(disconnects)) {
    assert.equal(byName.get(name), entry.code, `disconnect ${name}: docs say ${byName.get(name)}, registry says ${entry.code}`);
  }
});

test('registries themselves are consistent with the documented ranges', () => {
  const replyCodes = Object.values(replyErrors).map((e) => e.code);
  assert.equal(new Set(replyCodes).size, replyCodes.length, 'reply error codes are unique');
  const disconnectCodes = Object.values(disconnects).map((e) => e.code);
  assert.equal(new Set(disconnectCodes).size, disconnectCodes.length, 'disconnect codes are unique');
  for (const [name, entry] of Object.entries(disconnects)) {
    assert.ok(entry.code >= 3000 && entry.code < 4000, `disconnect ${name} (${entry.code}) is outside 3000–3999 (4000–4999 is for applications)`);
  }
  for (const [name, entry] of Object.entries(apiErrors)) {
    assert.ok(entry.status >= 400 && entry.status < 600, `API error ${name} has a non-error status ${entry.status}`);
  }
});

test('the intro explains ranges, library close codes and generic messages', () => {
  for (const text of ['3000–3499', '3500–3999', '4000–4999', '1002', '1007', '1009', 'stack trace']) {
    assert.ok(doc.includes(text), `docs/errors.md should mention "${text}"`);
  }
});
