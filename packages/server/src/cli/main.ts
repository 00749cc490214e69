/**
 * The `herald` command line: serve, reload, token, keys, check-config,
 * config-docs, init (./init.ts), bench (./bench.ts), and the server API
 * commands (publish, history, presence, disconnect, revoke:
 * ./api-commands.ts). Each command declares its own options: `--help`
 * prints them, and an option that belongs to another command is refused.
 * The CLI is the only place besides the composition root that reads process.env.
 */
// First: holds the young generation at its initial size while the other modules load (./startup-heap.ts).
import { startupDone } from './startup-heap.ts';
import { availableParallelism, userInfo } from 'node:os';
import type { AuditInput } from '../console/admin-store.ts';
import { parseArgs } from 'node:util';
import { readFileSync, writeFileSync } from 'node:fs';
import { ConfigError, deepFreeze, readConfigFile, validateConfig, type ConfigOverrides, type ValidatedConfig } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { parseJsonSafely } from '@herald/protocol/commands';
import { createKey, keyStatus, parseDuration, parseScopes, revokeKey } from '../auth/key-store.ts';
import { keyBackendKind, openKeyBackend, type KeyBackend } from './key-backend.ts';
import { DEV_KEY_NAME, devSecretsPath, ensureDevSecrets, markDevKeyShown, readDevSecrets, type DevSecrets } from '../app/dev-secrets.ts';
import { checkValidatedConfig, startChecks } from '../app/preflight.ts';
import { createLogger } from '../observability/pino-logger.ts';
import { version } from '../app/version.ts';
import type { Command, Values } from './command.ts';
import { decideConsole } from '../console/console-config.ts';
import { youngGenerationHold } from '../util/young-generation.ts';

const configHelp = '--config FILE     JSON config file (or HERALD_CONFIG); without one, development mode';
const stateDirHelp = '--state-dir DIR   the state directory, instead of the one in --config (default ./.herald)';

/** The commands of this file; commandTable() adds those of the command modules. */
const ownCommands: Readonly<Record<string, Command>> = {
  serve: {
    summary: 'run Herald',
    help: `Usage: herald serve [options]

Runs Herald. Without --config (or HERALD_CONFIG): development mode, with
secrets generated into ./.herald and a development API key shown once.

Options:
  ${configHelp}
  --host HOST       address of the public listener (HERALD_HOST, listen.host; default 127.0.0.1)
  --port PORT       port of the public listener (HERALD_PORT, listen.port; default 8000; 0 = any free port)
  --admin-port PORT port of the internal listener: metrics, health (HERALD_ADMIN_PORT, admin.port; default 8001)
  --log-level LEVEL fatal, error, warn, info, debug, trace or silent (HERALD_LOG_LEVEL, log.level)
  --workers N|auto  cluster mode: N worker processes, auto = one per core (cluster.workers)
  --engine TYPE     memory, sqlite or redis (HERALD_ENGINE, engine.type)
  --redis-url URL   Redis URL for the redis engine (HERALD_REDIS_URL, engine.redisUrl)
  --redis-cluster URL,URL  seed nodes of a Redis Cluster for the redis engine
                    (HERALD_REDIS_CLUSTER, engine.redisCluster)

A second development instance beside the first (the first owns the state file): herald serve --port 8010 --admin-port 8011 --engine memory`,
    options: {
      config: { type: 'string' },
      host: { type: 'string' },
      port: { type: 'string' },
      'admin-port': { type: 'string' },
      'log-level': { type: 'string' },
      workers: { type: 'string' },
      engine: { type: 'string' },
      'redis-url': { type: 'string' },
      'redis-cluster': { type: 'string' },
    },
    run: serve,
  },
  reload: {
    summary: 'replace the workers of a running cluster one by one',
    help: `Usage: herald reload [--config FILE | --state-dir DIR]

Sends SIGHUP to the cluster primary (herald serve --workers N) named by
<stateDir>/herald.pid: it re-reads the configuration and replaces the workers
one by one.

Options:
  ${configHelp}
  ${stateDirHelp}`,
    options: { config: { type: 'string' }, 'state-dir': { type: 'string' } },
    async run(values) {
      const stateDir = (values['state-dir'] as string | undefined) ?? checked(resolveConfig(values, 'read').validated).stateDir;
      const { signalReload } = await import('../cluster/primary.ts');
      const pid = signalReload(stateDir);
      process.stdout.write(`sent SIGHUP to the Herald primary (pid ${pid}): workers are replaced one by one\n`);
    },
  },
  token: {
    summary: 'mint a connection token (HS256)',
    help: `Usage: herald token --sub USER [--ttl SECONDS] [--info JSON] [--config FILE]

Prints an HS256 connection token for USER, signed with the configured secret
(in development mode: the one in ./.herald, made by the first \`herald serve\`).

Options:
  --sub USER        the user id (the token's sub claim); required
  --ttl SECONDS     lifetime (default 3600)
  --info JSON       the info claim, shown to other subscribers in presence
  ${configHelp}`,
    options: { sub: { type: 'string' }, ttl: { type: 'string' }, info: { type: 'string' }, config: { type: 'string' } },
    run: token,
  },
  keys: {
    summary: 'create, list and revoke API keys (create | list | revoke)',
    help: `Usage:
  herald keys create --name NAME --scopes publish,read,admin [--expires ISO-TIME] [--config FILE | --state-dir DIR]
  herald keys list [--json] [--config FILE | --state-dir DIR]
  herald keys revoke --name NAME [--grace 24h] [--config FILE | --state-dir DIR]

API keys live hashed in the state directory: in its state file herald.db on
the sqlite engine (the default; an older api-keys.json is moved into it once),
in api-keys.json on the memory and redis engines. A running server picks up
changes within a second. With --state-dir alone: herald.db when it exists (or
when there is no api-keys.json either), else api-keys.json. Rotate: create a key with a new name, move your
backend to it, revoke the old one with --grace.
herald keys ACTION --help tells more.`,
    options: {},
    run: () => undefined,
  },
  'keys create': {
    summary: 'create an API key',
    help: `Usage: herald keys create --name NAME --scopes SCOPES [--expires ISO-TIME] [--config FILE | --state-dir DIR]

Creates an API key, prints it once on stdout, and keeps only its SHA-256
in the state directory (herald.db, or api-keys.json on the memory and redis
engines). Running servers accept it within a second.

Options:
  --name NAME       a name of your choice (letters, digits, "_", ".", "@", "-")
  --scopes SCOPES   comma-separated: publish (publish, broadcast), read (history,
                    presence, channels, info), admin (disconnect, revoke, everything)
  --expires TIME    refused from then on (ISO 8601, e.g. 2027-01-01T00:00:00Z)
  ${configHelp}
  ${stateDirHelp}`,
    options: { name: { type: 'string' }, scopes: { type: 'string' }, expires: { type: 'string' }, config: { type: 'string' }, 'state-dir': { type: 'string' } },
    run: (values) => keys('create', values),
  },
  'keys list': {
    summary: 'list API keys',
    help: `Usage: herald keys list [--json] [--config FILE | --state-dir DIR]

Lists every API key: name, scopes, created, notAfter, status, the first 12
hex digits of its SHA-256, its source (config, store, or development) and,
for the development key, its first characters. Never a key itself.

Options:
  --json            JSON instead of a table
  ${configHelp}
  ${stateDirHelp}`,
    options: { json: { type: 'boolean' }, config: { type: 'string' }, 'state-dir': { type: 'string' } },
    run: (values) => keys('list', values),
  },
  'keys revoke': {
    summary: 'revoke an API key',
    help: `Usage: herald keys revoke --name NAME [--grace DURATION] [--config FILE | --state-dir DIR]

Revokes a key of the store: refused from now on, or after a grace period.

Options:
  --name NAME       the key
  --grace DURATION  keep accepting it this long: 0, 90s, 15m, 24h, 7d (default 0)
  ${configHelp}
  ${stateDirHelp}`,
    options: { name: { type: 'string' }, grace: { type: 'string' }, config: { type: 'string' }, 'state-dir': { type: 'string' } },
    run: (values) => keys('revoke', values),
  },
  backup: {
    summary: 'copy the state file (sqlite engine) while Herald runs',
    help: `Usage: herald backup FILE [--force] [--config FILE | --state-dir DIR]

Writes a consistent copy of <stateDir>/herald.db (history, revocations, API
keys) to FILE while Herald runs: one snapshot of everything committed when
the copy began (VACUUM INTO; the server keeps writing meanwhile). The copy
is a valid state file: restore it with \`herald restore FILE\` while Herald
is stopped. FILE gets mode 0600. docs/operations.md: backup, restore, move.

Options:
  --force           replace FILE if it exists (refused otherwise)
  ${configHelp}
  ${stateDirHelp}`,
    options: { force: { type: 'boolean' }, config: { type: 'string' }, 'state-dir': { type: 'string' } },
    args: ['<file>'],
    async run(values, positionals) {
      const stateDirFlag = values['state-dir'] as string | undefined;
      const config = stateDirFlag !== undefined && values['config'] === undefined ? undefined : checked(resolveConfig(values, 'read').validated);
      if (config !== undefined && config.engine.type !== 'sqlite') {
        fail(
          `herald backup: engine.type is "${config.engine.type}": ${config.engine.type === 'redis' ? 'the state is in Redis; back it up with Redis persistence (BGSAVE, AOF)' : 'the memory engine keeps nothing on disk to back up (API keys: copy api-keys.json)'}`,
        );
      }
      const { backupStateFile } = await import('../store/backup.ts');
      const result = backupStateFile({ stateDir: stateDirFlag ?? config?.stateDir ?? '.herald', target: positionals[0]!, force: values['force'] === true });
      process.stdout.write(`${result.path}\n`);
      process.stderr.write(`Backed up the state file (schema version ${result.version}, ${result.bytes} bytes) in ${result.ms} ms.\n`);
    },
  },
  restore: {
    summary: 'put a backup copy in place as the state file (Herald stopped)',
    help: `Usage: herald restore FILE [--force] [--keep-epochs] [--config FILE | --state-dir DIR]

Puts a copy written by \`herald backup\` in place as <stateDir>/herald.db.
Herald must be stopped (refused while it runs). The copy is checked first;
an existing state file is moved aside (herald.db.before-restore-<time>) with
--force, and refused without it. Every stream gets a new epoch, so clients
that saw publications made after the copy reload (recovered: false) instead
of resuming above publications the restored stream never had; give
--keep-epochs only when the copy is current (moving a stopped Herald's
state). Console sessions are not restored. docs/operations.md: restore.

Options:
  --force           move an existing state file aside (refused otherwise)
  --keep-epochs     keep every stream's epoch (a move, not a restore after a loss)
  ${configHelp}
  ${stateDirHelp}`,
    options: { force: { type: 'boolean' }, 'keep-epochs': { type: 'boolean' }, config: { type: 'string' }, 'state-dir': { type: 'string' } },
    args: ['<file>'],
    async run(values, positionals) {
      const stateDirFlag = values['state-dir'] as string | undefined;
      const config = stateDirFlag !== undefined && values['config'] === undefined ? undefined : checked(resolveConfig(values, 'read').validated);
      if (config !== undefined && config.engine.type !== 'sqlite') fail(`herald restore: engine.type is "${config.engine.type}": only the sqlite engine keeps a state file`);
      const { restoreStateFile } = await import('../store/restore.ts');
      const result = restoreStateFile({
        stateDir: stateDirFlag ?? config?.stateDir ?? '.herald',
        source: positionals[0]!,
        force: values['force'] === true,
        keepEpochs: values['keep-epochs'] === true,
      });
      process.stdout.write(`${result.path}\n`);
      process.stderr.write(
        `Restored ${result.streams} streams${result.newEpochs ? ', each with a new epoch' : ', epochs kept'}.${result.previous === undefined ? '' : ` The previous state file is ${result.previous}.`}\n`,
      );
    },
  },
  'check-config': {
    summary: 'run every start-up check of a config file, and report every problem',
    help: `Usage: herald check-config [--config FILE]

Runs the checks \`herald serve\` runs (the file, the environment, secret and
TLS files, API keys and the key store, production rules) without starting,
and prints every problem with its fix. Exit code 0 when serve would start,
2 when it would refuse. Reads the same environment variables as serve.

Options:
  ${configHelp}`,
    options: { config: { type: 'string' } },
    run: checkConfig,
  },
  'config-docs': {
    summary: 'print the configuration reference (docs/config.md) or the JSON Schema of config files',
    help: `Usage: herald config-docs [--json-schema] [--write FILE]

Prints the configuration reference generated from the schema.

Options:
  --json-schema     print the config file's JSON Schema instead (docs/config.schema.json;
                    installed with the package as herald/config.schema.json)
  --write FILE      write it to FILE instead of stdout`,
    options: { 'json-schema': { type: 'boolean' }, write: { type: 'string' } },
    async run(values) {
      const text = values['json-schema'] === true ? (await import('../config/json-schema.ts')).renderConfigJsonSchema() : (await import('../config/docs.ts')).renderConfigDocs();
      if (typeof values['write'] === 'string') writeFileSync(values['write'], text);
      else process.stdout.write(text);
    },
  },
};

interface CommandTable {
  readonly commands: Readonly<Record<string, Command>>;
  /** The actions of `herald admin`, `herald apps` and `herald webhooks`. */
  readonly actions: { readonly admin: readonly string[]; readonly apps: readonly string[]; readonly webhooks: readonly string[] };
}

/**
 * Every command, with those of the command modules, which load here: `serve`
 * runs without them (their code and help texts were 0.4 MiB of an idle
 * server's heap: docs/performance.md, "Footprint, sixth pass").
 */
async function commandTable(): Promise<CommandTable> {
  const [{ apiCommands }, { initCommand }, { benchCommand }, { adminCommands, ADMIN_ACTIONS }, { appsCommands, APPS_ACTIONS }, { webhookCommands, WEBHOOK_ACTIONS }] = await Promise.all([
    import('./api-commands.ts'),
    import('./init.ts'),
    import('./bench-command.ts'),
    import('./admin-command.ts'),
    import('./apps-command.ts'),
    import('./webhooks-command.ts'),
  ]);
  const { 'config-docs': configDocs, ...first } = ownCommands;
  const commands = {
    ...first,
    init: initCommand,
    bench: benchCommand,
    'config-docs': configDocs!,
    ...apiCommands,
    ...adminCommands((values) => checked(resolveConfig({ config: values['config'] }, 'read').validated)),
    ...appsCommands((values) => checked(resolveConfig({ config: values['config'] }, 'read').validated)),
    ...webhookCommands((values) => {
      const stateDirFlag = values['state-dir'] as string | undefined;
      const config = stateDirFlag !== undefined && values['config'] === undefined ? undefined : checked(resolveConfig(values, 'read').validated);
      return { config, stateDir: stateDirFlag ?? config?.stateDir ?? '.herald' };
    }),
  };
  return { commands, actions: { admin: ADMIN_ACTIONS, apps: APPS_ACTIONS, webhooks: WEBHOOK_ACTIONS } };
}

const usage = (commands: Readonly<Record<string, Command>>): string => `herald ${version}

Usage: herald COMMAND [options]

Commands:
${Object.entries(commands)
  .filter(([name]) => !name.startsWith('keys ') && !name.startsWith('admin ') && !name.startsWith('webhooks ') && !name.startsWith('apps '))
  .map(([name, command]) => `  ${name.padEnd(14)}${command.summary}`)
  .join('\n')}

herald COMMAND --help shows a command's options.
Without --config (or HERALD_CONFIG) Herald runs in development mode.
Docs: docs/config.md, docs/protocol.md, docs/errors.md, docs/security.md, docs/operations.md`;

function fail(message: string): never {
  process.stderr.write(message + '\n');
  process.exit(2);
}

/** Parses `args` against exactly the options and positional arguments of `name`; anything else is refused with the command's options named. */
function parseCommandArgs(name: string, command: Command, args: readonly string[]): { values: Values; positionals: string[] } | 'help' {
  const options = { ...command.options, help: { type: 'boolean', short: 'h' } } as const;
  const { tokens } = parseArgs({ args: [...args], options, strict: false, allowPositionals: true, tokens: true });
  const known = Object.keys(command.options).map((o) => `--${o}`);
  const hint = `(herald ${name} --help)`;
  for (const t of tokens) {
    if (t.kind === 'option' && !Object.hasOwn(options, t.name)) {
      fail(`herald ${name}: unknown option ${t.rawName}; ${known.length === 0 ? 'it takes none' : `it takes ${known.join(', ')}`} ${hint}`);
    }
  }
  const names = command.args ?? [];
  let parsed: { values: Values; positionals: string[] };
  try {
    parsed = parseArgs({ args: [...args], options, strict: true, allowPositionals: true });
  } catch (error) {
    fail(`herald ${name}: ${(error as Error).message.split('. ')[0]!} ${hint}`);
  }
  if (parsed.values['help'] === true) return 'help';
  const extra = parsed.positionals[names.length];
  if (extra !== undefined) fail(`herald ${name}: unexpected argument "${extra}" ${hint}`);
  if (parsed.positionals.length < names.length) fail(`herald ${name}: ${names.slice(parsed.positionals.length).join(' ')} missing ${hint}`);
  return parsed;
}

/** A config file's values, the environment and the flags, with development mode's generated secrets filled in. */
interface Resolved {
  readonly validated: ValidatedConfig;
  /** Development mode only: the generated secrets (made now for `serve`). */
  readonly dev?: DevSecrets | undefined;
}

/**
 * `serve` generates development secrets when there are none; `check`
 * stands in for them (serve would generate them); `read` uses them if
 * present (token, keys).
 */
function resolveConfig(values: Values, purpose: 'serve' | 'check' | 'read'): Resolved {
  const env = process.env;
  const file = (values['config'] as string | undefined) || env['HERALD_CONFIG'] || undefined;
  const overrides: ConfigOverrides = {
    ...(values['host'] !== undefined ? { host: values['host'] as string } : {}),
    ...(values['port'] !== undefined ? { port: portFlag('--port', values['port'] as string) } : {}),
    ...(values['admin-port'] !== undefined ? { adminPort: portFlag('--admin-port', values['admin-port'] as string) } : {}),
    ...(values['log-level'] !== undefined ? { logLevel: values['log-level'] as string } : {}),
    ...(values['engine'] !== undefined ? { engine: values['engine'] as string } : {}),
    ...(values['redis-url'] !== undefined ? { redisUrl: values['redis-url'] as string } : {}),
    ...(values['redis-cluster'] !== undefined ? { redisCluster: values['redis-cluster'] as string } : {}),
  };
  const raw: Record<string, unknown> = file !== undefined ? readConfigFile(file) : { mode: 'development' };
  const sources = { env, overrides, file };
  const first = validateConfig(raw, sources);
  const modeKnown = !first.invalidSections.has('mode') && !first.invalidSections.has('*') && !first.invalidSections.has('stateDir');
  if (!modeKnown || first.config.mode !== 'development') return { validated: first };
  const stateDir = first.config.stateDir;
  const dev = purpose === 'serve' ? ensureDevSecrets(stateDir) : readDevSecrets(stateDir);
  const filled: Record<string, unknown> = { ...raw };
  // A section that is not an object is left as it is: validation reports it.
  const section = (name: string, fill: (section: Record<string, unknown>) => void) => {
    const current = raw[name];
    if (current !== undefined && !isObject(current)) return;
    const copy = { ...current };
    fill(copy);
    filled[name] = copy;
  };
  const hmacSecret = dev?.hmacSecret ?? (purpose === 'check' ? 'a stand-in for the secret `herald serve` generates' : undefined);
  section('auth', (auth) => {
    if (hmacSecret !== undefined && auth['hmacSecret'] === undefined && auth['hmacSecretFile'] === undefined) auth['hmacSecret'] = hmacSecret;
  });
  section('api', (api) => {
    if (purpose === 'serve' && dev !== undefined && (Array.isArray(api['keys']) || api['keys'] === undefined)) {
      api['keys'] = [...((api['keys'] as unknown[] | undefined) ?? []), { name: DEV_KEY_NAME, sha256: dev.apiKeySha256, scopes: ['admin'] }];
    }
  });
  filled['channels'] = raw['channels'] ?? {
    defaults: {},
    namespaces: [
      { name: 'public', allowAnonymous: true, clientPublish: true, joinLeave: true },
      { name: 'chat', presence: true, joinLeave: true, clientPublish: true },
    ],
  };
  return { validated: validateConfig(filled, sources), dev };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function portFlag(flag: string, text: string): number {
  const port = /^[0-9]{1,5}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(port) || port > 65535) fail(`${flag} must be a port number from 0 to 65535 (0 picks a free one), not "${text}"`);
  return port;
}

/** The config, or a ConfigError with every problem. */
function checked(validated: ValidatedConfig): Config {
  if (validated.problems.length > 0) throw new ConfigError(validated.problems);
  return deepFreeze(validated.config);
}

function parseWorkers(value: string): number | 'auto' {
  if (value === 'auto') return 'auto';
  const n = /^[0-9]{1,4}$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > 1024) fail('--workers must be a number from 1 to 1024, or auto');
  return n;
}

/** Shows the development key once a server listens (then forgets it), or, on later starts, how to get a key. */
function announceDevKey(dev: DevSecrets, config: Config, port: number, adminPort: number): void {
  const base = `http://${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${port}`;
  const adminTls = config.admin.tls.certFile !== undefined && config.admin.tls.keyFile !== undefined;
  const consoleLine = decideConsole(config, adminTls).enabled
    ? `  Admin console:                 ${adminTls ? 'https' : 'http'}://${config.admin.host.includes(':') ? `[${config.admin.host}]` : config.admin.host}:${adminPort}${config.admin.console.basePath}/\n` +
      `                                 (first admin, an owner: npm run herald -- admin create NAME --role owner)\n`
    : '';
  if (dev.pendingApiKey !== undefined) {
    const key = dev.pendingApiKey;
    process.stderr.write(
      `\n  Herald development API key (shown once, only its hash is kept):\n\n    ${key}\n\n` +
        `  Subscribe (another terminal):  TOKEN=$(npm run --silent herald -- token --sub alice)\n` +
        `                                 curl -N -H "Authorization: Bearer $TOKEN" "${base}/connection/sse?channel=chat:lobby"\n` +
        `  Publish (a third terminal):    curl -H "Authorization: Bearer ${key}" -H 'Content-Type: application/json' -d '{"channel":"chat:lobby","data":{"text":"hello alice"}}' ${base}/api/publish\n` +
        `  Chat in a browser:             ${base}/examples/chat/\n` +
        consoleLine +
        '\n',
    );
    markDevKeyShown(config.stateDir);
    return;
  }
  const which = `"${DEV_KEY_NAME}"${dev.apiKeyPrefix === undefined ? '' : ` (${dev.apiKeyPrefix}…)`}`;
  process.stderr.write(
    `\n  Development API key ${which} was shown at the first start${dev.created === undefined ? '' : ` (${dev.created})`}; only its hash is kept.\n` +
      `  No copy? Create another:  npm run herald -- keys create --name dev-2 --scopes admin\n` +
      `  Chat: ${base}/examples/chat/\n` +
      consoleLine.replace(/^ {2}Admin console: {17}/, '  Admin console: ').replace(/\n {33}\(/, '\n  (') +
      '\n',
  );
}

async function serve(values: Values): Promise<void> {
  const { validated, dev } = resolveConfig(values, 'serve');
  try {
    await serveWith(values, validated, dev);
  } catch (error) {
    notePendingDevKey(dev, validated.config.stateDir);
    throw error;
  }
}

/** After a failed start: the development key was not shown, and is not lost. */
function notePendingDevKey(dev: DevSecrets | undefined, stateDir: string): void {
  if (dev?.pendingApiKey !== undefined && readDevSecrets(stateDir)?.pendingApiKey !== undefined) {
    process.stderr.write(`Herald did not start. The development API key has not been shown yet: it is kept (in ${devSecretsPath(stateDir)}) and shown at the first start that succeeds.\n`);
  }
}

async function serveWith(values: Values, validated: ValidatedConfig, dev: DevSecrets | undefined): Promise<void> {
  if (validated.problems.length > 0) {
    // Every problem at once: the start-time checks of the sections that are valid, too.
    const all = await checkValidatedConfig(validated, { runningAsRoot: process.getuid?.() === 0, purpose: 'serve', configFile: values['config'] as string | undefined, env: process.env });
    throw new ConfigError(all.problems);
  }
  const config = deepFreeze(validated.config);
  const logger = createLogger(config.log.level);
  if (config.mode === 'development') {
    logger.warn(
      { stateDir: config.stateDir, secrets: dev?.path },
      'DEVELOPMENT MODE: secrets were generated into the state directory; do not expose this server. Give --config for production.',
    );
  }
  const wanted = values['workers'] === undefined ? config.cluster.workers : parseWorkers(values['workers'] as string);
  const workers = wanted === 'auto' ? availableParallelism() : wanted;
  if (workers > 1) {
    // The workers run the start-time checks again; the primary runs them first, so a refused start lists every problem.
    const checks = await startChecks(config, { runningAsRoot: process.getuid?.() === 0, purpose: 'serve', env: process.env });
    for (const warning of checks.warnings) logger.warn({}, warning);
    if (checks.prepared === undefined) throw new ConfigError(checks.problems);
    // Cluster mode: this process is the primary (packages/server/src/cluster/primary.ts); it handles its own signals.
    const { startPrimary } = await import('../cluster/primary.ts');
    const primary = startPrimary({ config, logger, workers, process: true, reloadConfig: () => checked(resolveConfig(values, 'serve').validated) });
    startupDone();
    primary.ready.then(({ port, adminPort }) => dev !== undefined && announceDevKey(dev, config, port, adminPort), () => undefined);
    void primary.done.then((code) => {
      if (code !== 0) notePendingDevKey(dev, config.stateDir);
      process.exit(code);
    });
    return;
  }
  const { startServer } = await import('../app/app.ts');
  const server = await startServer({ config, logger });
  startupDone();
  // A connect storm no longer leaves an idle server with a 64 MiB young generation (util/young-generation.ts).
  youngGenerationHold.enable();
  if (dev !== undefined) announceDevKey(dev, config, server.port, server.adminPort);
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
  // A reload (systemctl reload, kill -HUP) must not end a single process: only a cluster primary replaces workers.
  process.on('SIGHUP', () => logger.warn({ signal: 'SIGHUP' }, 'SIGHUP ignored: a configuration reload needs cluster mode (--workers N); restart this process to apply a new configuration (API keys reload by themselves)'));
}

async function token(values: Values): Promise<void> {
  const sub = values['sub'];
  if (typeof sub !== 'string') fail('herald token: --sub USER is required (herald token --help)');
  const ttl = values['ttl'] === undefined ? 3600 : Number(values['ttl']);
  if (!Number.isInteger(ttl) || ttl <= 0) fail('herald token: --ttl must be a positive integer (seconds)');
  const config = checked(resolveConfig(values, 'read').validated);
  const secret = config.auth.hmacSecret ?? (config.auth.hmacSecretFile ? readFileSync(config.auth.hmacSecretFile, 'utf8').trim() : undefined);
  if (secret === undefined || !config.auth.algorithms.includes('HS256')) {
    fail(
      config.mode === 'development'
        ? `herald token: no development secret in ${config.stateDir} yet: start Herald once (npm start) to generate it`
        : 'herald token: needs HS256 in auth.algorithms and its secret (HERALD_AUTH_HMAC_SECRET or auth.hmacSecretFile)',
    );
  }
  let info: unknown;
  if (typeof values['info'] === 'string') {
    info = parseJsonSafely(values['info']);
    if (info === undefined) fail('herald token: --info must be JSON');
  }
  const { mintConnectionToken } = await import('@herald/server-sdk');
  const token = await mintConnectionToken({
    sub,
    ttlSeconds: ttl,
    key: secret,
    algorithm: 'HS256',
    ...(info === undefined ? {} : { info }),
    ...(config.auth.audience === undefined ? {} : { audience: config.auth.audience }),
    ...(config.auth.issuer === undefined ? {} : { issuer: config.auth.issuer }),
  });
  process.stdout.write(token + '\n');
}

async function checkConfig(values: Values): Promise<void> {
  const file = (values['config'] as string | undefined) || process.env['HERALD_CONFIG'];
  if (!file) fail('herald check-config: --config FILE (or HERALD_CONFIG) is required (herald check-config --help)');
  const { validated } = resolveConfig({ config: file }, 'check');
  const result = await checkValidatedConfig(validated, { runningAsRoot: process.getuid?.() === 0, purpose: 'check', configFile: file, env: process.env });
  for (const warning of result.warnings) process.stderr.write(`warning: ${warning}\n`);
  if (result.problems.length > 0) {
    const count = result.problems.length;
    fail(`${file}: ${count} problem${count === 1 ? '' : 's'}; herald serve would refuse to start:\n  - ${result.problems.join('\n  - ')}`);
  }
  process.stdout.write(`${file}: ok (${validated.config.mode} mode)\n`);
}

/** Who ran a command, for the audit log: `cli:<OS user>`. */
function cliActor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

/** The change is made; only its audit entry is missing (a state file without the console's tables). */
function auditFailed(error: unknown): void {
  process.stderr.write(`herald: the audit log entry was not written (${error instanceof Error ? error.message : String(error)})\n`);
}

/** `herald keys create|list|revoke`: the keys of the state directory (packages/server/src/cli/key-backend.ts). */
async function keys(action: 'create' | 'list' | 'revoke', values: Values): Promise<void> {
  // The config gives the state directory, the engine and the names of the keys it holds; --state-dir alone needs no config.
  const stateDirFlag = values['state-dir'] as string | undefined;
  const configFlag = values['config'] as string | undefined;
  const config = stateDirFlag !== undefined && configFlag === undefined ? undefined : checked(resolveConfig({ config: configFlag }, 'read').validated);
  const stateDir = stateDirFlag ?? config?.stateDir ?? '.herald';
  const backend = openKeyBackend(keyBackendKind(config, stateDir), stateDir, (line) => process.stderr.write(line + '\n'));
  let outcome: { exit: string } | undefined;
  const audits: AuditInput[] = [];
  try {
    outcome = keysWith(backend, action, values, config, stateDir, audits);
    // The state file keeps the audit log beside the keys.
    for (const entry of audits) await backend.audit(entry).catch(auditFailed);
  } finally {
    backend.close();
  }
  if (outcome !== undefined) fail(outcome.exit);
  // The redis engine keeps its audit log in Redis (the memory engine's is inside the server: not reachable).
  if (audits.length > 0 && backend.kind === 'json' && config?.engine.type === 'redis') {
    try {
      const { openAdminStore } = await import('./admin-command.ts');
      const opened = await openAdminStore(config);
      try {
        for (const entry of audits) await opened.store.appendAudit(entry, Date.now());
      } finally {
        await opened.close();
      }
    } catch (error) {
      auditFailed(error);
    }
  }
}

/** The work of `herald keys`; a refusal is returned (the backend must be closed before exiting). */
function keysWith(
  backend: KeyBackend,
  action: 'create' | 'list' | 'revoke',
  values: Values,
  config: Config | undefined,
  stateDir: string,
  audits: AuditInput[],
): { exit: string } | undefined {
  const configKeys = config?.api.keys ?? [];
  const dev = config === undefined || config.mode === 'development' ? readDevSecrets(stateDir) : undefined;
  const now = Date.now();
  const name = values['name'] as string | undefined;
  switch (action) {
    case 'create': {
      if (name === undefined) return { exit: 'herald keys create: --name NAME is required' };
      if (values['scopes'] === undefined) return { exit: 'herald keys create: --scopes is required (publish, read, admin; comma-separated)' };
      const scopes = parseScopes(values['scopes'] as string);
      if (typeof scopes === 'string') return { exit: `herald keys create: ${scopes}` };
      const reservedNames = new Set([...configKeys.map((k) => k.name), ...(dev === undefined ? [] : [DEV_KEY_NAME])]);
      const expires = values['expires'] as string | undefined;
      const created = backend.update((stored) => {
        const outcome = createKey(stored, { name, scopes, expires, reservedNames, now });
        return { keys: 'error' in outcome ? null : outcome.keys, result: outcome };
      });
      if ('error' in created) return { exit: `herald keys create: ${created.error}` };
      audits.push({ actor: cliActor(), action: 'cli.key.create', target: name, address: 'local', outcome: 'ok', detail: { via: 'cli', scopes, prefix: created.entry.prefix } });
      process.stdout.write(created.key + '\n');
      process.stderr.write(
        `Created API key "${name}" (scopes ${scopes.join(',')}${created.entry.notAfter === undefined ? '' : `, refused after ${created.entry.notAfter}`}).\n` +
          `It is shown once, above; only its SHA-256 is kept in ${backend.path}. Running servers accept it within a second.\n`,
      );
      return undefined;
    }
    case 'list': {
      const rows = [
        ...(dev === undefined
          ? []
          : [{ name: DEV_KEY_NAME, scopes: ['admin'], created: dev.created, notAfter: undefined, status: 'active', sha256Prefix: dev.apiKeySha256.slice(0, 12), source: 'development', keyPrefix: dev.apiKeyPrefix }]),
        ...[...configKeys.map((k) => ({ ...k, source: 'config', created: undefined as string | undefined })), ...backend.read().map((k) => ({ ...k, source: 'store' }))].map((k) => ({
          name: k.name,
          scopes: k.scopes as string[],
          created: k.created,
          notAfter: k.notAfter,
          status: keyStatus(k, now) as string,
          sha256Prefix: k.sha256.slice(0, 12),
          source: k.source,
          keyPrefix: 'prefix' in k ? (k.prefix as string | undefined) : undefined,
        })),
      ];
      if (values['json'] === true) {
        process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
        return undefined;
      }
      const table = [['NAME', 'SCOPES', 'CREATED', 'NOT AFTER', 'STATUS', 'SHA256', 'SOURCE', 'KEY']];
      for (const r of rows) {
        table.push([r.name, r.scopes.join(','), r.created ?? '-', r.notAfter ?? '-', r.status, r.sha256Prefix + '…', r.source, r.keyPrefix === undefined ? '-' : r.keyPrefix + '…']);
      }
      const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      process.stdout.write(table.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
      return undefined;
    }
    case 'revoke': {
      if (name === undefined) return { exit: 'herald keys revoke: --name NAME is required' };
      const graceMs = values['grace'] === undefined ? 0 : parseDuration(values['grace'] as string);
      if (graceMs === undefined) return { exit: 'herald keys revoke: --grace must be a duration such as 0, 90s, 15m, 24h or 7d' };
      if (dev !== undefined && name === DEV_KEY_NAME) {
        return { exit: `herald keys revoke: "${DEV_KEY_NAME}" is the development key; delete ${devSecretsPath(stateDir)} and restart for a new one (the token secret changes too)` };
      }
      if (configKeys.some((k) => k.name === name) && !backend.read().some((k) => k.name === name)) {
        return { exit: `herald keys revoke: "${name}" is a key of the config file; set its notAfter there (or remove it) and restart` };
      }
      const outcome = backend.update((stored) => {
        const result = revokeKey(stored, name, graceMs, now);
        return { keys: 'error' in result ? null : result.keys, result };
      });
      if ('error' in outcome) return { exit: `herald keys revoke: ${outcome.error}` };
      const revoked = outcome.entry;
      audits.push({ actor: cliActor(), action: 'cli.key.revoke', target: name, address: 'local', outcome: 'ok', detail: { via: 'cli', notAfter: revoked.notAfter } });
      process.stderr.write(
        Date.parse(revoked.notAfter!) <= now
          ? `Revoked API key "${name}": refused from now on (running servers within a second).\n`
          : `API key "${name}" is refused after ${revoked.notAfter}.\n`,
      );
      return undefined;
    }
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  let [name, ...rest] = args;
  const { commands, actions } = name === 'serve' ? { commands: ownCommands, actions: { admin: [], apps: [], webhooks: [] } } : await commandTable();
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const topic = name === 'help' ? rest.join(' ') : '';
    const command = commands[topic];
    process.stdout.write((command === undefined ? usage(commands) : command.help) + '\n');
    return;
  }
  if (name === 'keys') {
    const action = rest[0];
    if (action === undefined || action === '--help' || action === '-h') {
      if (action === undefined) fail(`herald keys: expected create, list or revoke\n\n${commands['keys']!.help}`);
      process.stdout.write(commands['keys']!.help + '\n');
      return;
    }
    if (action !== 'create' && action !== 'list' && action !== 'revoke') fail(`herald keys: expected create, list or revoke, not "${action}" (herald keys --help)`);
    name = `keys ${action}`;
    rest = rest.slice(1);
  }
  if (name === 'admin') {
    const action = rest[0];
    if (action === undefined || action === '--help' || action === '-h') {
      if (action === undefined) fail(`herald admin: expected ${actions.admin.join(', ')}\n\n${commands['admin']!.help}`);
      process.stdout.write(commands['admin']!.help + '\n');
      return;
    }
    if (!actions.admin.includes(action)) fail(`herald admin: expected ${actions.admin.join(', ')}, not "${action}" (herald admin --help)`);
    name = `admin ${action}`;
    rest = rest.slice(1);
  }
  if (name === 'apps') {
    const action = rest[0];
    if (action === undefined || action === '--help' || action === '-h') {
      if (action === undefined) fail(`herald apps: expected ${actions.apps.join(', ')}\n\n${commands['apps']!.help}`);
      process.stdout.write(commands['apps']!.help + '\n');
      return;
    }
    if (!actions.apps.includes(action)) fail(`herald apps: expected ${actions.apps.join(', ')}, not "${action}" (herald apps --help)`);
    name = `apps ${action}`;
    rest = rest.slice(1);
  }
  if (name === 'webhooks') {
    const action = rest[0];
    if (action === undefined || action === '--help' || action === '-h') {
      if (action === undefined) fail(`herald webhooks: expected ${actions.webhooks.join(' or ')}\n\n${commands['webhooks']!.help}`);
      process.stdout.write(commands['webhooks']!.help + '\n');
      return;
    }
    if (!actions.webhooks.includes(action)) fail(`herald webhooks: expected ${actions.webhooks.join(' or ')}, not "${action}" (herald webhooks --help)`);
    name = `webhooks ${action}`;
    rest = rest.slice(1);
  }
  // Only `serve` holds the young generation until it listens.
  if (name !== 'serve') startupDone();
  const command = commands[name];
  if (command === undefined || name.startsWith('-')) fail(`herald: unknown command "${name}"\n\n${usage(commands)}`);
  const parsed = parseCommandArgs(name, command, rest);
  if (parsed === 'help') {
    process.stdout.write(command.help + '\n');
    return;
  }
  return command.run(parsed.values, parsed.positionals);
}

main().catch((error: unknown) => {
  if (error instanceof ConfigError) {
    process.stderr.write(error.message + '\n');
    process.exit(2);
  }
  process.stderr.write(`herald: ${(error as Error).message}\n`);
  process.exit(1);
});
