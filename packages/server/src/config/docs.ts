/**
 * Renders docs/config.md from the schema, so the page cannot drift:
 * `npm run docs:config` writes it and a unit test compares.
 */
import type { TSchema } from '@sinclair/typebox';
import { ConfigSchema, NamespaceOptions } from './schema.ts';
import { environmentVariables } from './load.ts';

interface Row {
  readonly path: string;
  readonly type: string;
  readonly def: string;
  readonly description: string;
}

function typeOf(schema: TSchema): string {
  if (schema['anyOf']) return (schema['anyOf'] as TSchema[]).map((s) => (s['const'] === undefined ? typeOf(s) : JSON.stringify(s['const']))).join(' \\| ');
  if (schema['type'] === 'array') return `${typeOf(schema['items'] as TSchema)}[]`;
  if (schema['type'] === 'object') return 'object';
  return String(schema['type']);
}

function rows(schema: TSchema, prefix: string, out: Row[]): void {
  const properties = schema['properties'] as Record<string, TSchema> | undefined;
  if (!properties) return;
  for (const [key, child] of Object.entries(properties)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (child['type'] === 'object' && child['properties'] && !child['description']) {
      rows(child, path, out);
      continue;
    }
    const def = child['default'];
    out.push({
      path,
      type: typeOf(child),
      def: def === undefined ? '—' : '`' + JSON.stringify(def) + '`',
      description: String(child['description'] ?? ''),
    });
    if (child['type'] === 'object' && child['properties']) rows(child, path, out);
  }
}

export function renderConfigDocs(): string {
  const out: Row[] = [];
  rows(ConfigSchema, '', out);
  const nsRows: Row[] = [];
  rows(NamespaceOptions, '', nsRows);
  const table = (list: Row[]) =>
    ['| option | type | default | description |', '|---|---|---|---|', ...list.map((r) => `| \`${r.path}\` | ${r.type} | ${r.def} | ${r.description} |`)].join('\n');
  return [
    '# Configuration',
    '',
    '<!-- Generated from packages/server/src/config/schema.ts by `npm run docs:config`; a test fails when this page drifts. -->',
    '',
    'Herald reads one JSON file (`--config FILE` or `HERALD_CONFIG`), then environment variables, then flags;',
    'later sources win. Without a config file Herald runs in **development mode**: it generates a token secret',
    'and an API key into `stateDir` and says so loudly. A config file means production mode unless it sets',
    '`"mode": "development"`; production mode refuses to start without a token secret or key and without an API key,',
    'and takes secrets only from files or the environment, never written in the config file itself.',
    '`herald check-config --config FILE` runs every check `herald serve` runs (the file, the environment, secret and',
    'TLS files, API keys, production rules) without starting, and prints every problem with its fix.',
    '',
    'Durations are milliseconds, sizes bytes.',
    '',
    '**JSON Schema.** The same schema as a JSON Schema (draft 2020-12) is [config.schema.json](config.schema.json),',
    'and the `herald` package installs it as `node_modules/herald/config.schema.json` (`herald config-docs --json-schema`',
    'prints it). Name it in the file\'s `"$schema"` key and editors that read JSON Schema (VS Code, JetBrains IDEs, any',
    'editor with a JSON language server) complete and check every option as you type:',
    '',
    '```json',
    '{ "$schema": "./node_modules/herald/config.schema.json", "listen": { "port": 8000 } }',
    '```',
    '',
    '`"$schema"` takes a path relative to the config file or a URL; Herald ignores its value. It is the only key',
    'allowed besides the options below, and only at the top level.',
    '',
    '## Options',
    '',
    table(out),
    '',
    '## Namespace options',
    '',
    'Each entry of `channels.namespaces` has a `name` and any of these; unset ones inherit `channels.defaults`.',
    '',
    table(nsRows),
    '',
    '## Environment variables',
    '',
    '| variable | meaning |',
    '|---|---|',
    ...Object.entries(environmentVariables).map(([name, text]) => `| \`${name}\` | ${text} |`),
    '',
    '## Example',
    '',
    '```json',
    JSON.stringify(
      {
        listen: { host: '0.0.0.0', port: 8000 },
        auth: { algorithms: ['HS256'], hmacSecretFile: '/run/secrets/herald-hmac', audience: 'my-app' },
        api: { keys: [{ name: 'backend', sha256: '<hex sha256 of the key>', scopes: ['publish', 'read'] }] },
        channels: {
          defaults: { historySize: 300, historyTtlMs: 120000 },
          namespaces: [{ name: 'chat', presence: true, joinLeave: true, clientPublish: true }],
        },
      },
      null,
      2,
    ),
    '```',
    '',
  ].join('\n');
}
