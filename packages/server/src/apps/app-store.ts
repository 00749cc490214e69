/**
 * Apps created from the console and `herald apps`, kept in the engine's
 * store: the sqlite engine's state file (sqlite-app-store.ts; in cluster
 * mode the primary owns it and workers reach it over IPC), Redis on the
 * redis engine (redis-app-store.ts), or this process's memory on the memory
 * engine (MemoryAppStore below: lost on restart). Apps of the config are
 * not here: the registry (store-app-registry.ts) merges both, and the
 * admin side (app-admin.ts) keeps ids and keys unique across them.
 *
 * Guarantees every implementation keeps:
 * - The secret is stored as it is: it is the HMAC key of every signature
 *   of the app and cannot be hashed. The state file's 0600 permissions, or
 *   Redis's access control, protect it (docs/security.md).
 * - `create` is atomic: two concurrent creates cannot both take one id or
 *   one key. `update` replaces the stored record (last write wins).
 * - `version` grows with every change (create, update, delete), so a
 *   registry that polls it sees a change made by any process (the CLI
 *   beside the server, another node) at its next poll.
 * - Every method reads the shared state when called: no cache.
 * - Records cross the cluster IPC as they are (plain data).
 */
import { Type, type Static } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { AppSchema } from '../config/schema.ts';

/** What the console and the CLI may set on a stored app (the config's app fields less id, key and where the secret is). */
export const AppSettingsSchema = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 128, description: 'A label for people (console, logs).' }),
    enabled: AppSchema.properties.enabled,
    clientEvents: AppSchema.properties.clientEvents,
    userAuthentication: AppSchema.properties.userAuthentication,
    subscriptionCount: AppSchema.properties.subscriptionCount,
    allowedOrigins: Type.Union([Type.Null(), Type.Array(Type.String({ minLength: 1, maxLength: 512 }), { maxItems: 256 })], {
      default: null,
      description: 'Origins allowed to open this app\'s sockets (exact origins, `*.example.com` or `https://*.example.com` patterns, `*`; they replace cors.origins there); null: the server\'s cors.origins.',
    }),
    limits: AppSchema.properties.limits,
    webhooks: AppSchema.properties.webhooks,
  },
  { additionalProperties: false },
);

export type AppSettings = Static<typeof AppSettingsSchema>;

/** A change of settings: any of them, the others kept. */
export const AppSettingsChangeSchema = Type.Partial(AppSettingsSchema, { additionalProperties: false });
export type AppSettingsChange = Static<typeof AppSettingsChangeSchema>;

/** An app in the store. */
export interface AppRecord extends AppSettings {
  readonly id: string;
  readonly key: string;
  /** Kept as it is (an HMAC key); never logged, answered only once (create, rotate). */
  readonly secret: string;
  /** Epoch milliseconds. */
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface AppChange {
  readonly settings?: AppSettingsChange | undefined;
  readonly secret?: string | undefined;
}

export type CreateOutcome = 'created' | 'id_taken' | 'key_taken';

export interface AppStore {
  /** Every stored app, by id. */
  list(): Promise<AppRecord[]>;
  get(id: string): Promise<AppRecord | undefined>;
  /** Adds an app, atomically: nothing is written when its id or its key is taken by a stored app. */
  create(record: AppRecord): Promise<CreateOutcome>;
  /** Changes an app's settings and/or secret (`updatedAt` becomes `now`); undefined when there is none of that id. */
  update(id: string, change: AppChange, now: number): Promise<AppRecord | undefined>;
  /** Removes an app; false when there was none of that id. */
  delete(id: string): Promise<boolean>;
  /** A number that changes with every create, update and delete (registries poll it). */
  version(): Promise<number>;
  close(): Promise<void>;
}

/** The methods of the store, as the cluster IPC names them. */
export type AppStoreMethod = Exclude<keyof AppStore, 'close'>;
export const APP_STORE_METHODS: readonly AppStoreMethod[] = ['list', 'get', 'create', 'update', 'delete', 'version'];

/** The record after a change. */
export function changed(record: AppRecord, change: AppChange, now: number): AppRecord {
  return { ...record, ...change.settings, ...(change.secret === undefined ? {} : { secret: change.secret }), id: record.id, key: record.key, updatedAt: now };
}

/** Settings of a stored record as written (JSON), everything but id, key, secret and times. */
export function settingsJson(record: AppRecord): string {
  const { name, enabled, clientEvents, userAuthentication, subscriptionCount, allowedOrigins, limits, webhooks } = record;
  return JSON.stringify({ name, enabled, clientEvents, userAuthentication, subscriptionCount, allowedOrigins, limits, webhooks });
}

/**
 * Settings read back from a store: defaults filled in (a record written by
 * an older Herald lacks newer limits), anything the schema refuses
 * replaced by the defaults (the app is then listed, disabled).
 */
export function readSettings(json: string, id: string): AppSettings {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    parsed = undefined;
  }
  const raw = typeof parsed === 'object' && parsed !== null ? (parsed as Record<string, unknown>) : {};
  const picked: Record<string, unknown> = {};
  for (const field of Object.keys(AppSettingsSchema.properties)) if (raw[field] !== undefined) picked[field] = raw[field];
  const value = Value.Default(AppSettingsSchema, Value.Clone(picked));
  if (Value.Check(AppSettingsSchema, value)) return value;
  return { ...(Value.Default(AppSettingsSchema, { name: id }) as AppSettings), name: id, enabled: false };
}

/** The memory engine's store: this process only, lost on restart. */
export class MemoryAppStore implements AppStore {
  readonly #apps = new Map<string, AppRecord>();
  #version = 0;

  async list(): Promise<AppRecord[]> {
    return [...this.#apps.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  async get(id: string): Promise<AppRecord | undefined> {
    return this.#apps.get(id);
  }

  async create(record: AppRecord): Promise<CreateOutcome> {
    if (this.#apps.has(record.id)) return 'id_taken';
    for (const app of this.#apps.values()) if (app.key === record.key) return 'key_taken';
    this.#apps.set(record.id, structuredClone(record));
    this.#version++;
    return 'created';
  }

  async update(id: string, change: AppChange, now: number): Promise<AppRecord | undefined> {
    const existing = this.#apps.get(id);
    if (existing === undefined) return undefined;
    const next = structuredClone(changed(existing, change, now));
    this.#apps.set(id, next);
    this.#version++;
    return next;
  }

  async delete(id: string): Promise<boolean> {
    const deleted = this.#apps.delete(id);
    if (deleted) this.#version++;
    return deleted;
  }

  async version(): Promise<number> {
    return this.#version;
  }

  async close(): Promise<void> {}
}
