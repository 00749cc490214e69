/**
 * The `herald` command line: serve, token, keys, check-config, config-docs.
 * The only place besides the composition root that reads process.env.
 */
import { parseArgs } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { SignJWT } from 'jose';
import { buildConfig, ConfigError, loadConfig, readConfigFile } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { renderConfigDocs } from '../config/docs.ts';
import { parseJsonSafely } from '../protocol/command-decoder.ts';
import { hashApiKey } from '../auth/api-keys.ts';
import { createKey, keyStatus, keyStorePath, parseDuration, parseScopes, readKeyStore, revokeKey, updateKeyStore } from '../auth/key-store.ts';
import { ensureDevSecrets, readDevHmacSecret } from '../app/dev-secrets.ts';
import { startServer } from '../app/app.ts';
import { resolveWorkers, signalReload, startPrimary } from '../cluster/primary.ts';
import { createLogger } from '../observability/logger.ts';
import { version } from '../app/version.ts';

const usage = `herald ${version}

Usage:
  herald serve [--config FILE] [--host HOST] [--port PORT] [--log-level LEVEL] [--workers N|auto]
               [--engine memory|redis] [--redis-url URL]
  herald reload [--config FILE | --state-dir DIR]
  herald token --sub USER [--ttl SECONDS] [--info JSON] [--config FILE]
  herald keys create --name NAME --scopes publish,read,admin [--expires ISO-TIME] [--config FILE | --state-dir DIR]
  herald keys list [--json] [--config FILE | --state-dir DIR]
  herald keys revoke --name NAME [--grace 24h] [--config FILE | --state-dir DIR]
  herald check-config [--config FILE]
  herald config-docs [--write FILE]

Without --config (or HERALD_CONFIG) Herald runs in development mode.
API keys live hashed in <stateDir>/api-keys.json; a running server picks up changes within a second.
Rotate: create a key with a new name, move your backend to it, revoke the old one with --grace.
Docs: docs/config.md, docs/protocol.md, docs/errors.md, docs/security.md`;

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
    ...(values['engine'] !== undefined ? { engine: values['engine'] as string } : {}),
    ...(values['redis-url'] !== undefined ? { redisUrl: values['redis-url'] as string } : {}),
  };
  const raw: Record<string, unknown> = file ? readConfigFile(file) : { mode: 'development' };
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
    namespaces: [
      { name: 'public', allowAnonymous: true, clientPublish: true, joinLeave: true },
      { name: 'chat', presence: true, joinLeave: true, clientPublish: true },
    ],
  };
  config = buildConfig(withEnvKey({ ...raw, auth, api, channels }), { env, overrides });
  return { config, ...(secrets.newApiKey === undefined ? {} : { created: secrets.newApiKey }), secretsPath: secrets.path };
}

function parseWorkers(value: string): number | 'auto' {
  if (value === 'auto') return 'auto';
  const n = /^[0-9]{1,4}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 1024) fail('--workers must be a number from 1 to 1024, or auto');
  return n;
}

function printDevKey(created: string | undefined, config: Config, port: number): void {
  if (created === undefined) return;
  const base = `http://${config.listen.host}:${port}`;
  process.stderr.write(
    `\n  Herald development API key (shown once, only its hash is stored):\n\n    ${created}\n\n` +
      `  Publish:  curl -H "Authorization: Bearer ${created}" -H 'Content-Type: application/json' -d '{"channel":"public:demo","data":{"hello":"world"}}' ${base}/api/publish\n` +
      `  Token:    npm run herald -- token --sub alice\n\n`,
  );
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
  const workers = resolveWorkers(values['workers'] === undefined ? config.cluster.workers : parseWorkers(values['workers'] as string));
  if (workers > 1) {
    if (config.engine.type !== 'memory') {
      fail('--workers: cluster mode links its workers through the primary (engine.type "memory"); with the redis engine run one Herald process per port or machine');
    }
    // Cluster mode: this process is the primary (src/cluster/primary.ts); it handles its own signals.
    const primary = startPrimary({ config, logger, workers, process: true, reloadConfig: () => resolveConfig(values, true).config });
    primary.ready.then(({ port }) => printDevKey(created, config, port), () => undefined);
    void primary.done.then((code) => process.exit(code));
    return;
  }
  const server = await startServer({ config, logger });
  printDevKey(created, config, server.port);
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

/** `herald keys create|list|revoke`: the key store in the state directory (src/auth/key-store.ts). */
function keys(args: string[]): void {
  const { values, positionals } = parseArgs({
    args,
    options: {
      config: { type: 'string' },
      'state-dir': { type: 'string' },
      name: { type: 'string' },
      scopes: { type: 'string' },
      expires: { type: 'string' },
      grace: { type: 'string' },
      json: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: true,
  });
  const [action, ...extra] = positionals;
  if (extra.length > 0) fail(`keys: unexpected argument "${extra[0]}"`);
  // The config gives the state directory and the names of the keys it holds; --state-dir alone needs no config.
  const configFile = values.config ?? process.env['HERALD_CONFIG'];
  const config = values['state-dir'] !== undefined && values.config === undefined ? undefined : resolveConfig({ config: configFile }, false).config;
  const stateDir = values['state-dir'] ?? config?.stateDir ?? '.herald';
  const configKeys = config?.api.keys ?? [];
  const now = Date.now();
  const name = values.name;
  switch (action) {
    case 'create': {
      if (name === undefined) fail('keys create: --name NAME is required');
      if (values.scopes === undefined) fail('keys create: --scopes is required (publish, read, admin; comma-separated)');
      const scopes = parseScopes(values.scopes);
      if (typeof scopes === 'string') fail(`keys create: ${scopes}`);
      const reservedNames = new Set(configKeys.map((k) => k.name));
      // Never exit inside the update: the lock must be released.
      const created = updateKeyStore(stateDir, (stored) => {
        const outcome = createKey(stored, { name, scopes, expires: values.expires, reservedNames, now });
        return { keys: 'error' in outcome ? null : outcome.keys, result: outcome };
      });
      if ('error' in created) fail(`keys create: ${created.error}`);
      process.stdout.write(created.key + '\n');
      process.stderr.write(
        `Created API key "${name}" (scopes ${scopes.join(',')}${created.entry.notAfter === undefined ? '' : `, refused after ${created.entry.notAfter}`}).\n` +
          `It is shown once, above; only its SHA-256 is kept in ${keyStorePath(stateDir)}. Running servers accept it within a second.\n`,
      );
      return;
    }
    case 'list': {
      const rows = [
        ...configKeys.map((k) => ({ ...k, source: 'config', created: undefined as string | undefined })),
        ...readKeyStore(stateDir).map((k) => ({ ...k, source: 'store' })),
      ].map((k) => ({
        name: k.name,
        scopes: k.scopes,
        created: k.created,
        notAfter: k.notAfter,
        status: keyStatus(k, now),
        sha256Prefix: k.sha256.slice(0, 12),
        source: k.source,
      }));
      if (values.json === true) {
        process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
        return;
      }
      const table = [['NAME', 'SCOPES', 'CREATED', 'NOT AFTER', 'STATUS', 'SHA256', 'SOURCE']];
      for (const r of rows) table.push([r.name, r.scopes.join(','), r.created ?? '-', r.notAfter ?? '-', r.status, r.sha256Prefix + '…', r.source]);
      const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      process.stdout.write(table.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
      return;
    }
    case 'revoke': {
      if (name === undefined) fail('keys revoke: --name NAME is required');
      const graceMs = values.grace === undefined ? 0 : parseDuration(values.grace);
      if (graceMs === undefined) fail('keys revoke: --grace must be a duration such as 0, 90s, 15m, 24h or 7d');
      if (configKeys.some((k) => k.name === name) && !readKeyStore(stateDir).some((k) => k.name === name)) {
        fail(`keys revoke: "${name}" is a key of the config file; set its notAfter there (or remove it) and restart`);
      }
      const outcome = updateKeyStore(stateDir, (stored) => {
        const result = revokeKey(stored, name, graceMs, now);
        return { keys: 'error' in result ? null : result.keys, result };
      });
      if ('error' in outcome) fail(`keys revoke: ${outcome.error}`);
      const revoked = outcome.entry;
      process.stderr.write(
        Date.parse(revoked.notAfter!) <= now
          ? `Revoked API key "${name}": refused from now on (running servers within a second).\n`
          : `API key "${name}" is refused after ${revoked.notAfter}.\n`,
      );
      return;
    }
    default:
      fail(`keys: expected create, list or revoke${action === undefined ? '' : `, not "${action}"`}\n\n${usage}`);
  }
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  // `keys` has an action word and options of its own.
  if (command === 'keys') return keys(rest);
  const { values } = parseArgs({
    args: rest,
    options: {
      config: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'log-level': { type: 'string' },
      engine: { type: 'string' },
      'redis-url': { type: 'string' },
      sub: { type: 'string' },
      ttl: { type: 'string' },
      info: { type: 'string' },
      write: { type: 'string' },
      workers: { type: 'string' },
      'state-dir': { type: 'string' },
    },
    strict: true,
  });
  switch (command) {
    case 'serve':
      return serve(values);
    case 'token':
      return token(values);
    case 'reload': {
      const stateDir = values['state-dir'] ?? resolveConfig(values, false).config.stateDir;
      const pid = signalReload(stateDir);
      process.stdout.write(`sent SIGHUP to the Herald primary (pid ${pid}): workers are replaced one by one\n`);
      return;
    }
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
