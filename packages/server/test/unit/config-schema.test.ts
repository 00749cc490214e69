/**
 * docs/config.schema.json is emitted from the config schema; it must not
 * drift, a standard JSON Schema validator (Ajv, draft 2020-12, strict) must
 * accept it, and it must agree with Herald on real configs: what Herald takes
 * the schema takes, and the mistakes Herald refuses the schema refuses too.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { CONFIG_SCHEMA_DRAFT, CONFIG_SCHEMA_ID, renderConfigJsonSchema } from '../../src/config/json-schema.ts';
import { renderConfigDocs } from '../../src/config/docs.ts';
import { buildConfig } from '../../src/config/load.ts';
import { testConfig } from '../helpers/herald.ts';

const root = new URL('../../../../', import.meta.url);
const schemaPath = new URL('docs/config.schema.json', root);
const hint = 'docs/config.schema.json is out of date with packages/server/src/config/schema.ts: run `npm run docs:config` and commit the result';

const ajv = new Ajv2020({ strict: true, allErrors: true });
addFormats.default(ajv);
const validate = ajv.compile(JSON.parse(readFileSync(schemaPath, 'utf8')) as object);

function schemaErrors(config: unknown): string {
  return validate(config) ? '' : ajv.errorsText(validate.errors);
}

function heraldAccepts(config: Record<string, unknown>): boolean {
  try {
    buildConfig(config, { env: {} });
    return true;
  } catch {
    return false;
  }
}

/** Every ```json block of a Markdown file. */
function jsonBlocks(file: string): unknown[] {
  const text = readFileSync(new URL(file, root), 'utf8');
  return [...text.matchAll(/```json\n([\s\S]*?)\n```/g)].map((m) => JSON.parse(m[1]!.replace('<hex sha256 of the key>', 'a'.repeat(64))) as unknown);
}

test('docs/config.schema.json equals renderConfigJsonSchema()', () => {
  const onDisk = readFileSync(schemaPath, 'utf8');
  const rendered = renderConfigJsonSchema();
  if (onDisk !== rendered) {
    const a = onDisk.split('\n');
    const b = rendered.split('\n');
    let line = 0;
    while (line < Math.max(a.length, b.length) && a[line] === b[line]) line++;
    assert.fail(`${hint}\n  first difference at line ${line + 1}:\n    docs/config.schema.json: ${a[line] ?? '<end of file>'}\n    schema renders:          ${b[line] ?? '<end of file>'}`);
  }
});

test('the emitted schema is a draft 2020-12 document with its id, title, descriptions and defaults', () => {
  const schema = JSON.parse(renderConfigJsonSchema()) as Record<string, any>;
  assert.equal(schema['$schema'], CONFIG_SCHEMA_DRAFT);
  assert.equal(schema['$id'], CONFIG_SCHEMA_ID);
  assert.equal(typeof schema['title'], 'string');
  assert.equal(schema['additionalProperties'], false);
  assert.equal(ajv.validateSchema(schema), true, ajv.errorsText(ajv.errors));
  // Every option has a description (sections a title); enums, not unions of constants.
  const walk = (node: Record<string, any>, path: string): void => {
    for (const [key, child] of Object.entries((node['properties'] ?? {}) as Record<string, Record<string, any>>)) {
      const at = `${path}/${key}`;
      assert.ok(typeof child['description'] === 'string' || typeof child['title'] === 'string', `${at} has a description or a title`);
      assert.ok(!Object.keys(child).some((k) => k.startsWith('x-')), `${at} carries no x- annotation`);
      if (Array.isArray(child['anyOf'])) assert.ok(!child['anyOf'].every((m: Record<string, unknown>) => 'const' in m), `${at} is an enum`);
      walk(child, at);
      if (child['items'] !== undefined) walk(child['items'] as Record<string, any>, `${at}/items`);
    }
  };
  walk(schema, '');
  assert.deepEqual(schema['properties']['mode']['enum'], ['development', 'production']);
  assert.equal(schema['properties']['listen']['properties']['port']['default'], 8000);
  // Options with defaults are never required; a namespace needs its name, an API key its name, hash and scopes.
  assert.equal(schema['required'], undefined);
  assert.deepEqual(schema['properties']['channels']['properties']['namespaces']['items']['required'], ['name']);
  assert.deepEqual(schema['properties']['api']['properties']['keys']['items']['required'], ['name', 'sha256', 'scopes']);
});

test('the configs in the docs and the test servers\' production config are valid, for the schema and for Herald', () => {
  const configs: [string, unknown][] = [
    ...jsonBlocks('docs/config.md').map((c, i): [string, unknown] => [`docs/config.md example ${i + 1}`, c]),
    ...jsonBlocks('docs/operations.md').map((c, i): [string, unknown] => [`docs/operations.md example ${i + 1}`, c]),
    ['the test servers\' config', testConfig('s'.repeat(43), 'k'.repeat(32))],
    ['an empty file', {}],
    ['development mode', { mode: 'development', $schema: 'https://example.com/herald/config.schema.json' }],
    ['cluster workers auto', { cluster: { workers: 'auto' }, api: { keys: [{ name: 'a', sha256: 'b'.repeat(64), scopes: ['read'], notAfter: '2027-01-01T00:00:00Z' }] } }],
  ];
  assert.ok(configs.length >= 6);
  for (const [name, config] of configs) {
    assert.equal(schemaErrors(config), '', `${name}: the schema refuses it`);
    assert.ok(heraldAccepts(config as Record<string, unknown>), `${name}: Herald refuses it`);
  }
});

test('"$schema" is accepted at the top level only, as a string, by the schema and by Herald', () => {
  const good = { $schema: './node_modules/herald/config.schema.json', listen: { port: 8000 } };
  assert.equal(schemaErrors(good), '');
  assert.ok(heraldAccepts(good));
  assert.ok(renderConfigDocs().includes('`$schema`'), 'docs/config.md lists $schema');
  const bad: [string, Record<string, unknown>][] = [
    ['$schema in a section', { listen: { $schema: 'x' } }],
    ['$schema not a string', { $schema: 42 }],
    ['another $ key', { $comment: 'x' }],
    ['an unknown option', { listen: { prot: 8000 } }],
    ['an unknown section', { logging: {} }],
    ['a value outside its enum', { mode: 'staging' }],
    ['a port out of range', { listen: { port: 70000 } }],
    ['a namespace without a name', { channels: { namespaces: [{ presence: true }] } }],
    ['a namespace name that breaks the pattern', { channels: { namespaces: [{ name: 'Chat Room' }] } }],
    ['an API key scope that does not exist', { api: { keys: [{ name: 'a', sha256: 'b'.repeat(64), scopes: ['write'] }] } }],
    ['a notAfter that is not a date-time', { api: { keys: [{ name: 'a', sha256: 'b'.repeat(64), scopes: ['read'], notAfter: 'tomorrow' }] } }],
    ['workers neither a number nor "auto"', { cluster: { workers: 'all' } }],
  ];
  for (const [name, config] of bad) {
    assert.notEqual(schemaErrors(config), '', `${name}: the schema accepts it`);
    assert.equal(heraldAccepts(config), false, `${name}: Herald accepts it`);
  }
});

test('the herald package ships the schema as herald/config.schema.json', () => {
  const manifest = JSON.parse(readFileSync(new URL('packages/server/package.json', root), 'utf8')) as { files: string[]; exports: Record<string, unknown> };
  assert.ok(manifest.files.includes('config.schema.json'), 'packages/server/package.json "files" lists config.schema.json');
  assert.equal(manifest.exports['./config.schema.json'], './config.schema.json');
  const built = new URL('packages/server/config.schema.json', root);
  // scripts/build.ts writes it (npm ci, npm run build); a stale one means the build is older than the schema.
  assert.ok(existsSync(built), 'packages/server/config.schema.json is missing: run `npm run build`');
  assert.equal(readFileSync(built, 'utf8'), renderConfigJsonSchema(), 'packages/server/config.schema.json is stale: run `npm run build`');
});
