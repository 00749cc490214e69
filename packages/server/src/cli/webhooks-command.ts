/**
 * `herald webhooks list-dead|replay`: the dead letters of the webhook
 * outbox (webhooks/outbox.ts), read and put back beside a running server.
 * The sqlite engine's outbox is in the state file, opened as a tool (never
 * as its owner); the running server's dispatcher sees replayed entries
 * within `webhooks.pollIntervalMs`. The redis engine's outbox is in Redis,
 * reached with the config's connection settings (every node sees replayed
 * entries at its next poll). The memory engine's outbox lives inside the
 * server process and cannot be reached.
 */
import type { Config } from '../config/schema.ts';
import { fail, intOption, type Command, type Values } from './command.ts';
import { openRedisTool, TOOL_BUSY_TIMEOUT_MS } from './key-backend.ts';
import { appEndpointGroup } from '../pusher/pusher-webhooks.ts';
import { nativeName } from '../apps/apps.ts';

export const WEBHOOK_ACTIONS = ['endpoints', 'list-dead', 'replay'] as const;

const configHelp = '--config FILE     JSON config file (or HERALD_CONFIG)';
const stateDirHelp = '--state-dir DIR   the state directory, instead of the one in --config (default ./.herald)';

async function withOutbox<T>(command: string, config: Config | undefined, stateDir: string, run: (outbox: import('../webhooks/outbox.ts').WebhookOutbox) => Promise<T>): Promise<T> {
  if (config !== undefined && config.engine.type === 'memory') {
    fail(`herald webhooks ${command}: engine.type is "memory": the memory engine keeps its webhook outbox inside the server process (lost on restart), out of reach`);
  }
  if (config !== undefined && config.engine.type === 'redis') {
    const { RedisOutbox } = await import('../webhooks/redis-outbox.ts');
    const redis = await openRedisTool(config);
    try {
      // The CLI never sends: it takes no lease (owner and lease time unused).
      return await run(new RedisOutbox(redis.command, config.engine.redisPrefix, { owner: 'cli', leaseMs: 1 }));
    } finally {
      await redis.close();
    }
  }
  const { openSqliteStore } = await import('../store/sqlite-store.ts');
  const { SqliteOutbox } = await import('../webhooks/sqlite-outbox.ts');
  const store = openSqliteStore({ stateDir, claim: false, busyTimeoutMs: TOOL_BUSY_TIMEOUT_MS });
  try {
    return await run(new SqliteOutbox(store.db));
  } finally {
    store.close();
  }
}

export function webhookCommands(readConfig: (values: Values) => { config: Config | undefined; stateDir: string }): Record<string, Command> {
  return {
    webhooks: {
      summary: 'webhook endpoints and dead letters: list them, send them again (endpoints | list-dead | replay)',
      help: `Usage:
  herald webhooks endpoints [--json] [--config FILE]
  herald webhooks list-dead [--endpoint NAME] [--limit N] [--json] [--config FILE | --state-dir DIR]
  herald webhooks replay (--all | --seq N[,N…]) [--endpoint NAME] [--config FILE | --state-dir DIR]

Webhook events that were not delivered within webhooks.retryForMs, or that
the endpoint refused for good (3xx, 4xx), are kept as dead letters in the
outbox (the state file on sqlite, Redis on redis). list-dead shows them; replay puts
them back in the queue with fresh retry time (the running server sends them
within a second; the receiver may see an event id again: deduplicate).
docs/hooks.md, docs/operations.md.`,
      options: {},
      run: () => {},
    },
    'webhooks endpoints': {
      summary: 'list the webhook endpoints of the config',
      help: `Usage: herald webhooks endpoints [--json] [--config FILE | --state-dir DIR]

Lists where webhooks go: Herald's endpoints (webhooks.endpoints) and every
app's Pusher webhooks, named app:{id}:{n}: the config's apps
(apps.list[].webhooks) and the apps made from the console or \`herald apps\`
(read from the state file on sqlite, from Redis on redis; the memory
engine's are inside the server, out of reach). Columns: name, format, URL,
events, filter. No secret is shown.

Options:
  --json            one JSON object per line
  ${configHelp}
  ${stateDirHelp}`,
      options: { json: { type: 'boolean' }, config: { type: 'string' }, 'state-dir': { type: 'string' } },
      async run(values) {
        const { config, stateDir } = readConfig(values);
        const rows = [...(config === undefined ? [] : endpointRows(config)), ...(await storedAppRows(config, stateDir))];
        for (const row of rows) {
          if (values['json'] === true) process.stdout.write(JSON.stringify(row) + '\n');
          else process.stdout.write(`${row.name}\t${row.format}\t${row.url}\t${row.events.join(',')}\t${row.filter ?? ''}\n`);
        }
        process.stderr.write(`${rows.length} webhook endpoint(s).\n`);
      },
    },
    'webhooks list-dead': {
      summary: 'list webhook dead letters',
      help: `Usage: herald webhooks list-dead [--endpoint NAME] [--limit N] [--json] [--config FILE | --state-dir DIR]

Lists the dead letters, oldest first: seq (for replay --seq), endpoint,
event name and id, when it died and why. An app's events carry the app's
own channel names and, in --json, its id (\`app\`).

Options:
  --endpoint NAME   only this endpoint's
  --limit N         at most N (default 100, up to 100000)
  --json            one JSON object per line, the event included
  ${configHelp}
  ${stateDirHelp}`,
      options: { endpoint: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' }, config: { type: 'string' }, 'state-dir': { type: 'string' } },
      async run(values) {
        const { config, stateDir } = readConfig(values);
        const limit = values['limit'] === undefined ? 100 : intOption('webhooks list-dead', 'limit', values['limit'] as string, 1, 100000);
        const endpoint = values['endpoint'] as string | undefined;
        const dead = await withOutbox('list-dead', config, stateDir, async (outbox) => ({ entries: await outbox.listDead(limit, endpoint), counts: await outbox.counts() }));
        for (const entry of dead.entries) {
          const event = appLocalEvent(JSON.parse(entry.event) as { name: string; id: string; channel?: string });
          if (values['json'] === true) {
            process.stdout.write(
              JSON.stringify({ seq: entry.seq, endpoint: entry.endpoint, event, attempts: entry.attempts, created_at: new Date(entry.createdAt).toISOString(), dead_at: new Date(entry.deadAt).toISOString(), reason: entry.reason }) + '\n',
            );
          } else {
            process.stdout.write(`${entry.seq}\t${entry.endpoint}\t${event.name}\t${event.id}\t${new Date(entry.deadAt).toISOString()}\t${entry.reason}\n`);
          }
        }
        process.stderr.write(`${dead.counts.dead} dead letter(s), ${dead.counts.pending} event(s) pending.\n`);
      },
    },
    'webhooks replay': {
      summary: 'send webhook dead letters again',
      help: `Usage: herald webhooks replay (--all | --seq N[,N…]) [--endpoint NAME] [--config FILE | --state-dir DIR]

Puts dead letters back in the outbox, due now, with a fresh retry time; they
queue behind the events pending now. The running server sends them within
webhooks.pollIntervalMs (1 s); a stopped one at its next start.

Options:
  --all             every dead letter (of --endpoint, when given)
  --seq N[,N…]      these (seq from list-dead)
  --endpoint NAME   only this endpoint's
  ${configHelp}
  ${stateDirHelp}`,
      options: { all: { type: 'boolean' }, seq: { type: 'string' }, endpoint: { type: 'string' }, config: { type: 'string' }, 'state-dir': { type: 'string' } },
      async run(values) {
        const { config, stateDir } = readConfig(values);
        const all = values['all'] === true;
        const seqText = values['seq'] as string | undefined;
        if (all === (seqText !== undefined)) fail('herald webhooks replay: give --all or --seq N[,N…] (one of them) (herald webhooks replay --help)');
        let seqs: number[] | undefined;
        if (seqText !== undefined) {
          seqs = seqText.split(',').map((part) => intOption('webhooks replay', 'seq', part.trim(), 1, 2 ** 31 - 1));
        }
        const endpoint = values['endpoint'] as string | undefined;
        const count = await withOutbox('replay', config, stateDir, async (outbox) =>
          outbox.replay(Date.now(), { ...(seqs === undefined ? {} : { seqs }), ...(endpoint === undefined ? {} : { endpoint }) }),
        );
        process.stdout.write(`${count}\n`);
        process.stderr.write(`Replayed ${count} dead letter(s); the server sends them within a second.\n`);
      },
    },
  };
}

/**
 * A dead letter's event as its receiver knows it: an app's channel is kept
 * inside the server as `~{id}~name`; the listing shows `name` and the app's
 * id (the names a Pusher webhook carries), a native channel as it is.
 */
function appLocalEvent<T extends { channel?: string }>(event: T): T & { app?: string } {
  if (event.channel === undefined) return event;
  const local = nativeName(event.channel);
  if (local === event.channel) return event;
  return { ...event, channel: local, app: event.channel.slice(1, event.channel.length - local.length - 1) };
}

interface EndpointRow {
  readonly name: string;
  readonly format: 'herald' | 'pusher';
  readonly url: string;
  readonly events: readonly string[];
  /** Namespaces (Herald) or a channel prefix (Pusher) the endpoint keeps to. */
  readonly filter?: string | undefined;
  readonly app?: string | undefined;
}

/** The webhooks of the apps in the engine's store (none on memory: they live in the server process). */
async function storedAppRows(config: Config | undefined, stateDir: string): Promise<EndpointRow[]> {
  if (config !== undefined && config.engine.type === 'memory') return [];
  let records: import('../apps/app-store.ts').AppRecord[];
  if (config !== undefined && config.engine.type === 'redis') {
    const { RedisAppStore } = await import('../apps/redis-app-store.ts');
    const redis = await openRedisTool(config);
    try {
      records = await new RedisAppStore(redis.command, config.engine.redisPrefix).list();
    } finally {
      await redis.close();
    }
  } else {
    const { existsSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { openSqliteStore, STATE_FILE } = await import('../store/sqlite-store.ts');
    if (!existsSync(join(stateDir, STATE_FILE))) return [];
    const { SqliteAppStore } = await import('../apps/sqlite-app-store.ts');
    const store = openSqliteStore({ stateDir, claim: false, busyTimeoutMs: TOOL_BUSY_TIMEOUT_MS });
    try {
      records = await new SqliteAppStore(store.db).list();
    } finally {
      store.close();
    }
  }
  const configIds = new Set(config?.apps.list.map((app) => app.id) ?? []);
  return records
    .filter((record) => !configIds.has(record.id))
    .flatMap((record) =>
      record.webhooks.map((hook, i) => ({
        name: appEndpointGroup(record.id) + i,
        format: 'pusher' as const,
        url: hook.url,
        events: hook.events,
        app: record.id,
        ...(hook.channelPrefix === undefined ? {} : { filter: `channelPrefix=${hook.channelPrefix}` }),
      })),
    );
}

/** The config's endpoints, as the server names them (apps' as in pusher/pusher-webhooks.ts). */
function endpointRows(config: Config): EndpointRow[] {
  return [
    ...config.webhooks.endpoints.map((endpoint) => ({
      name: endpoint.name,
      format: 'herald' as const,
      url: endpoint.url,
      events: endpoint.events,
      ...(endpoint.namespaces === undefined ? {} : { filter: `namespaces=${endpoint.namespaces.join(',')}` }),
    })),
    ...config.apps.list.flatMap((app) =>
      app.webhooks.map((hook, i) => ({
        name: appEndpointGroup(app.id) + i,
        format: 'pusher' as const,
        url: hook.url,
        events: hook.events,
        app: app.id,
        ...(hook.channelPrefix === undefined ? {} : { filter: `channelPrefix=${hook.channelPrefix}` }),
      })),
    ),
  ];
}
