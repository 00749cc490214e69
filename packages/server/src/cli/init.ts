/**
 * `herald init`: a starter production setup in one directory.
 *
 *   DIR/herald.json          the config: production mode, no secret in it, only file references
 *   DIR/secrets/hmac-secret  the HS256 token secret (0600, directory 0700)
 *   DIR/state/               the state directory (0700); api-keys.json holds the hash of an admin key
 *
 * The admin key is made the way `herald keys create` makes one and shown
 * once. Existing files are never overwritten without --force, and a refused
 * init changes nothing: every target is checked before anything is written.
 * Paths in the config are absolute, since Herald reads them relative to its
 * working directory, not to the config file.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { validateConfig } from '../config/load.ts';
import { createKey } from '../auth/key-store.ts';
import { peekKeys } from '../store/api-key-table.ts';
import { STATE_FILE, stateFilePath } from '../store/sqlite-store.ts';
import { openKeyBackend } from './key-backend.ts';
import { fail, intOption, type Command, type Values } from './command.ts';

/** Name of the admin key `herald init` creates in the key store. */
export const INIT_KEY_NAME = 'admin';
/** The origin written as a placeholder in cors.origins. */
export const PLACEHOLDER_ORIGIN = 'https://app.example.com';

export const initCommand: Command = {
  summary: 'write a starter production config, its token secret and an admin API key',
  help: `Usage: herald init [--dir DIR] [--config FILE] [--host HOST] [--port PORT] [--force]

Writes a starter production setup:
  DIR/herald.json          the config (production mode; secrets only as file references)
  DIR/secrets/hmac-secret  a new HS256 token secret, mode 0600
  DIR/state/               the state directory, mode 0700, with an API key store
                           holding an admin key (shown once, only its hash is kept)
then prints the next steps. \`herald check-config --config DIR/herald.json\`
accepts what it writes. Existing files are not overwritten (nothing is
changed) unless --force is given.

Options:
  --dir DIR         where to write (default: the current directory)
  --config FILE     the config file to write (default DIR/herald.json)
  --host HOST       address of the public listener (listen.host; default 127.0.0.1)
  --port PORT       port of the public listener (listen.port; default 8000)
  --force           overwrite an existing config and secret, and replace the
                    store's "${INIT_KEY_NAME}" key (tokens signed with the old secret stop working)`,
  options: {
    dir: { type: 'string' },
    config: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    force: { type: 'boolean' },
  },
  run: init,
};

/** The starter config: every path absolute, no secret. */
export function starterConfig(paths: { stateDir: string; secretFile: string }, host: string, port: number): Record<string, unknown> {
  return {
    mode: 'production',
    stateDir: paths.stateDir,
    listen: { host, port },
    admin: { host: '127.0.0.1', port: 8001 },
    log: { level: 'info' },
    auth: { algorithms: ['HS256'], hmacSecretFile: paths.secretFile },
    api: { keys: [] },
    cors: { origins: [PLACEHOLDER_ORIGIN] },
    channels: {
      defaults: { historySize: 300, historyTtlMs: 120000, presence: true },
      namespaces: [
        { name: 'chat', joinLeave: true },
        { name: 'user', private: true, presence: false },
        { name: 'feed', presence: false },
      ],
    },
    engine: { type: 'sqlite' },
    shutdown: { drainTimeoutMs: 30000 },
  };
}

function init(values: Values): void {
  const force = values['force'] === true;
  const dir = resolve((values['dir'] as string | undefined) ?? '.');
  const configFile = resolve((values['config'] as string | undefined) ?? join(dir, 'herald.json'));
  const secretFile = join(dir, 'secrets', 'hmac-secret');
  const stateDir = join(dir, 'state');
  const host = (values['host'] as string | undefined) ?? '127.0.0.1';
  const port = values['port'] === undefined ? 8000 : intOption('init', 'port', values['port'] as string, 0, 65535);
  if (host.trim() === '') fail('herald init: --host must not be empty');

  const config = starterConfig({ stateDir, secretFile }, host, port);
  // What init writes must pass the schema; the environment plays no part in it.
  const validated = validateConfig(config, { env: {}, file: configFile });
  if (validated.problems.length > 0) fail(`herald init: the config would be invalid:\n  - ${validated.problems.join('\n  - ')}`);

  // Every target first: a refused init writes nothing.
  const existing: string[] = [];
  if (existsSync(configFile)) existing.push(`${configFile} (the config)`);
  if (existsSync(secretFile)) existing.push(`${secretFile} (the token secret)`);
  // Read without writing: a refused init changes nothing.
  if ((peekKeys(stateDir) ?? []).some((k) => k.name === INIT_KEY_NAME)) existing.push(`a key named "${INIT_KEY_NAME}" in ${stateFilePath(stateDir)}`);
  if (existing.length > 0 && !force) {
    fail(
      `herald init: refusing to overwrite:\n  - ${existing.join('\n  - ')}\n` +
        'Nothing was changed. Use another --dir, or --force to replace them (a new token secret invalidates every token signed with the old one).',
    );
  }

  mkdirSync(dir, { recursive: true });
  mkdirSync(dirname(configFile), { recursive: true });
  for (const privateDir of [dirname(secretFile), stateDir]) {
    mkdirSync(privateDir, { recursive: true, mode: 0o700 });
    chmodSync(privateDir, 0o700);
  }
  writeFileAtomically(secretFile, randomBytes(32).toString('base64') + '\n', 0o600);
  // The starter config runs the sqlite engine: the key goes into its state file.
  const backend = openKeyBackend('state-file', stateDir, (line) => process.stderr.write(line + '\n'));
  let created: ReturnType<typeof createKey>;
  try {
    created = backend.update((stored) => {
      const outcome = createKey(
        stored.filter((k) => k.name !== INIT_KEY_NAME),
        { name: INIT_KEY_NAME, scopes: ['admin'], now: Date.now() },
      );
      return { keys: 'error' in outcome ? null : outcome.keys, result: outcome };
    });
  } finally {
    backend.close();
  }
  if ('error' in created) fail(`herald init: ${created.error}`);
  writeFileAtomically(configFile, JSON.stringify(config, null, 2) + '\n', 0o644);

  const base = `http://${host.includes(':') ? `[${host}]` : host}:${port === 0 ? 'PORT' : port}`;
  const localBase = host === '0.0.0.0' || host === '::' ? `http://127.0.0.1:${port === 0 ? 'PORT' : port}` : base;
  const files: [string, string][] = [
    [configFile, 'the config (no secret in it; every option: herald config-docs, docs/config.md)'],
    [secretFile, 'the HS256 token secret (mode 0600)'],
    [`${stateDir}/`, `the state directory (mode 0700); its state file ${STATE_FILE} (0600) holds history, revocations and the API keys (hashed)`],
  ];
  const width = Math.max(...files.map(([path]) => path.length));
  process.stdout.write(
    `Herald: a starter production setup${existing.length > 0 ? ' (replacing the old one)' : ''}:\n\n` +
      files.map(([path, what]) => `  ${path.padEnd(width)}  ${what}\n`).join('') +
      '\n' +
      `Admin API key "${INIT_KEY_NAME}" (scopes admin; shown once, only its SHA-256 is kept):\n\n` +
      `    ${created.key}\n\n` +
      'Next steps (commands that need the key read it from HERALD_KEY):\n' +
      `  1. Edit the config: cors.origins lists your app's origins (replace ${PLACEHOLDER_ORIGIN}), channels.namespaces yours;\n` +
      `     run Herald as an unprivileged user who owns ${dirname(secretFile)} and ${stateDir} (chown -R).\n` +
      `  2. Check it:        herald check-config --config ${configFile}\n` +
      `  3. Start:           herald serve --config ${configFile}   (listens on ${base}; metrics and health on 127.0.0.1:8001)\n` +
      `  4. A token:         herald token --config ${configFile} --sub alice   (your backend signs its own with the same secret)\n` +
      `  5. Publish:         curl -H "Authorization: Bearer $HERALD_KEY" -H 'Content-Type: application/json' \\\n` +
      `                        -d '{"channel":"chat:lobby","data":{"text":"hello"}}' ${localBase}/api/publish\n` +
      `  6. Backend keys:    herald keys create --config ${configFile} --name backend --scopes publish,read\n` +
      `  7. Before going live: herald bench --config ${configFile}${port === 0 ? ` --url ${localBase}` : ''}   (fan-out, latency; herald bench --help)\n\n` +
      'Docs: docs/operations.md ("Going to production"), docs/security.md (production checklist), docs/config.md.\n',
  );
}

/**
 * Writes `text` to `path` through a temporary file and a rename, so the file
 * is never half written and, replacing an old one, does not keep its mode.
 * 0600 is set exactly; other modes are subject to the umask.
 */
function writeFileAtomically(path: string, text: string, mode: number): void {
  const temporary = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(temporary, 'wx', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    if (mode === 0o600) chmodSync(temporary, mode);
    renameSync(temporary, path);
  } catch (error) {
    try {
      unlinkSync(temporary);
    } catch {
      // nothing to clean
    }
    throw error;
  }
}
