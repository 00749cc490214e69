/** docs/deploy.md names every file in deploy/ (issue 12: "the docs name every file in deploy/ and how to use it"). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../../../../', import.meta.url));

test('docs/deploy.md links every file in deploy/', () => {
  const doc = readFileSync(`${root}docs/deploy.md`, 'utf8');
  const files = readdirSync(`${root}deploy`, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => `${entry.parentPath.slice(root.length)}/${entry.name}`.replace(/^\/+/, ''));
  assert.ok(files.length >= 10, `files found: ${files.join(', ')}`);
  const missing = files.filter((file) => !doc.includes(`(../${file})`));
  assert.deepEqual(missing, [], 'every file in deploy/ has a link in docs/deploy.md');
});
