/**
 * `herald apps …`: the apps of the Pusher endpoint (docs/pusher.md, "Apps"),
 * created and changed in the engine's store while Herald runs (the sqlite
 * state file opened as a tool beside its owner, or Redis; the memory
 * engine's store lives inside the server and cannot be reached). Running
 * servers are told at once (apps/apps-notice.ts: the control topic on
 * Redis, a notice beside the state file on sqlite), and see the change
 * within `apps.pollIntervalMs` should the notice be lost. Apps of the config
 * are listed, and read only here. Every change is in the audit log (actor
 * `cli:<user>`); a secret is printed once (create, rotate-secret) and never
 * written to the log.
 */
import { hostname, userInfo } from 'node:os';
import type { Config } from '../config/schema.ts';
import type { AdminStore } from '../console/admin-store.ts';
import type { AppStore } from '../apps/app-store.ts';
import { AppActionError, AppAdmin, type AppView } from '../apps/app-admin.ts';
import { fail, type Command, type Values } from './command.ts';
import { openRedisTool, TOOL_BUSY_TIMEOUT_MS } from './key-backend.ts';

export const APPS_ACTIONS = ['list', 'create', 'show', 'update', 'rotate-secret', 'delete'] as const;

interface OpenStores {
  readonly apps: AppStore;
  readonly audit: AdminStore;
  readonly where: string;
  /** Tells running servers that the app changed, as the console does (apps/apps-notice.ts). */
  announce(id: string): Promise<void>;
  close(): Promise<void>;
}

/** The app store (and the audit log beside it) of the config's engine, opened as a tool. */
async function openStores(config: Config): Promise<OpenStores> {
  if (config.engine.type === 'sqlite') {
    const { openSqliteStore } = await import('../store/sqlite-store.ts');
    const { SqliteAdminStore } = await import('../console/sqlite-admin-store.ts');
    const { SqliteAppStore } = await import('../apps/sqlite-app-store.ts');
    const { writeAppsNotice } = await import('../apps/apps-notice.ts');
    const file = openSqliteStore({ stateDir: config.stateDir, claim: false, busyTimeoutMs: TOOL_BUSY_TIMEOUT_MS });
    return {
      apps: new SqliteAppStore(file.db),
      audit: new SqliteAdminStore(file.db),
      where: file.path,
      // The server that owns the file watches for the notice (a failed write leaves it to the server's poll).
      announce: async (id) => void writeAppsNotice(config.stateDir, id),
      close: async () => file.close(),
    };
  }
  if (config.engine.type === 'redis') {
    const { redisTarget } = await import('../app/engine.ts');
    const { RedisAdminStore } = await import('../console/redis-admin-store.ts');
    const { RedisAppStore } = await import('../apps/redis-app-store.ts');
    const { publishControlCommand } = await import('../broker/redis-engine.ts');
    const redis = await openRedisTool(config);
    const sharded = config.engine.redisCluster.length > 0;
    return {
      apps: new RedisAppStore(redis.command, config.engine.redisPrefix),
      audit: new RedisAdminStore(redis.command, config.engine.redisPrefix),
      where: redisTarget(config),
      // On the engine's control topic, as the console's notice: every node reloads the store's apps.
      announce: (id) => publishControlCommand(redis.command, config.engine.redisPrefix, sharded, `cli:${hostname()}:${process.pid}`, { kind: 'apps_changed', id }),
      close: redis.close,
    };
  }
  fail('herald apps: engine.type is "memory": its apps live inside the running server and no other process can reach them; use the console, or the sqlite engine (the default) or redis');
}

function actor(): string {
  try {
    return `cli:${userInfo().username}`;
  } catch {
    return 'cli';
  }
}

const configHelp = '--config FILE     the server\'s config file (default: HERALD_CONFIG, else development mode in ./.herald)';

function idArg(command: string, id: string | undefined): string {
  if (id === undefined || !/^[A-Za-z0-9_-]{1,64}$/.test(id)) fail(`herald apps ${command}: give the app id (1-64 characters of A-Z a-z 0-9 _ -)`);
  return id;
}

/** The settings given by flags and --settings JSON (flags win). */
function settingsFrom(command: string, values: Values): Record<string, unknown> {
  let settings: Record<string, unknown> = {};
  const json = values['settings'];
  if (typeof json === 'string') {
    try {
      const parsed: unknown = JSON.parse(json);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      settings = parsed as Record<string, unknown>;
    } catch {
      fail(`herald apps ${command}: --settings must be a JSON object (e.g. '{"limits":{"maxConnections":1000}}')`);
    }
  }
  if (typeof values['name'] === 'string') settings['name'] = values['name'];
  if (values['enable'] === true && values['disable'] === true) fail(`herald apps ${command}: --enable or --disable, not both`);
  if (values['enable'] === true) settings['enabled'] = true;
  if (values['disable'] === true) settings['enabled'] = false;
  const onOff = (flag: string, field: string) => {
    const value = values[flag];
    if (value === undefined) return;
    if (value !== 'on' && value !== 'off') fail(`herald apps ${command}: --${flag} must be on or off`);
    settings[field] = value === 'on';
  };
  onOff('client-events', 'clientEvents');
  onOff('user-authentication', 'userAuthentication');
  onOff('subscription-count', 'subscriptionCount');
  if (typeof values['origins'] === 'string') {
    settings['allowedOrigins'] = values['origins'] === 'default' ? null : values['origins'].split(',').map((o) => o.trim()).filter((o) => o !== '');
  }
  return settings;
}

function formatTime(ms: number | null): string {
  return ms === null ? '-' : new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

function describe(app: AppView): string {
  const lines = [
    `id                  ${app.id}`,
    `key                 ${app.key}`,
    `name                ${app.name}`,
    `source              ${app.source}${app.default ? ' (the default app: unprefixed channels)' : ''}`,
    `enabled             ${app.enabled}`,
    `clientEvents        ${app.clientEvents}`,
    `userAuthentication  ${app.userAuthentication}`,
    `subscriptionCount   ${app.subscriptionCount}`,
    `allowedOrigins      ${app.allowedOrigins === null ? "(the server's cors.origins)" : app.allowedOrigins.join(', ') || '(none)'}`,
    `limits              ${Object.entries(app.limits)
      .map(([k, v]) => `${k}=${v}`)
      .join(' ')}`,
    `webhooks            ${app.webhooks.length === 0 ? '(none)' : app.webhooks.map((w) => `${w.url} [${w.events.join(',')}]${w.channelPrefix === undefined ? '' : ` prefix=${w.channelPrefix}`}`).join('\n                    ')}`,
    `created             ${formatTime(app.createdAt)}`,
    `updated             ${formatTime(app.updatedAt)}`,
  ];
  return lines.join('\n') + '\n';
}

const settingOptions = {
  name: { type: 'string' },
  enable: { type: 'boolean' },
  disable: { type: 'boolean' },
  'client-events': { type: 'string' },
  'user-authentication': { type: 'string' },
  'subscription-count': { type: 'string' },
  origins: { type: 'string' },
  settings: { type: 'string' },
} as const;

const settingHelp = `  --name NAME                   a label for people
  --enable | --disable          whether it accepts connections and API requests
  --client-events on|off        client-* events on private and presence channels
  --user-authentication on|off  pusher:signin (user authentication, watchlist)
  --subscription-count on|off   pusher_internal:subscription_count to subscribers
                                of non-presence channels (Pusher's subscription counting)
  --origins LIST|default        origins allowed to open its sockets, comma-separated
                                (default: the server's cors.origins)
  --settings JSON               any settings as JSON, e.g. limits and webhooks:
                                '{"limits":{"maxConnections":1000},"webhooks":[...]}'
                                (the flags above win over it)`;

export function appsCommands(loadConfig: (values: Values) => Config): Record<string, Command> {
  const withAdmin = async (values: Values, run: (admin: AppAdmin, stores: OpenStores) => Promise<void>): Promise<void> => {
    const config = loadConfig(values);
    const stores = await openStores(config);
    try {
      await run(new AppAdmin({ config, store: stores.apps, announce: (id) => stores.announce(id) }), stores);
    } catch (error) {
      if (error instanceof AppActionError) fail(`herald apps: ${error.message}`);
      throw error;
    } finally {
      await stores.close();
    }
  };
  const audit = (stores: OpenStores, action: string, target: string, detail?: Record<string, unknown>) =>
    stores.audit.appendAudit({ actor: actor(), action, target, address: 'local', outcome: 'ok', detail: { via: 'cli', ...detail } }, Date.now());
  const common = { config: { type: 'string' } } as const;
  return {
    apps: {
      summary: 'Pusher apps (list | create | show | update | rotate-secret | delete)',
      help: `Usage:
  herald apps list [--json]
  herald apps create [--id ID] [--key KEY] [settings] [--json]
  herald apps show ID [--json]
  herald apps update ID [settings] [--json]
  herald apps rotate-secret ID [--json]
  herald apps delete ID --yes
  (each also takes --config FILE)

Apps are the tenants of the Pusher endpoint (docs/pusher.md, "Apps"): each
has an id, a public key and a secret (the HMAC key of its signatures). These
commands keep apps in the engine's store (the state file herald.db on the
sqlite engine, the default, or Redis), beside the apps of the config file,
which they list but do not change. Running servers are told of a change at
once (and look for changes every apps.pollIntervalMs, 2 s). A secret is
printed once, by create and rotate-secret. Every change is in the audit log.
herald apps ACTION --help tells more.`,
      options: {},
      run: () => undefined,
    },
    'apps list': {
      summary: 'list apps',
      help: `Usage: herald apps list [--json] [--config FILE]

Lists the config's apps and the store's (never a secret).

Options:
  --json            JSON instead of a table
  ${configHelp}`,
      options: { ...common, json: { type: 'boolean' } },
      run: async (values) => {
        await withAdmin(values, async (admin) => {
          const apps = await admin.list();
          if (values['json'] === true) {
            process.stdout.write(JSON.stringify(apps, null, 2) + '\n');
            return;
          }
          const table = [['ID', 'KEY', 'NAME', 'SOURCE', 'STATUS', 'CREATED']];
          for (const a of apps) table.push([a.id, a.key, a.name, a.source + (a.default ? ' (default)' : ''), a.enabled ? 'enabled' : 'disabled', formatTime(a.createdAt)]);
          const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
          process.stdout.write(table.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n');
        });
      },
    },
    'apps create': {
      summary: 'create an app',
      help: `Usage: herald apps create [--id ID] [--key KEY] [settings] [--json] [--config FILE]

Creates an app in the store. The id (default: 7 random digits, as Pusher's),
the key (default: 20 random hex characters) and the secret (always 32 random
hex characters from the CSPRNG) are printed; the secret only this once (on
stdout: pipe it to your secret store). Ids and keys are unique across the
config's apps and the store's. Its channels are its own: the same name in
another app never crosses.

Options:
  --id ID           1-64 characters of A-Z a-z 0-9 _ -
  --key KEY         1-128 characters of A-Z a-z 0-9 _ -
${settingHelp}
  --json            {"app": …, "secret": …} on stdout
  ${configHelp}`,
      options: { ...common, ...settingOptions, id: { type: 'string' }, key: { type: 'string' }, json: { type: 'boolean' } },
      run: async (values) => {
        const input: Record<string, unknown> = settingsFrom('create', values);
        if (typeof values['id'] === 'string') input['id'] = values['id'];
        if (typeof values['key'] === 'string') input['key'] = values['key'];
        await withAdmin(values, async (admin, stores) => {
          const made = await admin.create(input);
          await audit(stores, 'app.create', made.app.id, { key: made.app.key, name: made.app.name });
          if (values['json'] === true) {
            process.stdout.write(JSON.stringify({ app: made.app, secret: made.secret }, null, 2) + '\n');
          } else {
            process.stdout.write(made.secret + '\n');
            process.stderr.write(describe(made.app));
          }
          process.stderr.write(`Created app "${made.app.id}" in ${stores.where}; its secret (above) is shown once. Running servers are told at once (and look every ${loadConfig(values).apps.pollIntervalMs} ms).\n`);
        });
      },
    },
    'apps show': {
      summary: 'show an app',
      help: `Usage: herald apps show ID [--json] [--config FILE]

Options:
  --json            JSON instead of text
  ${configHelp}`,
      options: { ...common, json: { type: 'boolean' } },
      args: ['id'],
      run: async (values, args) => {
        const id = idArg('show', args[0]);
        await withAdmin(values, async (admin) => {
          const app = await admin.get(id);
          process.stdout.write(values['json'] === true ? JSON.stringify(app, null, 2) + '\n' : describe(app));
        });
      },
    },
    'apps update': {
      summary: "change an app's settings",
      help: `Usage: herald apps update ID [settings] [--json] [--config FILE]

Changes the settings given; the others stay (limits given in part keep the
other limits). The id and the key do not change. Config apps: change the
config file.

Options:
${settingHelp}
  --json            the app as JSON
  ${configHelp}`,
      options: { ...common, ...settingOptions, json: { type: 'boolean' } },
      args: ['id'],
      run: async (values, args) => {
        const id = idArg('update', args[0]);
        const change = settingsFrom('update', values);
        if (Object.keys(change).length === 0) fail('herald apps update: nothing to change (herald apps update --help)');
        await withAdmin(values, async (admin, stores) => {
          const app = await admin.update(id, change);
          await audit(stores, 'app.update', id, { fields: Object.keys(change) });
          process.stdout.write(values['json'] === true ? JSON.stringify(app, null, 2) + '\n' : describe(app));
        });
      },
    },
    'apps rotate-secret': {
      summary: "give an app a new secret",
      help: `Usage: herald apps rotate-secret ID [--json] [--config FILE]

Makes a new secret and prints it once. The old one is refused as soon as the
servers reload (at once; within apps.pollIntervalMs at worst): update the app's backends
(the pusher server SDK's secret) and its auth endpoint at once.

Options:
  --json            {"app": …, "secret": …} on stdout
  ${configHelp}`,
      options: { ...common, json: { type: 'boolean' } },
      args: ['id'],
      run: async (values, args) => {
        const id = idArg('rotate-secret', args[0]);
        await withAdmin(values, async (admin, stores) => {
          const rotated = await admin.rotateSecret(id);
          await audit(stores, 'app.rotate_secret', id);
          process.stdout.write(values['json'] === true ? JSON.stringify({ app: rotated.app, secret: rotated.secret }, null, 2) + '\n' : rotated.secret + '\n');
          process.stderr.write(`New secret for app "${id}" (shown once).\n`);
        });
      },
    },
    'apps delete': {
      summary: 'delete an app',
      help: `Usage: herald apps delete ID --yes [--config FILE]

Deletes the app from the store: its connections are closed (4001) and its
key and id are refused as soon as the servers reload. Its channels' history
expires as usual.

Options:
  --yes             yes, delete it
  ${configHelp}`,
      options: { ...common, yes: { type: 'boolean' } },
      args: ['id'],
      run: async (values, args) => {
        const id = idArg('delete', args[0]);
        if (values['yes'] !== true) fail(`herald apps delete: add --yes to delete app "${id}"`);
        await withAdmin(values, async (admin, stores) => {
          const deleted = await admin.delete(id);
          await audit(stores, 'app.delete', id, { key: deleted.key });
          process.stderr.write(`Deleted app "${id}".\n`);
        });
      },
    },
  };
}
