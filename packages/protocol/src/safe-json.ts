/**
 * JSON from outside, read one way everywhere (WebSocket commands, HTTP
 * bodies, the config file, the key store, JWT claims):
 *
 * - nesting depth at most `maxDepth`, checked on the text before parsing by
 *   a linear scan without recursion, so hostile input never reaches code that
 *   recurses (JSON.stringify, schema checks) and cannot exhaust the stack;
 * - then secure-json-parse, which refuses prototype-poisoning keys: an own
 *   `__proto__` key, or a `constructor` key holding an object with a
 *   `prototype` key, at any depth.
 *
 * `findPoisonedKey` is the one guard for values parsed elsewhere (JWT claims,
 * config objects). No Node APIs: the client SDK shares this package.
 */
import secureJson from 'secure-json-parse';

/** `limits.maxJsonDepth` by default; also the bound for the config file and the key store. */
export const DEFAULT_MAX_JSON_DEPTH = 64;

export type JsonReadError =
  /** Not JSON. */
  | 'invalid_json'
  /** JSON with a `__proto__` or `constructor.prototype` key. */
  | 'poisoned'
  /** Arrays and objects nested deeper than allowed. */
  | 'too_deep';

export type JsonReadResult = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: JsonReadError };

const scanOptions = { protoAction: 'error', constructorAction: 'error' } as const;

/**
 * True when arrays and objects in `text` nest deeper than `maxDepth`
 * (`1` and `"x"` have depth 0, `[]` and `{}` depth 1, `{"a":[1]}` depth 2).
 * Brackets inside strings do not count. Linear, no recursion, stops at the
 * first level too deep. Meant for text about to be parsed: on text that is
 * not JSON the answer means nothing.
 */
export function jsonDepthExceeds(text: string, maxDepth: number): boolean {
  // Each level needs one character: short text cannot be too deep.
  if (text.length <= maxDepth) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (inString) {
      if (unit === 0x5c) i++; // backslash: skip the escaped character
      else if (unit === 0x22) inString = false;
    } else if (unit === 0x22) inString = true;
    else if (unit === 0x5b || unit === 0x7b) {
      if (++depth > maxDepth) return true;
    } else if (unit === 0x5d || unit === 0x7d) depth--;
  }
  return false;
}

/** Parses untrusted JSON text: depth first, then secure-json-parse. Never throws. */
export function readJson(text: string, maxDepth: number): JsonReadResult {
  if (jsonDepthExceeds(text, maxDepth)) return { ok: false, error: 'too_deep' };
  try {
    // Scans the parsed value only when the text mentions a suspect key.
    return { ok: true, value: secureJson.parse(text, undefined, scanOptions) };
  } catch {
    // Failure paths only: tell a poisoning key from text that is not JSON.
    try {
      JSON.parse(text);
      return { ok: false, error: 'poisoned' };
    } catch {
      return { ok: false, error: 'invalid_json' };
    }
  }
}

/** Parses untrusted JSON text with the default depth; `undefined` on any failure. */
export function parseJsonSafely(text: string, maxDepth: number = DEFAULT_MAX_JSON_DEPTH): unknown {
  const result = readJson(text, maxDepth);
  return result.ok ? result.value : undefined;
}

/**
 * The prototype-poisoning guard, for every value Herald reads from outside.
 * Returns where the first poisoning key is, or `undefined` when there is none.
 *
 * By default the rules are secure-json-parse's (its `scan`): an own
 * `__proto__` key, or `constructor` holding an object with `prototype`.
 * Data (publications, JWT `info`) may use the words as plain keys.
 *
 * `strict` also refuses any key named `constructor` or `prototype`, and names
 * its path: for the config, which holds no free-form data, so such a key can
 * only be a mistake or an attack, and is refused before anything copies or
 * defaults the object. Iterative: any depth is safe.
 */
export function findPoisonedKey(value: unknown, options: { readonly strict?: boolean } = {}): string | undefined {
  if (options.strict !== true) {
    try {
      if (typeof value === 'object' && value !== null) secureJson.scan(value, scanOptions);
      return undefined;
    } catch {
      return 'a __proto__ or constructor.prototype key';
    }
  }
  const stack: [unknown, string][] = [[value, '']];
  while (stack.length > 0) {
    const [node, path] = stack.pop()!;
    if (typeof node !== 'object' || node === null) continue;
    for (const key of Object.keys(node)) {
      if (key === '__proto__' || key === 'constructor' || key === 'prototype') return `${path}/${key}`;
      stack.push([(node as Record<string, unknown>)[key], `${path}/${key}`]);
    }
  }
  return undefined;
}
