/**
 * Apps: the tenants of one Herald server (docs/pusher.md). Each app has its
 * own id, key and secret, limits, features, origins and webhooks, and its
 * own channels: the same channel name in two apps never crosses. Apps come
 * from the config (`apps.list`, HERALD_APP_*) and, later, from the engine's
 * store (console, `herald apps`). The Pusher endpoint and its HTTP API find
 * an app here by key or id; nothing else reads app secrets.
 */
import { readFileSync } from 'node:fs';
import type { AppConfig, AppLimits, Config, PusherWebhookEvent } from '../config/schema.ts';

/** Shortest app secret accepted in production (Pusher's own secrets are 20 characters). */
export const MIN_APP_SECRET_CHARS = 16;

export interface AppWebhook {
  readonly url: string;
  readonly events: ReadonlySet<PusherWebhookEvent>;
  /** Only channels whose (app-local) name starts with this. */
  readonly channelPrefix: string | undefined;
}

/** One app, with its secret read. Frozen; a changed app is a new object. */
export interface App {
  readonly id: string;
  readonly key: string;
  /** The HMAC key of every signature of this app (socket auth, HTTP API, webhooks). Never logged, never answered. */
  readonly secret: string;
  readonly name: string;
  readonly enabled: boolean;
  readonly clientEvents: boolean;
  readonly userAuthentication: boolean;
  /** Subscription counting: `pusher_internal:subscription_count` to subscribers of non-presence channels (pusher/subscription-counts.ts). */
  readonly subscriptionCount: boolean;
  /** Origins allowed to open sockets; undefined: the server's cors.origins. */
  readonly allowedOrigins: readonly string[] | undefined;
  readonly limits: AppLimits;
  readonly webhooks: readonly AppWebhook[];
  /**
   * What the app's channel names are prefixed with inside the server (hub,
   * broker, presence, history, snapshots): '' for the default app (its
   * channels are the native protocol's unprefixed ones), `~{id}~` for the
   * others. `~` is in neither channel grammar (native, Pusher), so no name of
   * one app is a name of another. See appChannel / localChannel.
   */
  readonly channelPrefix: string;
  /** Where the app was defined: the config file or the environment, or the store (console, CLI). */
  readonly source: 'config' | 'store';
}

/**
 * Finds apps. Guarantees: ids and keys are unique across every app it
 * answers; a lookup answers the app as it is now (a change from the console
 * or another node is seen within the registry's refresh interval).
 */
export interface AppRegistry {
  byKey(key: string): App | undefined;
  byId(id: string): App | undefined;
  list(): readonly App[];
  /** Called after apps were added, changed or removed; `id` names the app. */
  onChange(listener: (id: string) => void): void;
  close(): Promise<void>;
}

/** The server-internal name of an app's channel. */
export function appChannel(app: App, channel: string): string {
  return app.channelPrefix + channel;
}

/** The app-local name of an internal channel of `app`, or undefined when the channel is not the app's. */
export function localChannel(app: Pick<App, 'channelPrefix'>, internal: string): string | undefined {
  if (app.channelPrefix === '') return internal.charCodeAt(0) === 126 /* ~ */ ? undefined : internal;
  return internal.startsWith(app.channelPrefix) ? internal.slice(app.channelPrefix.length) : undefined;
}

/**
 * The name a native client sees for an internal channel: an app's channel
 * `~{id}~name` is `name` (all subscribers of an internal channel are of the
 * same app; `~` is in no channel grammar), any other name is itself.
 */
export function nativeName(channel: string): string {
  if (channel.charCodeAt(0) !== 126 /* ~ */) return channel;
  const end = channel.indexOf('~', 1);
  return end === -1 ? channel : channel.slice(end + 1);
}

/**
 * A user id no token, hook or `/api` request may give: one beginning with
 * `~`, the form the node counts another app's users in (`~{id}~user`,
 * Client.userKey), so the server's `~x~ann` would be app x's `ann`.
 */
export function isReservedUserId(user: string): boolean {
  return user.charCodeAt(0) === 126 /* ~ */;
}

/** The prefix of a non-default app's channels. */
export function channelPrefixOf(id: string): string {
  return `~${id}~`;
}

/** The id of the app whose channels are the native protocol's (apps.default, else the only app of the config). */
export function defaultAppId(config: Config): string | undefined {
  if (config.apps.default !== undefined) return config.apps.default;
  return config.apps.list.length === 1 ? config.apps.list[0]!.id : undefined;
}

/** An app from its config entry and its secret. */
export function appFromConfig(entry: AppConfig, secret: string, defaultId: string | undefined, source: App['source']): App {
  return Object.freeze({
    id: entry.id,
    key: entry.key,
    secret,
    name: entry.name ?? entry.id,
    enabled: entry.enabled,
    clientEvents: entry.clientEvents,
    userAuthentication: entry.userAuthentication,
    subscriptionCount: entry.subscriptionCount,
    allowedOrigins: entry.allowedOrigins === undefined ? undefined : Object.freeze([...entry.allowedOrigins]),
    limits: Object.freeze({ ...entry.limits }),
    webhooks: Object.freeze(entry.webhooks.map((w) => Object.freeze({ url: w.url, events: new Set(w.events), channelPrefix: w.channelPrefix }))),
    channelPrefix: entry.id === defaultId ? '' : channelPrefixOf(entry.id),
    source,
  });
}

/**
 * Reads the secrets of the config's apps (files, environment) and checks
 * the list: unique ids and keys, a secret per app, `apps.default` naming
 * an app. Problems name the config path, never the secret.
 */
export function resolveApps(config: Config, env: Readonly<Record<string, string | undefined>>, problems: string[]): App[] {
  const apps: App[] = [];
  const ids = new Set<string>();
  const keys = new Set<string>();
  const defaultId = defaultAppId(config);
  if (config.apps.default !== undefined && !config.apps.list.some((app) => app.id === config.apps.default)) {
    problems.push(`/apps/default: no app with id "${config.apps.default}" in apps.list`);
  }
  config.apps.list.forEach((entry, i) => {
    const at = `/apps/list/${i}`;
    if (ids.has(entry.id)) problems.push(`${at}/id: "${entry.id}" is used twice`);
    if (keys.has(entry.key)) problems.push(`${at}/key: "${entry.key}" is used twice`);
    ids.add(entry.id);
    keys.add(entry.key);
    if ((entry.secretFile === undefined) === (entry.secretEnv === undefined)) {
      problems.push(`${at}: set secretFile or secretEnv (one of them); the secret is never written in the config file`);
      return;
    }
    let secret: string | undefined;
    if (entry.secretFile !== undefined) {
      try {
        secret = readFileSync(entry.secretFile, 'utf8').trim();
      } catch (error) {
        problems.push(`${at}/secretFile: cannot read ${entry.secretFile} (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
        return;
      }
    } else {
      secret = env[entry.secretEnv!]?.trim();
      if (secret === undefined || secret === '') {
        problems.push(`${at}/secretEnv: the environment variable ${entry.secretEnv} is not set`);
        return;
      }
    }
    if (secret === '') {
      problems.push(`${at}: the secret is empty`);
      return;
    }
    if (config.mode === 'production' && secret.length < MIN_APP_SECRET_CHARS) {
      problems.push(`${at}: production mode needs an app secret of at least ${MIN_APP_SECRET_CHARS} characters (generate one: \`openssl rand -hex 16\`)`);
    }
    apps.push(appFromConfig(entry, secret, defaultId, 'config'));
  });
  return apps;
}

/** The apps of the config alone (no store): what a server without console-made apps answers. */
export class ConfigAppRegistry implements AppRegistry {
  readonly #byKey = new Map<string, App>();
  readonly #byId = new Map<string, App>();
  readonly #list: readonly App[];

  constructor(apps: readonly App[]) {
    this.#list = Object.freeze([...apps]);
    for (const app of apps) {
      this.#byKey.set(app.key, app);
      this.#byId.set(app.id, app);
    }
  }

  byKey(key: string): App | undefined {
    return this.#byKey.get(key);
  }

  byId(id: string): App | undefined {
    return this.#byId.get(id);
  }

  list(): readonly App[] {
    return this.#list;
  }

  onChange(): void {}

  async close(): Promise<void> {}
}
