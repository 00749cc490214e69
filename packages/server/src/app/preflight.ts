/**
 * The start-time checks, in one place: `herald serve` (through startServer)
 * and `herald check-config` run exactly these. They read what the config
 * names (secret files, the public key, TLS files, Redis TLS files, the API key store), check
 * the production rules (a token key for every allowed algorithm, an API
 * key, not root), and answer every problem at once, each with its fix.
 * What they read is handed to startServer, so nothing is read twice.
 */
import { resolveApps, type App } from '../apps/apps.ts';
import { checkPlainHttpHooks, readHookSecrets, readJavascriptHook } from '../hooks/hook-secrets.ts';
import { resolveEndpoints } from '../webhooks/webhooks.ts';
import type { WebhookEndpoint } from '../webhooks/dispatcher.ts';
import { readFileSync } from 'node:fs';
import type { Config, HookTargetConfig } from '../config/schema.ts';
import { MIN_SECRET_CHARS } from '../config/schema.ts';
import { ConfigError, GENERATE_SECRET, redisOverTls, type ValidatedConfig } from '../config/load.ts';
import { createJwtVerifier, type TokenVerifier } from '../auth/jwt.ts';
import type { KeySource } from '../auth/api-keys.ts';
import { watchKeyStore } from '../auth/key-store.ts';
import { peekKeys } from '../store/api-key-table.ts';
import { Edge } from '../edge/edge.ts';
import type { TlsFiles } from './http.ts';
import { decideConsole } from '../console/console-config.ts';
import { passkeyProblems } from '../console/passkey-config.ts';
import { prepareOidcProviders, type PreparedOidcProvider } from '../console/oidc.ts';
import type { RedisTls } from './engine.ts';

/** What the checks read and built, ready for startServer. */
export interface Prepared {
  readonly tls: TlsFiles | undefined;
  readonly edge: Edge;
  readonly tokens: TokenVerifier;
  /** api-keys.json, watched (memory and redis engines); undefined on the sqlite engine, whose state file holds the keys. */
  readonly keyStore: KeySource | undefined;
  /** Certificate and key of the internal listener (`admin.tls`), when set. */
  readonly adminTls: TlsFiles | undefined;
  /** Whether the admin console runs (console/console-config.ts). */
  readonly consoleEnabled: boolean;
  /** The redis engine's TLS files (`engine.redisTls`), read; undefined on other engines or without `rediss://`. */
  readonly redisTls: RedisTls | undefined;
  /** The signing secret of each proxy hook (hooks/hook-secrets.ts), from its file or environment variable. */
  readonly hookSecrets: ReadonlyMap<HookTargetConfig, string>;
  /** The JavaScript hook file's source (`hooks.javascript.file`), read; undefined without JavaScript hooks. */
  readonly hookSource: string | undefined;
  /** Webhook endpoints with their secrets read (files, environment); empty without `webhooks.endpoints`. */
  readonly webhookEndpoints: readonly WebhookEndpoint[];
  /** The config's apps with their secrets read (apps/apps.ts). */
  readonly apps: readonly App[];
  /** The console's OpenID Connect providers with their client secrets read (console/oidc.ts). */
  readonly oidcProviders: readonly PreparedOidcProvider[];
}

export interface CheckResult {
  readonly problems: readonly string[];
  readonly warnings: readonly string[];
  /** Present when there is no problem. */
  readonly prepared: Prepared | undefined;
}

export interface CheckOptions {
  /** Whether this process runs as root. */
  readonly runningAsRoot: boolean;
  /**
   * `serve` refuses root in production mode; `check` (herald check-config,
   * often run by another user, in a pipeline) only warns.
   */
  readonly purpose: 'serve' | 'check';
  /** Sections that failed validation: checks reading them are skipped. */
  readonly invalidSections?: ReadonlySet<string>;
  /** The config file, named in fixes. */
  readonly configFile?: string | undefined;
  /** A key store change that cannot be used while running (the old keys stay). */
  readonly onKeyStoreReloadError?: (problem: string) => void;
  /** The environment, for webhook and proxy hook secrets named by `secretEnv` (the composition root or the CLI hands it in); none when absent. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Validation problems and the start-time checks together: what `herald check-config` prints. */
export async function checkValidatedConfig(validated: ValidatedConfig, options: Omit<CheckOptions, 'invalidSections'>): Promise<CheckResult> {
  const checks = await startChecks(validated.config, { ...options, invalidSections: validated.invalidSections });
  const problems = [...validated.problems, ...checks.problems];
  return { problems, warnings: checks.warnings, prepared: problems.length === 0 ? checks.prepared : undefined };
}

export async function startChecks(config: Config, options: CheckOptions): Promise<CheckResult> {
  const problems: string[] = [];
  const warnings: string[] = [];
  const invalid = options.invalidSections ?? new Set<string>();
  const valid = (...sections: string[]) => !invalid.has('*') && sections.every((s) => !invalid.has(s));
  const production = valid('mode') && config.mode === 'production';

  if (options.runningAsRoot && valid('mode', 'process')) {
    if (production && !config.process.allowRoot) {
      const fix = 'run Herald as an unprivileged user, or set process.allowRoot: true';
      if (options.purpose === 'serve') problems.push(`/process/allowRoot: production mode refuses to run as root; ${fix}`);
      else warnings.push(`running as root: \`herald serve\` refuses to run as root in production mode; ${fix}`);
    } else if (!production) {
      warnings.push('running as root (development mode only warns; production mode refuses unless process.allowRoot is set)');
    }
  }

  let tls: TlsFiles | undefined;
  if (valid('tls')) {
    const { certFile, keyFile } = config.tls;
    if (certFile !== undefined && keyFile !== undefined) {
      const cert = readNamedFile(certFile, '/tls/certFile', problems);
      const key = readNamedFile(keyFile, '/tls/keyFile', problems);
      if (cert !== undefined && key !== undefined) tls = { cert, key };
    }
  }

  let adminTls: TlsFiles | undefined;
  let consoleEnabled = false;
  if (valid('admin')) {
    const { certFile, keyFile } = config.admin.tls;
    if ((certFile === undefined) !== (keyFile === undefined)) problems.push('/admin/tls: certFile and keyFile go together: set both, or neither');
    if (certFile !== undefined && keyFile !== undefined) {
      const cert = readNamedFile(certFile, '/admin/tls/certFile', problems);
      const key = readNamedFile(keyFile, '/admin/tls/keyFile', problems);
      if (cert !== undefined && key !== undefined) adminTls = { cert, key };
    }
    const decision = decideConsole(config, certFile !== undefined && keyFile !== undefined);
    if (decision.problem !== undefined) problems.push(decision.problem);
    if (decision.warning !== undefined) warnings.push(decision.warning);
    problems.push(...(await passkeyProblems(config)));
    consoleEnabled = decision.enabled;
  }
  // OIDC client secrets come from files or the environment, like the other secrets.
  const oidcProviders = valid('admin') ? prepareOidcProviders(config, options.env ?? {}, problems) : [];

  const redisTls = valid('engine') ? readRedisTls(config, problems) : undefined;
  // Proxy hooks sign with secrets from files or the environment (the composition root's side reads it).
  const hookSecrets = valid('hooks') ? readHookSecrets(config.hooks, options.env ?? {}, problems) : new Map<HookTargetConfig, string>();
  if (production && valid('hooks')) checkPlainHttpHooks(config.hooks, problems);
  const hookSource = valid('hooks') ? readJavascriptHook(config.hooks, problems) : undefined;

  let edge: Edge | undefined;
  if (valid('cors', 'http', 'limits', 'auth')) {
    try {
      edge = new Edge(config);
    } catch (error) {
      problems.push(`/${(error as Error).message.replace('.', '/')}`);
    }
  }

  let tokens: TokenVerifier | undefined;
  if (valid('auth')) tokens = await tokenChecks(config, problems);

  let keyStore: KeySource | undefined;
  // Store keys a start would have; undefined when they cannot be known here.
  let storeKeys: number | undefined;
  let keysChecked = false;
  if (valid('stateDir', 'engine')) {
    try {
      if (config.engine.type === 'sqlite') {
        // The engine imports api-keys.json into its state file and watches the keys there.
        try {
          storeKeys = peekKeys(config.stateDir)?.length;
        } catch (error) {
          // A refused state file names itself and its fix.
          if (error instanceof ConfigError && error.problems.some((p) => p.includes('refuses to start on it'))) {
            problems.push(...error.problems);
            storeKeys = undefined;
          } else {
            throw error;
          }
        }
      } else {
        keyStore = watchKeyStore(config.stateDir, { ...(options.onKeyStoreReloadError ? { onReloadError: options.onKeyStoreReloadError } : {}) });
        storeKeys = keyStore.current().length;
      }
      keysChecked = true;
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      problems.push(
        ...error.problems.map((p) =>
          p.includes('(table api_keys)')
            ? `${p} (correct or delete that row with sqlite3; the rest of the state file is fine)`
            : `${p} (fix the file, or move it away and recreate the keys with \`herald keys create\`)`,
        ),
      );
    }
  }
  if (production && valid('api') && storeKeys !== undefined && config.api.keys.length + storeKeys === 0) {
    problems.push(
      '/api/keys: production mode needs at least one API key: ' +
        `set HERALD_API_KEY (at least ${MIN_SECRET_CHARS} random characters: \`${GENERATE_SECRET}\`), ` +
        `create one with \`herald keys create --config ${options.configFile ?? 'FILE'} --name backend --scopes publish,read\`, ` +
        'or list {name, sha256, scopes} in api.keys',
    );
  }

  let webhookEndpoints: WebhookEndpoint[] = [];
  if (valid('webhooks', 'engine') && config.webhooks.endpoints.length > 0) {
    webhookEndpoints = resolveEndpoints(config, options.env ?? {}, problems);
  }
  let apps: App[] = [];
  if (valid('apps', 'mode')) apps = resolveApps(config, options.env ?? {}, problems);
  const prepared =
    problems.length === 0 && edge !== undefined && tokens !== undefined && keysChecked
      ? { tls, edge, tokens, keyStore, redisTls, adminTls, consoleEnabled, webhookEndpoints, hookSecrets, hookSource, oidcProviders, apps }
      : undefined;
  return { problems, warnings, prepared };
}

/** The redis engine's TLS files (`engine.redisTls`), read; undefined on other engines or without `rediss://`. Problems are added to `problems`. */
export function readRedisTls(config: Config, problems: string[]): RedisTls | undefined {
  if (config.engine.type !== 'redis' || !redisOverTls(config)) return undefined;
  const { caFile, certFile, keyFile, serverName } = config.engine.redisTls;
  const ca = caFile === undefined ? undefined : readNamedFile(caFile, '/engine/redisTls/caFile', problems);
  const cert = certFile === undefined ? undefined : readNamedFile(certFile, '/engine/redisTls/certFile', problems);
  const key = keyFile === undefined ? undefined : readNamedFile(keyFile, '/engine/redisTls/keyFile', problems);
  return { ...(ca === undefined ? {} : { ca }), ...(cert === undefined ? {} : { cert }), ...(key === undefined ? {} : { key }), ...(serverName === undefined ? {} : { servername: serverName }) };
}

async function tokenChecks(config: Config, problems: string[]): Promise<TokenVerifier | undefined> {
  const auth = config.auth;
  const before = problems.length;
  let hmacSecret = auth.hmacSecret;
  if (hmacSecret === undefined && auth.hmacSecretFile !== undefined) {
    hmacSecret = readNamedFile(auth.hmacSecretFile, '/auth/hmacSecretFile', problems)?.trim();
    if (hmacSecret !== undefined && hmacSecret.length < MIN_SECRET_CHARS) {
      problems.push(`/auth/hmacSecretFile: the secret in ${auth.hmacSecretFile} is shorter than ${MIN_SECRET_CHARS} characters (generate one: \`${GENERATE_SECRET} > ${auth.hmacSecretFile}\`)`);
    }
  }
  const publicKey = auth.publicKey ?? (auth.publicKeyFile === undefined ? undefined : readNamedFile(auth.publicKeyFile, '/auth/publicKeyFile', problems));
  for (const alg of auth.algorithms) {
    if (alg === 'HS256' && hmacSecret === undefined && auth.hmacSecretFile === undefined) {
      problems.push(
        '/auth: HS256 is in auth.algorithms but there is no HMAC secret: ' +
          `set HERALD_AUTH_HMAC_SECRET or auth.hmacSecretFile (generate one: \`${GENERATE_SECRET}\`), or remove HS256 from auth.algorithms`,
      );
    }
    if (alg !== 'HS256' && publicKey === undefined && auth.publicKeyFile === undefined && auth.jwksUrl === undefined) {
      problems.push(`/auth: ${alg} is in auth.algorithms but there is no public key: set auth.publicKeyFile (PEM SPKI) or auth.jwksUrl, or remove ${alg} from auth.algorithms`);
    }
  }
  if (problems.length > before) return undefined;
  try {
    return await createJwtVerifier({
      algorithms: auth.algorithms,
      hmacSecret,
      publicKey,
      jwksUrl: auth.jwksUrl,
      jwksCacheMs: auth.jwksCacheMs,
      jwksCooldownMs: auth.jwksCooldownMs,
      audience: auth.audience,
      issuer: auth.issuer,
      leewayMs: auth.leewayMs,
      maxJsonDepth: config.limits.maxJsonDepth,
    });
  } catch (error) {
    const where = auth.publicKeyFile === undefined ? '/auth/publicKey' : '/auth/publicKeyFile';
    problems.push(`${where}: ${(error as Error).message.replace(/^auth: /, '')}`);
    return undefined;
  }
}

/** A file the config names, or a problem naming the option, the path and the reason. */
function readNamedFile(path: string, option: string, problems: string[]): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'error';
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? "Herald's user may not read it" : code === 'EISDIR' ? 'it is a directory' : code;
    problems.push(`${option}: cannot read ${path}: ${why} (${code}); check the path and the file's owner and mode`);
    return undefined;
  }
}
