/**
 * Builds the validated, deep-frozen Config from a file, the environment and
 * flags (later wins). Only the CLI calls this; everything below the
 * composition root receives the frozen object.
 */
import { readFileSync } from 'node:fs';
import { Value } from '@sinclair/typebox/value';
import { DEFAULT_MAX_JSON_DEPTH, findPoisonedKey, jsonDepthExceeds, parseJsonSafely } from '../protocol/safe-json.ts';
import { ConfigSchema, type Config } from './schema.ts';

export class ConfigError extends Error {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('invalid configuration:\n  - ' + problems.join('\n  - '));
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

export interface ConfigSources {
  /** Path of a JSON config file; absent means development mode. */
  readonly file?: string | undefined;
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Flag overrides already parsed by the CLI. */
  readonly overrides?: Readonly<Partial<{ host: string; port: number; logLevel: string; engine: string; redisUrl: string }>>;
}

/** Environment variables read at start-up; documented in docs/config.md. */
export const environmentVariables = {
  HERALD_CONFIG: 'Path of the JSON config file (same as --config).',
  HERALD_HOST: 'Overrides listen.host.',
  HERALD_PORT: 'Overrides listen.port.',
  HERALD_LOG_LEVEL: 'Overrides log.level.',
  HERALD_AUTH_HMAC_SECRET: 'HS256 token secret (overrides auth.hmacSecret).',
  HERALD_API_KEY: 'One extra admin API key, given in plain text and hashed at start-up.',
  HERALD_REDIS_URL: 'Overrides engine.redisUrl (keeps a Redis password out of the config file).',
  HERALD_ENGINE: 'Overrides engine.type (memory or redis).',
} as const;

export function loadConfig(sources: ConfigSources): Config {
  const file = sources.file ?? sources.env['HERALD_CONFIG'];
  const raw = file !== undefined && file !== '' ? readConfigFile(file) : { mode: 'development' };
  return buildConfig(raw, sources);
}

/** Reads a JSON config file as an untrusted object (no `__proto__`/`constructor` keys). */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([`cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`]);
  }
  if (jsonDepthExceeds(text, DEFAULT_MAX_JSON_DEPTH)) {
    throw new ConfigError([`config file ${file} nests arrays and objects deeper than ${DEFAULT_MAX_JSON_DEPTH} levels`]);
  }
  const parsed = parseJsonSafely(text);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError([`config file ${file} is not a JSON object (or contains __proto__/constructor keys)`]);
  }
  return parsed as Record<string, unknown>;
}

/** Applies env and flag overrides to a raw object, then validates it. */
export function buildConfig(raw: Record<string, unknown>, sources: Omit<ConfigSources, 'file'>): Config {
  const poisoned = findPoisonedKey(raw, { strict: true });
  if (poisoned !== undefined) throw new ConfigError([`${poisoned}: __proto__, constructor and prototype keys are not allowed`]);
  const value = structuredClone(raw) as Record<string, Record<string, unknown>>;
  const section = (name: string): Record<string, unknown> => {
    const existing = value[name];
    if (typeof existing === 'object' && existing !== null && !Array.isArray(existing)) return existing;
    const created: Record<string, unknown> = {};
    value[name] = created;
    return created;
  };
  const problems: string[] = [];
  const env = sources.env;
  if (env['HERALD_HOST']) section('listen')['host'] = env['HERALD_HOST'];
  if (env['HERALD_PORT']) {
    const text = env['HERALD_PORT'];
    const port = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
    if (!Number.isInteger(port)) problems.push('HERALD_PORT must be a decimal port number');
    section('listen')['port'] = port;
  }
  if (env['HERALD_LOG_LEVEL']) section('log')['level'] = env['HERALD_LOG_LEVEL'];
  if (env['HERALD_REDIS_URL']) section('engine')['redisUrl'] = env['HERALD_REDIS_URL'];
  if (env['HERALD_ENGINE']) section('engine')['type'] = env['HERALD_ENGINE'];
  if (env['HERALD_AUTH_HMAC_SECRET']) section('auth')['hmacSecret'] = env['HERALD_AUTH_HMAC_SECRET'];
  const flags = sources.overrides ?? {};
  if (flags.host !== undefined) section('listen')['host'] = flags.host;
  if (flags.port !== undefined) section('listen')['port'] = flags.port;
  if (flags.logLevel !== undefined) section('log')['level'] = flags.logLevel;
  if (flags.engine !== undefined) section('engine')['type'] = flags.engine;
  if (flags.redisUrl !== undefined) section('engine')['redisUrl'] = flags.redisUrl;

  const withDefaults = Value.Default(ConfigSchema, Value.Clone(value));
  for (const error of Value.Errors(ConfigSchema, withDefaults)) {
    problems.push(`${error.path || '/'}: ${error.message}${describeValue(error.value)}`);
    if (problems.length >= 20) break;
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const config = withDefaults as Config;
  problems.push(...crossFieldProblems(config));
  if (problems.length > 0) throw new ConfigError(problems);
  return deepFreeze(config);
}

function describeValue(value: unknown): string {
  if (typeof value === 'object' || value === undefined) return '';
  const text = String(value);
  return ` (got ${text.length > 40 ? text.slice(0, 40) + '…' : text})`;
}

function crossFieldProblems(config: Config): string[] {
  const problems: string[] = [];
  const seen = new Set<string>();
  for (const ns of config.channels.namespaces) {
    if (seen.has(ns.name)) problems.push(`/channels/namespaces: namespace "${ns.name}" is defined twice`);
    seen.add(ns.name);
  }
  const auth = config.auth;
  if (auth.hmacSecret !== undefined && auth.hmacSecretFile !== undefined) {
    problems.push('/auth: set hmacSecret or hmacSecretFile, not both');
  }
  if (auth.publicKey !== undefined && auth.publicKeyFile !== undefined) {
    problems.push('/auth: set publicKey or publicKeyFile, not both');
  }
  const names = new Set<string>();
  for (const key of config.api.keys) {
    if (names.has(key.name)) problems.push(`/api/keys: key name "${key.name}" is used twice`);
    names.add(key.name);
  }
  if ((config.tls.certFile === undefined) !== (config.tls.keyFile === undefined)) {
    problems.push('/tls: set both certFile and keyFile, or neither');
  }
  if (config.auth.cookieName !== undefined && config.cors.origins.length === 0) {
    problems.push('/auth/cookieName: cookie auth needs cors.origins (the origin allowlist guards it)');
  }
  for (const key of config.api.keys) {
    if (key.notAfter !== undefined && Number.isNaN(Date.parse(key.notAfter))) problems.push(`/api/keys: notAfter of "${key.name}" is not a date`);
  }
  if (config.limits.inboundHardPerSecond < config.limits.inboundRatePerSecond) {
    problems.push('/limits: inboundHardPerSecond must be at least inboundRatePerSecond');
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
