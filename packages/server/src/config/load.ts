/**
 * Builds the validated, deep-frozen Config from a file, the environment and
 * flags (later wins). Only the CLI calls this; everything below the
 * composition root receives the frozen object.
 *
 * Validation reports every problem it finds, each with the config path (or
 * the variable or flag that set the value) and, where there is one, the fix.
 * A problem never quotes a secret's value.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { TSchema } from '@sinclair/typebox';
import { Value, ValueErrorType } from '@sinclair/typebox/value';
import { DEFAULT_MAX_JSON_DEPTH, findPoisonedKey, jsonDepthExceeds, parseJsonSafely } from '@herald/protocol/json';
import { findJsonSyntaxError } from './json-syntax.ts';
import { ConfigSchema, MIN_SECRET_CHARS, type Config, type NamespaceEntry } from './schema.ts';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('invalid configuration:\n  - ' + problems.join('\n  - '));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** Flag overrides already parsed by the CLI. */
export type ConfigOverrides = Readonly<Partial<{ host: string; port: number; adminPort: number; logLevel: string; engine: string; redisUrl: string; redisCluster: string }>>;

export interface ConfigSources {
  /**
   * Path of the JSON config file. `loadConfig` reads it (absent means
   * development mode); `buildConfig` takes it as where `raw` came from, so
   * that a secret written in the file can be told from one in the
   * environment.
   */
  readonly file?: string | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly overrides?: ConfigOverrides;
}

/** Environment variables read at start-up; documented in docs/config.md. */
export const environmentVariables = {
  HERALD_CONFIG: 'Path of the JSON config file (same as --config).',
  HERALD_HOST: 'Overrides listen.host (same as --host).',
  HERALD_PORT: 'Overrides listen.port (same as --port).',
  HERALD_ADMIN_PORT: 'Overrides admin.port, the internal listener (same as --admin-port).',
  HERALD_LOG_LEVEL: 'Overrides log.level.',
  HERALD_AUTH_HMAC_SECRET: `HS256 token secret, at least ${MIN_SECRET_CHARS} characters (instead of auth.hmacSecretFile).`,
  HERALD_API_KEY: `One extra admin API key (named "env"), at least ${MIN_SECRET_CHARS} characters, given in plain text and hashed at start-up.`,
  HERALD_REDIS_URL: 'Overrides engine.redisUrl (keeps a Redis password out of the config file).',
  HERALD_REDIS_CLUSTER: 'Overrides engine.redisCluster: seed node URLs of a Redis Cluster, comma-separated (keeps a password out of the config file).',
  HERALD_ENGINE: 'Overrides engine.type (memory, sqlite or redis).',
  HERALD_APP_ID: 'With HERALD_APP_KEY and HERALD_APP_SECRET: adds one app to apps.list (the Pusher endpoint; docs/pusher.md). Its secret stays in the environment.',
  HERALD_APP_KEY: 'The key of the app HERALD_APP_ID adds (pusher-js\'s first argument).',
  HERALD_APP_SECRET: 'The secret of the app HERALD_APP_ID adds.',
  HERALD_APP_ENABLED: 'true or false (or 1 or 0): the enabled switch of the app HERALD_APP_ID adds (as SOKETI_DEFAULT_APP_ENABLED; default true).',
  HERALD_APP_CLIENT_EVENTS: 'true or false (or 1 or 0): client-* events on the app HERALD_APP_ID adds (its clientEvents; as SOKETI_DEFAULT_APP_ENABLE_CLIENT_MESSAGES; default false).',
  HERALD_APP_USER_AUTHENTICATION: 'true or false (or 1 or 0): pusher:signin on the app HERALD_APP_ID adds (its userAuthentication; as SOKETI_DEFAULT_APP_ENABLE_USER_AUTHENTICATION; default true).',
  HERALD_APP_SUBSCRIPTION_COUNT: 'true or false (or 1 or 0): subscription counting on the app HERALD_APP_ID adds (its subscriptionCount; default false).',
  HERALD_APP_MAX_CONNECTIONS: 'Its limits.maxConnections, 0 for no cap of its own (as SOKETI_DEFAULT_APP_MAX_CONNECTIONS, whose -1 is 0 here).',
  HERALD_APP_CLIENT_EVENTS_PER_SECOND: 'Its limits.clientEventsPerSecond, 1 to 10000 (as SOKETI_DEFAULT_APP_MAX_CLIENT_EVENTS_PER_SECOND).',
  HERALD_APP_WEBHOOK_URL: 'With HERALD_APP_WEBHOOK_EVENTS: one webhook of the app HERALD_APP_ID adds, POSTed to this http(s) URL.',
  HERALD_APP_WEBHOOK_EVENTS: 'The events of that webhook, comma-separated (channel_occupied, channel_vacated, member_added, member_removed, client_event, cache_miss, subscription_count).',
} as const;

/** The switches of the app HERALD_APP_ID adds: variable, the field of its apps.list entry, and how the value reads. */
const APP_ENV_SWITCHES = [
  ['HERALD_APP_ENABLED', 'enabled', 'boolean'],
  ['HERALD_APP_CLIENT_EVENTS', 'clientEvents', 'boolean'],
  ['HERALD_APP_USER_AUTHENTICATION', 'userAuthentication', 'boolean'],
  ['HERALD_APP_SUBSCRIPTION_COUNT', 'subscriptionCount', 'boolean'],
  ['HERALD_APP_MAX_CONNECTIONS', 'limits/maxConnections', 'integer'],
  ['HERALD_APP_CLIENT_EVENTS_PER_SECOND', 'limits/clientEventsPerSecond', 'integer'],
] as const;
const APP_ENV_WEBHOOK = ['HERALD_APP_WEBHOOK_URL', 'HERALD_APP_WEBHOOK_EVENTS'] as const;

/** The command that makes a random secret, named in messages. */
export const GENERATE_SECRET = 'openssl rand -base64 32';

export function loadConfig(sources: ConfigSources): Config {
  const file = sources.file ?? sources.env['HERALD_CONFIG'];
  if (file === undefined || file === '') return buildConfig({ mode: 'development' }, { ...sources, file: undefined });
  return buildConfig(readConfigFile(file), { ...sources, file });
}

/** Reads a JSON config file as an untrusted object (no `__proto__`/`constructor` keys). */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError([`cannot read config file ${file}: ${code}${code === 'ENOENT' ? ' (no such file; check the path given to --config or HERALD_CONFIG)' : ''}`]);
  }
  if (jsonDepthExceeds(text, DEFAULT_MAX_JSON_DEPTH)) {
    throw new ConfigError([`config file ${file} nests arrays and objects deeper than ${DEFAULT_MAX_JSON_DEPTH} levels`]);
  }
  const parsed = parseJsonSafely(text);
  if (parsed === undefined) {
    const syntax = findJsonSyntaxError(text);
    if (syntax !== undefined) throw new ConfigError([`${file}:${syntax.line}:${syntax.column}: not valid JSON: ${syntax.expected}`]);
    const poisoned = findPoisonedKey(JSON.parse(text) as unknown, { strict: true });
    throw new ConfigError([`${file}: ${poisoned ?? 'a key'}: __proto__ and constructor keys are not allowed`]);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError([`${file}: the config must be a JSON object ({ … }), not ${Array.isArray(parsed) ? 'an array' : parsed === null ? 'null' : typeof parsed}`]);
  }
  return parsed as Record<string, unknown>;
}

/** A config with its defaults, and every problem found in it. */
export interface ValidatedConfig {
  /** Defaults filled in; its values can be trusted only outside `invalidSections`. */
  readonly config: Config;
  readonly problems: readonly string[];
  /**
   * Top-level sections ("auth", "listen", …) with a problem; checks that
   * read one of them are skipped rather than misled. "*" means all.
   */
  readonly invalidSections: ReadonlySet<string>;
}

/** Applies env and flag overrides to a raw object, then validates it; throws a ConfigError listing every problem. */
export function buildConfig(raw: Record<string, unknown>, sources: ConfigSources): Config {
  const validated = validateConfig(raw, sources);
  if (validated.problems.length > 0) throw new ConfigError(validated.problems);
  return deepFreeze(validated.config);
}

const MAX_PROBLEMS = 50;

/** Like buildConfig, but answers the problems instead of throwing (`herald check-config` reports them all). */
export function validateConfig(raw: Record<string, unknown>, sources: ConfigSources): ValidatedConfig {
  const problems: string[] = [];
  const invalidSections = new Set<string>();
  const problem = (section: string, text: string) => {
    invalidSections.add(section);
    if (problems.length < MAX_PROBLEMS && !problems.includes(text)) problems.push(text);
  };
  const poisoned = findPoisonedKey(raw, { strict: true });
  if (poisoned !== undefined) {
    problem('*', `${poisoned}: __proto__, constructor and prototype keys are not allowed`);
    return { config: Value.Default(ConfigSchema, {}) as Config, problems, invalidSections };
  }
  const value = structuredClone(raw) as Record<string, Record<string, unknown>>;
  const section = (name: string): Record<string, unknown> => {
    const existing = value[name];
    if (typeof existing === 'object' && existing !== null && !Array.isArray(existing)) return existing;
    const created: Record<string, unknown> = {};
    value[name] = created;
    return created;
  };
  /** Config path → the variable or flag that set it, for messages. */
  const origins = new Map<string, string>();
  const set = (path: string, next: unknown, origin: string) => {
    const [name, key] = path.slice(1).split('/') as [string, string];
    section(name)[key] = next;
    origins.set(path, origin);
  };
  const env = sources.env;
  const port = (text: string, origin: string, path: string) => {
    const number = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
    if (Number.isInteger(number)) set(path, number, origin);
    else problem(path.split('/')[1]!, `${origin} must be a decimal port number from 0 to 65535`);
  };
  if (env['HERALD_HOST']) set('/listen/host', env['HERALD_HOST'], 'HERALD_HOST');
  if (env['HERALD_PORT']) port(env['HERALD_PORT'], 'HERALD_PORT', '/listen/port');
  if (env['HERALD_ADMIN_PORT']) port(env['HERALD_ADMIN_PORT'], 'HERALD_ADMIN_PORT', '/admin/port');
  if (env['HERALD_LOG_LEVEL']) set('/log/level', env['HERALD_LOG_LEVEL'], 'HERALD_LOG_LEVEL');
  if (env['HERALD_REDIS_URL']) set('/engine/redisUrl', env['HERALD_REDIS_URL'], 'HERALD_REDIS_URL');
  if (env['HERALD_REDIS_CLUSTER']) set('/engine/redisCluster', splitList(env['HERALD_REDIS_CLUSTER']), 'HERALD_REDIS_CLUSTER');
  if (env['HERALD_ENGINE']) set('/engine/type', env['HERALD_ENGINE'], 'HERALD_ENGINE');
  if (env['HERALD_AUTH_HMAC_SECRET']) set('/auth/hmacSecret', env['HERALD_AUTH_HMAC_SECRET'], 'HERALD_AUTH_HMAC_SECRET');
  const appEnv = ['HERALD_APP_ID', 'HERALD_APP_KEY', 'HERALD_APP_SECRET'].filter((name) => env[name]);
  if (appEnv.length > 0 && appEnv.length < 3) {
    problem('apps', `HERALD_APP_ID, HERALD_APP_KEY and HERALD_APP_SECRET go together (set: ${appEnv.join(', ')})`);
  } else if (appEnv.length === 3) {
    const apps = section('apps');
    const list = Array.isArray(apps['list']) ? [...(apps['list'] as unknown[])] : apps['list'] === undefined ? [] : undefined;
    if (list !== undefined) {
      // The secret stays in the environment: the app names the variable.
      const entry: Record<string, unknown> = { id: env['HERALD_APP_ID'], key: env['HERALD_APP_KEY'], secretEnv: 'HERALD_APP_SECRET', name: 'environment' };
      envAppSwitches(entry, `/apps/list/${list.length}`, env, problem, origins);
      list.push(entry);
      apps['list'] = list;
    }
  } else {
    const orphans = [...APP_ENV_SWITCHES.map(([name]) => name), ...APP_ENV_WEBHOOK].filter((name) => env[name]);
    if (orphans.length > 0) problem('apps', `${orphans.join(', ')}: ${orphans.length === 1 ? 'it sets' : 'they set'} the app of HERALD_APP_ID, HERALD_APP_KEY and HERALD_APP_SECRET, which are not set`);
  }
  const envKey = env['HERALD_API_KEY'];
  if (envKey) {
    // Checked here, where the plain key still exists; only its hash goes on.
    if (envKey.length < MIN_SECRET_CHARS) {
      problem('api', `HERALD_API_KEY: too short; an API key needs at least ${MIN_SECRET_CHARS} random characters (generate one: \`${GENERATE_SECRET}\`)`);
    } else {
      const api = section('api');
      const keys = Array.isArray(api['keys']) ? [...(api['keys'] as unknown[])] : api['keys'] === undefined ? [] : undefined;
      if (keys !== undefined) {
        keys.push({ name: 'env', sha256: createHash('sha256').update(envKey).digest('hex'), scopes: ['admin'] });
        api['keys'] = keys;
      }
    }
  }
  const flags = sources.overrides ?? {};
  if (flags.host !== undefined) set('/listen/host', flags.host, '--host');
  if (flags.port !== undefined) set('/listen/port', flags.port, '--port');
  if (flags.adminPort !== undefined) set('/admin/port', flags.adminPort, '--admin-port');
  if (flags.logLevel !== undefined) set('/log/level', flags.logLevel, '--log-level');
  if (flags.engine !== undefined) set('/engine/type', flags.engine, '--engine');
  if (flags.redisUrl !== undefined) set('/engine/redisUrl', flags.redisUrl, '--redis-url');
  if (flags.redisCluster !== undefined) set('/engine/redisCluster', splitList(flags.redisCluster), '--redis-cluster');

  const config = Value.Default(ConfigSchema, Value.Clone(value)) as Config;
  for (const error of Value.Errors(ConfigSchema, config)) {
    const path = error.path || '/';
    const unknownKey = error.type === ValueErrorType.ObjectAdditionalProperties;
    problem(path === '/' ? '*' : path.split('/')[1]!, describeError(path, error.schema, error.value, origins.get(path), unknownKey));
  }
  const valid = (...sections: string[]) => !invalidSections.has('*') && sections.every((s) => !invalidSections.has(s));
  for (const [sectionName, text] of crossFieldProblems(config, valid)) problem(sectionName, text);

  // Secrets come from files or the environment in production, never from the config file itself.
  const fileAuth = raw['auth'];
  if (
    sources.file !== undefined &&
    valid('mode') &&
    config.mode === 'production' &&
    typeof fileAuth === 'object' &&
    fileAuth !== null &&
    (fileAuth as Record<string, unknown>)['hmacSecret'] !== undefined
  ) {
    problem(
      'auth',
      `/auth/hmacSecret: production mode does not take a secret written in the config file (${sources.file}); ` +
        'put it in a file named by auth.hmacSecretFile (readable only by Herald\'s user) or in the environment variable HERALD_AUTH_HMAC_SECRET, ' +
        'and remove it from the config file',
    );
  }
  return { config, problems, invalidSections };
}

/** `a, b,c` → ['a', 'b', 'c'] (a list given in one environment variable or flag). */
/**
 * Reads the HERALD_APP_* switches into the env app's apps.list entry at
 * `at`, strictly: a boolean is `true`, `false`, `1` or `0`, a number is
 * decimal digits; anything else is a problem naming the variable. Ranges
 * and the webhook's URL and events are the schema's to check; `origins`
 * makes its messages name the variable.
 */
function envAppSwitches(
  entry: Record<string, unknown>,
  at: string,
  env: Readonly<Record<string, string | undefined>>,
  problem: (section: string, text: string) => void,
  origins: Map<string, string>,
): void {
  const shown = (text: string) => JSON.stringify(text.length > 40 ? text.slice(0, 40) + '…' : text);
  for (const [name, field, kind] of APP_ENV_SWITCHES) {
    const text = env[name];
    if (!text) continue;
    let value: boolean | number;
    if (kind === 'boolean') {
      if (text === 'true' || text === '1') value = true;
      else if (text === 'false' || text === '0') value = false;
      else {
        problem('apps', `${name} must be true or false (or 1 or 0), not ${shown(text)}`);
        continue;
      }
    } else if (/^[0-9]{1,10}$/.test(text)) {
      value = Number(text);
    } else {
      const hint = text.trim() === '-1' && name === 'HERALD_APP_MAX_CONNECTIONS' ? ' (0 is no cap of its own: Soketi\'s -1)' : '';
      problem('apps', `${name} must be a whole number in decimal digits, not ${shown(text)}${hint}`);
      continue;
    }
    const [first, second] = field.split('/') as [string, string | undefined];
    if (second === undefined) entry[first] = value;
    else entry[first] = { ...(entry[first] as Record<string, unknown> | undefined), [second]: value };
    origins.set(`${at}/${field}`, name);
  }
  const [urlName, eventsName] = APP_ENV_WEBHOOK;
  const url = env[urlName];
  const events = env[eventsName];
  if (!url && !events) return;
  if (!url || !events) {
    problem('apps', `${urlName} and ${eventsName} go together (set: ${url ? urlName : eventsName})`);
    return;
  }
  const list = splitList(events);
  entry['webhooks'] = [{ url, events: list }];
  origins.set(`${at}/webhooks/0/url`, urlName);
  origins.set(`${at}/webhooks/0/events`, eventsName);
  list.forEach((_, i) => origins.set(`${at}/webhooks/0/events/${i}`, eventsName));
}

function splitList(text: string): string[] {
  return text
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

/** One schema error as a line that names the path, what is allowed, and what was found (never a secret). */
function describeError(path: string, schema: TSchema, value: unknown, origin: string | undefined, unknownKey: boolean): string {
  const from = origin === undefined ? '' : ` (set by ${origin})`;
  const secret = schema['x-secret'] === true;
  const got = secret ? '' : describeValue(value);
  if (unknownKey) {
    const key = path.slice(path.lastIndexOf('/') + 1);
    const near = nearest(key, Object.keys((schema['properties'] as Record<string, unknown> | undefined) ?? {}));
    return `${path}: unknown option${near === undefined ? '' : `; did you mean "${near}"?`} (every option is in docs/config.md)`;
  }
  const alternatives = schema['anyOf'] as TSchema[] | undefined;
  if (alternatives !== undefined) {
    const allowed = alternatives.map((s) => (s['const'] !== undefined ? JSON.stringify(s['const']) : describeType(s)));
    return `${path}: must be one of: ${allowed.join(', ')}${got}${from}`;
  }
  if (value === undefined) return `${path}: is required${from}`;
  if (secret && schema['minLength'] !== undefined && typeof value === 'string') {
    return `${path}: too short; at least ${String(schema['minLength'])} random characters (generate one: \`${GENERATE_SECRET}\`)${from}`;
  }
  return `${path}: ${lowerFirst(schemaMessage(schema, value))}${got}${from}`;
}

function describeType(schema: TSchema): string {
  if (schema['type'] === 'integer') {
    const min = schema['minimum'] as number | undefined;
    const max = schema['maximum'] as number | undefined;
    return min !== undefined && max !== undefined ? `an integer from ${min} to ${max}` : 'an integer';
  }
  return `a${schema['type'] === 'array' || schema['type'] === 'object' ? 'n' : ''} ${String(schema['type'])}`;
}

/** TypeBox's messages, in words that say what is expected. */
function schemaMessage(schema: TSchema, value: unknown): string {
  const type = schema['type'];
  if (type === 'integer' || type === 'number') {
    if (typeof value !== 'number' || (type === 'integer' && !Number.isInteger(value))) return `must be ${describeType(schema)}`;
    const min = schema['minimum'] as number | undefined;
    const max = schema['maximum'] as number | undefined;
    if (min !== undefined && value < min) return `must be at least ${min}`;
    if (max !== undefined && value > max) return `must be at most ${max}`;
  }
  if (type === 'string') {
    if (typeof value !== 'string') return 'must be a string';
    if (schema['minLength'] !== undefined && value.length < (schema['minLength'] as number)) return `must be at least ${String(schema['minLength'])} characters`;
    if (schema['maxLength'] !== undefined && value.length > (schema['maxLength'] as number)) return `must be at most ${String(schema['maxLength'])} characters`;
    if (schema['pattern'] !== undefined) {
      const description = schema['description'] as string | undefined;
      return `must match ${String(schema['pattern'])}${description === undefined ? '' : ` (${lowerFirst(description).replace(/\.$/, '')})`}`;
    }
    if (schema['format'] === 'date-time') return 'must be an ISO 8601 date-time such as 2027-01-01T00:00:00Z';
  }
  if (type === 'boolean' && typeof value !== 'boolean') return 'must be true or false';
  if (type === 'array') {
    if (!Array.isArray(value)) return 'must be an array';
    if (schema['minItems'] !== undefined && value.length < (schema['minItems'] as number)) return `must have at least ${String(schema['minItems'])} item(s)`;
    if (schema['uniqueItems'] === true) return 'must not repeat an item';
  }
  if (type === 'object') {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'must be an object';
    const required = (schema['required'] as string[] | undefined)?.filter((key) => !Object.hasOwn(value, key)) ?? [];
    if (required.length > 0) return `needs ${required.map((key) => `"${key}"`).join(', ')}`;
  }
  return 'is not valid';
}

function lowerFirst(text: string): string {
  return text.slice(0, 1).toLowerCase() + text.slice(1);
}

function describeValue(value: unknown): string {
  if (typeof value === 'object' || value === undefined) return '';
  const text = String(value);
  return ` (got ${text.length > 40 ? text.slice(0, 40) + '…' : text})`;
}

/** The known key within two edits of `key`, if one is. */
function nearest(key: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of known) {
    const d = editDistance(key.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3;
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length]!;
}

/** Whether the redis engine speaks TLS: a `rediss://` URL (the first seed of a Redis Cluster). */
export function redisOverTls(config: Config): boolean {
  const url = config.engine.redisCluster.length > 0 ? config.engine.redisCluster[0]! : config.engine.redisUrl;
  return /^rediss:\/\//i.test(url);
}

/** Rules across fields, each with its section; a rule whose sections failed the schema is skipped. */
function crossFieldProblems(config: Config, valid: (...sections: string[]) => boolean): [string, string][] {
  const problems: [string, string][] = [];
  if (valid('channels')) {
    const seen = new Set<string>();
    for (const ns of config.channels.namespaces) {
      if (seen.has(ns.name)) problems.push(['channels', `/channels/namespaces: namespace "${ns.name}" is defined twice; keep one entry`]);
      seen.add(ns.name);
    }
    if (valid('limits')) {
      // Conflation holds a connection's backlog below the point where it would be cut as slow.
      const queue = config.limits.outboundQueueBytes;
      const entries: [string, { enabled: boolean; lagBytes: number } | undefined][] = [
        ['/channels/defaults/conflation', config.channels.defaults.conflation],
        ...(config.channels.namespaces as readonly NamespaceEntry[]).map((ns, i): [string, { enabled: boolean; lagBytes: number } | undefined] => [
          `/channels/namespaces/${i}/conflation`,
          ns.conflation,
        ]),
      ];
      for (const [path, conflation] of entries) {
        if (conflation !== undefined && conflation.enabled && conflation.lagBytes >= queue) {
          problems.push(['channels', `${path}/lagBytes: must be below limits.outboundQueueBytes (${queue}), where a connection is cut as slow`]);
        }
      }
    }
  }
  if (valid('hooks') && config.hooks.javascript !== undefined) {
    const js = config.hooks.javascript;
    const proxied = new Set<string>((['connect', 'refresh', 'subscribe', 'publish', 'rpc'] as const).filter((event) => config.hooks[event] !== undefined));
    for (const ns of config.hooks.namespaces) for (const event of ['subscribe', 'publish', 'rpc'] as const) if (ns[event] !== undefined && ns[event] !== false) proxied.add(event);
    const scripted = new Set<string>([...js.events, ...js.namespaces.flatMap((ns) => ns.events)]);
    for (const event of scripted) {
      if (proxied.has(event)) problems.push(['hooks', `/hooks/javascript: the ${event} event has a proxy hook (hooks.${event} or a namespace's) and a JavaScript hook; an event is handled by one of them: remove it from one side`]);
    }
    const seen = new Set<string>();
    for (const ns of js.namespaces) {
      if (seen.has(ns.name)) problems.push(['hooks', `/hooks/javascript/namespaces: namespace "${ns.name}" is listed twice; keep one entry`]);
      seen.add(ns.name);
    }
    if (js.withoutToken && !js.events.includes('connect')) problems.push(['hooks', '/hooks/javascript/withoutToken: needs "connect" in hooks.javascript.events']);
  }
  if (valid('auth')) {
    const auth = config.auth;
    if (auth.hmacSecret !== undefined && auth.hmacSecretFile !== undefined) {
      problems.push(['auth', '/auth: set hmacSecret (or HERALD_AUTH_HMAC_SECRET) or hmacSecretFile, not both']);
    }
    if (auth.publicKey !== undefined && auth.publicKeyFile !== undefined) {
      problems.push(['auth', '/auth: set publicKey or publicKeyFile, not both']);
    }
  }
  if (valid('api')) {
    const names = new Set<string>();
    for (const key of config.api.keys) {
      if (names.has(key.name)) problems.push(['api', `/api/keys: key name "${key.name}" is used twice; give each key its own name`]);
      names.add(key.name);
    }
    for (const key of config.api.keys) {
      if (key.notAfter !== undefined && Number.isNaN(Date.parse(key.notAfter))) problems.push(['api', `/api/keys: notAfter of "${key.name}" is not a date`]);
    }
  }
  if (valid('tls') && (config.tls.certFile === undefined) !== (config.tls.keyFile === undefined)) {
    problems.push(['tls', '/tls: set both certFile and keyFile, or neither']);
  }
  if (valid('auth', 'cors') && config.auth.cookieName !== undefined && config.cors.origins.length === 0) {
    problems.push(['auth', '/auth/cookieName: cookie auth needs cors.origins (the origin allowlist guards it): add your app\'s origin there']);
  }
  if (valid('engine')) {
    const { caFile, certFile, keyFile, serverName } = config.engine.redisTls;
    const tlsSet = caFile !== undefined || certFile !== undefined || keyFile !== undefined || serverName !== undefined;
    if (tlsSet && !redisOverTls(config)) {
      problems.push(['engine', '/engine/redisTls: TLS options need a rediss:// engine.redisUrl (or first engine.redisCluster seed); redis:// is plain TCP: change the URL\'s scheme, or remove engine.redisTls']);
    }
    if ((certFile === undefined) !== (keyFile === undefined)) problems.push(['engine', '/engine/redisTls: set both certFile and keyFile (a client certificate), or neither']);
  }
  if (valid('engine') && config.engine.redisCluster.length > 0) {
    if (config.engine.type !== 'redis') problems.push(['engine', '/engine/redisCluster: seed nodes of a Redis Cluster are for the redis engine; set engine.type to "redis" (or remove them)']);
    config.engine.redisCluster.forEach((text, i) => {
      if (!URL.canParse(text) || new URL(text).hostname === '') problems.push(['engine', `/engine/redisCluster/${i}: not a URL like redis://host:port`]);
    });
  }
  if (valid('limits', 'engine') && config.limits.scope === 'cluster' && config.engine.type !== 'redis') {
    problems.push([
      'limits',
      `/limits/scope: "cluster" counts the limits in Redis, shared by every node: it needs engine.type "redis" (this config has "${config.engine.type}"); set limits.scope to "node" or use the redis engine`,
    ]);
  }
  if (valid('limits') && config.limits.inboundHardPerSecond < config.limits.inboundRatePerSecond) {
    problems.push(['limits', '/limits: inboundHardPerSecond must be at least inboundRatePerSecond']);
  }
  return problems;
}

export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}
