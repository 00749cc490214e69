/**
 * docs/config.md is generated from the config schema; it must not drift.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { renderConfigDocs } from '../../src/config/docs.ts';
import { buildConfig } from '../../src/config/load.ts';

const docPath = new URL('../../../../docs/config.md', import.meta.url);
const hint = 'docs/config.md is out of date with packages/server/src/config/schema.ts: run `npm run docs:config` and commit the result';

test('docs/config.md equals renderConfigDocs()', () => {
  assert.ok(existsSync(docPath), `docs/config.md does not exist: run \`npm run docs:config\``);
  const onDisk = readFileSync(docPath, 'utf8');
  const rendered = renderConfigDocs();
  if (onDisk !== rendered) {
    // Name the first differing line, so the failure says what drifted.
    const a = onDisk.split('\n');
    const b = rendered.split('\n');
    let line = 0;
    while (line < Math.max(a.length, b.length) && a[line] === b[line]) line++;
    assert.fail(`${hint}\n  first difference at line ${line + 1}:\n    docs/config.md: ${a[line] ?? '<end of file>'}\n    schema renders: ${b[line] ?? '<end of file>'}`);
  }
});

test('renderConfigDocs() is deterministic', () => {
  assert.equal(renderConfigDocs(), renderConfigDocs());
});

test('every example in the config docs is a valid configuration', () => {
  const examples = [...renderConfigDocs().matchAll(/```json\n([\s\S]*?)\n```/g)];
  assert.ok(examples.length >= 2, 'config docs have ```json examples ($schema and the full example)');
  for (const match of examples) {
    const example = JSON.parse(match[1]!.replace('<hex sha256 of the key>', 'a'.repeat(64))) as Record<string, unknown>;
    assert.doesNotThrow(() => buildConfig(example, { env: {} }));
  }
});
