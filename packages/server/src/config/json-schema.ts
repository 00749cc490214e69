/**
 * The config file's JSON Schema (draft 2020-12), emitted from the one config
 * schema for editors (a config file may name it in `"$schema"`) and other
 * tools. `npm run docs:config` writes it to docs/config.schema.json, the
 * build writes it into the `herald` package (`herald/config.schema.json`),
 * and a unit test fails when the committed file drifts.
 *
 * TypeBox schemas are JSON Schema already; the emitted document differs in
 * what a file (rather than the validated config) needs: an option with a
 * default is never `required`, a union of constants is an `enum`, and
 * Herald's own annotations (`x-…`) are left out.
 */
import type { TSchema } from '@sinclair/typebox';
import { ConfigSchema } from './schema.ts';

export const CONFIG_SCHEMA_DRAFT = 'https://json-schema.org/draft/2020-12/schema';
/** The document's identifier (a name, not an address: editors load the schema from the path or URL a config file gives). */
export const CONFIG_SCHEMA_ID = 'urn:herald:config';

type JsonObject = { [key: string]: unknown };

/** Keys written first, in this order, so that each option reads title, description, type. */
const leading = ['title', 'description', 'type', 'enum', 'const'];

function clean(schema: TSchema): JsonObject {
  const source: JsonObject = { ...schema };
  const members = source['anyOf'] as TSchema[] | undefined;
  if (members !== undefined) {
    const type = members[0]?.['type'] as unknown;
    if (members.every((m) => m['const'] !== undefined && m['type'] === type)) {
      delete source['anyOf'];
      source['type'] = type;
      source['enum'] = members.map((m) => m['const'] as unknown);
    } else {
      source['anyOf'] = members.map(clean);
    }
  }
  const properties = source['properties'] as Record<string, TSchema> | undefined;
  if (properties !== undefined) {
    source['properties'] = Object.fromEntries(Object.entries(properties).map(([key, child]) => [key, clean(child)]));
    // A file may leave out whatever has a default; only the rest is required.
    const required = ((source['required'] as string[] | undefined) ?? []).filter((key) => properties[key]?.['default'] === undefined);
    if (required.length > 0) source['required'] = required;
    else delete source['required'];
  }
  if (source['items'] !== undefined) source['items'] = clean(source['items'] as TSchema);
  const out: JsonObject = {};
  for (const key of [...leading, ...Object.keys(source)]) {
    if (key.startsWith('x-') || out[key] !== undefined || source[key] === undefined) continue;
    out[key] = source[key];
  }
  return out;
}

/** The JSON Schema of a Herald config file, as an object. */
export function configJsonSchema(): JsonObject {
  const { title, ...root } = clean(ConfigSchema);
  return {
    $schema: CONFIG_SCHEMA_DRAFT,
    $id: CONFIG_SCHEMA_ID,
    title,
    description:
      'A Herald config file (`herald serve --config FILE`). Environment variables and flags override it; every option, with the variables, is in docs/config.md. Durations are milliseconds, sizes bytes.',
    ...root,
  };
}

/** docs/config.schema.json: the schema as formatted JSON with a final newline. */
export function renderConfigJsonSchema(): string {
  return JSON.stringify(configJsonSchema(), null, 2) + '\n';
}
