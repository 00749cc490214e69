/**
 * The `herald` command line: serve, token, check-config, config-docs.
 * The only place besides the composition root that reads process.env.
 */
import { parseArgs } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { buildConfig, ConfigError, loadConfig } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { renderConfigDocs } from '../config/docs.ts';
import { parseJsonSafely } from '../protocol/command-decoder.ts';
import { hashApiKey } from '../auth/api-keys.ts';
import { ensureDevSecrets, readDevHmacSecret } from '../app/dev-secrets.ts';
import { startServer } from '../app/app.ts';
import { createLogger } from '../observability/logger.ts';
import { version } from '../app/version.ts';

const usage = `herald ${version}

Usage:
  herald serve [--config FILE] [--host HOST] [--port PORT] [--log-level LEVEL]
  herald token --sub USER [--ttl SECONDS] [--info JSON] [--config FILE]
  herald check-config [--config FILE]
  herald config-docs [--write FILE]

Without --config (or HERALD_CONFIG) Herald runs in development mode.
Docs: docs/config.md, docs/protocol.md, docs/errors.md`;

function fail(message: string): never {
  process.stderr.write(message + '\n');
  process.exit(2);
}

/** Reads the config (with env and flags) and, in development mode, fills in generated secrets. */
function resolveConfig(values: Record<string, string | boolean | undefined>, forServe: boolean): { config: Config; created?: string; secretsPath?: string } {
  const env = process.env;
  const file = (values['config'] as string | undefined) ?? env['HERALD_CONFIG'];
  const port = values['port'] === undefined ? undefined : Number(values['port']);
  if (port !== undefined && !Number.isInteger(port)) fail('--port must be an integer');
  const overrides = {
    ...(values['host'] !== undefined ? { host: values['host'] as string } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(values['log-level'] !== undefined ? { logLevel: values['log-level'] as string } : {}),
  };
  const raw: Record<string, unknown> = file ? readRaw(file) : { mode: 'development' };
  const envKey = env['HERALD_API_KEY'];
  const withEnvKey = (r: Record<string, unknown>): Record<string, unknown> => {
    if (envKey === undefined || envKey === '') return r;
    const api = { ...((r['api'] as Record<string, unknown> | undefined) ?? {}) };
    const keys = Array.isArray(api['keys']) ? [...(api['keys'] as unknown[])] : [];
    keys.push({ name: 'env', sha256: hashApiKey(envKey), scopes: ['admin'] });
    api['keys'] = keys;
    return { ...r, api };
  };
  let config = buildConfig(withEnvKey(raw), { env, overrides });
  if (config.mode !== 'development') return { config };
  const stateDir = config.stateDir;
  if (!forServe) {
    const secret = readDevHmacSecret(stateDir);
    if (secret !== undefined && config.auth.hmacSecret === undefined && config.auth.hmacSecretFile === undefined) {
      const auth = { ...((raw['auth'] as object | undefined) ?? {}), hmacSecret: secret };
      config = buildConfig(withEnvKey({ ...raw, auth }), { env, overrides });
    }
    return { config };
  }
  const secrets = ensureDevSecrets(stateDir);
  const auth = { ...((raw['auth'] as object | undefined) ?? {}) } as Record<string, unknown>;
  if (auth['hmacSecret'] === undefined && auth['hmacSecretFile'] === undefined && env['HERALD_AUTH_HMAC_SECRET'] === undefined) auth['hmacSecret'] = secrets.hmacSecret;
  const api = { ...((raw['api'] as Record<string, unknown> | undefined) ?? {}) };
  api['keys'] = [...(Array.isArray(api['keys']) ? (api['keys'] as unknown[]) : []), { name: 'development', sha256: secrets.apiKeySha256, scopes: ['admin'] }];
  const channels = (raw['channels'] as Record<string, unknown> | undefined) ?? {
    defaults: {},
    namespaces: [{ name: 'public', allowAnonymous: true, clientPublish: true, joinLeave: true }],
  };
  config = buildConfig(withEnvKey({ ...raw, auth, api, channels }), { env, overrides });
  return { config, ...(secrets.newApiKey === undefined ? {} : { created: secrets.newApiKey }), secretsPath: secrets.path };
}

function readRaw(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new ConfigError([`cannot read config file ${file}: ${(error as NodeJS.ErrnoException).code ?? 'error'}`]);
  }
  const parsed = parseJsonSafely(text);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError([`config file ${file} is not a JSON object (or contains __proto__/constructor keys)`]);
  }
  return parsed as Record<string, unknown>;
}

async function serve(values: Record<string, string | boolean | undefined>): Promise<void> {
  const { config, created, secretsPath } = resolveConfig(values, true);
  const logger = createLogger(config.log.level);
  if (config.mode === 'development') {
    logger.warn(
      { stateDir: config.stateDir, secrets: secretsPath },
      'DEVELOPMENT MODE: secrets were generated into the state directory; do not expose this server. Give --config for production.',
    );
    if (process.getuid?.() === 0) logger.warn({}, 'running as root (allowed in development mode only as a warning)');
  }
  const server = await startServer({ config, logger });
  if (created !== undefined) {
    const base = `http://${config.listen.host}:${server.port}`;
    process.stderr.write(
      `\n  Herald development API key (shown once, only its hash is stored):\n\n    ${created}\n\n` +
        `  Publish:  curl -H "Authorization: Bearer ${created}" -d '{"channel":"public:demo","data":{"hello":"world"}}' ${base}/api/publish\n` +
        `  Token:    npm run herald -- token --sub alice\n\n`,
    );
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'draining');
    server.shutdown().then(
      (drained) => {
        if (!drained) logger.warn({}, 'drain timeout reached; remaining connections were closed');
        process.exit(0);
      },
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function token(values: Record<string, string | boolean | undefined>): Promise<void> {
  const sub = values['sub'];
  if (typeof sub !== 'string') fail('token: --sub USER is required');
  const ttl = values['ttl'] === undefined ? 3600 : Number(values['ttl']);
  if (!Number.isInteger(ttl) || ttl <= 0) fail('token: --ttl must be a positive integer (seconds)');
  const { config } = resolveConfig(values, false);
  const secret = config.auth.hmacSecret ?? (config.auth.hmacSecretFile ? readFileSync(config.auth.hmacSecretFile, 'utf8').trim() : undefined);
  if (secret === undefined || !config.auth.algorithms.includes('HS256')) {
    fail('token: needs an HS256 secret (run `herald serve` once in development mode, or configure auth.hmacSecret)');
  }
  const claims: Record<string, unknown> = {};
  if (typeof values['info'] === 'string') {
    const info = parseJsonSafely(values['info']);
    if (info === undefined) fail('token: --info must be JSON');
    claims['info'] = info;
  }
  let builder = new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuedAt().setExpirationTime(Math.floor(Date.now() / 1000) + ttl);
  if (config.auth.audience !== undefined) builder = builder.setAudience(config.auth.audience);
  if (config.auth.issuer !== undefined) builder = builder.setIssuer(config.auth.issuer);
  process.stdout.write((await builder.sign(new TextEncoder().encode(secret))) + '\n');
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  const { values } = parseArgs({
    args: rest,
    options: {
      config: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'log-level': { type: 'string' },
      sub: { type: 'string' },
      ttl: { type: 'string' },
      info: { type: 'string' },
      write: { type: 'string' },
    },
    strict: true,
  });
  switch (command) {
    case 'serve':
      return serve(values);
    case 'token':
      return token(values);
    case 'check-config': {
      const file = values.config ?? process.env['HERALD_CONFIG'];
      if (file === undefined) fail('check-config: --config FILE is required');
      loadConfig({ file, env: process.env });
      process.stdout.write(`${file}: ok\n`);
      return;
    }
    case 'config-docs': {
      const text = renderConfigDocs();
      if (values.write !== undefined) writeFileSync(values.write, text);
      else process.stdout.write(text);
      return;
    }
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(usage + '\n');
      return;
    default:
      fail(`unknown command "${command}"\n\n${usage}`);
  }
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(error.message + '\n');
    process.exit(2);
  }
  if (error instanceof TypeError && (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) fail(error.message + '\n\n' + usage);
  process.stderr.write(`herald: ${(error as Error).message}\n`);
  process.exit(1);
});
