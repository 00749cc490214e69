/**
 * The apps of the config and of the store (app-store.ts) as one registry.
 * Lookups answer from memory (the Pusher endpoint asks at every connection
 * and request); the store is read again:
 * - at once on `apps_changed` (the console's and `herald apps`'s changes:
 *   every node, cluster worker and Redis node gets the control command, or
 *   on sqlite the owner of the state file `herald apps`'s notice,
 *   apps/apps-notice.ts: `reload()`),
 * - when the store's `version` moved, checked every `pollIntervalMs` (the
 *   safety net for a notice that was lost).
 *
 * Config apps win: a stored app whose id or key is a config app's (the
 * config changed after it was created) is left out, with a warning. Stored
 * apps are never the default app: their channels are prefixed.
 */
import { appFromConfig, channelPrefixOf, type App, type AppRegistry } from './apps.ts';
import type { AppRecord, AppStore } from './app-store.ts';
import { BrokerUnavailableError } from '../broker/broker.ts';

export interface StoreAppRegistryOptions {
  readonly configApps: readonly App[];
  readonly store: AppStore;
  /** How often the store's version is checked; 0: never (tests, tools). */
  readonly pollIntervalMs: number;
  /** A failed read (the previous apps stay in force). */
  readonly onError?: (error: unknown) => void;
  /** A stored app left out (its id or key is a config app's). */
  readonly onConflict?: (id: string, reason: string) => void;
}

/** The App a stored record stands for. */
export function appFromRecord(record: AppRecord): App {
  const app = appFromConfig(
    {
      id: record.id,
      key: record.key,
      name: record.name,
      enabled: record.enabled,
      clientEvents: record.clientEvents,
      userAuthentication: record.userAuthentication,
      subscriptionCount: record.subscriptionCount,
      ...(record.allowedOrigins === null ? {} : { allowedOrigins: record.allowedOrigins }),
      limits: record.limits,
      webhooks: record.webhooks,
    },
    record.secret,
    undefined,
    'store',
  );
  return app.channelPrefix === channelPrefixOf(record.id) ? app : Object.freeze({ ...app, channelPrefix: channelPrefixOf(record.id) });
}

export class StoreAppRegistry implements AppRegistry {
  readonly #options: StoreAppRegistryOptions;
  readonly #configIds: ReadonlySet<string>;
  readonly #configKeys: ReadonlySet<string>;
  #byKey = new Map<string, App>();
  #byId = new Map<string, App>();
  #list: readonly App[] = [];
  /** A fingerprint per stored app id (what changed between two reads). */
  #prints = new Map<string, string>();
  #version: number | undefined;
  readonly #listeners: ((id: string) => void)[] = [];
  #timer: NodeJS.Timeout | undefined;
  #loading: Promise<void> | undefined;
  #again = false;
  #closed = false;

  private constructor(options: StoreAppRegistryOptions) {
    this.#options = options;
    this.#configIds = new Set(options.configApps.map((a) => a.id));
    this.#configKeys = new Set(options.configApps.map((a) => a.key));
    this.#apply([]);
  }

  /**
   * A registry with the store read once; throws when that first read fails,
   * except when the store is unavailable (a cluster primary or Redis that
   * does not answer): then it starts with the config's apps, tells onError,
   * and reads the store when `reload()` or the poll (`watch()`) find it
   * answering again.
   */
  static async open(options: StoreAppRegistryOptions): Promise<StoreAppRegistry> {
    const registry = new StoreAppRegistry(options);
    try {
      await registry.#load();
    } catch (error) {
      if (!(error instanceof BrokerUnavailableError)) throw error;
      options.onError?.(error);
    }
    return registry;
  }

  /** Starts checking the store's version every `pollIntervalMs` (until close). */
  watch(): void {
    if (this.#timer !== undefined || this.#closed || this.#options.pollIntervalMs <= 0) return;
    this.#timer = setInterval(() => this.#poll(), this.#options.pollIntervalMs);
    this.#timer.unref();
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

  onChange(listener: (id: string) => void): void {
    this.#listeners.push(listener);
  }

  /** Reads the store again now (a second call during a read reads once more after it); failures go to onError. */
  reload(): Promise<void> {
    if (this.#loading !== undefined) {
      this.#again = true;
      return this.#loading;
    }
    this.#loading = (async () => {
      try {
        do {
          this.#again = false;
          await this.#load().catch((error: unknown) => this.#options.onError?.(error));
        } while (this.#again && !this.#closed);
      } finally {
        this.#loading = undefined;
      }
    })();
    return this.#loading;
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    await this.#loading;
  }

  #poll(): void {
    if (this.#loading !== undefined || this.#closed) return;
    this.#options.store.version().then(
      (version) => {
        if (version !== this.#version) void this.reload();
      },
      (error: unknown) => this.#options.onError?.(error),
    );
  }

  async #load(): Promise<void> {
    const version = await this.#options.store.version();
    const records = await this.#options.store.list();
    if (this.#closed) return;
    this.#version = version;
    const changed = this.#apply(records);
    for (const id of changed) for (const listener of this.#listeners) listener(id);
  }

  /** Installs config apps plus `records`; answers the ids of stored apps added, changed or removed. */
  #apply(records: readonly AppRecord[]): string[] {
    const byKey = new Map<string, App>();
    const byId = new Map<string, App>();
    const list: App[] = [];
    for (const app of this.#options.configApps) {
      byKey.set(app.key, app);
      byId.set(app.id, app);
      list.push(app);
    }
    const prints = new Map<string, string>();
    for (const record of records) {
      if (this.#configIds.has(record.id) || this.#configKeys.has(record.key) || byKey.has(record.key)) {
        if (!this.#prints.has(record.id) || this.#prints.get(record.id) !== 'conflict') {
          this.#options.onConflict?.(record.id, this.#configIds.has(record.id) ? 'its id is a config app\'s' : 'its key is another app\'s');
        }
        prints.set(record.id, 'conflict');
        continue;
      }
      const app = appFromRecord(record);
      byKey.set(app.key, app);
      byId.set(app.id, app);
      list.push(app);
      prints.set(record.id, JSON.stringify(record));
    }
    const changed: string[] = [];
    for (const [id, print] of prints) if (this.#prints.get(id) !== print) changed.push(id);
    for (const id of this.#prints.keys()) if (!prints.has(id)) changed.push(id);
    this.#byKey = byKey;
    this.#byId = byId;
    this.#list = Object.freeze(list);
    this.#prints = prints;
    return changed;
  }
}
