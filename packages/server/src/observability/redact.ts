/**
 * What the logger does to everything it writes, so that no secret reaches a
 * log line (docs/security.md, "Process hygiene"):
 *
 * - a value under a secret-looking key (token, secret, password, API key,
 *   authorization, cookie, session, private key…) is replaced, at any depth;
 * - every string loses credentials: URL user:password@, token-like query
 *   and form parameters, `Bearer`/`Basic` credentials, JWTs;
 * - errors become type, code and message (redacted), never a stack or their
 *   other properties (an HTTP client's error carries request headers);
 * - the walk is bounded (depth, keys, items, nodes, string length) and
 *   survives cycles, so a huge or hostile object costs little and logs small.
 *
 * Logging is off the delivery path (errors, warnings, lifecycle); a `debug`
 * call below the configured level never reaches this code.
 */

const REDACTED = '[redacted]';
const MAX_DEPTH = 8;
const MAX_ENTRIES = 64;
const MAX_NODES = 1000;
const MAX_STRING = 4096;
const MAX_CAUSES = 3;

/** Keys (lower case, without `-` and `_`) whose values are secret whatever they hold. */
const secretKeys = new Set([
  'authorization',
  'proxyauthorization',
  'cookie',
  'setcookie',
  'session',
  'heraldsession',
  'credential',
  'credentials',
  'jwt',
  'passphrase',
]);
/** …and keys ending like these (`subscriptionToken`, `client_secret`, `hmacSecret`, `x-api-key`). */
const secretSuffixes = ['token', 'tokens', 'secret', 'secrets', 'password', 'passwords', 'passwd', 'apikey', 'apikeys', 'privatekey', 'privatekeys'];

/** Log objects use few distinct keys: their verdicts are remembered (bounded). */
const keyVerdicts = new Map<string, boolean>();

export function isSecretKey(key: string): boolean {
  let secret = keyVerdicts.get(key);
  if (secret === undefined) {
    const normalized = key.toLowerCase().replace(/[-_]/g, '');
    secret = secretKeys.has(normalized) || secretSuffixes.some((suffix) => normalized.endsWith(suffix));
    if (keyVerdicts.size < 1000 && key.length <= 64) keyVerdicts.set(key, secret);
  }
  return secret;
}

/** Quick test: text without any of these characters or words carries nothing to redact. */
const suspect = /[@=]|bearer|basic|token|eyJ/i;
/** `scheme://user:password@` or `scheme://credential@`. */
const urlCredentials = /\b([a-z][a-z0-9+.-]*:\/\/)([^\s/?#@]*)@/gi;
/** `token=…`, `api_key=…`, `password=…` in a query string, a form or free text. */
const secretParameter =
  /(?<![A-Za-z0-9_-])((?:access_|refresh_|id_)?token|api[_-]?key|apikey|key|session|secret|client_secret|password|passwd|pwd|auth|sig|signature|jwt)=([^&#\s"',;]*)/gi;
/** Credentials of an `Authorization` header value. */
const authScheme = /\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]+/gi;
/** A JWT (or its first two parts). */
const jwt = /\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)?/g;

/** Removes credentials from free text and URLs (user:password@, token parameters, bearer credentials, JWTs). */
export function redactText(text: string): string {
  const bounded = text.length > MAX_STRING ? text.slice(0, MAX_STRING) + '…' : text;
  if (!suspect.test(bounded)) return bounded;
  return bounded
    .replace(urlCredentials, (_match, scheme: string, userinfo: string) => {
      const colon = userinfo.indexOf(':');
      return scheme + (colon === -1 ? REDACTED : userinfo.slice(0, colon) + ':' + REDACTED) + '@';
    })
    .replace(secretParameter, (_match, name: string) => name + '=' + REDACTED)
    .replace(authScheme, (_match, scheme: string) => scheme + ' ' + REDACTED)
    .replace(jwt, REDACTED);
}

/** Removes credentials from a URL before it is logged or shown. */
export function redactUrl(url: string): string {
  return redactText(url);
}

/** Errors are logged by type, code and message (redacted), with their causes: never a stack trace. */
export function serializeError(error: unknown, causes = MAX_CAUSES): Record<string, unknown> {
  if (!(error instanceof Error)) return { message: redactText(String(error).slice(0, 200)) };
  const code = (error as { code?: unknown }).code;
  const out: Record<string, unknown> = { type: error.name, message: redactText(error.message.slice(0, 500)) };
  if (typeof code === 'string' || typeof code === 'number') out['code'] = code;
  if (error.cause !== undefined && causes > 0) out['cause'] = serializeError(error.cause, causes - 1);
  return out;
}

/** A redacted, bounded copy of a log object's fields (for pino's `formatters.log` and `formatters.bindings`). */
export function redactFields(object: Record<string, unknown>): Record<string, unknown> {
  const budget = { nodes: MAX_NODES };
  return redactObject(object, 0, budget, new Set());
}

function redactValue(value: unknown, depth: number, budget: { nodes: number }, ancestors: Set<object>): unknown {
  if (typeof value === 'string') return redactText(value);
  if (typeof value !== 'object' || value === null) return typeof value === 'function' || typeof value === 'symbol' ? undefined : value;
  if (value instanceof Error) return serializeError(value);
  if (depth >= MAX_DEPTH || --budget.nodes < 0) return '[truncated]';
  if (ancestors.has(value)) return '[circular]';
  if (value instanceof Date) return value;
  ancestors.add(value);
  try {
    if (Array.isArray(value)) {
      const items = value.slice(0, MAX_ENTRIES).map((item) => redactValue(item, depth + 1, budget, ancestors));
      if (value.length > MAX_ENTRIES) items.push(`[${value.length - MAX_ENTRIES} more]`);
      return items;
    }
    if (ArrayBuffer.isView(value)) return `[${value.byteLength} bytes]`;
    return redactObject(value as Record<string, unknown>, depth, budget, ancestors);
  } finally {
    ancestors.delete(value);
  }
}

function redactObject(object: Record<string, unknown>, depth: number, budget: { nodes: number }, ancestors: Set<object>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  let count = 0;
  for (const key in object) {
    if (!Object.hasOwn(object, key)) continue;
    if (++count > MAX_ENTRIES) {
      out['…'] = 'more keys';
      break;
    }
    const value = object[key];
    const copy = isSecretKey(key) && value !== undefined && value !== null ? REDACTED : redactValue(value, depth + 1, budget, ancestors);
    // An own `__proto__` key (from JSON.parse) stays a key instead of setting the prototype.
    if (key === '__proto__') Object.defineProperty(out, key, { value: copy, enumerable: true, writable: true, configurable: true });
    else out[key] = copy;
  }
  return out;
}
